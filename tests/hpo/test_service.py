"""The study service end to end, in-process: creation, resume, target, divergence, seeds."""

import dataclasses
import itertools
import math
import os
import signal
import types

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo.errors import UsageError
from hpo.records import load_hpo_study, run_facts
from hpo.service import (
    ExecutorStart,
    check_memory,
    queued_trials,
    run_study,
    study_counts,
)
from hpo.spec import load_spec
from hpo.trial import load_study_split
from tests.hpo.conftest import write_spec
from trainer.network import training_memory


def run(spec_path, url, **options):
    """The study in this process unless a test asks for worker processes (``workers=N``)."""
    options.setdefault("in_process", "workers" not in options)
    return run_study(load_spec(str(spec_path)), storage_url=url, **options)


def trials_of(url, name="tiny"):
    return optuna.load_study(study_name=name, storage=url).get_trials()


def test_study_lands_in_sqlite_with_log_distributions(tiny_spec, db_url):
    summary = run(tiny_spec, db_url)
    assert summary.counts.finished == 6
    trials = trials_of(db_url)
    assert len(trials) == 6
    lr = next(t for t in trials if "learning_rate" in t.distributions).distributions
    assert lr["learning_rate"] == FloatDistribution(1e-3, 1e-1, log=True)
    assert lr["dropout_ratio"] == FloatDistribution(0.0, 0.5, step=0.1)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete
    for t in complete:
        curves = run_facts(t)["curves"]
        assert len(curves["val_accuracy"]) == run_facts(t)["epochs_run"]
        assert t.value == max(curves["val_accuracy"])
        assert curves["val_accuracy"][run_facts(t)["best_epoch"] - 1] == t.value
        assert sorted(t.intermediate_values) == list(range(1, run_facts(t)["epochs_run"] + 1))
        assert run_facts(t)["train_seconds"] > 0 and run_facts(t)["seed"] == [0, t.number]


def test_spec_is_stored_with_the_study(tiny_spec, db_url):
    run(tiny_spec, db_url, trials=1)
    _, spec = load_hpo_study(storage_url=db_url, study_name="tiny")
    assert spec.to_dict() == load_spec(str(tiny_spec)).to_dict()


def test_resume_reaches_the_total(tiny_spec, db_url):
    run(tiny_spec, db_url, trials=3)
    summary = run(tiny_spec, db_url, trials=7)
    assert summary.counts.finished == 7
    assert summary.finished_here == 4
    assert run(tiny_spec, db_url, trials=7).finished_here == 0  # already there


def test_trials_zero_creates_the_study_only(tiny_spec, db_url):
    summary = run(tiny_spec, db_url, trials=0)
    assert summary.counts.finished == 0
    assert trials_of(db_url) == []


def test_a_different_spec_under_the_same_name_is_refused(tiny_spec, tmp_path, db_url):
    run(tiny_spec, db_url, trials=1)
    other = write_spec(tmp_path / "other.toml", epochs=4)  # same study name, other objective
    with pytest.raises(UsageError, match="different data, model, training or space"):
        run(other, db_url, trials=2)
    assert len(trials_of(db_url)) == 1


def test_search_settings_may_change_between_runs(tiny_spec, tmp_path, db_url):
    run(tiny_spec, db_url, trials=2)
    other = write_spec(tmp_path / "other.toml", sampler="random", seed=5)
    assert run(other, db_url, trials=3).counts.finished == 3


def test_diverging_configuration_is_recorded_and_the_study_continues(tmp_path, db_url):
    spec = write_spec(
        tmp_path / "tiny.toml",
        lr_low=1e-3,
        lr_high=1e4,
        optimizers='"sgd"',
        trials=12,
        sampler="random",
    )
    summary = run(spec, db_url)
    assert summary.counts.finished == 12
    diverged = [t for t in trials_of(db_url) if run_facts(t).get("diverged")]
    assert diverged, "a learning rate up to 1e4 with SGD should diverge"
    for t in diverged:
        assert t.state == TrialState.PRUNED
        assert t.intermediate_values[run_facts(t)["epochs_run"] + 1] == 0.0
    assert summary.counts.diverged == len(diverged)
    assert summary.counts.complete > 0


def test_same_seed_and_spec_give_the_same_trials(tiny_spec, tmp_path):
    a = f"sqlite:///{tmp_path / 'a.db'}"
    b = f"sqlite:///{tmp_path / 'b.db'}"
    run(tiny_spec, a)
    run(tiny_spec, b)

    def fingerprint(url):
        return [(t.params, t.state, t.value, run_facts(t)["curves"]) for t in trials_of(url)]

    assert fingerprint(a) == fingerprint(b)


def test_another_seed_gives_other_trials(tiny_spec, tmp_path):
    a = f"sqlite:///{tmp_path / 'a.db'}"
    b = f"sqlite:///{tmp_path / 'b.db'}"
    run(tiny_spec, a, trials=2)
    run(write_spec(tmp_path / "seeded.toml", seed=1), b, trials=2)
    assert [t.params for t in trials_of(a)] != [t.params for t in trials_of(b)]


def test_two_worker_processes_share_the_target(tiny_spec, db_url):
    summary = run(tiny_spec, db_url, trials=8, workers=2)
    counts = summary.counts
    assert counts.finished == 8 and counts.running == 0 and counts.failed == 0
    numbers = [t.number for t in trials_of(db_url)]
    assert numbers == list(range(8))


def test_grid_sampler_stops_at_the_grid_size(tmp_path, db_url):
    spec = tmp_path / "grid.toml"
    spec.write_text(
        '[study]\nname = "tiny"\n[data]\ntrain_size = 100\n[model]\nhidden = [8]\n'
        '[training]\nepochs = 1\n[search]\nsampler = "grid"\ntrials = 50\n'
        '[space]\noptimizer = { choices = ["sgd", "adam"] }\n'
        "dropout_ratio = { low = 0.0, high = 0.2, step = 0.1 }\n"
    )
    summary = run(spec, db_url)
    assert summary.counts.finished == 6
    combos = {(t.params["optimizer"], t.params["dropout_ratio"]) for t in trials_of(db_url)}
    assert len(combos) == 6


def test_count_trials_reports_best_value(tiny_spec, db_url):
    run(tiny_spec, db_url, trials=3)
    study, _ = load_hpo_study(storage_url=db_url, study_name="tiny")
    counts = study_counts(study)
    values = [t.value for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert counts.best_value == max(values)


def test_grid_values_never_pass_high(tmp_path):
    from hpo.service import grid_space

    spec = tmp_path / "grid.toml"
    spec.write_text(
        '[search]\nsampler = "grid"\n[space]\n'
        "dropout_ratio = { low = 0.5, high = 0.95, step = 0.3 }\n"
    )
    assert grid_space(load_spec(str(spec))) == {"dropout_ratio": [0.5, 0.8]}


# ---------------------------------------------------------------------------------------------
# Resuming continues the search; worker processes train what this process would


def test_resuming_three_times_gives_distinct_parameter_sets(tmp_path, db_url):
    spec = write_spec(tmp_path / "tiny.toml", sampler="random", trials=15)
    for n in (5, 10, 15):
        run(spec, db_url, trials=n)
    params = [tuple(sorted(t.params.items())) for t in trials_of(db_url)]
    assert len(params) == 15 and len(set(params)) == 15


def test_one_run_and_three_resumed_runs_give_the_same_trials(tmp_path):
    spec = write_spec(tmp_path / "tiny.toml", sampler="random", trials=9)
    once, thrice = (f"sqlite:///{tmp_path / name}" for name in ("once.db", "thrice.db"))
    run(spec, once)
    for n in (3, 6, 9):
        run(spec, thrice, trials=n)
    assert [t.params for t in trials_of(once)] == [t.params for t in trials_of(thrice)]


def test_a_worker_process_trains_what_this_process_trains(tmp_path):
    # Random search: the same parameters whatever the sampler saw (with TPE the worker's
    # one-ahead claim sees one finished trial fewer).
    spec = write_spec(tmp_path / "tiny.toml", sampler="random", trials=4)
    here, there = (f"sqlite:///{tmp_path / name}" for name in ("here.db", "there.db"))
    run(spec, here)
    run(spec, there, workers=1)

    def fingerprint(url):
        return [
            (t.params, t.state, t.value, t.intermediate_values, run_facts(t)["curves"])
            for t in trials_of(url)
        ]

    assert fingerprint(here) == fingerprint(there)


@pytest.mark.parametrize("pruner", ["hyperband", "sha", "median"])
def test_every_pruner_stores_every_epoch_as_intermediate_values(tmp_path, db_url, pruner):
    spec = write_spec(tmp_path / "tiny.toml", epochs=4, trials=8, sampler="random")
    spec_obj = load_spec(str(spec))
    raw = spec_obj.to_dict()
    raw["search"]["pruner"] = pruner
    from hpo.spec import spec_from_dict

    run_study(
        spec_from_dict(raw, source=str(spec), default_name="tiny"),
        storage_url=db_url,
        in_process=True,
    )
    for t in trials_of(db_url):
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        epochs = run_facts(t)["epochs_run"]
        assert sorted(t.intermediate_values)[:epochs] == list(range(1, epochs + 1))
        assert t.intermediate_values[epochs] == run_facts(t)["curves"]["val_accuracy"][-1]


def test_a_trial_whose_worker_dies_is_failed_and_retried_with_its_parameters(
    tiny_spec, db_url, monkeypatch
):
    """A worker process killed with its trial: the trial fails, a copy with the same parameters
    is queued and run, and the study still reaches its target exactly."""
    from hpo import executors, service

    class KillingExecutor(executors.LocalProcessExecutor):
        """Kills its worker once, while the first trial trains (the second is queued then)."""

        def submit(self, task, **options):
            future = super().submit(task, **options)
            if task.number == 1:
                os.kill(self.pids()[0], signal.SIGKILL)
            return future

    monkeypatch.setattr(
        service, "make_executor", lambda spec, split, **_: KillingExecutor(spec, split, workers=1)
    )
    summary = run(tiny_spec, db_url, trials=4, workers=1)
    trials = trials_of(db_url)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert summary.counts.finished == 4
    assert len(failed) == 1
    assert "WorkerLost" in failed[0].system_attrs["hpo:fail_reason"]
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retried) == 1 and retried[0].params == failed[0].params
    assert retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert run_facts(retried[0])["seed"] == [0, failed[0].number]  # the original's seed
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def wide_spec(tmp_path, hidden: str, batch_size: int = 100):
    path = tmp_path / "wide.toml"
    path.write_text(
        f"[model]\nhidden = {hidden}\n[training]\nepochs = 1\nbatch_size = {batch_size}\n"
        "[space]\nlearning_rate = { low = 0.001, high = 0.1, log = true }\n"
    )
    return load_spec(str(path))


def test_a_net_too_big_for_the_memory_available_is_refused_before_the_study_exists(
    tmp_path, db_url
):
    spec = wide_spec(tmp_path, "[60000, 60000, 60000]")  # ~10.8 G parameters: ~400 GiB
    with pytest.raises(UsageError) as e:
        run_study(spec, storage_url=db_url, trials=1)
    message = str(e.value)
    assert message.startswith(f"{spec.source}: model.hidden: [60000, 60000, 60000] with ")
    assert "more than the" in message and "available (allowed: " in message
    assert not (tmp_path / "studies.db").exists()


def test_the_memory_estimate_scales_with_the_trials_in_flight(tmp_path):
    spec = wide_spec(tmp_path, "[2000, 2000]")
    split = load_study_split(spec)
    per_trial = training_memory(
        split.n_features,
        spec.model.hidden_sizes,
        split.n_classes,
        batch_rows=len(split.y_train) + len(split.y_val),
    )
    check_memory(spec, split, workers=2, available=2 * per_trial)  # fits
    with pytest.raises(UsageError, match=r"a trial x 3 trials at once = .* fewer --workers"):
        check_memory(spec, split, workers=3, available=2 * per_trial)


def test_the_memory_estimate_bounds_what_training_allocates(tmp_path):
    # tracemalloc sees NumPy's allocations: the estimate must not be below the real peak.
    import tracemalloc

    import numpy as np

    from hpo.trial import configuration

    spec = wide_spec(tmp_path, "[1500, 1500]", batch_size=500)
    split = load_study_split(spec)
    params = {
        "learning_rate": 1e-3,
        "optimizer": "adam",
        "weight_decay": 0.0,
        "dropout_ratio": 0.5,
        "init_scale": 1.0,
        "init": "he",
        "activation": "relu",
        "batchnorm": True,
    }
    tracemalloc.start()
    try:
        configuration(spec, params).train(split, np.random.SeedSequence(0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rows = len(split.y_train) + len(split.y_val)
    estimate = training_memory(
        split.n_features, spec.model.hidden_sizes, split.n_classes, batch_rows=rows
    )
    assert peak <= estimate <= 3 * peak


def test_every_sampler_and_pruner_name_has_its_builder():
    """The names the spec and --help accept (hpo.allowed) are the registries' keys, in order."""
    from hpo import allowed
    from hpo.service import PRUNING_BUILDERS, SAMPLER_BUILDERS, make_pruning, make_sampler

    assert tuple(SAMPLER_BUILDERS) == allowed.SAMPLERS
    assert tuple(PRUNING_BUILDERS) == allowed.PRUNERS
    spec = load_spec("default")
    for name in allowed.SAMPLERS:
        if name != "grid":  # the default space has unstepped ranges: tested with a grid spec
            search = dataclasses.replace(spec.search, sampler=name)
            sampler = make_sampler(dataclasses.replace(spec, search=search), number=1)
            assert isinstance(sampler, optuna.samplers.BaseSampler)
    for name in allowed.PRUNERS:
        search = dataclasses.replace(spec.search, pruner=name)
        rule = make_pruning(dataclasses.replace(spec, search=search), study_name="s")
        assert hasattr(rule, "thresholds")


def test_tpe_with_a_kept_search_space_draws_what_a_fresh_tpe_draws():
    """samplers_for keeps TPE's search space calculator for the run (the ask at 10,000 trials
    no longer recomputes it over every trial): the draws stay those of a TPE made afresh per
    trial, with a conditional parameter (momentum), pruned trials and one always in flight."""
    import numpy as np

    from hpo.service import samplers_for
    from hpo.trial import suggest

    spec = load_spec("default")
    spec = dataclasses.replace(spec, search=dataclasses.replace(spec.search, startup_trials=4))

    def optunas_own(n: int) -> optuna.samplers.TPESampler:  # as make_sampler seeds trial n's
        seed = int(np.random.SeedSequence([spec.search.seed, n]).generate_state(1)[0])
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, constant_liar=True)

    drawn = {}
    for how, sampler_of in (("fresh", optunas_own), ("kept", samplers_for(spec))):
        study = optuna.create_study(direction="maximize")
        in_flight = []
        for n in range(24):
            study.sampler = sampler_of(n)
            trial = study.ask()
            suggest(trial, spec)
            in_flight.append(trial)
            if len(in_flight) == 2:  # told one ask late: a RUNNING trial at every ask
                done = in_flight.pop(0)
                value = -abs(math.log10(done.params["learning_rate"]) + 2)
                if done.number % 5 == 4:
                    study.tell(done, state=TrialState.PRUNED)
                else:
                    study.tell(done, value)
        drawn[how] = [t.params for t in study.trials]
    assert drawn["kept"] == drawn["fresh"]
    assert len({p["optimizer"] for p in drawn["kept"]}) > 1  # momentum came and went
    sampler_of = samplers_for(spec)  # and the run's samplers do share one calculator
    assert sampler_of(1).search_space is sampler_of(2).search_space


def test_an_executor_start_stops_the_executor_when_its_block_raises(tiny_spec, monkeypatch):
    from hpo import executors, service
    from hpo.trial import load_training_split

    made = []

    class Recorded(executors.InlineExecutor):
        def __init__(self, *args, **options):
            super().__init__(*args, **options)
            self.stopped = None
            made.append(self)

        def shutdown(self, *, cancel=False):
            self.stopped = "cancel" if cancel else "drain"

    monkeypatch.setattr(service, "make_executor", lambda spec, split, **_: Recorded(spec, split))
    spec = load_spec(str(tiny_spec))
    split = load_training_split(spec)
    with ExecutorStart(spec, split, workers=1) as start:
        assert made == []  # local workers: checked now, started on start()
        executor = start.start()
    assert executor.stopped is None  # a block that ends well hands the executor on
    with pytest.raises(RuntimeError), ExecutorStart(spec, split, workers=1) as start:
        start.start()
        raise RuntimeError("the storage went away")
    assert made[-1].stopped == "cancel"
    with pytest.raises(RuntimeError), ExecutorStart(spec, split, workers=1):
        raise RuntimeError("before any start")  # nothing started: nothing to stop
    assert len(made) == 2


def fake_split(rows, features=784, classes=10):
    return types.SimpleNamespace(y_train=range(rows), n_features=features, n_classes=classes)


def test_a_study_of_long_trials_queues_none_and_one_of_short_trials_queues_some():
    executor = types.SimpleNamespace(prefetch=3)
    assert queued_trials(load_spec("default"), fake_split(1078, 64), executor) == 3  # ~0.1 s
    fashion = load_spec("fashion-mnist")  # its cheapest full trial: a 256-wide layer, 27 epochs
    assert queued_trials(fashion, fake_split(54_000), executor) == 0
    assert queued_trials(fashion, fake_split(500), executor) == 3  # the same net on 500 rows


def test_long_trials_are_running_only_while_they_train(tiny_spec, db_url, monkeypatch):
    """With one worker and nothing queued, each trial starts after the one before it ended;
    with the short trials' queue, a trial waiting in it is already RUNNING."""
    from hpo import service

    def overlapping(url):
        trials = sorted(trials_of(url), key=lambda t: t.number)
        return [
            b.number
            for a, b in itertools.pairwise(trials)
            if b.datetime_start < a.datetime_complete
        ]

    run(tiny_spec, db_url, workers=1)
    assert overlapping(db_url)  # queued while the one before trained
    monkeypatch.setattr(service, "LONG_TRIAL_FLOPS", 0)  # every trial counts as long
    other = db_url.replace(".db", "-long.db")
    run(tiny_spec, other, workers=1)
    assert overlapping(other) == []
