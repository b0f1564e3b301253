"""A full disk: one line and exit 1, never a traceback; files written whole or not at all.

The disk is filled with the file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored): a write past it
fails as a write to a full disk does.
"""

import resource
import signal
import sqlite3
import subprocess
import sys

import pytest

from hpo.paths import written_whole
from hpo.service import run_study
from hpo.spec import load_spec
from hpo.storage import close_storages


def hpo_limited(*argv: str, limit: int, cwd) -> subprocess.CompletedProcess:
    def fill_at_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "hpo", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=fill_at_limit,
        cwd=cwd,
    )


@pytest.fixture
def two_trials(tiny_spec, tmp_path):
    path = tmp_path / "full.db"
    run_study(load_spec(str(tiny_spec)), storage_url=f"sqlite:///{path}", trials=2)
    close_storages()  # the WAL folded in: the file alone holds the trials
    return path


def finished(path) -> int:
    with sqlite3.connect(path) as c:
        n = c.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE' OR state = 'PRUNED'")
        count = n.fetchone()[0]
    c.close()
    return count


@pytest.mark.slow  # seconds each: CI runs it (pytest -m slow)
def test_a_run_on_a_full_disk_ends_in_one_line_with_exit_1(tiny_spec, two_trials, tmp_path):
    out = hpo_limited(
        "run",
        str(tiny_spec),
        "--storage",
        f"sqlite:///{two_trials}",
        "--trials",
        "6",
        "--quiet",
        "--no-report",
        limit=two_trials.stat().st_size // 2,
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "the database cannot be used" in out.stderr
    assert finished(two_trials) == 2


@pytest.mark.slow  # seconds each: CI runs it (pytest -m slow)
def test_a_report_on_a_full_disk_is_not_left_truncated(two_trials, tmp_path):
    report = tmp_path / "r.html"
    out = hpo_limited(
        "report",
        "--storage",
        f"sqlite:///{two_trials}",
        "--out",
        str(report),
        limit=64 * 1024,
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"python -m hpo report: error: cannot write the report to {report} (File too large)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir() if "html" in p.name) == []


def test_a_file_written_whole_replaces_the_old_one_only_when_complete(tmp_path):
    path = tmp_path / "out.html"
    path.write_text("the old report")
    with pytest.raises(OSError), written_whole(path) as temporary:
        temporary.write_text("half a rep")
        raise OSError(28, "No space left on device")
    assert path.read_text() == "the old report"
    assert [p.name for p in tmp_path.iterdir()] == ["out.html"]
    with written_whole(path) as temporary:
        temporary.write_text("the new report")
    assert path.read_text() == "the new report"
    assert [p.name for p in tmp_path.iterdir()] == ["out.html"]


def damage_pages(path, tables=("trial_values", "trial_intermediate_values")) -> None:
    """Overwrite the first page of ``tables`` with garbage; the file's header stays intact."""
    c = sqlite3.connect(path)
    roots = dict(c.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'table'"))
    page = c.execute("PRAGMA page_size").fetchone()[0]
    c.close()
    with open(path, "r+b") as f:
        for name in tables:
            f.seek(page * (roots[name] - 1) + 8)
            f.write(b"\xde\xad" * 100)


@pytest.mark.parametrize(
    "argv", [("best", "--json"), ("run", "SPEC", "--trials", "3", "--quiet", "--no-report")]
)
def test_damaged_pages_end_in_one_line_with_exit_1(tiny_spec, two_trials, tmp_path, argv):
    damage_pages(two_trials)
    argv = [str(tiny_spec) if a == "SPEC" else a for a in argv]
    out = subprocess.run(
        [sys.executable, "-m", "hpo", *argv, "--storage", f"sqlite:///{two_trials}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stderr
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .endswith("the database cannot be used (database disk image is malformed)")
    )
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_database_the_file_system_fails_to_read_is_a_runtime_failure(two_trials, tmp_path):
    # SQLite cannot make the 32 KiB -shm a WAL database needs: "disk I/O error", not "not a
    # SQLite database" (exit 2, as if the file were bad input).
    out = hpo_limited("studies", "--storage", f"sqlite:///{two_trials}", limit=16 * 1024,
                      cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"python -m hpo studies: error: sqlite:///{two_trials}: cannot read {two_trials} "
        "(disk I/O error)"
    ]
