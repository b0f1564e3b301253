"""The chapter's experiments as packaged studies: their specs, the data their reports compute, the
chapter's qualitative results on their own settings, ``hpo compare`` and ``run --dataset``."""

import dataclasses
import gzip
import struct

import numpy as np
import optuna
import pytest

from hpo import experiment_data
from hpo.activations import ACTIVATION_SAMPLES
from hpo.cli import main
from hpo.pages import make_report
from hpo.records import load_hpo_study, run_facts
from hpo.service import grid_size, run_study
from hpo.spec import EXPERIMENTS, load_spec, packaged_specs
from hpo.trial import configuration, load_study_split, trial_seed
from trainer.optimizers import OPTIMIZERS

EXPERIMENT_SPECS = ("optimizers", "init", "batchnorm", "overfit")


def with_training(spec, **changes):
    return dataclasses.replace(spec, training=dataclasses.replace(spec.training, **changes))


# ---------------------------------------------------------------------------------------------
# The packaged specs


def test_every_experiment_is_packaged_under_its_name():
    assert set(EXPERIMENTS) == set(EXPERIMENT_SPECS)
    assert {*EXPERIMENT_SPECS, "book-random", "book-tpe"} <= set(packaged_specs())
    for name in EXPERIMENT_SPECS:
        assert load_spec(name).experiment == name


@pytest.mark.parametrize("name", EXPERIMENT_SPECS)
def test_grid_experiments_run_every_grid_point_once_without_pruning(name):
    spec = load_spec(name)
    assert spec.search.sampler == "grid" and spec.search.pruner == "none"
    assert spec.search.trials == grid_size(spec)


@pytest.mark.parametrize("name", ["optimizers", "init"])
def test_experiments_plotting_iterations_record_every_steps_loss(name):
    assert load_spec(name).record_batch_loss


def test_book_searches_differ_only_in_the_sampler():
    random, tpe = load_spec("book-random"), load_spec("book-tpe")
    assert (random.search.sampler, tpe.search.sampler) == ("random", "tpe")
    assert random.objective_fingerprint() == tpe.objective_fingerprint()
    assert random.data.train_size == 500 and random.model.hidden_sizes == (100,) * 6
    assert random.training.epochs == 50 and random.search.trials == 100
    lr, wd = random.param("learning_rate"), random.param("weight_decay")
    assert (lr.low, lr.high, lr.log) == (1e-6, 1e-2, True)
    assert (wd.low, wd.high, wd.log) == (1e-8, 1e-4, True)
    assert random.param("optimizer").value == "sgd"


# ---------------------------------------------------------------------------------------------
# What the reports compute


def test_test_function_paths_start_at_the_chapters_point_and_descend():
    paths = experiment_data.test_function_paths()
    assert [p["optimizer"] for p in paths] == list(OPTIMIZERS)
    for p in paths:
        assert len(p["x"]) == len(p["y"]) == experiment_data.TEST_STEPS + 1
        assert (p["x"][0], p["y"][0]) == (-7.0, 2.0)
        f = [x**2 / 20 + y**2 for x, y in zip(p["x"], p["y"], strict=True)]
        assert f[-1] < 0.1 * f[0], p["optimizer"]


def test_sgd_zigzags_across_the_valley_where_adagrad_does_not():
    paths = {p["optimizer"]: p for p in experiment_data.test_function_paths()}
    flips = {
        name: sum(a * b < 0 for a, b in zip(p["y"], p["y"][1:], strict=False))
        for name, p in paths.items()
    }
    assert flips["sgd"] >= 20 and flips["adagrad"] == 0


@pytest.fixture(scope="module")
def init_study(tmp_path_factory):
    """The packaged init experiment, two epochs a trial."""
    url = f"sqlite:///{tmp_path_factory.mktemp('init') / 'init.db'}"
    spec = with_training(load_spec("init"), epochs=2)
    run_study(spec, storage_url=url)
    study, stored = load_hpo_study(storage_url=url, study_name="init", write=False)
    return study, stored, url


def test_init_study_stores_every_steps_loss(init_study):
    study, spec, _ = init_study
    trials = study.get_trials()
    assert len(trials) == 18
    split = load_study_split(spec)
    steps = 2 * -(-len(split.x_train) // spec.training.batch_size)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(len(run_facts(t)["batch_loss"]) == steps for t in complete)


def test_initial_histograms_are_the_trials_own_starting_weights(init_study):
    study, spec, _ = init_study
    split = load_study_split(spec)
    trials = study.get_trials()
    first = experiment_data.initial_activation_histograms(spec, trials, split)
    assert first == experiment_data.initial_activation_histograms(spec, trials, split)
    assert len(first) == 18 and all(len(h["layers"]) == 5 for h in first)
    n = min(ACTIVATION_SAMPLES, len(split.x_val)) * 100  # values per layer
    for h in first:
        lo = h["edges"][0]
        for layer in h["layers"]:
            inside = sum(layer["counts"]) / n
            # Every value is counted once: in a bin, as an exact zero, or above the range
            # (nothing falls below the range of sigmoid, tanh or ReLU).
            assert inside + layer["zeros"] + layer["above"] == pytest.approx(1.0), h
        assert lo == {"sigmoid": 0.0, "tanh": -1.0, "relu": 0.0}[h["activation"]]
    by = {(h["init"], h["init_scale"], h["activation"]): h for h in first}
    # std 0.01 under ReLU: the last layer's activations have all but vanished.
    assert by[("std", 0.01, "relu")]["layers"][-1]["counts"][0] == sum(
        by[("std", 0.01, "relu")]["layers"][-1]["counts"]
    )


@pytest.mark.slow  # ~6 s: CI runs it (pytest -m slow)
def test_init_report_carries_the_experiments_figures(init_study, tmp_path):
    study, spec, url = init_study
    html = make_report(study, spec, url, out=tmp_path / "init.html").read_text()
    for key in ("exp-init-loss", "exp-init-sigmoid", "exp-init-tanh", "exp-init-relu"):
        assert f'id="{key}"' in html


# ---------------------------------------------------------------------------------------------
# The chapter's results, on the packaged specs' own settings


def best_and_curves(spec, params, number=0):
    split = load_study_split(spec)
    _, result = configuration(spec, params).train(split, trial_seed(spec.search.seed, number))
    return result


def test_he_init_trains_a_deep_relu_net_where_std_001_does_not():
    spec = load_spec("init")
    he = best_and_curves(spec, {"init": "he", "init_scale": 1.0, "activation": "relu"})
    small = best_and_curves(spec, {"init": "std", "init_scale": 0.01, "activation": "relu"})
    assert he.best_val_accuracy > 0.85
    assert small.best_val_accuracy < 0.2


@pytest.mark.slow
def test_batchnorm_trains_at_a_weight_scale_where_the_plain_net_is_stuck():
    spec = load_spec("batchnorm")
    (scale,) = [s for s in spec.param("init_scale").choices if s == 0.0136]
    with_bn = best_and_curves(spec, {"init_scale": scale, "batchnorm": True})
    plain = best_and_curves(spec, {"init_scale": scale, "batchnorm": False})
    assert max(with_bn.history.train_accuracy) > 0.9
    assert max(plain.history.train_accuracy) < 0.2


@pytest.mark.slow  # ~8 s: CI runs it (pytest -m slow)
def test_weight_decay_and_dropout_narrow_the_generalization_gap():
    spec = load_spec("overfit")

    def mean_gap(params):
        gaps = []
        for seed in range(3):
            h = best_and_curves(spec, params, number=seed).history
            gaps.append(np.mean(h.train_accuracy[-10:]) - np.mean(h.val_accuracy[-10:]))
        return float(np.mean(gaps))

    none = mean_gap({"weight_decay": 0.0, "dropout_ratio": 0.0})
    assert none > 0.05  # 300 samples and six layers: it overfits
    assert mean_gap({"weight_decay": 0.1, "dropout_ratio": 0.0}) < none
    assert mean_gap({"weight_decay": 0.0, "dropout_ratio": 0.2}) < none


# ---------------------------------------------------------------------------------------------
# hpo compare


def test_compare_writes_the_page_for_two_studies(tiny_spec, db_url, tmp_path, capsys):
    for name in ("a", "b"):
        assert (
            main(
                [
                    "run",
                    str(tiny_spec),
                    "--study",
                    name,
                    "--storage",
                    db_url,
                    "--trials",
                    "3",
                    "--quiet",
                    "--no-report",
                ]
            )
            == 0
        )
    capsys.readouterr()
    out = tmp_path / "cmp.html"
    assert main(["compare", "a", "b", "--storage", db_url, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out.resolve()}"
    assert "<title>hpo comparison: a vs b</title>" in out.read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["a"], "STUDY: a (allowed: two or more different study names)"),
        (["a", "a"], "STUDY: a a (allowed: two or more different study names)"),
        (["a", "zzz"], "no study named 'zzz'"),
    ],
)
def test_compare_refuses_bad_study_lists_with_one_line(tiny_spec, db_url, capsys, argv, message):
    main(
        [
            "run",
            str(tiny_spec),
            "--study",
            "a",
            "--storage",
            db_url,
            "--trials",
            "1",
            "--quiet",
            "--no-report",
        ]
    )
    capsys.readouterr()
    assert main(["compare", *argv, "--storage", db_url]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# run --dataset


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_an_experiment_runs_on_mnist_files_under_its_own_study_name(tmp_path, db_url, capsys):
    rng = np.random.default_rng(0)
    labels = np.arange(1400) % 10
    images = rng.integers(0, 60, size=(1400, 6, 6)) + (labels * 19)[:, None, None]
    for prefix, rows in (("train", slice(0, 1300)), ("t10k", slice(1300, None))):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images[rows])
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels[rows])
    argv = ["run", "overfit", "--dataset", "mnist", "--data-dir", str(tmp_path)]
    assert main([*argv, "--storage", db_url, "--trials", "1", "--quiet", "--no-report"]) == 0
    study, spec = load_hpo_study(storage_url=db_url, study_name="overfit-mnist", write=False)
    assert spec.data.dataset == "mnist" and len(study.get_trials()) == 1
    assert spec.objective_fingerprint() != load_spec("overfit").objective_fingerprint()


def test_unknown_dataset_flag_is_one_line(db_url, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "overfit", "--dataset", "cifar", "--storage", db_url])
    assert e.value.code == 2
    assert "argument --dataset: unknown dataset 'cifar'" in capsys.readouterr().err


def test_only_the_experiments_that_need_more_than_their_trials_compute_extra_data():
    from hpo import allowed
    from hpo.experiment_data import EXTRA_DATA

    assert set(EXTRA_DATA) <= set(allowed.EXPERIMENTS)
