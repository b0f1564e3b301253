"""Heartbeats of running trials, and the sweep that fails and retries the trials of lost runs.

On RDB storages a running trial's heartbeat is Optuna's own (``heartbeat_interval``,
``grace_period``, ``RetryHeartbeatStaleTrialCallback``, ``optuna.storages.fail_stale_trials``).
Optuna records heartbeats only inside ``Study.optimize``; hpo runs its own ask/tell loop, so the
orchestrator records them: once when it claims a trial (so that every running trial has a
heartbeat from its first second), then every interval from one thread for all its running
trials. Optuna's journal storage has no heartbeats: there hpo records the time as the trial's
``hpo:heartbeat`` system attribute and sweeps those itself, and it sweeps the one case Optuna
never fails, a RUNNING trial without a heartbeat (a claim killed before its first beat).

A stale trial (no heartbeat for the grace period: its orchestrator was killed, its machine
lost) becomes FAIL and is queued again, as WAITING, with the same parameters, at most
``MAX_STALE_TRIAL_RETRIES`` times. Failing and queueing are two writes, so the sweep is
idempotent instead: every sweep also queues each lost trial (failed by a sweep, or by its
worker's death) that no trial retries yet, so a kill between the two loses no retry.

A queued retry already has its parameters when ``study.ask()`` turns it RUNNING; the claim
records its heartbeat before that ask (``beat_next_retry``), so no instant leaves a RUNNING
trial with parameters and no heartbeat, which Optuna would never fail.
"""

import contextlib
import threading
import time
import warnings
from datetime import datetime, timedelta

import optuna
from optuna.trial import TrialState

from hpo.storage import MAX_STALE_TRIAL_RETRIES, heartbeat_settings

HEARTBEAT_ATTR = "hpo:heartbeat"
ADOPTED_ATTR = "hpo:adopted"
FAIL_REASON_ATTR = "hpo:fail_reason"
"""Why hpo failed a trial (``interrupted``, the error its training raised, ...). A FAIL trial
without one of its own was failed by a stale-trial sweep."""
LOST_REASONS = ("WorkerLost", "interrupted", "the run stopped")
"""Fail reasons of trials whose run was lost rather than wrong, queued again with their
parameters: a worker process died, the command was interrupted (Ctrl-C, SIGTERM, SIGHUP), or the
run stopped while they trained (its cluster went away, its storage was lost, other trials'
errors ended it)."""


def has_optuna_heartbeats(storage: optuna.storages.BaseStorage) -> bool:
    return (
        isinstance(storage, optuna.storages.RDBStorage)
        and storage.get_heartbeat_interval() is not None
    )


def record_heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    """One heartbeat of a running trial."""
    if has_optuna_heartbeats(storage):
        storage.record_heartbeat(trial_id)
    elif not isinstance(storage, optuna.storages.RDBStorage):
        storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
    # else: an RDB storage opened to read (no heartbeats): nothing to keep alive


class Heartbeats:
    """A daemon thread that beats, every interval, for each trial this orchestrator runs.

    A missed beat (the storage away for a moment) is not the trial's failure: the next beat
    comes an interval later, well inside the grace period.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, *, interval: float) -> None:
        self._storage = storage
        self._interval = interval
        self._trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.discard(trial_id)

    def __enter__(self) -> "Heartbeats":
        self._thread = threading.Thread(target=self._beat, name="hpo-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                trial_ids = sorted(self._trial_ids)
            for trial_id in trial_ids:
                with contextlib.suppress(Exception):
                    record_heartbeat(self._storage, trial_id)


def stale_trials(
    study: optuna.Study, *, optuna_beats: bool, now: datetime | None = None
) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials that Optuna's own sweep does not fail and whose orchestrator is gone:
    their last sign of life (hpo's heartbeat attribute, else the start) is older than the grace
    period. Where Optuna records heartbeats (``optuna_beats``) that is only a trial whose claim
    never finished: the claim records the first heartbeat before it suggests, so a trial with
    no parameter may have no heartbeat, and Optuna never fails a trial without one."""
    _, grace = heartbeat_settings()
    now = now or datetime.now()
    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if optuna_beats and t.params:
            continue
        beat = None if optuna_beats else t.system_attrs.get(HEARTBEAT_ATTR)
        last = datetime.fromtimestamp(beat) if beat is not None else t.datetime_start
        if last is not None and now - last > timedelta(seconds=grace):
            stale.append(t)
    return stale


def sweep_stale_trials(
    study: optuna.Study, storage: optuna.storages.BaseStorage, study_id: int
) -> None:
    """Fail the stale trials of ``study`` and queue each again with the same parameters."""
    optuna_beats = has_optuna_heartbeats(storage)
    if isinstance(storage, optuna.storages.RDBStorage) and not optuna_beats:
        return  # opened to read: sweeping is a writer's job
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if optuna_beats:
            optuna.storages.fail_stale_trials(study)
            adopt_retries_without_heartbeat(study, storage, study_id)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_STALE_TRIAL_RETRIES)
        for t in stale_trials(study, optuna_beats=optuna_beats):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            try:
                failed = storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # it finished (or another orchestrator swept it) meanwhile
            if failed:
                retry(study, storage.get_trial(trial_id))
        for t in lost_trials_without_retry(study):
            retry(study, t)


def adopt_retries_without_heartbeat(
    study: optuna.Study, storage: optuna.storages.BaseStorage, study_id: int
) -> None:
    """Give one heartbeat to each retry RUNNING for longer than the grace period that may have
    none (a claim killed between ``study.ask()`` and its first beat, by an hpo that did not yet
    beat before the ask): Optuna fails it one grace period later unless its orchestrator
    beats. Marked with ``ADOPTED_ATTR``, so that each is given one only once."""
    _, grace = heartbeat_settings()
    now = datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if (
            "retry_history" in t.system_attrs
            and t.system_attrs.get(ADOPTED_ATTR) != t.number
            and t.datetime_start is not None
            and now - t.datetime_start > timedelta(seconds=grace)
        ):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            record_heartbeat(storage, trial_id)
            storage.set_trial_system_attr(trial_id, ADOPTED_ATTR, t.number)


def is_lost(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a FAIL trial's run was lost (so it is to be run again with its parameters): it
    was failed by a sweep (no reason of its own; a retry inherits only a lost trial's reason)
    or for one of ``LOST_REASONS``, not for an error of its own training."""
    reason = trial.system_attrs.get(FAIL_REASON_ATTR)
    return trial.state == TrialState.FAIL and (reason is None or reason.startswith(LOST_REASONS))


def lost_trials_without_retry(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The lost trials (``is_lost``) that no trial retries yet and that may be retried again,
    in number order: the sweep's second step, idempotent, so a process killed between failing
    a trial and queueing its retry loses no retry."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    return [
        t
        for t in trials
        if is_lost(t)
        and t.number not in retried
        and len(t.system_attrs.get("retry_history", ())) < MAX_STALE_TRIAL_RETRIES
    ]


def beat_next_retry(
    study: optuna.Study, storage: optuna.storages.BaseStorage, study_id: int
) -> None:
    """Record a heartbeat for the queued retry that ``study.ask()`` turns RUNNING next (the
    first WAITING trial), before that ask: it has its parameters from the moment it runs, and a
    claim killed right after the ask must leave a trial that the sweep fails and retries."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        record_heartbeat(storage, trial_id)
        return
