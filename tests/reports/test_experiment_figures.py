"""The chapter's experiment figures: each ``..._data`` by equality on hand-made snapshots, None
where the study has nothing to show, every ``plot_...`` smoke-tested, and the captions' numbers."""

import dataclasses
import io

import matplotlib.pyplot as plt
import pytest

from reports import experiment_figures as ex
from reports.html import build_figures
from reports.snapshot import SpaceEntry, SpecFacts, StudySnapshot, TrialRecord


def trial(number, params, *, value=None, state="COMPLETE", train=None, val=None, **fields):
    curves = None
    if train is not None:
        curves = {"train_accuracy": train, "val_accuracy": val if val is not None else train}
    return TrialRecord(
        number=number,
        state=state,
        value=value,
        params=params,
        curves=curves,
        **fields,
    )


def snapshot(trials, *, experiment=None, spec=None):
    return StudySnapshot(
        name="exp",
        storage="sqlite:///exp.db",
        spec=spec or SpecFacts(epochs=2),
        split_sizes={"train": 8, "validation": 2, "test": 2},
        trials=tuple(trials),
        params=(),
        experiment=experiment,
    )


def saves(fig) -> bool:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.tell() > 1000


# ---------------------------------------------------------------------------------------------
# smoothing


def test_smooth_is_a_trailing_mean_from_the_first_full_window():
    assert ex.smooth([1.0, 2.0, 3.0, 4.0], window=2) == {
        "step": [2, 3, 4],
        "value": [1.5, 2.5, 3.5],
    }


def test_smooth_of_a_short_series_is_one_window_and_missing_values_are_none():
    assert ex.smooth([2.0, 4.0], window=10) == {"step": [2], "value": [3.0]}
    assert ex.smooth([1.0, None, 1.0], window=2) == {"step": [2, 3], "value": [None, None]}
    assert ex.smooth([], window=3) == {"step": [], "value": []}


# ---------------------------------------------------------------------------------------------
# optimizers


def optimizer_trials():
    return [
        trial(0, {"optimizer": "sgd", "learning_rate": 0.01}, value=0.8, batch_loss=[2.0, 1.0]),
        trial(1, {"optimizer": "sgd", "learning_rate": 0.1}, value=0.9, batch_loss=[2.0, 0.5]),
        trial(2, {"optimizer": "adam", "learning_rate": 0.01}, value=0.95, batch_loss=[1.0, 0.25]),
        trial(
            3,
            {"optimizer": "adam", "learning_rate": 0.1},
            state="PRUNED",
            diverged=True,
            batch_loss=[1.0, None],
        ),
    ]


def test_optimizer_loss_takes_each_optimizers_best_trial_and_grids_every_rate(monkeypatch):
    monkeypatch.setattr(ex, "SMOOTHING_WINDOW", 1)
    data = ex.optimizer_loss_data(snapshot(optimizer_trials()))
    assert data == {
        "window": 1,
        "lines": [
            {
                "optimizer": "sgd",
                "learning_rate": 0.1,
                "trial": 1,
                "value": 0.9,
                "loss": {"step": [1, 2], "value": [2.0, 0.5]},
                "finals": [0.5],
            },
            {
                "optimizer": "adam",
                "learning_rate": 0.01,
                "trial": 2,
                "value": 0.95,
                "loss": {"step": [1, 2], "value": [1.0, 0.25]},
                "finals": [0.25],
            },
        ],
        "learning_rates": [0.01, 0.1],
        "grid": [
            {"optimizer": "sgd", "values": [0.8, 0.9]},
            {"optimizer": "adam", "values": [0.95, 0.0]},  # diverged: 0
        ],
        "trials": 4,
    }
    caption = ex.optimizer_loss_caption(data)
    assert "adam (lr 0.01: 0.25), sgd (lr 0.1: 0.5)" in caption
    assert "Each value is one seed's: hpo confirm --top 4 --seeds 4" in caption
    assert saves(ex.plot_optimizer_loss(data))


def test_optimizer_loss_needs_recorded_batch_losses():
    trials = [trial(0, {"optimizer": "sgd", "learning_rate": 0.1}, value=0.9)]
    assert ex.optimizer_loss_data(snapshot(trials)) is None


def test_optimizer_paths_come_from_the_experiment_with_the_final_value():
    paths = [{"optimizer": "sgd", "learning_rate": 0.95, "x": [-7.0, 2.0], "y": [2.0, 1.0]}]
    exp = {"name": "optimizers", "function": "x²/20 + y²", "start": [-7.0, 2.0], "paths": paths}
    data = ex.optimizer_paths_data(snapshot([], experiment=exp))
    assert data["paths"][0]["final"] == pytest.approx(4 / 20 + 1)
    assert "f after 1 steps: sgd 1.2" in ex.optimizer_paths_caption(data)
    assert saves(ex.plot_optimizer_paths(data))
    assert ex.optimizer_paths_data(snapshot([])) is None


# ---------------------------------------------------------------------------------------------
# init


def test_init_labels_name_the_rule_and_any_scale():
    assert ex.init_label("std", 0.01) == "std 0.01"
    assert ex.init_label("he", 1.0) == "He"
    assert ex.init_label("xavier", 0.01) == "Xavier ×0.01"


def histogram(number, init, scale, activation, zeros=0.0):
    layer = {"counts": [3, 1], "zeros": zeros, "above": 0.0}
    return {
        "trial": number,
        "init": init,
        "init_scale": scale,
        "activation": activation,
        "edges": [0.0, 0.5, 1.0],
        "layers": [layer, layer],
    }


def test_init_histograms_keep_one_activation_in_the_chapters_order():
    exp = {
        "name": "init",
        "samples": 5,
        "histograms": [
            histogram(0, "he", 1.0, "relu", zeros=0.5),
            histogram(1, "he", 0.01, "relu"),  # a scaled rule: not drawn
            histogram(2, "std", 0.01, "relu"),
            histogram(3, "xavier", 1.0, "sigmoid"),
        ],
    }
    data = ex.init_histograms_data(snapshot([], experiment=exp), "relu")
    assert [r["label"] for r in data["rows"]] == ["std 0.01", "He"]
    assert [r["trial"] for r in data["rows"]] == [2, 0]
    assert data["activation"] == "relu" and data["samples"] == 5
    caption = ex.init_histograms_caption(data)
    assert "He: layer 2 has 50% exact zeros, 0% above 1, 75% of the rest below 0.5" in caption
    assert saves(ex.plot_init_histograms(data))
    assert ex.init_histograms_data(snapshot([], experiment=exp), "tanh") is None
    assert ex.init_histograms_data(snapshot([]), "relu") is None


def test_init_loss_groups_by_activation_with_the_diverged_marked(monkeypatch):
    monkeypatch.setattr(ex, "SMOOTHING_WINDOW", 1)
    trials = [
        trial(
            0,
            {"init": "he", "init_scale": 1.0, "activation": "relu"},
            value=0.9,
            batch_loss=[2.3, 0.5],
        ),
        trial(
            1,
            {"init": "std", "init_scale": 0.01, "activation": "relu"},
            value=0.1,
            batch_loss=[2.3, 2.3],
        ),
        trial(
            2,
            {"init": "std", "init_scale": 1.0, "activation": "relu"},
            state="PRUNED",
            diverged=True,
            batch_loss=[50.0, None],
        ),
        trial(
            3,
            {"init": "he", "init_scale": 1.0, "activation": "sigmoid"},
            value=0.2,
            batch_loss=[2.3, 2.3],
        ),
    ]
    chapter = SpecFacts(
        space=(SpaceEntry("activation", "choice", choices=("sigmoid", "tanh", "relu")),),
    )
    panels = ex.init_loss_data(snapshot(trials, spec=chapter))
    assert [p["activation"] for p in panels] == ["sigmoid", "relu"]  # the space's order
    assert [d["label"] for d in panels[1]["lines"]] == ["std 1", "std 0.01", "He"]
    assert panels[1]["lines"][0]["diverged"] and panels[1]["lines"][0]["value"] == 0.0
    assert panels[1]["lines"][2]["loss"] == {"step": [1, 2], "value": [2.3, 0.5]}
    caption = ex.init_loss_caption(panels)
    assert "relu: std 1 diverged, std 0.01 0.100, He 0.900" in caption
    assert saves(ex.plot_init_loss(panels))


# ---------------------------------------------------------------------------------------------
# batchnorm


def test_batchnorm_pairs_runs_by_scale_and_counts_which_train():
    trials = [
        trial(0, {"init_scale": 0.01, "batchnorm": True}, value=0.9, train=[0.5, 0.95]),
        trial(1, {"init_scale": 0.01, "batchnorm": False}, value=0.1, train=[0.1, 0.1]),
        trial(2, {"init_scale": 1.0, "batchnorm": False}, state="PRUNED", diverged=True, train=[]),
        trial(3, {"init_scale": 1.0, "batchnorm": True}, value=0.9, train=[0.4, 0.92]),
    ]
    data = ex.batchnorm_data(snapshot(trials))
    assert [p["scale"] for p in data["panels"]] == [1.0, 0.01]
    assert data["panels"][0]["without"] == {
        "trial": 2,
        "train_accuracy": [],
        "diverged": True,
        "best": 0.0,
        "by_seed": {None: 0.0},
    }
    assert data["panels"][1]["with"]["train_accuracy"] == [0.5, 0.95]
    assert data["trained"] == {"with": 2, "without": 0}
    assert "with BatchNorm at 2 of 2 stds, without at 0 of 2" in ex.batchnorm_caption(data)
    assert saves(ex.plot_batchnorm(data))
    assert ex.batchnorm_data(snapshot([trial(0, {"learning_rate": 0.1}, value=0.5)])) is None


# ---------------------------------------------------------------------------------------------
# overfit


def test_overfit_orders_none_decay_dropout_both_and_measures_the_late_gap(monkeypatch):
    monkeypatch.setattr(ex, "GAP_EPOCHS", 2)
    curve = {"train": [0.5, 1.0, 1.0], "val": [0.5, 0.8, 0.9]}
    trials = [
        trial(
            n,
            {"weight_decay": wd, "dropout_ratio": dr},
            value=0.9,
            train=curve["train"],
            val=curve["val"],
        )
        for n, (wd, dr) in enumerate([(0.1, 0.2), (0.0, 0.2), (0.1, 0.0), (0.0, 0.0)])
    ]
    panels = ex.overfit_data(snapshot(trials))
    assert [p["label"] for p in panels] == [
        "no regularization",
        "weight decay 0.1",
        "dropout 0.2",
        "weight decay 0.1 + dropout 0.2",
    ]
    assert panels[0]["last"] == pytest.approx({"train": 1.0, "val": 0.85, "gap": 0.15})
    assert "no regularization: 1.000 - 0.850 = 0.150" in ex.overfit_caption(panels)
    assert saves(ex.plot_overfit(panels))


def test_overfit_reads_fixed_values_from_the_spec():
    spec = SpecFacts(
        space=(
            SpaceEntry("weight_decay", "fixed", value=0.1),
            SpaceEntry("dropout_ratio", "choice", choices=(0.0, 0.5)),
        ),
    )
    trials = [trial(0, {"dropout_ratio": 0.5}, value=0.5, train=[0.5], val=[0.4])]
    (panel,) = ex.overfit_data(snapshot(trials, spec=spec))
    assert panel["label"] == "weight decay 0.1 + dropout 0.5"


# ---------------------------------------------------------------------------------------------
# in the report


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("optimizers", ["exp-optimizer-loss", "exp-optimizer-paths"]),
        ("batchnorm", ["exp-batchnorm"]),
        ("overfit", ["exp-overfit"]),
        (None, []),
    ],
)
def test_the_experiments_figures_come_first_in_the_report(name, keys):
    trials = [
        trial(
            0,
            {
                "init_scale": 0.01,
                "batchnorm": True,
                "optimizer": "sgd",
                "learning_rate": 0.1,
                "weight_decay": 0.0,
                "dropout_ratio": 0.0,
            },
            value=0.9,
            train=[0.5, 0.95],
            val=[0.5, 0.9],
            batch_loss=[2.0, 1.0],
        ),
    ]
    paths = [{"optimizer": "sgd", "learning_rate": 0.95, "x": [-7.0, 1.0], "y": [2.0, 0.5]}]
    exp = (
        None
        if name is None
        else {"name": name, "function": "x²/20 + y²", "start": [-7.0, 2.0], "paths": paths}
    )
    figs = build_figures(snapshot(trials, experiment=exp), top_k=5)
    assert [f.key for f in figs[: len(keys)]] == keys
    assert not any(f.key.startswith("exp-") for f in figs[len(keys) :])
    assert all(f.caption for f in figs)


# ---------------------------------------------------------------------------------------------
# Over seeds (hpo confirm's runs)


def confirm_run(source, seed_index, **fields):
    return dataclasses.replace(
        trial(100 + 10 * source + seed_index, {}, **fields),
        source=source,
        seed_index=seed_index,
    )


def test_over_seeds_is_the_mean_and_a_students_t_interval():
    assert ex.over_seeds([0.5]) == "0.500"
    # mean 0.2, sd 0.1, t(0.975, 2) = 4.3027: half = 0.2484
    assert ex.over_seeds([0.1, 0.2, 0.3]) == "0.200 [-0.048, 0.448]"
    assert ex.over_seeds([1.0, 3.0], ".1f") == "2.0 [-10.7, 14.7]"
    assert ex.over_seeds([0.00012, 0.00014], ".3g") == "0.00013 [2.94e-06, 0.000257]"


def test_captions_state_each_claim_over_the_seeds_confirm_ran(monkeypatch):
    monkeypatch.setattr(ex, "GAP_EPOCHS", 1)
    trials = [
        trial(0, {"weight_decay": 0.0, "dropout_ratio": 0.0}, value=0.9, train=[1.0], val=[0.8]),
        trial(1, {"weight_decay": 0.1, "dropout_ratio": 0.0}, value=0.9, train=[1.0], val=[0.9]),
    ]
    runs = [
        confirm_run(0, 0, value=0.9, train=[1.0], val=[0.7]),
        confirm_run(0, 1, value=0.9, train=[1.0], val=[0.9]),
        confirm_run(1, 0, value=0.9, train=[1.0], val=[0.95]),
        confirm_run(1, 1, value=0.9, train=[1.0], val=[0.85]),
    ]
    study = dataclasses.replace(snapshot(trials), confirm_runs=tuple(runs))
    panels = ex.overfit_data(study)
    assert panels[0]["gaps"] == pytest.approx([0.2, 0.3, 0.1])
    caption = ex.overfit_caption(panels)
    assert "no regularization: 0.200 [" in caption and "gap:" in caption
    assert "mean over 3 runs (the search's own and 2 fresh seeds of hpo confirm)" in caption

    bn = [
        trial(0, {"init_scale": 0.01, "batchnorm": True}, value=0.9, train=[0.95]),
        trial(1, {"init_scale": 0.01, "batchnorm": False}, value=0.1, train=[0.1]),
    ]
    bn_runs = [
        confirm_run(0, 0, value=0.9, train=[0.5]),  # this seed does not train
        confirm_run(1, 0, value=0.9, train=[0.95]),  # this one does
    ]
    data = ex.batchnorm_data(dataclasses.replace(snapshot(bn), confirm_runs=tuple(bn_runs)))
    assert data["trained_by_seed"] == {"with": [1, 0], "without": [0, 1]}
    assert "with BatchNorm at 0.5 [" in ex.batchnorm_caption(data)


def test_every_experiment_name_has_its_figures():
    from hpo import allowed

    assert tuple(ex.FIGURES) == allowed.EXPERIMENTS
