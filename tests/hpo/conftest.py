"""Fixtures for the study service: tiny specs that train in milliseconds, temporary storages."""

import textwrap

import pytest

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


@pytest.fixture
def tiny_spec(tmp_path):
    return write_spec(tmp_path / "tiny.toml")


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'studies.db'}"
