"""One trial: suggest a configuration from the spec's space, then train it as a plain task.

``suggest`` asks an Optuna trial for each searched parameter in the order of ``spec.PARAMS``
(the optimizer before its own hyperparameters, which are suggested only for the optimizers they
belong to). ``configuration`` completes the suggestion with the spec's fixed values and the
defaults. ``train_configuration`` builds and trains the net. ``run_task`` is a whole trial as
the executors run it: a pure function of a ``TrialTask`` (configuration, seed, pruning
thresholds), the spec and the split, returning a ``TrialResult``; it touches no storage and
imports no optuna, so it runs alike in this process, a local worker process or on a cluster.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hpo.pruning import Thresholds
from hpo.reproduction import ENV_FACT, environment
from hpo.spec import OPTIMIZER_HYPERPARAMETERS, PARAMS, StudySpec
from trainer.datasets import Split, load_split
from trainer.network import MultiLayerNet
from trainer.optimizers import make_optimizer
from trainer.training import EpochMetrics, TrainResult, train

if TYPE_CHECKING:
    import optuna

DEFAULTS: dict[str, Any] = {
    "optimizer": "sgd",
    "weight_decay": 0.0,
    "dropout_ratio": 0.0,
    "init_scale": 1.0,
    "init": "he",
}
"""Values of parameters that the space neither searches nor fixes (the optimizer's own
hyperparameters then take the paper defaults; activation and batchnorm come from [model])."""


def trial_seed(study_seed: int, trial_number: int) -> np.random.SeedSequence:
    """The seed of trial ``trial_number``: one trial's draws do not depend on another's."""
    return np.random.SeedSequence([study_seed, trial_number])


def suggest(trial: "optuna.Trial", spec: StudySpec) -> None:
    """Suggest every searched parameter that applies to this trial."""
    optimizer = None
    for p in spec.space:
        when = PARAMS[p.name].when
        if when is not None and (optimizer or _fixed_or_default(spec, "optimizer")) not in when:
            continue
        if p.kind == "choice":
            value = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "float":
            value = trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
        else:
            continue
        if p.name == "optimizer":
            optimizer = value


def _fixed_or_default(spec: StudySpec, name: str) -> Any:
    p = spec.param(name)
    if p is not None and p.kind == "fixed":
        return p.value
    if name in ("activation", "batchnorm"):
        return getattr(spec.model, name)
    return DEFAULTS.get(name)


def configuration(spec: StudySpec, params: dict[str, Any]) -> dict[str, Any]:
    """The full configuration of a trial with ``params``: suggested, fixed, then default values.

    Keys: every name of ``PARAMS`` that applies to the trial's optimizer (the optimizer's own
    hyperparameters only when set).
    """
    config = {}
    for name in PARAMS:
        value = params[name] if name in params else _fixed_or_default(spec, name)
        if value is not None:
            config[name] = value
    optimizer = config["optimizer"]
    for name, rule in PARAMS.items():
        if rule.when is not None and optimizer not in rule.when:
            config.pop(name, None)
    return config


def study_split(spec: StudySpec) -> Split:
    """The study's data, split with the spec's data seed: the same split for every trial, in
    any process that reads the same files (raises ``trainer.datasets.DatasetError``)."""
    d = spec.data
    return load_split(
        d.dataset,
        rng=np.random.default_rng(d.seed),
        data_dir=d.data_dir,
        validation_fraction=d.validation_fraction,
        test_fraction=d.test_fraction,
        train_size=d.train_size,
    )


def build_net(
    spec: StudySpec, config: dict[str, Any], split: Split, seed: np.random.SeedSequence
) -> tuple[MultiLayerNet, np.random.Generator]:
    """The untrained net ``config`` describes, and the generator that will shuffle its data."""
    init_seed, shuffle_seed = seed.spawn(2)
    net = MultiLayerNet(
        input_size=split.n_features,
        hidden_sizes=spec.model.hidden,
        output_size=split.n_classes,
        activation=config["activation"],
        batchnorm=config["batchnorm"],
        dropout_ratio=config["dropout_ratio"],
        weight_decay=config["weight_decay"],
        weight_decay_type=spec.model.weight_decay_type,
        init=config["init"],
        init_scale=config["init_scale"],
        rng=np.random.default_rng(init_seed),
    )
    return net, np.random.default_rng(shuffle_seed)


def fit_net(
    spec: StudySpec,
    config: dict[str, Any],
    net: MultiLayerNet,
    split: Split,
    rng: np.random.Generator,
    *,
    on_epoch_end=None,
    x_train: np.ndarray | None = None,
    y_train: np.ndarray | None = None,
    restore_best: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``net`` with ``config``'s optimizer on ``split`` (or on the given arrays)."""
    hyper = {k: config[k] for k in OPTIMIZER_HYPERPARAMETERS if k in config}
    n_train = len(split.y_train if y_train is None else y_train)
    return train(
        net,
        make_optimizer(config["optimizer"], **hyper),
        split.x_train if x_train is None else x_train,
        split.y_train if y_train is None else y_train,
        split.x_val,
        split.y_val,
        epochs=spec.training.epochs,
        batch_size=spec.training.batch_size,
        rng=rng,
        on_epoch_end=on_epoch_end,
        patience=spec.training.patience,
        lr_decay=spec.training.lr_decay,
        restore_best=restore_best,
        should_stop=should_stop,
        eval_train=eval_train_rows(spec, n_train),
    )


EVAL_STREAM = 0x6576616C  # "eval": the training-accuracy subset's own stream of the data seed


def eval_train_rows(spec: StudySpec, n_train: int) -> np.ndarray | None:
    """The training rows every epoch's training loss and accuracy count (``[training]
    eval_train_samples``): the same sorted subset for every trial, drawn with the data seed;
    None (every row) when unset or not smaller than the split."""
    k = spec.training.eval_train_samples
    if k is None or k >= n_train:
        return None
    rng = np.random.default_rng([spec.data.seed, EVAL_STREAM])
    return np.sort(rng.choice(n_train, size=k, replace=False))


def train_configuration(
    spec: StudySpec,
    config: dict[str, Any],
    split: Split,
    seed: np.random.SeedSequence,
    **fit_options,
) -> tuple[MultiLayerNet, TrainResult]:
    """Build the net ``config`` describes and train it (``fit_net``'s options pass through)."""
    net, rng = build_net(spec, config, split, seed)
    return net, fit_net(spec, config, net, split, rng, **fit_options)


COMPLETE, PRUNED, INTERRUPTED = "complete", "pruned", "interrupted"


@dataclass(frozen=True)
class TrialTask:
    """Everything a trial needs besides the study's spec and split: small, and picklable.

    ``seed`` is the entropy of the trial's ``SeedSequence`` (``trial_seed``); ``thresholds``
    decide its pruning, from the study's finished trials when it was handed out.
    """

    number: int
    config: dict[str, Any]
    seed: tuple[int, ...]
    thresholds: Thresholds


@dataclass(frozen=True)
class TrialResult:
    """What a trial's training produced, for the orchestrator to store.

    ``state`` is ``"complete"``, ``"pruned"`` (pruned or diverged) or ``"interrupted"`` (a
    Ctrl-C stopped it: the orchestrator fails it); ``value`` is the best epoch's validation
    accuracy of a complete trial; ``intermediate_values`` the validation accuracy by epoch (a
    diverged trial adds 0 at the epoch it diverged, so that samplers learn to avoid it).
    """

    number: int
    state: str
    value: float | None
    intermediate_values: dict[int, float]
    facts: dict[str, Any]  # ``result_facts``: stored as one user attribute (hpo.records)
    seconds: float


def run_task(
    task: TrialTask,
    spec: StudySpec,
    split: Split,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> TrialResult:
    """Train ``task``'s configuration on ``split``, pruning by its thresholds; touch no storage.

    A pure function of its arguments: the same task, spec and split give the same result, in
    any process with the same NumPy and BLAS (its facts record them: ``hpo.reproduction``).
    ``should_stop`` is polled between minibatch steps (Ctrl-C in this process).
    """
    start = time.perf_counter()
    values: dict[int, float] = {}

    def on_epoch_end(m: EpochMetrics) -> bool:
        values[m.epoch] = m.val_accuracy
        return task.thresholds.should_prune(values)

    seed = np.random.SeedSequence(task.seed)
    _, result = train_configuration(
        spec, task.config, split, seed, on_epoch_end=on_epoch_end, should_stop=should_stop
    )
    if result.stop_reason == "interrupted":
        state, value = INTERRUPTED, None
    elif result.diverged:
        values[result.epochs_run + 1] = 0.0
        state, value = PRUNED, None
    elif result.stop_reason == "callback":
        state, value = PRUNED, None
    else:
        state, value = COMPLETE, result.best_val_accuracy
    facts = result_facts(result, seed, batch_loss=spec.training.record_batch_loss)
    facts[ENV_FACT] = environment(split)
    return TrialResult(task.number, state, value, values, facts, time.perf_counter() - start)


def result_facts(
    result: TrainResult, seed: np.random.SeedSequence, *, batch_loss: bool = False
) -> dict[str, Any]:
    """The facts of a trial's run and its per-epoch curves, and with ``batch_loss`` every
    step's training loss (to 5 significant digits, non-finite as None)."""
    history = result.history
    best = result.best_epoch
    attrs = {
        "best_epoch": best,
        "epochs_run": result.epochs_run,
        "diverged": result.diverged,
        "train_seconds": round(result.train_seconds, 4),
        "train_accuracy": history.train_accuracy[best - 1] if best else None,
        "seed": list(seed.entropy),
        "curves": history.as_dict(),
    }
    if batch_loss:
        attrs["batch_loss"] = [
            float(f"{v:.5g}") if math.isfinite(v) else None for v in result.batch_loss
        ]
    return attrs
