"""The orchestrator, driven directly on a SQLite study: claims up to the target, stores results,
fails what raised, retries what was lost, and never leaves a trial RUNNING.

Most tests train nothing: ``CannedExecutor`` answers each task at once with a result or an
error chosen by the test, so the order of events is fixed.
"""

import concurrent.futures
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from hpo.errors import RunError
from hpo.executors import InlineExecutor, TrialExecutor, WorkerLost
from hpo.interrupts import INTERRUPTS
from hpo.pruning import NoPruning, PruningRule, Thresholds
from hpo.records import RUN_ATTR, Counts, count_trials, run_facts
from hpo.runner import FAIL_REASON_ATTR, MAX_CONSECUTIVE_ERRORS, Orchestrator
from hpo.service import create_or_load_study, make_sampler
from hpo.spec import load_spec
from hpo.storage import close_storages, open_storage
from hpo.trial import (
    COMPLETE,
    INTERRUPTED,
    PRUNED,
    TrialResult,
    TrialTask,
    load_study_split,
    run_task,
)
from tests.hpo.conftest import write_spec

STUDY_SEED = 7  # not 0: a seed (7, n) cannot pass for a trial number


class CannedExecutor(TrialExecutor):
    """Answers each task as it is submitted with ``answer(task)``: a result, an exception for its
    future, or None to leave the future pending (a trial still training)."""

    def __init__(self, answer: Callable, *, slots: int = 1, prefetch: int = 0) -> None:
        self.answer, self.slots, self.prefetch = answer, slots, prefetch
        self.tasks = []  # as trained: after before_start
        self.shutdowns: list[bool] = []  # each shutdown's cancel

    def submit(self, task, *, before_start=None) -> concurrent.futures.Future:
        if before_start is not None:
            task = before_start(task)
        self.tasks.append(task)
        future = concurrent.futures.Future()
        outcome = self.answer(task)
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        elif outcome is not None:
            future.set_result(outcome)
        return future

    def shutdown(self, *, cancel: bool = False) -> None:
        self.shutdowns.append(cancel)


class QueueingExecutor(CannedExecutor):
    """Holds each task ``wait`` seconds in its queue before it starts (``before_start``) and
    completes at once."""

    def __init__(self, wait: float) -> None:
        super().__init__(complete)
        self.wait = wait

    def submit(self, task, *, before_start=None) -> concurrent.futures.Future:
        future = concurrent.futures.Future()

        def start() -> None:
            started = before_start(task) if before_start is not None else task
            self.tasks.append(started)
            future.set_result(complete(started))

        threading.Timer(self.wait, start).start()
        return future


@dataclass(frozen=True)
class Marked(Thresholds):
    """Thresholds that never prune, marked with the trial they were made for."""

    number: int

    def should_prune(self, values) -> bool:
        return False


def facts_of(task, values: dict[int, float], *, diverged: bool = False) -> dict:
    return {
        "best_epoch": max(values, key=values.get),
        "epochs_run": len(values),
        "diverged": diverged,
        "seed": list(task.seed),
        "curves": {"val_accuracy": list(values.values())},
    }


def complete(task) -> TrialResult:
    value = 0.5 + task.number / 100
    values = {1: value - 0.25, 2: value}
    return TrialResult(task.number, COMPLETE, value, values, facts_of(task, values), 0.01)


def pruned(task, *, diverged: bool = False) -> TrialResult:
    values = {1: 0.125, 2: 0.0} if diverged else {1: 0.125}
    facts = facts_of(task, values, diverged=diverged)
    return TrialResult(task.number, PRUNED, None, values, facts, 0.01)


@pytest.fixture
def setup(tmp_path):
    """A tiny spec and where its study lives; the storages are closed afterwards."""
    spec = load_spec(str(write_spec(tmp_path / "tiny.toml", sampler="random", seed=STUDY_SEED)))
    yield spec, f"sqlite:///{tmp_path / 'studies.db'}"
    close_storages()


def orchestrator(setup, executor, *, target, deadline=None, pruning=None, progress=None):
    """An orchestrator as hpo's service makes one, on the study as hpo creates it."""
    spec, url = setup
    study = create_or_load_study(spec, storage_url=url, study_name="tiny", target=target)
    return Orchestrator(
        study,
        spec,
        storage=open_storage(url),
        storage_url=url,
        target=target,
        deadline=deadline,
        executor=executor,
        make_sampler=lambda number: make_sampler(spec, number=number),
        pruning=pruning or NoPruning(),
        progress=progress,
    )


def stored(setup) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="tiny", storage=open_storage(setup[1])).get_trials()


def states(trials) -> list[TrialState]:
    return [t.state for t in trials]


def fail_reasons(trials) -> dict[int, str]:
    return {
        t.number: t.system_attrs[FAIL_REASON_ATTR]
        for t in trials
        if FAIL_REASON_ATTR in t.system_attrs
    }


# ---------------------------------------------------------------------------------------------
# The target


def test_the_target_is_reached_exactly_with_room_for_more_in_flight(setup):
    executor = CannedExecutor(complete, slots=2, prefetch=3)  # 5 in flight > the target
    runner = orchestrator(setup, executor, target=4)
    assert runner.run() == 4
    trials = stored(setup)
    assert states(trials) == [TrialState.COMPLETE] * 4
    assert [t.number for t in executor.tasks] == [0, 1, 2, 3]
    assert runner.counts == count_trials(trials)
    assert executor.shutdowns == [False]


def test_ran_counts_the_trials_finished_here_and_no_failed_one(setup):
    assert orchestrator(setup, CannedExecutor(complete), target=2).run() == 2

    def third_raises(task):
        return ValueError("bad luck") if task.number == 3 else complete(task)

    assert orchestrator(setup, CannedExecutor(third_raises), target=5).run() == 3
    assert (
        states(stored(setup))
        == [TrialState.COMPLETE] * 3 + [TrialState.FAIL] + [TrialState.COMPLETE] * 2
    )


def test_an_orchestrator_at_its_target_claims_nothing(setup):
    orchestrator(setup, CannedExecutor(complete), target=2).run()
    executor = CannedExecutor(complete)
    assert orchestrator(setup, executor, target=2).run() == 0
    assert executor.tasks == []
    assert len(stored(setup)) == 2


def test_a_deadline_in_the_past_claims_nothing(setup):
    executor = CannedExecutor(complete)
    runner = orchestrator(setup, executor, target=3, deadline=time.monotonic() - 1.0)
    assert runner.run() == 0
    assert executor.tasks == []
    assert stored(setup) == []


def test_progress_is_reported_until_the_target(setup):
    seen: list[tuple[Counts, int]] = []
    orchestrator(
        setup, CannedExecutor(complete), target=3, progress=lambda *a: seen.append(a)
    ).run()
    assert seen[0] == (Counts(), 3)
    assert [c.complete for c, _ in seen] == [0, 1, 2, 3]
    assert seen[-1][0].running == 0 and seen[-1][0].best_value == 0.52


def test_a_result_waiting_to_be_stored_shows_as_trained_so_the_bar_never_steps_back(setup):
    seen: list[Counts] = []
    runner = orchestrator(
        setup,
        CannedExecutor(complete, slots=2),  # both results arrive as they are handed out
        target=2,
        progress=lambda counts, _: seen.append(counts),
    )
    runner.run()
    epochs = runner.spec.training.epochs
    after_first = next(c for c in seen if c.complete == 1)
    assert after_first.epochs == ((1, epochs, epochs),)
    progress = [c.finished + sum(done / of for _, done, of in c.epochs) for c in seen]
    assert progress == sorted(progress)


class EpochByEpoch(CannedExecutor):
    """Trains each trial on a thread of its own: 3 epochs of 0.3 s, seen through ``epochs()``,
    then the result of ``complete``."""

    def __init__(self) -> None:
        super().__init__(lambda task: None)  # no answer: the future stays pending
        self.training: dict[int, int] = {}
        self.lock = threading.Lock()

    def submit(self, task, *, before_start=None) -> concurrent.futures.Future:
        future = super().submit(task, before_start=before_start)
        task = self.tasks[-1]

        def train() -> None:
            for epoch in range(1, 4):
                time.sleep(0.3)
                with self.lock:
                    self.training[task.number] = epoch
            with self.lock:
                del self.training[task.number]
            future.set_result(complete(task))

        threading.Thread(target=train, daemon=True).start()
        return future

    def epochs(self) -> dict[int, int]:
        with self.lock:
            return dict(self.training)


def test_progress_shows_the_epochs_of_the_trials_in_flight(setup):
    seen: list[Counts] = []
    orchestrator(setup, EpochByEpoch(), target=1, progress=lambda c, _: seen.append(c)).run()
    shown = [c.epochs for c in seen if c.epochs]
    assert shown and all(len(e) == 1 and e[0][0] == 0 and e[0][2] == 3 for e in shown)
    done = [e[0][1] for e in shown]
    assert done == sorted(done) and set(done) <= {1, 2, 3} and len(set(done)) >= 2
    assert seen[-1].complete == 1 and seen[-1].epochs == ()


# ---------------------------------------------------------------------------------------------
# Storing a result


def test_a_result_is_stored_with_its_facts_values_and_seed(setup):
    executor = CannedExecutor(complete)
    orchestrator(setup, executor, target=2).run()
    for trial, task in zip(stored(setup), executor.tasks, strict=True):
        result = complete(task)
        assert trial.user_attrs[RUN_ATTR] == {**result.facts, "queued_seconds": 0.0}
        assert trial.intermediate_values == result.intermediate_values
        assert trial.value == result.value
        assert task.seed == (STUDY_SEED, trial.number)


def test_a_pruned_result_is_stored_pruned_and_a_diverged_one_counted(setup):
    def alternate(task):
        return pruned(task, diverged=task.number == 1)

    runner = orchestrator(setup, CannedExecutor(alternate), target=2)
    runner.run()
    trials = stored(setup)
    assert states(trials) == [TrialState.PRUNED] * 2
    assert [t.value for t in trials] == [0.125, 0.0]  # Optuna's: a pruned trial's last value
    assert trials[1].intermediate_values == {1: 0.125, 2: 0.0}
    assert trials[1].user_attrs[RUN_ATTR]["diverged"] is True
    assert (runner.counts.pruned, runner.counts.diverged, runner.counts.best_value) == (2, 1, None)


def test_each_task_gets_thresholds_from_every_trial_finished_before_it(setup):
    class Recording(PruningRule):
        def __init__(self) -> None:
            self.calls: list[tuple[int, list[int]]] = []

        def thresholds(self, *, trial_number, finished):
            self.calls.append((trial_number, sorted(f.number for f in finished)))
            return Marked(trial_number)

    rule = Recording()
    executor = CannedExecutor(complete)
    orchestrator(setup, executor, target=3, pruning=rule).run()
    assert rule.calls == [(0, []), (1, [0]), (2, [0, 1])]
    assert [t.thresholds.number for t in executor.tasks] == [0, 1, 2]  # the rule's, trained


def test_an_inline_run_stores_what_run_task_gives_for_each_task(setup):
    spec, _ = setup

    class RecordingInline(InlineExecutor):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            self.tasks = []

        def submit(self, task, *, before_start=None):
            recorded = before_start(task) if before_start is not None else task
            self.tasks.append(recorded)
            return super().submit(recorded)

    split = load_study_split(spec)
    executor = RecordingInline(spec, split)
    assert orchestrator(setup, executor, target=2).run() == 2
    for trial, task in zip(stored(setup), executor.tasks, strict=True):
        result = run_task(task, spec, split)
        assert trial.state == TrialState.COMPLETE and trial.value == result.value
        assert trial.intermediate_values == result.intermediate_values
        assert trial.user_attrs[RUN_ATTR]["curves"] == result.facts["curves"]
        assert (
            dict(task.config.training.hyperparameters)["learning_rate"]
            == trial.params["learning_rate"]
        )


# ---------------------------------------------------------------------------------------------
# Failures


def test_a_raising_future_fails_its_trial_with_the_reason_and_the_run_goes_on(setup):
    def second_raises(task):
        return ValueError("no such optimizer") if task.number == 1 else complete(task)

    runner = orchestrator(setup, CannedExecutor(second_raises), target=3)
    assert runner.run() == 3
    trials = stored(setup)
    assert states(trials) == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert fail_reasons(trials) == {1: "ValueError: no such optimizer"}
    assert runner.counts.failed == 1


def test_failures_in_a_row_stop_the_run_and_fail_the_trials_in_flight(setup):
    executor = CannedExecutor(lambda task: ValueError(f"trial {task.number} broke"), slots=2)
    runner = orchestrator(setup, executor, target=10)  # two in flight at a time
    with pytest.raises(
        RunError, match=r"^3 trials in a row failed; the last with ValueError: trial 2"
    ):
        runner.run()
    trials = stored(setup)
    assert MAX_CONSECUTIVE_ERRORS == 3
    assert states(trials) == [TrialState.FAIL] * 4
    assert fail_reasons(trials) == {
        0: "ValueError: trial 0 broke",
        1: "ValueError: trial 1 broke",
        2: "ValueError: trial 2 broke",
        3: "the run stopped",  # claimed when trial 2 was, never finished
    }
    assert executor.shutdowns == [True]


def test_failures_separated_by_a_success_do_not_stop_the_run(setup):
    def two_of_three_raise(task):
        return complete(task) if task.number % 3 == 2 else ValueError("broke")

    assert orchestrator(setup, CannedExecutor(two_of_three_raise), target=3).run() == 3
    assert states(stored(setup)).count(TrialState.FAIL) == 6


def test_a_lost_worker_queues_a_retry_with_the_same_parameters_and_seed(setup):
    def first_lost(task):
        if task.number == 0:
            return WorkerLost("worker process 1234 died (exit code -9) while training trial #0")
        return complete(task)

    executor = CannedExecutor(first_lost)
    assert orchestrator(setup, executor, target=2).run() == 2
    lost, retry, fresh = stored(setup)
    assert lost.state == TrialState.FAIL
    assert fail_reasons([lost]) == {0: "WorkerLost: " + first_lost(executor.tasks[0]).args[0]}
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["failed_trial"] == 0
    assert retry.params == lost.params and fresh.params != lost.params
    lost_task, retry_task, fresh_task = executor.tasks
    assert retry_task.number == 1 and retry_task.config == lost_task.config
    assert retry_task.seed == lost_task.seed == (STUDY_SEED, 0)  # the original's seed
    assert fresh_task.seed == (STUDY_SEED, 2)


def test_a_raising_future_queues_no_retry(setup):
    def first_raises(task):
        return ValueError("a bug") if task.number == 0 else complete(task)

    orchestrator(setup, CannedExecutor(first_raises), target=1).run()
    failed, other = stored(setup)
    assert "failed_trial" not in other.system_attrs and other.params != failed.params


# ---------------------------------------------------------------------------------------------
# Ctrl-C


@pytest.fixture
def interrupts():
    """The process's own Ctrl-C handler, as ``hpo.cli.main`` installs it."""
    INTERRUPTS.install()
    yield INTERRUPTS
    INTERRUPTS.uninstall()


def test_a_ctrl_c_fails_every_trial_in_flight_and_leaves_none_running(setup, interrupts):
    def ctrl_c_while_the_second_trains(task):
        if task.number == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return None  # still training

    executor = CannedExecutor(ctrl_c_while_the_second_trains, slots=2, prefetch=1)
    with pytest.raises(KeyboardInterrupt):
        orchestrator(setup, executor, target=5).run()
    trials = stored(setup)
    assert states(trials) == [TrialState.FAIL] * 3
    assert fail_reasons(trials) == dict.fromkeys(range(3), "interrupted")
    assert executor.shutdowns == [True]


def test_a_trial_records_how_long_it_waited_in_the_executors_queue(setup):
    orchestrator(setup, QueueingExecutor(0.3), target=2).run()
    waits = [run_facts(t)["queued_seconds"] for t in stored(setup)]
    assert all(0.3 <= w < 5.0 for w in waits), waits


def test_a_resumed_run_trains_the_interrupted_trials_again_with_their_parameters(setup, interrupts):
    def ctrl_c_while_the_second_trains(task):
        if task.number == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return None  # still training

    executor = CannedExecutor(ctrl_c_while_the_second_trains, slots=2)
    with pytest.raises(KeyboardInterrupt):
        orchestrator(setup, executor, target=3).run()
    interrupted = stored(setup)
    assert fail_reasons(interrupted) == dict.fromkeys(range(2), "interrupted")
    interrupts.uninstall()
    interrupts.install()

    resumed = CannedExecutor(complete)
    orchestrator(setup, resumed, target=3).run()
    assert [(t.config, t.seed) for t in resumed.tasks[:2]] == [
        (t.config, t.seed) for t in executor.tasks
    ]
    trials = stored(setup)
    assert states(trials) == [TrialState.FAIL] * 2 + [TrialState.COMPLETE] * 3


def test_an_interrupted_result_stops_the_run_keeping_the_results_that_had_arrived(setup):
    def first_interrupted(task):
        if task.number == 0:
            return TrialResult(0, INTERRUPTED, None, {}, facts_of(task, {1: 0.0}), 0.01)
        return complete(task)

    executor = CannedExecutor(first_interrupted, slots=2)
    with pytest.raises(KeyboardInterrupt):
        orchestrator(setup, executor, target=5).run()
    trials = stored(setup)
    # Trial 1's result had arrived, waiting for its turn: it trained to the end and is kept.
    assert states(trials) == [TrialState.FAIL, TrialState.COMPLETE]
    assert fail_reasons(trials) == {0: "interrupted"}
    assert trials[1].value == complete(executor.tasks[1]).value
    assert run_facts(trials[1])["queued_seconds"] >= 0.0  # stored as _finish stores it
    assert executor.shutdowns == [True]


def test_a_keyboard_interrupt_in_a_future_stops_the_run_and_leaves_no_trial_running(setup):
    def first_interrupted(task):
        return KeyboardInterrupt() if task.number == 0 else complete(task)

    executor = CannedExecutor(first_interrupted, slots=2)
    with pytest.raises(KeyboardInterrupt):  # a Ctrl-C, not one more failed trial
        orchestrator(setup, executor, target=2).run()
    trials = stored(setup)
    assert TrialState.RUNNING not in states(trials)
    assert trials[0].state == TrialState.FAIL
    assert fail_reasons(trials)[0] == "interrupted"


def test_a_submit_that_raises_leaves_no_trial_running(setup):
    class InterruptedSubmit(CannedExecutor):
        def submit(self, task, *, before_start=None):
            if task.number == 1:
                raise KeyboardInterrupt  # Ctrl-C without hpo's handler, inside InlineExecutor
            return super().submit(task, before_start=before_start)

    executor = InterruptedSubmit(lambda task: None, slots=2)
    with pytest.raises(KeyboardInterrupt):
        orchestrator(setup, executor, target=3).run()
    assert TrialState.RUNNING not in states(stored(setup))


# ---------------------------------------------------------------------------------------------
# count_trials


DIVERGED = {RUN_ATTR: {"diverged": True}}


def test_count_trials_counts_every_state_the_diverged_and_the_best():
    trials = [
        create_trial(state=TrialState.COMPLETE, value=0.3),
        create_trial(state=TrialState.COMPLETE, value=0.7, user_attrs=DIVERGED),
        create_trial(state=TrialState.COMPLETE, value=0.5),
        create_trial(state=TrialState.PRUNED, user_attrs=DIVERGED),
        create_trial(state=TrialState.PRUNED, user_attrs={"diverged": True}),  # before RUN_ATTR
        create_trial(state=TrialState.PRUNED, user_attrs={RUN_ATTR: {"diverged": False}}),
        create_trial(state=TrialState.PRUNED),
        create_trial(state=TrialState.FAIL),
        create_trial(state=TrialState.FAIL),
        create_trial(state=TrialState.RUNNING),
        create_trial(state=TrialState.WAITING),
    ]
    counts = count_trials(trials)
    assert counts == Counts(
        complete=3, pruned=4, failed=2, running=1, waiting=1, diverged=2, best_value=0.7
    )
    assert counts.finished == 7


def test_count_trials_best_value_is_the_largest_even_below_zero():
    trials = [create_trial(state=TrialState.COMPLETE, value=v) for v in (-0.5, -0.2, -0.9)]
    assert count_trials(trials).best_value == -0.2


def test_count_trials_of_no_trials_is_all_zero_and_no_best():
    assert count_trials([]) == Counts()
    assert count_trials([create_trial(state=TrialState.FAIL)]).best_value is None


def test_a_retried_tell_reports_the_stored_steps_again_without_warnings(setup):
    # A storage lost in the middle of a tell: the retry reports the steps stored before again.
    orch = orchestrator(setup, CannedExecutor(complete), target=1)
    claimed = orch._claim_once()
    result = complete(
        TrialTask(
            number=0,
            config={},
            seed=(STUDY_SEED, 0),
            thresholds=NoPruning().thresholds(trial_number=0, finished=()),
        )
    )
    claimed.trial.report(result.intermediate_values[1], 1)  # the first attempt got this far
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        orch._tell(claimed.trial, result)
    (trial,) = stored(setup)
    assert trial.state == TrialState.COMPLETE and trial.intermediate_values == {1: 0.25, 2: 0.5}


def test_counts_read_again_and_again_look_only_past_the_settled_trials_and_stay_exact(setup):
    from optuna.trial import create_trial

    def made(number, state, value=None):
        t = create_trial(
            state=state,
            value=value,
            intermediate_values={1: 0.5} if state != TrialState.WAITING else {},
            user_attrs={RUN_ATTR: {"diverged": False}},
        )
        t.number = number
        return t

    C, P, R, W, F = (
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.RUNNING,
        TrialState.WAITING,
        TrialState.FAIL,
    )
    reads = [
        [made(0, C, 0.5), made(1, P), made(2, R), made(3, R)],
        [made(0, C, 0.5), made(1, P), made(2, C, 0.75), made(3, R), made(4, W)],
        [made(0, C, 0.5), made(1, P), made(2, C, 0.75), made(3, F), made(4, C, 0.25), made(5, R)],
    ]
    runner = orchestrator(setup, CannedExecutor(complete), target=10)
    for trials in reads:
        assert runner._count(trials) == count_trials(trials)
    assert runner.settled == 5
    assert sorted(runner.finished) == [0, 1, 2, 4]
