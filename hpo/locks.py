"""The storage's cross-process lock: one holder at a time, across processes and machines.

Creating the schema or a study, and claiming a trial, happen under ``storage_lock``: an exclusive
file lock beside a SQLite or journal file, a PostgreSQL advisory lock on a server. Processes
started at the same instant therefore neither race on Optuna's ``alembic_version`` table nor
overshoot a trial target, and a claim's trial number (which seeds its sampler) is the one the
trial gets.
"""

import contextlib
import fcntl
from collections.abc import Iterator

import sqlalchemy

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
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if storage_kind(url) != "postgresql":
        yield
        return
    with _lock_engine(url).connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
        try:
            yield
        finally:
            connection.execute(
                sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY}
            )
            connection.commit()
