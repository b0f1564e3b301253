"""A study's snapshot, read from a real study's storage: every trial, the search space, the
importances with their spread, the activation histograms."""

import math

import numpy as np
import optuna
import pytest

from hpo.records import load_hpo_study
from hpo.service import run_study
from hpo.spec import load_spec
from hpo.study_snapshot import build_snapshot, importance_spread, layer_histograms, spec_facts


@pytest.fixture
def study_url(tiny_spec, db_url):
    run_study(load_spec(str(tiny_spec)), storage_url=db_url, trials=6)
    return db_url


def test_snapshot_holds_every_trial_and_the_search_space(study_url):
    study, spec = load_hpo_study(storage_url=study_url, study_name="tiny")
    snapshot = build_snapshot(study, spec, study_url)
    assert [t.number for t in snapshot.trials] == list(range(6))
    params = {p.name: p for p in snapshot.params}
    assert params["learning_rate"].log and params["learning_rate"].kind == "float"
    assert params["optimizer"].choices == ("sgd", "momentum", "adam")
    assert snapshot.split_sizes == {"train": 160, "validation": 40, "test": 359}
    assert snapshot.epochs == 3


def test_importance_is_the_median_over_subsamples_inside_its_own_range(study_url):
    study, spec = load_hpo_study(storage_url=study_url, study_name="tiny")
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    names = ["learning_rate", "weight_decay"]
    medians, spread = importance_spread(complete, names, np.random.default_rng(0))
    assert set(spread) == set(names) == set(medians)
    assert all(spread[n][0] <= medians[n] <= spread[n][1] <= 1 for n in names)
    assert list(medians.values()) == sorted(medians.values(), reverse=True)
    again = importance_spread(complete, names, np.random.default_rng(0))
    assert again == (medians, spread)  # seeded
    assert importance_spread(complete[:4], names, np.random.default_rng(0)) is None
    snapshot = build_snapshot(study, spec, study_url, with_activations=False)
    if snapshot.importance_spread:
        assert set(snapshot.importance_spread) == set(snapshot.importances)
        for name, (low, high) in snapshot.importance_spread.items():
            assert low <= snapshot.importances[name] <= high


def test_snapshot_has_activation_histograms_of_each_hidden_layer(study_url):
    study, spec = load_hpo_study(storage_url=study_url, study_name="tiny")
    snapshot = build_snapshot(study, spec, study_url)
    (layer,) = snapshot.activations  # the tiny spec has one hidden layer of 16
    nonzero_initial = 40 * 16 * (1 - layer.initial_zeros)
    assert sum(layer.initial) == pytest.approx(nonzero_initial)
    assert len(layer.edges) == len(layer.initial) + 1


def test_the_retraining_for_the_activations_reports_its_epochs(study_url):
    """On Fashion-MNIST it takes minutes: ``hpo run``/``report`` show a bar from these."""
    study, spec = load_hpo_study(storage_url=study_url, study_name="tiny")
    seen = []
    build_snapshot(study, spec, study_url, progress=lambda e, n: seen.append((e, n)))
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3), (3, 3)]  # each epoch, then the end
    seen.clear()
    build_snapshot(study, spec, study_url, with_activations=False, progress=seen.append)
    assert seen == []  # nothing retrained, nothing shown


def test_layer_histograms_count_zeros_apart():
    initial = np.array([[0.0, 1.0], [2.0, 0.0]])
    trained = np.array([[0.0, 0.0], [0.0, 3.0]])
    h = layer_histograms(1, initial, trained)
    assert h.initial_zeros == 0.5 and h.trained_zeros == 0.75
    assert sum(h.initial) == 2 and sum(h.trained) == 1


def test_snapshot_has_the_first_layer_weights_and_the_sanity_checks(study_url):
    study, spec = load_hpo_study(storage_url=study_url, study_name="tiny")
    snapshot = build_snapshot(study, spec, study_url)
    first = snapshot.first_layer
    assert first.side == 8 and len(first.units) == 16  # digits are 8x8; one layer of 16 units
    assert all(len(u) == 64 for u in first.units)
    sanity = snapshot.sanity
    assert sanity.classes == 10 and sanity.overfit_samples == 20
    assert abs(sanity.initial_loss - math.log(10)) < 1.0  # He init on standardized digits
    assert 0.0 <= sanity.overfit_accuracy <= 1.0


def test_spec_facts_state_the_spec_as_plain_data():
    spec = load_spec("fashion-mnist")
    facts = spec_facts(spec)
    assert facts.fingerprint == spec.objective_fingerprint()
    assert facts.definition == spec.to_dict()
    assert facts.model == spec.model_text() and "width searched" in facts.model
    assert (facts.dataset, facts.epochs, facts.batch_size) == ("fashion-mnist", 27, 100)
    assert (facts.sampler, facts.pruner, facts.warmup_epochs) == ("tpe", "hyperband", 1)
    assert [e.name for e in facts.space] == [p.name for p in spec.space]
    assert facts.param("training.batch_size").choices == (64, 128, 256)
    assert facts.fixed("init") == "he" and facts.fixed("optimizer", "sgd") == "sgd"
