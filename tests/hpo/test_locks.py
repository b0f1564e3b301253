"""The storage's cross-process lock: a file lock beside SQLite and journal files, a PostgreSQL
advisory lock on a server.

Exclusion is checked three ways: a probe that tries the same lock without waiting (``flock``
with ``LOCK_NB``, ``pg_try_advisory_lock``), a second holder in another thread, and a second
holder in another process. PostgreSQL comes from ``$HPO_TEST_POSTGRES_URL`` (the
``postgres_url`` fixture of ``conftest.py``: unset or unreachable, skipped with the reason; under
``CI=true``, failed);
each test gets its own database.
"""

import fcntl
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy

from hpo.locks import (
    ADVISORY_LOCK_KEY,
    LOCK_SUFFIX,
    Busy,
    dispose_lock_engines,
    lock_path,
    only_one,
    storage_lock,
)

KINDS = ("sqlite", "journal", "postgresql")
WAIT = 0.4
"""Seconds a second holder is given to (wrongly) get a lock that is held."""


def psycopg_url(url: str) -> sqlalchemy.engine.URL:
    return sqlalchemy.engine.make_url(url).set(drivername="postgresql+psycopg")


@pytest.fixture(autouse=True)
def no_lock_engines_left():
    yield
    dispose_lock_engines()


@pytest.fixture(params=KINDS)
def url(request, tmp_path) -> str:
    """A storage URL of each kind that has a lock; the files need not exist."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    if request.param == "journal":
        return f"journal://{tmp_path / 'study.log'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=KINDS[:2])
def file_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    return f"journal://{tmp_path / 'study.log'}"


def held_elsewhere(url: str) -> bool:
    """Whether another holder has the storage's lock: tried without waiting, let go at once."""
    path = lock_path(url)
    if path is not None:
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    engine = sqlalchemy.create_engine(psycopg_url(url), poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as c:
            key = {"k": ADVISORY_LOCK_KEY}
            got = c.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), key).scalar()
            if got:
                c.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), key)
            return not got
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# Where the lock lives


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////data/runs/studies.db", "/data/runs/studies.db.hpo-lock"),
        ("sqlite:///studies.db", "studies.db.hpo-lock"),
        # Not "study.log.lock": Optuna's journal file backend takes that name for its own lock.
        ("journal:///data/runs/study.log", "/data/runs/study.log.hpo-lock"),
        ("journal:study.log", "study.log.hpo-lock"),
    ],
)
def test_lock_file_lies_beside_the_storage_file(url, expected):
    assert str(lock_path(url)) == expected
    assert LOCK_SUFFIX == ".hpo-lock"


@pytest.mark.parametrize(
    "url", ["postgresql://ann:pw@db/hpo", "sqlite:///:memory:", "mysql://ann:pw@db/hpo"]
)
def test_server_and_in_memory_storages_have_no_lock_file(url):
    assert lock_path(url) is None


def test_the_lock_creates_its_file_but_not_the_database(file_url, tmp_path):
    with storage_lock(file_url):
        assert sorted(p.name for p in tmp_path.iterdir()) == [lock_path(file_url).name]
    assert lock_path(file_url).exists()  # kept: deleting a lock file others may wait on races


def test_a_missing_directory_raises_oserror(tmp_path):
    # open_storage turns this into a UsageError naming the storage.
    with (
        pytest.raises(FileNotFoundError, match="hpo-lock"),
        storage_lock(f"sqlite:///{tmp_path / 'gone' / 'studies.db'}"),
    ):
        pytest.fail("the block must not run")


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "mysql://ann:pw@db.invalid/hpo"])
def test_a_storage_without_a_lock_runs_the_block_unlocked(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = []
    with storage_lock(url), storage_lock(url):  # nested: nothing to wait for
        ran.append(True)
    assert ran == [True]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# One holder at a time


def test_a_held_lock_excludes_others_and_is_free_afterwards(url):
    assert not held_elsewhere(url)
    with storage_lock(url):
        assert held_elsewhere(url)
    assert not held_elsewhere(url)


def test_the_lock_is_released_when_the_block_raises(url):
    with pytest.raises(RuntimeError, match="boom"), storage_lock(url):
        raise RuntimeError("boom")
    assert not held_elsewhere(url)


def test_a_second_holder_in_another_thread_waits(file_url):
    entered = threading.Event()

    def second_holder():
        with storage_lock(file_url):
            entered.set()

    with storage_lock(file_url):
        thread = threading.Thread(target=second_holder, daemon=True)
        thread.start()
        assert not entered.wait(WAIT)
    assert entered.wait(5)
    thread.join(5)


SECOND_PROCESS = """
    import sys
    from hpo.locks import storage_lock
    print("waiting", flush=True)
    with storage_lock(sys.argv[1]):
        print("acquired", flush=True)
"""


def test_a_second_process_waits_until_the_first_lets_go(url):
    with storage_lock(url):
        process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SECOND_PROCESS), url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout.readline() == "waiting\n", process.stderr.read()
            time.sleep(WAIT)
            assert process.poll() is None  # still waiting for the lock
        except BaseException:
            process.kill()
            process.communicate()
            raise
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out == "acquired\n"


# ---------------------------------------------------------------------------------------------
# PostgreSQL: the advisory lock's connection


def connections_to(url: str) -> int:
    """Sessions the server has open on ``url``'s database, seen from the server's own."""
    database = sqlalchemy.engine.make_url(url).database
    admin = sqlalchemy.create_engine(
        psycopg_url(url).set(database="postgres"), poolclass=sqlalchemy.pool.NullPool
    )
    try:
        with admin.connect() as c:
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = :d"
            return c.execute(sqlalchemy.text(query), {"d": database}).scalar()
    finally:
        admin.dispose()


def wait_for_connections(url: str, expected: int, timeout: float = 1.5) -> int:
    """The count once it is ``expected`` (the server ends a session a moment after its client)."""
    deadline = time.monotonic() + timeout
    count = connections_to(url)
    while count != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        count = connections_to(url)
    return count


def test_the_advisory_lock_keeps_one_pooled_connection_until_disposed(postgres_url):
    assert connections_to(postgres_url) == 0
    for _ in range(3):  # one connection, reused
        with storage_lock(postgres_url):
            pass
    assert connections_to(postgres_url) == 1
    dispose_lock_engines()
    assert wait_for_connections(postgres_url, 0) == 0
    dispose_lock_engines()  # nothing left: a no-op


def test_the_advisory_lock_works_again_after_dispose(postgres_url):
    with storage_lock(postgres_url):
        pass
    dispose_lock_engines()
    with storage_lock(postgres_url):
        assert held_elsewhere(postgres_url)
    assert not held_elsewhere(postgres_url)


def test_an_unreachable_server_raises_sqlalchemy_error():
    # open_storage turns this into a UsageError with the password masked.
    pytest.importorskip("psycopg", reason="psycopg is missing: pip install 'hpo[postgres]'")
    url = "postgresql://ann:pw@127.0.0.1:1/hpo?connect_timeout=2"  # nothing listens on port 1
    with pytest.raises(sqlalchemy.exc.OperationalError), storage_lock(url):
        pytest.fail("the block must not run")


@pytest.mark.slow
def test_a_writer_waiting_on_another_process_write_transaction_says_so(tmp_path):
    """Item 4 of the faults issue: SQLite's busy wait is silent; a statement waiting 5 s on
    another process's write transaction gets one line naming it, then goes on. The holder
    holds 15 s: the waiting command's start-up on a loaded machine ate an 8-s hold's margin."""
    import subprocess
    import sys

    from tests.hpo.conftest import write_spec

    spec = write_spec(tmp_path / "tiny.toml", trials=1, epochs=1)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    argv = [sys.executable, "-m", "hpo", "run", str(spec), "--storage", url, "--quiet"]
    argv += ["--no-report", "--in-process"]
    assert subprocess.run(argv, capture_output=True, timeout=120).returncode == 0
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(tmp_path / 'w.db')!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "c.execute('UPDATE studies SET study_name = study_name')\n"
            "print('holding', flush=True); time.sleep(15); c.execute('COMMIT')\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "holding"
    done = subprocess.run([*argv, "--trials", "2"], capture_output=True, text=True, timeout=120)
    holder.wait(timeout=30)
    assert done.returncode == 0, done.stderr
    assert "holds a write transaction" in done.stderr
    assert f"process {holder.pid}" in done.stderr


def task_lock_files(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(LOCK_SUFFIX))


def test_a_task_lock_refuses_a_second_holder_and_leaves_no_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    with only_one(url, "confirm a"):
        (held,) = task_lock_files(tmp_path)
        assert (tmp_path / held).read_text() == str(os.getpid())
        with pytest.raises(Busy) as busy, only_one(url, "confirm a"):
            pass
        assert busy.value.holder == os.getpid()
        with only_one(url, "confirm b"):  # another task: its own lock
            assert len(task_lock_files(tmp_path)) == 2
    assert task_lock_files(tmp_path) == []
    with only_one(url, "confirm a"):  # taken again after the release
        pass
    assert task_lock_files(tmp_path) == []


def test_a_task_lock_whose_file_was_removed_before_it_locked_takes_the_new_file(
    tmp_path, monkeypatch
):
    """The holder removes the file, then lets go: a process that opened the file before that
    locks a file no longer at the path. It must take the path's file instead, or a third process
    would hold the task beside it."""
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    real_flock = fcntl.flock
    released = []

    def flock_after_a_release(handle, operation):
        if not released:  # between this process's open and its lock, the holder let go
            released.append(handle.name)
            os.unlink(handle.name)
        return real_flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_release)
    with only_one(url, "confirm a"):
        assert released and task_lock_files(tmp_path) == [Path(released[0]).name]
        assert Path(released[0]).read_text() == str(os.getpid())
