"""What ``hpo run`` writes reads back the same through every public reader, on every storage.

One contract suite, parametrized over SQLite, the journal file and PostgreSQL: after a small
study (complete and pruned trials) run by ``hpo.cli.main``, the trials and the study's
attributes are read back through ``optuna.load_study``, ``optuna.copy_study``, the ``optuna``
command line (each with a storage Optuna opens itself) and optuna-dashboard's JSON API (the app
``hpo dashboard`` serves, on the storage as it opens it). The SQLite database file alone, copied
when the command returns, holds every trial.

PostgreSQL comes from ``$HPO_TEST_POSTGRES_URL`` as in ``test_faults.py``: unset or unreachable,
its cases skip with the reason, except under ``CI=true`` where they fail. Each run there has its
own study name and deletes its study afterwards.
"""

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
import wsgiref.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo.cli import main
from hpo.dashboard import make_dashboard_server
from hpo.records import RUN_ATTR, run_facts
from hpo.spec import load_spec
from hpo.storage import close_storages, open_storage
from hpo.trial import trial_seed
from hpo.urls import mask_password
from tests.hpo.conftest import write_spec

IN_CI = os.environ.get("CI") == "true"
TRIALS = 8
EPOCHS = 4
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STORAGES = ("sqlite", "journal", "postgresql")
JOURNAL_FILE = "studies.log"


@dataclass
class Ran:
    """A study that ``hpo run`` wrote, and how plain Optuna reaches it."""

    kind: str
    url: str  # hpo's URL
    study_name: str
    spec_path: Path
    storage: optuna.storages.BaseStorage  # the reader's, opened by Optuna itself
    cli_storage: list[str]  # the optuna command line's storage flags

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.study_name, storage=self.storage)

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.load().get_trials()


def postgres_url() -> str:
    """The test server's URL, or a skip (a failure under CI) that says why there is none."""
    url = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not url:
        if IN_CI:
            pytest.fail("CI must set HPO_TEST_POSTGRES_URL (.ci/run does)")
        pytest.skip("HPO_TEST_POSTGRES_URL is not set: no PostgreSQL server to test against")
    engine = sqlalchemy.create_engine(psycopg_url(url), connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.OperationalError as e:
        if IN_CI:
            raise
        pytest.skip(f"PostgreSQL at {mask_password(url)} is unreachable: {e.orig}")
    finally:
        engine.dispose()
    return url


def psycopg_url(url: str) -> str:
    """The URL with SQLAlchemy's psycopg 3 driver (a bare ``postgresql://`` means psycopg2)."""
    parsed = sqlalchemy.engine.make_url(url).set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def reader(kind: str, url: str, directory: Path) -> tuple[optuna.storages.BaseStorage, list[str]]:
    """Optuna's own storage for hpo's ``url`` and the optuna CLI's flags for it."""
    if kind == "journal":
        path = str(directory / JOURNAL_FILE)
        backend = optuna.storages.journal.JournalFileBackend(path)
        return optuna.storages.JournalStorage(backend), [
            "--storage",
            path,
            "--storage-class",
            "JournalFileBackend",
        ]
    if kind == "postgresql":
        url = psycopg_url(url)
    return optuna.storages.RDBStorage(url), ["--storage", url]


def run_hpo(spec: Path, url: str, study_name: str) -> None:
    argv = ["run", str(spec), "--storage", url, "--study", study_name, "--trials", str(TRIALS)]
    assert main([*argv, "--no-report", "--quiet"]) == 0


@pytest.fixture(scope="module", params=STORAGES)
def ran(request, tmp_path_factory) -> Iterator[Ran]:
    """One study per storage, run by ``hpo run`` with its trials in a worker process."""
    kind = request.param
    directory = tmp_path_factory.mktemp(kind)
    if kind == "sqlite":
        url = f"sqlite:///{directory / 'studies.db'}"
    elif kind == "journal":
        url = f"journal:///{directory / JOURNAL_FILE}"
    else:
        url = postgres_url()
    # Low learning rates learn nothing in 4 epochs: the median rule prunes them after epoch 1.
    spec = write_spec(directory / "tiny.toml", epochs=EPOCHS, trials=TRIALS, lr_low=1e-4)
    study_name = f"contract-{uuid.uuid4().hex[:12]}"
    storage = None
    try:
        run_hpo(spec, url, study_name)
        storage, cli_storage = reader(kind, url, directory)  # after hpo created the journal
        yield Ran(kind, url, study_name, spec, storage, cli_storage)
    finally:
        if kind == "postgresql":
            with contextlib.suppress(KeyError):  # KeyError: the run never created it
                optuna.delete_study(study_name=study_name, storage=psycopg_url(url))
        if isinstance(storage, optuna.storages.RDBStorage):
            storage.engine.dispose()


def facts(trial: optuna.trial.FrozenTrial) -> dict:
    """What hpo writes of a trial, in a form that compares by equality."""
    return {
        "number": trial.number,
        "state": trial.state,
        "params": trial.params,
        "values": trial.values,
        "intermediate_values": trial.intermediate_values,
        "user_attrs": trial.user_attrs,
    }


# ---------------------------------------------------------------------------------------------
# optuna.load_study


def test_every_trial_is_finished_and_some_are_pruned(ran):
    states = [t.state for t in ran.trials()]
    assert len(states) == TRIALS
    assert set(states) == set(FINISHED), states  # both kinds, nothing RUNNING or FAIL


def test_trial_numbers_count_from_zero(ran):
    assert [t.number for t in ran.trials()] == list(range(TRIALS))


def test_intermediate_values_are_every_epochs_validation_accuracy(ran):
    for t in ran.trials():
        epochs_run = run_facts(t)["epochs_run"]
        curve = run_facts(t)["curves"]["val_accuracy"]
        expected = dict(enumerate(curve, start=1))
        if run_facts(t)["diverged"]:
            expected[epochs_run + 1] = 0.0  # the epoch it diverged in
        assert t.intermediate_values == expected, t.number
        assert len(curve) == epochs_run


def test_a_complete_trial_ran_every_epoch_and_its_value_is_the_best_epochs(ran):
    complete = [t for t in ran.trials() if t.state == TrialState.COMPLETE]
    assert complete
    for t in complete:
        values = t.intermediate_values
        assert sorted(values) == list(range(1, EPOCHS + 1))
        assert run_facts(t)["epochs_run"] == EPOCHS
        assert t.value == max(values.values())
        best = run_facts(t)["best_epoch"]
        assert values[best] == t.value
        assert all(v < t.value for step, v in values.items() if step < best)  # the first best


def test_a_pruned_trial_stopped_early_with_its_last_value(ran):
    pruned = [t for t in ran.trials() if t.state == TrialState.PRUNED]
    assert pruned
    for t in pruned:
        assert run_facts(t)["epochs_run"] <= EPOCHS  # pruned at its last epoch at the latest
        last = max(t.intermediate_values)
        assert t.value == t.intermediate_values[last]  # Optuna's value for a pruned trial


def test_one_user_attr_holds_the_curves_and_the_facts_of_the_run(ran):
    for t in ran.trials():
        assert set(t.user_attrs) == {RUN_ATTR}  # one write per trial, not one per fact
        attrs = t.user_attrs[RUN_ATTR]
        assert set(attrs["curves"]) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}
        assert all(len(c) == attrs["epochs_run"] for c in attrs["curves"].values())
        curve = attrs["curves"]["val_accuracy"]
        assert 1 <= attrs["best_epoch"] <= attrs["epochs_run"]
        assert curve[attrs["best_epoch"] - 1] == max(curve)
        assert attrs["seed"] == list(trial_seed(0, t.number).entropy)


def test_params_lie_in_the_specs_space(ran):
    space = {p.name: p for p in load_spec(str(ran.spec_path)).space}
    for t in ran.trials():
        assert set(t.params) == set(space)
        for name, value in t.params.items():
            p = space[name]
            if p.kind == "choice":
                assert value in p.choices
            else:
                assert p.low <= value <= p.high


def test_study_user_attrs_hold_the_spec_and_the_target(ran):
    attrs = ran.load().user_attrs
    assert attrs["hpo:spec"] == load_spec(str(ran.spec_path)).to_dict()
    assert attrs["hpo:target"] == TRIALS


# ---------------------------------------------------------------------------------------------
# optuna.copy_study


def test_copy_study_holds_equal_trials_and_study_attrs(ran, tmp_path):
    copy_url = f"sqlite:///{tmp_path / 'copy.db'}"
    optuna.copy_study(from_study_name=ran.study_name, from_storage=ran.storage, to_storage=copy_url)
    copy = optuna.load_study(study_name=ran.study_name, storage=copy_url)
    original = ran.load()
    assert [facts(t) for t in copy.get_trials()] == [facts(t) for t in original.get_trials()]
    assert copy.user_attrs == original.user_attrs


# ---------------------------------------------------------------------------------------------
# The optuna command line


def optuna_cli(*argv: str) -> subprocess.CompletedProcess:
    # Optuna 5 has no ``python -m optuna``: its console script is ``optuna.cli:main``.
    code = "import sys; from optuna.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120
    )


def test_optuna_cli_lists_the_same_trials(ran):
    done = optuna_cli("trials", "--study-name", ran.study_name, *ran.cli_storage, "-f", "json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    expected = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "user_attrs": t.user_attrs,
        }
        for t in ran.trials()
    ]
    assert [{k: row[k] for k in expected[0]} for row in listed] == expected


def test_optuna_cli_lists_the_study(ran):
    done = optuna_cli("study-names", *ran.cli_storage, "-f", "json")
    assert done.returncode == 0, done.stderr
    assert ran.study_name in [row["name"] for row in json.loads(done.stdout)]


# ---------------------------------------------------------------------------------------------
# optuna-dashboard's API


def get_json(app, path: str):
    """GET ``path`` from the WSGI ``app`` in this process; its JSON body."""
    environ: dict = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(REQUEST_METHOD="GET", PATH_INFO=path, QUERY_STRING="")
    status = []

    def start_response(line, headers, exc_info=None):
        status.append(line)

    body = b"".join(app(environ, start_response))
    assert status[0].startswith("200"), (status, body[:500])
    return json.loads(body)


@pytest.fixture
def dashboard(ran, tmp_path, monkeypatch):
    """The WSGI app ``hpo dashboard`` serves, on the storage opened as it opens it."""
    monkeypatch.chdir(tmp_path)  # a server's artifacts go to ./hpo-artifacts
    server = make_dashboard_server(open_storage(ran.url, write=False), ran.url, port=0)
    try:
        yield server.get_app()
    finally:
        server.server_close()
        close_storages()


def dashboard_study(app, name: str) -> dict:
    listed = get_json(app, "/api/studies")["study_summaries"]
    (summary,) = [s for s in listed if s["study_name"] == name]
    return summary


def test_dashboard_lists_the_study_with_its_attrs(ran, dashboard):
    summary = dashboard_study(dashboard, ran.study_name)
    assert summary["directions"] == ["maximize"]
    attrs = {a["key"]: a["value"] for a in summary["user_attrs"]}
    assert set(attrs) == set(ran.load().user_attrs)  # hpo:spec, hpo:target, ...
    assert attrs["hpo:target"] == str(TRIALS)


def test_dashboard_shows_the_same_trials(ran, dashboard):
    study_id = dashboard_study(dashboard, ran.study_name)["study_id"]
    shown = get_json(dashboard, f"/api/studies/{study_id}")["trials"]
    expected = [
        {
            "number": t.number,
            "state": t.state.name.capitalize(),
            "values": t.values,
            "intermediate_values": [
                {"step": step, "value": value}
                for step, value in sorted(t.intermediate_values.items())
            ],
            "params": {name: str(value) for name, value in t.params.items()},
            "user_attrs": set(t.user_attrs),
        }
        for t in ran.trials()
    ]
    got = [
        {
            "number": t["number"],
            "state": t["state"],
            "values": t.get("values"),
            "intermediate_values": t["intermediate_values"],
            "params": {p["name"]: p["param_external_value"] for p in t["params"]},
            "user_attrs": {a["key"] for a in t["user_attrs"]},
        }
        for t in shown
    ]
    assert got == expected


# ---------------------------------------------------------------------------------------------
# SQLite: the database file alone


@dataclass
class AfterRun:
    url: str
    path: Path
    study_name: str
    wal_bytes: int | None  # the -wal file's size when main returned; None: no such file
    copy: Path  # the main database file alone, copied when main returned


@pytest.fixture(scope="module")
def sqlite_after_run(tmp_path_factory) -> AfterRun:
    """A SQLite study as ``hpo run`` leaves it, looked at before anything else opens it."""
    directory = tmp_path_factory.mktemp("sqlite-file")
    path = directory / "studies.db"
    url = f"sqlite:///{path}"
    spec = write_spec(directory / "tiny.toml", epochs=EPOCHS, trials=TRIALS, lr_low=1e-4)
    run_hpo(spec, url, "file-alone")
    wal = path.with_name(path.name + "-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else None
    copy = directory / "copy" / "studies.db"
    copy.parent.mkdir()
    shutil.copyfile(path, copy)  # not the -wal or -shm beside it
    return AfterRun(url, path, "file-alone", wal_bytes, copy)


def test_sqlite_leaves_no_wal_with_content(sqlite_after_run):
    assert not sqlite_after_run.wal_bytes  # absent or empty: every page is in the database


def test_sqlite_database_file_alone_holds_every_finished_trial_read_only(sqlite_after_run):
    uri = f"{sqlite_after_run.copy.resolve().as_uri()}?mode=ro"
    connection = sqlite3.connect(uri, uri=True)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # Optuna's schema keeps one row per trial, its state by name.
        rows = connection.execute("SELECT state FROM trials").fetchall()
    finally:
        connection.close()
    assert len(rows) == TRIALS
    assert {state for (state,) in rows} <= {s.name for s in FINISHED}


def test_sqlite_database_file_alone_loads_read_only_in_optuna(sqlite_after_run):
    read_only = f"sqlite:///file:{sqlite_after_run.copy}?mode=ro&uri=true"
    study = optuna.load_study(study_name=sqlite_after_run.study_name, storage=read_only)
    original = optuna.load_study(
        study_name=sqlite_after_run.study_name, storage=sqlite_after_run.url
    )
    trials = study.get_trials()
    assert [t.state for t in trials if t.state in FINISHED] == [t.state for t in trials]
    assert [facts(t) for t in trials] == [facts(t) for t in original.get_trials()]
