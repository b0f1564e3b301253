"""The report's findings: counts, compute time, the best region, category rankings, overfitting,
pruning savings, value formatting and the sentences of "what the study found"."""

import dataclasses
from datetime import datetime, timedelta

import pytest

from reports import summary
from reports.snapshot import ParamInfo, SpaceEntry, SpecFacts, StudySnapshot, TrialRecord

LR = ParamInfo("learning_rate", "float", log=True, low=1e-4, high=1e-1)
DROPOUT = ParamInfo("dropout_ratio", "float", low=0.0, high=0.5)
OPTIMIZER = ParamInfo("optimizer", "categorical", choices=("sgd", "momentum", "adam"))
ACTIVATION = ParamInfo("activation", "categorical", choices=("relu", "tanh"))
T0 = datetime(2024, 5, 1, 12, 0)


def complete(number, value, params=None, *, train_accuracy=None, epochs_run=10, seconds=None):
    return TrialRecord(
        number=number,
        state="COMPLETE",
        value=value,
        params=params or {},
        best_epoch=epochs_run,
        train_accuracy=train_accuracy,
        epochs_run=epochs_run,
        train_seconds=seconds,
    )


def pruned(number, epochs_run, params=None, *, diverged=False):
    return TrialRecord(
        number=number,
        state="PRUNED",
        params=params or {},
        intermediate={e: 0.5 for e in range(1, epochs_run + 1)},
        epochs_run=epochs_run,
        diverged=diverged,
    )


def other(number, state):
    """A failed, running or waiting trial."""
    return TrialRecord(number=number, state=state)


def snapshot(trials, params=(LR, DROPOUT, OPTIMIZER), *, epochs=10):
    return StudySnapshot(
        name="study",
        storage="sqlite:///study.db",
        spec=SpecFacts(epochs=epochs),
        split_sizes={"train": 8, "validation": 2, "test": 2},
        trials=tuple(trials),
        params=params,
    )


def lr_dropout_optimizer(learning_rate, dropout_ratio, optimizer):
    return {"learning_rate": learning_rate, "dropout_ratio": dropout_ratio, "optimizer": optimizer}


# A normal study: #7 is best (adam); 2 of 6 finished trials were pruned, one of them diverged.
NORMAL = snapshot(
    [
        complete(0, 0.80, lr_dropout_optimizer(1e-3, 0.1, "sgd"), train_accuracy=0.82),
        complete(1, 0.85, lr_dropout_optimizer(2e-3, 0.2, "adam"), train_accuracy=0.9),
        pruned(2, 3, lr_dropout_optimizer(1e-1, 0.4, "sgd")),
        other(3, "FAIL"),
        complete(4, 0.84, lr_dropout_optimizer(5e-3, 0.3, "sgd"), train_accuracy=0.86),
        pruned(5, 2, lr_dropout_optimizer(1e-1, 0.0, "momentum"), diverged=True),
        other(6, "RUNNING"),
        complete(7, 0.9375, lr_dropout_optimizer(4e-3, 0.25, "adam"), train_accuracy=1.0),
    ]
)


# ---------------------------------------------------------------------------------------------
# Counts and compute time


def test_counts_tallies_each_state_and_the_diverged():
    assert summary.counts(NORMAL) == {
        "complete": 4,
        "pruned": 2,
        "fail": 1,
        "running": 1,
        "waiting": 0,
        "diverged": 1,
        "total": 8,
    }


def test_counts_of_an_empty_study_are_zero():
    assert set(summary.counts(snapshot([])).values()) == {0}


def test_compute_time_sums_training_seconds_and_spans_the_trials_dates():
    trials = [
        TrialRecord(0, "COMPLETE", 0.5, train_seconds=3.0, started=T0,
                    completed=T0 + timedelta(seconds=4)),
        TrialRecord(1, "PRUNED", train_seconds=1.0, started=T0 + timedelta(seconds=5),
                    completed=T0 + timedelta(seconds=6)),
        TrialRecord(2, "COMPLETE", 0.6, train_seconds=8.0, started=T0 + timedelta(seconds=7),
                    completed=T0 + timedelta(seconds=16)),
        TrialRecord(3, "RUNNING", started=T0 + timedelta(seconds=17)),
    ]  # fmt: skip
    assert summary.compute_time(snapshot(trials)) == {
        "total_seconds": 12.0,
        "mean_seconds": 4.0,
        "median_seconds": 3.0,
        "first": T0,
        "last": T0 + timedelta(seconds=16),
    }


def test_compute_time_of_an_empty_study_is_zero_with_no_dates():
    assert summary.compute_time(snapshot([])) == {
        "total_seconds": 0,
        "mean_seconds": None,
        "median_seconds": None,
        "first": None,
        "last": None,
    }


# ---------------------------------------------------------------------------------------------
# Best region and category ranking


def test_best_region_gives_float_ranges_and_categorical_tallies_of_the_top_3():
    # Top 3 of the 4 complete trials: #7, #1, #4.
    assert summary.best_region(NORMAL) == {
        "learning_rate": {"kind": "float", "low": 2e-3, "high": 5e-3, "log": True, "n": 3},
        "dropout_ratio": {"kind": "float", "low": 0.2, "high": 0.3, "log": False, "n": 3},
        "optimizer": {"kind": "categorical", "counts": {"adam": 2, "sgd": 1}},
    }


def test_best_region_orders_categorical_tallies_by_count_then_name():
    study = snapshot(
        [complete(n, 0.9 - n / 100, {"optimizer": o}) for n, o in enumerate("cbacb")],
        params=(OPTIMIZER,),
    )
    # Top 3: c, b, a.
    assert list(summary.best_region(study)["optimizer"]["counts"]) == ["a", "b", "c"]


@pytest.mark.parametrize(("n_complete", "n_top"), [(2, 2), (20, 3), (50, 5), (100, 10), (300, 10)])
def test_best_region_takes_the_top_decile_between_3_and_10(n_complete, n_top):
    study = snapshot([complete(n, n / 1000, {"learning_rate": n}) for n in range(n_complete)])
    region = summary.best_region(study)["learning_rate"]
    assert (region["n"], region["low"], region["high"]) == (
        n_top,
        n_complete - n_top,
        n_complete - 1,
    )


def test_best_region_leaves_out_parameters_no_top_trial_has():
    study = snapshot([complete(0, 0.9, {"learning_rate": 1e-3})])
    assert list(summary.best_region(study)) == ["learning_rate"]


def test_category_ranking_orders_choices_by_median_then_best_then_name():
    study = snapshot(
        [
            complete(0, 0.5, {"optimizer": "sgd"}),
            complete(1, 0.9, {"optimizer": "sgd"}),  # sgd: median 0.7, best 0.9
            complete(2, 0.7, {"optimizer": "adam"}),  # adam: median 0.7, best 0.7
            complete(3, 0.8, {"optimizer": "rmsprop"}),
            complete(4, 0.7, {"optimizer": "adagrad"}),  # adagrad ties adam entirely
            pruned(5, 2, {"optimizer": "momentum"}),
        ]
    )
    assert summary.category_ranking(study, "optimizer") == [
        {"choice": "rmsprop", "n": 1, "median": 0.8, "best": 0.8},
        {"choice": "sgd", "n": 2, "median": 0.7, "best": 0.9},
        {"choice": "adagrad", "n": 1, "median": 0.7, "best": 0.7},
        {"choice": "adam", "n": 1, "median": 0.7, "best": 0.7},
    ]


def test_category_ranking_of_an_unknown_parameter_is_empty():
    assert summary.category_ranking(NORMAL, "activation") == []


# ---------------------------------------------------------------------------------------------
# Overfitting and pruning savings


def test_overfitting_flags_a_gap_above_the_threshold():
    study = snapshot([complete(0, 0.6875, train_accuracy=0.75)])  # gap 0.0625
    assert summary.overfitting(study) == {
        "trial": 0,
        "train": 0.75,
        "val": 0.6875,
        "gap": 0.0625,
        "overfits": True,
    }


def test_overfitting_does_not_flag_a_gap_below_the_threshold():
    study = snapshot([complete(0, 0.71875, train_accuracy=0.75)])  # gap 0.03125
    assert summary.overfitting(study)["overfits"] is False


def test_overfitting_does_not_flag_a_gap_of_exactly_the_threshold():
    study = snapshot([complete(0, 0.5, train_accuracy=0.55)])
    assert summary.overfitting(study)["overfits"] is False


def test_overfitting_reads_the_best_trial():
    assert summary.overfitting(NORMAL)["trial"] == 7


def test_overfitting_is_none_without_the_best_trials_training_accuracy():
    assert summary.overfitting(snapshot([complete(0, 0.9)])) is None


def test_overfitting_is_none_without_a_complete_trial():
    assert summary.overfitting(snapshot([pruned(0, 3)])) is None


def test_pruning_savings_counts_epochs_of_finished_trials_against_full_runs():
    # 4 complete x 10 epochs + pruned 3 + diverged 2 = 45 trained. Unpruned, the pruned trial
    # would have run 10; the diverged one stops by itself, so it counts as run: 40 + 10 + 2.
    assert summary.pruning_savings(NORMAL) == {
        "trained": 45,
        "full": 52,
        "saved": 1 - 45 / 52,
        "pruned": 1,
    }


def test_pruning_savings_does_not_credit_early_stopping_to_pruning():
    # Two trials stopped early (patience) at epoch 5 of 10; one was pruned at epoch 5.
    study = snapshot([complete(0, 0.9, epochs_run=5), complete(1, 0.8, epochs_run=5), pruned(2, 5)])
    assert summary.pruning_savings(study) == {
        "trained": 15,
        "full": 20,
        "saved": 0.25,
        "pruned": 1,
    }


def test_pruning_savings_is_none_without_the_spec_epochs():
    assert summary.pruning_savings(snapshot([pruned(0, 3)], epochs=0)) is None


def test_pruning_savings_is_none_without_a_finished_trial():
    assert summary.pruning_savings(snapshot([other(0, "RUNNING"), other(1, "FAIL")])) is None


# ---------------------------------------------------------------------------------------------
# Formatting


@pytest.mark.parametrize(
    ("value", "log", "text"),
    [
        (0.0123, False, "0.0123"),
        (0.123456, False, "0.1235"),
        (0.001, False, "0.001"),
        (1e-4, False, "1.00e-04"),
        (12345.0, False, "1.23e+04"),
        (0.5, True, "5.00e-01"),
        (0.0, True, "0"),
        (3, True, "3"),
        ("adam", False, "adam"),
        (True, False, "True"),
    ],
)
def test_fmt_value(value, log, text):
    assert summary.fmt_value(value, log=log) == text


# ---------------------------------------------------------------------------------------------
# Findings


def test_findings_without_a_completed_trial_says_so_with_the_counts():
    study = snapshot([pruned(0, 2), other(1, "FAIL"), other(2, "RUNNING"), other(3, "RUNNING")])
    assert summary.findings(study) == [
        "No trial has completed yet (1 pruned, 1 failed, 2 running)."
    ]


def test_findings_of_an_empty_study():
    assert summary.findings(snapshot([])) == [
        "No trial has completed yet (0 pruned, 0 failed, 0 running)."
    ]


def test_findings_when_every_trial_was_pruned():
    study = snapshot([pruned(0, 2), pruned(1, 3, diverged=True), pruned(2, 1)])
    assert summary.findings(study) == [
        "No trial has completed yet (3 pruned, 0 failed, 0 running)."
    ]


def test_findings_of_one_trial():
    study = snapshot(
        [complete(0, 0.9, lr_dropout_optimizer(1e-2, 0.25, "adam"), train_accuracy=0.95)]
    )
    assert summary.findings(study) == [
        "The best configuration, trial #0, reached validation accuracy 0.9000 at epoch 10 "
        "(one run: about ±0.2500, the standard error on 2 validation samples).",
        "The best configuration lies at learning_rate 1.00e-02; dropout_ratio 0.25; "
        "optimizer mostly adam (1 of 1).",
        "Best optimizer by median validation accuracy: adam (median 0.9000 over 1 trial).",
        "The best configuration does not overfit noticeably: training accuracy 0.9500 against "
        "validation 0.9000.",
        "No trial was pruned.",
    ]


def test_findings_of_a_space_of_categoricals_only():
    study = snapshot(
        [
            complete(0, 0.7, {"optimizer": "sgd", "activation": "tanh"}),
            complete(1, 0.9, {"optimizer": "adam", "activation": "relu"}),
            complete(2, 0.8, {"optimizer": "adam", "activation": "relu"}),
        ],
        params=(OPTIMIZER, ACTIVATION),
    )
    assert summary.findings(study) == [
        "The best configuration, trial #1, reached validation accuracy 0.9000 at epoch 10 "
        "(one run: about ±0.2500, the standard error on 2 validation samples).",
        "The top 3 configurations (one run each; 2 of the other 2 within one standard error of "
        "the best) lie at optimizer mostly adam (2 of 3); "
        "activation mostly relu (2 of 3).",
        "Best optimizer by median validation accuracy: adam (median 0.8500 over 2 trials; "
        "next sgd at 0.7000; too few trials to tell them apart).",
        "No trial was pruned.",
    ]


def test_findings_of_a_normal_study():
    assert summary.findings(NORMAL) == [
        "The best configuration, trial #7, reached validation accuracy 0.9375 at epoch 10 "
        "(one run: about ±0.2500, the standard error on 2 validation samples).",
        "The top 3 configurations (one run each; 2 of the other 2 within one standard error of "
        "the best) lie at learning_rate 2.00e-03 to 5.00e-03; "
        "dropout_ratio 0.2 to 0.3; optimizer mostly adam (2 of 3).",
        "Best optimizer by median validation accuracy, among those that completed a trial: adam "
        "(median 0.8938 over 2 trials; next sgd at 0.8200; not distinguishable at 5% by a "
        "Mann-Whitney test, p = 0.33).",
        "Not ranked, as no trial of theirs completed: momentum (1 trial: 1 diverged).",
        "The best configuration overfits: training accuracy 1.0000 against validation 0.9375 "
        "at its best epoch (gap 0.062); stronger weight decay or dropout may help.",
        "Pruning stopped 1 trial early and saved 13% of the epochs (45 trained of 52).",
    ]


def test_findings_give_a_single_value_when_the_top_trials_agree():
    study = snapshot([complete(n, 0.9 - n / 100, {"learning_rate": 1e-3}) for n in range(3)])
    found = summary.findings(study)
    assert any(
        line.startswith("The top 3 configurations (one run each")
        and line.endswith(" lie at learning_rate 1.00e-03.")
        for line in found
    )


def test_findings_leave_out_the_optimizer_when_it_is_not_searched():
    study = snapshot([complete(0, 0.9, {"learning_rate": 1e-3})], params=(LR,))
    assert not any("optimizer" in line for line in summary.findings(study))


def test_uncertainty_gives_the_standard_error_and_who_is_within_it():
    trials = [complete(0, 0.98), complete(1, 0.975), complete(2, 0.96), complete(3, 0.99)]
    s = dataclasses.replace(snapshot(trials), split_sizes={"validation": 400})
    u = summary.uncertainty(s, top_k=10)
    # sqrt(0.99 * 0.01 / 400) = 0.004975: #0 (0.98) is 0.01 below, outside; so are the others.
    assert u["n"] == 400 and u["value"] == 0.99
    assert u["se"] == pytest.approx(0.0049749, rel=1e-4)
    assert u["within"] == 0 and u["shown"] == 3
    s = dataclasses.replace(s, split_sizes={"validation": 40})  # se 0.0157: two are within
    assert summary.uncertainty(s, top_k=10)["within"] == 2
    assert summary.uncertainty(s, top_k=2)["shown"] == 1
    perfect = dataclasses.replace(snapshot([complete(0, 1.0)]), split_sizes={"validation": 100})
    assert summary.uncertainty(perfect, top_k=10)["se"] > 0  # at 1.0 the error is not nil
    assert summary.uncertainty(snapshot([]), top_k=10) is None


def test_a_choice_whose_trials_were_all_pruned_is_named_not_ranked():
    trials = [
        complete(0, 0.95, {"optimizer": "adam"}),
        complete(1, 0.93, {"optimizer": "adam"}),
        pruned(2, 1, {"optimizer": "sgd"}),
        pruned(3, 2, {"optimizer": "sgd"}),
    ]
    s = snapshot(trials)
    s = dataclasses.replace(
        s,
        spec=dataclasses.replace(
            s.spec,
            space=(SpaceEntry("optimizer", "choice", choices=("sgd", "adam", "rmsprop")),),
        ),
    )
    rows = {r["choice"]: r for r in summary.pruning_by_choice(s, "optimizer")}
    assert rows["sgd"]["pruned_at"] == [1, 2] and rows["sgd"]["complete"] == 0
    assert rows["rmsprop"]["trials"] == 0
    found = " ".join(summary.findings(s))
    assert "among those that completed a trial: adam" in found
    assert "sgd (2 trials: 2 pruned at epochs 1-2); rmsprop (never tried)" in found
    assert "raise [search] warmup_epochs" in found


def test_sanity_lines_say_what_each_check_means():
    from reports.snapshot import SanityChecks

    good = SanityChecks(3, 10, 2.31, 20, 100, 1.0)
    s = dataclasses.replace(snapshot([complete(3, 0.9)]), sanity=good)
    first, second = summary.sanity_lines(s)
    assert "Initial loss 2.310 against ln(10) = 2.303" in first and "no preference" in first
    assert "reach training accuracy 100%" in second and "as they must" in second
    bad = dataclasses.replace(s, sanity=SanityChecks(3, 10, 9.5, 20, 100, 0.55))
    first, second = summary.sanity_lines(bad)
    assert "already confident" in first and "has a bug, too little capacity" in second


def test_a_diverged_overfit_check_blames_the_learning_rate_not_the_net():
    from reports.snapshot import SanityChecks

    diverged = SanityChecks(3, 10, 2.3, 20, 4, 0.0, overfit_diverged=True)
    s = dataclasses.replace(snapshot([complete(3, 0.9)]), sanity=diverged)
    assert "diverged after 4 epochs" in summary.sanity_lines(s)[1]
