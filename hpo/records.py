"""What hpo stores with a study and its trials, and how it is read back.

A study's user attributes hold the spec it was created with (``SPEC_ATTR``), the fingerprint of
its objective (``FINGERPRINT_ATTR``), its trial target (``TARGET_ATTR``) and the digest of a
learner's network file (``NETWORK_ATTR``); a finished trial's one user attribute ``RUN_ATTR``
holds the facts of its run (``hpo.trial.result_facts``).
Light to import (no trainer, no executors): the commands that only read start fast.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.errors import UsageError
from hpo.spec import StudySpec, spec_from_dict
from hpo.storage import open_storage
from hpo.urls import mask_password

SPEC_ATTR = "hpo:spec"
FINGERPRINT_ATTR = "hpo:fingerprint"
TARGET_ATTR = "hpo:target"
NETWORK_ATTR = "hpo:network"
"""The digest of the learner's network file the study's trials train (``[model] network``)."""
RUN_ATTR = "run"
"""The user attribute that holds a trial's facts, as one JSON object: one storage write per
trial instead of one per fact (each costs the orchestrator ~1 ms on SQLite)."""

TALLY_ATTR = "hpo:tally"
"""The counts of a study's trials below a number, kept by its orchestrators (``tally``), so that
``hpo studies`` reads only the trials since: a finished trial never changes."""

CONFIRMS_ATTR = "hpo:confirms"
"""A study that holds another's confirmation runs (``hpo.confirm``) names it here."""

COMPANION_SUFFIX = ":confirm"


def companion_name(study_name: str) -> str:
    """The name of the study that holds ``study_name``'s confirmation runs."""
    return study_name + COMPANION_SUFFIX


def companions(storage: optuna.storages.BaseStorage, names: list[str]) -> dict[str, str]:
    """The studies among ``names`` that hold confirmation runs, by the study they confirm: by
    the attribute ``hpo confirm`` stores (``CONFIRMS_ATTR``), not by the name alone, so that a
    search study named ``one:confirm`` stays a search study."""
    present = set(names)
    found = {}
    for n in names:
        base = n[: -len(COMPANION_SUFFIX)]
        if n.endswith(COMPANION_SUFFIX) and base in present:
            attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(n))
            if attrs.get(CONFIRMS_ATTR) == base:
                found[base] = n
    return found


def search_studies(storage: optuna.storages.BaseStorage, names: list[str]) -> list[str]:
    """``names`` without the studies that hold confirmation runs of another in ``names``."""
    held = set(companions(storage, names).values())
    return [n for n in names if n not in held]


def default_study(storage_url: str) -> tuple[str, list[str]]:
    """The study a command reads when none is named: the storage's only search study, else its
    most recently updated one (a trial started or finished last); with the others' names."""
    storage = open_storage(storage_url, write=False)
    names = search_studies(storage, optuna.get_all_study_names(storage))
    if not names:
        raise UsageError(
            f"{mask_password(storage_url)}: no study yet (allowed: create one with "
            "python -m hpo run)"
        )

    def updated(study_name: str) -> tuple:
        study = optuna.load_study(study_name=study_name, storage=storage)
        stamp = current_counts(study, storage)[1]
        return (stamp is not None, stamp.timestamp() if stamp else 0.0, study_name)

    latest = names[0] if len(names) == 1 else max(names, key=updated)
    return latest, [n for n in names if n != latest]


NO_PRUNER = optuna.pruners.NopPruner()
"""The study object's own pruner: hpo's pruning rules decide, in the trial (``hpo.pruning``)."""


def run_facts(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A stored trial's facts (empty for a trial that has none yet); a trial stored by hpo
    before RUN_ATTR held them as separate user attributes, read as such."""
    return trial.user_attrs.get(RUN_ATTR, trial.user_attrs)


@dataclass(frozen=True)
class Counts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    diverged: int = 0
    best_value: float | None = None
    epochs: tuple[tuple[int, int, int], ...] = ()
    """The trials training in this command: (number, epochs finished, epochs to run), for the
    progress bar; ``count_trials`` leaves it empty (the storage knows no epoch in flight)."""
    queued: int = 0
    """Of the ``running`` trials, those this command's executor holds waiting for a worker."""

    @property
    def finished(self) -> int:
        return self.complete + self.pruned

    def __add__(self, other: "Counts") -> "Counts":
        """The counts of two disjoint sets of trials (``count_trials`` of each)."""
        bests = [b for b in (self.best_value, other.best_value) if b is not None]
        return Counts(
            complete=self.complete + other.complete,
            pruned=self.pruned + other.pruned,
            failed=self.failed + other.failed,
            running=self.running + other.running,
            waiting=self.waiting + other.waiting,
            diverged=self.diverged + other.diverged,
            best_value=max(bests) if bests else None,
        )


def ranked(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The completed ``trials``, best first (ties: the earlier trial): the one order hpo ranks
    trials in (``best``, ``confirm``'s top configurations, the report's best);
    ``reports.snapshot.StudySnapshot.ranked`` orders its plain records the same way."""
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    return sorted(done, key=lambda t: (-t.value, t.number))


def count_trials(trials: list[optuna.trial.FrozenTrial]) -> Counts:
    """Trial counts by state, the diverged ones among the pruned, and the best value."""
    by_state = dict.fromkeys(TrialState, 0)
    best = None
    diverged = 0
    for t in trials:
        by_state[t.state] += 1
        if t.state == TrialState.COMPLETE and (best is None or t.value > best):
            best = t.value
        if t.state == TrialState.PRUNED and run_facts(t).get("diverged"):
            diverged += 1
    return Counts(
        complete=by_state[TrialState.COMPLETE],
        pruned=by_state[TrialState.PRUNED],
        failed=by_state[TrialState.FAIL],
        running=by_state[TrialState.RUNNING],
        waiting=by_state[TrialState.WAITING],
        diverged=diverged,
        best_value=best,
    )


def load_hpo_study(
    *, storage_url: str, study_name: str, write: bool = True
) -> tuple[optuna.Study, StudySpec]:
    """Open an existing hpo study and the spec stored with it (``write=False``: to read)."""
    storage = open_storage(storage_url, write=write, create=False)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=NO_PRUNER)
    except KeyError:  # the allowed names: the search studies, not their confirmation runs
        names = search_studies(storage, optuna.get_all_study_names(storage))
        raise UsageError(
            f"{mask_password(storage_url)}: no study named {study_name!r} "
            f"(allowed: {', '.join(names) if names else 'none yet: create one with hpo run'})"
        ) from None
    raw = study.user_attrs.get(SPEC_ATTR)
    parent = study.user_attrs.get(CONFIRMS_ATTR)
    if raw is None and parent is not None:
        raise UsageError(
            f"study {study_name!r} holds the confirmation runs of {parent!r} "
            f"(allowed: --study {parent})"
        )
    if raw is None:
        raise UsageError(f"study {study_name!r} was not created by hpo (no stored spec)")
    spec = spec_from_dict(raw, source=f"{study_name} (stored spec)", default_name=study_name)
    return study, spec


def _stamp(t: optuna.trial.FrozenTrial) -> datetime | None:
    return t.datetime_complete or t.datetime_start


def tally(trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
    """What ``TALLY_ATTR`` holds for ``trials``, all of a study's as read at one moment: their
    number (``below``), the counts of the finished ones, the latest start or completion, and
    the numbers of those not finished then (``open``: read again, as they may have ended)."""
    finished = [t for t in trials if t.state.is_finished()]
    counts = count_trials(finished)
    stamps = [s for s in map(_stamp, finished) if s is not None]
    return {
        "below": len(trials),
        "complete": counts.complete,
        "pruned": counts.pruned,
        "failed": counts.failed,
        "diverged": counts.diverged,
        "best": counts.best_value,
        "updated": max(stamps).isoformat() if stamps else None,
        "open": [t.number for t in trials if not t.state.is_finished()],
    }


def write_tally(study: optuna.Study) -> None:
    """Store the study's tally (one write; its orchestrators call it now and then)."""
    study.set_user_attr(TALLY_ATTR, tally(study.get_trials(deepcopy=False)))


def current_counts(
    study: optuna.Study, storage: optuna.storages.BaseStorage
) -> tuple[Counts, datetime | None]:
    """The study's counts and its latest start or completion, from its tally and the trials
    the tally left open or that came after it, each read on its own; every trial when there is
    no tally."""
    stored = study.user_attrs.get(TALLY_ATTR)
    if not stored:
        trials = study.get_trials(deepcopy=False)
        stamps = [s for s in map(_stamp, trials) if s is not None]
        return count_trials(trials), max(stamps) if stamps else None
    study_id = storage.get_study_id_from_name(study.study_name)

    def read(number: int) -> optuna.trial.FrozenTrial | None:
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        except KeyError:
            return None
        return storage.get_trial(trial_id)

    since = [t for t in map(read, stored["open"]) if t is not None]
    number = stored["below"]
    while (t := read(number)) is not None:
        since.append(t)
        number += 1
    new = count_trials(since)
    values = [v for v in (stored["best"], new.best_value) if v is not None]
    counts = Counts(
        complete=stored["complete"] + new.complete,
        pruned=stored["pruned"] + new.pruned,
        failed=stored["failed"] + new.failed,
        running=new.running,
        waiting=new.waiting,
        diverged=stored["diverged"] + new.diverged,
        best_value=max(values) if values else None,
    )
    stamps = [s for s in map(_stamp, since) if s is not None]
    if stored["updated"]:
        stamps.append(datetime.fromisoformat(stored["updated"]))
    return counts, max(stamps) if stamps else None
