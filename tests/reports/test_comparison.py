"""Studies side by side: best-so-far against trials and compute time, and who reached whose best."""

import dataclasses
import io
from datetime import datetime, timedelta

import matplotlib.pyplot as plt

from reports.comparison import comparison_data, plot_comparison, reach_sentences, render_comparison
from reports.snapshot import SpecFacts, StudySnapshot, TrialRecord

T0 = datetime(2026, 1, 1)


def record(number, state, value, seconds):
    return TrialRecord(
        number=number,
        state=state,
        value=value,
        started=T0,
        completed=T0 + timedelta(seconds=seconds),
        train_seconds=seconds / 2,
    )


def study(name, sampler, trials):
    return StudySnapshot(
        name=name,
        storage="sqlite:///x.db",
        spec=SpecFacts(sampler=sampler, pruner="none", fingerprint="digits"),
        split_sizes={},
        trials=tuple(trials),
        params=(),
    )


RANDOM = study(
    "r",
    "random",
    [record(0, "COMPLETE", 0.5, 1.0), record(1, "COMPLETE", 0.7, 2.0), record(2, "FAIL", None, 9)],
)
TPE = study(
    "t",
    "tpe",
    [
        record(0, "PRUNED", None, 0.5),
        record(1, "COMPLETE", 0.6, 1.0),
        record(2, "COMPLETE", 0.9, 1.0),
    ],
)


def test_best_so_far_follows_trial_order_and_sums_trial_durations():
    data = comparison_data([RANDOM, TPE])
    r, t = data["studies"]
    assert r == {
        "name": "r",
        "sampler": "random",
        "pruner": "none",
        "trials": 2,  # the failed trial is not finished work
        "best": 0.7,
        "best_so_far": [0.5, 0.7],
        "seconds": [1.0, 3.0],
        "training_seconds": 1.5,
    }
    assert t["best_so_far"] == [None, 0.6, 0.9]
    assert t["seconds"] == [0.5, 1.5, 2.5]


def test_the_compute_leaves_out_the_time_a_trial_waited_queued_for_a_worker():
    queued = TrialRecord(
        number=0,
        state="COMPLETE",
        value=0.5,
        started=T0,
        completed=T0 + timedelta(seconds=3.0),
        train_seconds=1.0,
        queued_seconds=1.75,
    )
    data = comparison_data([study("q", "random", [queued])])
    assert data["studies"][0]["seconds"] == [1.25]


def test_reaches_say_when_one_study_first_matched_the_others_best():
    data = comparison_data([RANDOM, TPE])
    assert data["reaches"] == [
        {
            "target": "r",
            "target_best": 0.7,
            "target_trials": 2,
            "study": "t",
            "trial": 3,
            "seconds": 2.5,
            "of_seconds": 2.5,
        },
        {
            "target": "t",
            "target_best": 0.9,
            "target_trials": 3,
            "study": "r",
            "trial": None,
            "seconds": None,
            "of_seconds": 3.0,
        },
    ]
    assert reach_sentences(data) == [
        "t reached r's best of 2 trials (0.7000) at its trial 3, after 2.5 s of its 2.5 s.",
        "r never reached t's best (0.9000).",
    ]


def test_plot_and_page_render():
    fig = plot_comparison(comparison_data([RANDOM, TPE]))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    assert buffer.tell() > 1000
    page = render_comparison([RANDOM, TPE])
    assert "<title>hpo comparison: r vs t</title>" in page
    assert "r never reached t&#39;s best (0.9000)." in page
    assert "do not share one objective" not in page


def test_page_warns_when_the_objectives_differ():
    other = study("o", "tpe", [record(0, "COMPLETE", 0.4, 1.0)])
    other = dataclasses.replace(
        other, spec=dataclasses.replace(other.spec, dataset="mnist", fingerprint="mnist")
    )
    assert "do not share one objective" in render_comparison([RANDOM, other])
