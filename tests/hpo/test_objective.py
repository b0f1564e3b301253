"""One trial's in-process pruning decisions: Optuna's percentile rule, computed once per step."""

import math

import numpy as np
import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo.objective import LocalPercentilePruning


def frozen(number: int, values: dict[int, float], state=TrialState.COMPLETE) -> FrozenTrial:
    return FrozenTrial(
        number=number,
        state=state,
        value=max(values.values()) if values and state == TrialState.COMPLETE else None,
        datetime_start=None,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values=values,
        trial_id=number,
    )


class StudyView:
    """What a percentile pruner reads of a study."""

    def __init__(self, completed, direction):
        self.completed, self.direction = completed, direction

    def get_trials(self, deepcopy=True, states=None):
        return list(self.completed)


def random_values(rng, epochs: int) -> dict[int, float]:
    """Per-epoch accuracies; some epochs missing, some NaN."""
    values = {}
    for step in range(1, epochs + 1):
        if rng.random() < 0.1:
            continue
        values[step] = math.nan if rng.random() < 0.05 else float(rng.random())
    return values


@pytest.mark.parametrize("direction", [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE])
@pytest.mark.parametrize("seed", range(6))
def test_decisions_equal_optunas_median_pruner_over_random_studies(seed, direction):
    rng = np.random.default_rng(seed)
    decisions = []
    for _ in range(20):
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=int(rng.integers(0, 4)),
            n_warmup_steps=int(rng.integers(0, 4)),
            interval_steps=int(rng.integers(1, 4)),
            n_min_trials=int(rng.integers(1, 4)),
        )
        completed = [frozen(i, random_values(rng, int(rng.integers(1, 12)))) for i in range(6)]
        completed = completed[: int(rng.integers(0, 7))]
        view = StudyView(completed, direction)
        local = LocalPercentilePruning(pruner, completed, direction)
        values: dict[int, float] = {}
        for step in range(1, 13):
            values[step] = math.nan if rng.random() < 0.05 else float(rng.random())
            running = frozen(99, dict(values), state=TrialState.RUNNING)
            decision = local.should_prune(values)
            assert decision == pruner.prune(view, running), (step, values)
            decisions.append(decision)
    assert True in decisions and False in decisions


def test_no_values_and_no_completed_trials_never_prune():
    pruner = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0)
    assert not LocalPercentilePruning(pruner, []).should_prune({1: 0.1})
    assert not LocalPercentilePruning(pruner, [frozen(0, {1: 0.9})]).should_prune({})
    assert LocalPercentilePruning(pruner, [frozen(0, {1: 0.9})]).should_prune({1: 0.1})
