"""Datasets: the bundled digits, IDX files, the user's .npz, and the stratified split."""

import gzip
import hashlib
import struct

import numpy as np
import pytest

from trainer import datasets
from trainer.datasets import (
    Dataset,
    DatasetError,
    IDXSource,
    RemoteFile,
    download,
    load_dataset,
    load_idx_dataset,
    load_npz,
    read_idx,
    smallest_train_size,
    split_dataset,
    stratified_take,
)


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture
def tiny_idx_dir(tmp_path, rng):
    images = rng.integers(0, 256, size=(30, 4, 4), dtype=np.uint8)
    labels = np.arange(30, dtype=np.uint8) % 3
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[:9])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:9])
    return tmp_path, images, labels


def test_digits_is_bundled():
    data = load_dataset("digits")
    assert data.x.shape == (1797, 64) and data.n_classes == 10 and data.x_test is None


def test_read_idx_round_trip(tmp_path, rng):
    array = rng.integers(0, 256, size=(5, 3, 2), dtype=np.uint8)
    write_idx(tmp_path / "a.idx", array)
    write_idx(tmp_path / "a.idx.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), array)


def test_read_idx_rejects_bad_magic(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DatasetError, match="magic"):
        read_idx(tmp_path / "bad.idx")


def test_read_idx_rejects_truncated_data(tmp_path):
    (tmp_path / "short.idx").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(DatasetError, match="size"):
        read_idx(tmp_path / "short.idx")


def test_idx_dataset_found_in_data_dir(tiny_idx_dir):
    path, images, labels = tiny_idx_dir
    data = load_idx_dataset("mnist", datasets.IDX_SOURCES["mnist"], data_dir=path)
    assert data.x.shape == (30, 16) and data.x_test.shape == (9, 16)
    np.testing.assert_array_equal(data.x, images.reshape(30, -1))
    np.testing.assert_array_equal(data.y, labels)
    assert data.n_classes == 3


def test_idx_dataset_found_through_environment(tiny_idx_dir, monkeypatch):
    monkeypatch.setenv("HPO_DATA_DIR", str(tiny_idx_dir[0]))
    assert load_dataset("fashion-mnist").x.shape == (30, 16)


def test_missing_idx_files_say_which_files_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)
    source = IDXSource(
        "file:///nonexistent/",
        *(RemoteFile(n, "0" * 64) for n in ("a.gz", "b.gz", "c.gz", "d.gz")),
    )
    with pytest.raises(DatasetError) as e:
        load_idx_dataset("mnist", source)
    message = str(e.value)
    assert (
        "a.gz, b.gz, c.gz, d.gz" in message and str(tmp_path / "cache" / "hpo" / "mnist") in message
    )
    assert "\n" not in message


IDX_NAMES = [f.name for f in datasets.IDX_SOURCES["mnist"].files]


def offline_source(*, system_dir=None, debian_package=None) -> IDXSource:
    files = (RemoteFile(n, "0" * 64) for n in IDX_NAMES)
    return IDXSource("file:///nonexistent/", *files, debian_package, system_dir)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)
    return tmp_path / "cache"


def test_a_debian_packages_directory_is_found_with_no_flag(tiny_idx_dir, empty_cache):
    source = offline_source(system_dir=str(tiny_idx_dir[0]))
    assert load_idx_dataset("fashion-mnist", source).x.shape == (30, 16)
    assert not empty_cache.exists()


def test_data_dir_comes_before_the_debian_packages_directory(tiny_idx_dir, empty_cache):
    mine = tiny_idx_dir[0] / "mine"
    mine.mkdir()
    for name in IDX_NAMES:
        array = read_idx(tiny_idx_dir[0] / name)
        write_idx(mine / name, array[:12])
    source = offline_source(system_dir=str(tiny_idx_dir[0]))
    assert load_idx_dataset("fashion-mnist", source, data_dir=mine).x.shape == (12, 16)


def test_fashion_mnist_is_looked_up_where_debian_installs_it():
    source = datasets.IDX_SOURCES["fashion-mnist"]
    assert source.system_dir == "/usr/share/datasets/fashion-mnist"
    assert source.debian_package == "dataset-fashion-mnist"
    assert datasets.IDX_SOURCES["mnist"].debian_package is None


def test_a_missing_dataset_names_the_debian_package_to_install(tmp_path, empty_cache):
    source = offline_source(system_dir=str(tmp_path / "usr"), debian_package="dataset-x")
    with pytest.raises(DatasetError) as e:
        load_idx_dataset("fashion-mnist", source)
    message = str(e.value)
    assert "apt-get install dataset-x" in message and str(tmp_path / "usr") in message
    assert "\n" not in message


def test_a_missing_mnist_says_debian_packages_none(empty_cache):
    with pytest.raises(DatasetError, match="Debian packages no mnist"):
        load_idx_dataset("mnist", offline_source())


@pytest.mark.parametrize("where", ["cache", "data_dir"])
def test_a_failed_lookup_leaves_no_folder_behind(tmp_path, empty_cache, where):
    data_dir = tmp_path / "new" / "data" if where == "data_dir" else None
    with pytest.raises(DatasetError):
        load_idx_dataset("mnist", offline_source(), data_dir=data_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_download_verifies_sha256(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello idx")
    good = hashlib.sha256(b"hello idx").hexdigest()
    download(src.as_uri(), good, tmp_path / "out" / "file.bin")
    assert (tmp_path / "out" / "file.bin").read_bytes() == b"hello idx"
    with pytest.raises(DatasetError, match="SHA-256"):
        download(src.as_uri(), "f" * 64, tmp_path / "out" / "bad.bin")
    assert not (tmp_path / "out" / "bad.bin").exists()
    assert not (tmp_path / "out" / "bad.bin.part").exists()


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_loads_with_and_without_test_set(tmp_path, rng):
    x, y = rng.standard_normal((20, 2, 3)), np.arange(20) % 4
    data = load_npz(save_npz(tmp_path / "d.npz", x=x, y=y))
    assert data.x.shape == (20, 6) and data.n_classes == 4 and data.x_test is None
    data = load_npz(save_npz(tmp_path / "e.npz", x=x, y=y, x_test=x[:5], y_test=y[:5]))
    assert data.x_test.shape == (5, 6)
    assert load_dataset(f"npz:{tmp_path / 'e.npz'}").y_test.tolist() == y[:5].tolist()


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((4, 2))}, "missing array 'y'"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4)}, "integer labels"),
        ({"x": np.zeros((4, 2)), "y": np.array([0, 1, 2])}, "one label per row"),
        ({"x": np.zeros(4), "y": np.array([0, 1, 0, 1])}, "shape"),
        ({"x": np.zeros((4, 2)), "y": np.array([0, -1, 0, 1])}, "labels >= 0"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4, dtype=int)}, "2 classes"),
        ({"x": np.full((2, 2), np.nan), "y": np.array([0, 1])}, "NaN"),
        ({"x": np.ones((2, 2), dtype=complex), "y": np.array([0, 1])}, "real numbers"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1, 1000])}, "none of 2, 3, 4, ..."),
        ({"x": np.zeros((2, 2)), "y": np.array([0, 1]), "w": np.zeros(2)}, "unknown array 'w'"),
        ({"x": np.zeros((2, 2)), "y": np.array([0, 1]), "x_test": np.zeros((1, 2))}, "together"),
        (
            {
                "x": np.zeros((2, 2)),
                "y": np.array([0, 1]),
                "x_test": np.zeros((1, 3)),
                "y_test": np.array([0]),
            },
            "features",
        ),
        (
            {
                "x": np.zeros((2, 2)),
                "y": np.array([0, 1]),
                "x_test": np.zeros((1, 2)),
                "y_test": np.array([5]),
            },
            "labels below 2",
        ),
    ],
)
def test_npz_validation_errors(tmp_path, arrays, match):
    path = save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=match) as e:
        load_npz(path)
    assert str(path) in str(e.value)


def test_npz_refuses_pickled_objects(tmp_path):
    path = save_npz(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(DatasetError, match="pickle"):
        load_npz(path)


def test_npz_missing_file_and_garbage(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_npz(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DatasetError, match="not a readable"):
        load_npz(tmp_path / "junk.npz")


def test_unknown_dataset_name_lists_the_allowed_ones():
    with pytest.raises(DatasetError, match="digits, mnist, fashion-mnist, npz:PATH"):
        load_dataset("cifar")


def test_stratified_take_keeps_class_proportions(rng):
    y = np.repeat(np.arange(4), [40, 30, 20, 10])
    taken, rest = stratified_take(y, 25, rng)
    assert len(taken) == 25 and len(rest) == 75
    assert sorted(np.concatenate([taken, rest]).tolist()) == list(range(100))
    assert np.bincount(y[taken]).tolist() == [10, 8, 5, 2] or sum(np.bincount(y[taken])) == 25
    assert np.all(
        np.abs(np.bincount(y[taken], minlength=4) - 25 * np.array([0.4, 0.3, 0.2, 0.1])) < 1
    )


def test_split_sizes_follow_train_size(rng):
    split = split_dataset(load_dataset("digits"), rng=rng, train_size=500)
    assert len(split.x_train) == 400 and len(split.x_val) == 100
    assert len(split.x_test) == round(0.2 * 1797)
    assert split.x_train.dtype == np.float32


def test_split_is_seeded():
    data = load_dataset("digits")
    a = split_dataset(data, rng=np.random.default_rng(9), train_size=200)
    b = split_dataset(data, rng=np.random.default_rng(9), train_size=200)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_val, b.y_val)


def test_normalization_uses_training_statistics_only(rng):
    x = np.concatenate([np.zeros((50, 1)), np.full((50, 1), 10.0)])
    y = np.repeat([0, 1], 50)
    data = Dataset("toy", x, y, x + 100.0, y, 2)  # a test set far from the training data
    split = split_dataset(data, rng=rng, dtype=np.float64)
    assert split.x_train.mean() == pytest.approx(0.0, abs=1e-12)
    assert split.x_train.std() == pytest.approx(1.0)
    assert split.x_test.mean() == pytest.approx(100.0 / 5.0 + split.x_train.mean(), abs=0.5)


def test_train_size_out_of_range_is_a_dataset_error(rng):
    with pytest.raises(DatasetError, match=r"^5000 \(allowed: 48 to 1438") as e:
        split_dataset(load_dataset("digits"), rng=rng, train_size=5000)
    assert e.value.field == "train_size"


@pytest.mark.parametrize("train_size", [2, 5, 47])
def test_train_size_too_small_for_every_class_in_both_splits_says_how_many_are_needed(
    rng, train_size
):
    with pytest.raises(DatasetError, match=rf"^{train_size} \(allowed: 48 to 1438: each of") as e:
        split_dataset(load_dataset("digits"), rng=rng, train_size=train_size)
    assert e.value.field == "train_size"


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5, 0.9])
def test_smallest_train_size_is_the_first_that_puts_every_class_in_both_splits(rng, fraction):
    data = load_dataset("digits")
    counts = np.unique(data.y, return_counts=True)[1]
    pool = split_dataset(data, rng=rng, validation_fraction=fraction)  # the pool's classes
    pool_counts = np.unique(np.concatenate([pool.y_train, pool.y_val]), return_counts=True)[1]
    smallest = smallest_train_size(pool_counts, fraction)
    assert smallest is not None and smallest > 2 * len(counts) - 1
    split = split_dataset(data, rng=rng, validation_fraction=fraction, train_size=smallest)
    assert set(split.y_train) == set(split.y_val) == set(range(10))
    with pytest.raises(DatasetError):
        split_dataset(data, rng=rng, validation_fraction=fraction, train_size=smallest - 1)


def test_a_dataset_too_small_for_both_splits_names_the_validation_fraction(rng):
    x = rng.standard_normal((12, 3))
    y = np.array([0] * 10 + [1] * 2)  # class 1 cannot be in the test, train and validation sets
    with pytest.raises(DatasetError, match="cannot hold one of each of its 2 classes") as e:
        split_dataset(Dataset("toy", x, y, None, None, 2), rng=rng)
    assert e.value.field == "validation_fraction"
