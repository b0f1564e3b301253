"""The storage's cross-process lock: one holder at a time, across processes and machines.

Creating the schema or a study, and claiming a trial, happen under ``storage_lock``: an exclusive
file lock beside a SQLite or journal file, a PostgreSQL advisory lock on a server. Processes
started at the same instant therefore neither race on Optuna's ``alembic_version`` table nor
overshoot a trial target, and a claim's trial number (which seeds its sampler) is the one the
trial gets.
"""

import contextlib
import fcntl
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy

from hpo.interrupts import INTERRUPTS
from hpo.urls import engine_url, journal_path, sqlite_path, storage_kind

ADVISORY_LOCK_KEY = 0x68706F  # "hpo"
LOCK_SUFFIX = ".hpo-lock"  # not ".lock": the journal storage uses that


def lock_path(url: str):
    """The lock file of a SQLite or journal storage (None for a server)."""
    path = sqlite_path(url) or journal_path(url)
    return None if path is None else path.with_name(path.name + LOCK_SUFFIX)


_ENGINES: dict[str, sqlalchemy.Engine] = {}
"""One small engine per PostgreSQL URL for the advisory lock's connection."""


def _lock_engine(url: str) -> sqlalchemy.Engine:
    if url not in _ENGINES:
        _ENGINES[url] = sqlalchemy.create_engine(
            engine_url(url), pool_size=1, max_overflow=0, pool_pre_ping=True
        )
    return _ENGINES[url]


def dispose_lock_engines() -> None:
    """Close the advisory locks' connections (at the end of a command)."""
    while _ENGINES:
        _ENGINES.popitem()[1].dispose()


@contextlib.contextmanager
def storage_lock(url: str, *, create: bool = True) -> Iterator[None]:
    """Hold the storage's exclusive cross-process lock (see the module docstring).

    ``create=False`` (a reader) takes a lock file only if one exists: a reader leaves no file
    behind, and a database without a lock file beside it has no writer (every writer creates
    the lock file before the database).
    """
    path = lock_path(url)
    if path is not None:
        try:
            handle = open(path, "a" if create else "r")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            if create:
                raise
            yield
            return
        with handle:
            _wait_for(
                lambda: _try_flock(handle),
                lambda: _flock_holder(path),
                what=f"the storage lock {path}",
            )
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if storage_kind(url) != "postgresql":
        yield
        return
    with _lock_engine(url).connect() as connection:

        def take() -> bool:
            taken = connection.execute(
                sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY}
            ).scalar()
            connection.commit()
            return bool(taken)

        def holder() -> str:
            row = connection.execute(
                sqlalchemy.text(
                    "SELECT a.pid, a.client_addr FROM pg_locks l JOIN pg_stat_activity a "
                    "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.objid = :k AND l.objsubid = 1"
                ),
                {"k": ADVISORY_LOCK_KEY},
            ).first()
            connection.commit()
            if row is None:
                return "another process"
            return f"the server's process {row[0]} (a client at {row[1] or 'this host'})"

        _wait_for(take, holder, what="the storage's advisory lock")
        try:
            yield
        finally:
            connection.execute(
                sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY}
            )
            connection.commit()


LOCK_NOTICE_SECONDS = 5.0
"""After this long waiting for a lock, a command says which process it waits for."""
LOCK_POLL_SECONDS = (0.01, 0.2)
"""A waiting process looks again after the first delay, doubling it up to the second: a claim
holds the lock for milliseconds, and a hundred PostgreSQL workers polling stay light."""


def _wait_for(take: Callable[[], bool], holder: Callable[[], str], *, what: str) -> None:
    """Call ``take`` until it gets the lock. Never silently for long: after
    ``LOCK_NOTICE_SECONDS`` one line names the holder; and a Ctrl-C (SIGTERM, SIGHUP) while
    waiting stops the wait (KeyboardInterrupt), which a blocking lock call would not."""
    notice_at = time.monotonic() + LOCK_NOTICE_SECONDS
    delay = LOCK_POLL_SECONDS[0]
    while not take():
        INTERRUPTS.check()
        if notice_at is not None and time.monotonic() >= notice_at:
            notice_at = None
            print(f"hpo: waiting for {what}, held by {holder()}", file=sys.stderr, flush=True)
        time.sleep(delay)
        delay = min(2 * delay, LOCK_POLL_SECONDS[1])


def _try_flock(handle) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _flock_holder(path: Path) -> str:
    """Who holds the flock on ``path``, from Linux's /proc/locks (its process and state)."""
    return lock_holder(path, kind="FLOCK") or "another process"


def lock_holder(path: Path, *, kind: str, mode: str | None = None) -> str | None:
    """Who else holds a ``kind`` lock (``FLOCK``, ``POSIX``; ``mode`` ``WRITE`` or ``READ``:
    either) on ``path``, from Linux's /proc/locks: its process and whether it is stopped; None
    when no other process does, or /proc/locks cannot be read."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        inode = path.stat().st_ino
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if fields[1] == "->":  # a waiter's line: "-> POSIX ..."
                    continue
                if fields[1] != kind or (mode is not None and fields[3] != mode):
                    continue
                pid = int(fields[4])
                if int(fields[5].split(":")[2]) == inode and pid != os.getpid():
                    with open(f"/proc/{pid}/stat") as stat:
                        state = stat.read().rsplit(")", 1)[1].split()[0]
                    stopped = " (stopped: SIGSTOP, a debugger or a suspended job)"
                    return f"process {pid}{stopped if state in 'Tt' else ''}"
    return None


class Busy(Exception):
    """``only_one`` found its lock held: ``holder`` is the holding process's id, when known."""

    def __init__(self, holder: int | None) -> None:
        super().__init__(holder)
        self.holder = holder


@contextlib.contextmanager
def _task_file(path: Path) -> Iterator:
    """``path`` created, locked and emptied for the block, and removed at its end: a task's lock
    leaves no file behind. The holder removes the file before letting go, so a process that
    opened it meanwhile locks a file no longer at ``path``: it sees that and tries again."""
    while True:
        handle = open(path, "a+")  # noqa: SIM115 (held past this loop, closed below)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            handle.close()
            raise Busy(int(text) if text.isdigit() else None) from None
        except BaseException:
            handle.close()
            raise
        try:
            current = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()  # removed by the holder that let go: lock the file at path now
    try:
        handle.truncate(0)
        yield handle
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        handle.close()  # lets go of the lock


@contextlib.contextmanager
def only_one(url: str, task: str) -> Iterator[None]:
    """Hold, for the block, a lock of its own for ``task`` (such as one study's confirmation),
    without waiting: raise ``Busy`` at once when another process holds it. A file beside a
    SQLite or journal file (which holds the holder's process id), a PostgreSQL advisory lock
    keyed by ``task`` on a server; no lock elsewhere."""
    path = lock_path(url)
    if path is not None:
        digest = hashlib.sha256(task.encode()).hexdigest()[:12]
        task_path = path.with_name(f"{path.name.removesuffix(LOCK_SUFFIX)}.{digest}{LOCK_SUFFIX}")
        with _task_file(task_path) as handle:
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        return
    if storage_kind(url) != "postgresql":
        yield
        return
    key = int.from_bytes(hashlib.sha256(task.encode()).digest()[:4], "big", signed=True)
    engine = sqlalchemy.create_engine(engine_url(url), poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            args = {"k": ADVISORY_LOCK_KEY, "t": key}
            held = connection.execute(
                sqlalchemy.text("SELECT pg_try_advisory_lock(:k, :t)"), args
            ).scalar()
            connection.commit()
            if not held:
                raise Busy(None)
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k, :t)"), args)
                connection.commit()
    finally:
        engine.dispose()
