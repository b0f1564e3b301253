"""The study service end to end, in-process: creation, resume, target, divergence, seeds."""

import sqlite3

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import UsageError
from hpo.service import count_trials, load_hpo_study, run_study
from hpo.spec import load_spec
from hpo.storage import buffered_suggestions, finish_trial, new_running_trial, open_storage
from tests.hpo.conftest import write_spec

# The tests of bulk writes ask() for trials on storages opened with heartbeats, as hpo does.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")


def run(spec_path, url, **options):
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
        curves = t.user_attrs["curves"]
        assert len(curves["val_accuracy"]) == t.user_attrs["epochs_run"]
        assert t.value == max(curves["val_accuracy"])
        assert curves["val_accuracy"][t.user_attrs["best_epoch"] - 1] == t.value
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["epochs_run"] + 1))
        assert t.user_attrs["train_seconds"] > 0 and t.user_attrs["seed"] == [0, t.number]


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
    diverged = [t for t in trials_of(db_url) if t.user_attrs.get("diverged")]
    assert diverged, "a learning rate up to 1e4 with SGD should diverge"
    for t in diverged:
        assert t.state == TrialState.PRUNED
        assert t.intermediate_values[t.user_attrs["epochs_run"] + 1] == 0.0
    assert summary.counts.diverged == len(diverged)
    assert summary.counts.complete > 0


def test_same_seed_and_spec_give_the_same_trials(tiny_spec, tmp_path):
    a = f"sqlite:///{tmp_path / 'a.db'}"
    b = f"sqlite:///{tmp_path / 'b.db'}"
    run(tiny_spec, a)
    run(tiny_spec, b)

    def fingerprint(url):
        return [(t.params, t.state, t.value, t.user_attrs["curves"]) for t in trials_of(url)]

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
    counts = count_trials(study)
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
# The bulk writes of a trial produce what Optuna's own API stores


def storages_to_compare(tmp_path, kind):
    """Two fresh storages of one kind: the public API writes into one, hpo's bulk writes into
    the other."""
    if kind == "journal":
        return [open_storage(f"journal:///{tmp_path / f'{name}.log'}") for name in "ab"]
    return [open_storage(f"sqlite:///{tmp_path / f'{name}.db'}") for name in "ab"]


def comparable(trial: FrozenTrial) -> dict:
    """What a FrozenTrial holds, ids and clock times left out (params in their stored order)."""
    return {
        "number": trial.number,
        "state": trial.state,
        "values": trial.values,
        "params": list(trial.params.items()),
        "distributions": trial.distributions,
        "user_attrs": trial.user_attrs,
        "system_attrs": trial.system_attrs,
        "intermediate_values": {k: repr(v) for k, v in trial.intermediate_values.items()},  # NaN
        "finished": trial.datetime_complete is not None,
    }


ROWS = {
    "trials": "number, state, datetime_complete IS NULL",
    "trial_params": "param_name, param_value, distribution_json",
    "trial_values": "objective, value, value_type",
    "trial_intermediate_values": "step, intermediate_value, intermediate_value_type",
    "trial_user_attributes": "key, value_json",
    "trial_system_attributes": "key, value_json",
}


def stored_rows(storage) -> dict[str, list]:
    """Every trial row of a SQLite storage, ids and clock times left out, in insertion order."""
    path = storage.engine.url.database
    with sqlite3.connect(path) as c:
        return {
            table: c.execute(
                f"SELECT t.number, {', '.join(f'x.{c.strip()}' for c in columns.split(','))} "
                f"FROM {table} x JOIN trials t USING (trial_id) ORDER BY x.rowid"
            ).fetchall()
            if table != "trials"
            else c.execute(f"SELECT {columns} FROM trials ORDER BY trial_id").fetchall()
            for table, columns in ROWS.items()
        }


def suggest_a_few(trial):
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    if trial.suggest_categorical("optimizer", ["sgd", "momentum"]) == "momentum":
        trial.suggest_float("momentum", 0.5, 0.99)
    trial.suggest_float("dropout", 0.0, 0.5, step=0.1)
    trial.suggest_int("layers", 1, 3)


def tpe_study(storage, name="s"):
    # multivariate TPE with constant_liar, as hpo's: relative samples and a system attribute.
    sampler = optuna.samplers.TPESampler(seed=3, n_startup_trials=3, constant_liar=True)
    return optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, direction="maximize"
    )


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_new_running_trial_is_the_trial_the_storage_holds(tmp_path, kind):
    storage = storages_to_compare(tmp_path, kind)[0]
    study = tpe_study(storage)
    study.tell(study.ask(), 0.5)
    trial = new_running_trial(study)
    assert study._storage is trial.storage and not hasattr(study._storage, "_created")
    assert trial.number == 1
    assert trial._cached_frozen_trial == study._storage.get_trial(trial._trial_id)
    assert study.get_trials(deepcopy=False)[1] == trial._cached_frozen_trial
    assert study._storage.get_trial_id_from_study_id_trial_number(study._study_id, 1) == (
        trial._trial_id
    )
    suggest_a_few(trial)
    study.tell(trial, 0.25)
    assert study.get_trials()[1].params == trial.params


def test_new_running_trial_stores_the_row_ask_stores(tmp_path):
    plain, created = (tpe_study(s) for s in storages_to_compare(tmp_path, "sqlite"))
    for _ in range(3):
        plain.ask()
        new_running_trial(created)
    assert stored_rows(created._storage._backend) == stored_rows(plain._storage._backend)


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/Los_Angeles"])
def test_new_running_trial_stores_the_start_time_as_ask_does(tmp_path, monkeypatch, zone):
    import datetime
    import time

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        study = tpe_study(open_storage(f"sqlite:///{tmp_path / 'a.db'}"))
        before = datetime.datetime.now()
        trial = new_running_trial(study)
        stored = study._storage.get_trial(trial._trial_id).datetime_start
    finally:
        monkeypatch.undo()
        time.tzset()
    assert abs((stored - before).total_seconds()) < 60


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_buffered_suggestions_store_what_suggest_stores(tmp_path, kind):
    plain, buffered = (tpe_study(s) for s in storages_to_compare(tmp_path, kind))
    for i in range(8):
        a, b = plain.ask(), buffered.ask()
        suggest_a_few(a)
        with buffered_suggestions(buffered, b):
            suggest_a_few(b)
        assert b.params == a.params
        plain.tell(a, float(i % 3))
        buffered.tell(b, float(i % 3))
    assert [comparable(t) for t in buffered.get_trials()] == [
        comparable(t) for t in plain.get_trials()
    ]
    if kind == "sqlite":
        assert stored_rows(buffered._storage._backend) == stored_rows(plain._storage._backend)
    relative = [k for t in buffered.get_trials() for k in t.system_attrs]
    if kind == "sqlite":  # the shared relative sample went through the buffer too
        assert any(k.startswith("tpe:relative_params") for k in relative)


def test_buffered_suggestions_are_stored_before_the_block_returns(tmp_path):
    study = tpe_study(open_storage(f"sqlite:///{tmp_path / 'a.db'}"))
    trial = study.ask()
    with buffered_suggestions(study, trial):
        suggest_a_few(trial)
        assert study.get_trials()[0].params == {}  # inside: held back, read from one snapshot
    reader = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'a.db'}")
    assert reader.get_trials()[0].params == trial.params


def test_an_error_inside_buffered_suggestions_writes_nothing(tmp_path):
    study = tpe_study(open_storage(f"sqlite:///{tmp_path / 'a.db'}"))
    storage = study._storage
    trial = study.ask()
    with pytest.raises(KeyboardInterrupt), buffered_suggestions(study, trial):
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        raise KeyboardInterrupt
    assert study._storage is storage and trial.storage is storage
    assert study.get_trials()[0].params == {}


def finished_by_both(tmp_path, kind, state, value, reports, attrs):
    """The same trial finished by set_user_attr + report + tell, and by finish_trial."""
    plain, bulk = (tpe_study(s) for s in storages_to_compare(tmp_path, kind))
    a, b = plain.ask(), bulk.ask()
    for t in (a, b):
        t.suggest_float("lr", 1e-4, 1e-1, log=True)
    for key, v in attrs.items():
        a.set_user_attr(key, v)
    for step, v in reports.items():
        a.report(v, step)
    plain.tell(a, value, state=state)
    finish_trial(bulk, b, state=state, value=value, user_attrs=attrs, intermediate_values=reports)
    return plain.get_trials()[0], bulk.get_trials()[0], bulk, plain


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
@pytest.mark.parametrize(
    ("state", "value", "reports"),
    [
        (TrialState.COMPLETE, 0.75, {1: 0.5, 2: 0.75, 3: 0.7}),
        (TrialState.PRUNED, None, {1: 0.5, 2: 0.25}),  # the value: the last intermediate one
        (TrialState.PRUNED, None, {1: 0.5, 2: 0.0, 4: float("nan")}),  # NaN: no value
        (TrialState.PRUNED, None, {}),
        (TrialState.FAIL, None, {1: 0.5}),
    ],
)
def test_finish_trial_stores_what_tell_and_set_user_attr_store(
    tmp_path, kind, state, value, reports
):
    attrs = {"best_epoch": 2, "curves": {"val": [0.5, 0.75]}, "seed": [0, 0], "none": None}
    a, b, bulk, plain = finished_by_both(tmp_path, kind, state, value, reports, attrs)
    assert comparable(b) == comparable(a)
    if kind == "sqlite":
        assert stored_rows(bulk._storage._backend) == stored_rows(plain._storage._backend)
    if state == TrialState.COMPLETE:
        assert bulk.best_trial.value == value


def test_finish_trial_replaces_the_attributes_a_retried_trial_inherited(tmp_path):
    study = tpe_study(open_storage(f"sqlite:///{tmp_path / 'a.db'}"))
    study.enqueue_trial({"lr": 0.01}, user_attrs={"best_epoch": 9, "kept": 1})
    trial = study.ask()
    attrs = {"best_epoch": 1}
    finish_trial(
        study, trial, state=TrialState.COMPLETE, value=0.5, user_attrs=attrs, intermediate_values={}
    )
    assert study.get_trials()[0].user_attrs == {"best_epoch": 1, "kept": 1}


def test_finish_trial_refuses_a_finished_trial(tmp_path):
    study = tpe_study(open_storage(f"sqlite:///{tmp_path / 'a.db'}"))
    trial = study.ask()
    study.tell(trial, state=TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        finish_trial(
            study,
            trial,
            state=TrialState.COMPLETE,
            value=0.5,
            user_attrs={"x": 1},
            intermediate_values={1: 0.5},
        )
    (stored,) = study.get_trials()
    assert stored.state == TrialState.FAIL and stored.user_attrs == {} and stored.values is None


@pytest.mark.parametrize(
    ("state", "value"), [(TrialState.COMPLETE, None), (TrialState.COMPLETE, float("nan"))]
)
def test_finish_trial_refuses_a_complete_trial_without_a_number(tmp_path, state, value):
    study = tpe_study(open_storage(f"sqlite:///{tmp_path / 'a.db'}"))
    trial = study.ask()
    with pytest.raises(ValueError, match="COMPLETE trial needs a value"):
        finish_trial(study, trial, state=state, value=value, user_attrs={}, intermediate_values={})
    assert study.get_trials()[0].state == TrialState.RUNNING


# ---------------------------------------------------------------------------------------------
# Known trials: the sampler's read spared while no other process changed the study


def test_known_trials_equal_a_read_of_the_study_whenever_they_are_used(
    tiny_spec, db_url, monkeypatch
):
    from hpo import storage as storage_module

    served = []
    reader = []
    trials_of_known = storage_module.KnownTrials.trials

    def compared_with_a_read(self):
        trials = trials_of_known(self)
        if not reader:
            reader.append(optuna.storages.RDBStorage(db_url, skip_table_creation=True))
        study_id = reader[0].get_study_id_from_name("tiny")
        assert trials == reader[0].get_all_trials(study_id, deepcopy=False)
        served.append(len(trials))
        return trials

    monkeypatch.setattr(storage_module.KnownTrials, "trials", compared_with_a_read)
    run(tiny_spec, db_url, trials=12)
    assert len(served) >= 10  # every trial after the first read; none in the first
    assert served == sorted(served)


def test_known_trials_change_no_trial(tiny_spec, tmp_path, monkeypatch):
    from hpo import storage as storage_module

    a = f"sqlite:///{tmp_path / 'a.db'}"
    b = f"sqlite:///{tmp_path / 'b.db'}"
    run(tiny_spec, a, trials=10)
    monkeypatch.setattr(storage_module.KnownTrials, "check", lambda self, census: None)
    run(tiny_spec, b, trials=10)  # every sampling reads the study

    def fingerprint(url):
        return [(t.params, t.state, t.values, t.system_attrs) for t in trials_of(url)]

    assert fingerprint(a) == fingerprint(b)


def test_known_trials_go_stale_when_another_process_adds_a_trial(tiny_spec, db_url):
    run(tiny_spec, db_url, trials=3)
    other = optuna.load_study(study_name="tiny", storage=db_url)
    other.enqueue_trial({"learning_rate": 0.01})  # WAITING: the next claim takes it
    summary = run(tiny_spec, db_url, trials=6)
    assert summary.counts.finished == 6
    assert trials_of(db_url)[3].params["learning_rate"] == 0.01


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/Los_Angeles"])
def test_finish_trial_stores_the_completion_time_as_tell_does(tmp_path, monkeypatch, zone):
    import time

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        a, b, _, _ = finished_by_both(tmp_path, "sqlite", TrialState.COMPLETE, 0.5, {1: 0.5}, {})
    finally:
        monkeypatch.undo()
        time.tzset()
    assert abs((b.datetime_complete - a.datetime_complete).total_seconds()) < 60
    assert abs((b.datetime_complete - b.datetime_start).total_seconds()) < 60


@pytest.mark.parametrize("pruner", ["hyperband", "sha"])
def test_storage_pruners_report_every_epoch_to_the_storage(tmp_path, db_url, pruner):
    spec = write_spec(tmp_path / "tiny.toml", epochs=4, trials=8)
    text = spec.read_text().replace("[search]\n", f'[search]\npruner = "{pruner}"\n')
    spec.write_text(text)
    summary = run(spec, db_url)
    assert summary.counts.finished == 8 and summary.counts.failed == 0
    trials = trials_of(db_url)
    for t in trials:
        epochs = t.user_attrs["epochs_run"]
        assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
        assert t.params and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    if pruner == "sha":  # the pruner's own records, written while the trials ran
        assert any(k.startswith("completed_rung") for t in trials for k in t.system_attrs)
