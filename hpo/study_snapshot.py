"""From a study in the storage to a report's plain data (``reports.snapshot.StudySnapshot``).

This is where the Optuna objects end: importance is computed here (Optuna 5's default
evaluator, PED-ANOVA), and the best configuration is trained again with its own seed to show its
activations at initialization and after training. ``reports`` then draws and renders
(``hpo.report`` writes the pages).
"""

import dataclasses
import warnings
from datetime import datetime

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hpo.confirm import (
    SEED_ATTR,
    SOURCE_ATTR,
    confirmations,
    load_companion,
    stored_runs,
    verdict,
)
from hpo.experiment_data import experiment_data
from hpo.names import MAX_CONFIRM_TOP
from hpo.objective import (
    ACTIVATION_SAMPLES,
    HISTOGRAM_BINS,
    hidden_activations,
    load_study_split,
    trial_net,
)
from hpo.records import run_facts
from hpo.results import TEST_ACCURACY_ATTR
from hpo.spec import StudySpec
from hpo.storage import open_storage
from hpo.urls import command_line, mask_password
from reports.snapshot import (
    ConfirmedRecord,
    LayerHistograms,
    ParamInfo,
    StudySnapshot,
    TrialRecord,
)
from trainer.datasets import Split


def _param_infos(trials: list[optuna.trial.FrozenTrial]) -> tuple[ParamInfo, ...]:
    seen: dict[str, ParamInfo] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            if name in seen:
                continue
            if isinstance(dist, CategoricalDistribution):
                seen[name] = ParamInfo(name, "categorical", choices=tuple(dist.choices))
            elif isinstance(dist, FloatDistribution | IntDistribution):
                seen[name] = ParamInfo(name, "float", log=dist.log, low=dist.low, high=dist.high)
    return tuple(seen.values())


def _record(t: optuna.trial.FrozenTrial) -> TrialRecord:
    attrs = run_facts(t)
    return TrialRecord(
        number=t.number,
        state=t.state.name,
        value=t.value if t.state == TrialState.COMPLETE else None,
        params=dict(t.params),
        intermediate=dict(t.intermediate_values),
        curves=attrs.get("curves"),
        batch_loss=attrs.get("batch_loss"),
        best_epoch=attrs.get("best_epoch"),
        train_accuracy=attrs.get("train_accuracy"),
        epochs_run=attrs.get("epochs_run"),
        train_seconds=attrs.get("train_seconds"),
        diverged=bool(attrs.get("diverged", False)),
        started=t.datetime_start,
        completed=t.datetime_complete,
    )


def importances(study: optuna.Study, n_complete: int) -> tuple[dict[str, float] | None, str]:
    """Optuna's default parameter importances, or None with the reason."""
    if n_complete < 2:
        return None, "Importance needs at least two completed trials."
    try:
        values = _importances(study)
    except (RuntimeError, ValueError) as e:
        return None, f"Importance could not be computed: {e}"
    if not values:
        return None, "No parameter was searched in every completed trial."
    return values, ""


def _importances(study: optuna.Study) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}


BOOTSTRAP_RESAMPLES = 20
BOOTSTRAP_MAX_TRIALS = 500
"""Importance's spread: recomputed on 20 resamples (with replacement) of the complete trials, of
at most 500 trials each (fewer than a large study has: the spread is then wider, not narrower,
than a full resample's)."""


def importance_spread(
    complete: list[optuna.trial.FrozenTrial], names: list[str], rng: np.random.Generator
) -> dict[str, tuple[float, float]] | None:
    """Per parameter, the 5th and 95th percentiles of its importance over bootstrap resamples of
    the complete trials (a parameter absent from a resample counts 0); None when too few."""
    if len(complete) < 4:
        return None
    size = min(len(complete), BOOTSTRAP_MAX_TRIALS)
    draws: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(BOOTSTRAP_RESAMPLES):
        resample = optuna.create_study(direction="maximize")  # in memory
        resample.add_trials([complete[i] for i in rng.integers(0, len(complete), size)])
        try:
            values = _importances(resample)
        except (RuntimeError, ValueError):
            continue  # a resample whose trials share one value of every parameter
        for name in names:
            draws[name].append(values.get(name, 0.0))
    if not all(draws.values()):
        return None
    return {
        name: (float(np.percentile(v, 5)), float(np.percentile(v, 95))) for name, v in draws.items()
    }


def activation_histograms(
    spec: StudySpec, trial: optuna.trial.FrozenTrial, split: Split
) -> tuple[LayerHistograms, ...]:
    """Retrain ``trial``'s configuration with its seed; histogram each hidden layer's
    activations on validation inputs at initialization and after training."""
    run, net, rng = trial_net(spec, trial.params, trial.number, split)
    before = hidden_activations(net, split)
    run.fit(net, split, rng)  # the loop silences a diverging net's overflow itself
    after = hidden_activations(net, split)
    layers = []
    for i, (a, b) in enumerate(zip(before, after, strict=True), start=1):
        layers.append(layer_histograms(i, a, b))
    return tuple(layers)


def layer_histograms(layer: int, initial: np.ndarray, trained: np.ndarray) -> LayerHistograms:
    """Histograms of one layer's nonzero activations in shared bins (0.5 to 99.5 percentile of
    both, outliers clipped into the end bins), and the fractions of exact zeros."""
    a = initial.ravel().astype(np.float64)
    b = trained.ravel().astype(np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    a_nz, b_nz = a[a != 0], b[b != 0]
    both = np.concatenate([a_nz, b_nz])
    lo, hi = np.percentile(both, [0.5, 99.5]) if both.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
    counts_a, _ = np.histogram(np.clip(a_nz, lo, hi), bins=edges)
    counts_b, _ = np.histogram(np.clip(b_nz, lo, hi), bins=edges)
    return LayerHistograms(
        layer=layer,
        edges=tuple(float(e) for e in edges),
        initial=tuple(int(c) for c in counts_a),
        trained=tuple(int(c) for c in counts_b),
        initial_zeros=float(np.mean(a == 0)) if a.size else 0.0,
        trained_zeros=float(np.mean(b == 0)) if b.size else 0.0,
    )


def build_snapshot(
    study: optuna.Study,
    spec: StudySpec,
    storage_url: str,
    *,
    split: Split | None = None,
    with_activations: bool = True,
) -> StudySnapshot:
    """Everything the report shows, read from the storage (and one retraining)."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    imp, imp_note = importances(study, len(complete))
    spread = None
    if imp:
        spread = importance_spread(complete, list(imp), np.random.default_rng(spec.search.seed))
    if split is None:
        split = load_study_split(spec)
    activations, activation_note = (), ""
    if with_activations and complete:
        best = max(complete, key=lambda t: (t.value, -t.number))
        activations = activation_histograms(spec, best, split)
        activation_note = (
            f"Trial #{best.number} trained again with its seed: each hidden layer's activations "
            f"on {min(ACTIVATION_SAMPLES, len(split.x_val))} validation inputs at initialization "
            "(top) and after training (bottom)."
        )
    return dataclasses.replace(
        trials_snapshot(study, spec, storage_url, trials=trials),
        **confirmed_fields(study, storage_url),
        split_sizes={
            "train": len(split.x_train),
            "validation": len(split.x_val),
            "test": len(split.x_test),
        },
        importances=imp,
        importance_spread=spread,
        importance_note=imp_note,
        test_accuracy=study.user_attrs.get(TEST_ACCURACY_ATTR),
        activations=activations,
        activation_note=activation_note,
        experiment=experiment_data(spec, trials, split),
    )


def confirmed_fields(study: optuna.Study, storage_url: str) -> dict:
    """The snapshot's ``confirmed``, ``confirm_verdict`` and ``confirm_command``: every
    configuration of the top that ``hpo confirm`` ran, ranked by mean."""
    companion = load_companion(
        open_storage(storage_url, write=False), study.study_name, create=False
    )
    runs = stored_runs(companion)
    items = [c for c in confirmations(study, runs, MAX_CONFIRM_TOP) if c.values]
    records = []
    for c in items:
        mean, low, high = c.interval
        records.append(
            ConfirmedRecord(
                trial=c.trial,
                params=c.params,
                mean=mean,
                low=low,
                high=high,
                values=tuple(c.values[i] for i in sorted(c.values)),
                rank=c.rank,
                search_value=c.search_value,
                search_rank=c.search_rank,
                p_vs_best=c.p_vs_best,
                tied=c.tied,
                diverged=c.diverged,
            )
        )
    options = ("--top", str(len(records) or 5), "--seeds", "5")  # more seeds for the same top
    return {
        "confirmed": tuple(records),
        "confirm_runs": tuple(
            dataclasses.replace(
                _record(r), source=r.user_attrs[SOURCE_ATTR], seed_index=r.user_attrs[SEED_ATTR]
            )
            for r in runs
        ),
        "confirm_verdict": verdict(items) if items else "",
        "confirm_command": command_line("confirm", study.study_name, storage_url, options=options),
    }


def trials_snapshot(
    study: optuna.Study,
    spec: StudySpec,
    storage_url: str,
    *,
    trials: list[optuna.trial.FrozenTrial] | None = None,
) -> StudySnapshot:
    """The study's trials (read now unless given) and spec alone: no data, nothing computed."""
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    return StudySnapshot(
        name=study.study_name,
        storage=mask_password(storage_url),
        spec=spec,
        split_sizes={},
        trials=tuple(_record(t) for t in trials),
        params=_param_infos(trials),
        generated=datetime.now(),
    )
