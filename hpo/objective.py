"""One trial: suggest a configuration from the spec's space, then train it as a plain task.

``suggest`` asks an Optuna trial for each searched parameter in the order of ``spec.PARAMS``
(the optimizer before its own hyperparameters, which are suggested only for the optimizers they
belong to). ``configuration`` completes the suggestion with the spec's fixed values and the
defaults. ``run_config`` turns it into the trainer's ``RunConfig``, which builds and trains the
net as ``python -m trainer`` does. ``run_task`` is a whole trial as
the executors run it: a pure function of a ``TrialTask`` (configuration, seed, pruning
thresholds), the spec and the split, returning a ``TrialResult``; it touches no storage and
imports no optuna, so it runs alike in this process, a local worker process or on a cluster.
"""

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hpo.errors import SpecError
from hpo.interrupts import INTERRUPTS
from hpo.pruning import Thresholds
from hpo.reproduction import ENV_FACT, environment
from hpo.spec import OPTIMIZER_HYPERPARAMETERS, PARAMS, StudySpec
from trainer.config import DataConfig, NetConfig, RunConfig, TrainConfig
from trainer.datasets import DatasetError, Split
from trainer.training import EpochMetrics, TrainResult

if TYPE_CHECKING:
    import optuna

    from trainer.network import MultiLayerNet

DEFAULTS: dict[str, Any] = {
    "optimizer": TrainConfig.optimizer,
    "weight_decay": NetConfig.weight_decay,
    "dropout_ratio": NetConfig.dropout_ratio,
    "init_scale": NetConfig.init_scale,
    "init": NetConfig.init,
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


def data_config(spec: StudySpec) -> DataConfig:
    """The study's data: the same split for every trial, in any process that reads the same
    files (``.load()`` raises ``trainer.datasets.DatasetError``). ``[data]`` holds exactly the
    trainer's data fields."""
    return DataConfig(**dataclasses.asdict(spec.data))


def load_study_split(spec: StudySpec) -> Split:
    """The study's split, Ctrl-C raising while it loads; bad data is a ``SpecError`` that
    names the spec's file and its ``data`` field."""
    try:
        with INTERRUPTS.raising():
            return data_config(spec).load()
    except DatasetError as e:
        raise SpecError(spec.source, f"data.{e.field}", str(e)) from None


def run_config(spec: StudySpec, config: dict[str, Any]) -> RunConfig:
    """The run a trial's ``configuration`` is: the study's data, the net and its training."""
    m, t = spec.model, spec.training
    return RunConfig(
        data=data_config(spec),
        net=NetConfig(
            hidden_sizes=tuple(m.hidden),
            activation=config["activation"],
            batchnorm=config["batchnorm"],
            dropout_ratio=config["dropout_ratio"],
            weight_decay=config["weight_decay"],
            weight_decay_type=m.weight_decay_type,
            init=config["init"],
            init_scale=config["init_scale"],
        ),
        training=TrainConfig(
            optimizer=config["optimizer"],
            hyperparameters=tuple(
                (k, float(config[k])) for k in OPTIMIZER_HYPERPARAMETERS if k in config
            ),
            epochs=t.epochs,
            batch_size=t.batch_size,
            patience=t.patience,
            lr_decay=t.lr_decay,
            eval_train_samples=t.eval_train_samples,
        ),
    )


ACTIVATION_SAMPLES = 500
"""Validation inputs whose hidden activations the report's histograms count."""
HISTOGRAM_BINS = 30


def trial_net(
    spec: StudySpec, params: dict[str, Any], number: int, split: Split
) -> tuple[RunConfig, "MultiLayerNet", np.random.Generator]:
    """Trial ``number``'s run, its net with the very weights it started from (its
    configuration, its seed) and the generator of its batches, to train it again."""
    run = run_config(spec, configuration(spec, params))
    net, rng = run.build(split, trial_seed(spec.search.seed, number))
    return run, net, rng


def hidden_activations(net: "MultiLayerNet", split: Split) -> list[np.ndarray]:
    """Each hidden layer's activations on the first ``ACTIVATION_SAMPLES`` validation inputs
    (a badly scaled net overflows: its values are what the histograms show, not warnings)."""
    with np.errstate(all="ignore"):
        return net.hidden_activations(split.x_val[:ACTIVATION_SAMPLES])


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
    on_epoch: Callable[[int], None] | None = None,
) -> TrialResult:
    """Train ``task``'s configuration on ``split``, pruning by its thresholds; touch no storage.

    A pure function of its arguments: the same task, spec and split give the same result, in
    any process with the same NumPy and BLAS (its facts record them: ``hpo.reproduction``).
    ``should_stop`` is polled between minibatch steps (Ctrl-C in this process); ``on_epoch`` is
    called with the number of each epoch that ends (progress for the orchestrator's bar).
    """
    start = time.perf_counter()
    values: dict[int, float] = {}

    def on_epoch_end(m: EpochMetrics) -> bool:
        values[m.epoch] = m.val_accuracy
        if on_epoch is not None:
            on_epoch(m.epoch)
        return task.thresholds.should_prune(values)

    seed = np.random.SeedSequence(task.seed)
    _, result = run_config(spec, task.config).train(
        split, seed, on_epoch_end=on_epoch_end, should_stop=should_stop
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
