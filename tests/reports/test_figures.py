"""The report's figures: every ``..._data`` function by equality on small hand-made snapshots,
None where a study has nothing to show, and every ``plot_...`` function smoke-tested by saving
its figure."""

import io

import matplotlib.pyplot as plt
import pytest

from reports import catalog, figures
from reports.snapshot import (
    FirstLayer,
    LayerHistograms,
    ParamInfo,
    SpecFacts,
    StudySnapshot,
    TrialRecord,
)

PARAMS = (
    ParamInfo("learning_rate", "float", log=True, low=1e-4, high=1e-1),
    ParamInfo("weight_decay", "float", log=True, low=1e-8, high=1e-2),
    ParamInfo("dropout_ratio", "float", low=0.0, high=0.5),
    ParamInfo("optimizer", "categorical", choices=("sgd", "momentum", "adam")),
)


def complete(number, value, params, *, val=None, train=None):
    """A complete trial; ``val`` and ``train`` are its per-epoch curves (intermediate = val)."""
    val = val if val is not None else [value / 2, value]
    train = train if train is not None else [v + 0.05 for v in val]
    return TrialRecord(
        number=number,
        state="COMPLETE",
        value=value,
        params=params,
        intermediate={e: v for e, v in enumerate(val, start=1)},
        curves={"train_accuracy": train, "val_accuracy": val},
        best_epoch=val.index(max(val)) + 1,
        train_accuracy=train[val.index(max(val))],
        epochs_run=len(val),
    )


def pruned(number, intermediate, params=None, *, diverged=False):
    return TrialRecord(
        number=number,
        state="PRUNED",
        params=params or {},
        intermediate=intermediate,
        epochs_run=len(intermediate),
        diverged=diverged,
    )


def other(number, state, intermediate=None):
    """A failed, running or waiting trial."""
    return TrialRecord(
        number=number, state=state, params={"learning_rate": 1e-3}, intermediate=intermediate or {}
    )


def snapshot(trials, params=PARAMS, **fields):
    return StudySnapshot(
        name="study",
        storage="sqlite:///study.db",
        spec=SpecFacts(epochs=3),
        split_sizes={"train": 8, "validation": 2, "test": 2},
        trials=tuple(trials),
        params=params,
        **fields,
    )


def hyper(learning_rate, weight_decay, dropout_ratio, optimizer):
    return {
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "dropout_ratio": dropout_ratio,
        "optimizer": optimizer,
    }


LAYERS = (
    LayerHistograms(1, (0.0, 0.5, 1.0), (3, 1), (1, 3), initial_zeros=0.5, trained_zeros=0.25),
    LayerHistograms(2, (-1.0, 0.0, 1.0), (2, 2), (0, 4)),
)

# Ranked: #2 (0.9), #4 (0.85), #0 (0.8). #1 was pruned, #3 diverged, #5 failed, #6 is running.
STUDY = snapshot(
    [
        complete(0, 0.8, hyper(1e-3, 1e-6, 0.1, "sgd"),
                 val=[0.5, 0.7, 0.8], train=[0.5, 0.75, 0.9]),
        pruned(1, {1: 0.4}, hyper(1e-1, 1e-2, 0.3, "sgd")),
        complete(2, 0.9, hyper(1e-2, 1e-4, 0.2, "adam"),
                 val=[0.6, 0.9, 0.85], train=[0.625, 0.875, 1.0]),
        pruned(3, {1: 0.3, 2: 0.0}, hyper(1e-1, 1e-8, 0.0, "momentum"), diverged=True),
        complete(4, 0.85, hyper(1e-4, 1e-2, 0.5, "sgd"),
                 val=[0.5, 0.85, 0.8], train=[0.5, 0.875, 0.875]),
        other(5, "FAIL"),
        other(6, "RUNNING", {1: 0.6}),
    ],
    importances={"learning_rate": 0.5, "weight_decay": 0.125, "dropout_ratio": 0.25,
                 "optimizer": 0.125},
    activations=LAYERS,
    first_layer=FirstLayer(2, 4, tuple(tuple(float(i * j % 5 - 2) for i in range(16))
                                       for j in range(1, 8))),
)  # fmt: skip

EMPTY = snapshot([])
ONLY_RUNNING = snapshot([other(0, "RUNNING", {1: 0.5}), other(1, "RUNNING"), other(2, "WAITING")])

CATALOG = catalog.instances(STUDY, 10)  # every kind of figure, with STUDY's variants
DATA_FUNCTIONS = {
    f.key: lambda s, kind=f.kind, variant=f.variant: kind.data(s, 10, **variant) for f in CATALOG
}
PLOTS = {f.key: f.kind.plot for f in CATALOG if f.key != "confirmed"}  # drawn below, confirmed


def test_these_tests_draw_every_kind_of_figure_of_the_catalog():
    assert {f.kind.key for f in CATALOG} == {kind.key for kind in catalog.KINDS}
    assert {key for key, data in DATA_FUNCTIONS.items() if data(STUDY) is None} == {"confirmed"}


# ---------------------------------------------------------------------------------------------
# Learning curves


def test_learning_curves_data_ranks_the_top_k_best_first():
    panels = figures.learning_curves_data(STUDY, 2)
    assert panels == [
        {
            "rank": 1,
            "confirmed_best": False,
            "trial": 2,
            "value": 0.9,
            "best_epoch": 2,
            "train_accuracy": [0.625, 0.875, 1.0],
            "val_accuracy": [0.6, 0.9, 0.85],
        },
        {
            "rank": 2,
            "confirmed_best": False,
            "trial": 4,
            "value": 0.85,
            "best_epoch": 2,
            "train_accuracy": [0.5, 0.875, 0.875],
            "val_accuracy": [0.5, 0.85, 0.8],
        },
    ]


def test_learning_curves_data_caps_panels_at_max_curve_panels():
    study = snapshot([complete(n, n / 100, {}) for n in range(30)])
    panels = figures.learning_curves_data(study, 50)
    assert len(panels) == figures.MAX_CURVE_PANELS
    assert [p["trial"] for p in panels] == list(range(29, 29 - figures.MAX_CURVE_PANELS, -1))


def test_learning_curves_data_skips_trials_without_curves_but_keeps_their_rank():
    no_curves = TrialRecord(number=1, state="COMPLETE", value=0.9)
    study = snapshot([complete(0, 0.8, {}), no_curves, complete(2, 0.7, {})])
    panels = figures.learning_curves_data(study, 3)
    assert [(p["rank"], p["trial"]) for p in panels] == [(2, 0), (3, 2)]


def test_learning_curves_data_breaks_ties_by_the_earlier_trial():
    study = snapshot([complete(0, 0.8, {}), complete(1, 0.9, {}), complete(2, 0.9, {})])
    assert [p["trial"] for p in figures.learning_curves_data(study, 3)] == [1, 2, 0]


# ---------------------------------------------------------------------------------------------
# Optimization history


def test_history_data_splits_complete_pruned_and_diverged_with_best_so_far():
    assert figures.history_data(STUDY) == {
        "complete": [(0, 0.8), (2, 0.9), (4, 0.85)],
        "best": [(0, 0.8), (2, 0.9), (4, 0.9)],
        "pruned": [(1, 0.4)],
        "diverged": [(3, 0.0)],
    }


def test_history_data_puts_a_pruned_trial_without_reports_at_zero():
    study = snapshot([pruned(0, {}), pruned(1, {2: 0.5, 1: 0.25})])
    assert figures.history_data(study)["pruned"] == [(0, 0.0), (1, 0.5)]


def test_history_data_of_a_study_with_only_pruned_trials_has_no_best():
    data = figures.history_data(snapshot([pruned(0, {1: 0.5})]))
    assert data == {"complete": [], "best": [], "pruned": [(0, 0.5)], "diverged": []}


# ---------------------------------------------------------------------------------------------
# Importance


def test_importance_data_sorts_ascending():
    assert figures.importance_data(STUDY) == {
        "names": ["weight_decay", "optimizer", "dropout_ratio", "learning_rate"],
        "values": [0.125, 0.125, 0.25, 0.5],
    }


# ---------------------------------------------------------------------------------------------
# Pairs of parameters


def test_pair_data_sorts_points_by_value_best_last():
    assert figures.pair_data(STUDY, "learning_rate", "weight_decay") == {
        "x": "learning_rate",
        "y": "weight_decay",
        "x_log": True,
        "y_log": True,
        "points": [(1e-3, 1e-6, 0.8), (1e-4, 1e-2, 0.85), (1e-2, 1e-4, 0.9)],
        "pruned": [(1e-1, 1e-8, 0.0), (1e-1, 1e-2, 0.4)],  # at their last value
        "color_range": (0.8, 0.9),
    }


def test_the_colour_scale_starts_at_the_complete_trials_lower_quartile():
    assert figures.color_range([0.2, 0.97, 0.98, 0.99, 0.95, 0.96, 0.5, 0.9]) == (0.9, 0.99)
    assert figures.color_range([0.5, 0.7]) == (0.5, 0.7)


def test_pair_data_reports_each_axis_scale():
    data = figures.pair_data(STUDY, "dropout_ratio", "learning_rate")
    assert (data["x_log"], data["y_log"]) == (False, True)


def test_pair_data_is_none_when_a_parameter_is_not_searched():
    assert figures.pair_data(STUDY, "learning_rate", "init_scale") is None


def test_pair_data_leaves_out_trials_missing_either_parameter():
    study = snapshot(
        [complete(0, 0.8, {"learning_rate": 1e-3}), complete(1, 0.7, hyper(1e-2, 1e-4, 0.1, "sgd"))]
    )
    points = figures.pair_data(study, "learning_rate", "weight_decay")["points"]
    assert points == [(1e-2, 1e-4, 0.7)]


# ---------------------------------------------------------------------------------------------
# By category


def test_by_category_data_groups_values_and_orders_groups_by_their_best():
    data = figures.by_category_data(STUDY, "optimizer")
    assert data == {
        "name": "optimizer",
        "groups": {"adam": [0.9], "sgd": [0.8, 0.85], "momentum": []},
        "pruned": {"adam": [], "sgd": [0.4], "momentum": [0.0]},
    }
    assert list(data["groups"]) == ["adam", "sgd", "momentum"]  # momentum: pruned alone


def test_by_category_data_keeps_pruned_trials_apart_at_their_last_value():
    study = snapshot(
        [complete(0, 0.5, {"optimizer": "sgd"}), pruned(1, {1: 0.9}, {"optimizer": "adam"})]
    )
    data = figures.by_category_data(study, "optimizer")
    assert data["groups"] == {"sgd": [0.5], "adam": []}
    assert data["pruned"] == {"sgd": [], "adam": [0.9]}


def test_by_category_data_keys_choices_as_strings():
    study = snapshot([complete(0, 0.5, {"hidden": 64}), complete(1, 0.6, {"hidden": 128})])
    assert list(figures.by_category_data(study, "hidden")["groups"]) == ["128", "64"]


# ---------------------------------------------------------------------------------------------
# Slices and parallel coordinates


def test_slice_data_has_one_panel_per_parameter_with_every_finished_trial():
    assert figures.slice_data(STUDY) == [
        {"name": "learning_rate", "kind": "float", "log": True,
         "points": [(1e-3, 0.8), (1e-2, 0.9), (1e-4, 0.85)],
         "pruned": [(1e-1, 0.4), (1e-1, 0.0)]},
        {"name": "weight_decay", "kind": "float", "log": True,
         "points": [(1e-6, 0.8), (1e-4, 0.9), (1e-2, 0.85)],
         "pruned": [(1e-2, 0.4), (1e-8, 0.0)]},
        {"name": "dropout_ratio", "kind": "float", "log": False,
         "points": [(0.1, 0.8), (0.2, 0.9), (0.5, 0.85)],
         "pruned": [(0.3, 0.4), (0.0, 0.0)]},
        {"name": "optimizer", "kind": "categorical", "log": False,
         "points": [("sgd", 0.8), ("adam", 0.9), ("sgd", 0.85)],
         "pruned": [("sgd", 0.4), ("momentum", 0.0)]},
    ]  # fmt: skip


def test_slice_data_leaves_out_a_parameter_no_complete_trial_has():
    study = snapshot([complete(0, 0.8, {"learning_rate": 1e-3})])
    assert [p["name"] for p in figures.slice_data(study)] == ["learning_rate"]


def test_parallel_data_describes_each_axis():
    assert figures.parallel_data(STUDY, 3)["axes"] == [
        {"name": "learning_rate", "categorical": False, "log": True, "low": 1e-4, "high": 1e-1},
        {"name": "weight_decay", "categorical": False, "log": True, "low": 1e-8, "high": 1e-2},
        {"name": "dropout_ratio", "categorical": False, "log": False, "low": 0.0, "high": 0.5},
        {"name": "optimizer", "categorical": True, "labels": ["sgd", "momentum", "adam"]},
    ]


def test_parallel_data_scales_log_linear_and_categorical_axes_to_0_1():
    lines = figures.parallel_data(STUDY, 3)["lines"]
    assert [(line["trial"], line["value"]) for line in lines] == [(2, 0.9), (4, 0.85), (0, 0.8)]
    assert [line["coords"] for line in lines] == [
        pytest.approx([2 / 3, 2 / 3, 0.4, 1.0]),  # 1e-2, 1e-4, 0.2, adam
        pytest.approx([0.0, 1.0, 1.0, 0.0]),  # 1e-4, 1e-2, 0.5, sgd
        pytest.approx([1 / 3, 1 / 3, 0.2, 0.0]),  # 1e-3, 1e-6, 0.1, sgd
    ]


def test_parallel_data_keeps_every_coordinate_in_0_1():
    optimizers = ("sgd", "momentum", "adam")
    study = snapshot(
        [
            complete(n, 0.5 + n / 100, hyper(10 ** (-4 + n / 3), 10 ** (-8 + n * 2 / 3), n / 18,
                                             optimizers[n % 3]))
            for n in range(10)
        ]
    )  # fmt: skip
    coords = [c for line in figures.parallel_data(study, 10)["lines"] for c in line["coords"]]
    assert len(coords) == 40
    assert all(0.0 <= c <= 1.0 for c in coords)


def test_parallel_data_caps_at_top_k():
    assert len(figures.parallel_data(STUDY, 2)["lines"]) == 2


def test_parallel_data_leaves_a_missing_parameter_as_none():
    study = snapshot(
        [
            complete(0, 0.9, {"learning_rate": 1e-2}),
            complete(1, 0.8, hyper(1e-3, 1e-4, 0.5, "adam")),
        ]
    )
    coords = figures.parallel_data(study, 2)["lines"][0]["coords"]
    assert coords == [pytest.approx(2 / 3), None, None, None]


def test_parallel_data_without_bounds_or_choices_scales_to_the_values_seen():
    params = (ParamInfo("units", "float"), ParamInfo("activation", "categorical"))
    study = snapshot(
        [
            complete(0, 0.9, {"units": 10, "activation": "tanh"}),
            complete(1, 0.8, {"units": 30, "activation": "relu"}),
            complete(2, 0.7, {"units": 20, "activation": "tanh"}),
        ],
        params=params,
    )
    data = figures.parallel_data(study, 3)
    assert data["axes"] == [
        {"name": "units", "categorical": False, "log": False, "low": 10, "high": 30},
        {"name": "activation", "categorical": True, "labels": ["relu", "tanh"]},
    ]
    assert [line["coords"] for line in data["lines"]] == [[0.0, 1.0], [1.0, 0.0], [0.5, 1.0]]


def test_parallel_data_puts_a_constant_axis_at_the_middle():
    study = snapshot([complete(0, 0.9, {"units": 10})], params=(ParamInfo("units", "float"),))
    assert figures.parallel_data(study, 1)["lines"][0]["coords"] == [0.5]


# ---------------------------------------------------------------------------------------------
# Intermediate values


def test_intermediate_data_splits_complete_and_pruned_series_by_epoch():
    assert figures.intermediate_data(STUDY) == {
        "complete": [
            [(1, 0.5), (2, 0.7), (3, 0.8)],
            [(1, 0.6), (2, 0.9), (3, 0.85)],
            [(1, 0.5), (2, 0.85), (3, 0.8)],
        ],
        "pruned": [[(1, 0.4)], [(1, 0.3), (2, 0.0)]],
        "epochs": 3,
    }


def test_intermediate_data_sorts_each_series_by_epoch():
    study = snapshot([pruned(0, {2: 0.5, 1: 0.25})])
    assert figures.intermediate_data(study)["pruned"] == [[(1, 0.25), (2, 0.5)]]


# ---------------------------------------------------------------------------------------------
# The best configuration


def test_activations_data_lists_each_layer():
    assert figures.activations_data(STUDY) == [
        {"layer": 1, "edges": [0.0, 0.5, 1.0], "initial": [3, 1], "trained": [1, 3],
         "initial_zeros": 0.5, "trained_zeros": 0.25},
        {"layer": 2, "edges": [-1.0, 0.0, 1.0], "initial": [2, 2], "trained": [0, 4],
         "initial_zeros": 0.0, "trained_zeros": 0.0},
    ]  # fmt: skip


def test_gap_data_is_training_minus_validation_of_the_best_trial():
    data = figures.gap_data(STUDY)
    assert data == {
        "trial": 2,
        "train_accuracy": [0.625, 0.875, 1.0],
        "val_accuracy": [0.6, 0.9, 0.85],
        "gap": pytest.approx([0.025, -0.025, 0.15]),
        "best_epoch": 2,
    }


def test_gap_data_is_none_when_the_best_trial_has_no_curves():
    study = snapshot([TrialRecord(number=0, state="COMPLETE", value=0.9), complete(1, 0.8, {})])
    assert figures.gap_data(study) is None


# ---------------------------------------------------------------------------------------------
# Nothing to show


@pytest.mark.parametrize("study", [EMPTY, ONLY_RUNNING], ids=["no trials", "only running"])
@pytest.mark.parametrize("name", DATA_FUNCTIONS)
def test_data_is_none_when_the_study_has_nothing_to_show(name, study):
    assert DATA_FUNCTIONS[name](study) is None


def test_data_is_none_for_failed_trials_only():
    study = snapshot([other(0, "FAIL", {1: 0.5}), other(1, "FAIL")])
    assert all(data_fn(study) is None for data_fn in DATA_FUNCTIONS.values())


# ---------------------------------------------------------------------------------------------
# Plots


def save(fig) -> None:
    try:
        fig.savefig(io.BytesIO(), format="png")
        assert fig.axes
    finally:
        plt.close(fig)


@pytest.mark.parametrize("name", PLOTS)
def test_plot_draws_the_study(name):
    save(PLOTS[name](DATA_FUNCTIONS[name](STUDY)))


ONE_TRIAL = snapshot(
    [complete(0, 0.9, hyper(1e-2, 1e-4, 0.2, "adam"))],
    importances={"learning_rate": 1.0},
    activations=LAYERS[:1],
    first_layer=FirstLayer(0, 4, ((0.0,) * 16,)),  # all zero: a scale of its own still
)


@pytest.mark.parametrize("name", PLOTS)
def test_plot_draws_a_single_trial(name):
    save(PLOTS[name](DATA_FUNCTIONS[name](ONE_TRIAL)))


def test_plot_history_draws_pruned_trials_alone():
    save(figures.plot_history(figures.history_data(snapshot([pruned(0, {1: 0.5})]))))


def test_plot_intermediate_draws_pruned_trials_alone():
    save(figures.plot_intermediate(figures.intermediate_data(snapshot([pruned(0, {1: 0.5})]))))


def test_plot_importance_draws_all_zero_importances():
    study = snapshot([], importances={"learning_rate": 0.0, "optimizer": 0.0})
    save(figures.plot_importance(figures.importance_data(study)))


def test_plot_learning_curves_draws_more_panels_than_one_row():
    study = snapshot([complete(n, n / 100, {}) for n in range(12)])
    save(figures.plot_learning_curves(figures.learning_curves_data(study, 12)))


def test_plot_parallel_shows_the_whole_0_1_range_of_every_axis():
    fig = figures.plot_parallel(figures.parallel_data(ONE_TRIAL, 10))
    try:
        low, high = fig.axes[0].get_ylim()
        assert low <= 0.0 and high >= 1.0
    finally:
        plt.close(fig)


def test_confirmed_data_lists_every_run_by_confirmed_rank():
    from reports.snapshot import ConfirmedRecord

    def record(trial, rank, values, *, tied=False, search_rank=1):
        return ConfirmedRecord(trial, {}, 0.95, 0.94, 0.96, tuple(values), rank, 0.97,
                               search_rank, None if rank == 1 else 0.3, tied)  # fmt: skip

    assert figures.confirmed_data(snapshot([])) is None
    s = snapshot([], confirmed=(
        record(4, 1, [0.95, 0.96], search_rank=2),
        record(2, 2, [0.94, 0.95], tied=True),
        record(7, 3, [0.90, 0.91], search_rank=3),
    ))  # fmt: skip
    rows = figures.confirmed_data(s)["rows"]
    assert [r["label"] for r in rows] == [
        "#4 (search rank 2)",
        "#2 (search rank 1)",
        "#7 (search rank 3)",
    ]
    assert [r["kind"] for r in rows] == ["first", "tied", "apart"]
    assert rows[0]["values"] == [0.95, 0.96] and rows[0]["search_value"] == 0.97
    plt.close(figures.plot_confirmed(figures.confirmed_data(s)))


def test_importance_data_carries_the_bootstrap_spread_in_the_bars_order():
    study = snapshot(
        [],
        importances={"learning_rate": 0.7, "weight_decay": 0.3},
        importance_spread={"learning_rate": (0.5, 0.9), "weight_decay": (0.1, 0.45)},
    )
    data = figures.importance_data(study)
    assert data["names"] == ["weight_decay", "learning_rate"]
    assert data["spread"] == [[0.1, 0.45], [0.5, 0.9]]
    save(figures.plot_importance(data))


def test_first_layer_data_lists_each_units_weights_as_an_image():
    data = figures.first_layer_data(STUDY)
    assert data["trial"] == 2 and data["side"] == 4
    assert len(data["units"]) == 7 and all(len(u) == 16 for u in data["units"])
