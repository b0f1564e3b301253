"""What a trial's values depend on besides its configuration and seed, stored with each trial.

A trial is a pure function of its task, the split and the arithmetic underneath (``hpo.trial
.run_task``), so bit-for-bit reproduction needs the same split (``Split.digest``), the same NumPy
and the same BLAS kernels (OpenBLAS picks its kernels by CPU at run time: the architecture is
part of the answer). Every trial records these facts as its worker saw them (``ENV_FACT`` among
its run facts), and ``hpo best --verify`` compares them with its own when a value differs.
Light to import: NumPy and threadpoolctl only, as the worker processes import it.
"""

import functools
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info

from trainer.contract import NetworkError, is_file_reference, loaded_digest
from trainer.datasets import Split

ENV_FACT = "env"
DIGEST_CHARS = 16
"""The split's SHA-256 is stored cut to 16 hex digits (64 bits): enough to tell two splits apart."""
ENV_LABELS = {
    "split": "the split's arrays (digest)",
    "numpy": "NumPy",
    "blas": "the BLAS",
    "network": "the network's file (digest)",
}


@functools.cache
def numpy_blas() -> str:
    """NumPy's BLAS as threadpoolctl reports it: library, version and the kernels' CPU type
    ("openblas 0.3.31 SkylakeX"); another BLAS loaded by another package (SciPy's) is not it."""
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    wheel_libs = f"{Path(np.__file__).resolve().parent.name}.libs"  # where a wheel keeps its own
    own = [i for i in blas if Path(i.get("filepath", "")).resolve().parent.name == wheel_libs]
    chosen = own or blas
    if not chosen:
        return "unknown"
    return "; ".join(
        " ".join(str(i[k]) for k in ("internal_api", "version", "architecture") if i.get(k))
        for i in chosen
    )


def environment(split: Split, network: str | None = None) -> dict[str, str]:
    """The facts a trial trained on ``split`` in this process stores: ``split``, ``numpy``,
    ``blas`` (see the module docstring), and for a learner's net read from a file
    (``network``, ``FILE.py:Class``) that file's digest: an edited net is another objective."""
    facts = {
        "split": split.digest()[:DIGEST_CHARS],
        "numpy": np.__version__,
        "blas": numpy_blas(),
    }
    if network is not None and is_file_reference(network):
        try:  # the version this process trained (or would train) from
            facts["network"] = loaded_digest(network)
        except NetworkError:
            facts["network"] = "missing"
    return facts


def differences(stored: dict[str, Any] | None, here: dict[str, str]) -> list[str]:
    """What differs between a trial's stored environment and this one, one phrase each
    (``numpy: 2.3.1 stored, 2.4.0 here``); a trial stored before these facts were kept: one
    phrase that says so."""
    if not stored:
        return ["the trial stored no environment (it ran before hpo recorded one)"]
    return [
        f"{ENV_LABELS.get(key, key)}: {stored.get(key)!r} stored, {value!r} here"
        for key, value in here.items()
        if stored.get(key) != value
    ]
