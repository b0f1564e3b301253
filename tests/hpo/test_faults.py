"""Scale-out and faults against real storages: PostgreSQL, SQLite and the journal file.

PostgreSQL tests use ``$HPO_TEST_POSTGRES_URL`` (``.ci/run`` sets it, and then an unreachable
server fails them); elsewhere they skip with the reason. Heartbeats run fast here:
``HPO_HEARTBEAT_INTERVAL=1`` and ``HPO_GRACE_PERIOD=3``.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo.cli import main
from hpo.storage import open_storage
from tests.hpo.conftest import write_spec

FAST_HEARTBEAT = {"HPO_HEARTBEAT_INTERVAL": "1", "HPO_GRACE_PERIOD": "3"}


@pytest.fixture
def fast_heartbeat(monkeypatch):
    for key, value in FAST_HEARTBEAT.items():
        monkeypatch.setenv(key, value)


def run_quietly(spec, url: str, *flags: str) -> int:
    """``hpo run SPEC --storage URL --quiet --no-report FLAGS...`` in-process."""
    return main(["run", str(spec), "--storage", url, "--quiet", "--no-report", *flags])


def hpo_process(*argv: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hpo", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def finished_trials(url: str, name: str = "tiny") -> list:
    storage = open_storage(url, write=False)
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def assert_exact_target(url: str, target: int) -> None:
    trials = finished_trials(url)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == target
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def start_workers(url: str, n: int, env: dict | None = None) -> list[subprocess.Popen]:
    return [
        hpo_process("worker", "--study", "tiny", "--storage", url, "--quiet", env=env)
        for _ in range(n)
    ]


def wait_all(procs: list[subprocess.Popen], timeout: float = 300) -> None:
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err
        assert "locked" not in err and "IntegrityError" not in err, err


def integrity_ok(url: str) -> bool:
    path = url[len("sqlite:///") :]
    with sqlite3.connect(path) as c:
        return c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow
def test_four_workers_on_postgresql_reach_exactly_the_target(tmp_path, postgres_url):
    spec = write_spec(tmp_path / "tiny.toml", trials=40, epochs=2)
    argv = ["run", str(spec), "--storage", postgres_url, "--trials", "40", "--create-only"]
    assert main(argv) == 0  # the schema, the study and its target; no trial
    assert finished_trials(postgres_url) == []
    wait_all(start_workers(postgres_url, 4))
    assert_exact_target(postgres_url, 40)


@pytest.mark.slow
def test_four_processes_on_a_fresh_sqlite_file_at_the_same_instant(tmp_path):
    spec = write_spec(tmp_path / "tiny.toml", epochs=2)
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    procs = [
        hpo_process("run", str(spec), "--storage", url, "--trials", "16", "--quiet", "--no-report")
        for _ in range(4)
    ]
    wait_all(procs)
    assert_exact_target(url, 16)
    assert integrity_ok(url)


def test_journal_storage_with_two_workers(tmp_path):
    spec = write_spec(tmp_path / "tiny.toml", epochs=2)
    url = f"journal:///{tmp_path / 'study.log'}"
    assert run_quietly(spec, url, "--trials", "8", "--workers", "2") == 0
    assert_exact_target(url, 8)


def slow_spec(path, trials: int):
    """Trials of about five seconds: every digit, two layers of 64, 1,500 epochs."""
    spec = write_spec(path, epochs=1500, trials=trials)
    text = spec.read_text().replace("train_size = 200\n", "")
    spec.write_text(text.replace("hidden = [16]", "hidden = [64, 64]"))
    return spec


def kill_a_worker_mid_trial(url: str, spec, target: int) -> int:
    """Start a worker, SIGKILL it while a trial runs; return that trial's number."""
    assert run_quietly(spec, url, "--trials", str(target), "--create-only") == 0
    worker = start_workers(url, 1, env=FAST_HEARTBEAT)[0]
    deadline = time.monotonic() + 120
    running = []
    while time.monotonic() < deadline and not running:
        time.sleep(0.3)
        running = [t for t in finished_trials(url) if t.state == TrialState.RUNNING]
    assert running, "no trial started"
    time.sleep(1.2)  # past its first heartbeat
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=30)
    (killed,) = [t for t in finished_trials(url) if t.state == TrialState.RUNNING]
    return killed.number


def assert_killed_trial_was_retried(url: str, killed: int, target: int) -> None:
    trials = finished_trials(url)
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1
    assert retries[0].params == trials[killed].params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert_exact_target(url, target)


@pytest.mark.slow
@pytest.mark.usefixtures("fast_heartbeat")
def test_sigkilled_worker_on_sqlite_is_retried_and_the_target_reached(tmp_path):
    spec = slow_spec(tmp_path / "slow.toml", trials=1)
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    killed = kill_a_worker_mid_trial(url, spec, target=1)
    resumed = hpo_process(
        "run",
        str(spec),
        "--storage",
        url,
        "--trials",
        "1",
        "--quiet",
        "--no-report",
        env=FAST_HEARTBEAT,
    )
    wait_all([resumed])
    assert_killed_trial_was_retried(url, killed, 1)
    assert integrity_ok(url)


@pytest.mark.slow
@pytest.mark.usefixtures("fast_heartbeat")
def test_sigkilled_worker_on_postgresql_is_retried_and_the_target_reached(tmp_path, postgres_url):
    spec = slow_spec(tmp_path / "slow.toml", trials=1)
    killed = kill_a_worker_mid_trial(postgres_url, spec, target=1)
    wait_all(start_workers(postgres_url, 2, env=FAST_HEARTBEAT))
    assert_killed_trial_was_retried(postgres_url, killed, 1)


@pytest.mark.slow  # ~5 s: waits out a grace period; CI runs it (pytest -m slow)
@pytest.mark.usefixtures("fast_heartbeat")
def test_trial_orphaned_before_its_first_heartbeat_is_swept(tmp_path):
    spec = write_spec(tmp_path / "tiny.toml", epochs=2, trials=3)
    url = f"sqlite:///{tmp_path / 'orphan.db'}"
    assert run_quietly(spec, url, "--create-only") == 0
    # A claim killed right after ask(): RUNNING, no heartbeat ever recorded, no parameter.
    orphan = optuna.load_study(study_name="tiny", storage=open_storage(url)).ask()
    time.sleep(3.5)
    assert run_quietly(spec, url, "--trials", "3") == 0
    trials = finished_trials(url)
    assert trials[orphan.number].state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retry) == 1 and retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert_exact_target(url, 3)
    assert integrity_ok(url)


def test_a_password_with_braces_and_percent_works_and_is_never_printed(postgres_url, capsys):
    # The server trusts local connections, so any password connects: what is tested is that
    # hpo and Optuna carry it through URL templates and config parsers, and never print it.
    url = sqlalchemy.engine.make_url(postgres_url)
    typed = f"postgresql://{url.username}:p{{a}}%s@{url.host}:{url.port}/{url.database}"
    encoded = url.set(password="p{a}%s@w:d").render_as_string(hide_password=False)
    for text in (typed, encoded):
        assert main(["run", "--storage", text, "--create-only"]) == 0
        assert main(["studies", "--storage", text]) == 0
        out, err = capsys.readouterr()
        assert "p{a}" not in out + err and "p%7Ba" not in out + err
        assert "***" in out


def test_corrupted_sqlite_file_is_refused_untouched(tmp_path, capsys):
    path = tmp_path / "broken.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    before = path.read_bytes()
    assert main(["studies", "--storage", f"sqlite:///{path}"]) == 2
    assert "is not a SQLite database" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_a_journal_path_that_is_not_a_journal_is_refused(tmp_path, capsys):
    path = tmp_path / "notes.log"
    path.write_text("not a journal\n")
    assert main(["run", "--storage", f"journal:///{path}", "--quiet", "--no-report"]) == 2
    assert "is not an Optuna journal file" in capsys.readouterr().err
    assert path.read_text() == "not a journal\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files: nothing to refuse")
def test_read_only_database_is_refused(tiny_spec, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'ro.db'}"
    assert run_quietly(tiny_spec, url, "--trials", "1") == 0
    (tmp_path / "ro.db").chmod(0o444)
    assert run_quietly(tiny_spec, url) == 2
    assert "read-only" in capsys.readouterr().err


def test_bad_heartbeat_setting_exits_2(tiny_spec, db_url, monkeypatch, capsys):
    monkeypatch.setenv("HPO_GRACE_PERIOD", "soon")
    assert main(["run", str(tiny_spec), "--storage", db_url, "--quiet"]) == 2
    assert "$HPO_GRACE_PERIOD: 'soon'" in capsys.readouterr().err
