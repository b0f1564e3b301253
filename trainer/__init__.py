"""trainer: a from-scratch NumPy MultiLayerNet, its optimizers, datasets and training loop.

NumPy only (scikit-learn just for the bundled digits data): nothing here imports optuna or
matplotlib.
"""

import importlib

_HOMES = {
    "DatasetError": "trainer.sources",
    "Split": "trainer.datasets",
    "load_split": "trainer.datasets",
    "MultiLayerNet": "trainer.network",
    "OPTIMIZERS": "trainer.optimizers",
    "make_optimizer": "trainer.optimizers",
    "EpochMetrics": "trainer.training",
    "TrainResult": "trainer.training",
    "train": "trainer.training",
}
"""Where each public name lives; imported on first use, so that a command line that only needs
``trainer.sources`` or ``trainer.console`` starts without NumPy."""

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
