"""No command waits silently on another process: readers read without the writers' lock, and a
writer that must wait says for which process, and still stops on a signal."""

import fcntl
import os
import signal
import subprocess
import sys

import pytest

from hpo.service import run_study
from hpo.spec import load_spec
from hpo.storage import close_storages


@pytest.fixture
def locked_study(tiny_spec, tmp_path):
    """A study whose storage lock this test process holds, as a writer stopped with SIGSTOP
    while claiming would."""
    path = tmp_path / "held.db"
    run_study(load_spec(str(tiny_spec)), storage_url=f"sqlite:///{path}", trials=2)
    close_storages()
    with open(tmp_path / "held.db.hpo-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield f"sqlite:///{path}"


@pytest.mark.parametrize("argv", [("studies",), ("best", "--json")])
def test_readers_do_not_wait_for_a_held_storage_lock(locked_study, argv):
    out = subprocess.run(
        [sys.executable, "-m", "hpo", *argv, "--storage", locked_study],
        capture_output=True,
        text=True,
        timeout=120,  # a reader that waited on the lock would wait for ever
    )
    assert out.returncode == 0, out.stderr
    assert "tiny" in out.stdout


@pytest.mark.slow  # seconds each: CI runs it (pytest -m slow)
def test_a_writer_waiting_for_the_lock_names_its_holder_and_stops_on_sigterm(
    locked_study, tiny_spec
):
    argv = ["run", str(tiny_spec), "--storage", locked_study, "--trials", "3", "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo", *argv, "--no-report"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert line.startswith("hpo: waiting for the storage lock"), line
    assert f"held by process {os.getpid()}" in line
    assert proc.returncode == 143, rest
    assert (
        rest.strip()
        .splitlines()[-1]
        .endswith("stopped by SIGTERM; finished trials are kept, run the same command to resume")
    )
