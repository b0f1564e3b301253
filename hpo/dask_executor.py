"""Trials on a Dask cluster: ``DaskExecutor`` hands each trial to the cluster as one task.

The orchestrator stays where the command was typed, with the storage; the cluster's workers
only train (``train_on_worker``: a ``TrialTask`` in, a ``TrialResult`` out). A worker needs
hpo installed and, for a spec that names files (``npz:``, an MNIST folder), those files at the
same path: no database access and no shared filesystem.

- **Data.** Each worker process computes the study's split itself, once, from the spec (the
  packaged digits come with the package; files are read from the spec's path), and keeps it
  for the study's later tasks. It checks the split's SHA-256 (``Split.digest``) against the
  orchestrator's, so that a worker with another file at that path, or another NumPy, cannot
  add trials trained on other data. Every worker is checked at start (``Client.run``): one
  that lacks a file is one line naming it and the path, before the study is touched. Not
  ``Client.scatter(broadcast=True)``: the active memory manager trims the copies back to one,
  and a worker that dies with it takes the data of every later task with it.
- **Hand-out.** As with local processes: a task goes to Dask only when one of the cluster's
  threads is free (``slots``, re-read every few seconds, so that a cluster that grows gets more
  trials); the rest wait here, where ``before_start`` gives each its pruning thresholds as it
  leaves, from every result received by then.
- **Faults.** A worker that dies mid-trial: the scheduler runs the task again on another
  worker (the same trial, the same parameters), up to its ``allowed-failures`` (3 unless the
  cluster's configuration says otherwise), and then fails it with ``KilledWorker``, which fails
  the trial without another retry. The scheduler lost: every trial in flight fails with
  ``SchedulerLost``, an ``ExecutorLost``, which ends the run; finished trials are kept.
- **A learner's net** (``[model] network``): its file is read on each worker at the path the
  spec holds (like an ``npz:`` file, it must be there; the start-up check imports it and tries
  the contract on every worker). Such nets draw from NumPy's global random state, which the
  threads of one worker process share: a worker runs its trials of such a net one at a time
  (start workers with ``--nthreads 1`` and more ``--nworkers`` to train them side by side).
- **Stopping.** A running task cannot be interrupted from outside: each polls a
  ``distributed.Event`` about once a second (``STOP_POLL_SECONDS``) and stops between two
  steps once it is set (``shutdown(cancel=True)``, on a Ctrl-C).
"""

import collections
import concurrent.futures
import contextlib
import logging
import secrets
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable

import distributed
from threadpoolctl import threadpool_limits

from hpo.errors import SpecError, UsageError
from hpo.executors import (
    ONE_BLAS_THREAD,
    PREFETCH,
    ExecutorLost,
    Queued,
    TrialExecutor,
    TrialFailed,
    WorkerLost,
    next_to_start,
    tune_malloc,
)
from hpo.spec import StudySpec
from hpo.trial import TrialResult, TrialTask, check_study_network, run_task
from trainer.datasets import DatasetError, Split

CONNECT_SECONDS = 10.0
"""How long to try to reach the scheduler at start (a refused port is retried meanwhile)."""
WORKER_WAIT_SECONDS = 10.0
"""How long a scheduler without workers is given to get one at start."""
SLOTS_REFRESH_SECONDS = 2.0
"""How often ``slots`` asks the scheduler for the cluster's threads."""
STOP_POLL_SECONDS = 1.0
"""How often a running task asks the scheduler whether the run was stopped (a round trip)."""
CLOSE_SECONDS = 5.0
SPLITS_KEPT = 2
"""Splits a worker process keeps (one per study it trains for), the least recent dropped."""


class SchedulerUnreachable(UsageError):
    """No Dask scheduler answers at the address given."""


class NoDaskWorkers(UsageError):
    """The scheduler answers but has no worker to train on."""


class SchedulerLost(ExecutorLost):
    """The connection to the scheduler broke while the run was using it."""


BANNER_SECONDS = 0.5
"""How long ``connect`` listens, before Dask's handshake, for a server that speaks first."""


def _speaks_first(address: str) -> str | None:
    """The greeting of a server at a ``tcp://HOST:PORT`` address that is not Dask's (an SSH or
    mail server's, which speaks first), or None. Dask's client would read it as the length of a
    message (``Unable to allocate 3 EiB``)."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    if not address.startswith("tcp://") or not port.isdigit() or not host:
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=BANNER_SECONDS) as c:
            c.settimeout(BANNER_SECONDS)
            first = c.recv(64)
    except OSError:  # refused, unreachable, or silent: Dask's client says which
        return None
    # Dask's own greeting is a message: its first 8 bytes count its frames (a few).
    if len(first) < 8 or int.from_bytes(first[:8], "little") < 1 << 16:
        return None
    return first.decode("ascii", "replace").strip()[:40]


class WorkerDataError(ExecutorLost):
    """A worker cannot compute the study's split, or computes another one (raised there)."""


def connect(address: str, *, timeout: float | None = None) -> distributed.Client:
    """A client of the scheduler at ``address``, or ``SchedulerUnreachable`` within ``timeout``.

    The client is made in a thread given a hard deadline: a port that accepts the connection but
    never answers Dask's handshake makes ``Client()`` wait past its own timeout
    (dask/distributed#8071). A client that connects after the deadline is closed.
    """
    timeout = CONNECT_SECONDS if timeout is None else timeout
    banner = _speaks_first(address)
    if banner is not None:
        raise SchedulerUnreachable(
            f"--dask: {address} is not a Dask scheduler (another protocol answers there: "
            f"{banner!r}; allowed: the address a running `dask scheduler` prints, e.g. "
            "tcp://HOST:8786)"
        )
    box: dict[str, object] = {}
    abandoned = threading.Event()

    def make() -> None:
        try:
            client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except Exception as e:  # OSError (refused, timed out), ValueError (a bad address)
            box["error"] = e
            return
        box["client"] = client
        if abandoned.is_set():
            with contextlib.suppress(Exception):
                client.close(timeout=CLOSE_SECONDS)

    thread = threading.Thread(target=make, name="hpo-dask-connect", daemon=True)
    thread.start()
    thread.join(timeout + CLOSE_SECONDS)
    if "client" in box:
        return box["client"]  # type: ignore[return-value]
    abandoned.set()
    error = box.get("error")
    reason = f"no answer in {timeout + CLOSE_SECONDS:.0f} s" if error is None else _one_line(error)
    raise SchedulerUnreachable(
        f"--dask: cannot reach a Dask scheduler at {address} ({reason}; allowed: the address a "
        "running `dask scheduler` prints, e.g. tcp://HOST:8786)"
    )


class DaskExecutor(TrialExecutor):
    """Trials as tasks on the Dask cluster at ``address`` (see the module docstring).

    Args:
        spec: the study's spec; ``split``: its split here (the workers' must match it).
        address: the scheduler's address (``tcp://HOST:8786``).
        workers: trials in flight; None: as many as the cluster has threads, followed as it
            grows or shrinks.
        label: names the tasks on the Dask dashboard (the study's name).
    """

    prefetch = PREFETCH

    def __init__(
        self,
        spec: StudySpec,
        split: Split,
        *,
        address: str,
        workers: int | None = None,
        label: str = "study",
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"The 'workers' parameter must be >= 1 or None. Got {workers}.")
        self.address, self._spec, self._fixed_slots = address, spec, workers
        # Distributed logs a lost connection as tracebacks on stderr, and keeps logging after
        # the client is closed; what it means for the run reaches the user as one line
        # (SchedulerLost), so this process's Dask logs stay quiet from here on.
        for name in ["distributed", *logging.root.manager.loggerDict]:
            if name.startswith("distributed"):  # its configuration sets some children's levels
                logging.getLogger(name).setLevel(logging.CRITICAL)
        self._token = f"{_key_safe(label)}-{secrets.token_hex(4)}"
        self._digest = split.digest()
        self._client = connect(address)
        try:
            self._threads = self._wait_for_workers()
            self._slots_at = time.monotonic() + SLOTS_REFRESH_SECONDS
            self._check_workers()
            self._stop = distributed.Event(f"hpo-stop-{self._token}", client=self._client)
        except BaseException:
            self._close_client()
            raise
        self._lock = threading.RLock()
        self._queue: deque[Queued] = deque()
        self._running: dict[str, tuple[int, concurrent.futures.Future, distributed.Future]] = {}
        self._closed = False
        self._broken: ExecutorLost | None = None

    # -----------------------------------------------------------------------------------------
    # Start

    def _wait_for_workers(self) -> int:
        try:
            self._client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        except (TimeoutError, distributed.TimeoutError, OSError):
            raise NoDaskWorkers(
                f"--dask: the Dask scheduler at {self.address} has no worker (none joined in "
                f"{WORKER_WAIT_SECONDS:.0f} s; allowed: a scheduler with workers, started with "
                f"`dask worker {self.address}`)"
            ) from None
        return max(1, sum(self._client.nthreads().values()))

    def _check_workers(self) -> None:
        """Have every worker compute the study's split now (and keep it): a worker that lacks
        a file or computes other data is refused before the study is touched."""
        answers = self._client.run(check_worker, self._spec, self._digest, on_error="return")
        for address in sorted(answers):
            answer = answers[address]
            if isinstance(answer, WorkerDataError):
                raise UsageError(f"--dask: {answer}")
            if isinstance(answer, BaseException):
                raise UsageError(f"--dask: Dask worker {address}: {_one_line(answer)}")

    @property
    def slots(self) -> int:  # type: ignore[override]
        if self._fixed_slots is not None:
            return self._fixed_slots
        now = time.monotonic()
        if now >= self._slots_at:
            self._slots_at = now + SLOTS_REFRESH_SECONDS
            with contextlib.suppress(Exception):  # a lost scheduler is check()'s to report
                self._threads = max(1, sum(self._client.nthreads().values()))
        return self._threads

    def worker_memory(self) -> dict[str, tuple[int, int]]:
        """Each worker's threads and memory limit in bytes (0: none set), by address."""
        workers = self._client.scheduler_info(n_workers=-1)["workers"]
        return {
            address: (int(w.get("nthreads") or 1), int(w.get("memory_limit") or 0))
            for address, w in workers.items()
        }

    # -----------------------------------------------------------------------------------------
    # Trials

    def check(self) -> None:
        with self._lock:
            if self._broken is None and self._client.status in ("closing", "closed"):
                self._broken = self._lost()
            if self._broken is not None:
                raise self._broken

    def submit(
        self, task: TrialTask, *, before_start: Callable[[TrialTask], TrialTask] | None = None
    ) -> "concurrent.futures.Future[TrialResult]":
        future: concurrent.futures.Future[TrialResult] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit a trial after shutdown")
            if self._broken is not None:
                future.set_exception(self._broken)
                return future
            self._queue.append((task, future, before_start))
        self._hand_out()
        return future

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def _hand_out(self) -> None:
        """Give queued tasks to Dask while a slot is free (after a submission, and after each
        result, from Dask's callback thread, once that result's future is resolved)."""
        slots = self.slots
        with self._lock:
            while not self._closed and self._broken is None and len(self._running) < slots:
                started = next_to_start(self._queue)
                if started is None:
                    return
                task, future = started
                key = f"hpo-trial-{self._token}-{task.number}"
                try:
                    dask_future = self._client.submit(
                        train_on_worker,
                        task,
                        self._spec,
                        self._digest,
                        self._stop.name,
                        key=key,
                        pure=False,
                        retries=0,  # a raising trial is a failed trial; a lost worker: see above
                    )
                except Exception as e:
                    future.set_exception(e)
                    continue
                self._running[key] = (task.number, future, dask_future)
                dask_future.add_done_callback(self._collect)

    def _collect(self, dask_future: distributed.Future) -> None:
        """Resolve a trial's future from its task's (Dask's callback thread), then hand out."""
        with self._lock:
            entry = self._running.pop(dask_future.key, None)
        if entry is None:  # the shutdown resolved it
            return
        number, future, _ = entry
        try:
            future.set_result(dask_future.result())
        except distributed.CancelledError as e:
            error = self._cancelled(e, number)
            future.set_exception(error)
        except distributed.KilledWorker as e:
            future.set_exception(
                TrialFailed(
                    f"every Dask worker that ran trial #{number} died (KilledWorker: "
                    f"{_one_line(e)})"
                )
            )
        except ExecutorLost as e:  # WorkerDataError, raised by the worker
            with self._lock:
                self._broken = self._broken or e
            future.set_exception(e)
        except Exception as e:
            future.set_exception(TrialFailed(_one_line(e)))
        self._hand_out()

    def _cancelled(self, error: BaseException, number: int) -> Exception:
        with self._lock:
            if getattr(error, "reason", None) == "scheduler-connection-lost":
                self._broken = self._broken or self._lost()
                return self._broken
            if self._closed:
                return WorkerLost(f"trial #{number} was stopped by the shutdown")
        return TrialFailed(f"trial #{number}'s task was cancelled on the Dask cluster")

    def _lost(self) -> SchedulerLost:
        return SchedulerLost(
            f"lost the Dask scheduler at {self.address}; the trials in flight were failed and "
            "the finished ones are kept: run the same command to resume once it is back"
        )

    def shutdown(self, *, cancel: bool = False) -> None:
        with self._lock:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            running = list(self._running.values())
            self._running.clear()
        for _, future, _ in queued:
            future.cancel()
        if running and cancel:
            with contextlib.suppress(Exception):
                self._stop.set()  # running tasks stop between two steps (STOP_POLL_SECONDS)
            with contextlib.suppress(Exception):
                self._client.cancel([f for _, _, f in running], reason="hpo-shutdown")
        for number, future, _ in running:
            if not future.done():
                future.set_exception(WorkerLost(f"trial #{number} was stopped by the shutdown"))
        self._close_client()

    def _close_client(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close(timeout=CLOSE_SECONDS)


# ---------------------------------------------------------------------------------------------
# On the worker

_splits: collections.OrderedDict[str, Split] = collections.OrderedDict()
_splits_lock = threading.Lock()
_global_random_state = threading.Lock()  # a learner's net seeds and draws np.random's state


def train_on_worker(task: TrialTask, spec: StudySpec, digest: str, stop_name: str) -> TrialResult:
    """One trial on a Dask worker: the study's split (computed once per worker process), then
    ``run_task``, stopping between two steps once the event ``stop_name`` is set."""
    tune_malloc()
    split = worker_split(spec, digest)
    shared = _global_random_state if spec.user_network else contextlib.nullcontext()
    with shared, threadpool_limits(limits=ONE_BLAS_THREAD, user_api="blas"):
        return run_task(task, spec, split, should_stop=_stop_poller(stop_name))


def check_worker(spec: StudySpec, digest: str, dask_worker=None) -> str:
    """Compute (and keep) the study's split on this worker; ``Client.run`` calls it at start
    (and passes the worker as ``dask_worker``)."""
    tune_malloc()
    where = None if dask_worker is None else _worker_name(dask_worker.address)
    split = worker_split(spec, digest, where=where)
    try:
        with _global_random_state:  # building the net seeds it: not under a running trial
            check_study_network(spec, split)
    except SpecError as e:
        raise WorkerDataError(
            f"Dask worker {where or _worker_name()}: {e.field}: {e.problem} (allowed: the "
            "network's file at the same path on every worker)"
        ) from None
    return digest


def worker_split(spec: StudySpec, digest: str, *, where: str | None = None) -> Split:
    """The study's split in this worker process, computed on first use and checked against the
    orchestrator's ``digest``; raises ``WorkerDataError`` naming the worker (``where``, else
    the one running this task)."""
    with _splits_lock:
        split = _splits.get(digest)
        if split is not None:
            _splits.move_to_end(digest)
            return split
        where = where or _worker_name()
        try:
            split = spec.data.load()
        except DatasetError as e:
            raise WorkerDataError(
                f"Dask worker {where}: data.{e.field}: {e} (allowed: the spec's files at the "
                "same path on every worker)"
            ) from None
        here = split.digest()
        if here != digest:
            raise WorkerDataError(
                f"Dask worker {where}: its split of {spec.data.dataset} differs from "
                f"the orchestrator's (sha256 {here[:12]} against {digest[:12]}; allowed: the "
                "same files, NumPy and scikit-learn on every worker)"
            )
        _splits[digest] = split
        while len(_splits) > SPLITS_KEPT:
            _splits.popitem(last=False)
        return split


def _stop_poller(stop_name: str) -> Callable[[], bool]:
    """``should_stop`` for a task: whether the run's stop event is set, asked of the scheduler
    at most every ``STOP_POLL_SECONDS``; a scheduler that cannot be asked means stop too (the
    result could not be delivered)."""
    event = distributed.Event(stop_name)
    state = {"next": time.monotonic() + STOP_POLL_SECONDS, "stop": False}

    def should_stop() -> bool:
        now = time.monotonic()
        if not state["stop"] and now >= state["next"]:
            state["next"] = now + STOP_POLL_SECONDS
            try:
                state["stop"] = event.is_set()
            except Exception:
                state["stop"] = True
        return state["stop"]

    return should_stop


def _worker_name(address: str | None = None) -> str:
    if address is None:
        try:
            address = distributed.get_worker().address
        except ValueError:  # not in a task (a test calling it directly)
            address = "(not a worker)"
    return f"{address} on {socket.gethostname()}"


def _key_safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:64] or "study"


def _one_line(error: BaseException) -> str:
    text = traceback.format_exception_only(type(error), error)[-1].strip()
    return " ".join(text.split())
