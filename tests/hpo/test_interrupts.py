"""Ctrl-C lands in training, never inside a storage call or between a heartbeat's start and join."""

import os
import signal

import optuna
import pytest

from hpo import heartbeat
from hpo.interrupts import sigint_deferred, storage_step
from hpo.storage import open_storage


def interrupt_self() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_storage_step_finishes_its_call_then_raises_the_interrupt():
    done = []

    def call():
        interrupt_self()
        done.append("after the signal")
        return 42

    with pytest.raises(KeyboardInterrupt):
        storage_step(call)
    assert done == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_storage_step_without_a_signal_returns_the_calls_value():
    assert storage_step(lambda: 42) == 42


def test_nested_deferrals_report_the_signal_to_the_inner_one_only():
    with sigint_deferred() as outer:
        with sigint_deferred() as inner:
            interrupt_self()
        assert inner and not outer


class RecordingThread:
    """A heartbeat thread whose start is interrupted, as on a loaded machine."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")
        interrupt_self()

    def join(self) -> None:
        self.calls.append("join")


def test_an_interrupted_heartbeat_start_is_still_joined(tmp_path, monkeypatch):
    storage = open_storage(f"sqlite:///{tmp_path / 'hb.db'}")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    thread = RecordingThread()
    monkeypatch.setattr(heartbeat, "get_heartbeat_thread", lambda *args: thread)
    ran = []
    with pytest.raises(KeyboardInterrupt), heartbeat.trial_heartbeat(study, trial):
        ran.append("block")
    assert thread.calls == ["start", "join"]
    assert ran == []  # the interrupt came before the block: it never ran
