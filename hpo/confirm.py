"""``hpo confirm``: retrain the top configurations over fresh seeds and say how sure the ranking is.

A search trial is one draw: one initialization, one dropout and shuffle stream. On a small
validation split, configurations a few samples apart are ranked by that draw. Confirmation
retrains each of the top K configurations with S seeds of their own and compares them:

- **Runs** live in a companion study, ``STUDY:confirm`` (``companion_name``), in the same
  storage: visible in the dashboard, never counted among the search's trials, never seen by its
  sampler. Each run is stored as one finished trial (``study.add_trial``) the moment it ends, with
  the configuration's parameters, its epochs as intermediate values, the source trial
  (``SOURCE_ATTR``) and its seed index (``SEED_ATTR``). A run that did not finish is simply not
  there: the same command runs it again.
- **Seeds** are shared: seed ``i`` (``confirm_seed``) is the same for every configuration, so two
  configurations are compared on the same draws (a paired comparison). The study stores how many
  seeds it has asked for (``SEEDS_ATTR``); a command that finds every run of that many done adds
  ``S`` more, one that finds runs missing (Ctrl-C, a new configuration in the top K) runs those
  first. No seed is run twice.
- **Statistics**: per configuration the mean validation accuracy and a 95% Student-t interval
  over its runs (within [0, 1]); each configuration against the best by mean, a two-sided
  paired t-test over the seeds both ran (``paired_p``); at 5%, one that the test cannot tell
  from the best is tied with it. Ten configurations mean nine tests, uncorrected: "tied" is the
  cautious reading.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import math
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from hpo.allowed import MAX_CONFIRM_TOP
from hpo.errors import RunError, UsageError
from hpo.executors import TrialExecutor
from hpo.interrupts import INTERRUPTS
from hpo.locks import Busy, only_one
from hpo.pruning import NoPruning
from hpo.records import CONFIRMS_ATTR, RUN_ATTR, companion_name, ranked
from hpo.service import ExecutorStart
from hpo.spec import StudySpec
from hpo.storage import open_storage
from hpo.trial import (
    INTERRUPTED,
    TrialResult,
    TrialTask,
    configuration,
    load_training_split,
)
from reports.summary import accuracy_interval

SEEDS_ATTR = "hpo:confirm_seeds"
SOURCE_ATTR = "hpo:source_trial"
SEED_ATTR = "hpo:seed_index"
CONFIRM_STREAM = 0x636F6E66  # "conf": confirmation seeds never meet a trial's (study seed, number)
ALPHA = 0.05


def confirm_seed(study_seed: int, index: int) -> np.random.SeedSequence:
    """Seed ``index`` of the confirmation runs: the same for every configuration of the study."""
    return np.random.SeedSequence([study_seed, CONFIRM_STREAM, index])


# ---------------------------------------------------------------------------------------------
# Statistics


def paired_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of a paired t-test of ``a`` against ``b`` (the same seeds, in order):
    1 when every difference is zero, 0 when they all are the same nonzero amount, NaN for
    fewer than two pairs."""
    from scipy import stats

    d = [x - y for x, y in zip(a, b, strict=True)]
    if len(d) < 2:
        return math.nan
    sd = statistics.stdev(d)
    mean = statistics.fmean(d)
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    t = mean / (sd / math.sqrt(len(d)))
    return float(2 * stats.t.sf(abs(t), len(d) - 1))


# ---------------------------------------------------------------------------------------------
# What is stored


@dataclass(frozen=True)
class Confirmed:
    """One configuration's confirmation: its runs by seed index, and the verdict against the best.

    ``p_vs_best`` is the paired test's p-value against the configuration ranked first (None for
    the first itself); ``tied`` says whether the test cannot tell it from the first at 5%.
    """

    trial: int
    params: dict[str, Any]
    search_value: float
    search_rank: int
    values: dict[int, float]
    diverged: int
    rank: int = 0
    p_vs_best: float | None = None
    tied: bool = False

    @property
    def interval(self) -> tuple[float, float, float]:
        return accuracy_interval(list(self.values.values()))

    def as_dict(self) -> dict[str, Any]:
        mean, low, high = self.interval
        return {
            "trial": self.trial,
            "params": self.params,
            "mean": mean,
            "low": None if math.isnan(low) else low,
            "high": None if math.isnan(high) else high,
            "runs": len(self.values),
            "values": [self.values[i] for i in sorted(self.values)],
            "rank": self.rank,
            "search_value": self.search_value,
            "search_rank": self.search_rank,
            "p_vs_best": self.p_vs_best,
            "tied_with_best": self.tied,
            "diverged": self.diverged,
        }


def top_configurations(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The ``k`` completed search trials of highest value with distinct parameters, best first
    (ties: the earlier trial); a later trial that repeats a parameter set is left out."""
    seen, top = set(), []
    for t in ranked(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
        key = tuple(sorted(t.params.items()))
        if key not in seen:
            seen.add(key)
            top.append(t)
        if len(top) == k:
            break
    return top


def load_companion(
    storage: optuna.storages.BaseStorage, study_name: str, *, create: bool
) -> optuna.Study | None:
    """The study of ``study_name``'s confirmation runs in ``storage`` (None when there is none
    and not ``create``, or when a study of that name holds something else); to create, refuses
    a study of that name that holds something else."""
    name = companion_name(study_name)
    try:
        companion = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        if not create:
            return None
        companion = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        companion.set_user_attr(CONFIRMS_ATTR, study_name)
        return companion
    if companion.user_attrs.get(CONFIRMS_ATTR) != study_name:
        if not create:
            return None  # a study of its own that happens to have that name: no runs yet
        raise UsageError(
            f"study {name!r} exists and does not hold the confirmation runs of {study_name!r} "
            "(allowed: rename that study, or confirm another)"
        )
    return companion


def stored_runs(companion: optuna.Study | None) -> list[optuna.trial.FrozenTrial]:
    """The confirmation runs stored in ``companion`` (none before the first confirmation)."""
    if companion is None:
        return []
    return companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def confirmed_first(study: optuna.Study, storage: optuna.storages.BaseStorage) -> Confirmed | None:
    """The configuration ``hpo confirm`` ranks first by its mean over seeds (None before any
    confirmation ran): what the report is about, which ``hpo best`` names beside the search's
    best."""
    runs = stored_runs(load_companion(storage, study.study_name, create=False))
    if not runs:
        return None
    ran = [c for c in confirmations(study, runs, MAX_CONFIRM_TOP) if c.values]
    return ran[0] if ran else None


def confirmations(
    study: optuna.Study, stored: list[optuna.trial.FrozenTrial], k: int
) -> list[Confirmed]:
    """The top ``k`` configurations of ``study`` with their ``stored`` runs (``stored_runs``),
    ranked by mean, each compared with the first (see the module docstring); a configuration
    without runs has none and ranks last."""
    top = top_configurations(study, k)
    runs: dict[int, dict[int, float]] = {t.number: {} for t in top}
    diverged = dict.fromkeys(runs, 0)
    for run in stored:
        source = run.user_attrs.get(SOURCE_ATTR)
        if source in runs:
            runs[source][int(run.user_attrs[SEED_ATTR])] = run.value
            diverged[source] += bool(run.user_attrs.get(RUN_ATTR, {}).get("diverged"))
    items = [
        Confirmed(t.number, dict(t.params), t.value, rank, runs[t.number], diverged[t.number])
        for rank, t in enumerate(top, start=1)
    ]
    items.sort(
        key=lambda c: (
            -statistics.fmean(c.values.values()) if c.values else math.inf,
            c.search_rank,
        )
    )
    ranked = []
    for rank, c in enumerate(items, start=1):
        p, tied = None, False
        if rank > 1 and c.values:
            first = ranked[0]
            seeds = sorted(set(first.values) & set(c.values))
            p = paired_p([first.values[i] for i in seeds], [c.values[i] for i in seeds])
            tied = not p < ALPHA  # NaN (too few seeds in common) counts as tied
        ranked.append(dataclasses.replace(c, rank=rank, p_vs_best=p, tied=tied))
    return ranked


# ---------------------------------------------------------------------------------------------
# Running


@dataclass(frozen=True)
class Plan:
    """What one ``hpo confirm`` command runs: ``seeds`` per configuration in all (``added`` of
    them new), and the (configuration's trial, seed index) pairs not yet run."""

    seeds: int
    added: int
    missing: list[tuple[optuna.trial.FrozenTrial, int]]


def plan(study: optuna.Study, companion: optuna.Study | None, *, top: int, seeds: int) -> Plan:
    """Seeds to reach and runs to do: the stored count again when runs of it are missing (an
    interrupted command, a configuration new to the top), else ``seeds`` more (``companion``:
    None before the first confirmation)."""
    stored = 0 if companion is None else int(companion.user_attrs.get(SEEDS_ATTR, 0))
    done = {
        (run.user_attrs.get(SOURCE_ATTR), run.user_attrs.get(SEED_ATTR))
        for run in stored_runs(companion)
    }
    configs = top_configurations(study, top)
    if not configs:
        raise RunError(f"study {study.study_name!r} has no completed trial to confirm yet")

    def missing(target: int) -> list[tuple[optuna.trial.FrozenTrial, int]]:
        return [(t, i) for i in range(target) for t in configs if (t.number, i) not in done]

    left = missing(stored) if stored else []
    if left:
        return Plan(stored, 0, left)
    return Plan(stored + seeds, seeds, missing(stored + seeds))


@dataclass(frozen=True)
class Confirmation:
    """What one ``hpo confirm`` did: its plan, the configurations with every stored run, and
    the validation rows each run was scored on."""

    work: Plan
    items: list[Confirmed]
    validation_rows: int


def confirm_study(
    study: optuna.Study,
    spec: StudySpec,
    *,
    storage_url: str,
    top: int,
    seeds: int,
    workers: int | None = None,
    in_process: bool = False,
    dask: str | None = None,
    progress: Callable[[float, int], None] | None = None,
) -> Confirmation:
    """Retrain the ``top`` configurations of ``study`` until each has ``seeds`` more runs, or
    first the runs an interrupted confirmation left (``plan``), storing each run as it ends.

    Bad data, memory or an unreachable cluster fail before anything is stored. One confirmation
    of a study runs at a time (``hpo.locks.only_one``): two would run the same (trial, seed)
    pairs, so another's is refused at once with a RunError naming its process.
    """
    with _one_confirmation(storage_url, study.study_name):
        storage = open_storage(storage_url)
        companion = load_companion(storage, study.study_name, create=False)
        work = plan(study, companion, top=top, seeds=seeds)
        split = load_training_split(spec)
        if work.missing:
            with ExecutorStart(
                spec,
                split,
                workers=workers,
                in_process=in_process,
                dask=dask,
                label=f"{study.study_name} confirm",
            ) as executors:
                executor = executors.start()
                if companion is None:
                    companion = load_companion(storage, study.study_name, create=True)
            run_confirmation(spec, companion, work, executor=executor, progress=progress)
        return Confirmation(
            work, confirmations(study, stored_runs(companion), top), len(split.y_val)
        )


@contextlib.contextmanager
def _one_confirmation(storage_url: str, study_name: str) -> Iterator[None]:
    """Hold the study's confirmation lock (``hpo.locks.only_one``); another confirmation's
    holding it is a RunError naming its process."""
    try:
        with only_one(storage_url, f"confirm {study_name}"):
            yield
    except Busy as e:
        holder = f" (process {e.holder})" if e.holder else ""
        raise RunError(
            f"another hpo confirm of study {study_name!r} is running{holder}; run this one when "
            "it ends"
        ) from None


def stored_confirmations(study: optuna.Study, storage_url: str, top: int) -> list[Confirmed]:
    """The ``top`` configurations as the confirmation runs stored so far rank them (none is
    trained); a study never confirmed is refused, naming how to confirm it."""
    runs = stored_runs(load_companion(open_storage(storage_url), study.study_name, create=False))
    if not runs:
        raise UsageError(
            f"study {study.study_name!r} has no confirmation runs yet (allowed: --json --seeds S "
            "to train S seeds of each configuration first)"
        )
    return confirmations(study, runs, top)


def run_confirmation(
    spec: StudySpec,
    companion: optuna.Study,
    work: Plan,
    *,
    executor: TrialExecutor,
    progress: Callable[[float, int], None] | None = None,
) -> int:
    """Train the plan's runs on ``executor``, storing each as it ends; returns how many ran.

    ``progress(done, total)`` follows the runs, each run in flight counting its finished epochs
    as a fraction of a run (where the executor reports them), so that the bar moves within runs
    of minutes. Raises RunError naming the runs that failed (the others are stored; the same
    command runs the failed ones again); a Ctrl-C stops the executor and keeps every stored run.
    """
    if companion.user_attrs.get(SEEDS_ATTR) != work.seeds:
        companion.set_user_attr(SEEDS_ATTR, work.seeds)
    tasks = [
        (
            TrialTask(
                number=number,
                config=configuration(spec, source.params),
                seed=tuple(confirm_seed(spec.search.seed, index).entropy),
                thresholds=NoPruning().thresholds(trial_number=number, finished=()),
            ),
            source,
            index,
        )
        for number, (source, index) in enumerate(work.missing)
    ]
    pending = collections.deque(tasks)
    in_flight: dict[concurrent.futures.Future, tuple] = {}
    failed: list[str] = []
    ran = 0
    shown: dict[int, int] = {}  # the executor's epochs the bar last showed
    shown_done = 0.0  # and the runs it counted

    def show() -> None:  # the runs stored, and those in flight as fractions of a run
        nonlocal shown, shown_done
        shown = executor.epochs()
        # never back: a run that ended since the wait leaves epochs() before it counts
        shown_done = max(shown_done, ran + _epoch_fraction(shown, tasks))
        progress(shown_done, len(tasks))

    if progress is not None:
        progress(0, len(tasks))
    try:
        while pending or in_flight:
            INTERRUPTS.check()
            while pending and len(in_flight) < executor.slots + executor.prefetch:
                executor.check()
                item = pending.popleft()
                in_flight[executor.submit(item[0])] = item
            done, _ = concurrent.futures.wait(
                in_flight, timeout=0.1, return_when=concurrent.futures.FIRST_COMPLETED
            )
            if not done and progress is not None and executor.epochs() != shown:
                show()  # an epoch ended in a run in flight: the bar moves
            for future in sorted(done, key=lambda f: in_flight[f][0].number):
                _, source, index = in_flight.pop(future)
                error = future.exception()
                if error is None and future.result().state == INTERRUPTED:
                    raise KeyboardInterrupt
                if error is not None:
                    failed.append(f"#{source.number} seed {index}: {type(error).__name__}: {error}")
                    continue
                _store(companion, source, index, future.result())
                ran += 1
                if progress is not None:
                    show()
    except BaseException:
        executor.shutdown(cancel=True)
        raise
    executor.shutdown()
    if failed:
        raise RunError(
            f"{len(failed)} of {len(tasks)} confirmation runs failed ({failed[0]}"
            f"{'; ...' if len(failed) > 1 else ''}); the others are stored: run the same "
            "command to retry them"
        )
    return ran


def _epoch_fraction(epochs: dict[int, int], tasks: list[tuple]) -> float:
    """The runs in flight as fractions of a run: each one's finished epochs over its own."""
    return sum(
        min(1.0, done / max(1, tasks[number][0].config.training.epochs))
        for number, done in epochs.items()
    )


def _store(
    companion: optuna.Study, source: optuna.trial.FrozenTrial, index: int, result: TrialResult
) -> None:
    """One finished run as one trial of the companion study, in one write. A diverged run
    counts at its best epoch before it diverged (its last value is the 0 that marks it)."""
    value = result.value if result.value is not None else max(result.intermediate_values.values())
    companion.add_trial(
        optuna.trial.create_trial(
            params=dict(source.params),
            distributions=dict(source.distributions),
            value=value,
            intermediate_values=dict(result.intermediate_values),
            user_attrs={SOURCE_ATTR: source.number, SEED_ATTR: index, RUN_ATTR: result.facts},
        )
    )


def verdict(items: list[Confirmed]) -> str:
    """One sentence: whether the configuration ranked first is distinguishable from the rest."""
    ran = [c for c in items if c.values]
    if not ran:
        return "no confirmation runs yet"
    first = ran[0]
    n = len(first.values)
    if len(ran) == 1:
        return f"trial #{first.trial} is the only configuration confirmed ({n} seeds)"
    tied = [c for c in ran[1:] if c.tied]
    test = f"paired t-test over the same seeds, {ALPHA:.0%} level"
    if not tied:
        second = ran[1]
        return (
            f"trial #{first.trial} is the best, distinguishable from every other; from the "
            f"second, #{second.trial}, at p = {second.p_vs_best:.3g} ({test})"
        )
    names = ", ".join(f"#{c.trial}" for c in tied)
    return (
        f"trial #{first.trial} ranks first but is tied with {names}: the test cannot tell them "
        f"apart ({test}); more seeds (hpo confirm again) may separate them"
    )
