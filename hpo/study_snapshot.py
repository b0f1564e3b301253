"""From a study in the storage to a report's plain data (``reports.snapshot.StudySnapshot``).

This is where the Optuna objects end: importance is computed here (Optuna 5's default
evaluator, PED-ANOVA), and the best configuration is trained again with its own seed to show its
activations at initialization and after training. ``reports`` then draws and renders
(``hpo.pages`` writes the pages).
"""

import dataclasses
import math
import warnings
from collections.abc import Callable
from datetime import datetime

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hpo.activations import ACTIVATION_SAMPLES, HISTOGRAM_BINS, hidden_activations, trial_net
from hpo.allowed import MAX_CONFIRM_TOP
from hpo.best_trial import TEST_ACCURACY_ATTR
from hpo.confirm import (
    SEED_ATTR,
    SOURCE_ATTR,
    confirmations,
    load_companion,
    stored_runs,
    verdict,
)
from hpo.experiment_data import experiment_data
from hpo.records import ranked, run_facts
from hpo.spec import StudySpec
from hpo.storage import open_storage
from hpo.trial import configuration, load_study_split, trial_seed
from hpo.urls import command_line, mask_password
from reports.snapshot import (
    ConfirmedRecord,
    FirstLayer,
    LayerHistograms,
    ParamInfo,
    SanityChecks,
    SpaceEntry,
    SpecFacts,
    StudySnapshot,
    TrialRecord,
)
from trainer.datasets import Split
from trainer.training import evaluate


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
        queued_seconds=attrs.get("queued_seconds"),
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


RESAMPLES = 20
SUBSAMPLE_FRACTION = 0.8
SUBSAMPLE_MAX_TRIALS = 500
"""Importance is measured on 20 random subsamples of the complete trials, each 80% of them
(at most 500) drawn without replacement: a trial counted twice (a bootstrap's duplicates)
skews PED-ANOVA's density estimates, which put the full-data value outside its own bootstrap
range. The bar is the median over the subsamples, its whiskers their 5th and 95th percentiles,
so that the bar always lies within its range."""


def importance_spread(
    complete: list[optuna.trial.FrozenTrial], names: list[str], rng: np.random.Generator
) -> tuple[dict[str, float], dict[str, tuple[float, float]]] | None:
    """Per parameter, the median importance over subsamples of the complete trials and its
    5th and 95th percentiles (a parameter absent from a subsample's result counts 0); None
    when there are too few trials to subsample."""
    if len(complete) < 5:
        return None
    size = min(int(len(complete) * SUBSAMPLE_FRACTION), SUBSAMPLE_MAX_TRIALS)
    draws: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(RESAMPLES):
        subsample = optuna.create_study(direction="maximize")  # in memory
        chosen = rng.choice(len(complete), size=size, replace=False)
        subsample.add_trials([complete[i] for i in sorted(chosen)])
        try:
            values = _importances(subsample)
        except (RuntimeError, ValueError):
            continue  # a subsample whose trials share one value of every parameter
        for name in names:
            draws[name].append(values.get(name, 0.0))
    if not all(draws.values()):
        return None
    medians = {name: float(np.median(v)) for name, v in draws.items()}
    ranges = {
        name: (float(np.percentile(v, 5)), float(np.percentile(v, 95))) for name, v in draws.items()
    }
    return dict(sorted(medians.items(), key=lambda kv: -kv[1])), ranges


def activation_histograms(
    spec: StudySpec,
    trial: optuna.trial.FrozenTrial,
    split: Split,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[tuple[LayerHistograms, ...], FirstLayer | None]:
    """Retrain ``trial``'s configuration with its seed; histogram each hidden layer's
    activations on validation inputs at initialization and after training; and the trained
    net's first-layer weights as images (``first_layer``). ``progress(epoch, epochs)`` follows
    the retraining (minutes on Fashion-MNIST)."""
    run, net, rng = trial_net(spec, trial.params, trial.number, split)
    before = hidden_activations(net, split)
    epochs = run.training.epochs

    def epoch_ended(metrics) -> None:
        progress(metrics.epoch, epochs)

    if progress is not None:
        progress(0, epochs)

    # The loop silences a diverging net's overflow itself.
    run.fit(net, split, rng, on_epoch_end=None if progress is None else epoch_ended)
    if progress is not None:
        progress(epochs, epochs)  # done, though patience may have stopped it sooner
    after = hidden_activations(net, split)
    layers = []
    for i, (a, b) in enumerate(zip(before, after, strict=True), start=1):
        layers.append(layer_histograms(i, a, b))
    return tuple(layers), first_layer(trial.number, net)


FIRST_LAYER_UNITS = 36
"""Hidden units whose incoming weights the report draws (a 6 x 6 grid)."""


def first_layer(trial: int, net) -> FirstLayer | None:
    """The first ``FIRST_LAYER_UNITS`` units' incoming weights of the built-in net's first
    layer as square images; None when the inputs are not a square image (8x8 digits and 28x28
    MNIST are)."""
    W = net.affines[0].params["W"]  # (D, H)
    side = math.isqrt(W.shape[0])
    if side * side != W.shape[0] or side < 4:
        return None
    units = W[:, :FIRST_LAYER_UNITS].T.astype(np.float64)  # (units, D)
    return FirstLayer(trial, side, tuple(tuple(float(v) for v in u) for u in units))


OVERFIT_SAMPLES = 20
OVERFIT_EPOCHS = 100


def sanity_checks(spec: StudySpec, trial: optuna.trial.FrozenTrial, split: Split) -> SanityChecks:
    """cs231n's sanity checks on ``trial``'s configuration with weight decay and dropout off:
    the untrained net's loss on the training rows (about ln(classes) when the weights start
    small), and whether it overfits ``OVERFIT_SAMPLES`` training rows in ``OVERFIT_EPOCHS``
    epochs (it should reach 100%: else a bug, too small a net or too small a learning rate)."""
    run = configuration(spec, trial.params)
    run = dataclasses.replace(
        run,
        net=dataclasses.replace(run.net, weight_decay=0.0, dropout_ratio=0.0),
        training=dataclasses.replace(
            run.training, epochs=OVERFIT_EPOCHS, patience=None, lr_decay=1.0
        ),
    )
    net, rng = run.build(split, trial_seed(spec.search.seed, trial.number))
    with np.errstate(all="ignore"):
        initial_loss = evaluate(net, split.x_train, split.y_train)[0]
    rows = np.sort(
        np.random.default_rng(spec.data.seed).choice(
            len(split.y_train), size=min(OVERFIT_SAMPLES, len(split.y_train)), replace=False
        )
    )
    x, y = split.x_train[rows], split.y_train[rows]
    tiny = dataclasses.replace(split, x_val=x, y_val=y)  # no full-split evaluation per epoch
    result = run.fit(net, tiny, rng, x_train=x, y_train=y, restore_best=False)
    accuracy = result.history.train_accuracy[-1] if result.history.train_accuracy else 0.0
    return SanityChecks(
        trial=trial.number,
        classes=split.n_classes,
        initial_loss=float(initial_loss),
        overfit_samples=len(rows),
        overfit_epochs=result.epochs_run,
        overfit_accuracy=float(accuracy),
        overfit_diverged=result.diverged,
    )


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
    progress: Callable[[int, int], None] | None = None,
) -> StudySnapshot:
    """Everything the report shows, read from the storage (and one retraining, which
    ``progress(epoch, epochs)`` follows)."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    imp, imp_note = importances(study, len(complete))
    spread = None
    if imp:
        measured = importance_spread(complete, list(imp), np.random.default_rng(spec.search.seed))
        if measured is not None:
            imp, spread = measured
    if split is None:
        split = load_study_split(spec)
    confirmed = confirmed_fields(study, storage_url)
    activations, activation_note, first, sanity = (), "", None, None
    if spec.user_network:
        activation_note = (
            "Activation histograms are drawn for the built-in net only: the report reads "
            "stored results and never runs your network's code."
        )
    elif with_activations and complete:
        best = ranked(complete)[0]
        if confirmed["confirmed"]:  # the report is about the confirmed best
            best = trials[confirmed["confirmed"][0].trial]
        activations, first = activation_histograms(spec, best, split, progress=progress)
        sanity = sanity_checks(spec, best, split)
        which = "the confirmed best, " if confirmed["confirmed"] else ""
        activation_note = (
            f"Trial #{best.number} ({which}trained again with its seed): each hidden layer's "
            "activations "
            f"on {min(ACTIVATION_SAMPLES, len(split.x_val))} validation inputs at initialization "
            "(top) and after training (bottom)."
        )
    return dataclasses.replace(
        trials_snapshot(study, spec, storage_url, trials=trials),
        **confirmed,
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
        first_layer=first,
        sanity=sanity,
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


def spec_facts(spec: StudySpec) -> SpecFacts:
    """What the report states about ``spec``: ``reports`` reads these plain facts, never the
    spec itself."""
    return SpecFacts(
        description=spec.description,
        dataset=spec.data.dataset,
        model=spec.model_text(),
        activation=spec.model.activation,
        epochs=spec.max_epochs(),
        batch_size=spec.training.batch_size,
        user_network=spec.user_network,
        sampler=spec.search.sampler,
        pruner=spec.search.pruner,
        seed=spec.search.seed,
        warmup_epochs=spec.search.warmup_epochs,
        space=tuple(SpaceEntry(**dataclasses.asdict(p)) for p in spec.space),
        definition=spec.to_dict(),
        fingerprint=spec.objective_fingerprint(),
    )


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
        spec=spec_facts(spec),
        split_sizes={},
        trials=tuple(_record(t) for t in trials),
        params=_param_infos(trials),
        generated=datetime.now(),
    )
