"""A database in a place this user cannot write (a read-only or immutable directory, a
read-only file): readers read it whole and leave nothing beside it."""

import os
import shutil
import subprocess
import sys

import pytest

from hpo.service import run_study
from hpo.spec import load_spec
from hpo.storage import close_storages


def freeze(directory) -> bool:
    """Make ``directory`` unwritable for this user (root: immutable); False where impossible."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return True
    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    return subprocess.run([chattr, "+i", str(directory)], capture_output=True).returncode == 0


def thaw(directory) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(directory)], capture_output=True)
    directory.chmod(0o755)


@pytest.fixture
def frozen(tiny_spec, tmp_path):
    directory = tmp_path / "frozen"
    directory.mkdir()
    url = f"sqlite:///{directory / 'h.db'}"
    run_study(load_spec(str(tiny_spec)), storage_url=url, trials=2)
    close_storages()
    if not freeze(directory):
        pytest.skip("this file system cannot make a directory unwritable for root")
    try:
        yield directory, url
    finally:
        thaw(directory)


def hpo(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpo", *argv], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("studies",),
        ("best", "--json"),
        pytest.param(("report", "--out", "OUT"), marks=pytest.mark.slow),
    ],
)
def test_readers_read_a_database_in_a_read_only_directory(frozen, tmp_path, argv):
    directory, url = frozen
    before = sorted(p.name for p in directory.iterdir())
    argv = [str(tmp_path / "r.html") if a == "OUT" else a for a in argv]
    out = hpo(*argv, "--storage", url)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # nor Optuna's "A new study created in memory" lines
    assert sorted(p.name for p in directory.iterdir()) == before


def test_a_wal_with_commits_in_a_read_only_directory_is_refused_in_one_line(tiny_spec, tmp_path):
    directory = tmp_path / "frozen"
    directory.mkdir()
    url = f"sqlite:///{directory / 'h.db'}"
    run_study(load_spec(str(tiny_spec)), storage_url=url, trials=2)  # its WAL not folded yet
    try:
        if not freeze(directory):
            pytest.skip("this file system cannot make a directory unwritable for root")
        out = hpo("studies", "--storage", url)
    finally:
        thaw(directory)
        close_storages()
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert "h.db-wal holds commits not yet folded" in out.stderr
