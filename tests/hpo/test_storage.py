"""Opening and closing storages: the checks that touch nothing, one storage per URL, the WAL
folded in on close, retries of a lost connection, and the heartbeat settings.

The refusals are checked on the functions themselves; ``test_cli.py`` and ``test_faults.py``
check what the command line prints for some of them.
"""

import fcntl
import os
import re
import shutil
import sqlite3
import threading
import time
import types

import optuna
import pytest
import sqlalchemy

import hpo.storage
from hpo.errors import RunError, UsageError
from hpo.locks import lock_path
from hpo.storage import (
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    MAX_STALE_TRIAL_RETRIES,
    RETRY_DELAYS,
    TRANSIENT_ERRORS,
    check_journal_file,
    check_sqlite_file,
    close_storages,
    heartbeat_settings,
    open_storage,
    retrying,
)

AS_ROOT = os.geteuid() == 0
ROOT_WRITES = "root writes read-only files: nothing to refuse"


@pytest.fixture(autouse=True)
def closed_afterwards():
    yield
    close_storages()


@pytest.fixture(autouse=True)
def default_heartbeats(monkeypatch):
    monkeypatch.delenv("HPO_HEARTBEAT_INTERVAL", raising=False)
    monkeypatch.delenv("HPO_GRACE_PERIOD", raising=False)


@pytest.fixture(autouse=True)
def quiet_optuna():
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(verbosity)


def listing(directory) -> dict[str, bytes | None]:
    """Every file under ``directory`` with its bytes (None for a directory)."""
    return {
        str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes()
        for p in sorted(directory.rglob("*"))
    }


def other_programs_database(path) -> None:
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        c.execute("INSERT INTO notes (text) VALUES ('mine')")
    c.close()


def hpo_database(path) -> None:
    """An hpo database with one study, its storage closed again."""
    optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{path}"))
    close_storages()


def optuna_journal(path) -> None:
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    optuna.create_study(study_name="s", storage=optuna.storages.JournalStorage(backend))


# ---------------------------------------------------------------------------------------------
# check_sqlite_file


def make_directory(path) -> None:
    path.mkdir()


def write_text(path) -> None:
    path.write_text("name,score\nann,3\n")


def write_garbage_with_sqlite_header(path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)


SQLITE_REFUSALS = [
    # (what the file is, how it is made, write, what the message says)
    ("missing, to read", None, False, "no such database file"),
    ("a directory", make_directory, True, "is a directory (allowed: a SQLite database file)"),
    ("a directory", make_directory, False, "is a directory (allowed: a SQLite database file)"),
    ("a text file", write_text, True, "is not a SQLite database"),
    ("a text file", write_text, False, "is not a SQLite database"),
    ("corrupt", write_garbage_with_sqlite_header, False, "is not a SQLite database"),
    ("another program's", other_programs_database, True, "is not an hpo (Optuna) database"),
    ("another program's", other_programs_database, False, "is not an hpo (Optuna) database"),
    ("empty, to read", lambda path: path.touch(), False, "is not an hpo (Optuna) database"),
]


def test_check_sqlite_file_names_the_other_programs_tables(tmp_path):
    path = tmp_path / "notes.db"
    other_programs_database(path)
    with pytest.raises(UsageError, match=r"\(it holds other tables: notes\)$"):
        check_sqlite_file(f"sqlite:///{path}", write=False)


def test_a_schema_another_process_is_creating_is_left_to_the_check_under_the_lock(tmp_path):
    """Four processes on a fresh file: one holds the lock and has made Optuna's first table;
    another's check before the lock lets it pass, the check under the lock (when the schema is
    whole, or refused) decides."""
    path = tmp_path / "half.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE studies (study_id INTEGER PRIMARY KEY)")
    url = f"sqlite:///{path}"
    check_sqlite_file(url, write=True, creating_ok=True)
    with pytest.raises(UsageError, match="not an hpo"):
        check_sqlite_file(url, write=True)
    check_sqlite_file(url, write=False, creating_ok=True)  # a reader (hpo studies) too
    with pytest.raises(UsageError, match="not an hpo"):  # and after the lock it is refused
        open_storage(url, write=False)


@pytest.mark.parametrize("made", ["nothing", "studies"], ids=["empty file", "first table"])
def test_a_reader_waits_for_a_schema_being_created_instead_of_refusing_it(
    tmp_path, monkeypatch, made
):
    """A reader that opens the file while a run is creating its schema (Optuna's tables made
    one by one) waits for the creator's lock, then reads the whole schema: it used to say
    'not an hpo (Optuna) database' (seen as a flaky test polling a starting run)."""
    path = tmp_path / "new.db"
    url = f"sqlite:///{path}"
    holder = open(lock_path(url), "a")  # noqa: SIM115 - the creator's lock, closed below
    fcntl.flock(holder, fcntl.LOCK_EX)
    with sqlite3.connect(path) as db:  # the creator's file, with none or some of its tables
        if made == "studies":
            db.execute("CREATE TABLE studies (study_id INTEGER PRIMARY KEY)")
    opened, locking = [], threading.Event()
    storage_lock = hpo.storage.storage_lock

    def noted_lock(*args, **options):  # the reader got past its checks to the lock
        locking.set()
        return storage_lock(*args, **options)

    monkeypatch.setattr(hpo.storage, "storage_lock", noted_lock)
    reader = threading.Thread(target=lambda: opened.append(open_storage(url, write=False)))
    reader.start()
    assert locking.wait(timeout=30)  # not refused before the lock
    time.sleep(0.3)
    assert reader.is_alive() and not opened  # waiting for the creator, not reading
    path.unlink()  # the creator finishes: here, a whole schema made by Optuna in its place
    optuna.create_study(storage=f"sqlite:///{path}", study_name="made")
    fcntl.flock(holder, fcntl.LOCK_UN)
    holder.close()
    reader.join(timeout=30)
    assert opened and optuna.get_all_study_names(opened[0]) == ["made"]


@pytest.mark.parametrize("write", [True, False])
def test_check_sqlite_file_accepts_an_hpo_database_unchanged(tmp_path, write):
    hpo_database(tmp_path / "studies.db")
    before = listing(tmp_path)
    check_sqlite_file(f"sqlite:///{tmp_path / 'studies.db'}", write=write)
    after = listing(tmp_path)
    # SQLite's read-only probe of a WAL database leaves an empty -wal and a -shm index beside
    # it (a read-only connection may not delete them); the database itself is untouched.
    assert after.pop("studies.db-wal", b"") == b""
    after.pop("studies.db-shm", None)
    assert after == before


@pytest.mark.parametrize("exists", [False, True], ids=["missing", "empty"])
def test_check_sqlite_file_accepts_a_new_database_to_write(tmp_path, exists):
    path = tmp_path / "studies.db"
    if exists:
        path.touch()  # SQLite's empty database: hpo creates the schema in it
    before = listing(tmp_path)
    check_sqlite_file(f"sqlite:///{path}", write=True)
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    "url", ["sqlite:///:memory:", "postgresql://ann:pw@db/hpo", "journal:///nowhere/x.log"]
)
def test_check_sqlite_file_ignores_urls_without_a_database_file(url):
    check_sqlite_file(url, write=False)


@pytest.mark.skipif(AS_ROOT, reason=ROOT_WRITES)
def test_check_sqlite_file_refuses_a_read_only_database_to_write(tmp_path):
    path = tmp_path / "studies.db"
    hpo_database(path)
    path.chmod(0o444)
    try:
        check_sqlite_file(f"sqlite:///{path}", write=False)  # reading is fine
        with pytest.raises(UsageError, match="is read-only"):
            check_sqlite_file(f"sqlite:///{path}", write=True)
    finally:
        path.chmod(0o644)


@pytest.mark.skipif(AS_ROOT, reason=ROOT_WRITES)
def test_check_sqlite_file_refuses_a_new_database_in_a_read_only_directory(tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        with pytest.raises(UsageError, match="is read-only"):
            check_sqlite_file(f"sqlite:///{directory / 'studies.db'}", write=True)
        assert list(directory.iterdir()) == []
    finally:
        directory.chmod(0o755)


# ---------------------------------------------------------------------------------------------
# check_journal_file


def write_json_list(path) -> None:
    path.write_text("[1, 2, 3]\n")


def write_json_without_op_code(path) -> None:
    path.write_text('{"worker_id": "w"}\n')


JOURNAL_REFUSALS = [
    ("missing, to read", None, False, "no such journal file"),
    ("a directory", make_directory, True, "is a directory (allowed: an Optuna journal file)"),
    ("a text file", write_text, True, "is not an Optuna journal file"),
    ("a text file", write_text, False, "is not an Optuna journal file"),
    ("a JSON list", write_json_list, False, "is not an Optuna journal file"),
    ("JSON without op_code", write_json_without_op_code, True, "is not an Optuna journal file"),
    ("a SQLite database", other_programs_database, False, "is not an Optuna journal file"),
]


CHECKS = {
    "sqlite": (check_sqlite_file, "studies.db", "sqlite:///"),
    "journal": (check_journal_file, "study.log", "journal://"),
}
"""Each file check, the file it is tried on, and the prefix of its URL (before an absolute path)."""
REFUSALS = [("sqlite", *case) for case in SQLITE_REFUSALS] + [
    ("journal", *case) for case in JOURNAL_REFUSALS
]


@pytest.mark.parametrize(
    ("kind", "make", "write", "message"),
    [(case[0], *case[2:]) for case in REFUSALS],
    ids=[f"{c[0]}-{c[1]}-{'write' if c[3] else 'read'}" for c in REFUSALS],
)
def test_a_file_check_refuses_naming_the_file_and_touching_nothing(
    tmp_path, kind, make, write, message
):
    check, name, prefix = CHECKS[kind]
    path = tmp_path / name
    if make is not None:
        make(path)
    before = listing(tmp_path)
    with pytest.raises(UsageError, match=f"^{re.escape(prefix)}/") as refused:
        check(f"{prefix}{path}", write=write)
    assert message in str(refused.value)
    assert str(path) in str(refused.value)
    assert listing(tmp_path) == before  # nothing created, nothing changed


@pytest.mark.parametrize("kind", CHECKS)
def test_a_file_check_refuses_a_missing_directory(tmp_path, kind):
    check, name, prefix = CHECKS[kind]
    path = tmp_path / "gone" / name
    with pytest.raises(UsageError) as refused:
        check(f"{prefix}{path}", write=True)
    assert str(refused.value) == f"{prefix}{path}: directory {path.parent} does not exist"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("write", [True, False])
def test_check_journal_file_accepts_an_optuna_journal_unchanged(tmp_path, write):
    optuna_journal(tmp_path / "study.log")
    before = listing(tmp_path)
    check_journal_file(f"journal://{tmp_path / 'study.log'}", write=write)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("exists", [False, True], ids=["missing", "empty"])
def test_check_journal_file_accepts_a_new_journal_to_write(tmp_path, exists):
    path = tmp_path / "study.log"
    if exists:
        path.touch()
    check_journal_file(f"journal://{path}", write=True)
    assert listing(tmp_path) == ({"study.log": b""} if exists else {})


@pytest.mark.skipif(AS_ROOT, reason=ROOT_WRITES)
def test_check_journal_file_refuses_a_read_only_journal_to_write(tmp_path):
    path = tmp_path / "study.log"
    optuna_journal(path)
    path.chmod(0o444)
    try:
        check_journal_file(f"journal://{path}", write=False)
        with pytest.raises(UsageError, match="is read-only"):
            check_journal_file(f"journal://{path}", write=True)
    finally:
        path.chmod(0o644)


def pretend_read_only(monkeypatch, directory) -> None:
    """What a user other than root would see: nothing under ``directory`` is writable."""
    access = os.access

    def no_write_under_directory(path, mode, **kwargs):
        if mode & os.W_OK and str(path).startswith(str(directory)):
            return False
        return access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", no_write_under_directory)


@pytest.mark.parametrize(
    ("kind", "exists"),
    [("sqlite", True), ("sqlite", False), ("journal", True)],
    ids=["sqlite-database", "sqlite-new-in-directory", "journal"],
)
def test_a_read_only_file_or_directory_is_refused_to_write_but_read(
    tmp_path, monkeypatch, kind, exists
):
    if kind == "sqlite":
        path, check = tmp_path / "studies.db", check_sqlite_file
        if exists:
            hpo_database(path)
        url = f"sqlite:///{path}"
    else:
        path, check = tmp_path / "study.log", check_journal_file
        optuna_journal(path)
        url = f"journal://{path}"
    pretend_read_only(monkeypatch, tmp_path)
    if exists:
        check(url, write=False)  # reading is fine
    with pytest.raises(UsageError) as refused:
        check(url, write=True)
    shown = path if exists else tmp_path
    assert str(refused.value) == f"{url}: {shown} is read-only (hpo needs to write trials there)"


# ---------------------------------------------------------------------------------------------
# open_storage and close_storages


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_open_storage_returns_the_same_storage_for_a_url_until_closed(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 'a.db'}" if kind == "sqlite" else f"journal://{tmp_path / 'a'}"
    first = open_storage(url)
    assert open_storage(url) is first
    assert open_storage(f"{url}-other") is not first
    close_storages()
    again = open_storage(url)
    assert again is not first
    optuna.create_study(study_name="after-close", storage=again)  # the new one works
    assert open_storage(url) is again


def test_open_storage_wires_hpos_heartbeats_when_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "2")
    monkeypatch.setenv("HPO_GRACE_PERIOD", "7")
    storage = open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    assert storage.get_heartbeat_interval() == 2
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback)


def test_open_storage_to_read_has_no_heartbeats(tmp_path):
    hpo_database(tmp_path / "a.db")
    storage = open_storage(f"sqlite:///{tmp_path / 'a.db'}", write=False)
    assert storage.get_heartbeat_interval() is None
    assert storage.get_heartbeat_stale_trial_callback() is None


def journal_mode(path) -> str:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        connection.close()


def test_open_storage_to_write_turns_on_wal(tmp_path):
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}")  # Optuna's default mode
    assert journal_mode(tmp_path / "a.db") == "delete"
    optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'a.db'}"))
    assert journal_mode(tmp_path / "a.db") == "wal"


def test_open_storage_to_read_leaves_the_journal_mode(tmp_path):
    optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'a.db'}")
    storage = open_storage(f"sqlite:///{tmp_path / 'a.db'}", write=False)
    assert optuna.load_study(study_name="s", storage=storage).trials == []
    close_storages()
    assert journal_mode(tmp_path / "a.db") == "delete"


TRIALS = 5


@pytest.mark.parametrize("reader_open", [False, True], ids=["alone", "beside-a-reader"])
def test_close_storages_folds_the_wal_into_the_database_file(tmp_path, reader_open):
    path = tmp_path / "studies.db"
    wal = tmp_path / "studies.db-wal"
    study = optuna.create_study(study_name="folded", storage=open_storage(f"sqlite:///{path}"))
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=TRIALS)
    assert wal.stat().st_size > 0  # the trials are in the WAL: there is something to fold
    # Another reader (a dashboard, say) keeps SQLite from folding the WAL on the last close.
    other = sqlite3.connect(path) if reader_open else None
    try:
        if other is not None:
            assert other.execute("SELECT count(*) FROM trials").fetchone() == (TRIALS,)
        close_storages()
        assert not wal.exists() or wal.stat().st_size == 0
    finally:
        if other is not None:
            other.close()
    alone = tmp_path / "copy" / "studies.db"
    alone.parent.mkdir()
    shutil.copyfile(path, alone)  # without the -wal and -shm beside it
    reader = sqlite3.connect(f"{alone.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = reader.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
    finally:
        reader.close()
    assert rows == [(n, "COMPLETE") for n in range(TRIALS)]
    copied = optuna.load_study(
        study_name="folded", storage=f"sqlite:///file:{alone}?mode=ro&uri=true"
    )
    assert [t.params for t in copied.trials] == [t.params for t in study.trials]


def test_close_storages_with_nothing_open_does_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    close_storages()
    close_storages()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("write", "reason"), [(True, "directory {} does not exist"), (False, "no such database file")]
)
def test_open_storage_refuses_a_missing_directory_creating_nothing(tmp_path, write, reason):
    directory = tmp_path / "gone"
    url = f"sqlite:///{directory / 'studies.db'}"
    with pytest.raises(UsageError) as refused:
        open_storage(url, write=write)
    assert str(refused.value) == f"{url}: {reason.format(directory)}"
    assert list(tmp_path.iterdir()) == []


def test_open_storage_refuses_a_missing_database_to_read_creating_nothing(tmp_path):
    with pytest.raises(UsageError, match="no such database file"):
        open_storage(f"sqlite:///{tmp_path / 'none.db'}", write=False)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# retrying


def operational_error() -> Exception:
    return sqlalchemy.exc.OperationalError(
        "SELECT 1", {}, Exception("server closed the connection")
    )


TRANSIENT = {
    "OperationalError": operational_error,
    "InterfaceError": lambda: sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("gone")),
    "DisconnectionError": lambda: sqlalchemy.exc.DisconnectionError("gone"),
    "StorageInternalError": lambda: optuna.exceptions.StorageInternalError("gone"),
}


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    """The delays ``retrying`` waits, recorded instead of slept."""
    delays: list[float] = []
    monkeypatch.setattr(hpo.storage, "time", types.SimpleNamespace(sleep=delays.append))
    return delays


class Flaky:
    """A storage call that fails with ``error()`` ``failures`` times, then returns "done"."""

    def __init__(self, error, failures: int) -> None:
        self.error = error
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error()
        return "done"


def test_transient_errors_are_the_ones_listed():
    assert set(TRANSIENT) == {e.__name__ for e in TRANSIENT_ERRORS}


def test_retrying_returns_at_once_when_the_call_succeeds(slept):
    call = Flaky(operational_error, failures=0)
    assert retrying(call, what="reading the study", delays=(0.01, 0.02)) == "done"
    assert call.calls == 1
    assert slept == []


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_retrying_waits_each_delay_in_turn_then_succeeds(slept, error):
    call = Flaky(error, failures=2)
    assert retrying(call, what="claiming a trial", delays=(0.01, 0.02, 0.03)) == "done"
    assert call.calls == 3
    assert slept == [0.01, 0.02]


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_retrying_raises_run_error_naming_what_after_the_last_delay(slept, error):
    call = Flaky(error, failures=10)
    with pytest.raises(RunError) as raised:
        retrying(call, what="claiming a trial", delays=(0.01, 0.02))
    assert call.calls == 3  # once, then once after each delay
    assert slept == [0.01, 0.02]
    assert str(raised.value).startswith("claiming a trial: the storage stayed unreachable (")
    assert isinstance(raised.value.__cause__, TRANSIENT_ERRORS)


def test_retrying_gives_the_reason_of_the_last_failure(slept):
    with pytest.raises(RunError) as raised:
        retrying(Flaky(operational_error, failures=1), what="telling a trial", delays=())
    assert str(raised.value) == (
        "telling a trial: the storage stayed unreachable (server closed the connection)"
    )


def test_retrying_waits_the_default_delays(slept):
    call = Flaky(operational_error, failures=len(RETRY_DELAYS))
    assert retrying(call, what="reading the study") == "done"
    assert slept == list(RETRY_DELAYS)


@pytest.mark.parametrize(
    "error",
    [
        lambda: ValueError("a bug"),
        lambda: KeyError("no such study"),
        lambda: sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate")),
        lambda: optuna.exceptions.UpdateFinishedTrialError("finished"),
    ],
    ids=["ValueError", "KeyError", "IntegrityError", "UpdateFinishedTrialError"],
)
def test_retrying_does_not_retry_other_errors(slept, error):
    call = Flaky(error, failures=1)
    with pytest.raises(type(error())):
        retrying(call, what="x", delays=(0.01,))
    assert call.calls == 1
    assert slept == []


# ---------------------------------------------------------------------------------------------
# heartbeat_settings


def test_heartbeat_settings_default():
    assert heartbeat_settings() == (HEARTBEAT_INTERVAL, GRACE_PERIOD) == (10, 60)
    assert MAX_STALE_TRIAL_RETRIES == 3


def test_heartbeat_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPO_GRACE_PERIOD", "3")
    assert heartbeat_settings() == (1, 3)


def test_heartbeat_settings_take_the_default_for_an_unset_variable(monkeypatch):
    monkeypatch.setenv("HPO_GRACE_PERIOD", "61")
    assert heartbeat_settings() == (HEARTBEAT_INTERVAL, 61)
    monkeypatch.delenv("HPO_GRACE_PERIOD")
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "5")
    assert heartbeat_settings() == (5, GRACE_PERIOD)


@pytest.mark.parametrize("name", ["HPO_HEARTBEAT_INTERVAL", "HPO_GRACE_PERIOD"])
@pytest.mark.parametrize("text", ["soon", "", "0", "-1", "1.5", "1e3"])
def test_heartbeat_settings_refuse_a_value_that_is_no_whole_positive_number(
    monkeypatch, name, text
):
    monkeypatch.setenv(name, text)
    with pytest.raises(UsageError) as refused:
        heartbeat_settings()
    assert str(refused.value) == (f"${name}: {text!r} (allowed: a whole number of seconds >= 1)")


@pytest.mark.parametrize(("interval", "grace"), [("5", "5"), ("10", "3")])
def test_heartbeat_settings_refuse_a_grace_period_within_the_interval(monkeypatch, interval, grace):
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", interval)
    monkeypatch.setenv("HPO_GRACE_PERIOD", grace)
    with pytest.raises(UsageError) as refused:
        heartbeat_settings()
    assert str(refused.value) == (
        f"$HPO_GRACE_PERIOD: {grace} (allowed: more than the heartbeat interval, {interval} s)"
    )


def test_open_storage_to_write_refuses_bad_heartbeat_settings_before_creating_anything(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("HPO_GRACE_PERIOD", "soon")
    with pytest.raises(UsageError, match=r"^\$HPO_GRACE_PERIOD"):
        open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    assert list(tmp_path.iterdir()) == []
