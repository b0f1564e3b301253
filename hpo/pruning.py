"""Pruning decisions for trials that train away from the study's storage.

A trial trains in a worker process that touches no storage and imports no optuna. When it starts,
the orchestrator turns the study's finished trials into a small picklable ``Thresholds`` object
(``PruningRule.thresholds``), and the trial asks it after every epoch whether to stop. Each rule
decides as the Optuna pruner it is named after decides (``PercentilePruner`` and
``MedianPruner``, ``SuccessiveHalvingPruner``, ``HyperbandPruner``, ``NopPruner``), rule for rule
and NaN for NaN, but from a snapshot taken at the trial's start: trials running elsewhere at the
same time are not seen, nor are trials that finish while this one trains. With trials run one
after another the finished trials are all the other trials of the study, and the decisions equal
Optuna's; only concurrent trials can decide differently.

The protocol: steps are epochs counted from 1, a value (validation accuracy, to be maximized) is
reported at every epoch, and ``should_prune`` is asked after each report, with every value so far.
A trial stops at its first ``True``.
"""

import abc
import bisect
import math
import numbers
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FinishedTrial:
    """A finished trial as the rules see it.

    Attributes:
        number: the trial's number in the study.
        complete: True for a COMPLETE trial, False for a PRUNED one. A FAILED trial's reported
            values may be passed as False too: Optuna's successive-halving rules count every
            trial's rung values whatever its state, its percentile rule COMPLETE trials only.
        values: the intermediate values the trial reported, step -> value (NaN allowed).
    """

    number: int
    complete: bool
    values: Mapping[int, float]


class Thresholds(abc.ABC):
    """What a running trial needs to decide its pruning, fixed when it starts.

    Implementations are frozen dataclasses of numbers, tuples and dicts, so they pickle to a
    worker process, and ``should_prune`` is a pure function of the values reported so far.
    """

    @abc.abstractmethod
    def should_prune(self, values: Mapping[int, float]) -> bool:
        """Whether the trial should stop after its latest report.

        Args:
            values: every value the trial has reported, step -> value (NaN allowed); the latest
                report is the largest step.

        Returns:
            True if the trial should be pruned now; False (also for no values) to go on.
        """


class PruningRule(abc.ABC):
    """A pruning algorithm, split as the trials need it: the orchestrator calls ``thresholds``
    when a trial starts, and the trial alone applies them."""

    @abc.abstractmethod
    def thresholds(self, *, trial_number: int, finished: Sequence[FinishedTrial]) -> Thresholds:
        """The thresholds of trial ``trial_number``.

        Args:
            trial_number: the number of the trial about to start.
            finished: the study's finished trials, in any order, the starting trial not among
                them.

        Returns:
            A picklable object that decides the trial's pruning.
        """


# ---------------------------------------------------------------------------------------------
# Argument checks, in scikit-learn's words


def _check_int(
    owner: str, name: str, value: object, *, low: int, low_name: str | None = None
) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(
            f"The '{name}' parameter of {owner} must be an int >= {low_name or low}. "
            f"Got {value!r} instead."
        )


def _check_percentile(owner: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 100:
        raise ValueError(
            f"The 'percentile' parameter of {owner} must be a float in [0, 100]. "
            f"Got {value!r} instead."
        )


# ---------------------------------------------------------------------------------------------
# No pruning


@dataclass(frozen=True)
class NeverPrune(Thresholds):
    """Thresholds that let every trial run to its end."""

    def should_prune(self, values: Mapping[int, float]) -> bool:
        return False


@dataclass(frozen=True)
class NoPruning(PruningRule):
    """Never prune: Optuna's ``NopPruner``."""

    def thresholds(self, *, trial_number: int, finished: Sequence[FinishedTrial]) -> Thresholds:
        return NeverPrune()


# ---------------------------------------------------------------------------------------------
# Percentile (and median) stopping


@dataclass(frozen=True)
class PercentileThresholds(Thresholds):
    """A trial is pruned at a check if its best value so far is below the step's threshold.

    Attributes:
        by_step: step -> the completed trials' percentile at that step; a step without a
            threshold (too few values, or all NaN) is absent.
        warmup_steps: no check before this step.
        interval_steps: checks fall every ``interval_steps`` from ``warmup_steps`` on.
    """

    by_step: Mapping[int, float]
    warmup_steps: int
    interval_steps: int

    def should_prune(self, values: Mapping[int, float]) -> bool:
        if not values:
            return False
        step = max(values)
        if step < self.warmup_steps or not self._is_check(step, values):
            return False
        reported = [v for v in values.values() if not math.isnan(v)]
        if not reported:
            return True  # Optuna prunes a trial whose every value so far is NaN.
        threshold = self.by_step.get(step, math.nan)
        return not math.isnan(threshold) and max(reported) < threshold

    def _is_check(self, step: int, values: Mapping[int, float]) -> bool:
        # A check is due at the first report at or after the latest scheduled check step,
        # so a schedule step that was not reported postpones its check, never skips it.
        scheduled = self.warmup_steps + (
            (step - self.warmup_steps) // self.interval_steps * self.interval_steps
        )
        previous = max((s for s in values if s != step), default=-1)
        return previous < scheduled


@dataclass(frozen=True, kw_only=True)
class PercentileRule(PruningRule):
    """Prune a trial whose best value so far falls below a percentile of the completed trials'
    values at the same step: Optuna's ``PercentilePruner``, and at ``percentile=50`` its
    ``MedianPruner``, the median stopping rule of Google Vizier (Golovin et al. 2017, "Google
    Vizier: A Service for Black-Box Optimization", KDD).

    Only COMPLETE trials count. Until ``startup_trials`` trials (and at least one) have
    completed, nothing is pruned. Checks start at ``warmup_steps`` and fall every
    ``interval_steps``. At a check, a trial whose values so far are all NaN is pruned; otherwise
    it is pruned if its best value is below the ``100 - percentile`` percentile of the completed
    trials' non-NaN values at the step (so ``percentile`` is the share of trials kept), unless
    fewer than ``min_trials`` completed trials reported that step (a NaN counts as reported).

    Args:
        percentile: the percentage of trials to keep, in [0, 100].
        startup_trials: completed trials needed before any pruning, >= 0.
        warmup_steps: the first step that may be checked, >= 0.
        interval_steps: steps between checks, >= 1.
        min_trials: completed trials that reported a step needed to judge at it, >= 1.
    """

    percentile: float = 50.0
    startup_trials: int = 5
    warmup_steps: int = 0
    interval_steps: int = 1
    min_trials: int = 1
    _last: list = field(default_factory=list, init=False, repr=False, compare=False)
    """[the completed trials, their thresholds] of the last call: the next call that passes the
    same ``FinishedTrial`` objects (frozen) gets the same thresholds without a computation. Most
    results leave the completed trials as they were (a pruned trial does not count), and each
    computation costs ~3 ms (a percentile per step) on the path from one trial's end to the
    next one's start."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_percentile(owner, self.percentile)
        _check_int(owner, "startup_trials", self.startup_trials, low=0)
        _check_int(owner, "warmup_steps", self.warmup_steps, low=0)
        _check_int(owner, "interval_steps", self.interval_steps, low=1)
        _check_int(owner, "min_trials", self.min_trials, low=1)

    def thresholds(self, *, trial_number: int, finished: Sequence[FinishedTrial]) -> Thresholds:
        completed = [t for t in finished if t.complete]
        if not completed or len(completed) < self.startup_trials:
            return NeverPrune()
        if self._last and _same_objects(self._last[0], completed):
            return self._last[1]
        thresholds = self._compute(completed)
        self._last[:] = [completed, thresholds]  # held, so that no other object takes their ids
        return thresholds

    def _compute(self, completed: Sequence[FinishedTrial]) -> "PercentileThresholds":
        reported: dict[int, list[float]] = {}
        for trial in completed:
            for step, value in trial.values.items():
                reported.setdefault(step, []).append(value)
        by_step = {}
        for step, step_values in reported.items():
            x = np.asarray(step_values, dtype=float)  # (n_completed_at_step,)
            if len(x) < self.min_trials or np.isnan(x).all():
                continue
            threshold = float(np.nanpercentile(x, 100 - self.percentile))
            if not math.isnan(threshold):  # +inf and -inf interpolate to NaN
                by_step[step] = threshold
        return PercentileThresholds(
            by_step=by_step, warmup_steps=self.warmup_steps, interval_steps=self.interval_steps
        )


def _same_objects(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------
# Successive halving and Hyperband


@dataclass(frozen=True)
class SuccessiveHalvingThresholds(Thresholds):
    """The competing values of each rung, from the finished trials.

    Attributes:
        rule: the rule whose rungs these are.
        rung_values: ``rung_values[r]`` holds, sorted ascending, the values the finished trials
            entered in rung ``r``; rungs past its end have none yet.
    """

    rule: "SuccessiveHalvingRule"
    rung_values: tuple[tuple[float, ...], ...]

    def should_prune(self, values: Mapping[int, float]) -> bool:
        # Optuna keeps the trial's rung in the storage; replaying its check after each report
        # recovers it from the values alone.
        rung, prune = 0, False
        for step in sorted(values):
            rung, prune = self._check(step, values[step], rung)
        return prune

    def _check(self, step: int, value: float, rung: int) -> tuple[int, bool]:
        """One check, at ``step`` in ``rung``: the trial's rung after it, and whether to prune."""
        while step >= self.rule.promotion_step(rung):
            if math.isnan(value):
                return rung, True  # pruned before entering the rung
            if not self._is_promotable(value, rung):
                return rung + 1, True  # it entered the rung and lost there
            rung += 1
        return rung, False

    def _is_promotable(self, value: float, rung: int) -> bool:
        others = self.rung_values[rung] if rung < len(self.rung_values) else ()
        n = len(others) + 1  # the trial competes too
        if n <= self.rule.bootstrap_count:
            return False
        # The top n // reduction_factor of the rung go on, ties included, and at least the
        # best one: a trial cannot wait for enough others to reach its rung.
        keep = max(n // self.rule.reduction_factor, 1)
        better = len(others) - bisect.bisect_right(others, value)
        return better < keep


@dataclass(frozen=True, kw_only=True)
class SuccessiveHalvingRule(PruningRule):
    """Asynchronous successive halving: Optuna's ``SuccessiveHalvingPruner`` with an explicit
    ``min_resource``.

    Successive halving (Jamieson & Talwalkar 2016, "Non-stochastic Best Arm Identification and
    Hyperparameter Optimization", AISTATS) trains many configurations briefly and the best
    ``1 / reduction_factor`` of them longer, rung after rung; its asynchronous form ASHA (Li et
    al. 2020, "A System for Massively Parallel Hyperparameter Tuning", MLSys) promotes a trial as
    soon as it ranks there among the trials that reached the rung so far. Rung ``r`` is reached at
    step ``min_resource * reduction_factor ** (min_early_stopping_rate + r)``; a trial whose value
    there is NaN is pruned, and one outside the top ``max(n // reduction_factor, 1)`` of the ``n``
    values of the rung (its own included), or in a rung with no more than ``bootstrap_count``
    values, is pruned too.

    Optuna records each trial's value at a rung in the storage (``completed_rung_<r>``); here the
    values of a finished trial are read off its reported values, as the value it reported where
    it reached each rung (a NaN there enters no rung). Every finished trial counts, pruned or not.

    Args:
        min_resource: the step of the first rung before early-stopping-rate scaling, >= 1.
        reduction_factor: the factor between rungs, >= 2.
        min_early_stopping_rate: rungs skipped at the start, >= 0.
        bootstrap_count: values a rung needs beyond this many before it promotes anyone, >= 0.
    """

    min_resource: int = 1
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_int(owner, "min_resource", self.min_resource, low=1)
        _check_int(owner, "reduction_factor", self.reduction_factor, low=2)
        _check_int(owner, "min_early_stopping_rate", self.min_early_stopping_rate, low=0)
        _check_int(owner, "bootstrap_count", self.bootstrap_count, low=0)

    def promotion_step(self, rung: int) -> int:
        """The step at which a trial competes in rung ``rung``."""
        return self.min_resource * self.reduction_factor ** (self.min_early_stopping_rate + rung)

    def rung_values(self, values: Mapping[int, float]) -> list[float]:
        """The values a trial with reported ``values`` entered in rungs 0, 1, ...

        A trial enters rung ``r`` with its first non-NaN value at or after the rung's step, once
        it has entered rung ``r - 1`` (a NaN at a check enters no rung; the check is repeated at
        the next report). This is what Optuna records whenever no check passes two rungs' steps
        at once, which holds for a report at every step from 1 on by a trial that stopped at its
        first prune. Otherwise a trial that lost the first of the two rungs would enter the
        second only at its next report, and which trials lost then is not known here.
        """
        entered: list[float] = []
        for step in sorted(values):
            value = values[step]
            while not math.isnan(value) and step >= self.promotion_step(len(entered)):
                entered.append(value)
        return entered

    def thresholds(self, *, trial_number: int, finished: Sequence[FinishedTrial]) -> Thresholds:
        rungs: list[list[float]] = []
        for trial in finished:
            for rung, value in enumerate(self.rung_values(trial.values)):
                if rung == len(rungs):
                    rungs.append([])
                rungs[rung].append(value)
        return SuccessiveHalvingThresholds(
            rule=self, rung_values=tuple(tuple(sorted(values)) for values in rungs)
        )


@dataclass(frozen=True, kw_only=True)
class HyperbandRule(PruningRule):
    """Hyperband over asynchronous successive halving: Optuna's ``HyperbandPruner`` with an
    explicit ``max_resource``.

    Hyperband (Li et al. 2018, "Hyperband: A Novel Bandit-Based Approach to Hyperparameter
    Optimization", JMLR 18(185)) hedges over how early to stop by running successive halving in
    several brackets, bracket ``b`` with ``min_early_stopping_rate=b``. As in Optuna there are
    ``floor(log_reduction_factor(max_resource / min_resource)) + 1`` brackets; bracket ``b`` gets
    Hyperband's trial budget ``ceil(n_brackets * reduction_factor ** s / (s + 1))`` with
    ``s = n_brackets - 1 - b``, a trial's bracket is drawn from the CRC32 of
    ``"<study_name>_<trial number>"`` in proportion to the budgets, and a trial competes only
    against the finished trials of its own bracket.

    Args:
        min_resource: the first rung's step in bracket 0, >= 1.
        max_resource: the most steps a trial runs, >= min_resource.
        reduction_factor: the factor between rungs, >= 2.
        study_name: the study's name, which the brackets are drawn from.
        bootstrap_count: as in ``SuccessiveHalvingRule``, >= 0.
    """

    min_resource: int = 1
    max_resource: int
    reduction_factor: int = 3
    study_name: str
    bootstrap_count: int = 0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_int(owner, "min_resource", self.min_resource, low=1)
        _check_int(
            owner,
            "max_resource",
            self.max_resource,
            low=self.min_resource,
            low_name=f"min_resource ({self.min_resource})",
        )
        _check_int(owner, "reduction_factor", self.reduction_factor, low=2)
        _check_int(owner, "bootstrap_count", self.bootstrap_count, low=0)
        if not isinstance(self.study_name, str):
            raise ValueError(
                f"The 'study_name' parameter of {owner} must be a str. "
                f"Got {self.study_name!r} instead."
            )

    @property
    def n_brackets(self) -> int:
        # In floating point as Optuna computes it, so that a ratio that is a power of
        # reduction_factor rounds the same way.
        ratio = self.max_resource / self.min_resource
        return math.floor(math.log(ratio, self.reduction_factor)) + 1

    @property
    def bracket_budgets(self) -> tuple[int, ...]:
        """Each bracket's share of the trials (Hyperband's ``n`` of its Algorithm 1)."""
        n = self.n_brackets
        return tuple(
            math.ceil(n * self.reduction_factor ** (n - 1 - b) / (n - b)) for b in range(n)
        )

    def thresholds(self, *, trial_number: int, finished: Sequence[FinishedTrial]) -> Thresholds:
        budgets = self.bracket_budgets
        bracket = _bracket(budgets, f"{self.study_name}_{trial_number}")
        same_bracket = [
            t for t in finished if _bracket(budgets, f"{self.study_name}_{t.number}") == bracket
        ]
        halving = SuccessiveHalvingRule(
            min_resource=self.min_resource,
            reduction_factor=self.reduction_factor,
            min_early_stopping_rate=bracket,
            bootstrap_count=self.bootstrap_count,
        )
        return halving.thresholds(trial_number=trial_number, finished=same_bracket)


def _bracket(budgets: tuple[int, ...], key: str) -> int:
    n = zlib.crc32(key.encode()) % sum(budgets)
    for bracket, budget in enumerate(budgets):
        if n < budget:
            return bracket
        n -= budget
    raise AssertionError("unreachable: n < sum(budgets)")
