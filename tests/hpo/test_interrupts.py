"""Ctrl-C lands in training, never inside a storage call or between a heartbeat's start and join."""

import os
import signal
import threading
import time

import optuna
import pytest

from hpo import heartbeat
from hpo.interrupts import sigint_deferred, storage_step
from hpo.storage import open_storage, rdb_backend


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


@pytest.fixture
def study_and_trial(tmp_path):
    """A study on SQLite opened as hpo opens it (with heartbeats), and one running trial."""
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'hb.db'}"))
    return study, study.ask()


started_threads: list[threading.Thread] = []
joined_threads: list[threading.Thread] = []


class InterruptedStart(threading.Thread):
    """A heartbeat thread whose start is interrupted, as on a loaded machine."""

    def start(self) -> None:
        super().start()
        started_threads.append(self)
        interrupt_self()

    def join(self, timeout=None) -> None:
        super().join(timeout)
        joined_threads.append(self)


def test_an_interrupted_heartbeat_start_is_still_stopped_and_joined(study_and_trial, monkeypatch):
    study, trial = study_and_trial
    monkeypatch.setattr(heartbeat.threading, "Thread", InterruptedStart)
    ran = []
    with pytest.raises(KeyboardInterrupt), heartbeat.trial_heartbeat(study, trial):
        ran.append("block")
    assert ran == []  # the interrupt came before the block: it never ran
    (thread,) = started_threads
    assert joined_threads == [thread] and not thread.is_alive()


def test_the_first_beat_comes_one_interval_after_the_start(tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPO_GRACE_PERIOD", "3")
    storage = open_storage(f"sqlite:///{tmp_path / 'hb.db'}")
    study = optuna.create_study(storage=storage)
    short, long = study.ask(), study.ask()
    with heartbeat.trial_heartbeat(study, short):
        pass
    with heartbeat.trial_heartbeat(study, long):
        time.sleep(1.5)
    beats = heartbeat._rdb_heartbeat_trial_ids(
        rdb_backend(study), [short._trial_id, long._trial_id]
    )
    assert beats == {long._trial_id}


class InterruptedJoin(threading.Thread):
    """A heartbeat thread whose join is interrupted: the trial was over, the run was not."""

    def join(self, timeout=None) -> None:
        interrupt_self()
        super().join(timeout)


def test_an_interrupt_during_the_heartbeat_join_is_raised_not_lost(study_and_trial, monkeypatch):
    study, trial = study_and_trial
    monkeypatch.setattr(heartbeat.threading, "Thread", InterruptedJoin)
    ran = []
    with pytest.raises(KeyboardInterrupt), heartbeat.trial_heartbeat(study, trial):
        ran.append("block")
    assert ran == ["block"]
