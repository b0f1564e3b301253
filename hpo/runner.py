"""The trial runner: one orchestrator per command claims, suggests, hands trials out, and tells.

A trial's life, all of it here and all of it through Optuna's public API:

1. **Claim**, under the storage lock: sweep the stale trials of lost runs (they are queued
   again), count, and while finished plus running trials are below the target, ``study.ask()``
   (a queued retry first) with a sampler seeded from the study seed and the trial's number, so
   that a resumed study continues its search instead of repeating it; TPE draws in the
   orchestrator's in-memory view of the study (``hpo.sampler_view``), fed by the same reads.
   The parameters are suggested and the trial's first heartbeat recorded before the lock is
   let go.
2. **Train**: the trial's configuration, seed and pruning thresholds (``hpo.pruning``, from the
   study's finished trials when the trial leaves the executor's queue, its predecessor's result
   included) go to the executor as a ``TrialTask``; the training touches no storage.
3. **Finish**: every epoch's validation accuracy becomes an intermediate value, the facts of the
   run one user attribute (``RUN_ATTR``), and ``study.tell`` gives the state and value.

The orchestrator is its process's only writer. With worker processes it keeps trials queued in
the executor beyond the busy workers (``prefetch``), so its writes overlap the training instead
of delaying it; a study of long trials queues none (``hpo.service.queued_trials``), so that a
trial is RUNNING only while it trains. With one worker the order of
claims, hand-outs and tells is fixed, so the same spec and seed give the same trials.

A trial whose training raised is failed; three in a row end the run, and so does one whose
executor can train no more (``ExecutorLost``: its cluster went away). A trial whose worker
process died is failed and queued again with the same parameters by the next claim's sweep (at
most ``MAX_STALE_TRIAL_RETRIES`` times). On a Ctrl-C (``hpo.interrupts``) or any other exit the
executor is stopped and every trial still in flight is failed, never left RUNNING, and the next
run's sweep queues it again the same way (``hpo.heartbeat.LOST_REASONS``).
"""

import concurrent.futures
import contextlib
import math
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import optuna
from optuna.trial import TrialState

from hpo.errors import RunError
from hpo.executors import ExecutorLost, TrialExecutor, WorkerLost
from hpo.finite_space import configurations, unseen_configuration
from hpo.heartbeat import (
    FAIL_REASON_ATTR,
    Heartbeats,
    beat_next_retry,
    record_heartbeat,
    sweep_stale_trials,
)
from hpo.interrupts import INTERRUPTS
from hpo.locks import storage_lock
from hpo.pruning import FinishedTrial, NoPruning, PruningRule
from hpo.records import RUN_ATTR, Counts, count_trials, write_tally
from hpo.sampler_view import SamplerView
from hpo.spec import StudySpec
from hpo.storage import heartbeat_settings, retrying
from hpo.trial import (
    COMPLETE,
    INTERRUPTED,
    TrialResult,
    TrialTask,
    configuration,
    suggest,
    trial_seed,
)

MAX_CONSECUTIVE_ERRORS = 3
WAIT_POLL_SECONDS = (0.05, 1.0)
"""While the rest of the target runs elsewhere, the orchestrator looks again after the first
delay, doubling it up to the second: quick to notice the end, light on the storage."""
TALLY_EVERY = 100
"""Trials an orchestrator finishes between two writes of the study's tally: ``hpo studies``
then reads at most about this many trials one by one (besides those in flight)."""
RESULT_POLL_SECONDS = 0.1
"""How often the orchestrator looks up from waiting for results (a Ctrl-C is noticed then)."""


@dataclass
class Claimed:
    """A trial this orchestrator asked for: RUNNING in the storage, beating, not yet told."""

    trial: optuna.Trial
    trial_id: int
    seed_number: int  # the number its seed derives from: its own, or the original's if a retry


class Orchestrator:
    """Runs one study's trials on ``executor`` until ``target`` finished trials or ``deadline``.

    Args:
        study: the study, loaded with the storage ``storage`` (opened by ``hpo.storage``).
        spec: the study's spec.
        storage_url: where the study lives (for the lock).
        target: finished trials (complete + pruned) the study should reach, counting every
            orchestrator's.
        deadline: ``time.monotonic()`` after which no trial is claimed; None: none.
        executor: where the trials train.
        make_sampler: the study's sampler for the trial numbered ``n`` (``make_sampler(n)``).
        view: where the sampler draws instead, kept in memory (``hpo.sampler_view``; TPE's).
        pruning: the study's pruning rule.
        prefetch: trials kept queued in the executor beyond its busy workers (default: the
            executor's ``prefetch``; 0 claims a trial only when a worker is free for it).
        progress: called with the counts and the target whenever they change.
    """

    def __init__(
        self,
        study: optuna.Study,
        spec: StudySpec,
        *,
        storage: optuna.storages.BaseStorage,
        storage_url: str,
        target: int,
        deadline: float | None,
        executor: TrialExecutor,
        make_sampler: Callable[[int], optuna.samplers.BaseSampler],
        pruning: PruningRule,
        view: SamplerView | None = None,
        prefetch: int | None = None,
        progress: Callable[[Counts, int], None] | None = None,
    ) -> None:
        self.study, self.spec, self.storage = study, spec, storage
        self.storage_url, self.target, self.deadline = storage_url, target, deadline
        self.executor, self.make_sampler, self.pruning = executor, make_sampler, pruning
        self.view = view
        self.progress = progress
        self.prefetch = executor.prefetch if prefetch is None else prefetch
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.sweep_every = float(heartbeat_settings()[0])
        self.last_sweep = -math.inf
        self.finished: dict[int, FinishedTrial] = {}
        self.finished_lock = threading.Lock()
        # When each trial in flight was handed to the executor, and when it left its queue.
        self.submitted: dict[int, float] = {}
        self.left_queue: dict[int, float] = {}
        self.counts = Counts()
        # The study's trials before its first unfinished one (by number), counted and noted
        # once: a finished trial never changes (``_count``).
        self.settled = 0
        self.settled_counts = Counts()
        self.in_flight: dict[concurrent.futures.Future, Claimed] = {}  # training or queued
        # The trial in no future: being handed out, or its result being stored. run()'s handler
        # fails it with the ones in flight should either raise.
        self.held: Claimed | None = None
        self.ran = 0
        self.errors = 0
        self.claim_after = 0.0  # monotonic time before which a claim is known to be refused
        self.poll = WAIT_POLL_SECONDS[0]
        self.beats: Heartbeats | None = None
        self.shown_epochs: dict[int, int] = {}  # the executor's epochs the last report showed
        # A finite space's configurations, for the random sampler to draw each once.
        self.listed = configurations(spec) if spec.search.sampler == "random" else None

    # -----------------------------------------------------------------------------------------
    # The loop

    def run(self) -> int:
        """Run trials until the target or the deadline; return how many finished here."""
        with Heartbeats(self.storage, interval=self.sweep_every) as self.beats:
            try:
                self.counts = retrying(self._read_counts, what="reading the study")
                self._report()
                self._loop()
            except BaseException as e:
                self.executor.shutdown(cancel=True)
                interrupted = isinstance(e, KeyboardInterrupt)
                if interrupted:
                    self._store_arrived()
                reason = "interrupted" if interrupted else "the run stopped"
                left = [*self.in_flight.values()]
                if self.held is not None:
                    left.append(self.held)
                for claimed in left:
                    self._fail(claimed, reason)
                self.in_flight.clear()
                self.held = None
                self._write_tally(stopping=True)
                raise
            self.executor.shutdown()
        self._write_tally()
        return self.ran

    def _store_arrived(self) -> None:
        """On a Ctrl-C, store the results that had arrived and waited for their turn (with many
        workers, up to one per worker): their trials trained to the end. One the storage refuses
        is failed with the rest."""
        arrived = [
            (claimed, future.result())
            for future, claimed in self.in_flight.items()
            if future.done()
            and not future.cancelled()
            and future.exception() is None
            and future.result().state != INTERRUPTED
        ]
        for claimed, result in sorted(arrived, key=lambda pair: pair[1].number):
            try:
                self._tell(claimed.trial, self._with_queued_seconds(result))
            except Exception:
                continue
            self.beats.discard(claimed.trial_id)
            self.in_flight = {f: c for f, c in self.in_flight.items() if c is not claimed}
            self.ran += 1

    def _write_tally(self, *, stopping: bool = False) -> None:
        """Store the study's tally for ``hpo studies`` (``hpo.records.TALLY_ATTR``): a storage
        that fails it costs the listing its speed, not the run its trials. A run that is
        stopping (interrupted, or its storage lost) tries once and keeps its own error."""
        if stopping:
            with contextlib.suppress(Exception):
                write_tally(self.study)
            return
        with contextlib.suppress(RunError, optuna.exceptions.OptunaError):
            retrying(lambda: write_tally(self.study), what="storing the study's tally")

    def _loop(self) -> None:
        while True:
            INTERRUPTS.check()
            self._fill()
            if not self.in_flight:
                if self.counts.finished >= self.target or self._past_deadline():
                    return
                # The rest of the target runs elsewhere: stay, since a lost trial elsewhere is
                # swept after the grace period and then retried here.
                time.sleep(max(0.0, self.claim_after - time.monotonic()))
                continue
            done, _ = concurrent.futures.wait(
                self.in_flight,
                timeout=RESULT_POLL_SECONDS,
                return_when=concurrent.futures.FIRST_COMPLETED,
            )
            if done:
                # One result a turn, the lowest number first, each followed by the claims it
                # frees: the order of events does not depend on timing.
                future = min(done, key=lambda f: self.in_flight[f].trial.number)
                self.held = self.in_flight.pop(future)
                self._finish(self.held, future)
                self.held = None
            elif self.progress is not None and self.executor.epochs() != self.shown_epochs:
                self._report()  # an epoch ended in a trial in flight: the bar moves

    def _fill(self) -> None:
        """Claim and hand out trials until every worker has one and ``prefetch`` more wait in
        the executor's queue, so that a worker starts its next trial the moment it is free."""
        while len(self.in_flight) < self.executor.slots + self.prefetch:
            if not self._may_claim():
                return
            self.executor.check()
            claimed = self._claim()
            if claimed is None:
                return
            self.held = claimed
            self._submit(claimed)
            self.held = None

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _may_claim(self) -> bool:
        return not self._past_deadline() and time.monotonic() >= self.claim_after

    # -----------------------------------------------------------------------------------------
    # Claim, hand out, finish

    def _read_counts(self) -> Counts:
        return self._count(self.study.get_trials(deepcopy=False))

    def _count(self, trials: list[optuna.trial.FrozenTrial]) -> Counts:
        """``count_trials(trials)``, and every finished trial's values noted for the pruning
        thresholds, looking only at the trials from the first unfinished one on (``trials`` in
        number order, as Optuna returns them): at 10,000 trials a few dozen instead of all,
        whose count cost 7 ms a claim."""
        start = end = self.settled
        while end < len(trials) and trials[end].state.is_finished():
            end += 1
        self.settled_counts = self.settled_counts + count_trials(trials[start:end])
        self.settled = end
        self._note_finished(trials[start:])
        if self.view is not None:
            self.view.observe(trials[start:])
        return self.settled_counts + count_trials(trials[end:])

    def _note_finished(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        for t in trials:
            if t.number not in self.finished and t.state in (
                TrialState.COMPLETE,
                TrialState.PRUNED,
            ):
                noted = FinishedTrial(
                    t.number, t.state == TrialState.COMPLETE, dict(t.intermediate_values)
                )
                with self.finished_lock:  # _with_thresholds reads it from another thread
                    self.finished[t.number] = noted

    def _claim(self) -> Claimed | None:
        before = self.counts
        claimed = retrying(self._claim_once, what="claiming a trial")
        if claimed is None:
            if self.counts != before:  # other orchestrators' trials finished meanwhile
                self._report()
            # Finished and running trials cover the target: look again later, or when one of
            # this orchestrator's trials ends.
            self.claim_after = time.monotonic() + self.poll
            self.poll = min(2 * self.poll, WAIT_POLL_SECONDS[1])
            return None
        self.poll = WAIT_POLL_SECONDS[0]
        self.beats.add(claimed.trial_id)
        return claimed

    def _claim_once(self) -> Claimed | None:
        with storage_lock(self.storage_url):
            if time.monotonic() - self.last_sweep >= self.sweep_every:
                sweep_stale_trials(self.study, self.storage, self.study_id)
                self.last_sweep = time.monotonic()
            # Through Optuna's cache of finished trials: only the unfinished ones are read.
            trials = self.study.get_trials(deepcopy=False)
            counts = self._count(trials)
            if counts.finished + counts.running >= self.target:
                self.counts = counts
                return None
            # The next new trial's number; a queued retry keeps its own (and its parameters).
            next_number = counts.finished + counts.failed + counts.running + counts.waiting
            if self.view is None:
                self.study.sampler = self.make_sampler(next_number)
            else:  # a queued retry's own parameters come first (one claimed before any had none)
                self.study.sampler = self.view.propose(next_number, self._suggest)
            if counts.waiting:
                beat_next_retry(self.study, self.storage, self.study_id)
            elif self.listed is not None:
                params = unseen_configuration(self.spec, self.listed, trials, number=next_number)
                if params is not None:
                    self.study.enqueue_trial(params)  # what the ask below claims
            with warnings.catch_warnings():
                # hpo runs its own ask/tell loop and records the heartbeats itself.
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
                trial = self.study.ask()
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(
                self.study_id, trial.number
            )
            record_heartbeat(self.storage, trial_id)  # before any parameter (hpo.heartbeat)
            suggest(trial, self.spec)
        seed_number = trial.number
        if counts.waiting:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(
                    self.storage.get_trial(trial_id)
                )
            seed_number = history[0] if history else trial.number
        self.counts = replace(
            counts, running=counts.running + 1, waiting=max(0, counts.waiting - 1)
        )
        return Claimed(trial, trial_id, seed_number)

    def _suggest(self, trial: optuna.Trial) -> None:
        suggest(trial, self.spec)

    def _submit(self, claimed: Claimed) -> None:
        trial = claimed.trial
        task = TrialTask(
            number=trial.number,
            config=configuration(self.spec, trial.params),
            seed=tuple(trial_seed(self.spec.search.seed, claimed.seed_number).entropy),
            thresholds=NoPruning().thresholds(trial_number=trial.number, finished=()),
        )
        self.submitted[trial.number] = time.monotonic()
        future = self.executor.submit(task, before_start=self._with_thresholds)
        future.add_done_callback(self._remember)
        self.in_flight[future] = claimed

    def _with_thresholds(self, task: TrialTask) -> TrialTask:
        """``task`` with its pruning thresholds, from every result known when it starts (called
        by the executor, perhaps from its own thread, as the trial leaves its queue)."""
        with self.finished_lock:
            finished = list(self.finished.values())
            self.left_queue[task.number] = time.monotonic()
        return replace(
            task, thresholds=self.pruning.thresholds(trial_number=task.number, finished=finished)
        )

    def _remember(self, future: concurrent.futures.Future) -> None:
        """A finished trial's values count for the thresholds of the trials that start next
        (a done callback: it runs as the result arrives, before the next trial leaves the
        executor's queue)."""
        if not future.cancelled() and future.exception() is None:
            result = future.result()
            if result.state != INTERRUPTED:
                with self.finished_lock:
                    self.finished[result.number] = FinishedTrial(
                        result.number, result.state == COMPLETE, result.intermediate_values
                    )

    def _finish(self, claimed: Claimed, future: concurrent.futures.Future) -> None:
        # The trial keeps beating until it is told: storing a long trial's epochs takes seconds.
        self.claim_after = 0.0  # a slot is free: the next claim may succeed
        error = future.exception()
        if (
            isinstance(error, KeyboardInterrupt)
            or (error is None and future.result().state == INTERRUPTED)
            or (isinstance(error, WorkerLost) and INTERRUPTS.requested())  # a group's SIGTERM
        ):
            self._fail(claimed, "interrupted")
            raise KeyboardInterrupt
        if isinstance(error, ExecutorLost):  # nothing more can train: run() fails the rest
            self._fail(claimed, f"the run stopped: {type(error).__name__}: {error}")
            raise error
        if error is not None:
            self._fail(claimed, f"{type(error).__name__}: {error}")
            if isinstance(error, WorkerLost):
                self.last_sweep = -math.inf  # the next claim's sweep queues it again (under
                # the lock, so that no other orchestrator's sweep queues it twice)
            self.errors += 1
            if self.errors >= MAX_CONSECUTIVE_ERRORS:
                raise RunError(
                    f"{self.errors} trials in a row failed; the last with "
                    f"{type(error).__name__}: {error}"
                )
            return
        result = self._with_queued_seconds(future.result())
        try:
            retrying(
                lambda: self._tell(claimed.trial, result), what=f"storing trial #{result.number}"
            )
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another orchestrator's sweep failed it meanwhile (and queued it again): its result
            # is not stored, and the retry runs it anew.
            self.beats.discard(claimed.trial_id)
            print(
                f"hpo: trial #{result.number} was failed as stale by another worker before its "
                "result was stored; its retry runs it again",
                file=sys.stderr,
            )
            return
        self.beats.discard(claimed.trial_id)
        self.errors = 0
        self.ran += 1
        if self.ran % TALLY_EVERY == 0:
            self._write_tally()
        c = self.counts
        complete = result.state == COMPLETE
        best = c.best_value
        if complete and (best is None or result.value > best):
            best = result.value
        self.counts = replace(
            c,
            complete=c.complete + complete,
            pruned=c.pruned + (not complete),
            diverged=c.diverged + bool(result.facts.get("diverged")),
            running=max(0, c.running - 1),
            best_value=best,
        )
        self._report()

    def _with_queued_seconds(self, result: TrialResult) -> TrialResult:
        """``result`` with the time its trial was RUNNING in the storage but waiting for a
        worker among its facts, beside the training's own seconds (``hpo compare`` leaves it
        out of the compute)."""
        submitted = self.submitted.pop(result.number, None)
        with self.finished_lock:
            left_queue = self.left_queue.pop(result.number, None)
        if submitted is None or left_queue is None:
            return result
        queued = round(max(0.0, left_queue - submitted), 4)
        return replace(result, facts={**result.facts, "queued_seconds": queued})

    def _tell(self, trial: optuna.Trial, result: TrialResult) -> None:
        with warnings.catch_warnings():
            # A retried tell (the storage was away) reports the steps stored before again.
            warnings.filterwarnings("ignore", message="The reported value is ignored")
            for step, value in sorted(result.intermediate_values.items()):
                trial.report(value, step)
        trial.set_user_attr(RUN_ATTR, result.facts)
        if result.state == COMPLETE:
            self.study.tell(trial, result.value, skip_if_finished=True)
        else:
            self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)

    def _fail(self, claimed: Claimed, reason: str) -> None:
        """Tell ``claimed`` FAIL with its reason; a storage that is gone leaves it to the sweep."""
        if self.beats is not None:
            self.beats.discard(claimed.trial_id)
        self.submitted.pop(claimed.trial.number, None)
        with self.finished_lock:
            self.left_queue.pop(claimed.trial.number, None)
        with contextlib.suppress(Exception):
            self.storage.set_trial_system_attr(claimed.trial_id, FAIL_REASON_ATTR, reason[:500])
            self.study.tell(claimed.trial, state=TrialState.FAIL, skip_if_finished=True)
            c = self.counts
            self.counts = replace(c, failed=c.failed + 1, running=max(0, c.running - 1))
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.shown_epochs = self.executor.epochs()
            epochs = self.spec.training.epochs
            shown = dict(self.shown_epochs)
            # A trial whose result arrived, waiting for its turn to be stored (a result's epochs
            # take a while to store), has trained all it will: shown whole, so that the bar
            # does not step back until it is counted.
            for future, claimed in self.in_flight.items():
                if future.done():
                    shown[claimed.trial.number] = epochs
            flight = tuple((n, e, epochs) for n, e in sorted(shown.items()))
            queued = self.executor.queued()
            self.progress(replace(self.counts, epochs=flight, queued=queued), self.target)
