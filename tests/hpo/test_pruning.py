"""hpo.pruning: every rule decides as Optuna's pruner of the same name, step for step, over random
sequential studies; thresholds pickle; the module imports no optuna; bad arguments are rejected."""

import ast
import math
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo.pruning import (
    FinishedTrial,
    HyperbandRule,
    NoPruning,
    PercentileRule,
    PruningRule,
    SuccessiveHalvingRule,
)

ROOT = Path(__file__).resolve().parents[2]
N_TRIALS = 32
MAX_EPOCHS = 30
SEEDS = (0, 1, 2)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def epoch_values(rng: np.random.Generator) -> list[float]:
    """One trial's validation accuracies, 1 to MAX_EPOCHS epochs: a level that rises with noise,
    on a 0.05 grid so that values tie, with some NaN epochs and now and then NaN throughout."""
    n = int(rng.integers(1, MAX_EPOCHS + 1))
    if rng.random() < 0.05:
        return [math.nan] * n
    x = rng.uniform(0.1, 0.7) + 0.01 * np.arange(n) + rng.normal(0.0, 0.05, n)  # (n,)
    x = np.round(np.clip(x, 0.0, 1.0) * 20) / 20
    x[rng.random(n) < 0.08] = np.nan
    return x.tolist()


def finished_trials(study: optuna.Study) -> list[FinishedTrial]:
    return [
        FinishedTrial(t.number, t.state == TrialState.COMPLETE, dict(t.intermediate_values))
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    ]


def pruned_in_study(
    rule: PruningRule,
    pruner: optuna.pruners.BasePruner,
    *,
    seed: int,
    study_name: str,
    run_on: bool = False,
) -> int:
    """Run N_TRIALS random trials one after another under ``pruner``, asserting at every epoch
    that ``rule``'s thresholds, taken from the finished trials at the trial's start, decide as
    the pruner does. A trial stops at its first prune, or with ``run_on`` trains to its end
    regardless (and is told PRUNED if it was ever pruned). Returns how many trials were pruned."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(
        study_name=study_name,
        direction="maximize",
        pruner=pruner,
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )
    n_pruned = 0
    for _ in range(N_TRIALS):
        finished = finished_trials(study)
        trial = study.ask()
        thresholds = rule.thresholds(trial_number=trial.number, finished=finished)
        values: dict[int, float] = {}
        ever_pruned = False
        for epoch, value in enumerate(epoch_values(rng), start=1):
            trial.report(value, epoch)
            values[epoch] = value
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # Optuna's nanmax of all NaN
                pruned = trial.should_prune()
            assert thresholds.should_prune(values) == pruned, (trial.number, values)
            ever_pruned |= pruned
            if pruned and not run_on:
                break
        if ever_pruned:
            study.tell(trial, state=TrialState.PRUNED)
            n_pruned += 1
        else:
            best = max((v for v in values.values() if not math.isnan(v)), default=0.0)
            study.tell(trial, best)
    return n_pruned


# ---------------------------------------------------------------------------------------------
# Equal decisions


def settings_id(settings: dict) -> str:
    return ",".join(f"{name}={value}" for name, value in settings.items())


PERCENTILE_SETTINGS = [
    {"percentile": 50.0, "startup_trials": 5, "warmup_steps": 0, "interval_steps": 1},
    {"percentile": 50.0, "startup_trials": 1, "warmup_steps": 0, "min_trials": 6},
    {"percentile": 25.0, "startup_trials": 2, "warmup_steps": 3, "interval_steps": 2},
    {"percentile": 75.0, "startup_trials": 0, "interval_steps": 3, "min_trials": 4},
    {"percentile": 0.0, "startup_trials": 1, "warmup_steps": 1, "min_trials": 3},
    {"percentile": 90.0, "startup_trials": 3, "warmup_steps": 5, "interval_steps": 4},
]
OPTUNA_PERCENTILE_NAMES = {
    "startup_trials": "n_startup_trials",
    "warmup_steps": "n_warmup_steps",
    "interval_steps": "interval_steps",
    "min_trials": "n_min_trials",
}


@pytest.mark.parametrize("seed", SEEDS)
def test_default_percentile_rule_decides_as_median_pruner(seed):
    pruner = optuna.pruners.MedianPruner()
    assert pruned_in_study(PercentileRule(), pruner, seed=seed, study_name="median") > 0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("settings", PERCENTILE_SETTINGS, ids=settings_id)
def test_percentile_rule_decides_as_percentile_pruner(settings, seed):
    rule = PercentileRule(**settings)
    pruner = optuna.pruners.PercentilePruner(
        settings["percentile"],
        **{OPTUNA_PERCENTILE_NAMES[k]: v for k, v in settings.items() if k != "percentile"},
    )
    assert pruned_in_study(rule, pruner, seed=seed, study_name="percentile") > 0


def test_percentile_rule_prunes_nothing_until_a_trial_completes():
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.PercentilePruner(50.0, n_startup_trials=0)
    )
    trial = study.ask()
    trial.report(math.nan, 1)
    assert not trial.should_prune()
    thresholds = PercentileRule(startup_trials=0).thresholds(trial_number=0, finished=[])
    assert not thresholds.should_prune({1: math.nan})


def test_percentile_rule_recomputes_only_when_the_completed_trials_change():
    rule = PercentileRule(startup_trials=1)
    a = FinishedTrial(0, True, {1: 0.5, 2: 0.6})
    pruned = FinishedTrial(1, False, {1: 0.1})
    first = rule.thresholds(trial_number=2, finished=[a])
    assert rule.thresholds(trial_number=3, finished=[a, pruned]) is first  # pruned: no count
    # Equal numbers, other values (another study, say): computed anew, not taken from before.
    other = rule.thresholds(trial_number=2, finished=[FinishedTrial(0, True, {1: 0.9, 2: 0.9})])
    assert other.by_step == {1: 0.9, 2: 0.9} != first.by_step
    b = FinishedTrial(2, True, {1: 0.7, 2: 0.8})
    assert rule.thresholds(trial_number=3, finished=[a, b]).by_step == {1: 0.6, 2: 0.7}


HALVING_SETTINGS = [
    {"min_resource": 1, "reduction_factor": 4, "min_early_stopping_rate": 0, "bootstrap_count": 0},
    {"min_resource": 1, "reduction_factor": 2, "min_early_stopping_rate": 0, "bootstrap_count": 0},
    {"min_resource": 2, "reduction_factor": 3, "min_early_stopping_rate": 1, "bootstrap_count": 0},
    {"min_resource": 1, "reduction_factor": 2, "min_early_stopping_rate": 0, "bootstrap_count": 3},
    {"min_resource": 3, "reduction_factor": 2, "min_early_stopping_rate": 0, "bootstrap_count": 1},
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("settings", HALVING_SETTINGS, ids=settings_id)
def test_successive_halving_rule_decides_as_successive_halving_pruner(settings, seed):
    rule = SuccessiveHalvingRule(**settings)
    pruner = optuna.pruners.SuccessiveHalvingPruner(**settings)
    assert pruned_in_study(rule, pruner, seed=seed, study_name="halving") > 0


@pytest.mark.parametrize("settings", HALVING_SETTINGS, ids=settings_id)
def test_successive_halving_rule_decides_as_pruner_when_trials_run_on_after_pruning(settings):
    rule = SuccessiveHalvingRule(**settings)
    pruner = optuna.pruners.SuccessiveHalvingPruner(**settings)
    assert pruned_in_study(rule, pruner, seed=3, study_name="halving", run_on=True) > 0


HYPERBAND_SETTINGS = [
    {"min_resource": 1, "max_resource": 30, "reduction_factor": 3, "bootstrap_count": 0},
    {"min_resource": 1, "max_resource": 243, "reduction_factor": 3, "bootstrap_count": 0},
    {"min_resource": 1, "max_resource": 9, "reduction_factor": 3, "bootstrap_count": 0},
    {"min_resource": 2, "max_resource": 20, "reduction_factor": 2, "bootstrap_count": 0},
    {"min_resource": 1, "max_resource": 30, "reduction_factor": 3, "bootstrap_count": 2},
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("settings", HYPERBAND_SETTINGS, ids=settings_id)
def test_hyperband_rule_decides_as_hyperband_pruner(settings, seed):
    study_name = f"hyperband-{seed}"
    rule = HyperbandRule(**settings, study_name=study_name)
    pruner = optuna.pruners.HyperbandPruner(**settings)
    assert pruned_in_study(rule, pruner, seed=seed, study_name=study_name) > 0


@pytest.mark.parametrize("settings", HYPERBAND_SETTINGS, ids=settings_id)
def test_hyperband_rule_decides_as_pruner_when_trials_run_on_after_pruning(settings):
    rule = HyperbandRule(**settings, study_name="hyperband-run-on")
    pruner = optuna.pruners.HyperbandPruner(**settings)
    assert pruned_in_study(rule, pruner, seed=3, study_name="hyperband-run-on", run_on=True) > 0


def test_no_pruning_decides_as_nop_pruner():
    pruner = optuna.pruners.NopPruner()
    assert pruned_in_study(NoPruning(), pruner, seed=0, study_name="nop") == 0


# ---------------------------------------------------------------------------------------------
# Thresholds travel to worker processes


RULES = [
    PercentileRule(startup_trials=2),
    SuccessiveHalvingRule(reduction_factor=2),
    HyperbandRule(max_resource=27, study_name="pickled"),
    NoPruning(),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: type(rule).__name__)
def test_thresholds_decide_the_same_after_pickling(rule):
    rng = np.random.default_rng(7)
    finished = [
        FinishedTrial(n, bool(n % 2), dict(enumerate(epoch_values(rng), start=1)))
        for n in range(12)
    ]
    thresholds = rule.thresholds(trial_number=len(finished), finished=finished)
    restored = pickle.loads(pickle.dumps(thresholds))
    for _ in range(20):
        values = dict(enumerate(epoch_values(rng), start=1))
        prefixes = [{s: v for s, v in values.items() if s <= step} for step in values]
        assert [restored.should_prune(p) for p in prefixes] == [
            thresholds.should_prune(p) for p in prefixes
        ]


def test_importing_pruning_module_loads_no_optuna():
    check = "import sys, hpo.pruning; assert not any(m.startswith('optuna') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True)


def test_pruning_module_has_no_optuna_import_anywhere():
    tree = ast.parse((ROOT / "hpo" / "pruning.py").read_text(encoding="utf-8"))
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.split(".")[0] == "optuna"]


# ---------------------------------------------------------------------------------------------
# Constructor arguments


HYPERBAND_REQUIRED = {"max_resource": 27, "study_name": "study"}
BAD_ARGUMENTS = [
    (PercentileRule, {"percentile": 100.5}, "percentile"),
    (PercentileRule, {"percentile": -1}, "percentile"),
    (PercentileRule, {"percentile": math.nan}, "percentile"),
    (PercentileRule, {"startup_trials": -1}, "startup_trials"),
    (PercentileRule, {"startup_trials": 2.5}, "startup_trials"),
    (PercentileRule, {"warmup_steps": -1}, "warmup_steps"),
    (PercentileRule, {"interval_steps": 0}, "interval_steps"),
    (PercentileRule, {"min_trials": 0}, "min_trials"),
    (SuccessiveHalvingRule, {"min_resource": 0}, "min_resource"),
    (SuccessiveHalvingRule, {"min_resource": "auto"}, "min_resource"),
    (SuccessiveHalvingRule, {"reduction_factor": 1}, "reduction_factor"),
    (SuccessiveHalvingRule, {"min_early_stopping_rate": -1}, "min_early_stopping_rate"),
    (SuccessiveHalvingRule, {"bootstrap_count": -1}, "bootstrap_count"),
    (HyperbandRule, {**HYPERBAND_REQUIRED, "min_resource": 0}, "min_resource"),
    (HyperbandRule, {**HYPERBAND_REQUIRED, "max_resource": "auto"}, "max_resource"),
    (HyperbandRule, {**HYPERBAND_REQUIRED, "min_resource": 4, "max_resource": 3}, "max_resource"),
    (HyperbandRule, {**HYPERBAND_REQUIRED, "reduction_factor": 1}, "reduction_factor"),
    (HyperbandRule, {**HYPERBAND_REQUIRED, "bootstrap_count": -1}, "bootstrap_count"),
    (HyperbandRule, {**HYPERBAND_REQUIRED, "study_name": None}, "study_name"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "name"),
    BAD_ARGUMENTS,
    ids=[f"{cls.__name__}-{settings_id(kwargs)}" for cls, kwargs, _ in BAD_ARGUMENTS],
)
def test_bad_argument_raises_value_error_naming_it(cls, kwargs, name):
    with pytest.raises(ValueError, match=f"^The '{name}' parameter of {cls.__name__} must be"):
        cls(**kwargs)
