"""The sampler's in-memory view of a study: TPE draws there what it would draw on the study."""

import dataclasses
import math

import optuna
import pytest
from optuna.trial import TrialState

from hpo.sampler_view import BEST_KEPT, ProposedParams, SamplerView
from hpo.service import make_sampler, samplers_for
from hpo.spec import load_spec
from hpo.trial import suggest

MAXIMIZE = optuna.study.StudyDirection.MAXIMIZE


@pytest.fixture
def spec():
    spec = load_spec("default")
    return dataclasses.replace(spec, search=dataclasses.replace(spec.search, startup_trials=4))


def view_of(spec, **options) -> SamplerView:
    return SamplerView(
        lambda n, space: make_sampler(spec, number=n, search_space=space),
        direction=MAXIMIZE,
        **options,
    )


def value_of(params) -> float:
    return -abs(math.log10(params["learning_rate"]) + 2)


def run(spec, n: int, *, view: SamplerView | None, in_flight: int = 2) -> optuna.Study:
    """``n`` trials asked as the orchestrator asks (each told ``in_flight - 1`` asks late, every
    fifth pruned after two epochs), drawn on the study itself or through ``view``."""
    study = optuna.create_study(direction="maximize")
    sampler_of = samplers_for(spec)
    flying = []
    for number in range(n):
        if view is None:
            study.sampler = sampler_of(number)
        else:
            view.observe(study.get_trials(deepcopy=False))
            study.sampler = view.propose(number, lambda t: suggest(t, spec))
        trial = study.ask()
        suggest(trial, spec)
        flying.append(trial)
        if len(flying) == in_flight:
            done = flying.pop(0)
            for epoch in (1, 2):
                done.report(value_of(done.params) * epoch / 2, epoch)
            if done.number % 5 == 4:
                study.tell(done, state=TrialState.PRUNED)
            else:
                study.tell(done, value_of(done.params))
    return study


@pytest.mark.parametrize("in_flight", [1, 3])
def test_tpe_draws_through_the_view_what_it_draws_on_the_study(spec, in_flight):
    on_study = run(spec, 30, view=None, in_flight=in_flight)
    through_view = run(spec, 30, view=view_of(spec), in_flight=in_flight)
    assert [t.params for t in through_view.trials] == [t.params for t in on_study.trials]
    assert len({t.params["optimizer"] for t in on_study.trials[4:]}) > 1  # TPE's draws vary


def test_past_the_window_the_view_keeps_the_recent_the_best_and_the_trials_in_flight(spec):
    view = view_of(spec, window=40)
    study = run(spec, 120, view=view, in_flight=3)
    view.observe(study.get_trials(deepcopy=False))
    in_view, trials_in_view = view.study, len(view.study.trials)
    view.observe(study.get_trials(deepcopy=False))  # read again: nothing changes
    assert view.study is in_view and len(view.study.trials) == trials_in_view
    stored = {t.number: t for t in study.trials}
    kept = set(view.mirrored)
    finished = sorted(n for n in kept if stored[n].state.is_finished())
    assert 40 <= len(finished) <= 40 + 40 // 4 + 2 * BEST_KEPT
    recent = sorted(n for n, t in stored.items() if t.state.is_finished())[-40:]
    assert set(recent) <= kept
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = sorted(complete, key=lambda t: -t.value)[:BEST_KEPT]
    assert {t.number for t in best} <= kept
    running = {t.number for t in study.trials if t.state == TrialState.RUNNING}
    assert running and running <= kept
    # The view's own study holds exactly those, in number order, with their values.
    in_view = view.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert [t.value for t in in_view] == [
        stored[n].value for n in sorted(kept) if stored[n].state == TrialState.COMPLETE
    ]


def test_a_trial_in_flight_that_fails_leaves_the_view(spec):
    study = optuna.create_study(direction="maximize")
    view = view_of(spec)
    study.sampler = view.propose(0, lambda t: suggest(t, spec))
    trial = study.ask()
    suggest(trial, spec)
    view.observe(study.get_trials(deepcopy=False))
    assert view.study.get_trials(states=(TrialState.RUNNING,))[0].params == trial.params
    study.tell(trial, state=TrialState.FAIL)
    view.observe(study.get_trials(deepcopy=False))
    assert view.study.get_trials(states=(TrialState.RUNNING,)) == []
    assert view.mirrored == {}


def test_a_stored_trial_takes_the_proposed_parameters_and_nothing_else():
    study = optuna.create_study(
        sampler=ProposedParams({"x": 0.25}, {"x": optuna.distributions.FloatDistribution(0, 1)})
    )
    trial = study.ask()
    assert trial.suggest_float("x", 0, 1) == 0.25
    with pytest.raises(RuntimeError, match=r"'y', which the sampler's view did not draw"):
        trial.suggest_float("y", 0, 1)


def test_a_queued_trial_keeps_its_parameters_and_the_view_draws_the_rest(spec):
    # A retry keeps its parameters; one queued without any (its claim died before suggesting)
    # gets them from the view.
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"learning_rate": 0.01})
    study.enqueue_trial({})
    view = view_of(spec)
    drawn = []
    for number in range(2):
        study.sampler = view.propose(number, lambda t: suggest(t, spec))
        trial = study.ask()
        suggest(trial, spec)
        drawn.append(trial.params)
    assert drawn[0]["learning_rate"] == 0.01
    assert {p.name for p in spec.space if p.kind != "fixed"} & set(drawn[1]) >= {
        "learning_rate",
        "weight_decay",
    }
