"""The study service: create or resume a study, run workers until the trial target, summarize.

A study is an Optuna study in an RDB storage whose user attributes hold the spec it was created
with (``hpo:spec``), the fingerprint of its objective (``hpo:fingerprint``) and the trial target
(``hpo:target``). ``run_study`` creates it (or checks that the spec matches) and runs workers;
``run_worker`` joins an existing one. Every worker process opens its own storage.

The target counts finished trials (complete and pruned). A worker claims a trial under a lock
(on SQLite, an exclusive file lock): it fails stale trials, counts finished and running trials,
and asks for a new trial only while their sum is below the target; so several workers together
reach the target exactly.
"""

import contextlib
import copy
import gc
import math
import multiprocessing
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState
from threadpoolctl import threadpool_limits

from hpo.errors import RunError, UsageError
from hpo.heartbeat import sweep_stale_trials
from hpo.interrupts import sigint_deferred, sigint_ignored
from hpo.objective import TrialOutcome, local_pruning_supported, run_trial
from hpo.spec import StudySpec, spec_from_dict
from hpo.storage import (
    KnownTrials,
    heartbeat_settings,
    mask_password,
    new_running_trial,
    open_storage,
    retrying,
    storage_lock,
    take_census,
)
from trainer.datasets import DatasetError, Split, load_split

SPEC_ATTR = "hpo:spec"
FINGERPRINT_ATTR = "hpo:fingerprint"
TARGET_ATTR = "hpo:target"
MAX_CONSECUTIVE_ERRORS = 3
WAIT_POLL_SECONDS = (0.05, 1.0)
"""While the rest of the target runs elsewhere, a worker looks again after the first delay,
doubling it up to the second: quick to notice the end, light on the storage when it waits."""
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
ONE_BLAS_THREAD = 1
"""Trials train with one BLAS thread each: a trial's 100-wide matmuls gain nothing measurable
from a second thread on an idle machine and lose up to 3x when the cores are busy (measured by
tests/benchmarks/bench_trainer.py); more cores are used through more worker processes."""

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class Counts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    diverged: int = 0
    best_value: float | None = None

    @property
    def finished(self) -> int:
        return self.complete + self.pruned


def count_trials(study: optuna.Study) -> Counts:
    """Trial counts by state, the diverged ones among the pruned, and the best value."""
    trials = study.get_trials(deepcopy=False)
    by_state = {s: 0 for s in TrialState}
    best = None
    diverged = 0
    for t in trials:
        by_state[t.state] += 1
        if t.state == TrialState.COMPLETE and (best is None or t.value > best):
            best = t.value
        if t.state == TrialState.PRUNED and t.user_attrs.get("diverged"):
            diverged += 1
    return Counts(
        complete=by_state[TrialState.COMPLETE],
        pruned=by_state[TrialState.PRUNED],
        failed=by_state[TrialState.FAIL],
        running=by_state[TrialState.RUNNING],
        waiting=by_state[TrialState.WAITING],
        diverged=diverged,
        best_value=best,
    )


# ---------------------------------------------------------------------------------------------
# Samplers and pruners


def make_sampler(spec: StudySpec, *, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler; each worker seeds its own from the study seed and its index."""
    search = spec.search
    seed = int(np.random.SeedSequence([search.seed, worker_index]).generate_state(1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if search.sampler == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=search.startup_trials, constant_liar=True
            )
        if search.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if search.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(
                seed=seed, n_startup_trials=search.startup_trials, warn_independent_sampling=False
            )
        if search.sampler == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
        if search.sampler == "grid":
            return optuna.samplers.GridSampler(grid_space(spec), seed=seed)
    raise ValueError(f"unknown sampler {search.sampler!r}")


def grid_space(spec: StudySpec) -> dict[str, list]:
    """The grid sampler's search space: choices as they are, stepped ranges enumerated."""
    space = {}
    for p in spec.space:
        if p.kind == "choice":
            space[p.name] = list(p.choices)
        elif p.kind == "float":
            n = math.floor((p.high - p.low) / p.step + 1e-9)  # never past high
            space[p.name] = [round(p.low + i * p.step, 12) for i in range(n + 1)]
    return space


def grid_size(spec: StudySpec) -> int:
    return int(np.prod([len(v) for v in grid_space(spec).values()]))


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    search, epochs = spec.search, spec.training.epochs
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=search.pruner_startup_trials, n_warmup_steps=search.warmup_epochs
        )
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, search.warmup_epochs), max_resource=epochs, reduction_factor=3
        )
    if search.pruner == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, search.warmup_epochs), reduction_factor=3
        )
    return optuna.pruners.NopPruner()


# ---------------------------------------------------------------------------------------------
# Creating, loading and claiming


def create_or_load_study(
    spec: StudySpec, *, storage_url: str, study_name: str, target: int, worker_index: int = 0
) -> optuna.Study:
    """Create the study (storing the spec) or load it, refusing a different objective."""
    storage = open_storage(storage_url)
    with storage_lock(storage_url):
        try:
            study = optuna.load_study(
                study_name=study_name,
                storage=storage,
                sampler=make_sampler(spec, worker_index=worker_index),
                pruner=make_pruner(spec),
            )
        except KeyError:
            study = optuna.create_study(
                study_name=study_name,
                storage=storage,
                direction="maximize",
                sampler=make_sampler(spec, worker_index=worker_index),
                pruner=make_pruner(spec),
            )
        stored = study.user_attrs.get(FINGERPRINT_ATTR)
        if stored is not None and stored != spec.objective_fingerprint():
            raise UsageError(
                f"{spec.source}: study {study_name!r} in {mask_password(storage_url)} was created "
                "with a different data, model, training or space section; its trials would not "
                "be comparable (allowed: the same spec, or another --study name)"
            )
        if stored is None and study.get_trials(deepcopy=False):
            raise UsageError(
                f"study {study_name!r} in {mask_password(storage_url)} was not created by hpo "
                "(allowed: another --study name)"
            )
        study.set_user_attr(SPEC_ATTR, spec.to_dict())
        study.set_user_attr(FINGERPRINT_ATTR, spec.objective_fingerprint())
        study.set_user_attr(TARGET_ATTR, target)
    return study


def load_hpo_study(
    *, storage_url: str, study_name: str, worker_index: int = 0, write: bool = True
) -> tuple[optuna.Study, StudySpec]:
    """Open an existing hpo study and the spec stored with it (``write=False``: to read)."""
    storage = open_storage(storage_url, write=write)
    try:
        frozen = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise UsageError(
            f"{mask_password(storage_url)}: no study named {study_name!r} "
            f"(allowed: {', '.join(names) if names else 'none yet: create one with hpo run'})"
        ) from None
    raw = frozen.user_attrs.get(SPEC_ATTR)
    if raw is None:
        raise UsageError(f"study {study_name!r} was not created by hpo (no stored spec)")
    spec = spec_from_dict(raw, source=f"{study_name} (stored spec)", default_name=study_name)
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=make_sampler(spec, worker_index=worker_index),
        pruner=make_pruner(spec),
    )
    return study, spec


def new_trial(study: optuna.Study) -> optuna.Trial:
    """``study.ask()`` when no trial is queued: ask() first reads every unfinished trial to look
    for a WAITING one (11 ms a trial on SQLite), which the claim's count has already ruled out,
    and then reads back the trial it created (``new_running_trial`` does not)."""
    study._thread_local.cached_all_trials = None
    return new_running_trial(study)


class TrialClaimer:
    """Hands out new trials of one study to one worker, never beyond the target.

    Each claim happens under the storage lock: sweep the trials of dead workers (they are
    queued again; at most once per heartbeat interval, since nothing goes stale faster, but
    always on the first claim), count, and ask. A queued (WAITING) trial is asked for first,
    with its parameters. The count also tells whether the trials this worker knows (``known``,
    for pruners that decide in-process) are still all of the study's, the new one added.
    """

    def __init__(self, study: optuna.Study, storage_url: str, target: int) -> None:
        self.study, self.storage_url, self.target = study, storage_url, target
        self.sweep_every = float(heartbeat_settings()[0])
        self.last_sweep = -math.inf
        self.known = KnownTrials() if local_pruning_supported(study.pruner) else None

    def claim(self) -> tuple[optuna.Trial | None, Counts]:
        """A new trial (None once finished plus running trials reach the target), and the
        counts it was decided on."""
        return retrying(self._claim, what="claiming a trial")

    def _claim(self) -> tuple[optuna.Trial | None, Counts]:
        with storage_lock(self.storage_url):
            if time.monotonic() - self.last_sweep >= self.sweep_every:
                sweep_stale_trials(self.study)
                self.last_sweep = time.monotonic()
            census = take_census(self.study)
            states = census.counts
            finished = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
            counts = Counts(
                complete=states[TrialState.COMPLETE],
                pruned=states[TrialState.PRUNED],
                failed=states[TrialState.FAIL],
                running=states[TrialState.RUNNING],
            )
            if finished + counts.running >= self.target:
                return None, counts
            if states[TrialState.WAITING]:  # a queued retry: ask() hands it out first
                if self.known is not None:
                    self.known.current = False
                with warnings.catch_warnings():
                    # hpo runs its own ask/tell loop, with a heartbeat thread around each trial.
                    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
                    return self.study.ask(), counts
            if self.known is not None:
                self.known.check(census)
            trial = new_trial(self.study)
            if self.known is not None and self.known.current:
                self.known.put(copy.deepcopy(trial._cached_frozen_trial))
            return trial, counts


def load_study_split(spec: StudySpec) -> Split:
    """The study's data, split with the spec's data seed (the same split for every trial)."""
    d = spec.data
    try:
        return load_split(
            d.dataset,
            rng=np.random.default_rng(d.seed),
            data_dir=d.data_dir,
            validation_fraction=d.validation_fraction,
            test_fraction=d.test_fraction,
            train_size=d.train_size,
        )
    except DatasetError as e:
        raise UsageError(f"{spec.source}: data.{e.field}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Running


def worker_loop(
    study: optuna.Study,
    spec: StudySpec,
    split: Split,
    *,
    storage_url: str,
    target: int,
    deadline: float | None,
    on_trial: Callable[[TrialOutcome], None] | None = None,
) -> int:
    """Claim and run trials until the target or the deadline; return how many ran here.

    On KeyboardInterrupt the trial in flight is told FAIL (not left RUNNING) and the interrupt
    propagates. An unexpected error fails its trial; three in a row end the loop with RunError.
    """
    ran, errors = 0, 0
    claimer = TrialClaimer(study, storage_url, target)
    # What the imports and the setup allocated lives as long as the process: moved out of the
    # collector's sight, a full collection between trials scans the trials' objects alone (40 ms
    # a collection fewer, the default study's first claim measured).
    gc.freeze()
    wait = WAIT_POLL_SECONDS[0]
    while deadline is None or time.monotonic() < deadline:
        trial = None
        try:
            # A Ctrl-C inside the claim would land between creating the trial and knowing it,
            # leaving it RUNNING: it waits until the claim is done, then fails the trial.
            # (Not storage_step: its interrupt would come before ``trial`` is assigned.)
            with sigint_deferred() as interrupted:
                trial, counts = claimer.claim()
            if interrupted:
                raise KeyboardInterrupt
            if trial is None:
                if counts.finished >= target:
                    break
                # The rest of the target runs elsewhere. Stay until it finishes: a trial whose
                # worker died is swept after the grace period, and then this worker retries it.
                time.sleep(wait)
                wait = min(2 * wait, WAIT_POLL_SECONDS[1])
                continue
            wait = WAIT_POLL_SECONDS[0]
            outcome = run_trial(study, trial, spec, split, known=claimer.known)
        except KeyboardInterrupt:
            if trial is not None:
                with sigint_ignored():  # finish the bookkeeping undisturbed
                    _fail(study, trial, "interrupted")
            raise
        except Exception as e:  # a bug or a resource failure: record it and go on
            _fail(study, trial, f"{type(e).__name__}: {e}")
            errors += 1
            if errors >= MAX_CONSECUTIVE_ERRORS:
                raise RunError(
                    f"{errors} trials in a row failed; the last with {type(e).__name__}: {e}"
                ) from e
            continue
        errors = 0
        ran += 1
        if on_trial is not None:
            on_trial(outcome)
    return ran


def _fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    with contextlib.suppress(Exception):
        study._storage.set_trial_system_attr(trial._trial_id, "hpo:fail_reason", reason[:500])
        study.tell(trial, state=TrialState.FAIL)


def _worker_process(
    storage_url: str, study_name: str, target: int, deadline_in: float | None, index: int
) -> None:
    """Entry point of a spawned worker process (see ``run_study``)."""
    deadline = None if deadline_in is None else time.monotonic() + deadline_in
    try:
        study, spec = load_hpo_study(
            storage_url=storage_url, study_name=study_name, worker_index=index
        )
        split = load_study_split(spec)
        worker_loop(study, spec, split, storage_url=storage_url, target=target, deadline=deadline)
    except KeyboardInterrupt:
        os._exit(130)
    except Exception as e:
        print(f"hpo worker {index}: error: {mask_password(str(e))}", file=sys.stderr, flush=True)
        os._exit(1)


@dataclass(frozen=True)
class RunSummary:
    study_name: str
    storage_url: str
    counts: Counts
    finished_here: int  # trials finished while this command ran (by any worker)
    seconds: float


def _reporter(
    study: optuna.Study, target: int, progress: Callable[[Counts, int], None] | None
) -> Callable[..., None]:
    """A callback that hands the study's counts to ``progress`` (nothing when it is None)."""

    def report(_outcome=None) -> None:
        if progress is not None:
            progress(retrying(lambda: count_trials(study), what="counting trials"), target)

    return report


def _work_here(study, spec, split, storage_url, target, deadline, report) -> None:
    """``worker_loop`` in this process, each trial on one BLAS thread (ONE_BLAS_THREAD)."""
    with threadpool_limits(limits=ONE_BLAS_THREAD, user_api="blas"):
        worker_loop(
            study,
            spec,
            split,
            storage_url=storage_url,
            target=target,
            deadline=deadline,
            on_trial=report,
        )


def run_study(
    spec: StudySpec,
    *,
    storage_url: str,
    study_name: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    progress: Callable[[Counts, int], None] | None = None,
) -> RunSummary:
    """Create or resume the study of ``spec`` and run ``workers`` processes to its target.

    Args:
        spec: the validated spec.
        storage_url: where the study lives.
        study_name: default: the spec's name.
        trials: the target of finished trials (default: the spec's ``search.trials``).
        timeout: seconds after which no new trial starts (default: the spec's).
        workers: worker processes; 1 runs in this process; 0 only creates the study (schema,
            spec and target) for ``hpo worker`` processes to join.
        progress: called with the counts and the target after every finished trial (one
            worker) or twice a second (several).

    Raises:
        UsageError: bad data or storage, before any trial runs.
        KeyboardInterrupt: after in-flight trials have been failed and workers stopped.
    """
    name = study_name or spec.name
    target = spec.search.trials if trials is None else trials
    if spec.search.sampler == "grid":
        target = min(target, grid_size(spec))
    timeout = spec.search.timeout if timeout is None else timeout
    split = load_study_split(spec)  # bad data fails here, once, rather than in every worker
    study = create_or_load_study(spec, storage_url=storage_url, study_name=name, target=target)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    report = _reporter(study, target, progress)
    before = count_trials(study)
    report()
    if workers >= 1:
        # This process is worker 0; workers 1..N-1 are spawned.
        with _spawned_workers(storage_url, name, target, timeout, workers - 1) as others:
            _work_here(study, spec, split, storage_url, target, deadline, report)
            others.wait(report)
    report()
    after = count_trials(study)
    return RunSummary(
        name, storage_url, after, after.finished - before.finished, time.monotonic() - start
    )


class _Workers:
    """Spawned worker processes: wait for them while reporting progress."""

    def __init__(self, processes: list) -> None:
        self.processes = processes

    def wait(self, report: Callable[[], None]) -> None:
        while any(p.is_alive() for p in self.processes):
            report()
            for p in self.processes:
                p.join(timeout=0.5 / len(self.processes))
        failed = [p.exitcode for p in self.processes if p.exitcode not in (0, None)]
        if failed:
            raise RunError(
                f"{len(failed)} of {len(self.processes)} spawned worker processes failed "
                f"(exit codes {failed})"
            )

    def interrupt(self) -> None:
        """Forward Ctrl-C (each child fails its trial in flight), then wait for them."""
        for p in self.processes:
            if p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGINT)
        for p in self.processes:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()


@contextlib.contextmanager
def environment(**variables: str) -> Iterator[None]:
    """Set environment variables for processes started inside the block, then restore them."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _spawned_workers(
    storage_url: str, name: str, target: int, timeout: float | None, n: int
) -> Iterator[_Workers]:
    context = multiprocessing.get_context("spawn")  # never share a connection across fork()
    processes = [
        context.Process(target=_worker_process, args=(storage_url, name, target, timeout, i))
        for i in range(1, n + 1)
    ]
    # The children read these when they import numpy: one BLAS thread each.
    with environment(**dict.fromkeys(BLAS_THREAD_VARIABLES, str(ONE_BLAS_THREAD))):
        for p in processes:
            p.start()
    workers = _Workers(processes)
    try:
        yield workers
    except BaseException:
        with sigint_ignored():
            workers.interrupt()
        raise


def run_worker(
    *, storage_url: str, study_name: str, progress: Callable[[Counts, int], None] | None = None
) -> RunSummary:
    """Join an existing study with this process until its stored target is reached."""
    study, spec = load_hpo_study(
        storage_url=storage_url, study_name=study_name, worker_index=os.getpid()
    )
    target = int(study.user_attrs.get(TARGET_ATTR, spec.search.trials))
    split = load_study_split(spec)
    start = time.monotonic()
    before = count_trials(study)
    _work_here(study, spec, split, storage_url, target, None, _reporter(study, target, progress))
    after = count_trials(study)
    return RunSummary(
        study_name,
        storage_url,
        after,
        after.finished - before.finished,
        time.monotonic() - start,
    )
