"""Benchmark: the study service's overhead, its scaling to two workers, and its search quality.

Every study runs the packaged default spec (digits, 3x100 ReLU, 30 epochs, TPE with the median
pruner) with some ``[search]`` fields overridden, in a fresh SQLite file of its own, through
``hpo.service.run_study``. Three parts, printed side by side with their targets:

1. overhead: one worker runs N trials. The training time is the trials' ``train_seconds`` (the
   trainer's own clock) less the time spent in the ``on_epoch_end`` callbacks, which the trainer
   counts but which is the service's pruning bookkeeping; the overhead is the wall time of
   ``run_study`` beyond the training time, as a share of it, with and without the one-off data
   loading and study setup. The study runs in a freshly spawned process so that imports are as
   cold as they are for ``hpo run``; wrappers put around the service's steps split the overhead
   into setup, time inside trials and time between trials. The heartbeat thread's writes run
   concurrently with training; their time is shown, not counted (with the heartbeat off, the
   trials' train_seconds did not change beyond the noise).
2. scaling: finished trials per minute with ``workers=1`` and ``workers=2``, each run in a fresh
   process. Trial durations depend on the sampled configuration, so the comparison is repeated
   with the random sampler and no pruner, whose trials depend on the seed alone. ``make_sampler``
   seeds each worker from the study seed and the worker's index, so the two-worker run draws
   other configurations than the one-worker run from its second worker on; the report says how
   many match and adds two work-normalized rates: epochs per minute (the work itself, contention
   included) and train-seconds per wall second (how busy the workers keep training; contention
   excluded, since it inflates the train_seconds it counts).
3. quality: over several seeds, random search (no pruner) sets a bar, the best value B_random of
   its trials; TPE with the median pruner should reach B_random within few trials. TPE with and
   without the median pruner measure what pruning saves: fewer epochs at an equal best value.
   Independent studies run two at a time in spawned processes with one BLAS thread each.

The figures assume an otherwise idle machine. Before each timed study (or batch of studies)
the benchmark waits, up to 3 minutes, for other processes to leave the CPUs idle; it runs an
overhead or scaling study again (three runs at most, the least disturbed kept) when others took
more than 15 % of the CPUs meanwhile; and every table reports that share.

Run: ``python tests/benchmarks/bench_study.py [--quick] [--json PATH] [--part PART]``. Not a pytest
test: the default pytest run ignores ``tests/benchmarks``.
"""

import argparse
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, the file's own directory is on sys.path, not the repository's root.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import optuna  # noqa: E402

import hpo.objective  # noqa: E402
import hpo.service  # noqa: E402
import hpo.storage  # noqa: E402
from hpo.service import environment, run_study  # noqa: E402
from hpo.spec import StudySpec, load_spec, spec_from_dict  # noqa: E402
from hpo.storage import open_storage  # noqa: E402

BASE_SPEC = "default"
TARGET_OVERHEAD = 0.10
"""The service may add at most this share of the trials' training time."""
TARGET_SPEEDUP = 1.7
"""Two workers should finish trials at least this many times as fast as one."""
TARGET_TRIALS_TO_REACH = 40
"""TPE (median pruner) should match random search's best of 100 trials within this many trials."""
TARGET_EPOCH_SAVINGS = 0.40
"""The median pruner should train at least this share fewer epochs than no pruner..."""
BEST_TOLERANCE = 0.01
"""...with a best validation accuracy lower by at most this much."""
BUSY_SHARE = 0.15
"""A measurement during which other processes used more of the CPUs than this is disturbed."""
CHECKPOINTS = (10, 20, 40, 60, 100)
"""Trial counts at which the best-so-far curves are shown."""


@dataclass(frozen=True)
class Sizes:
    """How many trials and seeds each part runs."""

    overhead_trials: int
    scaling_trials: int
    quality_seeds: int
    quality_trials: int = 100
    quality_processes: int = 2


FULL = Sizes(overhead_trials=30, scaling_trials=80, quality_seeds=5)
QUICK = Sizes(overhead_trials=12, scaling_trials=8, quality_seeds=2)


# ---------------------------------------------------------------------------------------------
# Running one study


@dataclass(frozen=True)
class StudyJob:
    """One study to run: the default spec with ``search`` overrides, on a fresh SQLite file."""

    label: str
    search: dict[str, Any]
    trials: int
    workers: int = 1
    instrument: bool = False  # time the service's steps (overhead part)


@dataclass(frozen=True)
class TrialRecord:
    """What the storage holds about one trial, the curves left out."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    train_seconds: float
    epochs_run: int
    start: float  # seconds after the study's first trial started (storage clock)
    complete: float


@dataclass(frozen=True)
class StudyRun:
    """A finished ``run_study`` call and its trials, ordered by number."""

    label: str
    workers: int
    wall_seconds: float  # the whole run_study call
    summary_seconds: float  # RunSummary.seconds: from after setup to the end
    blas_threads: int  # in this process's trials (0: none ran here, as with several workers)
    other_cpu_share: float  # of the machine's CPUs, used by processes not of this run
    trials: list[TrialRecord]
    timers: dict[str, dict[str, float]] = field(default_factory=dict)
    callback_seconds: float = 0.0  # in the trials' on_epoch_end callbacks (pruning decisions)

    @property
    def finished(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.state in ("COMPLETE", "PRUNED")]

    @property
    def train_seconds(self) -> float:
        return sum(t.train_seconds for t in self.trials)

    @property
    def epochs(self) -> int:
        return sum(t.epochs_run for t in self.trials)

    @property
    def trials_seconds(self) -> float:
        """Storage time from each trial's start (ask) to its completion (tell), summed."""
        return sum(t.complete - t.start for t in self.trials)

    @property
    def best_value(self) -> float | None:
        values = [t.value for t in self.trials if t.state == "COMPLETE"]
        return max(values) if values else None


def derive_spec(base: StudySpec, search: dict[str, Any]) -> StudySpec:
    """``base`` with ``search`` fields overridden, validated like a study file."""
    if not search:
        return base
    raw = base.to_dict()
    raw["search"].update(search)
    label = ", ".join(f"{k}={v}" for k, v in search.items())
    return spec_from_dict(raw, source=f"{base.source} ({label})", default_name=base.name)


class Stopwatch:
    """Calls of and seconds spent in functions replaced in place by timed wrappers.

    Nested wrapped calls are counted in both (``ask`` inside ``claim_trial``).
    """

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.first_seconds: dict[str, float] = {}
        self._originals: list[tuple[Any, str, Callable]] = []

    def wrap(self, owner: Any, name: str, label: str) -> None:
        """Time ``owner.name`` under ``label``; nothing when the code measured has none (an
        older revision)."""
        original = getattr(owner, name, None)
        if original is None:
            return

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.first_seconds.setdefault(label, elapsed)
                self.calls[label] = self.calls.get(label, 0) + 1
                self.seconds[label] = self.seconds.get(label, 0.0) + elapsed

        setattr(owner, name, timed)
        self._originals.append((owner, name, original))

    def restore(self) -> None:
        for owner, name, original in reversed(self._originals):
            setattr(owner, name, original)
        self._originals.clear()

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            label: {
                "calls": self.calls[label],
                "seconds": self.seconds[label],
                "first_seconds": self.first_seconds[label],
            }
            for label in self.seconds
        }


def instrument_service(watch: Stopwatch) -> None:
    """Time the steps of ``run_study``: the module globals it and ``run_trial`` look up."""
    watch.wrap(hpo.service, "load_study_split", "data loading")
    watch.wrap(hpo.service, "create_or_load_study", "study setup")
    if hasattr(hpo.service, "TrialClaimer"):
        watch.wrap(hpo.service.TrialClaimer, "claim", "claim")
    else:
        watch.wrap(hpo.service, "claim_trial", "claim")
    if hasattr(hpo.service, "take_census"):
        watch.wrap(hpo.service, "take_census", "claim: census")
    if hasattr(hpo.service, "new_trial"):
        watch.wrap(hpo.service, "new_trial", "claim: new trial")
    # The sweep of dead workers' trials: hpo's own where it has one, else Optuna's.
    if hasattr(hpo.service, "sweep_stale_trials"):
        watch.wrap(hpo.service, "sweep_stale_trials", "claim: stale sweep")
    else:
        watch.wrap(optuna.storages, "fail_stale_trials", "claim: stale sweep")
    watch.wrap(hpo.service, "count_trials", "count_trials")
    watch.wrap(optuna.study.Study, "ask", "claim: ask")
    watch.wrap(hpo.service, "run_trial", "trial")
    watch.wrap(hpo.objective, "suggest", "trial: suggest")
    watch.wrap(hpo.objective, "train_configuration", "trial: train_configuration")
    watch.wrap(hpo.storage, "write_trial_params", "trial: write_trial_params")
    watch.wrap(hpo.objective, "finish_trial", "trial: finish_trial")
    # Their predecessors, to measure older revisions.
    watch.wrap(hpo.objective, "write_trial_records", "trial: write_trial_records")
    if not hasattr(hpo.objective, "finish_trial"):
        watch.wrap(optuna.study.Study, "tell", "trial: tell")
    # Runs in the heartbeat thread, concurrently with training.
    watch.wrap(optuna.storages.RDBStorage, "record_heartbeat", "heartbeat thread")


class CpuMeter:
    """How much of the machine's CPU time processes other than this one and its children used.

    The benchmark assumes an otherwise idle machine; this says whether it was. Busy time comes
    from ``/proc/stat`` (steal included: time the hypervisor gave to others); this process's own
    time from ``getrusage``, which counts children once they have been waited for.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.busy, self.own = self._busy_seconds(), self._own_seconds()

    @staticmethod
    def _busy_seconds() -> float:
        try:
            with open("/proc/stat") as f:
                ticks = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return math.nan
        # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
        busy = sum(ticks) - ticks[3] - ticks[4]
        return busy / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_seconds() -> float:
        usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return sum(u.ru_utime + u.ru_stime for u in usage)

    def other_share(self) -> float:
        """The share of all CPUs' time since the start that other processes used."""
        capacity = (time.perf_counter() - self.start) * (os.cpu_count() or 1)
        other = (self._busy_seconds() - self.busy) - (self._own_seconds() - self.own)
        return max(0.0, other / capacity)


def wait_for_idle_machine(*, limit: float = 180.0) -> float:
    """Wait until other processes leave the CPUs idle for 3 s in a row, at most ``limit`` s.

    Returns the seconds waited. Runs between studies, when this benchmark itself is idle, so
    all busy time is other processes'.
    """
    start = time.perf_counter()
    quiet = 0
    while quiet < 3 and time.perf_counter() - start < limit:
        meter = CpuMeter()
        time.sleep(1.0)
        quiet = quiet + 1 if meter.other_share() < BUSY_SHARE else 0
    waited = time.perf_counter() - start
    if waited > 5:
        log(f"waited {waited:.0f} s for other processes to leave the CPUs idle")
    return waited


def blas_counter() -> Callable[[], int]:
    """A cheap reader of this process's current BLAS thread count (the library scan is done
    once, here, so that reading it inside a timed trial costs microseconds)."""
    from threadpoolctl import ThreadpoolController

    blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    return lambda: max((c.num_threads for c in blas), default=0)


def read_trials(storage_url: str, study_name: str) -> list[TrialRecord]:
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    started = [t.datetime_start for t in trials if t.datetime_start is not None]
    origin = min(started) if started else None
    records = []
    for t in trials:
        start = complete = math.nan
        if origin is not None and t.datetime_start is not None:
            start = (t.datetime_start - origin).total_seconds()
        if origin is not None and t.datetime_complete is not None:
            complete = (t.datetime_complete - origin).total_seconds()
        records.append(
            TrialRecord(
                number=t.number,
                state=t.state.name,
                value=t.value,
                params=dict(t.params),
                train_seconds=float(t.user_attrs.get("train_seconds", 0.0)),
                epochs_run=int(t.user_attrs.get("epochs_run", 0)),
                start=start,
                complete=complete,
            )
        )
    return records


def run_job(job: StudyJob) -> StudyRun:
    """Run ``job`` in this process on a new SQLite file in a temporary directory."""
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    spec = derive_spec(load_spec(BASE_SPEC), job.search)
    watch = Stopwatch()
    if job.instrument:
        instrument_service(watch)
    # BLAS threads as the trials see them: run_study may limit them around its worker loop.
    threads_in_trial: list[int] = []
    train_configuration = hpo.objective.train_configuration
    blas_threads = blas_counter()
    # The trainer's train_seconds include its on_epoch_end callbacks: the service's pruning.
    callback_seconds = [0.0]

    def counting_threads(*args, **kwargs):
        if not threads_in_trial:
            threads_in_trial.append(blas_threads())
        callback = kwargs.get("on_epoch_end")
        if callback is not None:

            def timed_callback(metrics):
                start = time.perf_counter()
                try:
                    return callback(metrics)
                finally:
                    callback_seconds[0] += time.perf_counter() - start

            kwargs["on_epoch_end"] = timed_callback
        return train_configuration(*args, **kwargs)

    hpo.objective.train_configuration = counting_threads
    with tempfile.TemporaryDirectory(prefix="bench_study_") as tmp:
        url = f"sqlite:///{tmp}/study.db"
        try:
            meter = CpuMeter()
            summary = run_study(spec, storage_url=url, trials=job.trials, workers=job.workers)
            wall = time.perf_counter() - meter.start
            other = meter.other_share()
        finally:
            watch.restore()
            hpo.objective.train_configuration = train_configuration
        trials = read_trials(url, summary.study_name)
    return StudyRun(
        label=job.label,
        workers=job.workers,
        wall_seconds=wall,
        summary_seconds=summary.seconds,
        blas_threads=threads_in_trial[0] if threads_in_trial else 0,
        other_cpu_share=other,
        trials=trials,
        timers=watch.as_dict(),
        callback_seconds=callback_seconds[0],
    )


def spawn_pool(processes: int) -> ProcessPoolExecutor:
    # Spawned, not forked: every study process starts from a clean interpreter, as `hpo run` does.
    return ProcessPoolExecutor(
        max_workers=processes, mp_context=multiprocessing.get_context("spawn")
    )


def run_in_fresh_process(job: StudyJob, *, attempts: int = 3) -> StudyRun:
    """Run ``job`` in a new process; again (at most ``attempts`` times in all) while other
    processes took more than ``BUSY_SHARE`` of the CPUs, keeping the least disturbed run."""
    runs = []
    for _ in range(attempts):
        wait_for_idle_machine()
        with spawn_pool(1) as pool:
            runs.append(pool.submit(run_job, job).result())
        if runs[-1].other_cpu_share <= BUSY_SHARE:
            break
        share = 100 * runs[-1].other_cpu_share
        log(f"{job.label}: other processes used {share:.0f} % of the CPUs; running it again")
    return min(runs, key=lambda r: r.other_cpu_share)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Tables


Row = tuple[str, ...]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_table(title: str, header: Row, rows: list[Row], notes: tuple[str, ...] = ()) -> None:
    """The first column left-aligned, the others right-aligned; ``notes`` printed below."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(row: Row) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    print(f"\n{title}" if title else "")
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    for note in notes:
        print(note)


def seconds(x: float) -> str:
    return f"{x:.3f} s"


def percent(x: float) -> str:
    return f"{100 * x:.1f} %"


# ---------------------------------------------------------------------------------------------
# 1. Overhead


def measure_overhead(sizes: Sizes) -> dict[str, Any]:
    n = sizes.overhead_trials
    log(f"overhead: {n} trials, 1 worker, in a fresh process")
    run = run_in_fresh_process(StudyJob("overhead", {}, n, instrument=True))
    timer = run.timers

    def spent(label: str) -> float:
        return timer.get(label, {}).get("seconds", 0.0)

    callbacks = run.callback_seconds
    train = run.train_seconds - callbacks  # the trainer's clock, less the service's pruning
    data = timer["data loading"]["first_seconds"]
    setup = spent("study setup")
    in_trials = spent("trial") - train
    # Between trials: the claims and the loop's own bookkeeping around them.
    between = run.wall_seconds - data - setup - spent("trial")
    claim = spent("claim")
    trial_parts = {
        "suggest": spent("trial: suggest"),
        "net build": spent("trial: train_configuration") - run.train_seconds,
        "pruning callbacks": callbacks,
    }
    for step in ("write_trial_params", "finish_trial", "write_trial_records", "tell"):
        if f"trial: {step}" in timer:
            trial_parts[step] = spent(f"trial: {step}")
    # The pruning snapshot, starting and stopping the heartbeat thread, the configuration.
    trial_parts["other"] = in_trials - sum(trial_parts.values())
    claim_parts = {
        "stale sweep": spent("claim: stale sweep"),
        "census": spent("claim: census"),  # count_states before it: in "the rest"
        "new trial": spent("claim: new trial"),
        "ask (queued trials)": spent("claim: ask"),
    }
    claim_parts["lock and the rest"] = claim - sum(claim_parts.values())
    return {
        "trials": n,
        "finished": len(run.finished),
        "pruned": sum(t.state == "PRUNED" for t in run.trials),
        "blas_threads": run.blas_threads,
        "other_cpu_percent": 100 * run.other_cpu_share,
        "wall_seconds": run.wall_seconds,
        "train_seconds": train,
        "train_seconds_as_recorded": run.train_seconds,
        "callback_seconds": callbacks,
        "heartbeat_thread_seconds": spent("heartbeat thread"),
        "data_loading_seconds": data,
        "study_setup_seconds": setup,
        "inside_trials_seconds": in_trials,
        "inside_trials_storage_clock_seconds": run.trials_seconds - train,
        "between_trials_seconds": between,
        "claim_seconds": claim,
        "inside_trials_parts": trial_parts,
        "claim_parts": claim_parts,
        "overhead_including_data": (run.wall_seconds - train) / train,
        "overhead_excluding_data": (run.wall_seconds - data - train) / train,
        "overhead_per_trial_steady": (in_trials + between) / train,
        "ms_per_trial_inside": 1000 * in_trials / n,
        "ms_per_trial_between": 1000 * between / n,
        "timers": timer,
        "trials_detail": [asdict(t) for t in run.trials],
    }


def info(label: str, value: str, *more: str) -> Row:
    """A row without a target; ``more`` fills the columns between value and target."""
    return (label, value, *more, "", "")


def checked(label: str, value: str, *more: str, target: str, ok: bool) -> Row:
    return (label, value, *more, target, verdict(ok))


def print_overhead(r: dict[str, Any]) -> None:
    target = f"<= {percent(TARGET_OVERHEAD)}"
    n = r["trials"]

    def per_trial(parts: dict[str, float]) -> str:
        return ", ".join(f"{k} {1000 * v / n:.1f}" for k, v in parts.items()) + " ms/trial"

    inside = f"{r['ms_per_trial_inside']:.0f} ms/trial"
    between = f"{r['ms_per_trial_between']:.0f} ms/trial"
    rows = [
        info("run_study wall time", seconds(r["wall_seconds"])),
        info(
            f"  training: train_seconds less callbacks ({1000 * r['train_seconds'] / n:.0f} "
            "ms/trial)",
            seconds(r["train_seconds"]),
        ),
        info("  data loading (first load_study_split)", seconds(r["data_loading_seconds"])),
        info("  study setup (create_or_load_study)", seconds(r["study_setup_seconds"])),
        info(f"  inside trials beyond train ({inside}; a)", seconds(r["inside_trials_seconds"])),
        info(f"  between trials ({between}; b)", seconds(r["between_trials_seconds"])),
    ]
    for label, key in (
        ("overhead, including data loading", "overhead_including_data"),
        ("overhead, excluding data loading", "overhead_excluding_data"),
        ("  per-trial part only (no data, no setup)", "overhead_per_trial_steady"),
    ):
        rows.append(checked(label, percent(r[key]), target=target, ok=r[key] <= TARGET_OVERHEAD))
    print_table(
        f"1. Overhead: 1 worker, SQLite, {n} trials of the default study ({r['pruned']} pruned; "
        f"BLAS threads {r['blas_threads']}; other processes used {r['other_cpu_percent']:.0f} % "
        "of the CPUs)",
        ("figure", "value", "target", "result"),
        rows,
        (
            f"a) inside trials: {per_trial(r['inside_trials_parts'])}",
            f"b) claims: {per_trial(r['claim_parts'])}; the rest of b is the loop's own",
            f"the heartbeat thread's writes, concurrent with training: "
            f"{1000 * r['heartbeat_thread_seconds'] / n:.1f} ms/trial (not counted)",
        ),
    )


# ---------------------------------------------------------------------------------------------
# 2. Scaling


def rate_figures(run: StudyRun) -> dict[str, float]:
    finished = run.finished
    minutes = run.wall_seconds / 60
    busy = max((t.complete for t in finished), default=0.0) - min(
        (t.start for t in finished), default=0.0
    )
    per_epoch = [t.train_seconds / t.epochs_run for t in finished if t.epochs_run > 0]
    return {
        "wall_seconds": run.wall_seconds,
        "summary_seconds": run.summary_seconds,
        "finished": len(finished),
        "trials_per_minute": len(finished) / minutes,
        "steady_trials_per_minute": len(finished) / (busy / 60) if busy > 0 else math.nan,
        "epochs_per_minute": run.epochs / minutes,
        "train_seconds_per_wall_second": run.train_seconds / run.wall_seconds,
        "train_seconds_sum": run.train_seconds,
        "epochs": run.epochs,
        "median_train_seconds": statistics.median(t.train_seconds for t in finished),
        "median_ms_per_epoch": 1000 * statistics.median(per_epoch) if per_epoch else math.nan,
        "other_cpu_percent": 100 * run.other_cpu_share,
    }


def compare_configurations(one: StudyRun, two: StudyRun) -> dict[str, Any]:
    """Whether both runs drew the same configurations, in the same order or at all."""
    by_number = {t.number: t for t in one.trials}
    same_order = [
        t.number
        for t in two.trials
        if t.number in by_number and by_number[t.number].params == t.params
    ]
    keys = {json.dumps(t.params, sort_keys=True) for t in one.trials}
    shared = sum(json.dumps(t.params, sort_keys=True) in keys for t in two.trials)
    # The same configuration trains the same epochs in both runs: its train_seconds under
    # two workers against one is the contention, whatever else differs.
    params_one = {json.dumps(t.params, sort_keys=True): t for t in one.finished}
    slowdowns = [
        t.train_seconds / params_one[k].train_seconds
        for t in two.finished
        if (k := json.dumps(t.params, sort_keys=True)) in params_one
        and params_one[k].train_seconds > 0
        and params_one[k].epochs_run == t.epochs_run
    ]
    return {
        "trials": len(two.trials),
        "same_number_same_params": len(same_order),
        "matching_numbers": same_order,
        "shared_any_order": shared,
        "all_match": len(same_order) == len(two.trials) == len(one.trials),
        "paired_median_train_slowdown": statistics.median(slowdowns) if slowdowns else math.nan,
        "paired_count": len(slowdowns),
    }


def measure_scaling(sizes: Sizes) -> dict[str, Any]:
    n = sizes.scaling_trials
    variants = {
        "default": {},
        # Random draws depend on the seed alone and, without pruning, so does every trial's
        # length: the two runs do the same work when they draw the same configurations.
        "random": {"sampler": "random", "pruner": "none", "seed": 0},
    }
    result: dict[str, Any] = {"trials": n, "cpus": os.cpu_count()}
    for name, search in variants.items():
        runs = {}
        for workers in (1, 2):
            log(f"scaling: {name}, {n} trials, {workers} worker(s), in a fresh process")
            runs[workers] = run_in_fresh_process(
                StudyJob(f"scaling-{name}-{workers}w", search, n, workers=workers)
            )
        one, two = rate_figures(runs[1]), rate_figures(runs[2])
        result[name] = {
            "search": search,
            "one_worker": one,
            "two_workers": two,
            "one_worker_blas_threads": runs[1].blas_threads,
            "ratio": {k: two[k] / one[k] for k in one if one[k] and not math.isnan(one[k])},
            "configurations": compare_configurations(runs[1], runs[2]),
            "trials_detail": {
                "one_worker": [asdict(t) for t in runs[1].trials],
                "two_workers": [asdict(t) for t in runs[2].trials],
            },
        }
    return result


SCALING_ROWS = (
    # label, figure, format, checked against the target, shown for the random variant only
    ("trials/min (wall of run_study)", "trials_per_minute", "{:.1f}", True, False),
    ("trials/min, first start to last end", "steady_trials_per_minute", "{:.1f}", False, False),
    ("epochs/min (work-normalized)", "epochs_per_minute", "{:.0f}", True, True),
    (
        "train-s per wall-s (trials/min x mean train_s)",
        "train_seconds_per_wall_second",
        "{:.2f}",
        True,
        True,
    ),
    ("median train_seconds per trial", "median_train_seconds", "{:.3f} s", False, False),
    ("median train seconds per epoch", "median_ms_per_epoch", "{:.1f} ms", False, False),
    ("CPU time of other processes (of 2 CPUs)", "other_cpu_percent", "{:.0f} %", False, False),
)


def print_scaling(r: dict[str, Any]) -> None:
    target = f">= {TARGET_SPEEDUP}x"
    rows: list[Row] = []
    notes: tuple[str, ...] = ()
    titles = {"default": "default spec (TPE, median pruner)", "random": "random, no pruner, seed 0"}
    for name, title in titles.items():
        one, two, ratio = r[name]["one_worker"], r[name]["two_workers"], r[name]["ratio"]
        conf = r[name]["configurations"]
        rows.append(info(title, "", "", ""))
        if name == "random":
            notes = (
                f"random: {conf['same_number_same_params']} of {conf['trials']} configurations "
                f"match the 1-worker run's at the same trial number, {conf['shared_any_order']} "
                "in any order (worker 1 seeds its sampler differently)",
            )
        for label, key, fmt, check, random_only in SCALING_ROWS:
            if random_only and name != "random":
                continue
            speedup = f"{ratio[key]:.2f}x" if key in ratio and key != "other_cpu_percent" else ""
            cells = (f"  {label}", fmt.format(one[key]), fmt.format(two[key]), speedup)
            ok = ratio.get(key, 0.0) >= TARGET_SPEEDUP
            # Only the random variant does the same work with one and two workers: with TPE and
            # pruning, two workers draw and prune other trials (about half as many pruned).
            judged = check and name == "random"
            rows.append(checked(*cells, target=target, ok=ok) if judged else info(*cells))
        if name == "random":
            slowdown = f"{conf['paired_median_train_slowdown']:.2f}x"
            label = f"  same config: train_s 2w / 1w (median of {conf['paired_count']})"
            rows.append(info(label, "", "", slowdown))
    blas = r["default"]["one_worker_blas_threads"]
    print_table(
        f"2. Scaling: {r['trials']} trials, 1 vs 2 worker processes on {r['cpus']} CPUs, SQLite "
        f"(BLAS threads per trial with 1 worker: {blas}; with 2: as run_study sets them)",
        ("figure", "1 worker", "2 workers", "2w/1w", "target", "result"),
        rows,
        notes,
    )


# ---------------------------------------------------------------------------------------------
# 3. Quality


QUALITY_VARIANTS = {
    "random": {"sampler": "random", "pruner": "none"},
    "tpe_median": {"sampler": "tpe", "pruner": "median"},
    "tpe_none": {"sampler": "tpe", "pruner": "none"},
}


def best_so_far(run: StudyRun) -> list[float | None]:
    """The best value among the first k trials, for k = 1..trials (None before any completes)."""
    best, curve = None, []
    for t in run.trials:
        if t.state == "COMPLETE" and (best is None or t.value > best):
            best = t.value
        curve.append(best)
    return curve


def trials_to_reach(curve: list[float | None], bar: float) -> int | None:
    return next((k for k, v in enumerate(curve, start=1) if v is not None and v >= bar), None)


def run_quality_studies(sizes: Sizes) -> tuple[dict[tuple[str, int], StudyRun], float, float]:
    """The studies by (variant, seed), the wall time and the other processes' CPU share."""
    jobs = [
        StudyJob(f"{variant}-seed{seed}", search | {"seed": seed}, sizes.quality_trials)
        for seed in range(sizes.quality_seeds)
        for variant, search in QUALITY_VARIANTS.items()
    ]
    # The longest studies (no pruner) first, so that neither process idles at the end.
    jobs.sort(key=lambda j: j.search["pruner"] != "none")
    runs: dict[tuple[str, int], StudyRun] = {}
    wait_for_idle_machine()
    meter = CpuMeter()
    # Two studies share the two cores: one BLAS thread each, read by the children at startup.
    with environment(OPENBLAS_NUM_THREADS="1"), spawn_pool(sizes.quality_processes) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            run = future.result()
            variant = job.label.rsplit("-seed", 1)[0]
            runs[variant, job.search["seed"]] = run
            log(
                f"quality: {job.label} done in {run.wall_seconds:.0f} s "
                f"({len(runs)}/{len(jobs)}, best {run.best_value:.4f})"
            )
    return runs, time.perf_counter() - meter.start, meter.other_share()


def measure_quality(sizes: Sizes) -> dict[str, Any]:
    n_jobs = sizes.quality_seeds * len(QUALITY_VARIANTS)
    log(
        f"quality: {n_jobs} studies of {sizes.quality_trials} trials on "
        f"{sizes.quality_processes} processes"
    )
    runs, wall, other = run_quality_studies(sizes)
    per_seed = []
    for seed in range(sizes.quality_seeds):
        random_run, median_run, none_run = (runs[v, seed] for v in QUALITY_VARIANTS)
        bar = random_run.best_value
        per_seed.append(
            {
                "seed": seed,
                "best_random": bar,
                "best_tpe_median": median_run.best_value,
                "best_tpe_none": none_run.best_value,
                "tpe_trials_to_reach_random": trials_to_reach(best_so_far(median_run), bar),
                "epochs_tpe_median": median_run.epochs,
                "epochs_tpe_none": none_run.epochs,
                "epochs_random": random_run.epochs,
                "pruned_tpe_median": sum(t.state == "PRUNED" for t in median_run.trials),
                "wall_seconds": {v: runs[v, seed].wall_seconds for v in QUALITY_VARIANTS},
            }
        )
    reached = [s["tpe_trials_to_reach_random"] for s in per_seed]
    median_reach = statistics.median(math.inf if k is None else k for k in reached)
    epochs_median = sum(s["epochs_tpe_median"] for s in per_seed)
    epochs_none = sum(s["epochs_tpe_none"] for s in per_seed)
    best_gap = statistics.mean(s["best_tpe_median"] - s["best_tpe_none"] for s in per_seed)
    curves = {}
    for variant in QUALITY_VARIANTS:
        per_run = [best_so_far(runs[variant, seed]) for seed in range(sizes.quality_seeds)]
        curves[variant] = {
            k: statistics.median(c[k - 1] if c[k - 1] is not None else 0.0 for c in per_run)
            for k in CHECKPOINTS
            if k <= sizes.quality_trials
        }
    return {
        "seeds": sizes.quality_seeds,
        "trials": sizes.quality_trials,
        "processes": sizes.quality_processes,
        "wall_seconds": wall,
        "other_cpu_percent": 100 * other,
        "per_seed": per_seed,
        "median_trials_to_reach": None if math.isinf(median_reach) else median_reach,
        "epochs_tpe_median": epochs_median,
        "epochs_tpe_none": epochs_none,
        "epoch_savings": 1 - epochs_median / epochs_none,
        "mean_best_tpe_median": statistics.mean(s["best_tpe_median"] for s in per_seed),
        "mean_best_tpe_none": statistics.mean(s["best_tpe_none"] for s in per_seed),
        "mean_best_random": statistics.mean(s["best_random"] for s in per_seed),
        "mean_best_gap_median_minus_none": best_gap,
        "best_so_far_median_over_seeds": curves,
        "trials_detail": {
            f"{variant}-seed{seed}": [
                {k: v for k, v in asdict(t).items() if k != "params"} for t in run.trials
            ]
            for (variant, seed), run in runs.items()
        },
    }


def print_quality(r: dict[str, Any]) -> None:
    seed_rows = []
    for s in r["per_seed"]:
        reach = s["tpe_trials_to_reach_random"]
        saved = 1 - s["epochs_tpe_median"] / s["epochs_tpe_none"]
        seed_rows.append(
            (
                str(s["seed"]),
                f"{s['best_random']:.4f}",
                str(reach) if reach is not None else f"not in {r['trials']}",
                f"{s['best_tpe_median']:.4f}",
                f"{s['best_tpe_none']:.4f}",
                str(s["epochs_tpe_median"]),
                str(s["epochs_tpe_none"]),
                percent(saved),
            )
        )
    print_table(
        f"3. Quality: {r['seeds']} seeds x 3 studies of {r['trials']} trials on "
        f"{r['processes']} processes, wall {r['wall_seconds']:.0f} s; other processes used "
        f"{r['other_cpu_percent']:.0f} % of the CPUs",
        (
            "seed",
            "B_random",
            "TPE trials to B_random",
            "best TPE+median",
            "best TPE none",
            "epochs median",
            "epochs none",
            "saved",
        ),
        seed_rows,
    )
    reach = r["median_trials_to_reach"]
    savings, gap = r["epoch_savings"], r["mean_best_gap_median_minus_none"]
    epochs = f"{r['epochs_tpe_median']} vs {r['epochs_tpe_none']}"
    bests = f"{r['mean_best_tpe_median']:.4f} - {r['mean_best_tpe_none']:.4f}"
    print_table(
        "",
        ("figure", "value", "target", "result"),
        [
            checked(
                "median TPE trials to reach B_random",
                f"{reach:g}" if reach is not None else f"not in {r['trials']}",
                target=f"<= {TARGET_TRIALS_TO_REACH}",
                ok=reach is not None and reach <= TARGET_TRIALS_TO_REACH,
            ),
            checked(
                f"epochs saved by the median pruner ({epochs})",
                percent(savings),
                target=f">= {percent(TARGET_EPOCH_SAVINGS)}",
                ok=savings >= TARGET_EPOCH_SAVINGS,
            ),
            checked(
                f"best, median - none pruner (mean {bests})",
                f"{gap:+.4f}",
                target=f">= -{BEST_TOLERANCE}",
                ok=gap >= -BEST_TOLERANCE,
            ),
        ],
    )
    curves = r["best_so_far_median_over_seeds"]
    checkpoints = list(curves["random"])
    names = {"random": "random, no pruner", "tpe_median": "TPE + median", "tpe_none": "TPE, none"}
    print_table(
        "best-so-far value after k trials (median over seeds)",
        ("sampler", *(f"k={k}" for k in checkpoints)),
        [(names[v], *(f"{curves[v][k]:.4f}" for k in checkpoints)) for v in names],
    )


# ---------------------------------------------------------------------------------------------
# Main


PARTS: dict[str, tuple[Callable[[Sizes], dict], Callable[[dict], None]]] = {
    "overhead": (measure_overhead, print_overhead),
    "scaling": (measure_scaling, print_scaling),
    "quality": (measure_quality, print_quality),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer trials and seeds (12 / 8 trials, 2 seeds)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write all numbers here")
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument(
        "--scaling-trials",
        type=int,
        metavar="N",
        help=f"trials per scaling run (default {FULL.scaling_trials}; more amortize the start of "
        "the second worker process)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.scaling_trials:
        sizes = dataclasses.replace(sizes, scaling_trials=args.scaling_trials)
    names = list(PARTS) if args.part == "all" else [args.part]
    results: dict[str, Any] = {
        "sizes": asdict(sizes),
        "quick": args.quick,
        "python": sys.version.split()[0],
        "optuna": optuna.__version__,
        "cpus": os.cpu_count(),
    }
    start = time.perf_counter()
    for name in names:
        measure, show = PARTS[name]
        part_start = time.perf_counter()
        results[name] = measure(sizes)
        results[name]["part_seconds"] = time.perf_counter() - part_start
        show(results[name])
        sys.stdout.flush()
    results["total_seconds"] = time.perf_counter() - start
    print(f"\ntotal wall time: {results['total_seconds']:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
