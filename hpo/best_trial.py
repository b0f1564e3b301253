"""The best trial and any stored trial read back: the top trials, the best one retrained for a
test accuracy, the ``python -m trainer`` line that retrains a trial, and verifying bit for bit."""

import math
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from hpo.errors import RunError, UsageError
from hpo.paths import check_out_path, written_whole
from hpo.pruning import Thresholds
from hpo.records import ranked, run_facts
from hpo.spec import StudySpec
from hpo.urls import artifact_dir

if TYPE_CHECKING:
    from trainer.config import RunConfig

TEST_ACCURACY_ATTR = "hpo:test_accuracy"


def top_trials(study: optuna.Study, k: int) -> list[dict[str, Any]]:
    """The ``k`` completed trials of highest value, best first (ties: the earlier trial)."""
    done = ranked(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return [
        {
            "trial": t.number,
            "value": t.value,
            "best_epoch": run_facts(t).get("best_epoch"),
            "train_accuracy": run_facts(t).get("train_accuracy"),
            "params": dict(t.params),
        }
        for t in done[:k]
    ]


def best_trial_summary(study: optuna.Study) -> dict[str, Any]:
    """``study``, ``trial``, ``value``, ``params`` (and ``test_accuracy`` when known)."""
    try:
        best = study.best_trial  # one query for the best: no read of every trial
    except ValueError:
        raise RunError(f"study {study.study_name!r} has no completed trial yet") from None
    return _summary(study, best)


def _summary(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    summary = {
        "study": study.study_name,
        "trial": trial.number,
        "value": trial.value,
        "params": dict(trial.params),
        "best_epoch": run_facts(trial).get("best_epoch"),
    }
    known = study.user_attrs.get(TEST_ACCURACY_ATTR, {})
    if known.get("trial") == trial.number:
        summary["test_accuracy"] = known["test_accuracy"]
        if known.get("test_accuracies"):  # retrained over seeds: the mean, each and interval
            summary["test_accuracies"] = known["test_accuracies"]
            summary["test_interval"] = known.get("test_interval")
    return summary


def retrain_best(
    study: optuna.Study,
    spec: StudySpec,
    storage_url: str,
    *,
    export: str | None = None,
    trial: int | None = None,
    seeds: int | None = None,
    progress: Callable[[float, int], None] | None = None,
) -> dict[str, Any]:
    """Retrain the best configuration (or trial ``trial``'s) on training + validation data and
    measure its test accuracy.

    The retrained net runs for the trial's best epoch count (there is no validation data left
    to choose epochs by), with the trial's own seed, or with ``seeds`` fresh seeds (``hpo
    confirm``'s first ``seeds``): then ``test_accuracy`` is their mean and the summary (and
    what is stored with the study) adds ``test_accuracies``, each seed's, and
    ``test_interval``, the mean's 95% Student-t interval within [0, 1] (None with one seed).
    ``progress(done, total)`` follows the seeds, each epoch a fraction of one. ``export``
    writes the first seed's net (its weights, the standardization and the configuration, with
    that net's own test accuracy).
    """
    import numpy as np  # retraining only: reading the best trial imports no trainer

    from hpo.confirm import confirm_seed
    from hpo.trial import configuration, load_training_split, trial_seed
    from reports.summary import accuracy_interval
    from trainer.checkpoint import save_checkpoint
    from trainer.training import evaluate

    if trial is None:
        summary = best_trial_summary(study)
        chosen = study.get_trials(deepcopy=False)[summary["trial"]]
    else:
        chosen = _completed_trial(study, trial)
        summary = _summary(study, chosen)
    if export is not None:
        check_out_path(Path(export), flag="--export", example="best.npz")
    run = configuration(spec, chosen.params)
    split = load_training_split(spec)
    epochs = max(1, int(summary["best_epoch"] or run.training.epochs))
    run = replace(run, training=replace(run.training, epochs=epochs, patience=None))
    if seeds is None:
        seed_sequences = [trial_seed(spec.search.seed, chosen.number)]
    else:
        seed_sequences = [confirm_seed(spec.search.seed, i) for i in range(seeds)]
    accuracies, net = [], None
    if progress is not None:
        progress(0, len(seed_sequences))
    for i, seed in enumerate(seed_sequences):

        def epoch_ended(metrics, i=i) -> None:  # the bar moves per epoch: a seed takes minutes
            progress(i + metrics.epoch / epochs, len(seed_sequences))

        trained, result = run.train(
            split,
            seed,
            x_train=np.concatenate([split.x_train, split.x_val]),
            y_train=np.concatenate([split.y_train, split.y_val]),
            restore_best=False,
            on_epoch_end=None if progress is None else epoch_ended,
        )
        if result.diverged:
            which = "" if seeds is None else f" with seed {i}"
            raise RunError(f"retraining trial #{chosen.number}{which} diverged; no test accuracy")
        accuracies.append(evaluate(trained, split.x_test, split.y_test)[1])
        if net is None:
            net = trained  # the one exported
        if progress is not None:
            progress(i + 1, len(seed_sequences))
    test_accuracy, low, high = accuracy_interval(accuracies)
    stored = {"trial": chosen.number, "test_accuracy": test_accuracy, "epochs": epochs}
    if seeds is not None:
        stored["test_accuracies"] = accuracies
        stored["test_interval"] = None if math.isnan(low) else [low, high]
    study.set_user_attr(TEST_ACCURACY_ATTR, stored)
    if export is not None:
        extra = {
            "study": study.study_name,
            "trial": chosen.number,
            "config": asdict(run),
            "test_accuracy": accuracies[0],  # the exported net's own
            "seed": list(seed_sequences[0].entropy),
            "dataset": spec.data.dataset,
        }
        network = None
        if run.net.network is not None:
            network = {
                "network": run.net.network,
                "args": dict(run.net.args),
                "n_classes": split.n_classes,
            }
        try:  # whole or not at all: a full disk leaves no truncated archive
            with written_whole(export, suffix=".npz") as temporary:
                save_checkpoint(
                    temporary,
                    net,
                    mean=split.mean,
                    std=split.std,
                    extra=extra,
                    network=network,
                )
        except OSError as e:
            raise RunError(f"cannot write --export {export} ({e.strerror or e})") from None
        summary["artifact_id"] = _store_artifact(study, chosen, export, storage_url)
    summary["test_accuracy"] = test_accuracy
    if seeds is not None:
        summary["test_accuracies"] = accuracies
        summary["test_interval"] = stored["test_interval"]
    return summary


def _completed_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """Trial ``number``, which must have completed: its best epoch says how long to retrain."""
    trials = study.get_trials(deepcopy=False)
    if number < len(trials) and trials[number].state == TrialState.COMPLETE:
        return trials[number]
    completed = [t.number for t in trials if t.state == TrialState.COMPLETE]
    what = (
        f"trial #{number} is {trials[number].state.name.lower()}"
        if number < len(trials)
        else ("no such trial")
    )
    allowed = (
        f"a completed trial's number, {_ranges(completed)}" if completed else "none completed yet"
    )
    raise UsageError(f"--trial {number}: {what} (allowed: {allowed})")


def _store_artifact(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, path: str, storage_url: str
) -> str:
    """Attach the exported weights to the study as an Optuna artifact, which the dashboard
    lists (a finished trial cannot take new attributes, so the study holds it); the file is
    copied into the artifact directory."""
    directory = artifact_dir(storage_url)
    directory.mkdir(parents=True, exist_ok=True)
    store = optuna.artifacts.FileSystemArtifactStore(directory)
    return optuna.artifacts.upload_artifact(
        artifact_store=store, file_path=path, study_or_trial=study
    )


@dataclass(frozen=True)
class Verification:
    """The outcome of retraining a stored trial and comparing every stored epoch value.

    ``compared`` counts the values compared (validation accuracy and the four curves, each
    epoch); ``difference`` is the first that differs (``epoch``, ``what``, ``stored``,
    ``retrained``), None when all agree bit for bit; ``environment`` lists what differs between
    the trial's stored environment and this process's (``hpo.reproduction``).
    """

    trial: int
    epochs: int
    compared: int
    difference: dict[str, Any] | None
    environment: list[str]
    seconds: float

    @property
    def reproduced(self) -> bool:
        return self.difference is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "reproduced": self.reproduced,
            "epochs": self.epochs,
            "compared": self.compared,
            "difference": self.difference,
            "environment_differs": self.environment,
            "seconds": round(self.seconds, 3),
        }

    def message(self) -> str:
        if self.reproduced:
            return (
                f"trial #{self.trial} reproduces bit for bit: {self.compared} stored values "
                f"({self.epochs} epochs of validation accuracy, losses and accuracies) retrained "
                f"in {self.seconds:.1f} s"
            )
        d = self.difference
        cause = (
            "; differs from the stored environment: " + "; ".join(self.environment)
            if self.environment
            else "; the split, NumPy and the BLAS are the same as stored (the training is not "
            "deterministic here: please report it)"
        )
        return (
            f"trial #{self.trial} does not reproduce: epoch {d['epoch']} {d['what']} "
            f"{d['stored']!r} stored, {d['retrained']!r} retrained{cause}"
        )


def retraining_facts(trial: optuna.trial.FrozenTrial) -> tuple[dict[str, Any], int | None]:
    """The stored facts a retraining of ``trial`` needs (its seed, its epochs), and the epoch
    it was pruned at (None: it ran to its end or diverged, which a retraining repeats)."""
    facts = run_facts(trial)
    if "seed" not in facts or "epochs_run" not in facts:
        raise RunError(f"trial #{trial.number} stored no seed: it cannot be retrained")
    pruned = trial.state == TrialState.PRUNED and not facts.get("diverged")
    return facts, int(facts["epochs_run"]) if pruned else None


def finished_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    """Trial ``number`` of ``study`` (default: its best), which must have finished."""
    if number is None:
        number = best_trial_summary(study)["trial"]
    trials = study.get_trials(deepcopy=False)
    finished = [t.number for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if number not in finished:
        allowed = (
            f"a finished trial's number, {_ranges(finished)}" if finished else "none finished yet"
        )
        raise UsageError(f"--trial: {number} (allowed: {allowed})")
    return trials[number]


@dataclass(frozen=True)
class _StopAfter(Thresholds):
    """Prune after epoch ``epoch``: where a pruned trial was stopped (no epoch: never)."""

    epoch: int | None

    def should_prune(self, values) -> bool:
        return self.epoch is not None and max(values) >= self.epoch


def verify_trial(study: optuna.Study, spec: StudySpec, number: int | None = None) -> Verification:
    """Retrain trial ``number`` (default: the best) as a worker trains it (``run_task`` from its
    stored configuration and seed, one BLAS thread), stopped where it was pruned, and compare
    every stored epoch value with the retrained one, bit for bit."""
    from threadpoolctl import threadpool_limits

    from hpo.executors import ONE_BLAS_THREAD
    from hpo.reproduction import ENV_FACT, differences, environment
    from hpo.trial import TrialTask, configuration, load_training_split, run_task

    trial = finished_trial(study, number)
    facts, pruned_at = retraining_facts(trial)
    split = load_training_split(spec)
    task = TrialTask(
        trial.number, configuration(spec, trial.params), tuple(facts["seed"]), _StopAfter(pruned_at)
    )
    with threadpool_limits(limits=ONE_BLAS_THREAD, user_api="blas"):
        result = run_task(task, spec, split)
    what = "validation accuracy (intermediate value)"
    stored = [(what, dict(trial.intermediate_values))]
    retrained = {what: result.intermediate_values}
    for name, curve in (facts.get("curves") or {}).items():
        stored.append((name, dict(enumerate(curve, start=1))))
        retrained[name] = dict(enumerate(result.facts["curves"].get(name, []), start=1))
    compared, difference = 0, None
    epochs = sorted(
        {e for _, by_epoch in stored for e in by_epoch} | set(result.intermediate_values)
    )
    for epoch in epochs:  # the first epoch that differs, in any of the values
        for what, by_epoch in stored:
            a, b = by_epoch.get(epoch), retrained[what].get(epoch)
            compared += a is not None
            if difference is None and not _same_bits(a, b):
                difference = {"epoch": epoch, "what": what, "stored": a, "retrained": b}
    if trial.state == TrialState.COMPLETE and difference is None:
        compared += 1
        if not _same_bits(trial.value, result.value):
            difference = {
                "epoch": result.facts["best_epoch"],
                "what": "value (best validation accuracy)",
                "stored": trial.value,
                "retrained": result.value,
            }
    return Verification(
        trial=trial.number,
        epochs=len(epochs),
        compared=compared,
        difference=difference,
        environment=differences(facts.get(ENV_FACT), environment(split, spec.model.network)),
        seconds=result.seconds,
    )


def _same_bits(a: float | None, b: float | None) -> bool:
    """The same float, bit for bit (any NaN equals any NaN: storage keeps no NaN payload)."""
    if a is None or b is None:
        return a is None and b is None
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return struct.pack("<d", a) == struct.pack("<d", b)


def _ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5`` (at most a few runs shown)."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs]
    return ", ".join(shown[:6]) + (", ..." if len(shown) > 6 else "")


def retraining_run(spec: StudySpec, trial: optuna.trial.FrozenTrial) -> "RunConfig":
    """The run that trains ``trial`` again: its configuration, stopped at the epoch it was
    pruned at (what ``best --command`` prints and ``hpo.retrain`` trains)."""
    from hpo.trial import configuration

    _, pruned_at = retraining_facts(trial)
    run = configuration(spec, trial.params)
    if pruned_at is None:
        return run
    return replace(run, training=replace(run.training, epochs=pruned_at))


def trainer_command(
    study: optuna.Study, spec: StudySpec, number: int | None = None
) -> dict[str, Any]:
    """The ``python -m trainer`` line that retrains trial ``number`` (default: the best) from
    its configuration and seed: every flag spelled out, and ``--epochs`` where it was pruned.

    Returns ``trial``, ``state``, ``value`` (its best validation accuracy: a pruned trial's
    highest epoch value, 0 when it diverged in its first) and ``argv``; the line's
    ``best_val_accuracy`` equals ``value``.
    """
    trial = finished_trial(study, number)
    facts, _ = retraining_facts(trial)
    run = retraining_run(spec, trial)
    pruned = trial.state == TrialState.PRUNED
    values = dict(trial.intermediate_values)
    if facts.get("diverged"):  # the 0 stored where it diverged is no epoch's accuracy
        values.pop(int(facts["epochs_run"]) + 1, None)
    value = trial.value if not pruned else max(values.values(), default=0.0)
    return {
        "trial": trial.number,
        "state": "pruned" if pruned else "complete",
        "value": value,
        "argv": ["python", "-m", "trainer", *run.flags(tuple(facts["seed"]))],
    }
