"""trainer.config: one run as frozen values, the seeding rule, and the flags that train it."""

import json

import numpy as np
import pytest

from trainer.cli import build_parser, main, run_config
from trainer.config import DataConfig, NetConfig, RunConfig, TrainConfig

RUN = RunConfig(
    data=DataConfig(train_size=300, validation_fraction=0.25, test_fraction=0.1, seed=3),
    net=NetConfig(
        hidden_sizes=(20, 10),
        activation="tanh",
        batchnorm=True,
        dropout_ratio=0.15,
        weight_decay=1.2345678901234567e-05,
        init="xavier",
        init_scale=0.7,
    ),
    training=TrainConfig(
        optimizer="adam",
        hyperparameters=(("learning_rate", 0.0031), ("beta1", 0.85)),
        epochs=3,
        batch_size=32,
        patience=2,
        lr_decay=0.9,
        eval_train_samples=40,
    ),
)


def test_the_flags_parse_back_to_the_same_run():
    args = build_parser().parse_args(RUN.flags((0, 17)))
    assert run_config(args) == RUN
    assert args.seed == (0, 17)


def test_the_flags_retrain_the_run_exactly(capsys):
    split = RUN.data.load()
    _, result = RUN.train(split, np.random.SeedSequence([0, 17]))
    assert main([*RUN.flags((0, 17)), "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["best_val_accuracy"] == result.best_val_accuracy
    assert printed["history"] == result.history.as_dict()


def test_the_seeding_rule_weights_from_the_first_child_batches_from_the_second():
    split = RUN.data.load()
    seed = np.random.SeedSequence([4, 2])
    net, rng = RUN.build(split, seed)
    init_seed, shuffle_seed = np.random.SeedSequence([4, 2]).spawn(2)
    again = RUN.net.build(split, np.random.default_rng(init_seed))
    assert all((a == b).all() for a, b in zip(net.params, again.params, strict=True))
    assert rng.random() == np.random.default_rng(shuffle_seed).random()


def test_the_data_seed_alone_draws_the_split():
    a, b = RUN.data.load(), RUN.data.load()
    assert (a.y_train == b.y_train).all() and a.digest() == b.digest()
    other = DataConfig(train_size=300, validation_fraction=0.25, test_fraction=0.1, seed=4)
    assert other.load().digest() != a.digest()


def test_eval_train_rows_are_one_seeded_subset():
    assert RunConfig().eval_train_rows(160) is None  # unset: every row
    rows = RUN.eval_train_rows(160)
    assert len(rows) == 40 and len(set(rows.tolist())) == 40 and (np.diff(rows) > 0).all()
    assert (rows == RUN.eval_train_rows(160)).all()  # the same subset each time
    assert RUN.eval_train_rows(40) is None and RUN.eval_train_rows(30) is None
    other = RunConfig(data=DataConfig(seed=4), training=RUN.training)
    assert (other.eval_train_rows(160) != rows).any()  # drawn with the data seed


@pytest.mark.parametrize("value", [0.1, 1e-05, 0.30000000000000004, 2.5e-300])
def test_a_float_flag_reads_back_exactly(value):
    run = RunConfig(net=NetConfig(weight_decay=np.float64(value)))
    assert run_config(build_parser().parse_args(run.flags((0,)))).net.weight_decay == value


def test_the_command_lines_defaults_are_the_configs():
    args = build_parser().parse_args([])
    assert run_config(args) == RunConfig()


def test_a_new_optimizers_keywords_are_flags_with_no_other_edit(monkeypatch):
    from typing import ClassVar

    from trainer import optimizers

    class Lion(optimizers.SGD):
        SEARCHABLE: ClassVar = {"gamma": (0.0, 1.0)}

        def __init__(self, *, learning_rate=1e-4, gamma=0.99):
            super().__init__(learning_rate=learning_rate)
            self.gamma = gamma

    monkeypatch.setitem(optimizers.OPTIMIZERS, "lion", Lion)
    run = RunConfig(training=TrainConfig(optimizer="lion", hyperparameters=(("gamma", 0.5),)))
    args = build_parser().parse_args(run.flags((0,)))
    assert run_config(args) == run
    assert run.training.make_optimizer().gamma == 0.5
