"""One training run as frozen values, and the one rule that seeds it.

A run is its data (``DataConfig``: which set, how it is split, with which seed), its net
(``NetConfig``) and its training (``TrainConfig``: the optimizer with its hyperparameters, epochs,
batches, early stopping). ``RunConfig`` holds the three. ``python -m trainer`` builds one from its
flags and ``hpo`` from a study's spec and a trial's parameters (``hpo.trial.configuration``),
and both train it through ``RunConfig.train``, so a trial and the command line that
``RunConfig.flags`` writes for it train the same net on the same batches.

The seeding rule: the data seed alone draws the split (and the rows that ``eval_train_samples``
keeps); the run's ``SeedSequence`` spawns two children, the first for the initial weights and
the second for dropout masks and the batch order. A learner's own net (``NetConfig.network``)
draws its weights, and its dropout masks, from NumPy's global state, which the first child
seeds just before the net is built (``trainer.contract.build_network``).

The module is light to import (NumPy and these dataclasses): the data, the nets and the loop
are imported where a run is built, so that ``hpo``'s reading commands can hold these types.
"""

import json
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from trainer.contract import Trainable
    from trainer.datasets import Split
    from trainer.optimizers import Optimizer
    from trainer.training import EpochMetrics, TrainResult

EVAL_STREAM = 0x6576616C  # "eval": the training-accuracy subset's own stream of the data seed


@dataclass(frozen=True)
class Rule:
    """What a setting may be, stated once for every reader (a study file's tables and space,
    ``python -m trainer``'s flags, ``train``'s arguments): a ``"float"`` or an ``"int"`` in
    [lo, hi] (each bound closed or open per ``closed``), one of ``choices`` (``"choice"``), or
    any number or choice (``"any"``: a learner's own constructor argument). ``when`` names
    the optimizers a setting applies to (None: all)."""

    kind: str
    lo: float = -math.inf
    hi: float = math.inf
    closed: tuple[bool, bool] = (True, True)
    choices: tuple = ()
    when: tuple[str, ...] | None = None

    def allowed(self) -> str:
        """The rule in words: ``0 < value <= 1``, ``> 0``, ``an integer from 1 to 1,000``."""
        if self.kind == "choice":
            return ", ".join(json.dumps(c) for c in self.choices)
        if self.kind == "any":
            return "a finite number, a string, true/false, or a list of them"
        low, high = self.lo > -math.inf, self.hi < math.inf
        lo, hi = _plain(self.lo), _plain(self.hi)
        above, below = ("<=" if c else "<" for c in self.closed)
        if self.kind == "int":
            if low and high:
                return f"an integer from {lo} to {hi}"
            return f"an integer {'>=' if above == '<=' else '>'} {lo}" if low else "an integer"
        if low and high:
            return f"{lo} {above} value {below} {hi}"
        if low:
            return f"{'>=' if above == '<=' else '>'} {lo}"
        return f"{below} {hi}" if high else "a number"

    def admits(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices and type(value) is type(self.choices[0])
        if self.kind == "any":  # a scalar, or a list of scalars (hidden_dims = [100, 100])
            items = value if isinstance(value, list | tuple) and value else [value]
            return all(
                isinstance(v, bool | str) or (isinstance(v, numbers.Real) and math.isfinite(v))
                for v in items
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind == "int" and not isinstance(value, numbers.Integral):
            return False
        lo_ok = value >= self.lo if self.closed[0] else value > self.lo
        hi_ok = value <= self.hi if self.closed[1] else value < self.hi
        return lo_ok and hi_ok

    def check(self, name: str, value: Any) -> None:
        """Raise ``ValueError`` in scikit-learn's words unless ``value`` is admitted."""
        if not self.admits(value):
            raise ValueError(f"The {name!r} parameter must be {self.allowed()}. Got {value!r}.")


def _plain(x: float) -> str:
    """A bound as a person writes it: 1,000 for an integer, 0.5 or 1e-08 for a float."""
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


POSITIVE = Rule("float", lo=0.0, closed=(False, True))
UNIT = Rule("float", lo=0.0, hi=1.0, closed=(True, False))  # [0, 1)
FRACTION = Rule("float", lo=0.0, hi=1.0, closed=(False, False))  # (0, 1)
COUNT = Rule("int", lo=1)

RULES: dict[str, Rule] = {
    "data.train_size": Rule("int", lo=2),
    "data.validation_fraction": FRACTION,
    "data.test_fraction": FRACTION,
    "data.seed": Rule("int", lo=0),
    "model.width": COUNT,
    "model.depth": COUNT,
    "model.dropout_ratio": UNIT,
    "model.weight_decay": Rule("float", lo=0.0),
    "model.init_scale": POSITIVE,
    "training.learning_rate": POSITIVE,
    "training.epochs": COUNT,
    "training.batch_size": COUNT,
    "training.patience": COUNT,
    "training.lr_decay": Rule("float", lo=0.0, hi=1.0, closed=(False, True)),  # (0, 1]
    "training.eval_train_samples": COUNT,
}
"""Every numeric setting's range by its place (``table.field``); the one place each range is
written."""


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

    def load(self, dtype=np.float32) -> "Split":
        """The split (raises ``trainer.datasets.DatasetError``): the same in any process that
        reads the same files."""
        from trainer.datasets import load_split

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
    """The net: the built-in MultiLayerNet's architecture and regularization, or a learner's own
    class (``network``, ``"nets.py:TwoLayerNet"`` or ``"package.module:Name"``, with its
    constructor's keyword ``args``; the built-in net's fields then do not apply). The input
    and output sizes come from the data."""

    hidden_sizes: tuple[int, ...] = (100, 100, 100)
    activation: str = "relu"
    batchnorm: bool = False
    dropout_ratio: float = 0.0
    weight_decay: float = 0.0
    weight_decay_type: str = "l2"
    init: str = "he"
    init_scale: float = 1.0
    network: str | None = None
    args: tuple[tuple[str, Any], ...] = ()

    def build(self, split: "Split", rng: np.random.Generator, dtype=np.float32) -> "Trainable":
        """The untrained net, its weights drawn with ``rng`` (raises
        ``trainer.contract.NetworkError`` for a learner's net that breaks the contract)."""
        if self.network is not None:
            from trainer.contract import build_network, load_network

            return build_network(
                load_network(self.network),
                {k: list(v) if isinstance(v, tuple) else v for k, v in self.args},
                n_features=split.n_features,
                n_classes=split.n_classes,
                rng=rng,
            )
        from trainer.network import MultiLayerNet

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

    def check(self, split: "Split", rows: int = 8) -> None:
        """For a learner's net: build one (seed 0) and try the contract on the first ``rows``
        training rows (``trainer.contract.check_network``); raises ``NetworkError``. The
        built-in net needs no check."""
        if self.network is None:
            return
        from trainer.contract import check_network

        state = np.random.get_state()  # noqa: NPY002 - building seeds the global state: restored
        try:
            net = self.build(split, np.random.default_rng(0))
            with np.errstate(all="ignore"):
                check_network(net, split.x_train[:rows], split.y_train[:rows], split.n_classes)
        finally:
            np.random.set_state(state)  # noqa: NPY002


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

    def make_optimizer(self) -> "Optimizer":
        from trainer.optimizers import make_optimizer

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
        self, split: "Split", seed: np.random.SeedSequence, dtype=np.float32
    ) -> tuple["Trainable", np.random.Generator]:
        """The untrained net, and the generator of its dropout masks and batch order."""
        init_seed, shuffle_seed = seed.spawn(2)
        net = self.net.build(split, np.random.default_rng(init_seed), dtype)
        return net, np.random.default_rng(shuffle_seed)

    def fit(
        self,
        net: "Trainable",
        split: "Split",
        rng: np.random.Generator,
        *,
        on_epoch_end: Callable[["EpochMetrics"], bool | None] | None = None,
        x_train: np.ndarray | None = None,
        y_train: np.ndarray | None = None,
        restore_best: bool = True,
        should_stop: Callable[[], bool] | None = None,
    ) -> "TrainResult":
        """Train ``net`` on ``split`` (or on the given training arrays) with ``rng``."""
        from trainer.training import train

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
        self, split: "Split", seed: np.random.SeedSequence, dtype=np.float32, **fit_options
    ) -> tuple["Trainable", "TrainResult"]:
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
        ]
        if n.network is not None:
            args += ["--network", n.network]
            for name, value in n.args:
                args += ["--net-arg", f"{name}={net_arg_text(value)}"]
        else:
            args += ["--hidden", ",".join(map(str, n.hidden_sizes)), "--activation", n.activation]
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
            ]
        args += ["--optimizer", t.optimizer]
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


def net_arg_text(value: Any) -> str:
    """A network argument as ``--net-arg NAME=VALUE`` spells it: JSON (``100``, ``0.5``,
    ``true``, ``[100, 100]``, ``"relu"``), floats written back exactly."""
    if isinstance(value, float):
        return _number(value)
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _number(x: float) -> str:
    """A float as Python writes it back exactly (``float(_number(x)) == x``)."""
    return repr(float(x))
