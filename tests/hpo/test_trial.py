"""A trial as a task: a pure function of its configuration, seed, thresholds, spec and split."""

import dataclasses
import subprocess
import sys

import pytest

from hpo.pruning import NoPruning, Thresholds
from hpo.spec import load_spec
from hpo.trial import (
    COMPLETE,
    INTERRUPTED,
    PRUNED,
    TrialTask,
    configuration,
    load_study_split,
    run_task,
)
from tests.hpo.conftest import write_spec


class PruneAt(Thresholds):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def should_prune(self, values) -> bool:
        return max(values) >= self.epoch


@pytest.fixture(scope="module")
def spec_and_split(tmp_path_factory):
    spec = load_spec(str(write_spec(tmp_path_factory.mktemp("spec") / "tiny.toml", epochs=4)))
    return spec, load_study_split(spec)


def task(spec, *, number=0, thresholds=None, **params):
    params = {"learning_rate": 0.01, "optimizer": "adam", **params}
    thresholds = thresholds or NoPruning().thresholds(trial_number=number, finished=[])
    return TrialTask(number, configuration(spec, params), (0, number), thresholds)


def test_the_same_task_gives_the_same_result(spec_and_split):
    spec, split = spec_and_split
    a, b = (run_task(task(spec), spec, split) for _ in range(2))
    assert (a.state, a.value, a.intermediate_values) == (b.state, b.value, b.intermediate_values)
    assert a.facts["curves"] == b.facts["curves"]


def test_a_complete_task_reports_every_epoch_and_its_best(spec_and_split):
    spec, split = spec_and_split
    result = run_task(task(spec), spec, split)
    assert result.state == COMPLETE
    assert sorted(result.intermediate_values) == [1, 2, 3, 4]
    assert result.value == max(result.intermediate_values.values())


def test_thresholds_prune_the_task(spec_and_split):
    spec, split = spec_and_split
    result = run_task(task(spec, thresholds=PruneAt(2)), spec, split)
    assert result.state == PRUNED and result.value is None
    assert sorted(result.intermediate_values) == [1, 2]


def test_a_diverged_task_is_pruned_with_zero_after_its_last_epoch(spec_and_split):
    spec, split = spec_and_split
    result = run_task(task(spec, learning_rate=1e4, optimizer="sgd"), spec, split)
    assert result.state == PRUNED and result.facts["diverged"]
    assert result.intermediate_values[result.facts["epochs_run"] + 1] == 0.0


def test_should_stop_interrupts_the_task_between_steps(spec_and_split):
    spec, split = spec_and_split
    result = run_task(task(spec), spec, split, should_stop=lambda: True)
    assert result.state == INTERRUPTED
    assert result.intermediate_values == {}


def test_the_task_module_imports_no_optuna():
    code = "import sys, hpo.trial, hpo.executors; print('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_eval_train_samples_leave_the_validation_values_unchanged(tmp_path):
    spec = load_spec(str(write_spec(tmp_path / "tiny.toml")))
    sub = dataclasses.replace(
        spec, training=dataclasses.replace(spec.training, eval_train_samples=50)
    )
    split = load_study_split(sub)
    result = run_task(task(sub), sub, split)
    every_row = run_task(task(spec), spec, split)
    assert result.state == every_row.state == "complete"
    assert result.intermediate_values == every_row.intermediate_values
    assert result.value == every_row.value
