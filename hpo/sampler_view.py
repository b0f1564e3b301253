"""What TPE reads at each ask, kept in memory by the orchestrator: the sampler's view of a study.

Optuna's TPE reads every trial of the study at each ask, and with the constant liar (hpo's
setting: the trials in flight count as drawn, so that sixteen workers do not draw one point
sixteen times) it reads them past Optuna's cache of finished trials. Its cost grows with the
study: 21 ms an ask at 1,000 trials, 164 ms at 10,000 (a third of a default trial here,
``tests/benchmarks/bench_sampler.py``). So an orchestrator that samples with TPE keeps a
``SamplerView``: an Optuna study in memory that mirrors the stored one, finished trials with
their values and epochs and trials in flight with their parameters, fed from the reads the
orchestrator makes anyway (``observe``). TPE draws there; the stored study's new trial takes
the drawn parameters from ``ProposedParams``, a sampler that hands them out.

Past ``WINDOW`` finished trials the view keeps the ``WINDOW`` most recent and the best
``BEST_KEPT`` complete and pruned ones (TPE's good group is at most 25 trials, so it is the same
as over the whole study; the rest, where TPE already weighs old trials down to 1/n, is the
recent ones). Up to ``WINDOW`` finished trials the view holds what the study holds, in the
same order, so TPE draws what it would draw on the stored study (a test holds the two equal).
"""

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

WINDOW = 1_000
"""The finished trials the view keeps beyond the best ones (rebuilt when 25% more came)."""
BEST_KEPT = 25
"""The best complete and the best pruned trials always kept: TPE's good group at most."""

Build = Callable[[int, optuna.search_space.IntersectionSearchSpace], optuna.samplers.BaseSampler]
"""A sampler for the trial numbered ``n``, with the view's own search space calculator."""


class ProposedParams(optuna.samplers.BaseSampler):
    """A sampler that gives a new trial the parameters drawn for it elsewhere (the view), as
    relative parameters: every ``suggest_*`` of the trial returns its drawn value."""

    def __init__(self, params: dict[str, Any], distributions: dict[str, BaseDistribution]):
        self.params = dict(params)
        self.distributions = dict(distributions)

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return dict(self.distributions)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {name: self.params[name] for name in search_space}

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        raise RuntimeError(
            f"trial #{trial.number} asked for {param_name!r}, which the sampler's view did not "
            f"draw (drawn: {sorted(self.params)})"
        )


class SamplerView:
    """An in-memory study mirroring a stored one, for a sampler to draw from.

    ``observe(trials)`` with the stored study's trials (in number order, each seen at least
    once in its last state); ``propose(number, suggest)`` draws trial ``number``'s parameters
    with ``build(number, space)`` and returns the sampler that gives them to the stored trial.
    """

    def __init__(self, build: Build, *, direction: optuna.study.StudyDirection, window=WINDOW):
        self.build, self.direction, self.window = build, direction, window
        # The stored trials in the view, by number: the trial as mirrored (no attributes) and
        # its id in the view's storage.
        self.mirrored: dict[int, FrozenTrial] = {}
        self.ids: dict[int, int] = {}
        self.finished = 0  # in the view
        self.rebuild_at = window + window // 4  # finished trials in the view
        self.done: set[int] = set()  # every finished trial observed, kept in the view or not
        self._new_view()

    def _new_view(self) -> None:
        self.storage = optuna.storages.InMemoryStorage()
        self.study = optuna.create_study(storage=self.storage, direction=self.direction)
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)
        # A calculator reads one study, from where it stopped: a new view needs a new one.
        self.space = optuna.search_space.IntersectionSearchSpace(include_pruned=True)
        self.ids = {}

    def observe(self, trials: Sequence[FrozenTrial]) -> None:
        # The mirror first, the view's storage after: a read past the window (a resumed
        # study's first) is rebuilt from the trials kept, never copied in whole.
        changes: list[tuple[int, FrozenTrial | None]] = []  # number, as mirrored before
        for t in trials:
            if t.number in self.done:
                continue
            seen = self.mirrored.get(t.number)
            if seen is not None and seen.state == t.state and len(seen.params) == len(t.params):
                continue
            if t.state.is_finished() and t.state != TrialState.FAIL:
                self.finished += 1
                self.done.add(t.number)
            elif t.state != TrialState.RUNNING or not t.params:
                if seen is not None:  # failed (or queued again): no longer a point in flight
                    del self.mirrored[t.number]
                    changes.append((t.number, seen))
                continue
            self.mirrored[t.number] = optuna.trial.create_trial(
                state=t.state,
                values=t.values,  # a pruned trial's too: its last epoch's
                params=dict(t.params),
                distributions=dict(t.distributions),
                intermediate_values=dict(t.intermediate_values),
            )
            changes.append((t.number, seen))
        if self.finished > self.rebuild_at:
            self._rebuild()
            return
        for number, seen in changes:
            self._store(number, seen)

    def _store(self, number: int, seen: FrozenTrial | None) -> None:
        """Write trial ``number``'s change to the view's storage (``seen``: as it was)."""
        lean = self.mirrored.get(number)
        if seen is None:
            self.ids[number] = self.storage.create_new_trial(self.study_id, lean)
            return
        trial_id = self.ids[number]
        if lean is None:
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            del self.ids[number]
            return
        # In flight until now: its parameters and state are updated in place, so that the view
        # keeps the stored study's order.
        for name, value in lean.params.items():
            if name not in seen.params:
                d = lean.distributions[name]
                self.storage.set_trial_param(trial_id, name, d.to_internal_repr(value), d)
        if lean.state.is_finished():
            for step, value in lean.intermediate_values.items():
                self.storage.set_trial_intermediate_value(trial_id, step, value)
            self.storage.set_trial_state_values(trial_id, lean.state, lean.values)

    def _rebuild(self) -> None:
        """Keep the trials in flight, the ``window`` most recent finished ones and the best
        ``BEST_KEPT`` complete and pruned ones, in number order."""
        done = sorted(n for n, t in self.mirrored.items() if t.state.is_finished())
        kept = set(done[-self.window :])
        sign = 1 if self.direction == optuna.study.StudyDirection.MAXIMIZE else -1
        complete = [n for n in done if self.mirrored[n].state == TrialState.COMPLETE]
        kept.update(sorted(complete, key=lambda n: -sign * self.mirrored[n].value)[:BEST_KEPT])
        pruned = [n for n in done if self.mirrored[n].state == TrialState.PRUNED]
        kept.update(sorted(pruned, key=lambda n: _pruned_rank(self.mirrored[n], sign))[:BEST_KEPT])
        self.mirrored = {
            n: t for n, t in self.mirrored.items() if n in kept or not t.state.is_finished()
        }
        self.finished = len(kept)
        self.rebuild_at = self.finished + self.window // 4
        self._new_view()
        for n in sorted(self.mirrored):
            self.ids[n] = self.storage.create_new_trial(self.study_id, self.mirrored[n])

    def propose(self, number: int, suggest: Callable[[optuna.Trial], None]) -> ProposedParams:
        """Draw trial ``number``'s parameters in the view (``suggest`` asks for them) and
        return the sampler that gives them to the stored trial. The view's trial is failed at
        once: the stored one stands for it once claimed (``observe``)."""
        self.study.sampler = self.build(number, self.space)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trial = self.study.ask()
            try:
                suggest(trial)
            finally:
                self.study.tell(trial, state=TrialState.FAIL)
        return ProposedParams(trial.params, trial.distributions)


def _pruned_rank(t: FrozenTrial, sign: int) -> tuple:
    """TPE's order of pruned trials: the furthest epoch first, then the best value there."""
    step = t.last_step
    if step is None:
        return (1, 0.0)
    return (-step, -sign * t.intermediate_values[step])
