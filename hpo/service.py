"""The study service: create or resume a study, run its trials to the target, summarize.

A study is an Optuna study whose user attributes hold the spec it was created with
(``hpo:spec``), the fingerprint of its objective (``hpo:fingerprint``) and the trial target
(``hpo:target``). ``run_study`` creates it (or checks that the spec matches) and runs an
orchestrator (``hpo.runner``) with an executor for the trials; ``run_worker`` joins an existing
study on shared storage as one more orchestrator. The target counts finished trials (complete
and pruned) of every orchestrator together; claims happen under the storage lock, so together
they reach it exactly.
"""

import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import optuna

from hpo.errors import RunError, SpecError, UsageError
from hpo.executors import InlineExecutor, LocalProcessExecutor, TrialExecutor, WorkerLost
from hpo.finite_space import space_size
from hpo.interrupts import INTERRUPTS
from hpo.locks import storage_lock
from hpo.orchestrator_processes import OrchestratorProcesses, orchestrator_count, shares
from hpo.pruning import (
    HyperbandRule,
    NoPruning,
    PercentileRule,
    PruningRule,
    SuccessiveHalvingRule,
)
from hpo.records import (
    FINGERPRINT_ATTR,
    NETWORK_ATTR,
    NO_PRUNER,
    SPEC_ATTR,
    TARGET_ATTR,
    Counts,
    count_trials,
    load_hpo_study,
)
from hpo.runner import Orchestrator
from hpo.sampler_view import SamplerView
from hpo.spec import StudySpec, network_display
from hpo.storage import open_storage
from hpo.trial import load_training_split, optuna_choices
from hpo.urls import mask_password
from trainer.contract import is_file_reference, loaded_digest
from trainer.datasets import Split
from trainer.network import parameter_count, training_memory
from trainer.training import EVAL_BATCH


def study_counts(study: optuna.Study) -> Counts:
    """The study's trial counts by state, the diverged ones, and the best value."""
    return count_trials(study.get_trials(deepcopy=False))


# ---------------------------------------------------------------------------------------------
# Samplers and pruners


class TPEWithSharedSpace(optuna.samplers.TPESampler):
    """Optuna's TPE, reading the study's search space (the intersection of the finished
    trials' parameters, as TPE's own) from ``search_space``, a calculator kept for the study's
    whole run. hpo builds a sampler per trial, seeded by its number (``make_sampler``); each
    new TPE would compute the intersection afresh over every trial, 38% of an ask's time at
    10,000 trials, where the kept calculator reads only the trials since its last call.
    The space, and so every draw, is the same as TPE's own."""

    def __init__(
        self,
        *,
        search_space: optuna.search_space.IntersectionSearchSpace,
        seed: int,
        n_startup_trials: int,
        constant_liar: bool,
    ) -> None:
        # TPE's defaults otherwise: multivariate (Optuna 5's default for one objective), no
        # group, whose decomposed space this override does not compute.
        super().__init__(seed=seed, n_startup_trials=n_startup_trials, constant_liar=constant_liar)
        self.search_space = search_space

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        if len(study.directions) > 1:  # not hpo's: TPE's own (independent) way
            return super().infer_relative_search_space(study, trial)
        space = self.search_space.calculate(study, use_cache=True)
        return {name: d for name, d in space.items() if not d.single()}


def shared_search_space() -> optuna.search_space.IntersectionSearchSpace:
    """A search space calculator for one study's run, as TPE makes its own."""
    return optuna.search_space.IntersectionSearchSpace(include_pruned=True)


SamplerBuilder = Callable[
    [StudySpec, int, optuna.search_space.IntersectionSearchSpace], optuna.samplers.BaseSampler
]
SAMPLER_BUILDERS: dict[str, SamplerBuilder] = {
    "tpe": lambda spec, seed, space: TPEWithSharedSpace(
        search_space=space,
        seed=seed,
        n_startup_trials=spec.search.startup_trials,
        constant_liar=True,
    ),
    "random": lambda spec, seed, _: optuna.samplers.RandomSampler(seed=seed),
    "cmaes": lambda spec, seed, _: optuna.samplers.CmaEsSampler(
        seed=seed, n_startup_trials=spec.search.startup_trials, warn_independent_sampling=False
    ),
    # QMC and grid keep the study seed alone (see make_sampler).
    "qmc": lambda spec, seed, _: optuna.samplers.QMCSampler(
        seed=spec.search.seed, warn_independent_sampling=False
    ),
    "grid": lambda spec, seed, _: GridSamplerWithoutStop(grid_space(spec), seed=spec.search.seed),
}
"""Each ``[search] sampler`` name (``hpo.allowed.SAMPLERS``, the light list ``--help`` shows) and
how to build it from the spec and the trial's seed; a test keeps the two lists equal."""


def make_sampler(
    spec: StudySpec,
    *,
    number: int,
    search_space: optuna.search_space.IntersectionSearchSpace | None = None,
) -> optuna.samplers.BaseSampler:
    """The spec's sampler for the trial numbered ``number``, seeded from the study seed and that
    number: each trial's draws are its own, so a resumed study (or another orchestrator)
    continues the search instead of repeating the first trials' draws. QMC and grid keep the
    study seed alone: the seed orders their sequence (the scramble, the grid's shuffle), which
    must stay the same while the study stores how far along it is. ``search_space``: TPE's
    calculator, kept by the caller for the study's run (``samplers_for``); default: a new one."""
    seed = int(np.random.SeedSequence([spec.search.seed, number]).generate_state(1)[0])
    space = shared_search_space() if search_space is None else search_space
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLER_BUILDERS[spec.search.sampler](spec, seed, space)


def samplers_for(spec: StudySpec) -> Callable[[int], optuna.samplers.BaseSampler]:
    """``make_sampler`` for one study's run in one process: the sampler of trial ``n`` is
    ``samplers_for(spec)(n)``, every TPE sharing one search space calculator."""
    space = shared_search_space()
    return lambda number: make_sampler(spec, number=number, search_space=space)


VIEWED_SAMPLERS = ("tpe",)
"""The samplers that draw from an in-memory view of the study (``hpo.sampler_view``): TPE,
whose ask reads every trial. CMA-ES and QMC keep their state in the stored trials, and the
random and grid samplers read none."""


def sampler_view(spec: StudySpec, study: optuna.Study) -> SamplerView | None:
    """The view one orchestrator's sampler draws from, or None where it draws on the study."""
    if spec.search.sampler not in VIEWED_SAMPLERS:
        return None
    return SamplerView(
        lambda number, space: make_sampler(spec, number=number, search_space=space),
        direction=study.direction,
    )


class GridSamplerWithoutStop(optuna.samplers.GridSampler):
    """Optuna's grid sampler, minus its ``study.stop()`` once the grid is covered: that works
    only inside ``Study.optimize``, and hpo's target is the grid's size already."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def grid_space(spec: StudySpec) -> dict[str, list]:
    """The grid sampler's search space: choices as they are, stepped ranges enumerated."""
    space = {}
    for p in spec.space:
        if p.kind == "choice":
            space[p.name] = optuna_choices(p)
        elif p.kind == "int":
            space[p.name] = list(range(p.low, p.high + 1, int(p.step or 1)))
        elif p.kind == "float":
            n = math.floor((p.high - p.low) / p.step + 1e-9)  # never past high
            space[p.name] = [round(p.low + i * p.step, 12) for i in range(n + 1)]
    return space


def grid_size(spec: StudySpec) -> int:
    return int(np.prod([len(v) for v in grid_space(spec).values()]))


PruningBuilder = Callable[[StudySpec, str], PruningRule]
PRUNING_BUILDERS: dict[str, PruningBuilder] = {
    "median": lambda spec, study_name: PercentileRule(
        percentile=50.0,
        startup_trials=spec.search.pruner_startup_trials,
        warmup_steps=spec.search.warmup_epochs,
    ),
    "hyperband": lambda spec, study_name: HyperbandRule(
        min_resource=max(1, spec.search.warmup_epochs),
        max_resource=spec.max_epochs(),
        reduction_factor=3,
        study_name=study_name,
    ),
    "sha": lambda spec, study_name: SuccessiveHalvingRule(
        min_resource=max(1, spec.search.warmup_epochs), reduction_factor=3
    ),
    "none": lambda spec, study_name: NoPruning(),
}
"""Each ``[search] pruner`` name (``hpo.allowed.PRUNERS``) and its rule, decided as Optuna's
pruner of the same name decides; a test keeps the two lists equal."""


def make_pruning(spec: StudySpec, *, study_name: str) -> PruningRule:
    """The spec's pruning rule (``PRUNING_BUILDERS``)."""
    return PRUNING_BUILDERS[spec.search.pruner](spec, study_name)


# ---------------------------------------------------------------------------------------------
# Creating and loading


def create_or_load_study(
    spec: StudySpec, *, storage_url: str, study_name: str, target: int
) -> optuna.Study:
    """Create the study (storing the spec) or load it, refusing a different objective."""
    storage = open_storage(storage_url)
    with storage_lock(storage_url):
        try:
            study = optuna.load_study(study_name=study_name, storage=storage, pruner=NO_PRUNER)
        except KeyError:
            study = optuna.create_study(
                study_name=study_name, storage=storage, direction="maximize", pruner=NO_PRUNER
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
        network = network_digest(spec)
        stored_network = study.user_attrs.get(NETWORK_ATTR)
        if network and stored_network and stored_network != network:
            raise UsageError(
                f"{spec.source}: model.network: {network_display(spec.model.network)} has "
                f"changed since study {study_name!r} trained it (sha256 {network} against "
                f"{stored_network}); its trials would not be comparable (allowed: the file as "
                "it was, or another --study name)"
            )
        for key, value in (
            (SPEC_ATTR, spec.to_dict()),
            (FINGERPRINT_ATTR, spec.objective_fingerprint()),
            (TARGET_ATTR, target),
            (NETWORK_ATTR, network),
        ):
            if value is None:
                continue
            if study.user_attrs.get(key) != value:
                study.set_user_attr(key, value)
    return study


def network_digest(spec: StudySpec) -> str | None:
    """The digest of the spec's network file as it is now (None: the built-in net, or a
    module on the import path)."""
    if spec.model.network is None or not is_file_reference(spec.model.network):
        return None
    return loaded_digest(spec.model.network)


def available_memory() -> int | None:
    """Bytes this machine can give a new process without swapping (Linux's ``MemAvailable``;
    else the free pages), or None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(
    spec: StudySpec,
    split: Split,
    *,
    workers: int,
    available: int | None = None,
    where: str = "this machine has available",
) -> None:
    """Refuse, before the study exists, a net that ``workers`` trials at once cannot train in
    the memory this machine has available (``trainer.network.training_memory``, an upper
    estimate); ``available`` and ``where`` name another machine's (a Dask worker's)."""
    available = available_memory() if available is None else available
    if available is None or spec.user_network:  # a learner's net's size is its own
        return
    n_rows = len(split.y_train) + len(split.y_val)
    batch_size = spec.largest("training.batch_size", spec.training.batch_size)
    rows = max(min(batch_size, len(split.y_train)), min(EVAL_BATCH, n_rows))
    hidden = spec.model.hidden_sizes
    if spec.param("model.width") or spec.param("model.depth"):
        width = spec.largest("model.width", hidden[0])
        hidden = (width,) * spec.largest("model.depth", len(hidden))
    per_trial = training_memory(split.n_features, hidden, split.n_classes, batch_rows=rows)
    needed = per_trial * max(1, workers)
    if needed <= available:
        return
    times = f" x {workers} trials at once = {_gib(needed)}" if workers > 1 else ""
    raise SpecError(
        spec.source,
        "model.hidden",
        f"{_show_list(hidden)} with batch_size {batch_size} needs about "
        f"{_gib(per_trial)} a trial{times}, more than the {_gib(available)} {where} "
        "(allowed: narrower or fewer layers, a smaller batch, or fewer --workers)",
    )


LONG_TRIAL_FLOPS = 5e11
"""A study whose cheapest trial that runs all its epochs trains at least this many floating-point
operations (about 7 s at the ~70 GFLOP/s one core reaches on these shapes, ``bench_mnist``)
claims a trial only when a worker is free to train it: the worker then waits for one claim
(~45 ms, under 1% of such a trial), and the trial is RUNNING in the storage only while it
trains, so its start is its training's start (the dashboard's timeline, ``hpo compare``'s
compute, the bar's running count). Shorter trials keep ``hpo.executors.PREFETCH`` queued, where
that wait would cost a fifth of a trial."""


def queued_trials(spec: StudySpec, split: Split, executor: TrialExecutor) -> int:
    """How many trials the orchestrator keeps queued beyond the busy workers (see
    ``LONG_TRIAL_FLOPS``): decided from the spec and the data alone, so that a run with one
    worker claims in the same order every time."""
    return 0 if long_trials(spec, split) else executor.prefetch


def long_trials(spec: StudySpec, split: Split) -> bool:
    """Whether the study's cheapest trial that runs all its epochs trains ``LONG_TRIAL_FLOPS``
    or more (a learner's own net's cost is unknown: its trials count as short)."""
    if spec.user_network:
        return False
    hidden = spec.model.hidden_sizes
    if spec.param("model.width") or spec.param("model.depth"):
        width = spec.smallest("model.width", hidden[0])
        hidden = (width,) * spec.smallest("model.depth", len(hidden))
    weights = parameter_count(split.n_features, hidden, split.n_classes)
    # A step costs ~2 FLOPs a weight a row forward and ~4 backward.
    flops = 6 * weights * len(split.y_train) * spec.smallest("training.epochs", spec.max_epochs())
    return flops >= LONG_TRIAL_FLOPS


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _show_list(values) -> str:
    text = str(list(values))
    return text if len(text) <= 60 else f"{text[:50]}... ({len(values)} layers)"


# ---------------------------------------------------------------------------------------------
# Running


@dataclass(frozen=True)
class RunSummary:
    study_name: str
    storage_url: str
    counts: Counts
    finished_here: int  # trials finished by this command's orchestrator
    seconds: float


def make_executor(
    spec: StudySpec,
    split: Split,
    *,
    workers: int | None,
    in_process: bool = False,
    dask: str | None = None,
    label: str = "study",
) -> TrialExecutor:
    """Where the trials train: this process (``in_process``, one at a time), the Dask cluster
    whose scheduler is at ``dask`` (``workers`` in flight, default its threads), else
    ``workers`` local processes (default 1). A cluster is refused when a trial's net does not
    fit in its workers' memory (this machine's is ``check_memory``'s, before the study)."""
    if in_process and dask is not None:
        raise UsageError("--in-process and --dask: one or the other (allowed: either flag alone)")
    if in_process:
        return InlineExecutor(spec, split)
    if dask is not None:
        return _dask_executor(spec, split, address=dask, workers=workers, label=label)
    try:
        return LocalProcessExecutor(spec, split, workers=workers or 1)
    except WorkerLost as e:
        raise RunError(f"cannot start the worker processes: {e}") from None


class ExecutorStart:
    """Where a command's trials will train, checked before anything is stored.

    A Dask cluster is reached at once, its workers' memory checked: one unreachable or too
    small stores nothing. Local workers are checked against this machine's memory at once and
    spawned by ``start()``, so that a command opens its storage first and a bad one fails
    before the seconds of spawning. As a context manager it stops the executor when the block
    raises; after a block that ends well, whoever runs the trials shuts the executor down.

    Args: as ``make_executor``'s.
    """

    def __init__(
        self,
        spec: StudySpec,
        split: Split,
        *,
        workers: int | None,
        in_process: bool = False,
        dask: str | None = None,
        label: str = "study",
    ) -> None:
        self._options = {"workers": workers, "in_process": in_process, "dask": dask, "label": label}
        self._spec, self._split = spec, split
        self.executor: TrialExecutor | None = None
        if dask is None:
            check_memory(spec, split, workers=1 if in_process else workers or 1)
        else:
            self.executor = make_executor(spec, split, **self._options)

    def start(self, *, workers: int | None = None) -> TrialExecutor:
        """The executor, its local workers spawned now if they were not yet (``workers`` of
        them: fewer than checked when other orchestrator processes take the rest)."""
        if self.executor is None:
            options = self._options if workers is None else {**self._options, "workers": workers}
            self.executor = make_executor(self._spec, self._split, **options)
        return self.executor

    def __enter__(self) -> "ExecutorStart":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None and self.executor is not None:
            self.executor.shutdown(cancel=True)


def _dask_executor(
    spec: StudySpec, split: Split, *, address: str, workers: int | None, label: str
) -> TrialExecutor:
    with INTERRUPTS.raising():
        try:
            from hpo.dask_executor import DaskExecutor
        except ImportError as e:
            raise UsageError(
                f"--dask {address}: needs Dask's distributed package ({e}; allowed: after "
                'python -m pip install ".[dask]" in hpo\'s folder)'
            ) from None
        executor = DaskExecutor(spec, split, address=address, workers=workers, label=label)
    try:
        for where, (threads, limit) in executor.worker_memory().items():
            if limit:  # 0: the worker has no limit set
                in_flight = min(threads, workers or threads)
                check_memory(
                    spec,
                    split,
                    workers=in_flight,
                    available=limit,
                    where=f"Dask worker {where} may use",
                )
    except BaseException:
        executor.shutdown(cancel=True)
        raise
    return executor


def _orchestrate(
    study: optuna.Study,
    spec: StudySpec,
    split: Split,
    *,
    executor: TrialExecutor,
    storage_url: str,
    target: int,
    deadline: float | None,
    progress: Callable[[Counts, int], None] | None,
) -> RunSummary:
    """Run ``study``'s trials on ``executor`` until the target or the deadline."""
    start = time.monotonic()
    orchestrator = Orchestrator(
        study,
        spec,
        storage=open_storage(storage_url),
        storage_url=storage_url,
        target=target,
        deadline=deadline,
        executor=executor,
        make_sampler=samplers_for(spec),
        pruning=make_pruning(spec, study_name=study.study_name),
        view=sampler_view(spec, study),
        prefetch=queued_trials(spec, split, executor),
        progress=progress,
    )
    ran = orchestrator.run()
    return RunSummary(
        study.study_name, storage_url, orchestrator.counts, ran, time.monotonic() - start
    )


def run_study(
    spec: StudySpec,
    *,
    storage_url: str,
    study_name: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int | None = 1,
    in_process: bool = False,
    dask: str | None = None,
    orchestrators: int | None = None,
    create_only: bool = False,
    progress: Callable[[Counts, int], None] | None = None,
) -> RunSummary:
    """Create or resume the study of ``spec`` and run its trials to the target.

    Args:
        spec: the validated spec.
        storage_url: where the study lives.
        study_name: default: the spec's name.
        trials: the target of finished trials (default: the spec's ``search.trials``).
        timeout: seconds after which no new trial starts (default: the spec's).
        workers: trials in flight, each in a worker process (None: 1, or with ``dask`` the
            cluster's threads).
        in_process: train in this process instead, one trial at a time (debuggers, profilers).
        dask: the address of a Dask scheduler whose workers train the trials.
        orchestrators: processes that claim and store the local workers' trials, this one
            and ``hpo worker`` processes it starts (``hpo.orchestrator_processes``; default:
            ``orchestrator_count``; always one with ``in_process`` or ``dask``).
        create_only: only create the study (schema, spec and target) for ``hpo worker``
            processes to join.
        progress: called with the counts and the target whenever they change.

    Raises:
        UsageError: bad data, storage or cluster, before anything is stored.
        KeyboardInterrupt: after the trials in flight have been failed and workers stopped.
    """
    name = study_name or spec.name
    target = spec.search.trials if trials is None else trials
    size = space_size(spec)
    if size is not None:  # more trials could only repeat configurations
        target = min(target, size)
    timeout = spec.search.timeout if timeout is None else timeout
    if create_only:
        dask = None
    local = not in_process and dask is None
    if not local and (orchestrators or 1) > 1:
        flag = "--in-process" if in_process else "--dask"
        raise UsageError(
            f"--orchestrators {orchestrators} with {flag}: more orchestrator processes share "
            "local worker processes only (allowed: --orchestrators 1, or local --workers)"
        )
    split = load_training_split(spec)  # bad data or net fails here, before the study exists
    if not local:
        orchestrators = 1
    elif orchestrators is None:  # long trials are few a second: one orchestrator keeps up
        orchestrators = 1 if long_trials(spec, split) else orchestrator_count(workers or 1)
    workers_of = shares(workers or 1, min(orchestrators, workers or 1))
    with ExecutorStart(
        spec, split, workers=workers, in_process=in_process, dask=dask, label=name
    ) as executors:
        study = create_or_load_study(spec, storage_url=storage_url, study_name=name, target=target)
        INTERRUPTS.check()
        if create_only:
            return RunSummary(name, storage_url, study_counts(study), 0, 0.0)
        executor = executors.start(workers=workers_of[0] if local else None)
    deadline = None if timeout is None else time.monotonic() + timeout
    helpers = None
    if len(workers_of) > 1:
        try:
            helpers = OrchestratorProcesses(
                study_name=name, storage_url=storage_url, shares=workers_of[1:], deadline=deadline
            )
        except BaseException:
            executor.shutdown(cancel=True)
            raise
    try:
        summary = _orchestrate(
            study,
            spec,
            split,
            executor=executor,
            storage_url=storage_url,
            target=target,
            deadline=deadline,
            progress=progress,
        )
        if helpers is None:
            return summary

        def show() -> None:
            if progress is not None:
                progress(study_counts(study), target)

        helpers.wait(check=INTERRUPTS.check, every=show)
    except BaseException:
        if helpers is not None:
            helpers.stop(INTERRUPTS.first or signal.SIGTERM)
        raise
    for problem in helpers.problems():
        print(f"hpo: {problem}", file=sys.stderr)
    return replace(summary, counts=study_counts(study))


def run_worker(
    *,
    storage_url: str,
    study_name: str,
    workers: int | None = 1,
    in_process: bool = False,
    dask: str | None = None,
    seconds_left: float | None = None,
    progress: Callable[[Counts, int], None] | None = None,
) -> RunSummary:
    """Join an existing study as one more orchestrator until its stored target is reached, or
    until ``seconds_left`` have passed (None: no limit)."""
    study, spec = load_hpo_study(storage_url=storage_url, study_name=study_name)
    target = int(study.user_attrs.get(TARGET_ATTR, spec.search.trials))
    split = load_training_split(spec)
    with ExecutorStart(
        spec, split, workers=workers, in_process=in_process, dask=dask, label=study_name
    ) as executors:
        executor = executors.start()
    return _orchestrate(
        study,
        spec,
        split,
        executor=executor,
        storage_url=storage_url,
        target=target,
        deadline=None if seconds_left is None else time.monotonic() + seconds_left,
        progress=progress,
    )
