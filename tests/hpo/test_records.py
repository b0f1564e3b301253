"""What hpo stores with a study and its trials, read back."""

import optuna

from hpo.records import RUN_ATTR, run_facts


def test_run_facts_read_one_attribute_and_the_separate_ones_of_older_studies():
    facts = {"best_epoch": 3, "epochs_run": 5, "curves": {"val_accuracy": [0.5] * 5}}
    now = optuna.trial.create_trial(value=0.5, user_attrs={RUN_ATTR: facts})
    before = optuna.trial.create_trial(value=0.5, user_attrs=facts)
    assert run_facts(now) == run_facts(before) == facts
    assert run_facts(optuna.trial.create_trial(value=0.5)) == {}
