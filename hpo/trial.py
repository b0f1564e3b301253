"""One trial: suggest a configuration from the spec's space, then train it as a plain task.

``suggest`` asks an Optuna trial for each searched parameter in the space's order (the
optimizer before its own hyperparameters, which are suggested only for the optimizers they
belong to). ``configuration`` puts the suggestion, the spec's fixed values and the defaults in
their places of the trainer's ``RunConfig``: the typed run that builds and trains the net as
``python -m trainer`` does. ``run_task`` is a whole trial as
the executors run it: a pure function of a ``TrialTask`` (configuration, seed, pruning
thresholds), the spec and the split, returning a ``TrialResult``; it touches no storage and
imports no optuna, so it runs alike in this process, a local worker process or on a cluster.
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hpo.errors import SpecError
from hpo.interrupts import INTERRUPTS
from hpo.pruning import Thresholds
from hpo.reproduction import ENV_FACT, environment
from hpo.spec import (
    ARGS,
    OPTIMIZER_HYPERPARAMETERS,
    Param,
    StudySpec,
    network_display,
    rule_for,
)
from trainer.config import RunConfig, TrainConfig
from trainer.contract import NetworkError
from trainer.datasets import DatasetError, Split
from trainer.training import EpochMetrics, TrainResult

if TYPE_CHECKING:
    import optuna


def trial_seed(study_seed: int, trial_number: int) -> np.random.SeedSequence:
    """The seed of trial ``trial_number``: one trial's draws do not depend on another's."""
    return np.random.SeedSequence([study_seed, trial_number])


def applies(name: str, optimizer: str) -> bool:
    """Whether the space entry ``name`` applies to a trial of ``optimizer`` (an optimizer's
    own hyperparameters apply to it alone)."""
    when = rule_for(name).when
    return when is None or optimizer in when


def suggest(trial: "optuna.Trial", spec: StudySpec) -> None:
    """Suggest every searched parameter that applies to this trial."""
    optimizer = spec.fixed("optimizer", TrainConfig.optimizer)
    for p in spec.space:
        if p.kind == "fixed" or not applies(p.name, optimizer):
            continue
        if p.kind == "choice":
            value = trial.suggest_categorical(p.name, optuna_choices(p))
        elif p.kind == "int":
            value = trial.suggest_int(p.name, p.low, p.high, step=int(p.step or 1), log=p.log)
        else:
            value = trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
        if p.name == "optimizer":
            optimizer = value


TRAINING = "training."
NET_SHORT_NAMES = ("activation", "batchnorm", "dropout_ratio", "weight_decay", "init", "init_scale")
"""The space's short names that are ``NetConfig`` fields of the same name."""


def optuna_choices(p: Param) -> list:
    """A choice parameter's choices as Optuna takes them: a list choice (a learner's
    ``hidden_dims = [100, 100]``) as its JSON text, since Optuna's choices are scalars."""
    return [json.dumps(list(c)) if isinstance(c, tuple) else c for c in p.choices]


def configuration(spec: StudySpec, params: dict[str, Any]) -> RunConfig:
    """The run of a trial with ``params``: the study's data, model and training with each
    suggested, then fixed, value of the space in its place. A value the space neither searches
    nor fixes is ``[model]``'s and ``[training]``'s, else the trainer's default (the optimizer's
    own hyperparameters then take the paper's defaults)."""
    chosen = {p.name: p.value for p in spec.space if p.kind == "fixed"} | dict(params)
    for p in spec.space:
        if p.name not in chosen:
            continue
        if p.kind == "float" and p.step is not None:  # a grid point's float noise: 0.05 * 3
            chosen[p.name] = float(f"{chosen[p.name]:.15g}")  # is 0.15000000000000002
        elif p.kind == "choice" and isinstance(p.choices[0], tuple):
            chosen[p.name] = tuple(json.loads(chosen[p.name]))  # a list choice, as Optuna holds it
    optimizer = chosen.get("optimizer", TrainConfig.optimizer)
    chosen = {k: v for k, v in chosen.items() if applies(k, optimizer)}
    hidden = spec.model.hidden_sizes
    if "model.width" in chosen or "model.depth" in chosen:
        width = chosen.get("model.width", hidden[0])
        hidden = (width,) * chosen.get("model.depth", len(hidden))
    args = dict(spec.model.args)
    args |= {k[len(ARGS) :]: v for k, v in chosen.items() if k.startswith(ARGS)}
    net = replace(
        spec.model,
        hidden_sizes=hidden,
        args=tuple(args.items()),
        **{k: chosen[k] for k in NET_SHORT_NAMES if k in chosen},
    )
    training = replace(
        spec.training,
        optimizer=optimizer,
        hyperparameters=tuple(
            (k, float(chosen[k])) for k in OPTIMIZER_HYPERPARAMETERS if k in chosen
        ),
        **{k[len(TRAINING) :]: v for k, v in chosen.items() if k.startswith(TRAINING)},
    )
    return RunConfig(data=spec.data, net=net, training=training)


def load_study_split(spec: StudySpec) -> Split:
    """The study's split, Ctrl-C raising while it loads; bad data is a ``SpecError`` that
    names the spec's file and its ``data`` field."""
    try:
        with INTERRUPTS.raising():
            return spec.data.load()
    except DatasetError as e:
        raise SpecError(spec.source, f"data.{e.field}", str(e)) from None


def load_training_split(spec: StudySpec) -> Split:
    """The study's split for a command that trains (run, worker, confirm, retrain, verify):
    ``load_study_split``, then a learner's net checked on it (``check_study_network``)."""
    split = load_study_split(spec)
    check_study_network(spec, split)
    return split


def check_study_network(spec: StudySpec, split: Split) -> None:
    """Refuse, before anything is stored, a learner's net that does not load, build or meet
    the contract on one small batch (``trainer.config.NetConfig.check``), built with the
    space's first configuration (every range at its low end, every choice's first): one
    ``SpecError`` naming the file's ``model.network``."""
    if not spec.user_network:
        return
    first = {
        p.name: optuna_choices(p)[0] if p.kind == "choice" else p.low
        for p in spec.space
        if p.kind != "fixed"
    }
    try:
        with INTERRUPTS.raising():
            configuration(spec, first).net.check(split)
    except NetworkError as e:
        raise SpecError(
            spec.source, "model.network", f"{network_display(spec.model.network)}: {e}"
        ) from None


COMPLETE, PRUNED, INTERRUPTED = "complete", "pruned", "interrupted"


@dataclass(frozen=True)
class TrialTask:
    """Everything a trial needs besides the study's spec and split: small, and picklable.

    ``seed`` is the entropy of the trial's ``SeedSequence`` (``trial_seed``); ``thresholds``
    decide its pruning, from the study's finished trials when it was handed out.
    """

    number: int
    config: RunConfig
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
    _, result = task.config.train(split, seed, on_epoch_end=on_epoch_end, should_stop=should_stop)
    if result.stop_reason == "interrupted":
        state, value = INTERRUPTED, None
    elif result.diverged:
        values[result.epochs_run + 1] = 0.0
        state, value = PRUNED, None
    elif result.stop_reason == "callback":
        state, value = PRUNED, None
    else:
        state, value = COMPLETE, result.best_val_accuracy
    facts = result_facts(result, seed, batch_loss=spec.record_batch_loss)
    facts[ENV_FACT] = environment(split, spec.model.network)
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
