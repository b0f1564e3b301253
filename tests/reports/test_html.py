"""The HTML report: it renders for every kind of study (empty, one trial, all pruned, categoricals
only, still running, 5,000 trials), makes the expected figures, escapes user data and loads
nothing from the network."""

import base64
import dataclasses
import math
import re
from datetime import datetime, timedelta

import numpy as np
import pytest

from reports import figures, html
from reports.snapshot import (
    ConfirmedRecord,
    LayerHistograms,
    ParamInfo,
    SpaceEntry,
    SpecFacts,
    StudySnapshot,
    TrialRecord,
)

OPTIMIZERS = ("sgd", "momentum", "adam")
LR = ParamInfo("learning_rate", "float", log=True, low=1e-4, high=1e-1)
WD = ParamInfo("weight_decay", "float", log=True, low=1e-8, high=1e-2)
OPTIMIZER = ParamInfo("optimizer", "categorical", choices=OPTIMIZERS)
ACTIVATION = ParamInfo("activation", "categorical", choices=("relu", "tanh"))
T0 = datetime(2024, 5, 1, 12, 0)
LAYERS = (LayerHistograms(1, (0.0, 0.5, 1.0), (3, 1), (1, 3), initial_zeros=0.5),)


def complete(number, value, params):
    val = [value / 2, value * 0.9, value]
    return TrialRecord(
        number=number,
        state="COMPLETE",
        value=value,
        params=params,
        intermediate=dict(enumerate(val, start=1)),
        curves={"train_accuracy": [v + 0.02 for v in val], "val_accuracy": val},
        best_epoch=3,
        train_accuracy=value + 0.02,
        epochs_run=3,
        train_seconds=1.5,
        started=T0 + timedelta(minutes=number),
        completed=T0 + timedelta(minutes=number, seconds=2),
    )


def pruned(number, params, *, diverged=False):
    return TrialRecord(
        number=number,
        state="PRUNED",
        params=params,
        intermediate={1: 0.3, 2: 0.0} if diverged else {1: 0.3},
        epochs_run=1,
        train_seconds=0.5,
        diverged=diverged,
    )


def running(number, params):
    return TrialRecord(number=number, state="RUNNING", params=params, intermediate={1: 0.4})


def space_of(params):
    return tuple(
        SpaceEntry(p.name, "choice", choices=tuple(p.choices))
        if p.kind == "categorical"
        else SpaceEntry(p.name, "float", low=p.low, high=p.high, log=p.log)
        for p in params
    )


def snapshot(
    trials, params=(LR, WD, OPTIMIZER), *, name="study", description="", epochs=3, **fields
):
    return StudySnapshot(
        name=name,
        storage="sqlite:///study.db",
        spec=SpecFacts(
            description=description,
            model="hidden [16], relu",
            epochs=epochs,
            batch_size=50,
            space=space_of(params),
        ),
        split_sizes={"train": 8, "validation": 2, "test": 2},
        trials=tuple(trials),
        params=params,
        generated=T0,
        **fields,
    )


def hyper(learning_rate, weight_decay, optimizer):
    return {"learning_rate": learning_rate, "weight_decay": weight_decay, "optimizer": optimizer}


def big_snapshot(n_trials, *, epochs=30, seed=0):
    """A synthetic study: six parameters, ``epochs``-epoch curves, mixed states."""
    rng = np.random.default_rng(seed)
    params = (
        LR,
        WD,
        ParamInfo("dropout_ratio", "float", low=0.0, high=0.5),
        ParamInfo("init_scale", "float", log=True, low=0.1, high=10.0),
        ParamInfo("momentum", "float", low=0.5, high=0.99),
        OPTIMIZER,
    )
    states = rng.choice(
        ["COMPLETE", "PRUNED", "FAIL", "RUNNING"], n_trials, p=[0.6, 0.3, 0.05, 0.05]
    )
    trials = []
    for number, state in enumerate(states.tolist()):
        values = {
            "learning_rate": float(10 ** rng.uniform(-4, -1)),
            "weight_decay": float(10 ** rng.uniform(-8, -2)),
            "dropout_ratio": float(rng.uniform(0, 0.5)),
            "init_scale": float(10 ** rng.uniform(-1, 1)),
            "optimizer": OPTIMIZERS[number % 3],
        }
        if values["optimizer"] == "momentum":
            values["momentum"] = float(rng.uniform(0.5, 0.99))
        quality = 0.97 - 0.08 * (math.log10(values["learning_rate"]) + 2.5) ** 2
        run = {"COMPLETE": epochs, "FAIL": 0}.get(state) or int(rng.integers(1, epochs))
        val = (quality * (1 - np.exp(-np.arange(1, run + 1) / 4))).tolist()  # (run,)
        diverged = state == "PRUNED" and number % 7 == 0
        trials.append(
            TrialRecord(
                number=number,
                state=state,
                value=max(val) if state == "COMPLETE" else None,
                params=values,
                intermediate=dict(enumerate([*val, 0.0] if diverged else val, start=1)),
                curves={"train_accuracy": [min(1.0, v + 0.03) for v in val], "val_accuracy": val}
                if run
                else None,
                best_epoch=run or None,
                train_accuracy=min(1.0, val[-1] + 0.03) if run else None,
                epochs_run=run,
                train_seconds=0.05 * run if state != "RUNNING" else None,
                diverged=diverged,
                started=T0 + timedelta(seconds=2 * number),
            )
        )
    return snapshot(
        trials,
        params,
        name=f"big-{n_trials}",
        epochs=epochs,
        importances={p.name: 1 / len(params) for p in params},
        activations=tuple(dataclasses.replace(LAYERS[0], layer=i) for i in (1, 2, 3)),
    )


SCENARIOS = {
    "empty": lambda: snapshot([]),
    "one trial": lambda: snapshot([complete(0, 0.9, hyper(1e-2, 1e-4, "adam"))]),
    "all pruned": lambda: snapshot(
        [pruned(0, hyper(1e-1, 1e-2, "sgd")), pruned(1, hyper(1e-2, 1e-3, "adam"), diverged=True)]
    ),
    "categoricals only": lambda: snapshot(
        [
            complete(0, 0.8, {"optimizer": "sgd", "activation": "tanh"}),
            complete(1, 0.9, {"optimizer": "adam", "activation": "relu"}),
            pruned(2, {"optimizer": "momentum", "activation": "relu"}),
        ],
        params=(OPTIMIZER, ACTIVATION),
    ),
    "still running": lambda: snapshot(
        [
            complete(0, 0.8, hyper(1e-3, 1e-6, "sgd")),
            running(1, hyper(1e-2, 1e-4, "adam")),
            complete(2, 0.9, hyper(1e-2, 1e-5, "adam")),
            pruned(3, hyper(1e-1, 1e-2, "momentum")),
            running(4, {"learning_rate": 1e-3}),
        ],
        importances={"learning_rate": 0.75, "weight_decay": 0.125, "optimizer": 0.125},
        activations=LAYERS,
    ),
    "5000 trials": lambda: big_snapshot(5000),
}
# The 5,000-trial study takes seconds to draw: CI runs it with the slow tests.
SCENARIO_PARAMS = [
    pytest.param(name, marks=pytest.mark.slow) if name in ("5000 trials", "still running") else name
    for name in SCENARIOS
]
EVERY_FIGURE = [
    "curves",
    "history",
    "importance",
    "pair-learning_rate-weight_decay",
    "pair-learning_rate-init_scale",
    "by-optimizer",
    "slices",
    "parallel",
    "intermediate",
    "activations",
    "gap",
]
FIGURE_KEYS = {
    "empty": [],
    "one trial": [
        "curves",
        "history",
        "pair-learning_rate-weight_decay",
        "by-optimizer",
        "slices",
        "parallel",
        "intermediate",
        "gap",
    ],
    # Pruned trials count at their last value: the study's scatters show them, marked.
    "all pruned": [
        "history",
        "pair-learning_rate-weight_decay",
        "by-optimizer",
        "slices",
        "intermediate",
    ],
    "categoricals only": [
        "curves",
        "history",
        "by-optimizer",
        "by-activation",
        "slices",
        "parallel",
        "intermediate",
        "gap",
    ],
    "still running": [key for key in EVERY_FIGURE if key != "pair-learning_rate-init_scale"],
    "5000 trials": EVERY_FIGURE,
}


@pytest.fixture(scope="module")
def studies():
    """Each scenario's snapshot, built once."""
    return {name: build() for name, build in SCENARIOS.items()}


@pytest.fixture(scope="module")
def pages(studies):
    """Each scenario's rendered page, rendered once for every test that reads it."""
    cache = {}

    def page(name: str) -> str:
        if name not in cache:
            cache[name] = html.render(studies[name])
        return cache[name]

    return page


# ---------------------------------------------------------------------------------------------
# Every kind of study


@pytest.mark.parametrize("scenario", SCENARIO_PARAMS)
def test_render_makes_one_html_page(pages, scenario):
    page = pages(scenario)
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")


@pytest.mark.parametrize("scenario", SCENARIO_PARAMS)
def test_build_figures_makes_the_figures_the_study_has_data_for(studies, scenario):
    keys = [f.key for f in html.build_figures(studies[scenario], 10)]
    assert keys == FIGURE_KEYS[scenario]


@pytest.mark.parametrize("scenario", SCENARIO_PARAMS)
def test_page_shows_every_figure_it_builds(pages, scenario):
    shown = re.findall(r"<h2 id=\"([^\"]+)\">[^<]*</h2>\s*<figure>", pages(scenario))
    assert shown == FIGURE_KEYS[scenario]


def test_empty_study_page_says_no_trial_has_completed(pages):
    page = pages("empty")
    assert "No trial has completed yet" in page
    assert "no figure to draw" in page
    assert "<img" not in page


def test_all_pruned_page_has_no_winner(pages):
    page = pages("all pruned")
    assert "Best in the search" not in page and "Confirmed best" not in page
    assert "No trial has completed yet (2 pruned, 0 failed, 0 running)." in page


def test_one_trial_page_names_the_winner(pages):
    assert "<strong>Best in the search: trial #0</strong>" in pages("one trial")


def test_running_study_page_counts_the_running_trials(pages):
    page = pages("still running")
    assert "2 complete, 1 pruned (0 diverged), 0 failed, 2 running" in page
    assert "<strong>Best in the search: trial #2</strong>" in page


def test_page_gives_the_test_accuracy_of_the_retrained_winner(studies):
    retrained = dataclasses.replace(
        studies["one trial"], test_accuracy={"trial": 0, "test_accuracy": 0.875, "epochs": 3}
    )
    assert "its test\n  accuracy is <strong>0.8750</strong>" in html.render(retrained)


@pytest.mark.slow
def test_5000_trial_page_is_under_10_mb(pages):
    assert len(pages("5000 trials").encode("utf-8")) < 10 * 10**6


@pytest.mark.slow
def test_page_says_why_importance_is_missing(studies):
    note = "Importance needs at least two completed trials."
    study = dataclasses.replace(studies["one trial"], importance_note=note)
    assert note in html.render(study)


# ---------------------------------------------------------------------------------------------
# Escaping


@pytest.fixture(scope="module")
def hostile_page():
    """A study whose name, a categorical choice and the spec description are markup."""
    evil = "<script>alert(2)</script>"
    optimizer = ParamInfo("optimizer", "categorical", choices=("sgd", evil))
    study = snapshot(
        [
            complete(0, 0.9, {"learning_rate": 1e-2, "optimizer": evil}),
            complete(1, 0.8, {"learning_rate": 1e-3, "optimizer": "sgd"}),
        ],
        params=(LR, optimizer),
        name="<script>alert(1)</script>",
        description="<b>x</b>",
    )
    return html.render(study)


def test_page_escapes_the_study_name(hostile_page):
    assert "&lt;script&gt;alert(1)" in hostile_page


def test_page_escapes_parameter_values(hostile_page):
    assert "&lt;script&gt;alert(2)" in hostile_page


def test_page_never_contains_raw_script_markup(hostile_page):
    assert "<script>alert(" not in hostile_page
    assert "<script" not in hostile_page


def test_page_escapes_the_spec_description(hostile_page):
    assert "<b>x</b>" not in hostile_page
    assert "&lt;b&gt;x&lt;/b&gt;" in hostile_page


# ---------------------------------------------------------------------------------------------
# Self-contained


@pytest.mark.parametrize("scenario", SCENARIO_PARAMS)
def test_page_loads_nothing_from_the_network(pages, scenario):
    page = pages(scenario)
    for reference in ('src="http', 'href="http', "url(http", 'src="//', 'href="//', "<link"):
        assert reference not in page
    assert "<script" not in page


@pytest.mark.parametrize("scenario", SCENARIO_PARAMS)
def test_every_image_is_an_inline_png(pages, scenario):
    page = pages(scenario)
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(sources) == page.count("<img")
    for source in sources:
        prefix, _, data = source.partition(",")
        assert prefix == "data:image/png;base64"
        assert base64.b64decode(data, validate=True).startswith(b"\x89PNG")


# ---------------------------------------------------------------------------------------------
# Writing


def test_write_report_writes_the_page_and_returns_its_path(tmp_path):
    study = SCENARIOS["empty"]()
    path = html.write_report(study, str(tmp_path / "report.html"))
    assert path == tmp_path / "report.html"
    assert path.read_text(encoding="utf-8") == html.render(study)


def confirmed(trial, values, *, rank, search_rank, p=None, tied=False):
    mean = sum(values) / len(values)
    return ConfirmedRecord(
        trial=trial,
        params=hyper(0.01, 1e-5, "adam"),
        mean=mean,
        low=mean - 0.01,
        high=mean + 0.01,
        values=tuple(values),
        rank=rank,
        search_value=0.9,
        search_rank=search_rank,
        p_vs_best=p,
        tied=tied,
    )


def two_trials(**fields):
    trials = [
        complete(0, 0.9, hyper(0.01, 1e-5, "adam")),
        complete(1, 0.8, hyper(0.02, 1e-5, "sgd")),
    ]
    return dataclasses.replace(
        snapshot(trials, **fields),
        split_sizes={"train": 800, "validation": 288, "test": 200},
        confirm_command="python -m hpo confirm --study study --top 5 --seeds 5",
    )


@pytest.mark.slow
def test_an_unconfirmed_ranking_says_so_and_gives_the_command():
    page = html.render(two_trials(description="Digits, <b>three</b> layers."))
    assert "<strong>Best in the search: trial #0</strong>" in page
    assert "<strong>This ranking is unconfirmed</strong>" in page
    assert "<code>python -m hpo confirm --study study --top 5 --seeds 5</code>" in page
    assert "Digits, &lt;b&gt;three&lt;/b&gt; layers." in page  # the description, escaped
    # 288 validation samples at 0.9: sqrt(0.9 * 0.1 / 288) = 0.0177; #1 (0.8) is further away.
    assert "The validation split has 288 samples" in page
    assert "standard error of 0.0177, and 0 of the next 1 configurations are within" in page
    assert 'id="confirmed"' not in page


@pytest.mark.slow
def test_a_confirmed_ranking_names_the_confirmed_best_and_its_ties():
    page = html.render(
        two_trials(
            confirmed=(
                confirmed(1, [0.95, 0.96, 0.97], rank=1, search_rank=2),
                confirmed(0, [0.94, 0.96, 0.96], rank=2, search_rank=1, p=0.42, tied=True),
            ),
            confirm_verdict="trial #1 ranks first but is tied with #0: the test cannot tell",
        )
    )
    assert "<strong>Confirmed best: trial #1</strong>" in page
    assert "<strong>0.9600</strong> (95% interval 0.9500 to 0.9700)" in page
    assert "over 3 fresh seeds" in page and "Trial #1 ranks first but is tied with #0" in page
    assert "The search alone ranked it #2." in page
    assert "This ranking is unconfirmed" not in page
    assert re.search(r'<h2 id="confirmed">Confirmed ranking</h2>\s*<figure>', page)


def test_after_confirm_every_section_is_about_the_confirmed_best():
    s = two_trials(
        confirmed=(
            confirmed(1, [0.95, 0.96, 0.97], rank=1, search_rank=2),
            confirmed(0, [0.90, 0.91, 0.92], rank=2, search_rank=1, p=0.01),
        ),
        confirm_verdict="trial #1 is distinguishable from every other",
    )
    search_best = s.ranked()[0].number
    assert search_best == 0 and s.best_trial().number == 1
    page = html.render(s)
    row = re.search(r'<tr class="best">\s*<td class="num">(\d+)</td><td class="num">#(\d+)<', page)
    assert row is not None and row.group(2) == "1"  # the highlighted row
    assert "The confirmed best configuration, trial #1" in page
    assert len(re.findall('class="best"', page)) == 1
    assert figures.gap_data(s)["trial"] == 1
    panels = figures.learning_curves_data(s, 10)
    assert [p["trial"] for p in panels if p["confirmed_best"]] == [1]
