"""Heartbeats of running trials, and the sweep that fails and retries the trials of dead workers.

On RDB storages a running trial's heartbeat is Optuna's own table and settings
(``heartbeat_interval``, ``grace_period``, ``RetryHeartbeatStaleTrialCallback``). Optuna only
records it inside ``Study.optimize`` and only fails stale trials when ``optimize`` starts a
trial, so hpo, which runs its own ask/tell loop, beats from its own thread and sweeps before
every claim.

Two cases Optuna never fails are swept here too: a RUNNING trial with no heartbeat row (its
worker died before its first beat, which comes one interval after the start), and the journal
storage, which has no heartbeats at all (hpo records them there as the trial's
``hpo:heartbeat`` system attribute). Such a trial is stale once its last sign of life
(heartbeat, else start) is older than the grace period.
A stale trial becomes FAIL and is queued again, as WAITING, with the same parameters.
"""

import contextlib
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from hpo.interrupts import sigint_deferred
from hpo.storage import MAX_STALE_TRIAL_RETRIES, heartbeat_settings, rdb_backend

HEARTBEAT_ATTR = "hpo:heartbeat"


@contextlib.contextmanager
def trial_heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Keep ``trial`` alive in the storage while the block runs: a beat every heartbeat
    interval, the first one interval after the start.

    No beat at the start: a trial shorter than the interval (most of them) writes none, and its
    start time is the sign of life the sweep reads until a first beat exists. (Optuna's own
    thread beats at once, a write that competed with the trial's first epoch for the GIL.) The
    thread starts and is joined with SIGINT held back (and raised after), so a Ctrl-C can neither
    leave it beating for a trial that is over nor be lost.
    """
    storage = study._storage
    if is_heartbeat_enabled(storage):
        interval = storage.get_heartbeat_interval()

        def record() -> None:
            storage.record_heartbeat(trial._trial_id)

    elif rdb_backend(study) is not None:
        yield  # a storage opened without heartbeats (reading, reporting)
        return
    else:
        interval, _ = heartbeat_settings()

        def record() -> None:
            storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time())

    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(Exception):  # a missed beat is not the trial's failure
                record()

    thread = threading.Thread(target=beat, name="hpo-heartbeat", daemon=True)
    with sigint_deferred() as interrupted:
        thread.start()
    try:
        if interrupted:
            raise KeyboardInterrupt
        yield
    finally:
        stop.set()
        with sigint_deferred() as late:
            thread.join()
    if late:  # a Ctrl-C during the join, with no other exception on its way: raise it now
        raise KeyboardInterrupt


def _rdb_heartbeat_trial_ids(backend: optuna.storages.RDBStorage, trial_ids: list[int]) -> set:
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    table = models.TrialHeartbeatModel
    with _create_scoped_session(backend.scoped_session) as session:
        rows = session.query(table.trial_id).filter(table.trial_id.in_(trial_ids)).all()
    return {r[0] for r in rows}


def stale_trials(study: optuna.Study, *, now: datetime | None = None) -> list[FrozenTrial]:
    """RUNNING trials that Optuna's own sweep does not catch and whose worker is gone."""
    _, grace = heartbeat_settings()
    now = now or datetime.now()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    backend = rdb_backend(study)
    stale = []
    if backend is not None:
        with_row = _rdb_heartbeat_trial_ids(backend, [t._trial_id for t in running])
        for t in running:
            started = t.datetime_start
            if t._trial_id not in with_row and started and now - started > timedelta(seconds=grace):
                stale.append(t)
        return stale
    for t in running:
        beat = t.system_attrs.get(HEARTBEAT_ATTR)
        last = datetime.fromtimestamp(beat) if beat is not None else t.datetime_start
        if last is not None and now - last > timedelta(seconds=grace):
            stale.append(t)
    return stale


def sweep_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the trials of dead workers and queue them again; return the failed numbers."""
    swept = []
    if is_heartbeat_enabled(study._storage):
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        swept += sorted(before - after)
    for t in stale_trials(study):
        try:
            ok = study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished (or another worker swept it) meanwhile
        if ok:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=MAX_STALE_TRIAL_RETRIES
                )
                retry(study, study._storage.get_trial(t._trial_id))
            swept.append(t.number)
    return swept
