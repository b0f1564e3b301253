"""Datasets and the seeded, stratified train/validation/test split.

Sources, by name:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes); no network.
- ``mnist`` and ``fashion-mnist``: the standard IDX ``.gz`` files, looked up in ``data_dir``,
  then ``$HPO_DATA_DIR``, then the cache directory (``$XDG_CACHE_HOME/hpo/<name>``, default
  ``~/.cache/hpo/<name>``), then where a Debian package installs them (Fashion-MNIST's
  ``dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist``; Debian packages no MNIST),
  else downloaded into the cache with SHA-256 verification when the network allows.
- ``npz:PATH``: the user's own arrays: ``x`` (N, ...) and ``y`` (N,) integer labels, optionally
  ``x_test`` and ``y_test``. Loaded with ``allow_pickle=False``.

``load_split`` turns a source into a ``Split``: a test set (the source's own, else a stratified
share of it), then a stratified draw of ``train_size`` samples from the rest, divided into
training and validation. Inputs are standardized with statistics of the training split alone.
"""

import gzip
import hashlib
import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.sources import (  # noqa: F401 - DATASETS and RemoteFile: re-exported
    DATASETS,
    IDX_SOURCES,
    DatasetError,
    IDXSource,
    RemoteFile,
    check_dataset_name,
)


@dataclass(frozen=True)
class Dataset:
    """Raw arrays: inputs flattened to (N, D) in their stored numeric dtype, labels (N,) int64 in
    [0, n_classes)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    n_classes: int


@dataclass(frozen=True)
class Split:
    """Standardized arrays ready for training; ``x_*`` are (N, D), ``y_*`` (N,) int64."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    mean: np.ndarray  # (D,), the training split's, subtracted from every input
    std: np.ndarray  # (D,), the training split's (1 for constant features)

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    _digest: str | None = field(default=None, init=False, repr=False, compare=False)

    def digest(self) -> str:
        """SHA-256 of every array's dtype, shape and bytes: two processes that computed the
        same split (same files, same seed, same NumPy arithmetic) get the same digest.
        Computed once (a split's arrays are not changed after it is made)."""
        if self._digest is None:
            object.__setattr__(self, "_digest", self._compute_digest())
        return self._digest

    def _compute_digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape};".encode())
            h.update(a)
        for a in (self.mean, self.std):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hpo"


def load_dataset(name: str, *, data_dir: str | Path | None = None) -> Dataset:
    """Load the dataset called ``name`` (see the module docstring for the names)."""
    check_dataset_name(name)
    if name == "digits":
        return _load_digits()
    if name in IDX_SOURCES:
        return load_idx_dataset(name, IDX_SOURCES[name], data_dir=data_dir)
    return load_npz(name[4:])


def _load_digits() -> Dataset:
    """scikit-learn's bundled digits, read from its data file without importing scikit-learn
    (the import costs 0.8 s, the file 0.02 s; every worker process pays it)."""
    spec = importlib.util.find_spec("sklearn")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",")  # (1797, 65): 64 pixels, then the label
        x, y = table[:, :-1], table[:, -1].astype(np.int64)
    else:  # a scikit-learn that keeps its data elsewhere: ask it
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    return Dataset("digits", x, y, None, None, 10)


# ---------------------------------------------------------------------------------------------
# IDX files


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped when the name ends in ``.gz``) of unsigned bytes.

    The format: two zero bytes, a type code (0x08 for unsigned bytes), the number of dimensions,
    then each dimension as a big-endian uint32, then the data.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DatasetError(f"{path}: IDX type code {raw[2]:#04x} (allowed: 0x08, unsigned byte)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    if len(shape) != ndim or len(raw) - header != int(np.prod(shape)):
        raise DatasetError(f"{path}: IDX data size does not match its header shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def search_dirs(name: str, source: IDXSource, data_dir: str | Path | None) -> list[Path]:
    """Where the files of ``name`` are looked for, in order: ``data_dir``, ``$HPO_DATA_DIR``, the
    cache, the directory its Debian package installs (each also with a subdirectory ``name``,
    except the package's)."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get("HPO_DATA_DIR"):
        dirs.append(Path(os.environ["HPO_DATA_DIR"]))
    dirs.append(cache_dir() / name)
    # A directory may hold the files directly or in a subdirectory named after the dataset.
    found = [p for d in dirs for p in (d, d / name)]
    return found if source.system_dir is None else [*found, Path(source.system_dir)]


def download(url: str, sha256: str, dest: Path, *, timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest`` if its SHA-256 is ``sha256``; raise DatasetError otherwise.

    The file is written next to ``dest`` and moved into place only once verified. A failed
    download leaves nothing behind: neither the partial file nor the directories it created.
    """
    created = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]  # deepest first
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own: several processes may download the same file at once.
        with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=dest.name, suffix=".part",
                                         delete=False) as handle:  # fmt: skip
            partial = Path(handle.name)
    except OSError as e:
        _remove_empty(created)
        raise DatasetError(f"cannot write {dest} ({e.strerror or e})") from None
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as f:
            while chunk := response.read(1 << 16):
                digest.update(chunk)
                f.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        partial.unlink(missing_ok=True)
        _remove_empty(created)
        raise DatasetError(f"cannot download {url} ({getattr(e, 'reason', e)})") from None
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        _remove_empty(created)
        raise DatasetError(
            f"{url}: SHA-256 {digest.hexdigest()} does not match the expected {sha256}"
        )
    os.replace(partial, dest)  # atomic: readers see the old state or the whole file


def _remove_empty(directories: list[Path]) -> None:
    """Remove ``directories`` (deepest first) where they are empty: another process may be
    downloading into the same one."""
    for d in directories:
        try:
            d.rmdir()
        except OSError:
            return


def load_idx_dataset(
    name: str, source: IDXSource, *, data_dir: str | Path | None = None
) -> Dataset:
    """Find (or download into the cache) the four IDX files of ``source`` and load them."""
    dirs = search_dirs(name, source, data_dir)
    paths = {}
    for remote in source.files:
        found = next((d / remote.name for d in dirs if (d / remote.name).is_file()), None)
        paths[remote.name] = found
    missing = [r for r in source.files if paths[r.name] is None]
    if missing:
        target = dirs[0] if data_dir is not None else cache_dir() / name
        try:
            for remote in missing:
                paths[remote.name] = target / remote.name
                download(source.base_url + remote.name, remote.sha256, target / remote.name)
        except DatasetError as e:
            names = ", ".join(r.name for r in missing)
            looked = [d for d in dirs if d.parent not in dirs]  # not the subdirectories too
            if source.debian_package is None:
                package = f"Debian packages no {name}; "
            else:
                package = f"install Debian's package (apt-get install {source.debian_package}) or "
            raise DatasetError(
                f"dataset {name!r}: {names} not found in {', '.join(map(str, looked))} "
                f"and the download failed ({e}); {package}put the files from "
                f"{source.base_url} in {target} or pass --data-dir"
            ) from None
    x = read_idx(paths[source.train_images.name])
    y = read_idx(paths[source.train_labels.name])
    x_test = read_idx(paths[source.test_images.name])
    y_test = read_idx(paths[source.test_labels.name])
    return _validated(name, x, y, x_test, y_test)


# ---------------------------------------------------------------------------------------------
# The user's own .npz


def load_npz(path: str | Path) -> Dataset:
    """Load ``x``, ``y`` and optional ``x_test``, ``y_test`` from an ``.npz`` archive."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (expected an .npz archive with arrays x and y)")
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{path}: not a readable .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as e:
        # allow_pickle=False refuses object arrays with a ValueError.
        raise DatasetError(f"{path}: cannot read arrays without pickle ({e})") from None
    except (OSError, EOFError, KeyError) as e:
        raise DatasetError(f"{path}: not a readable .npz archive ({e})") from None
    allowed = {"x", "y", "x_test", "y_test"}
    unknown = sorted(set(arrays) - allowed)
    if unknown:
        raise DatasetError(f"{path}: unknown array {unknown[0]!r} (allowed: x, y, x_test, y_test)")
    for key in ("x", "y"):
        if key not in arrays:
            raise DatasetError(f"{path}: missing array {key!r} (required: x, y)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DatasetError(f"{path}: x_test and y_test must be given together or not at all")
    return _validated(
        str(path), arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test")
    )


def _validated_pair(where: str, xname: str, x, yname: str, y) -> tuple[np.ndarray, np.ndarray]:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DatasetError(f"{where}: {xname} has dtype {x.dtype} (allowed: numeric)")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise DatasetError(f"{where}: {xname} has dtype {x.dtype} (allowed: real numbers)")
    if x.ndim < 2:
        raise DatasetError(f"{where}: {xname} has shape {x.shape} (allowed: (N, features...))")
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{where}: {yname} has dtype {y.dtype} (allowed: integer labels)")
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(
            f"{where}: {yname} has shape {y.shape} (allowed: ({len(x)},), one label per row "
            f"of {xname})"
        )
    if len(y) and y.min() < 0:
        raise DatasetError(f"{where}: {yname} contains {y.min()} (allowed: labels >= 0)")
    if len(x) == 0:
        raise DatasetError(f"{where}: {xname} has no rows (allowed: at least one sample per class)")
    # Kept in its own dtype (MNIST's uint8 is an eighth of float64): only the split converts.
    x = x.reshape(len(x), -1)
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise DatasetError(f"{where}: {xname} contains NaN or infinity (allowed: finite values)")
    return x, y.astype(np.int64)


def _validated(name: str, x, y, x_test, y_test) -> Dataset:
    x, y = _validated_pair(name, "x", x, "y", y)
    if len(x) == 0:
        raise DatasetError(f"{name}: x has no rows (allowed: at least one sample per class)")
    n_classes = int(y.max()) + 1
    if n_classes < 2:
        raise DatasetError(f"{name}: y has a single class (allowed: at least 2 classes)")
    missing = np.setdiff1d(np.arange(n_classes), y)
    if len(missing):  # {0, 1, 1000} would make a 1001-class net
        shown = ", ".join(map(str, missing[:3])) + (", ..." if len(missing) > 3 else "")
        raise DatasetError(
            f"{name}: y has labels up to {n_classes - 1} but none of {shown} (allowed: labels "
            "0 to K-1 with every class present; np.unique(y, return_inverse=True)[1] renumbers)"
        )
    if x_test is not None:
        x_test, y_test = _validated_pair(name, "x_test", x_test, "y_test", y_test)
        if x_test.shape[1] != x.shape[1]:
            raise DatasetError(
                f"{name}: x_test has {x_test.shape[1]} features (allowed: {x.shape[1]}, as x)"
            )
        if len(y_test) and y_test.max() >= n_classes:
            raise DatasetError(
                f"{name}: y_test contains {y_test.max()} (allowed: labels below {n_classes}, "
                "the classes of y)"
            )
    return Dataset(name, x, y, x_test, y_test, n_classes)


# ---------------------------------------------------------------------------------------------
# Splitting


def stratified_counts(counts: np.ndarray, n_take: int) -> np.ndarray:
    """How many of each class (``counts`` (C,), in label order) a stratified draw of ``n_take``
    takes: each class its share, rounded by largest remainder so that the counts add up."""
    quotas = n_take * counts / counts.sum()
    take = np.floor(quotas).astype(np.int64)
    short = n_take - int(take.sum())
    if short > 0:
        # Largest remainders first; ties go to the larger class, then to the lower label.
        order = np.lexsort((np.arange(len(counts)), -counts, -(quotas - take)))
        take[order[:short]] += 1
    return take


def every_class_in_both(counts: np.ndarray, train_size: int, validation_fraction: float) -> bool:
    """Whether drawing ``train_size`` of a pool with class ``counts`` (C,) and holding out
    ``validation_fraction`` of it leaves every class in both the training and validation
    splits (what ``split_dataset`` draws, by count)."""
    taken = stratified_counts(counts, train_size)
    val = stratified_counts(taken, round(validation_fraction * train_size))
    return bool(np.all(val >= 1) and np.all(taken - val >= 1))


def smallest_train_size(counts: np.ndarray, validation_fraction: float) -> int | None:
    """The smallest ``train_size`` that leaves every class in both splits; None if none does."""
    total = int(counts.sum())
    start = 2 * len(counts)  # one of each class in each split, at least
    return next(
        (n for n in range(start, total + 1) if every_class_in_both(counts, n, validation_fraction)),
        None,
    )


def stratified_take(
    y: np.ndarray, n_take: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split the indices of ``y`` into ``n_take`` taken and the rest, keeping class proportions.

    Each class gives its share of ``n_take``, rounded by largest remainder so that the counts add
    up exactly. Returns (taken, rest), each sorted by a random permutation.
    """
    classes, counts = np.unique(y, return_counts=True)
    take = stratified_counts(counts, n_take)
    taken, rest = [], []
    for c, k in zip(classes, take, strict=True):
        idx = rng.permutation(np.flatnonzero(y == c))
        taken.append(idx[:k])
        rest.append(idx[k:])
    taken = np.concatenate(taken)
    rest = np.concatenate(rest)
    return rng.permutation(taken), rng.permutation(rest)


def split_dataset(
    data: Dataset,
    *,
    rng: np.random.Generator,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    train_size: int | None = None,
    dtype=np.float32,
) -> Split:
    """Split ``data`` into standardized training, validation and test arrays.

    Args:
        data: the raw dataset.
        rng: the generator for every draw of the split.
        validation_fraction: the share of the training pool held out for validation.
        test_fraction: the share held out for testing when the source has no test set.
        train_size: draw this many samples (stratified) for training plus validation; None uses
            the whole pool. The book's search used 500 MNIST images: 400 train, 100 validation.
        dtype: the dtype of the returned inputs.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1). Got {validation_fraction}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1). Got {test_fraction}.")
    x, y = data.x, data.y
    if data.x_test is not None:
        x_test, y_test = data.x_test, data.y_test
    else:
        test_idx, pool = stratified_take(y, round(test_fraction * len(y)), rng)
        x_test, y_test = x[test_idx], y[test_idx]
        x, y = x[pool], y[pool]
    counts = np.unique(y, return_counts=True)[1]
    size = len(y) if train_size is None else train_size
    if not every_class_in_both(counts, size, validation_fraction) or size > len(y):
        smallest = smallest_train_size(counts, validation_fraction)
        if smallest is None or train_size is None:
            raise DatasetError(
                f"{data.name}: its {len(y)} samples outside the test set cannot hold one of "
                f"each of its {len(counts)} classes in both the training and the validation "
                f"split at validation_fraction {validation_fraction} (allowed: another "
                "validation_fraction or a larger dataset)",
                field="validation_fraction",
            )
        raise DatasetError(
            f"{size} (allowed: {smallest} to {len(y)}: each of the {len(counts)} classes of "
            f"{data.name} in both the training and the validation split at "
            f"validation_fraction {validation_fraction}, from the samples outside the test set)",
            field="train_size",
        )
    if train_size is not None:
        taken, _ = stratified_take(y, train_size, rng)
        x, y = x[taken], y[taken]
    n_val = round(validation_fraction * len(y))
    if n_val < 1 or n_val >= len(y):
        raise DatasetError(
            f"{data.name}: {len(y)} samples leave no room for both a training and a validation "
            f"split at validation_fraction {validation_fraction}",
            field="validation_fraction",
        )
    val_idx, train_idx = stratified_take(y, n_val, rng)
    x_train, y_train = x[train_idx], y[train_idx]
    mean = x_train.mean(axis=0, dtype=np.float64)
    std = x_train.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0  # constant features (digits' blank border pixels) stay at zero

    def standardize(a: np.ndarray) -> np.ndarray:
        # In the target dtype from the start: no float64 copy of the whole split.
        out = a.astype(dtype)
        out -= mean.astype(dtype)
        out /= std.astype(dtype)
        return out

    return Split(
        name=data.name,
        x_train=standardize(x_train),
        y_train=y_train,
        x_val=standardize(x[val_idx]),
        y_val=y[val_idx],
        x_test=standardize(x_test),
        y_test=y_test,
        n_classes=data.n_classes,
        mean=mean,
        std=std,
    )


def load_split(
    name: str,
    *,
    rng: np.random.Generator,
    data_dir: str | Path | None = None,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    train_size: int | None = None,
    dtype=np.float32,
) -> Split:
    """``load_dataset`` then ``split_dataset``: the one call a training run needs."""
    return split_dataset(
        load_dataset(name, data_dir=data_dir),
        rng=rng,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        train_size=train_size,
        dtype=dtype,
    )
