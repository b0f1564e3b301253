"""``python -m trainer``: in-process through ``main`` and once as a subprocess."""

import json
import subprocess
import sys

import numpy as np
import pytest

from trainer.cli import main

FAST = ["--hidden", "20", "--epochs", "2", "--train-size", "200", "--quiet"]


def test_json_result_has_every_field(capsys):
    assert main([*FAST, "--json", "--optimizer", "momentum", "--lr", "0.05"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {
        "best_val_accuracy",
        "best_epoch",
        "val_accuracy",
        "train_accuracy",
        "test_accuracy",
        "epochs_run",
        "diverged",
        "train_seconds",
        "history",
    }
    assert set(result["history"]) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    assert result["epochs_run"] == 2 and len(result["history"]["val_accuracy"]) == 2
    assert not result["diverged"] and 0 <= result["test_accuracy"] <= 1


def test_progress_goes_to_stderr_with_json(capsys):
    assert main(["--hidden", "20", "--epochs", "2", "--train-size", "200", "--json"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)
    assert captured.err.count("epoch ") == 2


def test_same_seed_same_result(capsys):
    main([*FAST, "--json", "--seed", "5", "--dropout", "0.3", "--batchnorm"])
    first = json.loads(capsys.readouterr().out)
    main([*FAST, "--json", "--seed", "5", "--dropout", "0.3", "--batchnorm"])
    second = json.loads(capsys.readouterr().out)
    assert first["history"] == second["history"]


def test_diverged_run_is_a_result(capsys):
    assert main([*FAST, "--json", "--optimizer", "sgd", "--lr", "10000"]) == 0
    assert json.loads(capsys.readouterr().out)["diverged"] is True


def test_npz_dataset(tmp_path, capsys, rng):
    path = tmp_path / "mine.npz"
    np.savez(path, x=rng.standard_normal((60, 5)), y=np.arange(60) % 3)
    assert main(["--dataset", f"npz:{path}", "--hidden", "8", "--epochs", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_run"] == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--lr", "-1"], "--learning-rate: -1.0 (allowed: > 0)"),
        (["--lr", "abc"], "--learning-rate"),
        (["--dropout", "1"], "--dropout: 1.0 (allowed: 0 <= value < 1)"),
        (["--optimizer", "lion"], "--optimizer: invalid choice: 'lion'"),
        (["--hidden", "10,,-3"], "--hidden"),
        (["--epochs", "0"], "--epochs: 0 (allowed: >= 1)"),
        (["--dataset", "cifar"], "--dataset: unknown dataset 'cifar'"),
        (["--dataset", "npz:/no/such.npz"], "/no/such.npz: no such file"),
        (["--train-size", "100000"], "--train-size: 100000 (allowed: 48 to 1438"),
        (["--init-scale", "0"], "--init-scale: 0.0 (allowed: > 0)"),
        (["--momentum", "0.5"], "--momentum: --optimizer sgd has no momentum (allowed with: "),
        (["--optimizer", "momentum", "--momentum", "1.5"], "--momentum: 1.5 ("),
        (["--test-fraction", "1"], "--test-fraction: 1.0 (allowed: 0 < value < 1)"),
        (["--seed", "1,x"], "--seed: '1,x' (allowed: a whole number >= 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1


def test_runs_as_a_subprocess():
    completed = subprocess.run(
        [sys.executable, "-m", "trainer", *FAST, "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["epochs_run"] == 2


def test_help_has_an_example():
    completed = subprocess.run(
        [sys.executable, "-m", "trainer", "--help"], capture_output=True, text=True, check=True
    )
    assert "example:" in completed.stdout and "--learning-rate" in completed.stdout


def test_negative_seed_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--seed", "-1"])
    assert e.value.code == 2
    assert "--seed: '-1' (allowed: a whole number >= 0" in capsys.readouterr().err


def test_the_trainer_takes_one_blas_thread_unless_the_environment_says_otherwise():
    from trainer.console import default_blas_threads

    environ = {}
    default_blas_threads(environ)
    assert environ == dict.fromkeys(
        ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"), "1"
    )
    chosen = {"OPENBLAS_NUM_THREADS": "2"}
    default_blas_threads(chosen)
    assert chosen == {"OPENBLAS_NUM_THREADS": "2"}
