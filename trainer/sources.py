"""The datasets' names and where their files come from: plain data, light to import.

``trainer.datasets`` loads them; this module is what a command line needs to check a name or
print the choices (without importing NumPy).
"""

from dataclasses import dataclass


class DatasetError(Exception):
    """A dataset that cannot be found, read or used. The message is one line for the user;
    ``field`` names the setting at fault (``dataset``, ``train_size``, ...)."""

    def __init__(self, message: str, *, field: str = "dataset") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class RemoteFile:
    name: str
    sha256: str


@dataclass(frozen=True)
class IDXSource:
    """Where an IDX dataset's four files come from: a download URL and, when Debian packages
    the set, the package and the directory it installs the files in."""

    base_url: str
    train_images: RemoteFile
    train_labels: RemoteFile
    test_images: RemoteFile
    test_labels: RemoteFile
    debian_package: str | None = None
    system_dir: str | None = None

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


IDX_SOURCES: dict[str, IDXSource] = {
    "mnist": IDXSource(
        base_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
        train_images=RemoteFile(
            "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        train_labels=RemoteFile(
            "train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        test_images=RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        test_labels=RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    ),
    "fashion-mnist": IDXSource(
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        train_images=RemoteFile(
            "train-images-idx3-ubyte.gz",
            "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
        ),
        train_labels=RemoteFile(
            "train-labels-idx1-ubyte.gz",
            "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
        ),
        test_images=RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
        ),
        test_labels=RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
        ),
        # Debian's package holds the files recompressed (gzip headers without the file name):
        # their SHA-256s differ from the download's above, and files read in place are not
        # checked (tests/hpo/test_fashion_mnist.py checks the package's).
        debian_package="dataset-fashion-mnist",
        system_dir="/usr/share/datasets/fashion-mnist",
    ),
}
"""MNIST has no Debian package (``apt-cache search mnist`` finds only dataset-fashion-mnist)."""

DATASETS = ("digits", *IDX_SOURCES, "npz:PATH")
"""The dataset names ``load_dataset`` accepts, for messages and help texts."""


def check_dataset_name(name: str) -> None:
    """Raise DatasetError unless ``name`` is a known dataset or ``npz:PATH`` with a PATH."""
    if name == "digits" or name in IDX_SOURCES:
        return
    if name.startswith("npz:") and len(name) > 4:
        return
    raise DatasetError(f"unknown dataset {name!r} (allowed: {', '.join(DATASETS)})")
