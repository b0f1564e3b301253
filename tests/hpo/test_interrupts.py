"""Ctrl-C: one handler that sets a flag, raising only where nothing is written."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from hpo.interrupts import Interrupts


def interrupt_self() -> None:
    os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def interrupts():
    handler = Interrupts()
    handler.install()
    yield handler
    handler.uninstall()


def test_an_interrupt_sets_the_flag_without_raising(interrupts):
    interrupt_self()
    assert interrupts.requested()
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()


def test_inside_raising_an_interrupt_raises_at_once(interrupts):
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.raising():
        interrupt_self()
        done.append("after the signal")
    assert done == []


def test_raising_after_an_interrupt_raises_on_entry(interrupts):
    interrupt_self()
    with pytest.raises(KeyboardInterrupt), interrupts.raising():
        pytest.fail("the block must not run")


def test_uninstall_restores_the_default_handler(interrupts):
    interrupts.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def run_python(code: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, **options
    )


def test_a_second_interrupt_ends_the_process_at_once_with_130():
    out = run_python(
        """
        import os, signal, time
        from hpo.interrupts import INTERRUPTS
        INTERRUPTS.install()
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        print("still here")
        """,
        timeout=30,
    )
    assert out.returncode == 130
    assert "still here" not in out.stdout
    assert out.stderr.strip() == "interrupted again: stopped at once"


def test_an_ignored_sigint_stays_ignored():
    out = run_python(
        """
        import signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        from hpo.interrupts import INTERRUPTS
        INTERRUPTS.install()
        with INTERRUPTS.raising():
            print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
        """,
        timeout=30,
    )
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_sigterm_and_sighup_stop_like_ctrl_c_with_their_exit_code(interrupts, signum, code):
    os.kill(os.getpid(), signum)
    assert interrupts.requested() and interrupts.exit_code == code
    assert interrupts.signal_name == signal.Signals(signum).name
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()


def test_uninstall_restores_every_signal_handler(interrupts):
    interrupts.uninstall()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
