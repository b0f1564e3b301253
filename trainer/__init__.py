"""trainer: a from-scratch NumPy MultiLayerNet, its optimizers, datasets and training loop.

NumPy only (scikit-learn just for the bundled digits data): nothing here imports optuna or
matplotlib.
"""

from trainer.datasets import DatasetError, Split, load_split
from trainer.network import MultiLayerNet
from trainer.optimizers import OPTIMIZERS, make_optimizer
from trainer.training import EpochMetrics, TrainResult, train

__all__ = [
    "OPTIMIZERS",
    "DatasetError",
    "EpochMetrics",
    "MultiLayerNet",
    "Split",
    "TrainResult",
    "load_split",
    "make_optimizer",
    "train",
]
