"""hpo from Python: a script's or a notebook's session, the same service as ``python -m hpo``.

::

    import hpo

    study = hpo.run("default", trials=20)           # an optuna.Study, stored in ./hpo.db
    hpo.best(study)                                 # {"trial": 17, "value": 0.98, "params": ...}
    run = hpo.configuration(study)                  # the best trial as a trainer RunConfig
    net, result = hpo.retrain(study)                # its net, trained again bit for bit
    hpo.make_report(study)                          # Path("hpo-report-default.html")

``run`` trains in the calling process by default (``workers=1``): a notebook or a script needs
nothing more. With ``workers=N`` it starts N worker processes, which import the calling script
again; a script then needs its calls under ``if __name__ == "__main__":``, and without one
each worker stops at once and ``run`` raises one ``RunError`` that says so.

Errors are ``hpo.errors.HPOError``: ``UsageError`` for bad input (a spec, a storage, a net),
``RunError`` for a failure at run time; each message is one line. A Ctrl-C stops the run,
keeps every finished trial and raises ``KeyboardInterrupt``.
"""

import signal
import sys
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import RunError
from hpo.interrupts import INTERRUPTS
from hpo.spec import StudySpec, load_spec
from hpo.urls import resolve_url

if TYPE_CHECKING:
    import optuna

    from trainer.config import RunConfig
    from trainer.contract import Trainable
    from trainer.training import TrainResult

_URLS: "weakref.WeakKeyDictionary[optuna.Study, str]" = weakref.WeakKeyDictionary()
"""Where each study ``run`` returned lives, so that the other functions need no storage."""


def run(
    spec: str | StudySpec = "default",
    *,
    storage: str | None = None,
    study: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    dask: str | None = None,
    progress: bool = False,
) -> "optuna.Study":
    """Create or resume the study of ``spec`` and run it to its target, as ``hpo run`` does.

    Args:
        spec: a packaged spec's name, a ``.toml`` path, or a ``StudySpec`` (``load_spec``).
        storage: the storage URL (default: ``$HPO_STORAGE``, else ``sqlite:///hpo.db``).
        study: the study's name (default: the spec's).
        trials: the target of finished trials (default: the spec's ``search.trials``); a
            study that has them already runs nothing more.
        timeout: seconds after which no new trial starts.
        workers: trials at once; 1 trains in this process, more in as many worker processes.
        dask: a Dask scheduler's address: its workers train the trials instead.
        progress: show a progress bar on stderr.

    Returns:
        The Optuna study, with every trial, its intermediate values and ``run`` facts.
    """
    if sys.modules.get("__mp_main__", sys.modules["__main__"]) is not sys.modules["__main__"]:
        # A spawned worker running the calling script again (multiprocessing runs it as
        # __mp_main__): it has no __main__ guard. Stop here, with the code the executor turns
        # into one line (hpo.executors).
        from hpo.executors import UNGUARDED_SCRIPT_EXIT

        raise SystemExit(UNGUARDED_SCRIPT_EXIT)
    from hpo.cli import ProgressBar
    from hpo.records import load_hpo_study
    from hpo.service import run_study

    if not isinstance(spec, StudySpec):
        spec = load_spec(str(spec))
    url = resolve_url(storage)
    bar = ProgressBar(quiet=not progress, label=study or spec.name)
    with _session():
        try:
            summary = run_study(
                spec,
                storage_url=url,
                study_name=study,
                trials=trials,
                timeout=timeout,
                workers=workers,
                in_process=workers == 1 and dask is None,
                dask=dask,
                progress=bar,
            )
        finally:
            bar.close()
        result, _ = load_hpo_study(storage_url=url, study_name=summary.study_name, write=False)
    _URLS[result] = url
    return result


def load(study: str, *, storage: str | None = None) -> "optuna.Study":
    """An existing study from the storage (default: ``$HPO_STORAGE`` or ``sqlite:///hpo.db``)."""
    from hpo.records import load_hpo_study

    url = resolve_url(storage)
    with _session():
        result, _ = load_hpo_study(storage_url=url, study_name=study, write=False)
    _URLS[result] = url
    return result


def best(study: "optuna.Study") -> dict[str, Any]:
    """The best trial: ``study``, ``trial``, ``value``, ``params``, ``best_epoch`` (and
    ``test_accuracy`` once ``hpo best --retrain`` measured it), as ``hpo best --json``."""
    from hpo.best_trial import best_trial_summary

    return best_trial_summary(study)


def spec_of(study: "optuna.Study") -> StudySpec:
    """The spec the study was created with, as stored with it."""
    from hpo.records import load_hpo_study

    with _session():
        return load_hpo_study(storage_url=_url(study), study_name=study.study_name, write=False)[1]


def configuration(study: "optuna.Study", trial: int | None = None) -> "RunConfig":
    """Trial ``trial``'s run (default: the best's) as the trainer's typed ``RunConfig``: its
    data, net and training, which ``python -m trainer`` and ``retrain`` train."""
    from hpo.best_trial import finished_trial
    from hpo.trial import configuration as run_of

    return run_of(spec_of(study), finished_trial(study, trial).params)


def retrain(study: "optuna.Study", trial: int | None = None) -> tuple["Trainable", "TrainResult"]:
    """Train trial ``trial`` (default: the best) again from its configuration and seed, on
    one BLAS thread as the trials trained: its net and the ``TrainResult``, whose history is
    the stored one bit for bit (``hpo best --verify`` checks that)."""
    from threadpoolctl import threadpool_limits

    from hpo.best_trial import finished_trial, retraining_run
    from hpo.executors import ONE_BLAS_THREAD
    from hpo.records import run_facts
    from hpo.trial import load_training_split

    spec = spec_of(study)
    chosen = finished_trial(study, trial)
    run = retraining_run(spec, chosen)  # stopped where the pruner stopped it
    import numpy as np

    with _session():
        split = load_training_split(spec)
        with threadpool_limits(limits=ONE_BLAS_THREAD, user_api="blas"):
            return run.train(split, np.random.SeedSequence(run_facts(chosen)["seed"]))


def make_report(study: "optuna.Study", out: str | Path | None = None, *, top_k: int = 10) -> Path:
    """Write the study's HTML report (default: ``hpo-report-STUDY.html`` here); its path.
    (``hpo.pages`` is the module that writes it.)"""
    from hpo.pages import make_report as write

    with _session():
        return write(study, spec_of(study), _url(study), out=out, top_k=top_k)


def _url(study: "optuna.Study") -> str:
    url = _URLS.get(study)
    if url is None:
        raise RunError(
            f"study {study.study_name!r} was not opened by hpo.run or hpo.load (allowed: "
            "hpo.load(NAME, storage=URL) first)"
        )
    return url


class _session:
    """Ctrl-C, SIGTERM and SIGHUP stop the work between two steps; the storage is closed
    (SQLite's WAL folded) however it ends, so that the database file alone holds every finished
    trial. Ctrl-C then raises KeyboardInterrupt; SIGTERM and SIGHUP are delivered again to the
    process's own handlers (by default: the process ends with 143 or 129; a handler of the
    caller's that returns is followed by the KeyboardInterrupt that stopped the work)."""

    def __enter__(self) -> None:
        self.owner = not INTERRUPTS.installed  # a caller's own session stays theirs
        if self.owner:
            INTERRUPTS.install()
            INTERRUPTS.exit_on_second = False  # a second interrupt raises: a kernel lives on

    def __exit__(self, *exc) -> None:
        from hpo.storage import close_storages

        close_storages()
        if self.owner:
            first = INTERRUPTS.first
            INTERRUPTS.uninstall()
            INTERRUPTS.exit_on_second = True
            if first in (signal.SIGTERM, signal.SIGHUP):
                # Held only to stop between two steps: now that every finished trial is
                # stored, the signal does what the process had it do (by default, end it
                # with 143 or 129), not what a Ctrl-C does.
                signal.raise_signal(first)
