"""One trial: suggest a configuration from the spec's space, train it, report every epoch.

``suggest`` asks the trial for each searched parameter in the order of ``spec.PARAMS`` (the
optimizer before its own hyperparameters, which are suggested only for the optimizers they
belong to). ``configuration`` completes the suggestion with the spec's fixed values and the
defaults. ``train_configuration`` builds and trains the net; ``run_trial`` does it for an Optuna
trial, turning ``on_epoch_end`` into reports and pruning.

Storage costs. Optuna's SQLite storage pays a transaction for each ``suggest_*``,
``trial.report`` and ``set_user_attr``, and reads the study again for each ``trial.should_prune``
(about 5 ms an epoch, as much as a small net's epoch of training). So a trial's parameters are
suggested against one read of the study and written in one transaction before training
(``buffered_suggestions``). For the median pruner, which only compares against completed trials,
the decision is taken here against the completed trials the sampler read, and the epoch values,
the user attributes and the outcome are written in one transaction when the trial ends
(``finish_trial``). The successive-halving and Hyperband pruners keep state in the storage as
trials run, so they report and ask every epoch.
"""

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.pruners._percentile import _is_first_in_interval_step
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo.heartbeat import trial_heartbeat
from hpo.interrupts import storage_step
from hpo.spec import OPTIMIZER_HYPERPARAMETERS, PARAMS, StudySpec
from hpo.storage import KnownTrials, buffered_suggestions, finish_trial, retrying
from trainer.datasets import Split
from trainer.network import MultiLayerNet
from trainer.optimizers import make_optimizer
from trainer.training import EpochMetrics, TrainResult, train

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


def suggest(trial: optuna.Trial, spec: StudySpec) -> None:
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
) -> TrainResult:
    """Train ``net`` with ``config``'s optimizer on ``split`` (or on the given arrays)."""
    hyper = {k: config[k] for k in OPTIMIZER_HYPERPARAMETERS if k in config}
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
    )


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


class LocalPercentilePruning:
    """Optuna's ``PercentilePruner`` (``MedianPruner`` is its 50th percentile) decided in-process
    against the completed trials read when the trial started.

    The decision is Optuna's, rule for rule (startup trials, warm-up, interval, the trial's best
    value so far against the percentile of the completed trials at the same step, NaN prunes),
    but the completed trials' values are gathered by step once per trial instead of once per
    epoch: they do not change while the trial runs. Equality with ``pruner.prune`` is tested
    over random studies.
    """

    def __init__(
        self,
        pruner: optuna.pruners.PercentilePruner,
        completed: list[FrozenTrial],
        direction: StudyDirection = StudyDirection.MAXIMIZE,
    ) -> None:
        self._pruner = pruner
        self._completed = completed
        self._direction = direction
        self._by_step: dict[int, list[float]] | None = None  # step -> completed trials' values

    def should_prune(self, values: dict[int, float]) -> bool:
        """Whether a trial with the intermediate ``values`` (step -> value) is pruned now."""
        p, n = self._pruner, len(self._completed)
        if n == 0 or n < p._n_startup_trials or not values:
            return False
        step = max(values)
        if step < p._n_warmup_steps:
            return False
        warmup, interval = p._n_warmup_steps, p._interval_steps
        if not _is_first_in_interval_step(step, values.keys(), warmup, interval):
            return False
        finite = [v for v in values.values() if not math.isnan(v)]
        if not finite:
            return True
        maximize = self._direction == StudyDirection.MAXIMIZE
        best = max(finite) if maximize else min(finite)
        threshold = self._threshold(step)
        if math.isnan(threshold):
            return False
        return best < threshold if maximize else best > threshold

    def _threshold(self, step: int) -> float:
        """The percentile of the completed trials' values at ``step``; NaN where fewer than
        ``n_min_trials`` reported it (NaN values count as reported, as in Optuna)."""
        if self._by_step is None:
            by_step: dict[int, list[float]] = {}
            for t in self._completed:
                for s, v in t.intermediate_values.items():
                    by_step.setdefault(s, []).append(v)
            self._by_step = by_step
        p = self._pruner
        reported = self._by_step.get(step, [])
        finite = [v for v in reported if not math.isnan(v)]
        if len(reported) < p._n_min_trials or not finite:
            return math.nan
        q = 100 - p._percentile if self._direction == StudyDirection.MAXIMIZE else p._percentile
        return float(np.percentile(finite, q))  # = np.nanpercentile(reported, q)


def local_pruning_supported(pruner: optuna.pruners.BasePruner) -> bool:
    """Pruners that decide from completed trials alone, and so can decide in-process."""
    return isinstance(pruner, optuna.pruners.MedianPruner | optuna.pruners.NopPruner)


@dataclass(frozen=True)
class TrialOutcome:
    """What became of a trial: its state and the training result behind it."""

    number: int
    state: TrialState
    value: float | None
    result: TrainResult
    wall_seconds: float


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    spec: StudySpec,
    split: Split,
    *,
    known: KnownTrials | None = None,
) -> TrialOutcome:
    """Train ``trial``'s configuration, report every epoch, and tell the study the outcome.

    The value is the best epoch's validation accuracy. A pruned trial and a diverged one (which
    reports 0 accuracy at the epoch it diverged, so that samplers learn to avoid it) end as
    PRUNED; ``user_attrs`` hold the curves and the facts of the run. ``known`` trials of the
    study (see ``hpo.storage.KnownTrials``) spare the sampler its read while they are current;
    they serve pruners that decide in-process only.
    """
    start = time.perf_counter()
    pruner = study.pruner
    local = local_pruning_supported(pruner)
    known = known if local else None

    def suggest_all() -> None:
        with buffered_suggestions(study, trial, known=known):
            suggest(trial, spec)

    storage_step(suggest_all)
    config = configuration(spec, trial.params)
    seed = trial_seed(spec.search.seed, trial.number)
    values: dict[int, float] = {}
    decide = None
    if local and isinstance(pruner, optuna.pruners.PercentilePruner):
        # The trials the sampler read for this trial (Study caches them per trial): no new read.
        completed = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
        decide = LocalPercentilePruning(pruner, completed, study.direction)

    def report_and_ask(value: float, epoch: int) -> bool:
        """The storage's way, for pruners that keep their state there."""
        retrying(lambda: trial.report(value, epoch), what="reporting")
        return retrying(trial.should_prune, what="pruning")

    def on_epoch_end(m: EpochMetrics) -> bool:
        values[m.epoch] = m.val_accuracy
        if local:
            return decide is not None and decide.should_prune(values)
        return storage_step(lambda: report_and_ask(m.val_accuracy, m.epoch))

    with trial_heartbeat(study, trial):
        _, result = train_configuration(spec, config, split, seed, on_epoch_end=on_epoch_end)
        if result.diverged:
            if local:
                values[result.epochs_run + 1] = 0.0
            else:
                storage_step(
                    lambda: retrying(
                        lambda: trial.report(0.0, result.epochs_run + 1), what="reporting"
                    )
                )
    if result.diverged or result.stop_reason == "callback":
        state, value = TrialState.PRUNED, None
    else:
        state, value = TrialState.COMPLETE, result.best_val_accuracy
    attrs = result_attrs(result, seed, batch_loss=spec.training.record_batch_loss)
    storage_step(
        lambda: retrying(
            lambda: finish_trial(
                study,
                trial,
                state=state,
                value=value,
                user_attrs=attrs,
                intermediate_values=values if local else {},
                known=known,
            ),
            what=f"finishing trial #{trial.number}",
        )
    )
    return TrialOutcome(trial.number, state, value, result, time.perf_counter() - start)


def result_attrs(
    result: TrainResult, seed: np.random.SeedSequence, *, batch_loss: bool = False
) -> dict[str, Any]:
    """The trial's user attributes: the facts of its run and its per-epoch curves, and with
    ``batch_loss`` every step's training loss (to 5 significant digits, non-finite as None)."""
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
