"""Opening a study's storage: URLs, SQLite tuning, cross-process locks, password masking.

Storages, by URL:

- ``sqlite:///PATH`` (the default, one machine). Opened in WAL mode with ``synchronous=NORMAL``:
  readers no longer block the writer, and a commit costs no fsync (WAL stays consistent if a
  process dies; only an OS crash can lose the last commits). A 60 s busy timeout replaces
  "database is locked" errors with waiting.
- ``postgresql://USER:PASSWORD@HOST/DB`` (workers on several machines; ``pip install
  .[postgres]``). ``postgres://`` is accepted too. The URL is re-rendered with its password
  percent-encoded, so a password with ``{``, ``}`` or ``%`` survives Optuna's URL template
  and Alembic's config parser (``@``, ``:`` and ``/`` must come percent-encoded, as URLs
  require). Each process keeps at most ``POOL_SIZE`` connections (the
  heartbeat thread takes one of them) plus one for the lock.
- ``journal:///PATH``: Optuna's journal file, for a shared filesystem without a database server.

Every process opens its own storage (never one inherited across ``fork()``), once per URL.
Creating the schema or a study, and claiming a trial, happen under ``storage_lock``: an exclusive
file lock beside a SQLite or journal file, a PostgreSQL advisory lock on a server. Processes
started at the same instant therefore neither race on Optuna's ``alembic_version`` table nor
overshoot a trial target.

A trial's own writes are bundled (``buffered_suggestions``, ``finish_trial``): Optuna's RDB
storage commits every value on its own, and its ORM costs about 0.3 ms a statement, as much as
the SQL itself many times over. The bundled writes insert the rows Optuna's API would, in one
transaction; other storages get the public API, one call a value. Reads are spared too: a
worker keeps the trials it read up to date with its own writes (``KnownTrials``), and its
sampler uses them instead of reading the study while a claim's count shows nothing else changed.
"""

import contextlib
import copy
import fcntl
import functools
import json
import math
import os
import re
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import optuna
import sqlalchemy
from optuna.storages import BaseStorage
from sqlalchemy.engine import make_url

from hpo.errors import RunError, UsageError

DEFAULT_STORAGE = "sqlite:///hpo.db"
HEARTBEAT_INTERVAL = 10
"""Seconds between a running trial's heartbeats ($HPO_HEARTBEAT_INTERVAL overrides)."""
GRACE_PERIOD = 60
"""Seconds without a heartbeat after which a running trial counts as stale: its worker died
($HPO_GRACE_PERIOD overrides)."""
MAX_STALE_TRIAL_RETRIES = 3
"""How often a stale trial is queued again with the same parameters."""
POOL_SIZE = 2
"""Connections per process in the storage's pool (PostgreSQL), overflow included."""
ADVISORY_LOCK_KEY = 0x68706F  # "hpo"
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Backoff, in seconds, before each new attempt at a storage call whose connection failed."""

URL_FORMS = "sqlite:///PATH, postgresql://USER:PASSWORD@HOST/DB, journal:///PATH"
OPTUNA_TABLES = {"studies", "trials", "version_info"}
"""Tables every Optuna RDB schema has: a database without them was not made by hpo."""


def resolve_url(url: str | None) -> str:
    """``--storage``, else ``$HPO_STORAGE``, else ``sqlite:///hpo.db`` in the current directory."""
    url = url or os.environ.get("HPO_STORAGE") or DEFAULT_STORAGE
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]  # SQLAlchemy only knows the long name
    return url


def mask_password(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and reports."""
    if url.startswith("journal:"):
        return url
    if url.count("@") > 1:  # a raw @ in the password: hide everything up to the last one
        return re.sub(r"(//[^:/@]*:).*@", r"\1***@", url)
    try:
        parsed = make_url(url)
    except Exception:
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)  # renders the password as ***


def storage_kind(url: str) -> str:
    """``"sqlite"``, ``"postgresql"``, ``"journal"`` or ``"other"`` (another SQLAlchemy URL)."""
    if url.startswith("journal:"):
        return "journal"
    try:
        backend = make_url(url).get_backend_name()
    except Exception:
        return "other"
    return backend if backend in ("sqlite", "postgresql") else "other"


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for other URLs or in-memory SQLite."""
    if storage_kind(url) != "sqlite":
        return None
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def journal_path(url: str) -> Path | None:
    """The file of a ``journal:///PATH`` URL (``journal:PATH`` for a relative path)."""
    if not url.startswith("journal:"):
        return None
    rest = url[len("journal:") :]
    return Path(
        rest[2:] if rest.startswith("///") else rest.lstrip("/") if rest.startswith("//") else rest
    )


def _engine_url(url: str) -> str:
    """The URL SQLAlchemy gets: PostgreSQL through psycopg 3, the password percent-encoded."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


# ---------------------------------------------------------------------------------------------
# Locks


@functools.cache
def _lock_engine(url: str) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(
        _engine_url(url), pool_size=1, max_overflow=0, pool_pre_ping=True
    )


@contextlib.contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """Hold the storage's exclusive cross-process lock (see the module docstring)."""
    kind = storage_kind(url)
    path = sqlite_path(url) or journal_path(url)
    if path is not None:
        lock_path = path.with_name(path.name + ".hpo-lock")  # not ".lock": the journal uses that
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if kind != "postgresql":
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


# ---------------------------------------------------------------------------------------------
# Checks that touch nothing


def check_sqlite_file(url: str, *, write: bool) -> None:
    """Refuse, without writing to it, a file that is not a SQLite database, a database of
    another program, a missing one (to read), or a read-only one (to write)."""
    path = sqlite_path(url)
    if path is None:
        return
    shown = mask_password(url)
    if not path.exists():
        if not write:
            raise UsageError(f"{shown}: no such database file")
        if not path.parent.is_dir():
            raise UsageError(f"{shown}: directory {path.parent} does not exist")
        _check_writable(shown, path.parent)
        return
    if path.is_dir():
        raise UsageError(f"{shown}: {path} is a directory (allowed: a SQLite database file)")
    # Ask SQLite itself, read-only: opening and closing the file with a plain file descriptor
    # would drop the POSIX locks that this process's other connections hold on it, which is
    # how SQLite databases get corrupted.
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in probe.execute("SELECT name FROM sqlite_master")}
        finally:
            probe.close()
    except sqlite3.DatabaseError as e:
        raise UsageError(f"{shown}: {path} is not a SQLite database ({e})") from None
    if (tables or not write) and not tables >= OPTUNA_TABLES:
        others = f" (it holds other tables: {', '.join(sorted(tables)[:5])})" if tables else ""
        raise UsageError(f"{shown}: {path} is not an hpo (Optuna) database{others}")
    if write:
        _check_writable(shown, path)


def _check_writable(shown: str, path: Path) -> None:
    directory = path if path.is_dir() else path.parent
    if not os.access(path, os.W_OK) or not os.access(directory, os.W_OK):
        raise UsageError(f"{shown}: {path} is read-only (hpo needs to write trials there)")


def check_journal_file(url: str, *, write: bool) -> None:
    """Refuse a journal path that is missing (when required) or is not an Optuna journal."""
    path = journal_path(url)
    if path is None or not str(path):
        raise UsageError(f"{url}: no journal file path (allowed: {URL_FORMS})")
    if not path.exists():
        if not write:
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


def open_storage(url: str, *, write: bool = True) -> BaseStorage:
    """Open the storage at ``url`` for this process.

    ``write=True`` (run, worker, retrain) creates the schema if needed, tunes SQLite and runs
    heartbeats. ``write=False`` (studies, report, dashboard, best) only opens an existing hpo
    storage and changes nothing in it: not the schema, not the journal mode (it takes the
    storage lock, whose file sits beside the database).

    Raises UsageError, with the password masked, when the URL is malformed or names another
    kind of storage, or the storage is unreachable, not a database, not hpo's, or read-only.
    """
    kind = storage_kind(url)
    if kind == "journal":
        check_journal_file(url, write=write)
        return _open_journal(url)
    shown = mask_password(url)
    if kind == "other":
        raise UsageError(f"{shown}: not a storage URL hpo supports (allowed: {URL_FORMS})")
    if url.count("@") > 1:
        raise UsageError(
            f"{shown}: more than one @ (a password with @, :, / or % must be percent-encoded, "
            "e.g. @ as %40)"
        )
    settings = heartbeat_settings() if write else None
    # Checked and opened under the lock: a reader must not see, or stamp, a schema that another
    # process is still creating (Optuna's alembic stamp is a write even when reading).
    try:
        with storage_lock(url):
            check_sqlite_file(url, write=write)
            return _open_rdb_storage(url, settings, write)
    except OSError as e:  # the lock file beside the database
        raise UsageError(f"{shown}: cannot lock the storage ({e})") from None
    except sqlalchemy.exc.SQLAlchemyError as e:  # the advisory lock's connection
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise UsageError(f"{shown}: cannot open the storage ({_masked(reason, url)})") from None


@functools.cache
def _open_journal(url: str) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(journal_path(url))))


def _heartbeat_options(settings: tuple[int, int]) -> dict[str, object]:
    interval, grace = settings
    return {
        "heartbeat_interval": interval,
        "grace_period": grace,
        # A trial whose worker died is failed after the grace period and queued again with the
        # same parameters, at most MAX_RETRIES times.
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
    kwargs: dict[str, object] = {"pool_pre_ping": True}
    if kind == "sqlite":
        kwargs["connect_args"] = {"timeout": 60}
    elif kind == "postgresql":
        kwargs.update(
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
            storage = optuna.storages.RDBStorage(_engine_url(url), engine_kwargs=kwargs, **extra)
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
    return storage


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
    its trial; one that loses it for longer stops with a RunError.
    """
    for delay in (*delays, None):
        try:
            return call()
        except TRANSIENT_ERRORS as e:
            if delay is None:
                reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
                raise RunError(f"{what}: the storage stayed unreachable ({reason})") from e
            time.sleep(delay)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# Bulk writes


# Statements built once: SQLAlchemy spends more on building a statement and its cache key than
# SQLite on running it. Core statements on a session's connection, for the same reason.


@functools.cache
def _state_query(*, for_update: bool):
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    query = sqlalchemy.select(trials.c.state).where(
        trials.c.trial_id == sqlalchemy.bindparam("trial_id")
    )
    # As set_trial_state_values: lock the row (PostgreSQL; SQLite ignores it).
    return query.with_for_update() if for_update else query


@functools.cache
def _census_query():
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    return (
        sqlalchemy.select(
            trials.c.state,
            sqlalchemy.func.count(trials.c.trial_id),
            sqlalchemy.func.max(trials.c.trial_id),
        )
        .where(trials.c.study_id == sqlalchemy.bindparam("study_id"))
        .group_by(trials.c.state)
    )


@functools.cache
def _finish_update():
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    return (
        sqlalchemy.update(trials)
        .where(trials.c.trial_id == sqlalchemy.bindparam("finished_id"))
        .values(
            state=sqlalchemy.bindparam("new_state"),
            datetime_complete=sqlalchemy.bindparam("completed_utc"),
        )
    )


@functools.cache
def _delete_rows(model, key: str):
    """Delete a trial's rows of ``model`` whose ``key`` column is among the given keys."""
    table = model.__table__
    return sqlalchemy.delete(table).where(
        table.c.trial_id == sqlalchemy.bindparam("trial_id"),
        table.c[key].in_(sqlalchemy.bindparam("keys", expanding=True)),
    )


@functools.cache
def _insert_rows(model):
    return sqlalchemy.insert(model.__table__)


@functools.cache
def _study_lock():
    from optuna.storages._rdb import models

    studies = models.StudyModel.__table__
    query = sqlalchemy.select(studies.c.study_id)
    return query.where(studies.c.study_id == sqlalchemy.bindparam("study_id")).with_for_update()


@functools.cache
def _past_trials_count():
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    return sqlalchemy.select(sqlalchemy.func.count(trials.c.trial_id)).where(
        trials.c.study_id == sqlalchemy.bindparam("study_id"),
        trials.c.trial_id < sqlalchemy.bindparam("trial_id"),
    )


@functools.cache
def _number_update():
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    return (
        sqlalchemy.update(trials)
        .where(trials.c.trial_id == sqlalchemy.bindparam("numbered_id"))
        .values(number=sqlalchemy.bindparam("new_number"))
    )


def rdb_backend(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    backend = getattr(study._storage, "_backend", study._storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


@dataclass(frozen=True)
class Census:
    """The study's trials counted by state; on RDB storages also the last trial id of each
    state, which tells whether the study still holds exactly the trials a ``KnownTrials`` has."""

    counts: dict[optuna.trial.TrialState, int]
    last_ids: dict[optuna.trial.TrialState, int] | None


def take_census(study: optuna.Study) -> Census:
    """One GROUP BY on RDB storages (a claim needs no more), otherwise a count of the trials."""
    from optuna.trial import TrialState

    counts = dict.fromkeys(TrialState, 0)
    backend = rdb_backend(study)
    if backend is not None:
        from optuna.storages._rdb.storage import _create_scoped_session

        last_ids = {}
        with _create_scoped_session(backend.scoped_session) as session:
            query = _census_query()
            rows = session.connection().execute(query, {"study_id": study._study_id}).all()
        for state, n, last in rows:
            counts[TrialState[state.name]] = n
            last_ids[TrialState[state.name]] = last
        return Census(counts, last_ids)
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return Census(counts, None)


class KnownTrials:
    """All trials of one study as this worker last read them, kept up to date with its own
    writes: while no other process changes the study, a trial's sampling needs no read.

    The trials are those ``study.get_trials(deepcopy=False)`` would return, equal field by
    field. They are ``current`` for a trial when its claim's census (under the storage lock)
    counts exactly them, by state and last id, before adding the trial itself: then nothing but
    this worker changed the study since. Any other change (another worker's trial, a sweep, a
    failed trial) makes them stale, and the sampling reads the study, which refreshes them.
    Only for RDB storages and pruners that write nothing while a trial trains.
    """

    def __init__(self) -> None:
        self._trials: dict[int, optuna.trial.FrozenTrial] = {}
        self._complete = False  # holds every trial of the study (after a read)
        self.current = False  # holds the study as it is (checked by the latest claim)

    def check(self, census: Census) -> None:
        """Whether the study holds exactly these trials (called under the storage lock)."""
        self.current = (
            self._complete
            and census.last_ids is not None
            and self._census()
            == (
                {state: n for state, n in census.counts.items() if n},
                census.last_ids,
            )
        )

    def _census(self) -> tuple[dict, dict]:
        counts, last_ids = {}, {}
        for t in self._trials.values():
            counts[t.state] = counts.get(t.state, 0) + 1
            last_ids[t.state] = max(last_ids.get(t.state, -1), t._trial_id)
        return counts, last_ids

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return [self._trials[number] for number in sorted(self._trials)]

    def replace_all(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        """Every trial of the study, as just read."""
        self._trials = {t.number: t for t in trials}
        self._complete = True

    def put(self, trial: optuna.trial.FrozenTrial) -> None:
        """A trial as this worker just wrote it."""
        self._trials[trial.number] = trial

    def get(self, number: int) -> optuna.trial.FrozenTrial | None:
        return self._trials.get(number)


class _SuggestionStorage:
    """The study's storage as one trial's suggestions see it (see ``buffered_suggestions``).

    Reads of all trials are answered from the first one; the trial's parameters and system
    attributes are held back, and reads of the trial see them; everything else passes through.
    """

    def __init__(
        self, storage: BaseStorage, study_id: int, trial_id: int, known: KnownTrials | None
    ) -> None:
        self._storage, self._study_id, self._trial_id = storage, study_id, trial_id
        self._known = known
        self._trials: list[optuna.trial.FrozenTrial] | None = None
        self.params: dict[str, tuple[float, optuna.distributions.BaseDistribution]] = {}
        self.system_attrs: dict[str, object] = {}

    def __getattr__(self, name: str):
        return getattr(self._storage, name)

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states=None) -> list:
        if study_id != self._study_id:
            return self._storage.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        if self._trials is None and self._known is not None and self._known.current:
            self._trials = self._known.trials()
        elif self._trials is None:
            self._trials = self._storage.get_all_trials(study_id, deepcopy=False)
            if self._known is not None:
                self._known.replace_all(self._trials)
        trials = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def set_trial_param(self, trial_id: int, name: str, value: float, distribution) -> None:
        if trial_id != self._trial_id:
            self._storage.set_trial_param(trial_id, name, value, distribution)
        elif name not in self.params:  # as in the storage, the first value of a name stays
            self.params[name] = (value, distribution)

    def set_trial_system_attr(self, trial_id: int, key: str, value: object) -> None:
        if trial_id != self._trial_id:
            self._storage.set_trial_system_attr(trial_id, key, value)
        else:
            self.system_attrs[key] = value

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, object]:
        attrs = self._storage.get_trial_system_attrs(trial_id)
        return {**attrs, **self.system_attrs} if trial_id == self._trial_id else attrs

    def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        trial = self._storage.get_trial(trial_id)
        if trial_id != self._trial_id or not (self.params or self.system_attrs):
            return trial
        trial = copy.deepcopy(trial)
        for name, (value, distribution) in self.params.items():
            trial.distributions = {**trial.distributions, name: distribution}
            trial.params = {**trial.params, name: distribution.to_external_repr(value)}
        trial.system_attrs = {**trial.system_attrs, **self.system_attrs}
        return trial

    def get_trial_params(self, trial_id: int) -> dict[str, object]:
        return self.get_trial(trial_id).params


@contextlib.contextmanager
def buffered_suggestions(
    study: optuna.Study, trial: optuna.Trial, *, known: KnownTrials | None = None
) -> Iterator[None]:
    """Suggest ``trial``'s parameters inside the block; they reach the storage in one write.

    Optuna commits each ``suggest_*`` on its own, and its samplers read every trial of the study
    up to three times a trial (TPE: the search space, the relative sample with the running
    trials of other workers, each independent parameter). Inside the block the sampler reads
    the study once, at its first read (so, like ``Study._get_trials``'s own cache, it misses
    what other workers write during the few milliseconds of sampling), and the parameters and
    the system attributes the sampler sets on the trial (TPE's shared relative sample) are
    written together when the block ends without an error: before training, so that a trial
    retried after its worker died has them. ``trial`` must be fresh, with no other thread using
    ``study`` during the block. With ``known`` trials that are current, the sampler reads them
    instead of the study; otherwise its read refreshes them.
    """
    storage = study._storage
    buffer = _SuggestionStorage(storage, study._study_id, trial._trial_id, known)
    study._storage = trial.storage = buffer
    try:
        yield
    finally:
        study._storage = trial.storage = storage
    retrying(
        lambda: write_trial_params(study, trial._trial_id, buffer.params, buffer.system_attrs),
        what=f"storing the parameters of trial #{trial.number}",
    )
    entry = known.get(trial.number) if known is not None else None
    if entry is not None and entry._trial_id == trial._trial_id:
        known.put(_with_suggestions(entry, buffer.params, buffer.system_attrs))


def _with_suggestions(trial, params, system_attrs) -> optuna.trial.FrozenTrial:
    """``trial`` as a read returns it once ``params`` and ``system_attrs`` are stored."""
    trial = copy.copy(trial)
    trial.distributions = {**trial.distributions, **{k: d for k, (_, d) in params.items()}}
    trial.params = {
        **trial.params,
        **{k: d.to_external_repr(float(v)) for k, (v, d) in params.items()},
    }
    trial.system_attrs = {**trial.system_attrs, **_as_stored(system_attrs)}
    return trial


def _as_stored(attrs: dict[str, object]) -> dict[str, object]:
    """Attributes as they read back: through JSON (tuples become lists, keys strings)."""
    return {key: json.loads(json.dumps(value)) for key, value in attrs.items()}


def new_running_trial(study: optuna.Study) -> optuna.Trial:
    """``optuna.Trial(study, storage.create_new_trial(study_id))``, without the constructor's read
    of the trial just created (1.5 ms on SQLite): the cached storage (RDB) keeps the FrozenTrial
    that the creation returned, and the constructor is given that one. On RDB storages the trial
    is created as ``RDBStorage._create_new_trial`` creates it, with statements built once (1.5
    ms of ORM work otherwise)."""
    storage = study._storage
    backend = rdb_backend(study)
    if backend is not None and hasattr(storage, "_add_trials_to_cache"):
        trial_id = _create_rdb_trial(storage, backend, study._study_id)
    else:
        trial_id = storage.create_new_trial(study._study_id)
    created = _created_trial(storage, trial_id)
    if created is None:
        return optuna.Trial(study, trial_id)
    study._storage = _CreatedTrialStorage(storage, created)
    try:
        trial = optuna.Trial(study, trial_id)
    finally:
        study._storage = storage
    trial.storage = storage
    return trial


def _create_rdb_trial(storage, backend, study_id: int) -> int:
    """``_CachedStorage.create_new_trial(study_id)``: the row, its number (the count of the
    study's earlier trials, under the study row's lock), and the cache's entry."""
    from datetime import datetime

    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.trial import FrozenTrial, TrialState

    started = models.TrialModel(datetime_start=datetime.now())  # Optuna's naive UTC conversion
    with _create_scoped_session(backend.scoped_session) as session:
        connection = session.connection()
        if connection.execute(_study_lock(), {"study_id": study_id}).first() is None:
            raise KeyError(models.NOT_FOUND_MSG)
        row = {"study_id": study_id, "state": TrialState.RUNNING}
        row["datetime_start"] = started._datetime_start_utc
        trial_id = connection.execute(_insert_rows(models.TrialModel), row).inserted_primary_key[0]
        ids = {"study_id": study_id, "trial_id": trial_id}
        number = connection.execute(_past_trials_count(), ids).scalar_one()
        connection.execute(_number_update(), {"numbered_id": trial_id, "new_number": number})
    frozen = FrozenTrial(
        number=number,
        state=TrialState.RUNNING,
        value=None,
        values=None,
        datetime_start=started.datetime_start,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=trial_id,
    )
    from optuna.storages._cached_storage import _StudyInfo

    with storage._lock:
        storage._studies.setdefault(study_id, _StudyInfo())
        storage._add_trials_to_cache(study_id, [frozen])
    return trial_id


def _created_trial(storage: BaseStorage, trial_id: int) -> optuna.trial.FrozenTrial | None:
    """The running trial ``trial_id`` as _CachedStorage.create_new_trial cached it, if it did."""
    where = getattr(storage, "_trial_id_to_study_id_and_number", {}).get(trial_id)
    if where is None:
        return None
    study_id, number = where
    trial = storage._studies[study_id].trials.get(number)
    fresh = trial is not None and trial._trial_id == trial_id
    return trial if fresh and trial.state == optuna.trial.TrialState.RUNNING else None


class _CreatedTrialStorage:
    """The storage, with the trial just created read from what its creation returned."""

    def __init__(self, storage: BaseStorage, created: optuna.trial.FrozenTrial) -> None:
        self._storage, self._created = storage, created

    def __getattr__(self, name: str):
        return getattr(self._storage, name)

    def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        if trial_id == self._created._trial_id:
            return copy.deepcopy(self._created)  # the Trial fills in its params as it goes
        return self._storage.get_trial(trial_id)


def write_trial_params(
    study: optuna.Study,
    trial_id: int,
    params: dict[str, tuple[float, optuna.distributions.BaseDistribution]],
    system_attrs: dict[str, object],
) -> None:
    """Write a running trial's parameters (name: internal value, distribution) and system
    attributes: in one transaction on RDB storages, elsewhere through the public storage API.

    The rows and checks are ``set_trial_param``'s and ``set_trial_system_attr``'s: the trial
    must still run, and a parameter's distribution must be compatible with the one the study
    already has under its name.
    """
    backend = rdb_backend(study)
    if backend is None or not (params or system_attrs):
        for name, (value, distribution) in params.items():
            study._storage.set_trial_param(trial_id, name, value, distribution)
        for key, value in system_attrs.items():
            study._storage.set_trial_system_attr(trial_id, key, value)
        return
    from optuna.distributions import check_distribution_compatibility, distribution_to_json
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    # The distributions the study is known to have, as _CachedStorage.set_trial_param keeps
    # them: a name seen before needs no query for the compatibility check.
    known = _known_distributions(study)
    rows = []
    with _create_scoped_session(backend.scoped_session) as session:
        _check_updatable(backend, session, trial_id)
        for name, (value, distribution) in params.items():
            previous = known.get(name) or _stored_distribution(session, trial_id, name)
            if previous is not None:
                check_distribution_compatibility(previous, distribution)
            rows.append(
                {
                    "trial_id": trial_id,
                    "param_name": name,
                    "param_value": value,
                    "distribution_json": distribution_to_json(distribution),
                }
            )
        if rows:
            session.connection().execute(_insert_rows(models.TrialParamModel), rows)
        _replace_attrs(session, models.TrialSystemAttributeModel, trial_id, system_attrs)
    for name, (_, distribution) in params.items():
        known.setdefault(name, distribution)


def _known_distributions(study: optuna.Study) -> dict:
    """The distributions by name that study._storage (a _CachedStorage) has seen; else {}."""
    info = getattr(study._storage, "_studies", {}).get(study._study_id)
    return info.param_distribution if info is not None else {}


def _check_updatable(backend, session, trial_id: int, *, for_update: bool = False) -> None:
    from optuna.storages._rdb import models

    query = _state_query(for_update=for_update)
    state = session.connection().execute(query, {"trial_id": trial_id}).scalar_one_or_none()
    if state is None:
        raise KeyError(models.NOT_FOUND_MSG)
    backend.check_trial_is_updatable(trial_id, state)


def _stored_distribution(session, trial_id: int, name: str):
    """The distribution of a parameter ``name`` of another trial of the study, if any (Optuna's
    query for its compatibility check)."""
    from optuna.distributions import json_to_distribution
    from optuna.storages._rdb import models

    study_id = sqlalchemy.select(models.TrialModel.study_id).where(
        models.TrialModel.trial_id == trial_id
    )
    record = (
        session.query(models.TrialParamModel)
        .join(models.TrialModel)
        .filter(models.TrialModel.study_id == study_id.scalar_subquery())
        .filter(models.TrialParamModel.param_name == name)
        .first()
    )
    return None if record is None else json_to_distribution(record.distribution_json)


def finish_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    *,
    state: optuna.trial.TrialState,
    value: float | None,
    user_attrs: dict[str, object],
    intermediate_values: dict[int, float],
    known: KnownTrials | None = None,
) -> None:
    """Store a running trial's user attributes and intermediate values, and finish it: what
    ``set_user_attr``, ``report`` and ``study.tell(trial, value, state=state)`` store.

    Optuna commits each value on its own (about 1 ms a value on SQLite, 30 to 60 values a
    trial), and ``tell`` reads the trial back first. On RDB storages this is one transaction:
    it checks that the trial still runs, inserts the same rows in the same representation (a
    table's rows in one statement), and sets the value, state and completion time as ``tell``
    does (a PRUNED trial's value is its last intermediate value). The sampler's ``after_trial``
    sees the trial as this process knows it: as created, with its parameters and intermediate
    values, and the new records. Elsewhere the public API does it all. ``known`` trials that
    hold the trial get it as a read would now return it.
    """
    from optuna.trial import TrialState

    backend = rdb_backend(study)
    if backend is None:
        for step, v in intermediate_values.items():
            study._storage.set_trial_intermediate_value(trial._trial_id, step, v)
        for key, v in user_attrs.items():
            study._storage.set_trial_user_attr(trial._trial_id, key, v)
        study.tell(trial, value, state=state)
        return
    if state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        raise ValueError(f"Cannot finish a trial as {state.name} (allowed: a finished state).")
    frozen = copy.copy(trial._cached_frozen_trial)
    frozen.user_attrs = {**frozen.user_attrs, **user_attrs}
    frozen.intermediate_values = {**frozen.intermediate_values, **intermediate_values}
    values = _told_values(state, value, frozen)
    study._thread_local.cached_all_trials = None  # as tell(): the next trial reads afresh
    try:
        from optuna import pruners

        study.sampler.after_trial(pruners._filter_study(study, frozen), frozen, state, values)
    finally:
        completed = _finish_rdb_trial(
            backend, trial._trial_id, state, values, user_attrs, intermediate_values
        )
    entry = known.get(trial.number) if known is not None else None
    if entry is not None and entry._trial_id == trial._trial_id:
        known.put(
            _as_finished(entry, state, values, completed, user_attrs, frozen.intermediate_values)
        )


def _as_finished(trial, state, values, completed, user_attrs, intermediate_values):
    """``trial`` (running, as read) as a read returns it once finish_trial has stored it."""
    from optuna.storages._rdb import models

    value_model, step_model = models.TrialValueModel, models.TrialIntermediateValueModel
    trial = copy.copy(trial)
    trial.state = state
    trial.values = (
        None
        if values is None
        else [
            value_model.stored_repr_to_value(*value_model.value_to_stored_repr(v)) for v in values
        ]
    )
    trial.datetime_complete = completed
    trial.user_attrs = {**trial.user_attrs, **_as_stored(user_attrs)}
    trial.intermediate_values = {
        step: step_model.stored_repr_to_intermediate_value(
            *step_model.intermediate_value_to_stored_repr(v)
        )
        for step, v in intermediate_values.items()
    }
    return trial


def _told_values(state, value: float | None, frozen: optuna.trial.FrozenTrial) -> list | None:
    """The values ``tell`` stores: the value of a COMPLETE trial (a number, not NaN), the last
    intermediate value of a PRUNED one (when it is not NaN), none for a FAIL."""
    from optuna.trial import TrialState

    if state == TrialState.COMPLETE:
        if value is None or math.isnan(float(value)):
            raise ValueError(f"A COMPLETE trial needs a value that is a number. Got {value!r}.")
        return [float(value)]
    if value is not None:
        raise ValueError(f"A {state.name} trial takes no value. Got {value!r}.")
    last = frozen.last_step
    if state == TrialState.PRUNED and last is not None:
        last_value = float(frozen.intermediate_values[last])
        if not math.isnan(last_value):
            return [last_value]
    return None


def _finish_rdb_trial(backend, trial_id, state, values, user_attrs, intermediate_values):
    """Returns the completion time as a read returns it."""
    from datetime import datetime

    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    values_table = models.TrialIntermediateValueModel
    # The model's own conversion: it stores naive UTC and reads back naive local time.
    completed = models.TrialModel(datetime_complete=datetime.now())
    with _create_scoped_session(backend.scoped_session) as session:
        _check_updatable(backend, session, trial_id, for_update=True)
        _replace_attrs(session, models.TrialUserAttributeModel, trial_id, user_attrs)
        rows = []
        for step, v in intermediate_values.items():
            stored, kind = values_table.intermediate_value_to_stored_repr(v)
            rows.append(
                {
                    "trial_id": trial_id,
                    "step": step,
                    "intermediate_value": stored,
                    "intermediate_value_type": kind,
                }
            )
        _replace_rows(session, values_table, trial_id, rows, "step")
        rows = []
        for objective, v in enumerate(values or ()):
            stored, kind = models.TrialValueModel.value_to_stored_repr(v)
            rows.append(
                {"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind}
            )
        _replace_rows(session, models.TrialValueModel, trial_id, rows, "objective")
        session.connection().execute(
            _finish_update(),
            {
                "finished_id": trial_id,
                "new_state": state,
                "completed_utc": completed._datetime_complete_utc,
            },
        )
    return completed.datetime_complete


def _replace_attrs(session, model, trial_id: int, attrs: dict[str, object]) -> None:
    """Set a trial's attributes (user or system) as ``set_trial_*_attr`` would, in one insert."""
    rows = [
        {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
        for key, value in attrs.items()
    ]
    _replace_rows(session, model, trial_id, rows, "key")


def _replace_rows(session, model, trial_id: int, rows: list[dict], key: str) -> None:
    """Insert ``rows`` into ``model``'s table for ``trial_id``, replacing those with the same
    ``key``: an upsert (a retried trial inherits its predecessor's attributes)."""
    if not rows:
        return
    connection = session.connection()
    keys = [r[key] for r in rows]
    connection.execute(_delete_rows(model, key), {"trial_id": trial_id, "keys": keys})
    connection.execute(_insert_rows(model), rows)


def artifact_dir(url: str) -> Path:
    """Where the study's artifacts (exported weights) live: beside a SQLite database or journal,
    else ``./hpo-artifacts``. The dashboard serves them from there."""
    path = sqlite_path(url) or journal_path(url)
    if path is None:
        return Path("hpo-artifacts")
    return path.with_name(path.stem + "-artifacts")
