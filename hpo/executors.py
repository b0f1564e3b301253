"""Where trials train: in this process, or in local worker processes.

An executor takes a ``TrialTask`` and returns a ``concurrent.futures.Future`` of its
``TrialResult``: the one seam between the orchestrator, which alone talks to the storage, and
the training, which never does. Every executor trains each trial on one BLAS thread
(``ONE_BLAS_THREAD``); more cores are used through more trials in flight.

- ``InlineExecutor``: the trial trains in this process when it is submitted (one in flight).
  For debuggers and profilers, and for tests; the orchestrator's storage writes then add to
  every trial's time.
- ``LocalProcessExecutor``: N spawned worker processes, each holding the study's spec and split
  (sent once, when it starts; a big split is mapped from one shared file instead of copied into
  each worker: ``hpo.shared_split``). The orchestrator's writes then overlap the training, and it
  keeps ``prefetch`` more trials queued in it, so that a worker never waits for a claim. Workers
  ignore SIGINT (the orchestrator decides what a Ctrl-C means and stops them) and die with
  their parent, even a SIGKILL'd one. A worker that dies with a trial (killed, out of memory)
  fails that trial's future with ``WorkerLost`` and is replaced.
"""

import abc
import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import multiprocessing.resource_tracker
import os
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator

from threadpoolctl import threadpool_limits

from hpo.errors import RunError
from hpo.interrupts import INTERRUPTS
from hpo.shared_split import SharedSplitHandle, share
from hpo.spec import StudySpec
from hpo.trial import TrialResult, TrialTask, run_task
from hpo.worker_boot import STOP_SIGNALS, boot
from trainer.console import BLAS_THREAD_VARIABLES
from trainer.datasets import Split

ONE_BLAS_THREAD = 1
"""Trials train with one BLAS thread each: a trial's 100-wide matmuls gain nothing measurable
from a second thread on an idle machine and lose up to 3x when the cores are busy (measured by
tests/benchmarks/bench_trainer.py); more cores are used through more trials in flight."""
PREFETCH = 3
"""Trials queued beyond the busy worker processes, so that a worker starts its next trial the
moment it is free while the orchestrator stores the last. A claim and a tell cost it ~45 ms of
CPU; a default-study trial trains ~120 ms on average but a pruned one ~35 ms, so a run of
pruned trials drains a short queue: with 2 queued, the worker waited ~12 ms a trial, with 3
~4 ms, with 4 no less (measured on the default study, 40 trials). A queued trial gets its
pruning thresholds when it leaves the queue, so queueing costs the pruning nothing; the sampler
sees the queued trials as running (TPE's constant liar), and each read of the study reads them
again (~1 ms each on SQLite), which is why the queue stays short."""
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_SECONDS = 1.0

UNGUARDED_SCRIPT_EXIT = 87
"""The exit code of a spawned worker that found itself running the calling script again (a
script that calls ``hpo.run`` without a ``__main__`` guard; ``hpo.api.run`` exits with it)."""


class WorkerLost(RuntimeError):
    """The process training a trial died before it returned a result."""


class TrialFailed(RuntimeError):
    """The trial raised in its worker; the message carries the worker's traceback's last line."""


class ExecutorLost(RunError):
    """The executor can train no more trials (its cluster went away). A future that fails with
    it ends the run: the orchestrator fails the trials in flight and claims no more."""


class UnguardedScript(ExecutorLost):
    """A worker process stopped as it ran the calling script again (``UNGUARDED_SCRIPT_EXIT``):
    every other would too."""

    def __init__(self) -> None:
        super().__init__(
            "the worker processes import the script that called hpo.run again, and it has no "
            'if __name__ == "__main__": guard (allowed: the calls under that guard, or '
            "workers=1 to train in this process)"
        )


class TrialExecutor(abc.ABC):
    """Runs trials. ``slots`` trials train at once; ``prefetch`` is how many more the orchestrator
    keeps queued (some when training runs elsewhere, so that a worker starts its next trial while
    the orchestrator stores the last; none in this process)."""

    slots: int = 1
    prefetch: int = 0

    def check(self) -> None:  # noqa: B027 - a hook: only a cluster can be lost
        """Raise ``ExecutorLost`` if no more trials can train here (the orchestrator asks before
        each claim, so that it claims none it cannot run)."""

    @abc.abstractmethod
    def submit(
        self, task: TrialTask, *, before_start: Callable[[TrialTask], TrialTask] | None = None
    ) -> "concurrent.futures.Future[TrialResult]":
        """Queue ``task``; the future holds its result or the reason it has none.
        ``before_start(task)``, called as the task leaves the queue to train, returns the task
        to train (the orchestrator fills in its pruning thresholds then)."""

    @abc.abstractmethod
    def shutdown(self, *, cancel: bool = False) -> None:
        """Release the workers; ``cancel`` stops the trials in flight at once."""

    def epochs(self) -> dict[int, int]:
        """The trials training now, by number, and the epochs each has finished: what the
        progress bar shows between results (empty where the executor cannot see it)."""
        return {}

    def queued(self) -> int:
        """How many submitted trials wait for a worker: RUNNING in the storage, not training
        yet (the progress bar counts them apart)."""
        return 0


Queued = tuple[TrialTask, "concurrent.futures.Future[TrialResult]", Callable | None]
"""A submitted task waiting in an executor: the task, its future, its ``before_start``."""


def next_to_start(queue: deque[Queued]) -> tuple[TrialTask, concurrent.futures.Future] | None:
    """Take the next queued task whose future was not cancelled, and mark it running; returns
    the task ``before_start`` gives (a ``before_start`` that raises fails only its own future),
    or None when the queue holds nothing more to start."""
    while queue:
        task, future, before_start = queue.popleft()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            return (before_start(task) if before_start is not None else task), future
        except Exception as e:
            future.set_exception(e)
    return None


class InlineExecutor(TrialExecutor):
    """Trains each trial in this process, at submission; a Ctrl-C stops it between steps."""

    def __init__(self, spec: StudySpec, split: Split) -> None:
        self.spec, self.split = spec, split
        self._closed = False

    def submit(
        self, task: TrialTask, *, before_start: Callable[[TrialTask], TrialTask] | None = None
    ) -> "concurrent.futures.Future[TrialResult]":
        if self._closed:
            raise RuntimeError("cannot submit a trial after shutdown")
        future: concurrent.futures.Future[TrialResult] = concurrent.futures.Future()
        try:
            if before_start is not None:
                task = before_start(task)
            with threadpool_limits(limits=ONE_BLAS_THREAD, user_api="blas"):
                result = run_task(task, self.spec, self.split, should_stop=INTERRUPTS.requested)
        except Exception as e:
            future.set_exception(e)
        else:
            future.set_result(result)
        return future

    def shutdown(self, *, cancel: bool = False) -> None:
        self._closed = True


class LocalProcessExecutor(TrialExecutor):
    """``workers`` spawned processes; a thread of this process hands them tasks in order and
    collects their results (see the module docstring)."""

    prefetch = PREFETCH

    def __init__(self, spec: StudySpec, split: Split, *, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"The 'workers' parameter must be >= 1. Got {workers}.")
        self.slots = workers
        self._shared = share(split)  # None: each worker receives the split itself
        self._spec = spec
        self._split: Split | SharedSplitHandle = self._shared.handle if self._shared else split
        self._context = multiprocessing.get_context("spawn")  # no connection crosses fork()
        self._queue: deque[Queued] = deque()
        self._lock = threading.Lock()
        self._closing = False
        self._broken: Exception | None = None
        self._wake = threading.Event()  # set by submit and shutdown for an idle serving thread
        self._workers: list[_Worker] = []
        try:
            # A Ctrl-C stops the start-up between two spawns (one interrupted would leave a
            # child without its start-up data), and inside a send that waits for a child still
            # importing (hundreds of them take a minute on two cores): every child is killed.
            for _ in range(workers):
                INTERRUPTS.check()
                self._workers.append(self._start_worker(send_context=False))
            with INTERRUPTS.raising():
                for worker in self._workers:  # sent once all started: their start-ups overlap
                    worker.send_context(spec, self._split)
        except BaseException:
            _kill_all(self._workers)
            if self._shared is not None:
                self._shared.close()
            raise
        self._thread = threading.Thread(target=self._serve, name="hpo-executor", daemon=True)
        self._thread.start()

    def _start_worker(self, *, send_context: bool = True) -> "_Worker":
        ours, theirs = self._context.Pipe(duplex=True)
        # Only the pipe and a pid go with the spawn: the spec and the split follow on the pipe,
        # where a child that died at start-up makes the send fail instead of block.
        process = self._context.Process(
            target=boot, args=(theirs, os.getpid()), name="hpo-trial-worker", daemon=True
        )
        # The children read these when they import numpy: one BLAS thread each. SIGINT (SIGTERM,
        # SIGHUP) stays blocked in this thread while it spawns: the child inherits the mask, so a
        # Ctrl-C to the process group while its interpreter starts stays pending there until
        # ``boot`` ignores it (which discards it); here it is delivered to the main thread, or
        # on unblocking.
        # multiprocessing starts its resource tracker with the first spawn, and unblocks SIGINT
        # and SIGTERM in this thread once it has: started first, it leaves the block alone.
        multiprocessing.resource_tracker.ensure_running()
        with (
            environment(**dict.fromkeys(BLAS_THREAD_VARIABLES, str(ONE_BLAS_THREAD))),
            sigint_blocked(),
        ):
            process.start()
        theirs.close()
        worker = _Worker(process, ours)
        if send_context:
            worker.send_context(self._spec, self._split)
        return worker

    def epochs(self) -> dict[int, int]:
        with self._lock:
            return {w.number: w.epoch for w in self._workers if w.future is not None}

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def pids(self) -> list[int]:
        """The worker processes' ids (a worker that died is replaced by another)."""
        with self._lock:
            return [w.process.pid for w in self._workers]

    def submit(
        self, task: TrialTask, *, before_start: Callable[[TrialTask], TrialTask] | None = None
    ) -> "concurrent.futures.Future[TrialResult]":
        future: concurrent.futures.Future[TrialResult] = concurrent.futures.Future()
        with self._lock:
            if self._broken is not None:
                future.set_exception(self._broken)
                return future
            if self._closing:
                raise RuntimeError("cannot submit a trial after shutdown")
            self._queue.append((task, future, before_start))
        self._wake.set()
        return future

    def _serve(self) -> None:
        """Hand queued tasks to idle workers; resolve futures as results (or deaths) come."""
        while True:
            with self._lock:
                if self._closing:
                    return
                for worker in self._workers:
                    if worker.future is None and (started := next_to_start(self._queue)):
                        worker.assign(*started)
                waitables = [w.connection for w in self._workers if w.future is not None]
                waitables += [w.process.sentinel for w in self._workers if w.future is not None]
            if not waitables:
                # Idle: sleep until a submission (or the shutdown) wakes the thread.
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            ready = multiprocessing.connection.wait(waitables, timeout=0.05)
            if not ready:
                continue
            dead = []
            with self._lock:
                if self._closing:
                    return
                for i, worker in enumerate(self._workers):
                    ours = worker.connection in ready or worker.process.sentinel in ready
                    if worker.future is not None and ours and not worker.collect():
                        dead.append(i)
            # Replaced outside the lock: a spawn and its split take seconds (a 200-MB MNIST
            # split on the pipe), during which submit() must not block the orchestrator. Only
            # this thread hands out trials, so none goes to the dead worker meanwhile.
            for i in dead:
                try:
                    replacement = self._start_worker()
                except WorkerLost as e:  # cannot even start: fail what waits, stop
                    with self._lock:
                        self._fail_queued(e)
                    return
                with self._lock:
                    self._workers[i] = replacement

    def _fail_queued(self, error: Exception) -> None:
        self._closing = True
        self._broken = error
        while self._queue:
            _, future, _ = self._queue.popleft()
            if future.set_running_or_notify_cancel():
                future.set_exception(error)

    def shutdown(self, *, cancel: bool = False) -> None:
        with self._lock:
            self._closing = True
            pending = list(self._queue)
            self._queue.clear()
        self._wake.set()
        self._thread.join()
        for _, future, _ in pending:
            future.cancel()
        if cancel:  # all at once: one by one, each waited for, took a minute for hundreds
            _kill_all(self._workers)
        for worker in self._workers:
            worker.stop(kill=cancel)
            if worker.future is not None and not worker.future.done():  # stopped mid-trial
                worker.future.set_exception(
                    WorkerLost(f"worker process {worker.process.pid} was stopped by the shutdown")
                )
        if self._shared is not None:
            self._shared.close()


def _kill_all(workers: list["_Worker"]) -> None:
    """SIGKILL every worker's process, then wait for them all."""
    for worker in workers:
        with contextlib.suppress(OSError, ValueError):
            worker.process.kill()
    for worker in workers:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            worker.process.join(timeout=5)
        with contextlib.suppress(OSError):
            worker.connection.close()


class _Worker:
    """One worker process, its end of the pipe, and the trial it trains (if any) with the
    epochs it has finished."""

    def __init__(self, process, connection) -> None:
        self.process, self.connection = process, connection
        self.future: concurrent.futures.Future | None = None
        self.number: int | None = None
        self.epoch = 0

    def send_context(self, spec: StudySpec, split: "Split | SharedSplitHandle") -> None:
        try:
            self.connection.send((spec, split))
        except (OSError, EOFError) as e:
            self.process.join(timeout=5)
            if self.process.exitcode == UNGUARDED_SCRIPT_EXIT:
                raise UnguardedScript from e
            raise WorkerLost(
                f"worker process {self.process.pid} died as it started "
                f"(exit code {self.process.exitcode})"
            ) from e

    def assign(self, task: TrialTask, future: concurrent.futures.Future) -> None:
        self.future, self.number, self.epoch = future, task.number, 0
        with contextlib.suppress(OSError, EOFError):  # it died: collect() sees the sentinel
            self.connection.send(task)

    def collect(self) -> bool:
        """Read the pipe: the epochs the trial finished, then its result (or error), which
        resolves the future; False when the process is gone (to replace)."""
        try:
            while self.connection.poll():
                kind, payload = self.connection.recv()
                if kind == "epoch":
                    self.epoch = payload
                    continue
                future, self.future = self.future, None
                if kind == "result":
                    future.set_result(payload)
                else:
                    future.set_exception(TrialFailed(payload))
                return True
            if self.process.is_alive():  # only epochs so far: the trial goes on
                return True
        except (OSError, EOFError):
            pass
        future, self.future = self.future, None
        self.process.join(timeout=5)
        if self.process.exitcode == UNGUARDED_SCRIPT_EXIT:
            future.set_exception(UnguardedScript())
        else:
            future.set_exception(
                WorkerLost(
                    f"worker process {self.process.pid} died (exit code "
                    f"{self.process.exitcode}) while training trial #{self.number}"
                )
            )
        self.connection.close()
        return False

    def stop(self, *, kill: bool) -> None:
        if not kill:
            with contextlib.suppress(OSError, EOFError, ValueError):
                self.connection.send(None)
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        with contextlib.suppress(OSError):
            self.connection.close()


def worker_main(connection, parent_pid: int) -> None:
    """A worker process (started through ``hpo.worker_boot``): receive the spec and the split,
    then train each task received and send back its result, until told to stop. SIGINT is
    already ignored: Ctrl-C is the orchestrator's to handle."""
    die_with_parent(parent_pid)
    tune_malloc()  # before the split arrives: its arrays come from the tuned heap
    try:
        spec, split = connection.recv()
    except (EOFError, OSError):
        return
    if isinstance(split, SharedSplitHandle):
        split = split.open()  # the orchestrator's file: gone with it, then so is this worker
    with threadpool_limits(limits=ONE_BLAS_THREAD, user_api="blas"):
        while True:
            try:
                task = connection.recv()
            except (EOFError, OSError):
                return
            if task is None:
                return
            try:
                message = ("result", run_task(task, spec, split, on_epoch=epoch_sender(connection)))
            except Exception as e:
                last = traceback.format_exception_only(type(e), e)[-1].strip()
                message = ("error", last)
            try:
                connection.send(message)
            except (OSError, EOFError):
                return


def epoch_sender(connection) -> Callable[[int], None]:
    """Sends each epoch's end to the orchestrator (its bar moves between results); a closed
    pipe is the orchestrator's end, noticed when the result is sent."""

    def send(epoch: int) -> None:
        with contextlib.suppress(OSError, EOFError):
            connection.send(("epoch", epoch))

    return send


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES
_malloc_tuned = threading.Event()


def tune_malloc() -> None:
    """Give this worker process glibc's usual malloc thresholds, whatever its environment said
    (once per process; elsewhere than glibc, nothing changes).

    Dask starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``, so that freed memory goes
    back to the system at once, and leaves the variable in the environment of the process that
    started a ``LocalCluster``, whose later children inherit it. For a training loop, which
    frees and allocates the same arrays every step, that means handing the pages back and
    faulting them in again every step, and setting a trim threshold also freezes glibc's mmap
    threshold at 128 KiB (every larger array mapped afresh): the default study's net trained a
    trial in 0.33 s against 0.24 s without the variable, a net of three 300-wide layers in
    2.18 s against 1.30 s. These are the thresholds glibc's own dynamic rule grows to (mmap
    32 MiB, trim twice that); a worker keeps at most that much freed memory.
    """
    if _malloc_tuned.is_set():
        return
    _malloc_tuned.set()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def die_with_parent(parent_pid: int, *, signum: int = signal.SIGKILL) -> None:
    """Send this process ``signum`` when its parent ends, however the parent ends (SIGKILL
    included): a trial worker is killed, a helper orchestrator (``SIGTERM``) stops as on a
    ``kill``.

    SIGKILL goes by the kernel's parent-death signal where there is one (Linux), at once. Any
    other signal, and SIGKILL elsewhere, by a thread that checks the parent's pid every second
    and sends it once: the kernel sends its signal again each time the child passes to another
    of the dying parent's threads (a parent with BLAS threads: twice), and a second SIGTERM ends
    a command at once (``hpo.interrupts``), before a helper orchestrator has failed its trials.
    """
    if signum == signal.SIGKILL:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent_pid:  # the parent died before
        os.kill(os.getpid(), signum)
        return

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_SECONDS)
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signum)
                return

    threading.Thread(target=watch, name="hpo-parent-watch", daemon=True).start()


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT, SIGTERM and SIGHUP in the calling thread (held pending, not lost) for the
    duration."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
