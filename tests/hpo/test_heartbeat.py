"""Heartbeats of running trials, and the sweep that fails and retries the trials of lost runs.

Every case runs on SQLite (Optuna's own heartbeats) and on the journal file (hpo's
``hpo:heartbeat`` attribute). Nothing waits for a grace period to pass: a heartbeat is made old
instead, on SQLite by moving its row in Optuna's ``trial_heartbeats`` table back an hour, on the
journal by writing an hour-old attribute; ``stale_trials`` is given a later ``now``. The grace
period is hpo's, from ``$HPO_GRACE_PERIOD``.
"""

import itertools
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.heartbeat import (
    FAIL_REASON_ATTR,
    HEARTBEAT_ATTR,
    Heartbeats,
    beat_next_retry,
    has_optuna_heartbeats,
    record_heartbeat,
    stale_trials,
    sweep_stale_trials,
)
from hpo.storage import MAX_STALE_TRIAL_RETRIES, close_storages, open_storage

GRACE = 3
AN_HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def fast_heartbeat(monkeypatch):
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPO_GRACE_PERIOD", str(GRACE))


@pytest.fixture(autouse=True)
def closed_afterwards():
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    close_storages()
    optuna.logging.set_verbosity(verbosity)


@dataclass
class Opened:
    """A study in a storage as hpo opens it to write."""

    kind: str
    path: Path
    url: str
    storage: optuna.storages.BaseStorage
    study: optuna.Study
    study_id: int

    def ask(self, *, params: bool = True) -> int:
        """A new RUNNING trial (with a parameter, or none as a claim killed after ``ask``);
        its id. No heartbeat is recorded."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            trial = self.study.ask()
        if params:
            trial.suggest_float("x", 0.0, 1.0)
        return self.trial_id(trial.number)

    def add_running(self, *, started: datetime, system_attrs: dict | None = None) -> int:
        """A RUNNING trial without parameters or heartbeat, started at ``started``; its id."""
        self.study.add_trial(
            optuna.trial.FrozenTrial(
                number=0,  # the storage numbers it
                state=TrialState.RUNNING,
                value=None,
                datetime_start=started,
                datetime_complete=None,
                params={},
                distributions={},
                user_attrs={},
                system_attrs=system_attrs or {},
                intermediate_values={},
                trial_id=0,
            )
        )
        return self.trial_id(self.study.get_trials(deepcopy=False)[-1].number)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        return self.storage.get_trial(trial_id)

    def make_stale(self, trial_id: int) -> None:
        """Give the trial a heartbeat an hour old."""
        if self.kind == "journal":
            self.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time() - 3600)
            return
        record_heartbeat(self.storage, trial_id)
        with sqlite3.connect(self.path, timeout=10) as c:
            c.execute(
                "UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-1 hour') "
                "WHERE trial_id = ?",
                (trial_id,),
            )
        c.close()

    def sweep(self) -> None:
        sweep_stale_trials(self.study, self.storage, self.study_id)

    def retries_of(self, number: int) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self.study.get_trials() if t.system_attrs.get("failed_trial") == number]


def open_study(kind: str, directory: Path, *, write: bool = True) -> Opened:
    if kind == "sqlite":
        path = directory / "studies.db"
        url = f"sqlite:///{path}"
    else:
        path = directory / "study.log"
        url = f"journal://{path}"
    storage = open_storage(url, write=write)
    study = optuna.create_study(study_name="hb", storage=storage, load_if_exists=True)
    return Opened(kind, path, url, storage, study, storage.get_study_id_from_name("hb"))


@pytest.fixture(params=["sqlite", "journal"])
def opened(request, tmp_path) -> Opened:
    return open_study(request.param, tmp_path)


@pytest.fixture
def sqlite_study(tmp_path) -> Opened:
    return open_study("sqlite", tmp_path)


@pytest.fixture
def journal_study(tmp_path) -> Opened:
    return open_study("journal", tmp_path)


def optuna_heartbeat(opened: Opened, trial_id: int) -> datetime | None:
    """The trial's row in Optuna's heartbeat table (UTC, as SQLite's CURRENT_TIMESTAMP)."""
    with sqlite3.connect(opened.path, timeout=10) as c:
        row = c.execute(
            "SELECT heartbeat FROM trial_heartbeats WHERE trial_id = ?", (trial_id,)
        ).fetchone()
    c.close()
    return None if row is None else datetime.fromisoformat(row[0])


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# ---------------------------------------------------------------------------------------------
# record_heartbeat


def test_record_heartbeat_on_sqlite_is_optunas_own(sqlite_study):
    assert has_optuna_heartbeats(sqlite_study.storage)
    trial_id = sqlite_study.ask()
    assert optuna_heartbeat(sqlite_study, trial_id) is None
    record_heartbeat(sqlite_study.storage, trial_id)
    beat = optuna_heartbeat(sqlite_study, trial_id)
    assert beat is not None and abs(utc_now() - beat) < timedelta(seconds=5)
    assert HEARTBEAT_ATTR not in sqlite_study.trial(trial_id).system_attrs


def test_record_heartbeat_on_the_journal_is_hpos_attribute(journal_study):
    assert not has_optuna_heartbeats(journal_study.storage)
    trial_id = journal_study.ask()
    before = time.time()
    record_heartbeat(journal_study.storage, trial_id)
    first = journal_study.trial(trial_id).system_attrs[HEARTBEAT_ATTR]
    assert before <= first <= time.time()
    time.sleep(0.01)
    record_heartbeat(journal_study.storage, trial_id)
    assert journal_study.trial(trial_id).system_attrs[HEARTBEAT_ATTR] > first


def test_record_heartbeat_on_a_storage_opened_to_read_does_nothing(tmp_path):
    writer = open_study("sqlite", tmp_path)
    trial_id = writer.ask()
    reader = open_study("sqlite", tmp_path, write=False)
    assert reader.storage is not writer.storage
    assert not has_optuna_heartbeats(reader.storage)
    record_heartbeat(reader.storage, trial_id)
    assert optuna_heartbeat(writer, trial_id) is None
    assert HEARTBEAT_ATTR not in writer.trial(trial_id).system_attrs


# ---------------------------------------------------------------------------------------------
# The Heartbeats thread


def beats_seen(opened: Opened, trial_id: int, *, seconds: float) -> list[float]:
    """The distinct journal heartbeats of a trial, looked at every 20 ms for ``seconds``."""
    seen: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        beat = opened.trial(trial_id).system_attrs.get(HEARTBEAT_ATTR)
        if beat is not None and beat not in seen:
            seen.append(beat)
        time.sleep(0.02)
    return seen


def test_heartbeats_beat_every_interval_for_each_added_trial(journal_study):
    first, second = journal_study.ask(), journal_study.ask()
    with Heartbeats(journal_study.storage, interval=0.1) as beats:
        beats.add(first)
        beats.add(second)
        seen = beats_seen(journal_study, first, seconds=0.65)
    assert 3 <= len(seen) <= 8  # about one every 0.1 s
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert min(gaps) > 0.07  # the interval is waited, not spun
    assert HEARTBEAT_ATTR in journal_study.trial(second).system_attrs


def test_heartbeats_wait_one_interval_before_the_first_beat(journal_study):
    trial_id = journal_study.ask()
    with Heartbeats(journal_study.storage, interval=0.3) as beats:
        beats.add(trial_id)
        assert HEARTBEAT_ATTR not in journal_study.trial(trial_id).system_attrs
        assert beats_seen(journal_study, trial_id, seconds=0.6)


def test_a_discarded_trial_gets_no_more_beats(journal_study):
    kept, discarded = journal_study.ask(), journal_study.ask()
    with Heartbeats(journal_study.storage, interval=0.1) as beats:
        beats.add(kept)
        beats.add(discarded)
        time.sleep(0.35)
        beats.discard(discarded)
        beats.discard(12345)  # never added: nothing happens
        time.sleep(0.05)  # a beat already under way ends
        last = journal_study.trial(discarded).system_attrs[HEARTBEAT_ATTR]
        kept_seen = beats_seen(journal_study, kept, seconds=0.35)
    assert journal_study.trial(discarded).system_attrs[HEARTBEAT_ATTR] == last
    assert len(kept_seen) >= 2


def test_heartbeats_stop_when_the_block_ends(journal_study):
    trial_id = journal_study.ask()
    with Heartbeats(journal_study.storage, interval=0.05) as beats:
        beats.add(trial_id)
        time.sleep(0.2)
    assert "hpo-heartbeat" not in [t.name for t in threading.enumerate()]
    last = journal_study.trial(trial_id).system_attrs[HEARTBEAT_ATTR]
    time.sleep(0.2)
    assert journal_study.trial(trial_id).system_attrs[HEARTBEAT_ATTR] == last


def test_a_failing_beat_does_not_stop_the_others(journal_study):
    trial_id = journal_study.ask()
    with pytest.raises(KeyError):
        record_heartbeat(journal_study.storage, -1)  # no such trial
    with Heartbeats(journal_study.storage, interval=0.1) as beats:
        beats.add(-1)  # beaten first (the ids are sorted), and fails every time
        beats.add(trial_id)
        seen = beats_seen(journal_study, trial_id, seconds=0.45)
    assert len(seen) >= 2


def test_heartbeats_keep_an_sqlite_trial_alive(sqlite_study):
    trial_id = sqlite_study.ask()
    sqlite_study.make_stale(trial_id)
    with Heartbeats(sqlite_study.storage, interval=0.1) as beats:
        beats.add(trial_id)
        time.sleep(0.4)
    assert utc_now() - optuna_heartbeat(sqlite_study, trial_id) < timedelta(seconds=5)
    sqlite_study.sweep()
    assert sqlite_study.trial(trial_id).state == TrialState.RUNNING


# ---------------------------------------------------------------------------------------------
# stale_trials


def numbers(trials) -> list[int]:
    return [t.number for t in trials]


def test_a_journal_trial_is_stale_once_its_heartbeat_is_older_than_the_grace_period(
    journal_study,
):
    trial_id = journal_study.ask()
    record_heartbeat(journal_study.storage, trial_id)
    number = journal_study.trial(trial_id).number
    now = datetime.now()
    study = journal_study.study
    assert stale_trials(study, optuna_beats=False, now=now) == []
    assert stale_trials(study, optuna_beats=False, now=now + timedelta(seconds=GRACE - 1)) == []
    later = now + timedelta(seconds=GRACE + 1)
    assert numbers(stale_trials(study, optuna_beats=False, now=later)) == [number]


def test_a_journal_trial_without_heartbeat_is_judged_by_its_start(journal_study):
    fresh = journal_study.trial(journal_study.ask()).number
    old = journal_study.trial(journal_study.add_running(started=datetime.now() - AN_HOUR))
    assert numbers(stale_trials(journal_study.study, optuna_beats=False)) == [old.number]
    later = datetime.now() + timedelta(seconds=GRACE + 1)
    stale = stale_trials(journal_study.study, optuna_beats=False, now=later)
    assert numbers(stale) == [fresh, old.number]


def test_a_recent_heartbeat_outweighs_an_old_start(journal_study):
    trial_id = journal_study.add_running(started=datetime.now() - AN_HOUR)
    record_heartbeat(journal_study.storage, trial_id)
    assert stale_trials(journal_study.study, optuna_beats=False) == []


@pytest.mark.parametrize("grace", [10, 30])
def test_stale_trials_read_the_grace_period_from_the_environment(journal_study, monkeypatch, grace):
    monkeypatch.setenv("HPO_GRACE_PERIOD", str(grace))
    trial_id = journal_study.ask()
    record_heartbeat(journal_study.storage, trial_id)
    now = datetime.now()
    study = journal_study.study
    assert stale_trials(study, optuna_beats=False, now=now + timedelta(seconds=grace - 2)) == []
    assert stale_trials(study, optuna_beats=False, now=now + timedelta(seconds=grace + 2))


def test_only_running_trials_are_stale(journal_study):
    study = journal_study.study
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    study.enqueue_trial({"x": 0.5})  # WAITING
    far = datetime.now() + timedelta(days=1)
    assert stale_trials(study, optuna_beats=False, now=far) == []


def test_where_optuna_beats_only_a_claim_without_parameters_is_hpos_to_sweep(sqlite_study):
    with_params = sqlite_study.ask(params=True)
    without = sqlite_study.trial(sqlite_study.ask(params=False)).number
    far = datetime.now() + timedelta(days=1)
    stale = stale_trials(sqlite_study.study, optuna_beats=True, now=far)
    assert numbers(stale) == [without]  # the other is Optuna's, by its heartbeat
    assert sqlite_study.trial(with_params).state == TrialState.RUNNING


# ---------------------------------------------------------------------------------------------
# sweep_stale_trials


def test_a_stale_trial_is_failed_and_queued_again_with_its_parameters(opened):
    stale_id = opened.ask()
    opened.make_stale(stale_id)
    stale = opened.trial(stale_id)
    opened.sweep()
    assert opened.trial(stale_id).state == TrialState.FAIL
    (retry,) = opened.retries_of(stale.number)
    assert retry.state == TrialState.WAITING
    assert retry.params == stale.params
    assert retry.system_attrs["retry_history"] == [stale.number]


def test_a_fresh_trial_is_left_alone(opened):
    fresh_id = opened.ask()
    record_heartbeat(opened.storage, fresh_id)
    stale_id = opened.ask()
    opened.make_stale(stale_id)
    opened.sweep()
    fresh = opened.trial(fresh_id)
    assert fresh.state == TrialState.RUNNING
    assert opened.retries_of(fresh.number) == []
    assert opened.trial(stale_id).state == TrialState.FAIL
    assert len(opened.study.get_trials()) == 3  # the two and one retry


def test_a_claim_killed_before_its_first_heartbeat_is_failed_and_queued_again(opened):
    # Optuna never fails a trial without a heartbeat: on SQLite this is hpo's own sweep.
    orphan_id = opened.add_running(started=datetime.now() - AN_HOUR)
    orphan = opened.trial(orphan_id)
    opened.sweep()
    assert opened.trial(orphan_id).state == TrialState.FAIL
    (retry,) = opened.retries_of(orphan.number)
    assert retry.state == TrialState.WAITING


def test_a_claim_without_heartbeat_inside_the_grace_period_is_left_alone(opened):
    trial_id = opened.ask(params=False)
    opened.sweep()
    assert opened.trial(trial_id).state == TrialState.RUNNING
    assert len(opened.study.get_trials()) == 1


def test_sweeping_again_queues_no_second_retry(opened):
    stale_id = opened.ask()
    opened.make_stale(stale_id)
    opened.sweep()
    opened.sweep()
    assert len(opened.retries_of(opened.trial(stale_id).number)) == 1
    assert len(opened.study.get_trials()) == 2


def test_a_trial_retried_too_often_is_failed_and_not_queued_again(opened):
    history = list(range(MAX_STALE_TRIAL_RETRIES))
    trial_id = opened.add_running(
        started=datetime.now() - AN_HOUR,
        system_attrs={"failed_trial": 0, "retry_history": history},
    )
    opened.sweep()
    assert opened.trial(trial_id).state == TrialState.FAIL
    assert [t.state for t in opened.study.get_trials()] == [TrialState.FAIL]


def test_a_trial_retried_fewer_times_is_queued_again(opened):
    history = list(range(MAX_STALE_TRIAL_RETRIES - 1))
    trial_id = opened.add_running(
        started=datetime.now() - AN_HOUR,
        system_attrs={"failed_trial": 0, "retry_history": history},
    )
    number = opened.trial(trial_id).number
    opened.sweep()
    (retry,) = [t for t in opened.study.get_trials() if t.state == TrialState.WAITING]
    assert retry.system_attrs["failed_trial"] == 0  # the original trial's number
    assert retry.system_attrs["retry_history"] == [*history, number]


def test_a_storage_opened_to_read_sweeps_nothing(tmp_path):
    writer = open_study("sqlite", tmp_path)
    stale_id = writer.ask()
    writer.make_stale(stale_id)
    orphan_id = writer.add_running(started=datetime.now() - AN_HOUR)
    reader = open_study("sqlite", tmp_path, write=False)
    reader.sweep()
    assert writer.trial(stale_id).state == TrialState.RUNNING
    assert writer.trial(orphan_id).state == TrialState.RUNNING
    assert len(writer.study.get_trials()) == 2


def test_the_retry_is_what_the_next_ask_claims(opened):
    stale_id = opened.ask()
    opened.make_stale(stale_id)
    stale = opened.trial(stale_id)
    opened.sweep()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        claimed = opened.study.ask()
    assert claimed.suggest_float("x", 0.0, 1.0) == stale.params["x"]
    assert claimed.number == opened.retries_of(stale.number)[0].number


# ---------------------------------------------------------------------------------------------
# A kill at any instant of the sweep or of a retry's claim


def test_a_lost_trial_whose_retry_was_never_queued_is_queued_by_the_next_sweep(opened):
    # A process killed between a sweep's FAIL and its retry: the FAIL is committed, no retry.
    lost_id = opened.ask()
    opened.storage.set_trial_state_values(lost_id, state=TrialState.FAIL)
    lost = opened.trial(lost_id)
    opened.sweep()
    (retry,) = opened.retries_of(lost.number)
    assert retry.state == TrialState.WAITING and retry.params == lost.params
    opened.sweep()
    assert len(opened.retries_of(lost.number)) == 1


def test_a_trial_failed_for_a_reason_of_its_own_is_not_queued_again(opened):
    for reason in ("ValueError: a bug", "TrialFailed: RuntimeError: diverged"):
        trial_id = opened.ask()
        opened.storage.set_trial_system_attr(trial_id, FAIL_REASON_ATTR, reason)
        opened.storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    opened.sweep()
    assert [t.state for t in opened.study.get_trials()] == [TrialState.FAIL] * 2


@pytest.mark.parametrize(
    "reason",
    [
        "interrupted",
        "the run stopped",
        "the run stopped: SchedulerLost: the connection to the scheduler broke",
    ],
)
def test_a_trial_whose_run_stopped_under_it_is_queued_again(opened, reason):
    trial_id = opened.ask()
    opened.storage.set_trial_system_attr(trial_id, FAIL_REASON_ATTR, reason)
    opened.storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    lost = opened.trial(trial_id)
    opened.sweep()
    (retry,) = opened.retries_of(lost.number)
    assert retry.state == TrialState.WAITING and retry.params == lost.params


def test_a_trial_whose_worker_died_is_queued_again_by_the_sweep(opened):
    trial_id = opened.ask()
    opened.storage.set_trial_system_attr(trial_id, FAIL_REASON_ATTR, "WorkerLost: died")
    opened.storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    opened.sweep()
    assert len(opened.retries_of(opened.trial(trial_id).number)) == 1


def test_a_lost_trial_retried_too_often_is_not_queued_again(opened):
    history = list(range(MAX_STALE_TRIAL_RETRIES))
    trial_id = opened.add_running(
        started=datetime.now(), system_attrs={"failed_trial": 0, "retry_history": history}
    )
    opened.storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    opened.sweep()
    assert len(opened.study.get_trials()) == 1


def test_a_retry_claimed_by_a_process_killed_right_after_ask_is_failed_and_queued_again(
    sqlite_study,
):
    # study.ask() turns a queued retry RUNNING with its parameters; a claim killed before it
    # records a heartbeat must still leave a trial the sweep fails (Optuna never fails a trial
    # without a heartbeat, and hpo's own sweep leaves trials with parameters to Optuna).
    opened = sqlite_study
    stale_id = opened.ask()
    opened.make_stale(stale_id)
    opened.sweep()
    beat_next_retry(opened.study, opened.storage, opened.study_id)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        claimed = opened.study.ask()  # ... and the process dies here
    claimed_id = opened.trial_id(claimed.number)
    assert optuna_heartbeat(opened, claimed_id) is not None
    with sqlite3.connect(opened.path, timeout=10) as c:
        c.execute("UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-1 hour')")
    c.close()
    opened.sweep()
    assert opened.trial(claimed_id).state == TrialState.FAIL
    (retry,) = opened.retries_of(opened.trial(stale_id).number)[1:]
    assert retry.state == TrialState.WAITING
    assert retry.params == opened.trial(stale_id).params


def test_a_retry_left_running_without_heartbeat_by_an_older_hpo_is_failed_and_queued_again(
    sqlite_study,
):
    opened = sqlite_study
    history = {"failed_trial": 0, "retry_history": [0]}
    orphan_id = opened.add_running(started=datetime.now() - AN_HOUR, system_attrs=history)
    opened.storage.set_trial_param(
        orphan_id, "x", 0.25, optuna.distributions.FloatDistribution(0.0, 1.0)
    )
    opened.sweep()  # given one heartbeat: Optuna fails it a grace period later
    assert opened.trial(orphan_id).state == TrialState.RUNNING
    opened.make_stale(orphan_id)
    opened.sweep()
    assert opened.trial(orphan_id).state == TrialState.FAIL
    (retry,) = [t for t in opened.study.get_trials() if t.state == TrialState.WAITING]
    number = opened.trial(orphan_id).number
    assert retry.params == {"x": 0.25} and retry.system_attrs["retry_history"] == [0, number]
