"""One training run as frozen values, and the one rule that seeds it.

A run is its data (``DataConfig``: which set, how it is split, with which seed), its net
(``NetConfig``) and its training (``TrainConfig``: the optimizer with its hyperparameters, epochs,
batches, early stopping). ``RunConfig`` holds the three. ``python -m trainer`` builds one from its
flags and ``hpo`` from a study's spec and a trial's parameters (``hpo.objective.run_config``),
and both train it through ``RunConfig.train``, so a trial and the command line that
``RunConfig.flags`` writes for it train the same net on the same batches.

The seeding rule: the data seed alone draws the split (and the rows that ``eval_train_samples``
keeps); the run's ``SeedSequence`` spawns two children, the first for the initial weights and
the second for dropout masks and the batch order.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from trainer.datasets import Split, load_split
from trainer.network import MultiLayerNet
from trainer.optimizers import Optimizer, make_optimizer
from trainer.training import EpochMetrics, TrainResult, train

EVAL_STREAM = 0x6576616C  # "eval": the training-accuracy subset's own stream of the data seed


@dataclass(frozen=True)
class DataConfig:
    """The data of a run: the set's name (or ``npz:PATH``), where its files are, how many
    samples it draws and the fractions it holds out, and the seed of that draw."""

    dataset: str = "digits"
    data_dir: str | None = None
    train_size: int | None = None
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0

    def load(self, dtype=np.float32) -> Split:
        """The split (raises ``trainer.datasets.DatasetError``): the same in any process that
        reads the same files."""
        return load_split(
            self.dataset,
            rng=np.random.default_rng(self.seed),
            data_dir=self.data_dir,
            validation_fraction=self.validation_fraction,
            test_fraction=self.test_fraction,
            train_size=self.train_size,
            dtype=dtype,
        )


@dataclass(frozen=True)
class NetConfig:
    """A MultiLayerNet's architecture and regularization; the input and output sizes come from
    the data."""

    hidden_sizes: tuple[int, ...] = (100, 100, 100)
    activation: str = "relu"
    batchnorm: bool = False
    dropout_ratio: float = 0.0
    weight_decay: float = 0.0
    weight_decay_type: str = "l2"
    init: str = "he"
    init_scale: float = 1.0

    def build(self, split: Split, rng: np.random.Generator, dtype=np.float32) -> MultiLayerNet:
        return MultiLayerNet(
            input_size=split.n_features,
            hidden_sizes=self.hidden_sizes,
            output_size=split.n_classes,
            activation=self.activation,
            batchnorm=self.batchnorm,
            dropout_ratio=self.dropout_ratio,
            weight_decay=self.weight_decay,
            weight_decay_type=self.weight_decay_type,
            init=self.init,
            init_scale=self.init_scale,
            dtype=dtype,
            rng=rng,
        )


@dataclass(frozen=True)
class TrainConfig:
    """How a net is trained: the optimizer's name and keyword hyperparameters (those left out
    take the rule's defaults), epochs, batch size, early stopping, learning-rate decay and the
    training rows each epoch's training accuracy counts (None: all)."""

    optimizer: str = "sgd"
    hyperparameters: tuple[tuple[str, float], ...] = ()
    epochs: int = 20
    batch_size: int = 100
    patience: int | None = None
    lr_decay: float = 1.0
    eval_train_samples: int | None = None

    def make_optimizer(self) -> Optimizer:
        return make_optimizer(self.optimizer, **dict(self.hyperparameters))


@dataclass(frozen=True)
class RunConfig:
    """A whole run: data, net and training."""

    data: DataConfig = field(default_factory=DataConfig)
    net: NetConfig = field(default_factory=NetConfig)
    training: TrainConfig = field(default_factory=TrainConfig)

    def eval_train_rows(self, n_train: int) -> np.ndarray | None:
        """The training rows every epoch's training loss and accuracy count: a sorted subset of
        ``eval_train_samples`` rows drawn with the data seed, the same for every run on the
        data; None (every row) when unset or not smaller than ``n_train``."""
        k = self.training.eval_train_samples
        if k is None or k >= n_train:
            return None
        rng = np.random.default_rng([self.data.seed, EVAL_STREAM])
        return np.sort(rng.choice(n_train, size=k, replace=False))

    def build(
        self, split: Split, seed: np.random.SeedSequence, dtype=np.float32
    ) -> tuple[MultiLayerNet, np.random.Generator]:
        """The untrained net, and the generator of its dropout masks and batch order."""
        init_seed, shuffle_seed = seed.spawn(2)
        net = self.net.build(split, np.random.default_rng(init_seed), dtype)
        return net, np.random.default_rng(shuffle_seed)

    def fit(
        self,
        net: MultiLayerNet,
        split: Split,
        rng: np.random.Generator,
        *,
        on_epoch_end: Callable[[EpochMetrics], bool | None] | None = None,
        x_train: np.ndarray | None = None,
        y_train: np.ndarray | None = None,
        restore_best: bool = True,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainResult:
        """Train ``net`` on ``split`` (or on the given training arrays) with ``rng``."""
        t = self.training
        x = split.x_train if x_train is None else x_train
        y = split.y_train if y_train is None else y_train
        return train(
            net,
            t.make_optimizer(),
            x,
            y,
            split.x_val,
            split.y_val,
            epochs=t.epochs,
            batch_size=t.batch_size,
            rng=rng,
            on_epoch_end=on_epoch_end,
            patience=t.patience,
            lr_decay=t.lr_decay,
            restore_best=restore_best,
            should_stop=should_stop,
            eval_train=self.eval_train_rows(len(y)),
        )

    def train(
        self, split: Split, seed: np.random.SeedSequence, dtype=np.float32, **fit_options
    ) -> tuple[MultiLayerNet, TrainResult]:
        """Build the net with ``seed`` and train it (``fit``'s options pass through)."""
        net, rng = self.build(split, seed, dtype)
        return net, self.fit(net, split, rng, **fit_options)

    def flags(self, seed: tuple[int, ...]) -> list[str]:
        """The ``python -m trainer`` arguments that train this run with the seed whose entropy
        is ``seed``: every value spelled out, so that the trainer's defaults do not matter."""
        d, n, t = self.data, self.net, self.training
        args = ["--dataset", d.dataset]
        if d.data_dir is not None:
            args += ["--data-dir", d.data_dir]
        if d.train_size is not None:
            args += ["--train-size", str(d.train_size)]
        args += [
            "--validation-fraction",
            _number(d.validation_fraction),
            "--test-fraction",
            _number(d.test_fraction),
            "--data-seed",
            str(d.seed),
            "--hidden",
            ",".join(map(str, n.hidden_sizes)),
            "--activation",
            n.activation,
        ]
        if n.batchnorm:
            args.append("--batchnorm")
        args += [
            "--dropout",
            _number(n.dropout_ratio),
            "--weight-decay",
            _number(n.weight_decay),
            "--weight-decay-type",
            n.weight_decay_type,
            "--init",
            n.init,
            "--init-scale",
            _number(n.init_scale),
            "--optimizer",
            t.optimizer,
        ]
        for name, value in t.hyperparameters:
            args += [hyperparameter_flag(name), _number(value)]
        args += ["--epochs", str(t.epochs), "--batch-size", str(t.batch_size)]
        if t.patience is not None:
            args += ["--patience", str(t.patience)]
        args += ["--lr-decay", _number(t.lr_decay)]
        if t.eval_train_samples is not None:
            args += ["--eval-train-samples", str(t.eval_train_samples)]
        args += ["--seed", ",".join(map(str, seed))]
        return args


def hyperparameter_flag(name: str) -> str:
    """The trainer's flag of an optimizer keyword: ``learning_rate`` is ``--learning-rate``."""
    return "--" + name.replace("_", "-")


def _number(x: float) -> str:
    """A float as Python writes it back exactly (``float(_number(x)) == x``)."""
    return repr(float(x))
