"""``hpo.best_trial``: verifying that a stored trial reproduces bit for bit (``best --verify``),
the ``python -m trainer`` line that retrains it (``best --command``), and retraining a chosen
trial over fresh seeds for its test accuracy (``best --retrain --trial N --seeds S``)."""

import json
import shlex
import sqlite3
import subprocess
import sys

import numpy as np
import optuna
import pytest

from hpo.best_trial import (
    TEST_ACCURACY_ATTR,
    _same_bits,
    retrain_best,
    trainer_command,
    verify_trial,
)
from hpo.cli import main
from hpo.confirm import confirm_seed
from hpo.records import load_hpo_study, ranked
from tests.hpo.conftest import write_spec
from trainer import cli as trainer_cli
from trainer.config import RunConfig


@pytest.fixture(scope="module")
def study_db(tmp_path_factory):
    """A study of complete, pruned and diverged trials trained by two worker processes."""
    tmp = tmp_path_factory.mktemp("verify")
    spec = write_spec(tmp / "tiny.toml", epochs=4, trials=12, lr_high=30.0)
    url = f"sqlite:///{tmp / 'v.db'}"
    assert (
        main(["run", str(spec), "--storage", url, "--workers", "2", "--quiet", "--no-report"]) == 0
    )
    return tmp / "v.db"


def copy_of(study_db, tmp_path):
    path = tmp_path / "copy.db"
    path.write_bytes(study_db.read_bytes())
    return path, f"sqlite:///{path}"


def test_every_trial_trained_by_a_worker_process_reproduces_bit_for_bit(study_db):
    study, spec = load_hpo_study(storage_url=f"sqlite:///{study_db}", study_name="tiny")
    trials = study.get_trials(deepcopy=False)
    states = {t.state.name for t in trials}
    assert states == {"COMPLETE", "PRUNED"}, states  # both kinds are verified
    assert any(t.user_attrs["run"]["diverged"] for t in trials)
    for t in trials:
        v = verify_trial(study, spec, t.number)
        assert v.reproduced, v.message()
        assert v.environment == []  # the trial stored this process's split, NumPy and BLAS
        assert v.compared >= 5 * len(t.intermediate_values) - 5


def test_verify_prints_one_line_and_json(study_db, capsys):
    url = f"sqlite:///{study_db}"
    assert main(["best", "--storage", url, "--verify"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "reproduces bit for bit" in out[0]
    assert main(["best", "--storage", url, "--verify", "--trial", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["trial"] == 1 and result["reproduced"] and result["difference"] is None


def test_an_altered_value_fails_naming_the_epoch_and_both_values(study_db, tmp_path, capsys):
    path, url = copy_of(study_db, tmp_path)
    with sqlite3.connect(path) as db:
        (trial_id, stored), *_ = db.execute(
            "SELECT v.trial_id, v.intermediate_value FROM trial_intermediate_values v "
            "JOIN trials t ON t.trial_id = v.trial_id WHERE t.number = 2 AND v.step = 2"
        ).fetchall()
        altered = stored + 2**-40
        db.execute(
            "UPDATE trial_intermediate_values SET intermediate_value = ? "
            "WHERE trial_id = ? AND step = 2",
            (altered, trial_id),
        )
    assert main(["best", "--storage", url, "--verify", "--trial", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "trial #2 does not reproduce: epoch 2 validation accuracy" in err
    assert f"{altered!r} stored, {stored!r} retrained" in err
    assert "the split, NumPy and the BLAS are the same as stored" in err


def test_a_mismatch_names_what_differs_from_the_stored_environment(study_db, tmp_path, capsys):
    path, url = copy_of(study_db, tmp_path)
    with sqlite3.connect(path) as db:
        trial_id, value = db.execute(
            "SELECT a.trial_id, a.value_json FROM trial_user_attributes a "
            "JOIN trials t ON t.trial_id = a.trial_id WHERE t.number = 0 AND a.key = 'run'"
        ).fetchone()
        facts = json.loads(value)
        facts["env"]["numpy"] = "1.0.0"
        facts["curves"]["val_loss"][0] += 1.0
        db.execute(
            "UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'run'",
            (json.dumps(facts), trial_id),
        )
    assert main(["best", "--storage", url, "--verify", "--trial", "0"]) == 1
    err = capsys.readouterr().err
    assert "epoch 1 val_loss" in err
    assert "differs from the stored environment: NumPy: '1.0.0' stored" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--trial", "1"], "--trial 1: needs --verify, --command or --retrain"),
        (["--seeds", "3"], "--seeds 3: needs --retrain"),
        (["--verify", "--trial", "99"], "--trial: 99 (allowed: a finished trial's number, 0-11)"),
        (["--command", "--trial", "99"], "--trial: 99 (allowed: a finished trial's number, 0-11)"),
        (["--verify", "--retrain"], "--verify and --retrain/--export: one at a time"),
        (["--verify", "--command"], "--verify and --command: one at a time"),
        (["--command", "--export", "b.npz"], "--command and --retrain/--export: one at a time"),
    ],
)
def test_bad_verify_flags_exit_2_with_one_line(study_db, argv, expected, capsys):
    assert main(["best", "--storage", f"sqlite:///{study_db}", *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_every_trials_trainer_command_gives_its_best_validation_accuracy(study_db, capsys):
    """Trained by worker processes with one BLAS thread, retrained here by python -m trainer
    with this process's threads: complete, pruned and diverged trials alike."""
    study, spec = load_hpo_study(storage_url=f"sqlite:///{study_db}", study_name="tiny")
    states = set()
    for t in study.get_trials(deepcopy=False):
        command = trainer_command(study, spec, t.number)
        assert command["argv"][:3] == ["python", "-m", "trainer"]
        assert trainer_cli.main([*command["argv"][3:], "--json", "--quiet"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["best_val_accuracy"] == command["value"], (t.number, t.state)
        states.add((command["state"], printed["diverged"]))
    assert {("complete", False), ("pruned", False), ("pruned", True)} <= states


def test_the_printed_command_runs_as_printed(study_db, capsys):
    url = f"sqlite:///{study_db}"
    assert main(["best", "--storage", url, "--command"]) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and line.startswith("python -m trainer --dataset digits ")
    argv = [sys.executable, *shlex.split(line)[1:], "--json", "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    study, _ = load_hpo_study(storage_url=url, study_name="tiny")
    assert json.loads(done.stdout)["best_val_accuracy"] == study.best_value
    assert main(["best", "--storage", url, "--command", "--trial", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["trial"] == 3 and printed["argv"][-2:] == ["--seed", "0,3"]


def test_same_bits():
    assert _same_bits(0.1, 0.1) and _same_bits(float("nan"), float("-nan"))
    assert not _same_bits(0.1, 0.1 + 2**-56) and not _same_bits(0.0, -0.0)
    assert _same_bits(None, None) and not _same_bits(None, 0.0)


def test_best_retrains_a_chosen_trial_over_fresh_seeds(study_db, tmp_path, capsys, monkeypatch):
    _, url = copy_of(study_db, tmp_path)
    study = optuna.load_study(study_name="tiny", storage=url)
    chosen = ranked(study.get_trials())[-1].number  # the worst completed: not the default
    seeds = []
    train = RunConfig.train

    def recording(run, split, seed, **options):
        seeds.append(tuple(seed.entropy))
        return train(run, split, seed, **options)

    monkeypatch.setattr(RunConfig, "train", recording)
    capsys.readouterr()
    argv = ["best", "--storage", url, "--retrain", "--trial", str(chosen), "--seeds", "3"]
    assert main([*argv, "--json"]) == 0
    retrained = json.loads(capsys.readouterr().out)
    assert seeds == [tuple(confirm_seed(0, i).entropy) for i in range(3)]  # hpo confirm's
    assert retrained["trial"] == chosen and len(retrained["test_accuracies"]) == 3
    assert retrained["test_accuracy"] == pytest.approx(np.mean(retrained["test_accuracies"]))
    low, high = retrained["test_interval"]
    assert high - low == pytest.approx(
        2 * 4.302653 * np.std(retrained["test_accuracies"], ddof=1) / np.sqrt(3), rel=1e-5
    )  # Student's t at 2 degrees of freedom
    assert main(argv) == 0  # the same seeds again: the same accuracies, as text
    out = capsys.readouterr().out
    each = ", ".join(f"{a:.4f}" for a in retrained["test_accuracies"])
    assert out.startswith(f"study 'tiny': trial #{chosen}, validation accuracy")
    assert f"3 seeds): mean {retrained['test_accuracy']:.4f}, 95% interval" in out
    assert f"({each})" in out
    stored = optuna.load_study(study_name="tiny", storage=url).user_attrs[TEST_ACCURACY_ATTR]
    assert stored["trial"] == chosen
    assert stored["test_accuracies"] == retrained["test_accuracies"]
    assert stored["test_interval"] == retrained["test_interval"]


def test_retraining_progress_moves_per_epoch(study_db, tmp_path):
    """A seed of Fashion-MNIST retrains for minutes: the bar moves with each epoch."""
    _, url = copy_of(study_db, tmp_path)
    study, spec = load_hpo_study(storage_url=url, study_name="tiny")
    seen = []
    summary = retrain_best(study, spec, url, seeds=2, progress=lambda d, t: seen.append((d, t)))
    epochs = summary["best_epoch"]
    assert epochs >= 2  # else there is no fraction to see
    expected = [(0, 2)]
    for i in range(2):  # each epoch of seed i, then the seed's end
        expected += [(i + e / epochs, 2) for e in range(1, epochs + 1)] + [(i + 1, 2)]
    assert seen == expected


def test_bad_best_flags_are_refused_before_any_storage_is_read(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    assert main(["best", "--storage", missing, "--seeds", "3"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "python -m hpo best: error: --seeds 3: needs --retrain (allowed: --retrain --seeds S)"
    ]
    assert not (tmp_path / "missing.db").exists()


def test_best_retrain_refuses_zero_seeds_as_a_bad_flag(study_db, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["best", "--storage", f"sqlite:///{study_db}", "--retrain", "--seeds", "0"])
    assert stopped.value.code == 2
    assert "argument --seeds: 0 (allowed: 1 to 1,000)" in capsys.readouterr().err


def test_best_retrain_refuses_a_pruned_trial_in_one_line(study_db, tmp_path, capsys):
    _, url = copy_of(study_db, tmp_path)
    study = optuna.load_study(study_name="tiny", storage=url)
    pruned = next(t.number for t in study.get_trials() if t.state.name == "PRUNED")
    capsys.readouterr()
    assert main(["best", "--storage", url, "--retrain", "--trial", str(pruned)]) == 2
    err = capsys.readouterr().err
    assert f"--trial {pruned}: trial #{pruned} is pruned (allowed: a completed trial's" in err
    assert err.count("\n") == 1
