"""What hpo stores with a study and its trials, read back."""

import optuna
import pytest

from hpo.records import (
    RUN_ATTR,
    TALLY_ATTR,
    count_trials,
    current_counts,
    ranked,
    run_facts,
    tally,
)
from hpo.service import run_study
from hpo.spec import load_spec
from hpo.storage import open_storage


def test_run_facts_read_one_attribute_and_the_separate_ones_of_older_studies():
    facts = {"best_epoch": 3, "epochs_run": 5, "curves": {"val_accuracy": [0.5] * 5}}
    now = optuna.trial.create_trial(value=0.5, user_attrs={RUN_ATTR: facts})
    before = optuna.trial.create_trial(value=0.5, user_attrs=facts)
    assert run_facts(now) == run_facts(before) == facts
    assert run_facts(optuna.trial.create_trial(value=0.5)) == {}


def test_ranked_puts_the_best_first_and_the_earlier_of_a_tie_before_the_later():
    def trial(number, value, state=optuna.trial.TrialState.COMPLETE):
        t = optuna.trial.create_trial(value=value, state=state)
        t.number = number
        return t

    trials = [
        trial(0, 0.5),
        trial(1, 0.9),
        trial(2, None, optuna.trial.TrialState.FAIL),
        trial(3, 0.9),
        trial(4, 0.7),
    ]
    assert [t.number for t in ranked(trials)] == [1, 3, 4, 0]


def full_counts(study):
    trials = study.get_trials(deepcopy=False)
    stamps = [t.datetime_complete or t.datetime_start for t in trials]
    return count_trials(trials), max(s for s in stamps if s is not None)


@pytest.fixture
def run_twice(tiny_spec, db_url):
    """A study of 4 trials, its tally then, and the study after 4 more (with its new tally)."""
    spec = load_spec(str(tiny_spec))
    run_study(spec, storage_url=db_url, trials=4)
    storage = open_storage(db_url)
    first = optuna.load_study(study_name="tiny", storage=storage).user_attrs[TALLY_ATTR]
    run_study(spec, storage_url=db_url, trials=8)
    return optuna.load_study(study_name="tiny", storage=storage), storage, first


def test_a_run_leaves_a_tally_that_counts_every_trial(run_twice):
    study, storage, _ = run_twice
    assert study.user_attrs[TALLY_ATTR]["below"] == 8 and study.user_attrs[TALLY_ATTR]["open"] == []
    assert current_counts(study, storage) == full_counts(study)


def test_the_counts_add_the_trials_after_the_tally_and_those_it_left_open(run_twice, monkeypatch):
    study, storage, first = run_twice
    expected = full_counts(study)
    trials = study.get_trials(deepcopy=False)
    # As if trial 1 had been running when the tally of the first 4 was taken.
    was_open = dict(tally([trials[0], trials[2], trials[3]]), below=4, open=[1])
    monkeypatch.setattr(optuna.Study, "get_trials", lambda *a, **k: pytest.fail("read all"))
    for stored in (first, was_open):
        study.set_user_attr(TALLY_ATTR, stored)
        assert current_counts(study, storage) == expected


def test_without_a_tally_every_trial_is_read(tiny_spec, db_url):
    run_study(load_spec(str(tiny_spec)), storage_url=db_url, trials=3)
    storage = open_storage(db_url)
    study = optuna.load_study(study_name="tiny", storage=storage)
    study.set_user_attr(TALLY_ATTR, None)
    assert current_counts(study, storage) == full_counts(study)


def some_trials() -> list[optuna.trial.FrozenTrial]:
    from optuna.trial import TrialState, create_trial

    def made(number, state, value=None, diverged=False):
        t = create_trial(state=state, value=value, user_attrs={RUN_ATTR: {"diverged": diverged}})
        t.number = number
        return t

    return [
        made(0, TrialState.COMPLETE, 0.5),
        made(1, TrialState.PRUNED, diverged=True),
        made(2, TrialState.FAIL),
        made(3, TrialState.COMPLETE, 0.75),
        made(4, TrialState.RUNNING),
        made(5, TrialState.PRUNED),
        made(6, TrialState.WAITING),
    ]


@pytest.mark.parametrize("cut", range(8))
def test_counts_of_two_parts_add_up_to_the_counts_of_the_whole(cut):
    trials = some_trials()
    assert count_trials(trials[:cut]) + count_trials(trials[cut:]) == count_trials(trials)
