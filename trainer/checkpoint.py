"""Saving a trained MultiLayerNet with what it needs to predict, and loading it back.

A checkpoint is an ``.npz`` archive readable without pickle: ``state_0 ... state_K`` are the
arrays of ``MultiLayerNet.state()`` (parameters, then BatchNorm's running statistics), ``mean``
and ``std`` standardize raw inputs as in training, and ``meta`` is a JSON string holding the
net's ``architecture`` and any extra configuration (the hyperparameters, where it came from).
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainer.network import MultiLayerNet


def save_checkpoint(
    path: str | Path,
    net: MultiLayerNet,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``net`` and the input standardization to ``path`` (an ``.npz`` archive)."""
    meta = {"architecture": net.architecture, "extra": extra or {}}
    arrays = {f"state_{i}": a for i, a in enumerate(net.state())}
    np.savez(path, meta=np.array(json.dumps(meta)), mean=mean, std=std, **arrays)


def load_checkpoint(path: str | Path) -> tuple[MultiLayerNet, dict[str, Any]]:
    """The net saved at ``path`` and its metadata (``mean``, ``std``, ``extra`` included)."""
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        states = sorted(
            (k for k in archive.files if k.startswith("state_")), key=lambda k: int(k.split("_")[1])
        )
        state = [archive[k] for k in states]
        mean, std = archive["mean"], archive["std"]
    arch = dict(meta["architecture"])
    dtype = np.dtype(arch.pop("dtype"))
    # The generator only seeds weights that load_state overwrites at once.
    net = MultiLayerNet(**arch, dtype=dtype, rng=np.random.default_rng(0))
    net.load_state(state)
    return net, {"mean": mean, "std": std, "extra": meta["extra"]}


def predict_raw(net: MultiLayerNet, meta: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Class predictions (N,) for raw inputs ``x`` (N, ...), standardized as in training."""
    x = x.reshape(len(x), -1).astype(np.float64)
    return np.argmax(net.predict(((x - meta["mean"]) / meta["std"]).astype(net.dtype)), axis=1)
