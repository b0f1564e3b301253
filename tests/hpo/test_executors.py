"""Executors: a trial trains alike in this process and in a worker process; workers that die,
are interrupted or are shut down lose no more than their own trial.

Worker processes are spawned (~1 s each), so the tests that leave their executor as they found it
share one two-worker executor; those that kill a worker or shut one down start their own.
Trials last as long as their thresholds make them: ``Sleepy`` waits after every epoch.
"""

import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace

import pytest

from hpo.executors import (
    BLAS_THREAD_VARIABLES,
    ONE_BLAS_THREAD,
    InlineExecutor,
    LocalProcessExecutor,
    TrialFailed,
    WorkerLost,
    environment,
    sigint_blocked,
)
from hpo.pruning import NeverPrune, Thresholds
from hpo.spec import load_spec
from hpo.trial import COMPLETE, PRUNED, TrialTask, configuration, load_study_split, run_task
from tests.hpo.conftest import write_spec

RESULT_TIMEOUT = 30  # seconds: far more than any trial here needs, on a busy machine too


@dataclass(frozen=True)
class PruneAt(Thresholds):
    """Stop the trial at ``epoch``."""

    epoch: int

    def should_prune(self, values) -> bool:
        return max(values) >= self.epoch


@dataclass(frozen=True)
class Sleepy(Thresholds):
    """Never prune, but wait ``seconds`` after every epoch: a trial as long as a test needs."""

    seconds: float

    def should_prune(self, values) -> bool:
        time.sleep(self.seconds)
        return False


@dataclass(frozen=True)
class Exploding(Thresholds):
    """Raise at the first epoch's report, as a bug in the trial would."""

    def should_prune(self, values) -> bool:
        raise ValueError(f"thresholds exploded at epoch {max(values)}")


@pytest.fixture(scope="module")
def spec_and_split(tmp_path_factory):
    spec = load_spec(str(write_spec(tmp_path_factory.mktemp("spec") / "tiny.toml")))
    return spec, load_study_split(spec)


@pytest.fixture(scope="module")
def shared_executor(spec_and_split):
    """Two workers for the tests that kill none and shut none down."""
    executor = LocalProcessExecutor(*spec_and_split, workers=2)
    yield executor
    executor.shutdown(cancel=True)


@pytest.fixture
def fresh_executor(spec_and_split):
    """One worker of this test's own."""
    executor = LocalProcessExecutor(*spec_and_split, workers=1)
    yield executor
    executor.shutdown(cancel=True)


@pytest.fixture(params=["inline", "local processes"])
def executor(request, spec_and_split):
    """Every executor, for the behaviours they share."""
    if request.param == "inline":
        return InlineExecutor(*spec_and_split)
    return request.getfixturevalue("shared_executor")


def task(spec, number=0, *, thresholds=None, **params) -> TrialTask:
    params = {"learning_rate": 0.05, "optimizer": "adam", **params}
    return TrialTask(number, configuration(spec, params), (0, number), thresholds or NeverPrune())


def without_timings(result) -> tuple:
    """A result minus what the clock decides."""
    facts = {k: v for k, v in result.facts.items() if k != "train_seconds"}
    return result.number, result.state, result.value, result.intermediate_values, facts


def process_exists(pid: int) -> bool:
    """Whether ``pid`` is a process, a zombie (dead, not yet reaped) included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def started_events(count: int) -> tuple[list[threading.Event], object]:
    """Events set as each task numbered 0..count-1 leaves the queue, and the before_start
    that sets them (and changes nothing)."""
    events = [threading.Event() for _ in range(count)]

    def before_start(t: TrialTask) -> TrialTask:
        events[t.number].set()
        return t

    return events, before_start


def warm_up(executor: LocalProcessExecutor, spec) -> None:
    """One quick trial on every worker: afterwards each runs ``worker_main``'s loop."""
    futures = [executor.submit(task(spec, n)) for n in range(executor.slots)]
    for f in futures:
        f.result(timeout=RESULT_TIMEOUT)


# ---------------------------------------------------------------------------------------------
# What every executor does


def test_an_executor_returns_what_run_task_returns(executor, spec_and_split):
    spec, split = spec_and_split
    tasks = [task(spec, 0), task(spec, 1, optimizer="sgd", dropout_ratio=0.2)]
    expected = [without_timings(run_task(t, spec, split)) for t in tasks]
    futures = [executor.submit(t) for t in tasks]
    results = [f.result(timeout=RESULT_TIMEOUT) for f in futures]
    assert [without_timings(r) for r in results] == expected
    assert [r.state for r in results] == [COMPLETE, COMPLETE]
    assert all(r.seconds > 0 for r in results)


def test_the_task_before_start_returns_is_the_one_that_trains(executor, spec_and_split):
    spec, split = spec_and_split
    calls = []

    def prune_at_the_first_epoch(t: TrialTask) -> TrialTask:
        calls.append(t.number)
        return replace(t, thresholds=PruneAt(1))

    future = executor.submit(task(spec, 3), before_start=prune_at_the_first_epoch)
    result = future.result(timeout=RESULT_TIMEOUT)
    assert calls == [3]
    assert result.state == PRUNED and sorted(result.intermediate_values) == [1]
    expected = run_task(task(spec, 3, thresholds=PruneAt(1)), spec, split)
    assert without_timings(result) == without_timings(expected)


# ---------------------------------------------------------------------------------------------
# In this process


def test_inline_a_raising_task_fails_its_future_with_the_exception_itself(spec_and_split):
    spec, split = spec_and_split
    future = InlineExecutor(spec, split).submit(task(spec, thresholds=Exploding()))
    error = future.exception(timeout=0)
    assert type(error) is ValueError and str(error) == "thresholds exploded at epoch 1"


# ---------------------------------------------------------------------------------------------
# Worker processes: the queue


def test_tasks_beyond_the_workers_wait_and_each_leaves_the_queue_once(
    shared_executor, spec_and_split
):
    spec, split = spec_and_split
    n = 2 * shared_executor.slots + 1
    futures: list[concurrent.futures.Future] = []
    starts: list[tuple[int, int]] = []  # (task, how many tasks were done as it left the queue)

    def before_start(t: TrialTask) -> TrialTask:
        starts.append((t.number, sum(f.done() for f in futures)))
        return t

    tasks = [task(spec, i, thresholds=Sleepy(0.05)) for i in range(n)]  # ~0.15 s each
    for t in tasks:  # a task's own future may be missing as it starts: it is not done either
        futures.append(shared_executor.submit(t, before_start=before_start))
    results = [f.result(timeout=RESULT_TIMEOUT) for f in futures]
    assert [r.number for r in results] == list(range(n))
    assert all(r.state == COMPLETE for r in results)
    assert [number for number, _ in starts] == list(range(n))  # once each, in order
    for number, done in starts:
        # Task i starts once a worker is free: with 2 workers, when i - 1 have finished.
        assert done >= number - (shared_executor.slots - 1), starts
    expected = run_task(tasks[-1], spec, split)
    assert without_timings(results[-1]) == without_timings(expected)


def test_a_raising_task_fails_with_trial_failed_and_its_last_traceback_line(
    shared_executor, spec_and_split
):
    spec, _ = spec_and_split
    future = shared_executor.submit(task(spec, thresholds=Exploding()))
    error = future.exception(timeout=RESULT_TIMEOUT)
    assert type(error) is TrialFailed
    assert str(error) == "ValueError: thresholds exploded at epoch 1"


def test_a_raising_task_keeps_its_worker(shared_executor, spec_and_split):
    spec, _ = spec_and_split
    warm_up(shared_executor, spec)
    before = shared_executor.pids()
    failed = [shared_executor.submit(task(spec, n, thresholds=Exploding())) for n in range(2)]
    for f in failed:
        assert isinstance(f.exception(timeout=RESULT_TIMEOUT), TrialFailed)
    assert shared_executor.submit(task(spec)).result(timeout=RESULT_TIMEOUT).state == COMPLETE
    assert shared_executor.pids() == before


def test_a_before_start_that_raises_fails_only_its_own_task(shared_executor, spec_and_split):
    spec, _ = spec_and_split

    def broken(t: TrialTask) -> TrialTask:
        raise LookupError("no thresholds for you")

    bad = shared_executor.submit(task(spec, 0), before_start=broken)
    good = shared_executor.submit(task(spec, 1))
    assert isinstance(bad.exception(timeout=RESULT_TIMEOUT), LookupError)
    assert good.result(timeout=RESULT_TIMEOUT).number == 1


# ---------------------------------------------------------------------------------------------
# Worker processes: signals, environment


def test_workers_ignore_sigint_while_they_train(shared_executor, spec_and_split):
    spec, split = spec_and_split
    warm_up(shared_executor, spec)
    pids = shared_executor.pids()
    events, before_start = started_events(2)
    tasks = [task(spec, n, thresholds=Sleepy(0.2)) for n in range(2)]
    futures = [shared_executor.submit(t, before_start=before_start) for t in tasks]
    assert all(e.wait(timeout=RESULT_TIMEOUT) for e in events)
    time.sleep(0.1)  # inside the trials' sleeps
    for pid in pids:
        os.kill(pid, signal.SIGINT)
    results = [f.result(timeout=RESULT_TIMEOUT) for f in futures]
    assert [without_timings(r) for r in results] == [
        without_timings(run_task(t, spec, split)) for t in tasks
    ]
    assert shared_executor.pids() == pids


def test_a_worker_ignores_sigint_before_its_heavy_imports():
    # A spawned child imports its target's module while unpickling it: hpo.worker_boot, which
    # ignores SIGINT before it imports NumPy and the trainer (a Ctrl-C to the process group
    # meanwhile printed the child's traceback).
    probe = (
        "import sys, hpo.worker_boot; "
        "print(sorted(m for m in ('numpy', 'hpo.executors', 'trainer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert LocalProcessExecutor._start_worker.__code__.co_names.count("boot") == 1


def test_a_started_worker_ignores_sigint(spec_and_split, capfd):
    spec, split = spec_and_split
    executor = LocalProcessExecutor(spec, split, workers=1)
    try:
        (pid,) = executor.pids()
        deadline = time.monotonic() + RESULT_TIMEOUT
        while not sigint_ignored(pid) and time.monotonic() < deadline:
            time.sleep(0.001)
        for _ in range(10):  # through its imports and worker_main
            os.kill(pid, signal.SIGINT)
            time.sleep(0.05)
        result = executor.submit(task(spec)).result(timeout=RESULT_TIMEOUT)
        assert without_timings(result) == without_timings(run_task(task(spec), spec, split))
        assert executor.pids() == [pid]
    finally:
        executor.shutdown(cancel=True)
    assert "KeyboardInterrupt" not in capfd.readouterr().err


def sigint_ignored(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith("SigIgn:"))
    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))


def test_workers_train_with_one_blas_thread_and_this_process_keeps_its_setting(
    shared_executor, spec_and_split
):
    ours = {k: os.environ.get(k) for k in BLAS_THREAD_VARIABLES}
    for pid in shared_executor.pids():
        with open(f"/proc/{pid}/environ", "rb") as f:
            entries = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        for name in BLAS_THREAD_VARIABLES:
            assert entries[name.encode()] == str(ONE_BLAS_THREAD).encode(), (pid, name)
    assert {k: os.environ.get(k) for k in BLAS_THREAD_VARIABLES} == ours


def test_environment_sets_the_variables_then_restores_them(monkeypatch):
    monkeypatch.setenv("HPO_TEST_SET_BEFORE", "before")
    monkeypatch.delenv("HPO_TEST_UNSET_BEFORE", raising=False)
    with environment(HPO_TEST_SET_BEFORE="inside", HPO_TEST_UNSET_BEFORE="inside too"):
        assert os.environ["HPO_TEST_SET_BEFORE"] == "inside"
        assert os.environ["HPO_TEST_UNSET_BEFORE"] == "inside too"
    assert os.environ["HPO_TEST_SET_BEFORE"] == "before"
    assert "HPO_TEST_UNSET_BEFORE" not in os.environ


def test_environment_restores_the_variables_when_the_block_raises(monkeypatch):
    monkeypatch.setenv("HPO_TEST_SET_BEFORE", "before")
    monkeypatch.delenv("HPO_TEST_UNSET_BEFORE", raising=False)
    with (
        pytest.raises(KeyError),
        environment(HPO_TEST_SET_BEFORE="inside", HPO_TEST_UNSET_BEFORE="inside"),
    ):
        raise KeyError("the block failed")
    assert os.environ["HPO_TEST_SET_BEFORE"] == "before"
    assert "HPO_TEST_UNSET_BEFORE" not in os.environ


# ---------------------------------------------------------------------------------------------
# Worker processes: death and shutdown


def test_workers_must_be_at_least_one(spec_and_split):
    with pytest.raises(ValueError, match=r"'workers' parameter must be >= 1. Got 0."):
        LocalProcessExecutor(*spec_and_split, workers=0)


def test_a_worker_killed_while_training_fails_its_trial_and_is_replaced(
    fresh_executor, spec_and_split
):
    spec, split = spec_and_split
    events, before_start = started_events(1)
    lost = fresh_executor.submit(task(spec, 0, thresholds=Sleepy(10.0)), before_start=before_start)
    assert events[0].wait(timeout=RESULT_TIMEOUT)
    time.sleep(0.3)
    (killed,) = fresh_executor.pids()
    os.kill(killed, signal.SIGKILL)
    error = lost.exception(timeout=RESULT_TIMEOUT)
    assert type(error) is WorkerLost
    assert str(error) == (
        f"worker process {killed} died (exit code -{signal.SIGKILL}) while training trial #0"
    )
    result = fresh_executor.submit(task(spec, 1)).result(timeout=RESULT_TIMEOUT)
    assert without_timings(result) == without_timings(run_task(task(spec, 1), spec, split))
    (replacement,) = fresh_executor.pids()
    assert replacement != killed and process_exists(replacement)
    assert not process_exists(killed)


def test_shutdown_with_cancel_stops_a_worker_mid_trial_and_leaves_no_process(
    fresh_executor, spec_and_split
):
    spec, _ = spec_and_split
    events, before_start = started_events(1)
    training = fresh_executor.submit(
        task(spec, 0, thresholds=Sleepy(10.0)), before_start=before_start
    )
    assert events[0].wait(timeout=RESULT_TIMEOUT)
    time.sleep(0.3)
    (pid,) = fresh_executor.pids()
    start = time.monotonic()
    fresh_executor.shutdown(cancel=True)
    assert time.monotonic() - start < 3.0  # not the trial's 30 s, nor a 5-s join
    assert not process_exists(pid)  # dead and reaped
    # Its future says so at once, instead of staying RUNNING forever.
    with pytest.raises(WorkerLost, match="stopped by the shutdown"):
        training.result(timeout=0)


def test_shutdown_cancels_the_queued_tasks(fresh_executor, spec_and_split):
    spec, _ = spec_and_split
    events, before_start = started_events(1)
    fresh_executor.submit(task(spec, 0, thresholds=Sleepy(10.0)), before_start=before_start)
    queued = fresh_executor.submit(task(spec, 1))
    assert events[0].wait(timeout=RESULT_TIMEOUT)
    fresh_executor.shutdown(cancel=True)
    assert queued.cancelled()


def test_inline_submit_after_shutdown_raises(spec_and_split):
    spec, split = spec_and_split
    executor = InlineExecutor(spec, split)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="cannot submit a trial after shutdown"):
        executor.submit(task(spec))


def test_submit_after_shutdown_raises(fresh_executor, spec_and_split):
    spec, _ = spec_and_split
    (pid,) = fresh_executor.pids()
    fresh_executor.shutdown()
    assert not process_exists(pid)
    with pytest.raises(RuntimeError, match="cannot submit a trial after shutdown"):
        fresh_executor.submit(task(spec))


def _report_sigint_blocked(connection) -> None:
    connection.send(signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_a_process_spawned_with_sigint_blocked_starts_with_it_blocked():
    # What keeps a Ctrl-C during a worker's interpreter start-up pending until boot() ignores it.
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=_report_sigint_blocked, args=(theirs,))
    with sigint_blocked():
        process.start()
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # restored here
    assert ours.recv() is True
    process.join(30)


def test_a_booted_worker_ignores_sigint_and_no_longer_blocks_it(shared_executor, spec_and_split):
    warm_up(shared_executor, spec_and_split[0])  # booted: it has run a trial
    bit = 1 << (signal.SIGINT - 1)
    for pid in shared_executor.pids():
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        assert int(fields["SigIgn"], 16) & bit
        assert not int(fields["SigBlk"], 16) & bit


def test_a_worker_reports_each_epoch_of_the_trial_it_trains(shared_executor, spec_and_split):
    spec, _ = spec_and_split
    future = shared_executor.submit(task(spec, 7, thresholds=Sleepy(0.4)))
    seen: list[dict[int, int]] = []
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not future.done() and time.monotonic() < deadline:
        epochs = shared_executor.epochs()
        if epochs and (not seen or seen[-1] != epochs):
            seen.append(epochs)
        time.sleep(0.02)
    assert future.result(timeout=RESULT_TIMEOUT).state == COMPLETE
    assert seen[-3:] == [{7: 1}, {7: 2}, {7: 3}]  # the tiny spec's 3 epochs, each slept on
    assert shared_executor.epochs() == {}


def test_an_inline_executor_shows_no_epochs(spec_and_split):
    assert InlineExecutor(*spec_and_split).epochs() == {}


def test_an_executor_counts_the_trials_waiting_for_a_worker(tiny_spec):
    from hpo.executors import LocalProcessExecutor
    from hpo.pruning import NoPruning
    from hpo.spec import load_spec
    from hpo.trial import TrialTask, configuration, load_training_split, trial_seed

    spec = load_spec(str(tiny_spec))
    config = configuration(spec, {})
    config = replace(config, training=replace(config.training, epochs=500))
    executor = LocalProcessExecutor(spec, load_training_split(spec), workers=1)
    try:
        for n in range(3):  # trials of seconds each: the first trains while two wait
            executor.submit(
                TrialTask(
                    number=n,
                    config=config,
                    seed=tuple(trial_seed(0, n).entropy),
                    thresholds=NoPruning().thresholds(trial_number=n, finished=()),
                )
            )
        deadline = time.monotonic() + 60
        while not executor.epochs() and time.monotonic() < deadline:
            time.sleep(0.01)  # the first leaves the queue for the one worker
        assert list(executor.epochs()) == [0] and executor.queued() == 2
    finally:
        executor.shutdown(cancel=True)
    assert executor.queued() == 0


ORPHAN = """
import os, signal, subprocess, sys, time
from hpo.executors import die_with_parent

if sys.argv[1] == "parent":
    child = subprocess.Popen([sys.executable, sys.argv[0], "child", sys.argv[2]])
    time.sleep(0.5)  # the child has armed its signal
    os._exit(0)
received = []
signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
die_with_parent(os.getppid(), signum=signal.SIGTERM)
end = time.monotonic() + 3 * {poll}
while time.monotonic() < end:
    time.sleep(0.05)
with open(sys.argv[2], "w") as f:
    f.write(str(len(received)))
"""


@pytest.mark.slow
def test_a_process_whose_parent_dies_gets_its_signal_once(tmp_path):
    # A second SIGTERM ends a command at once: a helper orchestrator signalled twice (the
    # kernel's parent-death signal, then the watching thread's) left its trials RUNNING.
    from hpo.executors import PARENT_POLL_SECONDS

    out, script = tmp_path / "received", tmp_path / "orphan.py"
    script.write_text(ORPHAN.format(poll=PARENT_POLL_SECONDS))
    subprocess.run([sys.executable, str(script), "parent", str(out)], check=True, timeout=30)
    end = time.monotonic() + 30
    while time.monotonic() < end and not out.exists():
        time.sleep(0.1)
    time.sleep(0.1)  # written whole
    assert out.read_text() == "1"
