"""Fixtures for the study service: tiny specs that train in milliseconds, temporary storages."""

import os
import textwrap
import uuid

import pytest
import sqlalchemy

from hpo.locks import dispose_lock_engines
from hpo.urls import mask_password

IN_CI = os.environ.get("CI") == "true"

TINY = """
[study]
name = "tiny"

[data]
dataset = "digits"
train_size = 200

[model]
hidden = [16]

[training]
epochs = {epochs}
batch_size = 50

[search]
sampler = "{sampler}"
seed = {seed}
trials = {trials}
startup_trials = 3
warmup_epochs = 1

[space]
learning_rate = {{ low = {lr_low}, high = {lr_high}, log = true }}
weight_decay = {{ low = 1e-8, high = 1e-2, log = true }}
dropout_ratio = {{ low = 0.0, high = 0.5, step = 0.1 }}
optimizer = {{ choices = [{optimizers}] }}
"""


def write_spec(path, **options):
    values = {
        "epochs": 3,
        "sampler": "tpe",
        "seed": 0,
        "trials": 6,
        "lr_low": 1e-3,
        "lr_high": 1e-1,
        "optimizers": '"sgd", "momentum", "adam"',
    }
    values.update(options)
    path.write_text(textwrap.dedent(TINY.format(**values)))
    return path


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """Every test runs in its own folder: the reports hpo run and hpo confirm write by default
    (hpo-report-STUDY.html here) never land in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny_spec(tmp_path):
    return write_spec(tmp_path / "tiny.toml")


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture
def postgres_url():
    """A fresh, empty database on the test server ($HPO_TEST_POSTGRES_URL), dropped afterwards;
    skipped without a server, except in CI (``.ci/run`` sets the variable), where it fails."""
    base = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not base:
        if IN_CI:
            pytest.fail("CI must set HPO_TEST_POSTGRES_URL (.ci/run does)")
        pytest.skip("HPO_TEST_POSTGRES_URL is not set: no PostgreSQL server to test against")
    admin_url = sqlalchemy.engine.make_url(base).set(drivername="postgresql+psycopg")
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"hpo_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as c:
            c.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as e:
        if IN_CI:
            raise
        pytest.skip(f"PostgreSQL at {mask_password(base)} is unreachable: {e.orig}")
    yield admin_url.set(database=name, drivername="postgresql").render_as_string(
        hide_password=False
    )
    dispose_lock_engines()  # an advisory lock's pooled connection holds the database open
    with admin.connect() as c:
        c.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
