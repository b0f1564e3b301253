"""Saving a trained net with what it needs to predict, and loading it back.

A checkpoint is an ``.npz`` archive readable without pickle: ``mean`` and ``std`` standardize
raw inputs as in training, and ``meta`` is a JSON string holding any extra configuration (the
hyperparameters, where it came from). For the built-in MultiLayerNet, ``state_0 ... state_K``
are the arrays of ``MultiLayerNet.state()`` (parameters, then BatchNorm's running statistics)
and ``meta`` holds its ``architecture``; for a learner's own net (``trainer.contract``),
``param:KEY`` is each entry of its ``params`` under its own key, ``state_0 ... state_K`` its
own ``state()`` when it defines one (BatchNorm's running averages kept in its layers), and
``meta`` names its class (``network``) and constructor ``args``. A learner's net that keeps
state outside ``params`` and defines no ``state()`` is saved without it.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainer.contract import AdaptedNet, Trainable
from trainer.network import MultiLayerNet

PARAM = "param:"


def save_checkpoint(
    path: str | Path,
    net: Trainable,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    extra: dict[str, Any] | None = None,
    network: dict[str, Any] | None = None,
) -> None:
    """Write ``net`` and the input standardization to ``path`` (an ``.npz`` archive); a
    learner's net (an ``AdaptedNet``) with what builds it again: ``network`` holds its
    reference (``network``), constructor ``args`` and ``n_classes``."""
    if isinstance(net, AdaptedNet):
        meta = {**(network or {}), "extra": extra or {}}
        arrays = {PARAM + k: v for k, v in net.named_params().items()}
        if net.own_state:
            arrays |= {f"state_{i}": a for i, a in enumerate(net.state())}
    else:
        meta = {"architecture": net.architecture, "extra": extra or {}}
        arrays = {f"state_{i}": a for i, a in enumerate(net.state())}
    np.savez(path, meta=np.array(json.dumps(meta)), mean=mean, std=std, **arrays)


def load_checkpoint(path: str | Path) -> tuple[Trainable, dict[str, Any]]:
    """The net saved at ``path`` and its metadata (``mean``, ``std``, ``extra`` included). A
    learner's net is built again from its ``network`` file (which must be where it was) and
    its ``params`` overwritten with the saved ones."""
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        states = sorted(
            (k for k in archive.files if k.startswith("state_")), key=lambda k: int(k.split("_")[1])
        )
        state = [archive[k] for k in states]
        params = {k[len(PARAM) :]: archive[k] for k in archive.files if k.startswith(PARAM)}
        mean, std = archive["mean"], archive["std"]
    info = {"mean": mean, "std": std, "extra": meta["extra"]}
    rng = np.random.default_rng(0)  # only seeds weights that the saved ones overwrite at once
    if "network" in meta:
        from trainer.contract import build_network, load_network

        global_state = np.random.get_state()  # noqa: NPY002 - building seeds it: restored
        try:
            net = build_network(
                load_network(meta["network"]),
                meta["args"],
                n_features=len(np.ravel(mean)),
                n_classes=meta["n_classes"],
                rng=rng,
            )
        finally:
            np.random.set_state(global_state)  # noqa: NPY002
        for key, value in params.items():
            net.net.params[key][...] = value
        if state and net.own_state:
            net.load_state(state)
        return net, info
    arch = dict(meta["architecture"])
    dtype = np.dtype(arch.pop("dtype"))
    net = MultiLayerNet(**arch, dtype=dtype, rng=rng)
    net.load_state(state)
    return net, info


def predict_raw(net: Trainable, meta: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Class predictions (N,) for raw inputs ``x`` (N, ...), standardized as in training."""
    x = x.reshape(len(x), -1).astype(np.float64)
    dtype = getattr(net, "dtype", np.float32)
    return np.argmax(net.predict(((x - meta["mean"]) / meta["std"]).astype(dtype)), axis=1)
