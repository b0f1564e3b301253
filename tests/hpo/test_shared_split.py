"""hpo.shared_split: a big split mapped by the workers from one file that is never on disk."""

import dataclasses
import os
import signal
import tempfile

import numpy as np
import pytest

from hpo import shared_split
from hpo.executors import LocalProcessExecutor
from hpo.pruning import NoPruning
from hpo.shared_split import SharedSplit, share, split_nbytes
from hpo.spec import load_spec
from hpo.trial import TrialTask, configuration, load_study_split, run_task
from tests.hpo.conftest import write_spec

RESULT_TIMEOUT = 120


@pytest.fixture(scope="module")
def spec_and_split(tmp_path_factory):
    spec = load_spec(str(write_spec(tmp_path_factory.mktemp("spec") / "tiny.toml")))
    return spec, load_study_split(spec)


def task(spec, number):
    config = configuration(spec, {"learning_rate": 0.05, "optimizer": "adam"})
    return TrialTask(
        number, config, (0, number), NoPruning().thresholds(trial_number=number, finished=())
    )


def without_timings(result):
    facts = {k: v for k, v in result.facts.items() if k != "train_seconds"}
    return result.state, result.value, result.intermediate_values, facts


def test_the_mapped_split_equals_the_split_and_is_read_only(spec_and_split):
    _, split = spec_and_split
    shared = SharedSplit(split)
    try:
        mapped = shared.handle.open()
        assert mapped.digest() == split.digest()
        assert (mapped.name, mapped.n_classes) == (split.name, split.n_classes)
        assert type(mapped.x_train) is np.ndarray and not mapped.x_train.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            mapped.x_train[0, 0] = 1.0
    finally:
        shared.close()


def test_the_file_is_never_left_in_the_temporary_directory(spec_and_split, tmp_path):
    _, split = spec_and_split
    shared = SharedSplit(split, directory=str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # unlinked at once, kept open
    assert os.path.exists(shared.handle.path)
    shared.close()
    assert not os.path.exists(shared.handle.path)


def test_an_empty_test_split_maps_too(spec_and_split):
    _, split = spec_and_split
    empty = dataclasses.replace(split, x_test=split.x_test[:0], y_test=split.y_test[:0])
    shared = SharedSplit(empty)
    try:
        assert shared.handle.open().digest() == empty.digest()
    finally:
        shared.close()


def test_only_a_big_split_is_shared(spec_and_split, monkeypatch):
    _, split = spec_and_split
    assert split_nbytes(split) < shared_split.SHARE_MIN_BYTES and share(split) is None
    monkeypatch.setattr(shared_split, "SHARE_MIN_BYTES", 0)
    shared = share(split)
    assert shared is not None
    shared.close()


def test_workers_train_on_the_shared_file_and_a_replacement_maps_it_too(
    spec_and_split, monkeypatch
):
    spec, split = spec_and_split
    monkeypatch.setattr(shared_split, "SHARE_MIN_BYTES", 0)
    before = set(os.listdir(tempfile.gettempdir()))
    executor = LocalProcessExecutor(spec, split, workers=1)
    try:
        expected = without_timings(run_task(task(spec, 0), spec, split))
        result = executor.submit(task(spec, 0)).result(timeout=RESULT_TIMEOUT)
        assert without_timings(result) == expected
        (pid,) = executor.pids()
        with open(f"/proc/{pid}/maps") as f:
            assert "hpo-split-" in f.read()  # mapped, not received on the pipe
        os.kill(pid, signal.SIGKILL)
        for number in (1, 2):  # the first may be the one the dead worker took
            future = executor.submit(task(spec, number))
            future.exception(timeout=RESULT_TIMEOUT)
        (replacement,) = executor.pids()
        assert replacement != pid
        result = executor.submit(task(spec, 3)).result(timeout=RESULT_TIMEOUT)
        assert without_timings(result) == without_timings(run_task(task(spec, 3), spec, split))
        with open(f"/proc/{replacement}/maps") as f:
            assert "hpo-split-" in f.read()
    finally:
        executor.shutdown(cancel=True)
    left = set(os.listdir(tempfile.gettempdir())) - before
    assert not [n for n in left if n.startswith("hpo-split-")]
