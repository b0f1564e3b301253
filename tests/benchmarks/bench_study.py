"""Benchmark: the trial runner's overhead per trial, its scaling to two workers, and start-up.

Every figure comes from ``python -m hpo`` run as a subprocess, as a user runs it, on a fresh
SQLite file in a temporary directory, and is judged beside a reference measured in the same run:

1. overhead: what a trial costs beyond its training (storage, sampler, pruning thresholds,
   processes), with one worker process and, side by side, ``--in-process``. The same spec and
   seed run twice, to N_short and to N_long trials; start-up and shut-down cancel in the
   difference, so the overhead per trial is ((T_long - T_short) - (train_long - train_short)) /
   (N_long - N_short), where T is the command's wall time and train the sum of its trials'
   ``train_seconds`` (the trainer's own clock, read back from the storage). It is shown as a
   share of the mean training time of those trials, for the packaged default study (TPE, median
   pruner: most later trials stop at epoch 3) and for a variant whose every trial trains about
   1 s (three hidden layers of 300, no pruner: with the median pruner most of trials 6-11 would
   stop at epoch 3). Each pair runs ``--repeats`` times, interleaved; the median is judged, the
   spread shown.
2. scaling: finished trials per minute with ``--workers 2`` against ``--workers 1``, by the same
   difference, with ``--sampler random --pruner none`` so that both runs train the same
   configurations (the random sampler is seeded by the trial's number) to all their epochs.
   The CPU seconds of the orchestrator process and of its workers come from the exited process's
   ``/proc/PID/stat`` (its own time, and its reaped children's). Beside it, the machine's own
   ceiling: two bare processes training the default net side by side (no orchestrator, storage
   or pipe) against one alone; on a 2-core VM two processes do not quite run as fast as one.
3. startup: ``python -m hpo --help`` against a bare ``python -c pass``; ``python -m hpo studies``
   and ``python -m hpo best --json`` on a storage holding a 1,000-trial study (built first with
   ``hpo run`` on a tiny spec, 1 epoch of an 8-unit net, 2 workers), against the same commands on
   a 10-trial study and against Optuna alone doing the same reads (its floor: opening the storage
   and reading every trial, or the best). Medians of 5 runs, interleaved.

The figures assume an otherwise idle machine of at least two cores. Each measurement (a short
and long pair, a round of start-up commands) waits, up to 3 minutes, for other processes to leave
the CPUs idle, and is taken again (three times at most, the least disturbed kept) when they used
more than 15 % of the CPUs meanwhile; each table says the worst share it kept. A failed target
prints FAIL; the exit code is 0 unless a command itself failed (it is a measurement, not a test).

Run: ``python tests/benchmarks/bench_study.py [--part overhead|scaling|startup|all]
[--repeats 3]`` (about 9 minutes on 2 idle cores: overhead 4, scaling 3, startup 2). Not a
pytest test: the default pytest run ignores ``tests/benchmarks``.
"""

import argparse
import hashlib
import itertools
import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

# Run as a script, the file's own directory is on sys.path, not the repository's root.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from hpo.records import run_facts  # noqa: E402
from hpo.storage import close_storages, open_storage  # noqa: E402
from tests.hpo.conftest import write_spec  # noqa: E402

TARGET_OVERHEAD_DEFAULT = 0.10
"""One worker process may add at most this share of the default study's training time..."""
TARGET_OVERHEAD_LONG = 0.02
"""...and of the training time of trials of about 1 s."""
TARGET_SPEEDUP = 1.9
"""Two workers on two cores should finish trials at least this many times as fast as one."""
TARGET_HELP_SECONDS = 0.3
"""``python -m hpo --help`` should answer within this many seconds..."""
TARGET_READ_SECONDS = 1.0
"""...and ``studies`` and ``best --json`` on a 1,000-trial study within this many."""

STUDY = "bench"
"""Every benchmark study's name (each lives in its own SQLite file)."""
SEED = 0
STORAGE_NUMBERS = itertools.count()
COMMAND_TIMEOUT = 600.0
"""Seconds after which a command is killed: a hung run is a failure, not a long measurement."""
STARTUP_RUNS = 5
BIG_STUDY_TRIALS = 1000
SMALL_STUDY_TRIALS = 10
BUSY_SHARE = 0.15
"""A measurement during which other processes used more of the CPUs than this is disturbed: it
is taken again, and marked if it stays so."""
ATTEMPTS = 3
QUIET_WAIT_SECONDS = 180.0
T = TypeVar("T")

LONG_TRIAL_HIDDEN = "[300, 300, 300]"
"""Hidden layers that make a 30-epoch trial of the default study train about 1 s."""


class BenchmarkError(RuntimeError):
    """A command the benchmark runs failed: its figures would mean nothing."""


# ---------------------------------------------------------------------------------------------
# Running a command


@dataclass(frozen=True)
class Timed:
    """One finished command: its wall time, the CPU seconds of its own process and of the
    children it reaped (NaN where /proc is not available), and its output."""

    wall: float
    own_cpu: float
    children_cpu: float
    output: str


def run_command(argv: Sequence[str]) -> Timed:
    """Run ``argv`` from the repository's root (so that ``-m hpo`` is this checkout's) and time
    it from the fork to the exit.

    The process is waited for without being reaped (``WNOWAIT``), so that its ``/proc`` entry
    still holds its CPU times, then reaped. Raises BenchmarkError on a non-zero exit.
    """
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        watchdog = threading.Timer(COMMAND_TIMEOUT, process.kill)
        watchdog.start()
        try:
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
            wall = time.perf_counter() - start
            own, children = exited_cpu_seconds(process.pid)
        finally:
            watchdog.cancel()
            code = process.wait()
        out.seek(0)
        output = out.read().decode(errors="replace")
    if code != 0:
        raise BenchmarkError(f"{shlex.join(argv)} exited with {code}:\n{output[-3000:]}")
    return Timed(wall, own, children, output)


def exited_cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children's) user + system CPU seconds of the exited, unreaped ``pid``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
    except (OSError, IndexError):
        return math.nan, math.nan
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(x) / tick for x in fields[11:15])
    return utime + stime, cutime + cstime


def hpo(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo", *args]


def shown(argv: Sequence[str], tmp: Path) -> str:
    """``argv`` as a reader would type it: ``python`` for this interpreter, TMP for the temp dir."""
    text = shlex.join(["python", *argv[1:]]) if argv[0] == sys.executable else shlex.join(argv)
    return text.replace(str(tmp), "TMP")


OWN_PIDS: set[int] = set()
"""Processes that are part of the measurement without being reaped children of this one (a
benchmark's Dask cluster): the meter counts their CPU as its own."""


def live_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the running process ``pid`` so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class CpuMeter:
    """The share of the machine's CPU time that processes other than this one, its children and
    ``OWN_PIDS`` used since the meter started (from ``/proc/stat``; steal counts as busy)."""

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
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_seconds() -> float:
        # Children count once reaped; every command here is reaped before the meter is read.
        usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return sum(u.ru_utime + u.ru_stime for u in usage) + sum(map(live_cpu_seconds, OWN_PIDS))

    def other_share(self) -> float:
        capacity = (time.perf_counter() - self.start) * (os.cpu_count() or 1)
        other = (self._busy_seconds() - self.busy) - (self._own_seconds() - self.own)
        return max(0.0, other / capacity)


def wait_for_quiet() -> None:
    """Wait until other processes leave the CPUs idle for 3 s in a row, at most
    ``QUIET_WAIT_SECONDS`` (then measure anyway: the table says how disturbed it was)."""
    start = time.perf_counter()
    quiet = 0
    while quiet < 3 and time.perf_counter() - start < QUIET_WAIT_SECONDS:
        meter = CpuMeter()
        time.sleep(1.0)
        quiet = quiet + 1 if not meter.other_share() > BUSY_SHARE else 0
    waited = time.perf_counter() - start
    if waited > 5:
        log(f"waited {waited:.0f} s for other processes to leave the CPUs idle")


def measure_quietly(measure: Callable[[], T]) -> tuple[T, float]:
    """``measure()`` on a quiet machine: after ``wait_for_quiet``, and again (``ATTEMPTS`` in
    all) while other processes used more than ``BUSY_SHARE`` of the CPUs meanwhile. Returns the
    least disturbed result and that share."""
    best: tuple[T, float] | None = None
    for attempt in range(1, ATTEMPTS + 1):
        wait_for_quiet()
        meter = CpuMeter()
        result = measure()
        share = meter.other_share()
        if best is None or share < best[1]:
            best = (result, share)
        if not share > BUSY_SHARE:
            break
        if attempt < ATTEMPTS:
            log(f"other processes used {share:.0%} of the CPUs meanwhile: measuring again")
    return best


def disturbance(shares: Sequence[float]) -> str:
    """What the tables say about the other processes' share of the CPUs while they measured."""
    known = [x for x in shares if not math.isnan(x)]
    if not known:
        return "other processes' CPU use unknown (no /proc/stat)"
    worst = max(known)
    note = "  (DISTURBED: figures unreliable)" if worst > BUSY_SHARE else ""
    return f"other processes used at most {worst:.0%} of the CPUs while measuring{note}"


# ---------------------------------------------------------------------------------------------
# Studies, and the difference between a short and a long run


@dataclass(frozen=True)
class StudyRun:
    """One ``hpo run`` to ``trials`` finished trials on a fresh storage, and what it stored."""

    trials: int
    wall: float
    orchestrator_cpu: float
    workers_cpu: float
    params: dict[int, dict]  # by trial number, as every dict below
    train: dict[int, float]  # train_seconds
    completed: dict[int, float]  # when the trial was told, in seconds of the storage's clock

    @property
    def train_seconds(self) -> float:
        return sum(self.train.values())


def run_study(
    spec: str, *, trials: int, options: Sequence[str], tmp: Path, url: str | None = None
) -> StudyRun:
    """``python -m hpo run SPEC --trials N OPTIONS`` on a new storage: ``url``, which must hold
    no study yet, or else a new SQLite file in ``tmp`` (removed after); its trials read back."""
    path = None
    if url is None:
        path = tmp / f"study-{next(STORAGE_NUMBERS)}.db"
        url = f"sqlite:///{path}"
    argv = hpo(
        "run", spec, "--trials", str(trials), "--seed", str(SEED), "--storage", url,
        "--study", STUDY, "--no-report", "--quiet", *options,
    )  # fmt: skip
    timed = run_command(argv)
    try:
        study = optuna.load_study(study_name=STUDY, storage=open_storage(url, write=False))
        stored = study.get_trials(deepcopy=False)
    finally:
        close_storages()
    finished = [t for t in stored if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if len(finished) != trials or len(stored) != trials:
        states = sorted(t.state.name for t in stored)
        raise BenchmarkError(f"{shlex.join(argv)}: {trials} finished trials expected, got {states}")
    for suffix in ("", "-wal", "-shm", ".hpo-lock") if path is not None else ():
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return StudyRun(
        trials=trials,
        wall=timed.wall,
        orchestrator_cpu=timed.own_cpu,
        workers_cpu=timed.children_cpu,
        params={t.number: dict(t.params) for t in finished},
        train={t.number: float(run_facts(t)["train_seconds"]) for t in finished},
        completed={t.number: t.datetime_complete.timestamp() for t in finished},
    )


@dataclass(frozen=True)
class Marginal:
    """The trials a long run has beyond a short one: N_long - N_short trials, and their cost."""

    trials: int
    wall: float
    train: float
    orchestrator_cpu: float
    workers_cpu: float
    same_trials: bool  # the short run's trials are the long run's first ones
    in_run_overhead_per_trial: float
    """The same overhead from the long run alone: the time from the tell of its trial
    N_short - 1 to that of its last trial, less those trials' training, per trial (one trial at
    a time, trials are told in order; a cross-check free of start-up noise)."""

    @classmethod
    def between(cls, short: StudyRun, long: StudyRun) -> "Marginal":
        first, last = short.trials - 1, long.trials - 1
        marginal_train = sum(long.train[n] for n in range(short.trials, long.trials))
        in_run = long.completed[last] - long.completed[first] - marginal_train
        return cls(
            trials=long.trials - short.trials,
            wall=long.wall - short.wall,
            train=long.train_seconds - short.train_seconds,
            orchestrator_cpu=long.orchestrator_cpu - short.orchestrator_cpu,
            workers_cpu=long.workers_cpu - short.workers_cpu,
            same_trials=all(long.params.get(n) == p for n, p in short.params.items()),
            in_run_overhead_per_trial=in_run / (long.trials - short.trials),
        )

    @property
    def overhead_per_trial(self) -> float:
        return (self.wall - self.train) / self.trials

    @property
    def train_per_trial(self) -> float:
        return self.train / self.trials

    @property
    def overhead_share(self) -> float:
        return (self.wall - self.train) / self.train

    def idle_per_trial(self, workers: int) -> float:
        """Seconds per trial that the ``workers`` spent not training (waiting, starting up
        a trial, passing it back), or, for one worker, the overhead per trial."""
        return (workers * self.wall - self.train) / self.trials

    @property
    def trials_per_minute(self) -> float:
        return 60 * self.trials / self.wall

    @property
    def non_training_cpu_per_trial(self) -> float:
        """CPU seconds per trial of both processes beyond the training's (one BLAS thread:
        training time is CPU time)."""
        return (self.orchestrator_cpu + self.workers_cpu - self.train) / self.trials


def measure_marginal(
    spec: str, *, short: int, long: int, options: Sequence[str], tmp: Path
) -> Marginal:
    first = run_study(spec, trials=short, options=options, tmp=tmp)
    second = run_study(spec, trials=long, options=options, tmp=tmp)
    return Marginal.between(first, second)


# ---------------------------------------------------------------------------------------------
# Tables


def median_and_spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}, {fmt(max(values))}]"


def percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def ms(x: float) -> str:
    return f"{1000 * x:.0f}"


def seconds(x: float) -> str:
    return f"{x:.3f}"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for r in [header, *rows]:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@dataclass(frozen=True)
class Verdict:
    figure: str
    value: str
    target: str
    ok: bool

    @property
    def result(self) -> str:
        return "PASS" if self.ok else "FAIL"


VERDICTS: list[Verdict] = []


def judge(figure: str, value: str, target: str, ok: bool) -> str:
    VERDICTS.append(Verdict(figure, value, target, ok))
    return VERDICTS[-1].result


# ---------------------------------------------------------------------------------------------
# 1. Overhead


def long_trial_spec(tmp: Path, hidden: str = LONG_TRIAL_HIDDEN, name: str = "default-1s") -> Path:
    """The default study with ``hidden`` layers (three 300-wide: ~1 s per trial) and no
    pruner, written to ``tmp/NAME.toml``."""
    text = (REPO_ROOT / "studies" / "default.toml").read_text(encoding="utf-8")
    for old, new in (
        ("hidden = [100, 100, 100]", f"hidden = {hidden}"),
        ('pruner = "median"', 'pruner = "none"'),
    ):
        if text.count(old) != 1:
            raise BenchmarkError(f"studies/default.toml: expected one {old!r} to replace")
        text = text.replace(old, new)
    path = tmp / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


EXECUTORS = (("1 worker process", ()), ("--in-process", ("--in-process",)))


def part_overhead(tmp: Path, repeats: int) -> None:
    cases = (
        ("default (TPE, median pruner)", "default", 10, 40, TARGET_OVERHEAD_DEFAULT),
        ("~1-s trials (3x300, no pruner)", str(long_trial_spec(tmp)), 6, 12, TARGET_OVERHEAD_LONG),
    )
    results: dict[tuple[int, int], list[Marginal]] = {}
    shares = []
    for repeat in range(repeats):
        for c, (label, spec, short, long, _) in enumerate(cases):
            for e, (executor, options) in enumerate(EXECUTORS):
                log(f"overhead {repeat + 1}/{repeats}: {label}, {executor}, {short} and {long}")
                marginal, share = measure_quietly(
                    lambda s=spec, n=short, m=long, o=options: measure_marginal(
                        s, short=n, long=m, options=o, tmp=tmp
                    )
                )
                results.setdefault((c, e), []).append(marginal)
                shares.append(share)
    rows = []
    for c, (label, _, short, long, target) in enumerate(cases):
        for e, (executor, _) in enumerate(EXECUTORS):
            m = results[c, e]
            share = [x.overhead_share for x in m]
            judged = e == 0  # --in-process is the reference, not a target
            result = "-"
            if judged:
                result = judge(
                    f"overhead, {label}, {executor}",
                    percent(statistics.median(share)),
                    f"<= {percent(target)}",
                    statistics.median(share) <= target,
                )
            rows.append(
                (
                    label if e == 0 else "",
                    executor,
                    f"{short} -> {long}",
                    median_and_spread([x.train_per_trial for x in m], seconds),
                    median_and_spread([x.overhead_per_trial for x in m], ms),
                    median_and_spread(share, percent),
                    median_and_spread([x.in_run_overhead_per_trial for x in m], ms),
                    median_and_spread([x.orchestrator_cpu / x.trials for x in m], ms),
                    median_and_spread([x.non_training_cpu_per_trial for x in m], ms),
                    "yes" if all(x.same_trials for x in m) else "NO",
                    f"<= {percent(target)}" if judged else "(reference)",
                    result,
                )
            )
    print_table(
        f"1. Overhead per trial beyond training, SQLite, by difference of a short and a long run "
        f"(median [min, max] of {repeats});\n   {disturbance(shares)}",
        (
            "study",
            "executor",
            "trials",
            "train s/trial",
            "overhead ms/trial",
            "overhead",
            "in-run check ms/trial",
            "orchestrator CPU ms/trial",
            "non-training CPU ms/trial",
            "same trials",
            "target",
            "result",
        ),
        rows,
    )
    print(
        "  overhead = ((T_long - T_short) - (train_long - train_short)) / (N_long - N_short), as "
        "a share of the\n  mean train_seconds of those trials. In-run check: the same from "
        "the long run's own tell times\n  (trial N_short - 1 to the last), free of start-up "
        "noise. With --in-process the orchestrator's\n  CPU includes the training; non-training "
        "CPU is both processes' CPU less train_seconds.\n  commands (each on a fresh storage):\n"
        f"    python -m hpo run SPEC --trials N --seed {SEED} --storage sqlite:///TMP/X.db "
        f"--study {STUDY} --no-report --quiet [--in-process]\n"
        "    SPEC: default, and TMP/default-1s.toml (studies/default.toml with hidden "
        f'{LONG_TRIAL_HIDDEN} and pruner = "none")'
    )


# ---------------------------------------------------------------------------------------------
# 2. Scaling


BARE_TRAINING = """
import os, sys, time
os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"
from hpo.trial import TrialTask, configuration, run_task, trial_seed
from hpo.pruning import NoPruning
from hpo.trial import load_study_split
from hpo.spec import load_spec
spec = load_spec("default")
split = load_study_split(spec)
params = dict(learning_rate=1e-3, weight_decay=1e-6, dropout_ratio=0.1, init_scale=1.0,
              optimizer="adam")
start = time.perf_counter()
for n in range(int(sys.argv[1])):
    run_task(TrialTask(n, configuration(spec, params), tuple(trial_seed(0, n).entropy),
                       NoPruning().thresholds(trial_number=n, finished=())), spec, split)
print(time.perf_counter() - start)
"""
"""Trains the default study's net, 30 epochs, argv[1] times, without hpo's orchestration."""
BARE_TRIALS = 16
"""About 5 s of training: shorter measurements of the ceiling varied from 1.6x to 2.0x."""


def bare_training_ceiling() -> float:
    """How many times the training of one process two processes side by side achieve on this
    machine, with no orchestrator, storage or pipe: the ceiling of any speedup of 2 workers."""
    argv = [sys.executable, "-c", BARE_TRAINING, str(BARE_TRIALS)]

    def timed(processes: int) -> float:
        running = [
            subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
            for _ in range(processes)
        ]
        outputs = [p.communicate(timeout=COMMAND_TIMEOUT)[0] for p in running]
        if any(p.returncode for p in running):
            raise BenchmarkError(f"the bare training failed: {outputs}")
        return max(float(out.split()[-1]) for out in outputs)

    alone = timed(1)
    return 2 * alone / timed(2)


def part_scaling(tmp: Path, repeats: int) -> None:
    short, long = 10, 60
    options = ("--sampler", "random", "--pruner", "none")
    results: dict[int, list[Marginal]] = {1: [], 2: []}
    params: dict[int, dict[int, dict]] = {}
    shares = []

    def pair(workers: int) -> tuple[StudyRun, StudyRun]:
        run_options = (*options, "--workers", str(workers))
        first = run_study("default", trials=short, options=run_options, tmp=tmp)
        return first, run_study("default", trials=long, options=run_options, tmp=tmp)

    ceilings = []
    for repeat in range(repeats):
        for workers in (1, 2):
            log(f"scaling {repeat + 1}/{repeats}: {workers} worker(s), {short} and {long} trials")
            (first, second), share = measure_quietly(lambda w=workers: pair(w))
            results[workers].append(Marginal.between(first, second))
            params[workers] = second.params
            shares.append(share)
        log(f"scaling {repeat + 1}/{repeats}: the ceiling, 2 bare trainings side by side and 1")
        ceiling, share = measure_quietly(bare_training_ceiling)
        ceilings.append(ceiling)
        shares.append(share)
    same = sum(params[1][n] == params[2].get(n) for n in params[1])
    speedups = [
        two.trials_per_minute / one.trials_per_minute
        for one, two in zip(results[1], results[2], strict=True)
    ]
    rows = []
    for workers, m in results.items():
        rows.append(
            (
                str(workers),
                median_and_spread([x.trials_per_minute for x in m], lambda v: f"{v:.0f}"),
                median_and_spread([x.train_per_trial for x in m], seconds),
                median_and_spread([x.orchestrator_cpu / x.trials for x in m], ms),
                median_and_spread([x.workers_cpu / x.trials for x in m], ms),
                median_and_spread([x.idle_per_trial(workers) for x in m], ms),
            )
        )
    print_table(
        f"2. Scaling: finished trials per minute of trials {short}-{long - 1}, default spec "
        f"with --sampler random --pruner none, SQLite\n   (median [min, max] of {repeats}); "
        f"{disturbance(shares)}",
        (
            "workers",
            "trials/min",
            "train s/trial",
            "orchestrator CPU ms/trial",
            "workers CPU ms/trial",
            "workers not training, ms/trial",
        ),
        rows,
    )
    speedup = statistics.median(speedups)
    print_table(
        "",
        ("figure", "value", "target", "result"),
        [
            (
                "speedup, 2 workers over 1",
                median_and_spread(speedups, lambda v: f"{v:.2f}x"),
                f">= {TARGET_SPEEDUP}x",
                judge(
                    "speedup, 2 workers over 1",
                    f"{speedup:.2f}x",
                    f">= {TARGET_SPEEDUP}x",
                    speedup >= TARGET_SPEEDUP,
                ),
            ),
            (
                "ceiling: 2 bare trainings side by side over 1 (no hpo)",
                median_and_spread(ceilings, lambda v: f"{v:.2f}x"),
                "(reference)",
                "",
            ),
            (
                "speedup as a share of the ceiling of the same repeat",
                median_and_spread(
                    [x / c for x, c in zip(speedups, ceilings, strict=True)], percent
                ),
                "",
                "",
            ),
            ("same configurations in both runs", f"{same} of {len(params[1])} trials", "all", ""),
        ],
    )
    print(
        "  train s/trial with 2 workers includes the two processes' contention for the cores "
        "and memory;\n  workers CPU includes each worker's start (it cancels in the difference)."
        f"\n  commands: python -m hpo run default --trials {short}|{long} --seed {SEED} "
        f"--sampler random --pruner none --workers 1|2\n            --storage "
        f"sqlite:///TMP/X.db --study {STUDY} --no-report --quiet"
    )


# ---------------------------------------------------------------------------------------------
# 3. Start-up


def time_commands(
    commands: dict[str, list[str]], *, runs: int, check: dict[str, Callable[[str], None]]
) -> tuple[dict[str, list[float]], list[float]]:
    """Each command ``runs`` times, interleaved, after one untimed run each (warm caches); the
    wall times by command, and the other processes' CPU share during each round."""
    walls: dict[str, list[float]] = {k: [] for k in commands}
    shares = []
    for k, argv in commands.items():
        output = run_command(argv).output
        if k in check:
            check[k](output)
    for _ in range(runs):
        round_walls, share = measure_quietly(
            lambda: {k: run_command(argv).wall for k, argv in commands.items()}
        )
        for k, wall in round_walls.items():
            walls[k].append(wall)
        shares.append(share)
    return walls, shares


OPTUNA_READ_ALL = """
import sys, optuna
storage = optuna.storages.RDBStorage(sys.argv[1], skip_table_creation=True)
for name in optuna.get_all_study_names(storage):
    len(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False))
"""
"""The floor of ``hpo studies``: Optuna alone opening the storage and reading every trial (the
counts by state need them all; no public API counts them)."""
OPTUNA_BEST = """
import sys, optuna
print(optuna.load_study(study_name=sys.argv[2], storage=sys.argv[1]).best_trial.number)
"""
"""The floor of ``hpo best --json``: Optuna alone opening the storage and reading the best."""


def check_best_json(output: str) -> None:
    summary = json.loads(output)
    if "trial" not in summary:
        raise BenchmarkError(f"best --json printed no trial: {output[:200]}")


def check_studies(output: str) -> None:
    if STUDY not in output:
        raise BenchmarkError(f"studies did not list {STUDY!r}: {output[:300]}")


def build_study(tmp: Path, spec: Path, trials: int) -> tuple[str, float]:
    """A storage holding a ``trials``-trial study; its URL and the seconds it took to build."""
    url = f"sqlite:///{tmp / f'tiny-{trials}.db'}"
    argv = hpo(
        "run", str(spec), "--trials", str(trials), "--sampler", "random", "--workers", "2",
        "--seed", str(SEED), "--storage", url, "--study", STUDY, "--no-report", "--quiet",
    )  # fmt: skip
    return url, run_command(argv).wall


def part_startup(tmp: Path, repeats: int) -> None:
    # The tests' tiny spec with one epoch of an 8-unit net: trials of milliseconds, to fill a
    # storage fast.
    spec = write_spec(tmp / "tiny.toml", epochs=1, sampler="random", trials=BIG_STUDY_TRIALS)
    spec.write_text(spec.read_text().replace("hidden = [16]", "hidden = [8]"))
    log(f"startup: building a {BIG_STUDY_TRIALS}-trial study (tiny spec, 2 workers)")
    big, big_seconds = build_study(tmp, spec, BIG_STUDY_TRIALS)
    small, _ = build_study(tmp, spec, SMALL_STUDY_TRIALS)
    log(f"startup: {STARTUP_RUNS} runs of each command")
    commands = {
        "pass": [sys.executable, "-c", "pass"],
        "help": hpo("--help"),
        "studies big": hpo("studies", "--storage", big),
        "studies small": hpo("studies", "--storage", small),
        "best big": hpo("best", "--json", "--storage", big),
        "best small": hpo("best", "--json", "--storage", small),
        "optuna studies big": [sys.executable, "-c", OPTUNA_READ_ALL, big],
        "optuna best big": [sys.executable, "-c", OPTUNA_BEST, big, STUDY],
    }
    walls, shares = time_commands(
        commands,
        runs=STARTUP_RUNS,
        check={
            "best big": check_best_json,
            "best small": check_best_json,
            "studies big": check_studies,
        },
    )
    median = {k: statistics.median(v) for k, v in walls.items()}

    references = {
        "pass": "python -c pass",
        "studies small": f"the same on {SMALL_STUDY_TRIALS} trials",
        "best small": f"the same on {SMALL_STUDY_TRIALS} trials",
        "optuna studies big": "Optuna alone reading every trial",
        "optuna best big": "Optuna alone: load_study().best_trial",
    }

    def row(key: str, reference: str | None, target: float | None) -> tuple[str, ...]:
        beyond = "-" if reference is None else f"+{median[key] - median[reference]:.3f}"
        result = "-"
        if target is not None:
            result = judge(
                shown(commands[key], tmp), f"{median[key]:.3f} s", f"<= {target} s",
                median[key] <= target,
            )  # fmt: skip
        return (
            shown(commands[key], tmp),
            median_and_spread(walls[key], seconds),
            "-" if reference is None else references[reference],
            beyond,
            "-" if target is None else f"<= {target} s",
            result,
        )

    print_table(
        f"3. Start-up: wall seconds, median [min, max] of {STARTUP_RUNS} (after one warm-up run); "
        f"{disturbance(shares)}\n   TMP/tiny-{BIG_STUDY_TRIALS}.db: {BIG_STUDY_TRIALS} trials "
        f"of the tiny spec, built by hpo run --workers 2 in {big_seconds:.0f} s "
        f"({BIG_STUDY_TRIALS / big_seconds:.0f} trials/s, start-up included)",
        ("command", "wall s", "reference", "beyond reference s", "target", "result"),
        [
            row("pass", None, None),
            row("help", "pass", TARGET_HELP_SECONDS),
            row("studies small", "pass", None),
            row("studies big", "studies small", TARGET_READ_SECONDS),
            row("best small", "pass", None),
            row("best big", "best small", TARGET_READ_SECONDS),
            row("optuna studies big", "pass", None),
            row("studies big", "optuna studies big", None),
            row("optuna best big", "pass", None),
            row("best big", "optuna best big", None),
        ],
    )
    print(
        f"  TMP/tiny-N.db built by: python -m hpo run TMP/tiny.toml --trials N --sampler random "
        f"--workers 2 --seed {SEED}\n    --storage sqlite:///TMP/tiny-N.db --study {STUDY} "
        f"--no-report --quiet   (N = {SMALL_STUDY_TRIALS}, {BIG_STUDY_TRIALS}; tiny.toml: the "
        "tests' tiny spec, epochs = 1, hidden = [8])"
    )


# ---------------------------------------------------------------------------------------------
# Main


PARTS: dict[str, Callable[[Path, int], None]] = {
    "overhead": part_overhead,
    "scaling": part_scaling,
    "startup": part_startup,
}


def code_version() -> str:
    """The code measured: the checkout's commit, and a digest of any uncommitted change to
    ``hpo/``, ``trainer/`` or ``studies/`` (another engineer may be editing them)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, check=True)
        return done.stdout.decode(errors="replace")

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        diff = git("diff", "HEAD", "--", "hpo", "trainer", "studies")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    if not diff:
        return head
    return f"{head} with uncommitted changes {hashlib.sha1(diff.encode()).hexdigest()[:8]}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        metavar="N",
        help="short/long pairs per overhead and scaling figure (default 3; the median is judged)",
    )
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = list(PARTS) if args.part == "all" else [args.part]
    version = code_version()
    print(
        f"bench_study: code {version}, python {sys.version.split()[0]}, optuna "
        f"{optuna.__version__}, {os.cpu_count()} CPUs, parts: {', '.join(names)}"
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_study-") as tmp:
        if not run_parts(names, lambda name: PARTS[name](Path(tmp), args.repeats)):
            return 1
    print_verdicts(start=start, version=version)
    return 0


def run_parts(names: Sequence[str], run: Callable[[str], None]) -> bool:
    """``run(name)`` for each part in turn; False after the first that raised BenchmarkError."""
    for name in names:
        try:
            run(name)
        except BenchmarkError as e:
            print(f"\n{name}: error: {e}", file=sys.stderr)
            return False
        sys.stdout.flush()
    return True


def print_verdicts(*, start: float, version: str) -> None:
    """The table of every target judged since ``start``, and a warning if the code changed."""
    print_table(
        f"Targets (total wall time {time.perf_counter() - start:.0f} s)",
        ("figure", "value", "target", "result"),
        [(v.figure, v.value, v.target, v.result) for v in VERDICTS],
    )
    failed = sum(not v.ok for v in VERDICTS)
    print(f"\n{len(VERDICTS) - failed} PASS, {failed} FAIL")
    if code_version() != version:
        print(f"WARNING: the code changed during the run ({version} -> {code_version()})")


if __name__ == "__main__":
    sys.exit(main())
