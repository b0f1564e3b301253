"""Opening a study's storage: URLs, SQLite tuning, the schema-creation lock, password masking.

``sqlite:///PATH`` is the default (one machine); ``postgresql://`` serves workers on several
machines. Every process opens its own storage (never one inherited across ``fork()``).

SQLite is opened in WAL mode with ``synchronous=NORMAL``: readers no longer block the writer,
and a commit costs no fsync (WAL stays consistent if the process dies; only an OS crash can lose
the last commits). A 60 s busy timeout replaces "database is locked" errors with waiting.
Creating the schema and the study happens under an exclusive file lock next to the database, so
processes started at the same instant do not race on Optuna's ``alembic_version`` table.
"""

import contextlib
import fcntl
import functools
import json
import os
import re
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from hpo.errors import UsageError

DEFAULT_STORAGE = "sqlite:///hpo.db"
HEARTBEAT_INTERVAL = 10
"""Seconds between a running trial's heartbeats."""
GRACE_PERIOD = 60
"""Seconds without a heartbeat after which a running trial counts as stale (its worker died)."""


def resolve_url(url: str | None) -> str:
    """``--storage``, else ``$HPO_STORAGE``, else ``sqlite:///hpo.db`` in the current directory."""
    url = url or os.environ.get("HPO_STORAGE") or DEFAULT_STORAGE
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]  # SQLAlchemy only knows the long name
    return url


def mask_password(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and reports."""
    try:
        parsed = make_url(url)
    except Exception:
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)
    if parsed.password is None:
        return url
    return parsed.set(password="***").render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for other URLs or in-memory SQLite."""
    try:
        parsed = make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


@contextlib.contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock for creating a SQLite schema or study; a no-op for servers."""
    path = sqlite_path(url)
    if path is None:
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tune_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def check_sqlite_file(url: str, *, must_exist: bool) -> None:
    """Refuse, without writing to it, a file that is not a SQLite database, or a missing one."""
    path = sqlite_path(url)
    if path is None:
        return
    shown = mask_password(url)
    if not path.exists():
        if must_exist:
            raise UsageError(f"{shown}: no such database file")
        if not path.parent.is_dir():
            raise UsageError(f"{shown}: directory {path.parent} does not exist")
        return
    if path.is_dir():
        raise UsageError(f"{shown}: {path} is a directory (allowed: a SQLite database file)")
    # Ask SQLite itself, read-only: opening and closing the file with a plain file descriptor
    # would drop the POSIX locks that this process's other connections hold on it, which is
    # how SQLite databases get corrupted.
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            probe.execute("PRAGMA schema_version").fetchone()
        finally:
            probe.close()
    except sqlite3.DatabaseError as e:
        raise UsageError(f"{shown}: {path} is not a SQLite database ({e})") from None
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise UsageError(f"{shown}: {path} is read-only (hpo needs to write trials there)")


def _heartbeat_options() -> dict[str, object]:
    return {
        "heartbeat_interval": HEARTBEAT_INTERVAL,
        "grace_period": GRACE_PERIOD,
        # A trial whose worker died is failed after the grace period and queued again with the
        # same parameters, at most three times.
        "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=3
        ),
    }


def open_storage(
    url: str, *, heartbeat: bool = True, must_exist: bool = False
) -> optuna.storages.RDBStorage:
    """Open (creating the schema if needed) the RDB storage at ``url`` for this process.

    Raises UsageError, with the password masked, when the URL is malformed or the storage is
    unreachable, not a database, or read-only.
    """
    shown = mask_password(url)
    try:
        make_url(url)
    except Exception:
        raise UsageError(
            f"{shown}: not a storage URL (allowed: sqlite:///PATH, postgresql://USER@HOST/DB)"
        ) from None
    check_sqlite_file(url, must_exist=must_exist)
    return _open_rdb_storage(url, heartbeat)


@functools.cache
def _open_rdb_storage(url: str, heartbeat: bool) -> optuna.storages.RDBStorage:
    """One storage (one engine, one pool) per URL and process, however often it is asked for."""
    shown = mask_password(url)
    parsed = make_url(url)
    kwargs = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 60}
    try:
        with creation_lock(url), warnings.catch_warnings():
            # Heartbeats have been "experimental" since Optuna 2.8; hpo relies on them knowingly.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            extra = _heartbeat_options() if heartbeat else {}
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **extra)
    except (ImportError, ModuleNotFoundError) as e:
        raise UsageError(
            f"{shown}: the database driver is missing ({e}); for PostgreSQL: "
            "pip install 'hpo[postgres]'"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, ValueError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise UsageError(f"{shown}: cannot open the storage ({reason})") from None
    if parsed.get_backend_name() == "sqlite":
        sqlalchemy.event.listen(storage.engine, "connect", _tune_sqlite)
        storage.engine.dispose()  # reconnect, so that every pooled connection is tuned
    return storage


def write_trial_records(
    study: optuna.Study,
    trial_id: int,
    *,
    user_attrs: dict[str, object],
    intermediate_values: dict[int, float],
) -> None:
    """Write a running trial's user attributes and intermediate values in one transaction.

    Optuna's public API commits each value on its own (about 1 ms a value on SQLite, 30 to 60
    values a trial). On RDB storages this inserts the same rows, in the same representation,
    with two multi-row statements and one commit, after checking that the trial still runs;
    elsewhere it falls back to the public API.
    """
    backend = getattr(study._storage, "_backend", study._storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        for step, value in intermediate_values.items():
            study._storage.set_trial_intermediate_value(trial_id, step, value)
        for key, value in user_attrs.items():
            study._storage.set_trial_user_attr(trial_id, key, value)
        return
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    values_table = models.TrialIntermediateValueModel
    attrs_table = models.TrialUserAttributeModel
    value_rows = []
    for step, value in intermediate_values.items():
        stored, kind = values_table.intermediate_value_to_stored_repr(value)
        value_rows.append(
            {
                "trial_id": trial_id,
                "step": step,
                "intermediate_value": stored,
                "intermediate_value_type": kind,
            }
        )
    attr_rows = [
        {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
        for key, value in user_attrs.items()
    ]
    with _create_scoped_session(backend.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        backend.check_trial_is_updatable(trial_id, trial.state)
        # A retried trial inherits its predecessor's attributes: replace, do not duplicate.
        if attr_rows:
            session.execute(
                sqlalchemy.delete(attrs_table).where(
                    attrs_table.trial_id == trial_id, attrs_table.key.in_(list(user_attrs))
                )
            )
            session.execute(sqlalchemy.insert(attrs_table), attr_rows)
        if value_rows:
            session.execute(
                sqlalchemy.delete(values_table).where(
                    values_table.trial_id == trial_id,
                    values_table.step.in_(list(intermediate_values)),
                )
            )
            session.execute(sqlalchemy.insert(values_table), value_rows)


def artifact_dir(url: str) -> Path:
    """Where the study's artifacts (exported weights) live: beside a SQLite database, else
    ``./hpo-artifacts``. The dashboard serves them from there."""
    path = sqlite_path(url)
    if path is None:
        return Path("hpo-artifacts")
    return path.with_name(path.stem + "-artifacts")
