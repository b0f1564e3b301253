"""hpo: an Optuna study service over the NumPy networks of ``trainer``.

The only package that imports optuna. ``python -m hpo run`` searches a study spec's space,
trains each trial's configuration and stores every result in an RDB storage (SQLite by default).
From Python, the same service is ``hpo.run``, ``hpo.load``, ``hpo.best``, ``hpo.configuration``,
``hpo.retrain``, ``hpo.make_report``, ``hpo.spec_of`` and ``hpo.load_spec`` (``hpo.api``),
imported on first use, so that ``python -m hpo`` starts without them.
"""

__all__ = [
    "best",
    "configuration",
    "load",
    "load_spec",
    "make_report",
    "retrain",
    "run",
    "spec_of",
]


def __getattr__(name: str):
    if name in __all__:
        from hpo import api

        return getattr(api, name)
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")
