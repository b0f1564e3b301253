"""A study's split shared with the local worker processes instead of copied into each.

The orchestrator writes the split's arrays once into a temporary file that it unlinks at once
and keeps open, so that nothing is left on disk however the process ends (a SIGKILL included),
and sends each worker a small handle: the file's ``/proc/PID/fd/N`` path and where each array
lies in it. The worker maps the arrays read-only from there, so every worker's arrays are the
same pages of the page cache: eight workers on MNIST hold one 190-MB copy of its split, not
eight. A write to a mapped array raises, as training never writes to its data.

Only a split of at least ``SHARE_MIN_BYTES`` is shared (a digits split is sent on the pipe, as
before: a file would gain nothing), and only where ``/proc/PID/fd`` exists (Linux); anywhere the
file cannot be written (a full temporary directory), the split goes on the pipe.
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.datasets import Split

SHARE_MIN_BYTES = 16 * 2**20
ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std")
ALIGN = 4096  # each array starts on a page of its own


@dataclass(frozen=True)
class SharedSplitHandle:
    """What a worker needs to map the shared split: small and picklable. ``layout`` holds, per
    array, its name, dtype, shape and byte offset in the file at ``path``."""

    path: str
    name: str
    n_classes: int
    layout: tuple[tuple[str, str, tuple[int, ...], int], ...]

    def open(self) -> Split:
        """The split, its arrays mapped read-only from the shared file."""
        arrays = {}
        for field, dtype, shape, offset in self.layout:
            if int(np.prod(shape)) == 0:  # an empty split (no test rows): nothing to map
                arrays[field] = np.empty(shape, dtype=np.dtype(dtype))
                continue
            mapped = np.memmap(
                self.path, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape
            )
            arrays[field] = np.asarray(mapped)  # a plain ndarray view; the map stays alive
        return Split(name=self.name, n_classes=self.n_classes, **arrays)


class SharedSplit:
    """The orchestrator's side: the open, unlinked file and its handle. ``close`` it once no
    worker will start any more (the workers' maps keep their pages until they exit)."""

    def __init__(self, split: Split, directory: str | None = None) -> None:
        fd, path = tempfile.mkstemp(prefix="hpo-split-", dir=directory)
        os.unlink(path)
        self._file = os.fdopen(fd, "w+b")
        try:
            layout, offset = [], 0
            for field in ARRAYS:
                a = np.ascontiguousarray(getattr(split, field))
                self._file.seek(offset)
                self._file.write(a.tobytes())  # .tofile() needs a real file position too
                layout.append((field, a.dtype.str, tuple(a.shape), offset))
                offset += -(-a.nbytes // ALIGN) * ALIGN
            self._file.flush()
        except BaseException:
            self._file.close()
            raise
        self.handle = SharedSplitHandle(
            path=f"/proc/{os.getpid()}/fd/{fd}",
            name=split.name,
            n_classes=split.n_classes,
            layout=tuple(layout),
        )

    def close(self) -> None:
        self._file.close()


def split_nbytes(split: Split) -> int:
    return sum(getattr(split, field).nbytes for field in ARRAYS)


def share(split: Split) -> SharedSplit | None:
    """The split in a shared file when it is big enough and this system allows it, else None
    (send the split itself)."""
    if split_nbytes(split) < SHARE_MIN_BYTES or not Path(f"/proc/{os.getpid()}/fd").is_dir():
        return None
    try:
        return SharedSplit(split)
    except OSError:
        return None
