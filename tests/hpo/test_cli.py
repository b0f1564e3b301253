"""``python -m hpo``: commands in-process through ``main``, and as subprocesses where it matters
(two processes at once, SIGINT)."""

import contextlib
import hashlib
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo.cli import main
from hpo.records import SPEC_ATTR
from hpo.storage import open_storage
from tests.hpo.conftest import write_spec
from trainer.checkpoint import load_checkpoint, predict_raw
from trainer.datasets import load_dataset


def hpo(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpo", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def file_digests(db_path: Path) -> dict[str, str]:
    """Hashes of the database and its WAL side files, as they are on disk."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(db_path.parent.glob(db_path.name + "*"))
        if not p.name.endswith(".hpo-lock")
    }


def test_run_prints_the_top_configurations_and_the_storage(tiny_spec, db_url, capsys):
    assert main(["run", str(tiny_spec), "--storage", db_url, "--quiet", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "study 'tiny': 6 finished" in out
    assert "top configurations:" in out and "learning_rate" in out
    assert f"storage: {db_url}" in out


@pytest.mark.slow
def test_run_as_a_subprocess_with_two_workers(tiny_spec, db_url):
    done = hpo(
        "run",
        str(tiny_spec),
        "--storage",
        db_url,
        "--workers",
        "2",
        "--trials",
        "6",
        "--quiet",
        "--no-report",
    )
    assert done.returncode == 0, done.stderr
    trials = optuna.load_study(study_name="tiny", storage=db_url).get_trials()
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_two_processes_on_a_fresh_sqlite_file_at_the_same_instant(tiny_spec, tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    argv = [
        sys.executable,
        "-m",
        "hpo",
        "run",
        str(tiny_spec),
        "--storage",
        url,
        "--trials",
        "8",
        "--quiet",
        "--no-report",
    ]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err and "IntegrityError" not in err
    trials = optuna.load_study(study_name="tiny", storage=url).get_trials()
    assert sorted(t.number for t in trials) == list(range(8))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


@pytest.mark.parametrize(
    ("spec_text_change", "expected"),
    [
        (("[training]", "[training]\nepoch = 3"), "training.epoch: unknown field"),
        (("epochs = 3", 'epochs = "three"'), 'training.epochs: "three" is not an integer'),
        (("low = 0.001, high = 0.1", "low = 0.1, high = 0.001"), "space.learning_rate.low"),
        (
            ("low = 1e-8, high = 1e-2, log = true", "low = 0.0, high = 1e-2, log = true"),
            "space.weight_decay.low: 0.0 with log = true (allowed: low > 0)",
        ),
        (('"sgd", "momentum", "adam"', '"sgd", "lion"'), 'space.optimizer.choices: "lion"'),
        (('dataset = "digits"', 'dataset = "npz:/no/such/file.npz"'), "/no/such/file.npz"),
        (('dataset = "digits"', 'dataset = "cifar"'), "data.dataset: unknown dataset"),
        (('sampler = "tpe"', 'sampler = "bayes"'), 'search.sampler: unknown value "bayes"'),
    ],
)
def test_bad_spec_exits_2_and_leaves_the_database_unchanged(
    tiny_spec, tmp_path, spec_text_change, expected, capsys
):
    db = tmp_path / "studies.db"
    url = f"sqlite:///{db}"
    assert (
        main(["run", str(tiny_spec), "--storage", url, "--trials", "2", "--quiet", "--no-report"])
        == 0
    )
    before = file_digests(db)
    bad = tmp_path / "bad.toml"
    old, new = spec_text_change
    text = tiny_spec.read_text()
    assert old in text
    bad.write_text(text.replace(old, new, 1))
    capsys.readouterr()
    assert main(["run", str(bad), "--storage", url, "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert err.count("\n") == 1
    assert file_digests(db) == before


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--sampler", "bayes"], "invalid choice: 'bayes'"),
        (["--trials", "-1"], "--trials: -1 (allowed: 1 to 1,000,000)"),
        (["--trials", "0"], "--trials: 0 (allowed: 1 to 1,000,000)"),
        (["--workers", "0"], "--workers: 0 (allowed: 1 to 256)"),
        (["--timeout", "soon"], "'soon' is not a number of seconds"),
        (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open the storage"),
        (["--storage", "mysql+nodriver://x/y"], "mysql+nodriver://x/y"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tiny_spec, db_url, argv, expected, capsys):
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(["run", str(tiny_spec), "--storage", db_url, *argv, "--quiet"]))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert err.count("\n") == 1


def test_missing_spec_file_and_unknown_packaged_spec(capsys, db_url):
    assert main(["run", "nowhere/spec.toml", "--storage", db_url]) == 2
    assert "nowhere/spec.toml: no such study file" in capsys.readouterr().err
    assert main(["run", "nosuchspec", "--storage", db_url]) == 2
    assert "nosuchspec: no such packaged spec (allowed: default" in capsys.readouterr().err


def test_non_database_file_as_storage_is_refused_untouched(tiny_spec, tmp_path, capsys):
    junk = tmp_path / "notes.db"
    junk.write_text("these are my notes, not a database\n")
    before = junk.read_bytes()
    assert main(["run", str(tiny_spec), "--storage", f"sqlite:///{junk}", "--quiet"]) == 2
    assert "is not a SQLite database" in capsys.readouterr().err
    assert junk.read_bytes() == before


def test_different_spec_under_existing_study_exits_2_unchanged(tiny_spec, tmp_path, capsys):
    db = tmp_path / "studies.db"
    url = f"sqlite:///{db}"
    assert (
        main(["run", str(tiny_spec), "--storage", url, "--trials", "1", "--quiet", "--no-report"])
        == 0
    )
    before = file_digests(db)
    other = write_spec(tmp_path / "other.toml", epochs=9)
    assert main(["run", str(other), "--storage", url, "--quiet", "--no-report"]) == 2
    assert "would not be comparable" in capsys.readouterr().err
    assert file_digests(db) == before


def test_specs_lists_the_packaged_default(capsys):
    assert main(["specs"]) == 0
    assert capsys.readouterr().out.startswith("default ")


def test_studies_table(tiny_spec, db_url, capsys):
    main(["run", str(tiny_spec), "--storage", db_url, "--trials", "2", "--quiet", "--no-report"])
    capsys.readouterr()
    assert main(["studies", "--storage", db_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["STUDY", "DATASET", "COMPLETE"]
    assert lines[1].split()[:2] == ["tiny", "digits"]


def test_studies_on_a_missing_database_exits_2(tmp_path, capsys):
    assert main(["studies", "--storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "no such database file" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_best_json_retrain_and_export(tiny_spec, db_url, tmp_path, capsys):
    main(["run", str(tiny_spec), "--storage", db_url, "--quiet", "--no-report"])
    capsys.readouterr()
    assert main(["best", "--storage", db_url, "--json"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert set(best) >= {"study", "trial", "value", "params"}
    assert "test_accuracy" not in best

    export = tmp_path / "best.npz"
    assert main(["best", "--storage", db_url, "--json", "--retrain", "--export", str(export)]) == 0
    retrained = json.loads(capsys.readouterr().out)
    assert retrained["trial"] == best["trial"] and 0 <= retrained["test_accuracy"] <= 1
    assert main(["best", "--storage", db_url, "--json"]) == 0  # now known to the study
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == retrained["test_accuracy"]

    net, meta = load_checkpoint(export)
    assert meta["extra"]["trial"] == best["trial"]
    data = load_dataset("digits")
    accuracy = np.mean(predict_raw(net, meta, data.x) == data.y)
    # The exported net, given raw digits, does about as well as it did on the test split.
    assert abs(accuracy - retrained["test_accuracy"]) < 0.15 and accuracy > 0.2


def test_best_without_completed_trials_exits_1(tiny_spec, db_url, capsys):
    main(["run", str(tiny_spec), "--storage", db_url, "--create-only"])
    capsys.readouterr()
    assert main(["best", "--storage", db_url]) == 1
    assert "no completed trial" in capsys.readouterr().err


def test_worker_joins_an_existing_study(tiny_spec, db_url, capsys):
    main(["run", str(tiny_spec), "--storage", db_url, "--create-only"])
    assert (
        main(
            ["run", str(tiny_spec), "--storage", db_url, "--trials", "4", "--quiet", "--no-report"]
        )
        == 0
    )
    capsys.readouterr()
    # The stored target is now 4 and reached: a worker finds nothing left to do.
    assert main(["worker", "--study", "tiny", "--storage", db_url, "--quiet"]) == 0
    assert "0 trials finished here" in capsys.readouterr().out


def test_worker_on_unknown_study_exits_2(tiny_spec, db_url, capsys):
    main(["run", str(tiny_spec), "--storage", db_url, "--create-only"])
    capsys.readouterr()
    assert main(["worker", "--study", "nope", "--storage", db_url]) == 2
    assert "no study named 'nope' (allowed: tiny)" in capsys.readouterr().err


def test_help_of_every_command_has_an_example():
    for command in ("run", "worker", "specs", "studies", "best", "report", "compare", "dashboard"):
        done = hpo(command, "--help")
        assert done.returncode == 0 and "example:" in done.stdout, command


def test_sigint_keeps_finished_trials_leaves_none_running_and_resumes(tmp_path):
    # A target far beyond what runs before the signal (a pruned trial takes milliseconds).
    spec = write_spec(tmp_path / "slow.toml", epochs=60, trials=5000)
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    argv = [
        sys.executable,
        "-m",
        "hpo",
        "run",
        str(spec),
        "--storage",
        url,
        "--quiet",
        "--no-report",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        finished = 0
        while time.monotonic() < deadline and finished < 2:
            time.sleep(0.2)
            if (tmp_path / "slow.db").exists():
                try:  # open_storage takes the creation lock: no schema race with the run
                    storage = open_storage(url, write=False)
                    trials = optuna.load_study(study_name="tiny", storage=storage).get_trials()
                except KeyError:
                    continue
                finished = sum(t.state.is_finished() for t in trials)
        assert finished >= 2, "the study did not get going"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a hung run must not outlive the test
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    trials = optuna.load_study(study_name="tiny", storage=url).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    kept = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert kept >= 2

    resumed = hpo(
        "run", str(spec), "--storage", url, "--trials", str(kept + 1), "--quiet", "--no-report"
    )
    assert resumed.returncode == 0, resumed.stderr
    trials = optuna.load_study(study_name="tiny", storage=url).get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == kept + 1


def test_environment_storage_is_used(tiny_spec, tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("HPO_STORAGE", url)
    assert main(["run", str(tiny_spec), "--trials", "1", "--quiet", "--no-report"]) == 0
    assert (tmp_path / "env.db").exists()
    assert os.environ["HPO_STORAGE"] in capsys.readouterr().out


def test_read_only_commands_refuse_another_programs_database_untouched(tmp_path, capsys):
    import sqlite3

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE users (name TEXT)")
    before = path.read_bytes()
    for argv in (["studies"], ["report"], ["best"], ["run", "--create-only"]):
        assert main([*argv, "--storage", f"sqlite:///{path}"]) == 2, argv
        assert "is not an hpo (Optuna) database" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_reading_commands_leave_an_hpo_database_byte_for_byte(tiny_spec, db_url, tmp_path):
    main(["run", str(tiny_spec), "--storage", db_url, "--trials", "2", "--quiet", "--no-report"])
    db = tmp_path / "studies.db"
    before = file_digests(db)
    assert main(["studies", "--storage", db_url]) == 0
    assert main(["best", "--storage", db_url, "--json"]) == 0
    assert file_digests(db) == before


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["best", "--export", "weights"], "--export: 'weights' (allowed: a path ending in .npz)"),
        (["dashboard", "--port", "70000"], "--port: 70000 (allowed: 0 to 65535)"),
        (["run", "--seed", "-1"], "--seed: -1 (allowed: 0 to 4,294,967,295)"),
        (["report", "--out", "."], "--out: . is a directory"),
        (["report", "--out", "{db}"], "is the study's storage (allowed: another file path)"),
        (
            ["report", "--out", "x" * 300 + ".html"],
            "is a file name of 305 bytes (allowed: up to 255)",
        ),
    ],
)
def test_more_bad_flags_exit_2_with_one_line(tiny_spec, db_url, argv, expected, capsys):
    main(["run", str(tiny_spec), "--storage", db_url, "--trials", "1", "--quiet", "--no-report"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        db = db_url[len("sqlite:///") :]
        raise SystemExit(main([a.replace("{db}", db) for a in argv] + ["--storage", db_url]))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert err.count("\n") == 1


def test_a_raw_at_sign_in_a_password_is_refused_and_masked(capsys):
    url = "postgresql://user:p@ss@127.0.0.1:1/db"
    assert main(["studies", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "%40" in err and "p@ss" not in err and "ss@" not in err


@pytest.mark.parametrize("module", ["hpo", "trainer"])
def test_a_closed_pipe_ends_quietly(module):
    # `python -m hpo specs | head -0`: the reader is gone before the first write.
    argv = ["specs"] if module == "hpo" else ["--epochs", "1", "--train-size", "100", "--json"]
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err  # progress lines may show


def hpo_popen(*argv: str, **options) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hpo", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# Before about 0.1 s the interpreter itself is starting (site.py): not hpo's code to handle.
@pytest.mark.parametrize("delay", [0.15, 0.5, 1.5], ids=["imports", "start-up", "running"])
@pytest.mark.parametrize("to_group", [False, True], ids=["process", "group"])
def test_sigint_at_any_moment_exits_130_in_one_line(tmp_path, delay, to_group):
    spec = write_spec(tmp_path / "slow.toml", epochs=60, trials=5000)
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    proc = hpo_popen(
        "run", str(spec), "--storage", url, "--quiet", "--no-report", start_new_session=True
    )
    time.sleep(delay)
    if to_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err, err
    if (tmp_path / "slow.db").exists():
        with sqlite3.connect(tmp_path / "slow.db") as c:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
            if "trials" in tables:
                running = c.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'")
                assert running.fetchone()[0] == 0


def wait_for_finished_trials(path: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        with contextlib.suppress(sqlite3.Error):
            c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                row = c.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()
            finally:
                c.close()
            if row[0] >= n:
                return
    pytest.fail("the study did not get going")


@pytest.mark.parametrize(
    ("signum", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP")]
)
@pytest.mark.parametrize(
    "moment",
    [
        "imports",
        pytest.param("running", marks=pytest.mark.slow),  # Ctrl-C's own test runs it by default
        pytest.param("running, to the group", marks=pytest.mark.slow),
    ],
)
def test_sigterm_and_sighup_end_like_ctrl_c(tmp_path, signum, code, name, moment):
    spec = write_spec(tmp_path / "slow.toml", epochs=60, trials=5000)
    path = tmp_path / "slow.db"
    proc = hpo_popen(
        "run",
        str(spec),
        "--storage",
        f"sqlite:///{path}",
        "--workers",
        "2",
        "--quiet",
        "--no-report",
        start_new_session=True,
    )
    try:
        if moment == "imports":
            time.sleep(0.15)
        else:
            wait_for_finished_trials(path, 2)
        workers = children_of(proc.pid)
        if moment.endswith("group"):  # systemd's KillMode=control-group, a closed terminal
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert len(err.strip().splitlines()) == 1, err
    assert f"stopped by {name}" in err or (moment == "imports" and "interrupted" in err), err
    deadline = time.monotonic() + 30  # the resource tracker ends when its pipe closes
    while [pid for pid in workers if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)]
    if moment != "imports":
        assert not path.with_name("slow.db-wal").exists()  # folded: hpo.db alone holds them
        with sqlite3.connect(path) as c:
            states = dict(c.execute("SELECT state, count(*) FROM trials GROUP BY state"))
        c.close()
        # Trials in flight are failed, unless their results had arrived (then they are stored):
        # with short trials every one may have, so no FAIL is required.
        assert "RUNNING" not in states and states["COMPLETE"] >= 2, states


@pytest.mark.slow  # seconds each: CI runs it (pytest -m slow)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_many_workers_start_stops_them_all_in_one_line(tmp_path, signum):
    spec = write_spec(tmp_path / "slow.toml", epochs=60, trials=5000)
    argv = ["run", str(spec), "--storage", f"sqlite:///{tmp_path / 'w.db'}", "--quiet"]
    proc = hpo_popen(*argv, "--no-report", "--workers", "48", start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(children_of(proc.pid)) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)  # the start-up is under way
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)  # also waits for any child's stderr
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 128 + signum, err
    assert len(err.strip().splitlines()) == 1, err  # no child's traceback
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("worker processes outlived the command")


def test_a_sigint_the_parent_ignored_stays_ignored(tiny_spec, db_url):
    def ignore_sigint():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = hpo_popen(
        "run",
        str(tiny_spec),
        "--storage",
        db_url,
        "--trials",
        "3",
        "--quiet",
        "--no-report",
        preexec_fn=ignore_sigint,
    )
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert optuna.load_study(study_name="tiny", storage=db_url).get_trials()[2].state.is_finished()


@pytest.mark.slow
def test_a_sigkilled_run_leaves_no_worker_process(tmp_path):
    spec = write_spec(tmp_path / "slow.toml", epochs=400, trials=50)
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    proc = hpo_popen("run", str(spec), "--storage", url, "--workers", "2", "--quiet")
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2:
        time.sleep(0.2)
        workers = children_of(proc.pid)
    assert len(workers) >= 2, "the workers did not start"
    time.sleep(1.0)  # training
    proc.kill()
    proc.communicate()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)]


# ---------------------------------------------------------------------------------------------
# Every input checked: names, empty values, refusals that leave nothing behind, pasteable hints


def exit_code(argv: list[str]) -> int:
    """``main(argv)``'s exit code, also when argparse refuses the line (it raises SystemExit)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("", '""'),
        ("   ", '"   "'),
        (" lead", '" lead"'),
        ("a\nb", '"a\\x0ab"'),
        ("a\x00b", '"a\\x00b"'),
        ("x" * 129, "(129 characters)"),
        ("x" * 10_000, "(10000 characters)"),
    ],
    ids=["empty", "blank", "leading-space", "newline", "nul", "129-chars", "10000-chars"],
)
@pytest.mark.parametrize("command", [["run"], ["worker"], ["best"], ["report"]], ids=str)
def test_a_bad_study_name_is_refused_on_every_command(
    tmp_path, monkeypatch, capsys, command, name, shown
):
    monkeypatch.chdir(tmp_path)
    assert exit_code([*command, "--study", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--study: " in err and shown in err, err
    assert "allowed: 1 to 128 printable characters" in err
    assert list(tmp_path.iterdir()) == []


def test_compare_refuses_a_bad_study_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert exit_code(["compare", "a", "b\tc"]) == 2
    assert 'STUDY: "b\\x09c"' in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--storage", ""],
        ["studies", "--storage", " "],
        ["run", "--data-dir", ""],
        ["run", ""],
        ["run", "--storage", "sqlite://"],
        ["run", "--storage", "sqlite:///:memory:"],
        ["run", "--storage", "journal:"],
        ["run", "--trials", "0"],
        ["run", "--trials", "1000001"],
        ["run", "--workers", "257"],
        ["run", "--seed", "4294967296"],
    ],
    ids=" ".join,
)
def test_empty_or_impossible_values_are_refused_not_replaced_by_a_default(
    tmp_path, monkeypatch, capsys, argv
):
    monkeypatch.chdir(tmp_path)
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "allowed:" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_worker_in_an_empty_folder_creates_no_database(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["worker", "--study", "x"]) == 2
    assert "sqlite:///hpo.db: no such database file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_reading_commands_create_no_lock_file(tiny_spec, tmp_path, capsys):
    db = tmp_path / "copy" / "hpo.db"
    db.parent.mkdir()
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    main(["run", str(tiny_spec), "--storage", url, "--trials", "1", "--quiet", "--no-report"])
    db.write_bytes((tmp_path / "studies.db").read_bytes())  # a copy, as a user mails one
    copy = f"sqlite:///{db}"
    for argv in (["studies"], ["best"], ["best", "--study", "nope"], ["studies"]):
        main([*argv, "--storage", copy])
    capsys.readouterr()
    assert sorted(p.name for p in db.parent.iterdir()) == ["hpo.db"]


def test_the_create_only_hint_can_be_pasted_and_names_the_storage(tiny_spec, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'my studies.db'}"
    name = """it's "a" $study"""
    assert main(["run", str(tiny_spec), "--storage", url, "--study", name, "--create-only"]) == 0
    out = capsys.readouterr().out
    hint = out.split("start workers with ", 1)[1].strip()
    assert shlex.split(hint) == ["python", "-m", "hpo", "worker", "--study", name, "--storage", url]


def test_hints_leave_out_the_default_storage(tiny_spec, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    assert main(["run", str(tiny_spec), "--create-only"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("python -m hpo worker --study tiny")


def test_the_summary_hint_quotes_a_name_for_the_shell(tiny_spec, db_url, capsys):
    name = "a\"b'c"
    argv = ["run", str(tiny_spec), "--storage", db_url, "--study", name, "--trials", "1"]
    assert main([*argv, "--quiet", "--no-report"]) == 0
    more = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("more:"))
    best, dashboard = more[len("more: ") :].split("; ")
    assert shlex.split(best) == [
        "python",
        "-m",
        "hpo",
        "best",
        "--study",
        name,
        "--storage",
        db_url,
    ]
    assert shlex.split(dashboard) == ["python", "-m", "hpo", "dashboard", "--storage", db_url]


def test_a_spec_that_is_a_directory_is_named_as_one(tmp_path, capsys, db_url):
    (tmp_path / "specs.toml").mkdir()
    assert main(["run", str(tmp_path / "specs.toml"), "--storage", db_url]) == 2
    assert "specs.toml: is a directory (allowed: a .toml study file)" in capsys.readouterr().err


def test_a_spec_with_a_utf8_bom_is_read(tiny_spec, db_url, capsys):
    tiny_spec.write_bytes(b"\xef\xbb\xbf" + tiny_spec.read_bytes())
    argv = ["run", str(tiny_spec), "--storage", db_url, "--trials", "1", "--quiet", "--no-report"]
    assert main(argv) == 0, capsys.readouterr().err


@pytest.mark.slow
def test_a_long_study_name_gives_a_report_file_name_the_file_system_takes(
    tiny_spec, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    name = "é" * 128  # 256 bytes in UTF-8: too long for a file name as it is
    argv = ["run", str(tiny_spec), "--study", name, "--trials", "1", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    reports = list(tmp_path.glob("hpo-report-*.html"))
    assert len(reports) == 1 and len(reports[0].name.encode()) <= 255
    assert main(["report", "--study", name]) == 0


@pytest.mark.slow
def test_a_users_own_trainer_reports_and_studies_in_the_working_directory_are_not_imported(
    tmp_path,
):
    for name in ("trainer.py", "reports.py", "optuna_helpers.py"):
        (tmp_path / name).write_text("raise SystemExit('the user file was imported')\n")
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "default.toml").write_text("not a spec")
    spec = write_spec(tmp_path / "tiny.toml", trials=2, epochs=1)
    done = subprocess.run(
        [sys.executable, "-m", "hpo", "run", str(spec), "--storage", "sqlite:///s.db", "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "imported" not in done.stderr and (tmp_path / "hpo-report-tiny.html").exists()
    listed = subprocess.run(
        [sys.executable, "-m", "hpo", "specs"], capture_output=True, text=True, cwd=tmp_path
    )
    assert listed.returncode == 0 and "default" in listed.stdout


def test_without_study_the_most_recently_updated_is_chosen_and_named(tmp_path, db_url, capsys):
    for name in ("older", "newer"):
        spec = write_spec(tmp_path / f"{name}.toml", trials=2, epochs=1)
        spec.write_text(spec.read_text().replace('name = "tiny"', f'name = "{name}"'))
        assert main(["run", str(spec), "--storage", db_url, "--quiet", "--no-report"]) == 0
    capsys.readouterr()
    assert main(["best", "--json", "--storage", db_url]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["study"] == "newer"
    assert "study 'newer': the most recently updated of 2" in err and "older" in err


def test_confirm_json_prints_the_stored_runs_and_trains_only_with_seeds(tiny_spec, db_url, capsys):
    assert main(["run", str(tiny_spec), "--storage", db_url, "--quiet", "--no-report"]) == 0
    capsys.readouterr()
    common = ["confirm", "--storage", db_url, "--top", "2", "--json", "--in-process"]
    assert main(common) == 2
    assert "no confirmation runs yet (allowed: --json --seeds S" in capsys.readouterr().err
    assert main([*common, "--seeds", "2"]) == 0
    trained = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [len(item["values"]) for item in trained] == [2, 2]
    assert main(common) == 0  # reads them again, trains nothing
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == trained


@pytest.mark.slow
def test_confirm_rewrites_the_report_and_prints_its_path(
    tiny_spec, db_url, tmp_path, capsys, monkeypatch
):
    assert main(["run", str(tiny_spec), "--storage", db_url, "--quiet", "--no-report"]) == 0
    monkeypatch.chdir(tmp_path)
    args = ["confirm", "--storage", db_url, "--top", "2", "--seeds", "2", "--in-process"]
    assert main([*args, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "report: " in out and "Confirmed best" in (tmp_path / "hpo-report-tiny.html").read_text()


def test_specs_name_prints_the_packaged_file_to_start_from(capsys):
    assert main(["specs", "default"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# The default study") and "[space]" in text
    assert main(["specs", "nope"]) == 2
    assert "no such packaged spec (allowed: default," in capsys.readouterr().err


@pytest.mark.slow
def test_report_prints_no_optuna_log_lines(tiny_spec, db_url, tmp_path):
    assert main(["run", str(tiny_spec), "--storage", db_url, "--quiet", "--no-report"]) == 0
    done = hpo("report", "--storage", db_url, "--out", str(tmp_path / "r.html"))
    assert done.returncode == 0
    assert done.stdout.strip() == str(tmp_path / "r.html") and "[I " not in done.stderr


def test_a_stepped_value_is_printed_as_a_person_types_it(tiny_spec, db_url, capsys):
    assert main(["run", str(tiny_spec), "--storage", db_url, "--quiet", "--no-report"]) == 0
    study = optuna.load_study(study_name="tiny", storage=db_url)
    for t in study.trials:
        capsys.readouterr()
        assert main(["best", "--command", "--trial", str(t.number), "--storage", db_url]) == 0
        argv = capsys.readouterr().out.split()
        dropout = argv[argv.index("--dropout") + 1]
        assert len(dropout) <= 4, dropout  # 0.3, never 0.30000000000000004


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--dataset", "mnist"], "argument --dataset mnist: dataset 'mnist': "),
        (["--dataset", "npz:/no/such.npz"], "argument --dataset npz:/no/such.npz: /no/such.npz"),
    ],
)
def test_a_dataset_from_the_command_line_is_blamed_on_the_flag_not_the_spec(
    tiny_spec, tmp_path, monkeypatch, flags, expected, capsys
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)
    db = tmp_path / "x.db"
    assert main(["run", str(tiny_spec), "--storage", f"sqlite:///{db}", *flags, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(tiny_spec) not in err, err
    assert err.count("\n") == 1
    assert not (tmp_path / "cache").exists() and not db.exists()


def test_another_dataset_replaces_the_specs_description(tiny_spec, tmp_path, db_url, rng):
    path = tmp_path / "three.npz"
    np.savez(path, x=rng.standard_normal((300, 4)), y=np.arange(300) % 3)
    text = tiny_spec.read_text().replace('name = "tiny"', 'name = "tiny"\ndescription = "Digits"')
    tiny_spec.write_text(text)
    main(["run", str(tiny_spec), "--storage", db_url, "--dataset", f"npz:{path}", "--create-only"])
    study = optuna.load_study(study_name="tiny-three", storage=open_storage(db_url))
    description = study.user_attrs[SPEC_ATTR]["study"]["description"]
    assert "Digits" not in description and f"npz:{path}" in description


def test_the_bar_counts_the_epochs_of_the_trials_in_flight(capsys):
    from hpo.cli import ProgressBar
    from hpo.records import Counts

    bar = ProgressBar(quiet=False, label="study")
    bar(Counts(complete=1, running=2, epochs=((3, 5, 10), (4, 0, 10))), 4)
    bar.close()
    err = capsys.readouterr().err
    assert "1.50/4" in err and "running 2 (epochs: #3 5/10, #4 0/10)" in err, err


def test_the_bar_counts_queued_trials_apart_from_those_training(capsys):
    from hpo.cli import ProgressBar
    from hpo.records import Counts

    bar = ProgressBar(quiet=False, label="study")
    bar(Counts(complete=1, running=5, queued=3, epochs=((3, 5, 10), (4, 0, 10))), 8)
    bar.close()
    err = capsys.readouterr().err
    assert "running 2 (epochs: #3 5/10, #4 0/10), queued 3, best" in err, err


def test_a_delayed_bar_shows_only_work_that_outlasts_its_delay(capsys, monkeypatch):
    """The report's bar (the best trained again) appears only when that takes over a second."""
    from hpo import cli

    clock = [100.0]
    monkeypatch.setattr(cli.time, "monotonic", lambda: clock[0])
    quick = cli.Bar(quiet=False, label="quick", unit="epoch", delay=1.0)
    for epoch in range(4):
        quick.show(epoch, 3)
    quick.close()
    assert "quick" not in capsys.readouterr().err
    slow = cli.Bar(quiet=False, label="slow", unit="epoch", delay=1.0)
    slow.show(0, 3)
    clock[0] += 5.0
    slow.show(1, 3)
    slow.close()
    assert "slow:  33%" in capsys.readouterr().err
