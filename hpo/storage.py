"""Opening and closing a study's storage: checks that touch nothing, SQLite tuning, retries.

Storages, by URL (``hpo.urls``):

- ``sqlite:///PATH`` (the default, one machine). Opened in WAL mode with ``synchronous=NORMAL``:
  readers no longer block the writer, and a commit costs no fsync (WAL stays consistent if a
  process dies; only an OS crash can lose the last commits). A 60 s busy timeout replaces
  "database is locked" errors with waiting. ``close_storages`` folds the WAL back into the
  database file when a command ends, so the file alone holds every trial.
- ``postgresql://USER:PASSWORD@HOST/DB`` (workers on several machines; ``pip install
  .[postgres]``). The URL is re-rendered with its password percent-encoded, so a password with
  ``{``, ``}`` or ``%`` survives Optuna's URL template and Alembic's config parser (``@``, ``:``
  and ``/`` must come percent-encoded, as URLs require). Each process keeps at most
  ``POOL_SIZE`` connections plus one for the lock.
- ``journal:///PATH``: Optuna's journal file, for a shared filesystem without a database server.

Every process opens its own storage (never one inherited across ``fork()``), once per URL, and
uses it through Optuna's public API alone.
"""

import functools
import json
import os
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import optuna
import sqlalchemy
from optuna.storages import BaseStorage
from sqlalchemy.engine import make_url

from hpo.closing import on_close
from hpo.errors import RunError, UsageError, lasting_reason
from hpo.locks import LOCK_NOTICE_SECONDS, dispose_lock_engines, lock_holder, storage_lock
from hpo.urls import (
    URL_FORMS,
    engine_url,
    journal_path,
    mask_password,
    sqlite_path,
    storage_kind,
)

HEARTBEAT_INTERVAL = 10
"""Seconds between a running trial's heartbeats ($HPO_HEARTBEAT_INTERVAL overrides)."""
GRACE_PERIOD = 60
"""Seconds without a heartbeat after which a running trial counts as stale: its worker died
($HPO_GRACE_PERIOD overrides)."""
MAX_STALE_TRIAL_RETRIES = 3
"""How often a lost trial is queued again with the same parameters."""
POOL_SIZE = 2
"""Connections per process in the storage's pool (PostgreSQL), overflow included."""
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Backoff, in seconds, before each new attempt at a storage call whose connection failed."""
OPTUNA_TABLES = {"studies", "trials", "version_info"}
"""Tables every Optuna RDB schema has: a database without them was not made by hpo."""

# Optuna logs each study it creates at INFO (the report makes 20 in memory): hpo
# prints its own lines, so only Optuna's warnings pass. Every command that opens a storage
# imports this module.
optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---------------------------------------------------------------------------------------------
# Checks that touch nothing


def check_sqlite_file(
    url: str, *, write: bool, create: bool = True, creating_ok: bool = False
) -> set[str]:
    """Refuse, without writing to it, a file that is not a SQLite database, a database of
    another program, a missing one (to read, or with ``create=False``), or a read-only one (to
    write). ``creating_ok``: let a file pass that is empty or has Optuna's first table
    (``studies``) but not all of them yet, which another process may be creating (checked again
    under the lock). Returns the tables the file holds (none for a file not made yet)."""
    path = sqlite_path(url)
    if path is None:
        return set()
    shown = mask_password(url)
    if not path.exists():
        if not (write and create):
            raise UsageError(f"{shown}: no such database file")
        if not path.parent.is_dir():
            raise UsageError(f"{shown}: directory {path.parent} does not exist")
        _check_writable(shown, path.parent)
        return set()
    if path.is_dir():
        raise UsageError(f"{shown}: {path} is a directory (allowed: a SQLite database file)")
    # Ask SQLite itself, read-only: opening and closing the file with a plain file descriptor
    # would drop the POSIX locks that this process's other connections hold on it, which is
    # how SQLite databases get corrupted.
    try:
        options = "immutable=1" if not write and read_only_place(url) else "mode=ro"
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?{options}", uri=True)
        try:
            tables = {row[0] for row in probe.execute("SELECT name FROM sqlite_master")}
        finally:
            probe.close()
    except sqlite3.DatabaseError as e:
        if "disk I/O error" in str(e):  # a file system's failure (its -wal deleted, a full
            # disk), not a file that is no database: a runtime failure
            raise RunError(f"{shown}: cannot read {path} ({e})") from None
        raise UsageError(f"{shown}: {path} is not a SQLite database ({e})") from None
    being_created = creating_ok and (not tables or "studies" in tables)
    if (tables or not write) and not tables >= OPTUNA_TABLES and not being_created:
        others = f" (it holds other tables: {', '.join(sorted(tables)[:5])})" if tables else ""
        raise UsageError(f"{shown}: {path} is not an hpo (Optuna) database{others}")
    if write:
        _check_writable(shown, path)
    return tables


COMPLETE_SCHEMA = OPTUNA_TABLES | {"alembic_version"}
"""A schema Optuna has finished creating and stamping: opening it to read writes nothing."""


def read_only_place(url: str) -> bool:
    """Whether a reader must open this SQLite database as immutable: this process can write
    neither it nor its directory, so SQLite could not make the ``-shm`` file a WAL database
    needs (``unable to open database file``), and would leave ``-wal`` and ``-shm`` behind
    where it could. Nobody can be writing it then, unless a ``-wal`` with commits is left from
    before: that one is refused, since immutable reading would miss its trials."""
    path = sqlite_path(url)
    if path is None or (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        return False
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise UsageError(
            f"{mask_password(url)}: {wal} holds commits not yet folded into {path.name}, and "
            "hpo cannot write there to fold them (allowed: a database whose directory this "
            "user can write, or one copied whole with its -wal file)"
        )
    return True


def _check_writable(shown: str, path: Path) -> None:
    directory = path if path.is_dir() else path.parent
    if not os.access(path, os.W_OK) or not os.access(directory, os.W_OK):
        raise UsageError(f"{shown}: {path} is read-only (hpo needs to write trials there)")


def check_journal_file(url: str, *, write: bool, create: bool = True) -> None:
    """Refuse a journal path that is missing (to read, or with ``create=False``) or is not an
    Optuna journal."""
    path = journal_path(url)
    if path is None or not url[len("journal:") :].strip("/"):
        raise UsageError(f"{url}: no journal file path (allowed: {URL_FORMS})")
    if not path.exists():
        if not (write and create):
            raise UsageError(f"{url}: no such journal file")
        if not path.parent.is_dir():
            raise UsageError(f"{url}: directory {path.parent} does not exist")
        return
    if path.is_dir():
        raise UsageError(f"{url}: {path} is a directory (allowed: an Optuna journal file)")
    with open(path, "rb") as f:
        first = f.readline(1 << 16)
    if first:
        try:
            record = json.loads(first)
            if not isinstance(record, dict) or "op_code" not in record:
                raise ValueError
        except ValueError:
            raise UsageError(f"{url}: {path} is not an Optuna journal file") from None
    if write:
        _check_writable(url, path)


# ---------------------------------------------------------------------------------------------
# Opening


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace period) in seconds, from the environment or the defaults."""
    values = []
    for name, default in (
        ("HPO_HEARTBEAT_INTERVAL", HEARTBEAT_INTERVAL),
        ("HPO_GRACE_PERIOD", GRACE_PERIOD),
    ):
        text = os.environ.get(name)
        try:
            value = default if text is None else int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise UsageError(f"${name}: {text!r} (allowed: a whole number of seconds >= 1)")
        values.append(value)
    interval, grace = values
    if grace <= interval:
        raise UsageError(
            f"$HPO_GRACE_PERIOD: {grace} (allowed: more than the heartbeat interval, {interval} s)"
        )
    return interval, grace


def open_storage(url: str, *, write: bool = True, create: bool = True) -> BaseStorage:
    """Open the storage at ``url`` for this process.

    ``write=True`` (run, worker, retrain) creates the schema if needed, tunes SQLite and runs
    heartbeats; ``create=False`` refuses a SQLite or journal file that does not exist yet (a
    worker, a retrain: they need a study, so a refusal must not leave a new database behind).
    ``write=False`` (studies, report, dashboard, best) only opens an existing hpo storage and
    changes nothing in it: not the schema, not the journal mode, and it creates no file (it
    takes the storage lock only where a writer made its file).

    Raises UsageError, with the password masked, when the URL is malformed or names another
    kind of storage, or the storage is unreachable, not a database, not hpo's, or read-only.
    """
    kind = storage_kind(url)
    if kind == "journal":
        check_journal_file(url, write=write, create=create)
        return _open_journal(url)
    shown = mask_password(url)
    if kind == "other":
        raise UsageError(f"{shown}: not a storage URL hpo supports (allowed: {URL_FORMS})")
    if kind == "sqlite" and "uri" in make_url(url).query:
        raise UsageError(
            f"{shown}: SQLite URI options (uri=true) are not supported (allowed: a file path, "
            "e.g. sqlite:///hpo.db)"
        )
    if kind == "sqlite" and sqlite_path(url) is None:
        raise UsageError(
            f"{shown}: an in-memory SQLite database would vanish with this command, and worker "
            "processes cannot reach it (allowed: a file, e.g. sqlite:///hpo.db)"
        )
    if url.count("@") > 1:
        raise UsageError(
            f"{shown}: more than one @ (a password with @, :, / or % must be percent-encoded, "
            "e.g. @ as %40)"
        )
    settings = heartbeat_settings() if write else None
    path = sqlite_path(url)
    if path is not None and (write or not path.exists() or path.is_dir()):
        # Refused before the lock, whose file would be left behind: a database missing (to
        # read, or where none may be created), a directory that is missing or is the path, a
        # file that is not an hpo database (a writer; a reader checks under the lock, which a
        # schema being created holds, and so does a writer that finds one half made).
        check_sqlite_file(url, write=write, create=create, creating_ok=True)
    if (
        not write
        and path is not None
        and check_sqlite_file(url, write=False, creating_ok=True) >= COMPLETE_SCHEMA
    ):
        # A finished schema: Optuna reads it without a write, so a reader never waits on a
        # writer's lock (a writer stopped with SIGSTOP, in a debugger, on a suspended laptop).
        # A file still empty or half made (``studies``, not yet every table) is another
        # process's creation: the reader waits for it under the lock, then checks it whole.
        return _open_rdb_storage(url, settings, write)
    # Checked and opened under the lock: a reader must not see, or stamp, a schema that another
    # process is still creating (Optuna's alembic stamp is a write even when reading).
    try:
        with storage_lock(url, create=write and create):
            check_sqlite_file(url, write=write)
            return _open_rdb_storage(url, settings, write)
    except OSError as e:  # the lock file beside the database
        raise UsageError(f"{shown}: cannot lock the storage ({e})") from None
    except sqlalchemy.exc.SQLAlchemyError as e:  # the advisory lock's connection
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise UsageError(f"{shown}: cannot open the storage ({_masked(reason, url)})") from None


_OPENED: list[tuple[str, BaseStorage]] = []
"""The storages this process opened (``close_storages`` closes them)."""


@functools.cache
def _open_journal(url: str) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal_path(url))))
    _OPENED.append((url, storage))
    return storage


def _heartbeat_options(settings: tuple[int, int]) -> dict[str, object]:
    interval, grace = settings
    return {
        "heartbeat_interval": interval,
        "grace_period": grace,
        # A trial whose worker died is failed after the grace period and queued again with the
        # same parameters, at most MAX_STALE_TRIAL_RETRIES times.
        "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=MAX_STALE_TRIAL_RETRIES
        ),
    }


def _tune_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@functools.cache
def _open_rdb_storage(
    url: str, heartbeat: tuple[int, int] | None, write: bool
) -> optuna.storages.RDBStorage:
    """One storage (one engine, one pool) per URL and process, however often it is asked for.
    The caller holds the storage lock."""
    shown = mask_password(url)
    kind = storage_kind(url)
    kwargs: dict[str, object] = {}
    if kind == "sqlite":
        kwargs["connect_args"] = {"timeout": 60}
    elif kind == "postgresql":
        kwargs.update(
            pool_pre_ping=True,  # a server may drop an idle connection
            pool_size=POOL_SIZE,
            max_overflow=0,
            pool_timeout=60,
            connect_args={"connect_timeout": 10},
        )
    extra: dict[str, object] = {} if write else {"skip_table_creation": True}
    try:
        with warnings.catch_warnings():
            # Heartbeats have been "experimental" since Optuna 2.8; hpo relies on them knowingly.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat:
                extra.update(_heartbeat_options(heartbeat))
            rendered = engine_url(url)
            if kind == "sqlite" and not write and read_only_place(url):
                # Read without locks or side files (see read_only_place).
                rendered = f"sqlite:///file:{sqlite_path(url).resolve()}?immutable=1&uri=true"
            storage = optuna.storages.RDBStorage(rendered, engine_kwargs=kwargs, **extra)
    except (ImportError, ModuleNotFoundError) as e:
        raise UsageError(
            f"{shown}: the database driver is missing ({e}); for PostgreSQL: "
            "pip install 'hpo[postgres]'"
        ) from None
    except (
        sqlalchemy.exc.SQLAlchemyError,
        sqlite3.Error,
        ValueError,
        RuntimeError,  # Optuna's word for a schema of another version
        optuna.exceptions.StorageInternalError,
    ) as e:
        reason = str(getattr(e, "orig", None) or e.__cause__ or e).strip().splitlines()[0]
        raise UsageError(f"{shown}: cannot open the storage ({_masked(reason, url)})") from None
    if kind == "sqlite" and write:
        sqlalchemy.event.listen(storage.engine, "connect", _tune_sqlite)
        storage.engine.dispose()  # reconnect, so that every pooled connection is tuned
        WAITS.watch(storage.engine, sqlite_path(url))
    _OPENED.append((url, storage))
    return storage


class StatementWaits:
    """Says when a SQLite statement waits on another process's write transaction.

    SQLite's busy timeout (60 s) makes a writer wait, silently, while another process is inside
    a write transaction: for milliseconds normally, for as long as it likes when that process is
    stopped (SIGSTOP, a debugger, a suspended laptop). Every statement's start and end are noted
    (SQLAlchemy's cursor events); a daemon thread looks once a second, and a statement running
    for ``LOCK_NOTICE_SECONDS`` while another process holds the database's write lock (from
    /proc/locks: a WRITE lock on its -shm file) gets one line naming that process and whether
    it is stopped. A statement that is merely slow, with no other writer, says nothing.
    """

    def __init__(self) -> None:
        self.running: dict[int, tuple[float, Path]] = {}  # thread -> (start, database)
        self.said: set[tuple[int, float]] = set()
        self.thread: threading.Thread | None = None

    def watch(self, engine: sqlalchemy.Engine, path: Path) -> None:
        def before(conn, cursor, statement, *_):
            # Only a write waits on another writer: WAL readers never block.
            if statement.lstrip()[:6].upper() in WRITES:
                self.running[threading.get_ident()] = (time.monotonic(), path)

        def after(*_):
            self.running.pop(threading.get_ident(), None)

        sqlalchemy.event.listen(engine, "before_cursor_execute", before)
        sqlalchemy.event.listen(engine, "after_cursor_execute", after)
        sqlalchemy.event.listen(engine, "handle_error", after)
        if self.thread is None:
            self.thread = threading.Thread(target=self._look, name="hpo-waits", daemon=True)
            self.thread.start()

    def _look(self) -> None:
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            for ident, (start, path) in list(self.running.items()):
                if now - start >= LOCK_NOTICE_SECONDS and (ident, start) not in self.said:
                    self.said.add((ident, start))
                    shm = path.with_name(path.name + "-shm")
                    holder = lock_holder(shm, kind="POSIX", mode="WRITE")
                    if holder is None:
                        continue
                    print(
                        f"hpo: waiting for the database {path}: {holder} holds a write transaction",
                        file=sys.stderr,
                        flush=True,
                    )


WRITES = ("INSERT", "UPDATE", "DELETE")
WAITS = StatementWaits()


def close_storages() -> None:
    """Close every storage this process opened, and fold SQLite's WAL into the database file.

    Called when a command ends, however it ends: afterwards ``hpo.db`` alone holds every
    finished trial (a copy of it, or a read-only reader, sees them all). A storage asked for
    again later is opened anew.
    """
    opened = list(_OPENED)
    _OPENED.clear()
    _open_rdb_storage.cache_clear()
    _open_journal.cache_clear()
    for url, storage in opened:
        if isinstance(storage, optuna.storages.RDBStorage):
            storage.remove_session()
            storage.engine.dispose()
        path = sqlite_path(url)
        if path is not None and path.with_name(path.name + "-wal").exists():
            checkpoint_wal(path)
    dispose_lock_engines()


on_close(close_storages)  # at the command's end (hpo.cli), once this module is in use


def checkpoint_wal(path: Path) -> None:
    """Copy every committed page of ``path``'s WAL into the database and empty the WAL (as the
    last connection's close would, were another process not reading)."""
    try:
        connection = sqlite3.connect(path, timeout=60)
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()
    except sqlite3.Error:
        pass  # a reader holds the WAL: its last connection folds it in when it closes


def _masked(text: str, url: str) -> str:
    password = make_url(url).password
    return text.replace(password, "***") if password else text


# ---------------------------------------------------------------------------------------------
# Surviving a lost connection

T = TypeVar("T")

TRANSIENT_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    optuna.exceptions.StorageInternalError,
)


def retrying(call: Callable[[], T], *, what: str, delays=RETRY_DELAYS) -> T:
    """Run a storage call; when its connection fails, retry after each delay in turn.

    A worker that loses the database for a few seconds goes on where it was instead of failing
    its trial; one that loses it for longer stops with a RunError, and so does, at once, one
    whose database cannot be written (a full disk, a damaged file).
    """
    for delay in (*delays, None):
        try:
            return call()
        except TRANSIENT_ERRORS as e:
            lasting = lasting_reason(e)
            if lasting is not None:
                raise RunError(f"{what}: the database cannot be used ({lasting})") from e
            if delay is None:
                reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
                raise RunError(f"{what}: the storage stayed unreachable ({reason})") from e
            time.sleep(delay)
    raise AssertionError("unreachable")
