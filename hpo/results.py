"""Reading results back: the top trials, the best one, and retraining it for a test accuracy."""

from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.errors import RunError
from hpo.paths import check_out_path
from hpo.records import run_facts
from hpo.spec import StudySpec
from hpo.urls import artifact_dir

TEST_ACCURACY_ATTR = "hpo:test_accuracy"


def top_trials(study: optuna.Study, k: int) -> list[dict[str, Any]]:
    """The ``k`` completed trials of highest value, best first (ties: the earlier trial)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    done.sort(key=lambda t: (-t.value, t.number))
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
    summary = {
        "study": study.study_name,
        "trial": best.number,
        "value": best.value,
        "params": dict(best.params),
        "best_epoch": run_facts(best).get("best_epoch"),
    }
    known = study.user_attrs.get(TEST_ACCURACY_ATTR, {})
    if known.get("trial") == best.number:
        summary["test_accuracy"] = known["test_accuracy"]
    return summary


def retrain_best(
    study: optuna.Study, spec: StudySpec, storage_url: str, *, export: str | None = None
) -> dict[str, Any]:
    """Retrain the best configuration on training + validation data, measure test accuracy.

    The retrained net runs for the best trial's best epoch count (there is no validation data
    left to choose epochs by) with the best trial's seed. The test accuracy is stored on the
    study; ``export`` writes the weights, the standardization and the configuration.
    """
    import numpy as np  # retraining only: reading the best trial imports no trainer

    from hpo.objective import configuration, train_configuration, trial_seed
    from hpo.service import load_study_split
    from trainer.checkpoint import save_checkpoint
    from trainer.training import evaluate

    summary = best_trial_summary(study)
    if export is not None:
        check_out_path(Path(export), flag="--export", example="best.npz")
    trial = study.get_trials(deepcopy=False)[summary["trial"]]
    config = configuration(spec, trial.params)
    split = load_study_split(spec)
    epochs = max(1, int(summary["best_epoch"] or spec.training.epochs))
    retrain_spec = _with_epochs(spec, epochs)
    net, result = train_configuration(
        retrain_spec,
        config,
        split,
        trial_seed(spec.search.seed, trial.number),
        x_train=np.concatenate([split.x_train, split.x_val]),
        y_train=np.concatenate([split.y_train, split.y_val]),
        restore_best=False,
    )
    if result.diverged:
        raise RunError(f"retraining trial #{trial.number} diverged; no test accuracy")
    test_accuracy = evaluate(net, split.x_test, split.y_test)[1]
    study.set_user_attr(
        TEST_ACCURACY_ATTR,
        {"trial": trial.number, "test_accuracy": test_accuracy, "epochs": epochs},
    )
    if export is not None:
        save_checkpoint(
            export,
            net,
            mean=split.mean,
            std=split.std,
            extra={
                "study": study.study_name,
                "trial": trial.number,
                "config": config,
                "test_accuracy": test_accuracy,
                "dataset": spec.data.dataset,
            },
        )
        summary["artifact_id"] = _store_artifact(study, trial, export, storage_url)
    return {**summary, "test_accuracy": test_accuracy}


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


def _with_epochs(spec: StudySpec, epochs: int) -> StudySpec:
    return replace(spec, training=replace(spec.training, epochs=epochs, patience=None))
