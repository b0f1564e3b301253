"""The real Fashion-MNIST, as Debian's ``dataset-fashion-mnist`` installs it: its files are the
ones we know, and ``hpo run`` finds them with no flag and trains on them.

Slow (the files decompress to 55 MB and each trial trains on real images); skipped where the
package is not installed, except in CI, which installs it (``.ci/run``).
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from hpo.records import RUN_ATTR
from hpo.reproduction import environment
from hpo.storage import open_storage
from trainer.config import DataConfig
from trainer.sources import IDX_SOURCES

IN_CI = os.environ.get("CI") == "true"
DEBIAN_DIR = Path(IDX_SOURCES["fashion-mnist"].system_dir)
DEBIAN_SHA256 = {
    "train-images-idx3-ubyte.gz": (
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"
    ),
    "train-labels-idx1-ubyte.gz": (
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"
    ),
}
"""The SHA-256s of dataset-fashion-mnist 0.0~git20200523.55506a9-1's files (Debian 12), which
recompresses upstream's: they differ from the download's in ``trainer.sources``."""

SPEC = """
[study]
name = "fashion-two"

[data]
dataset = "fashion-mnist"
train_size = 3000

[model]
hidden = [64]

[training]
epochs = 2
batch_size = 100

[search]
sampler = "random"
pruner = "none"
trials = 2

[space]
learning_rate = { low = 1e-3, high = 3e-3, log = true }
optimizer = "adam"
"""


@pytest.fixture(scope="module")
def debian_files() -> Path:
    if not all((DEBIAN_DIR / name).is_file() for name in DEBIAN_SHA256):
        if IN_CI:
            pytest.fail("CI must have Fashion-MNIST (.ci/run installs dataset-fashion-mnist)")
        pytest.skip(f"no {DEBIAN_DIR} (apt-get install dataset-fashion-mnist)")
    return DEBIAN_DIR


@pytest.mark.slow
def test_the_debian_package_holds_the_files_we_know(debian_files):
    digests = {
        name: hashlib.sha256((debian_files / name).read_bytes()).hexdigest()
        for name in DEBIAN_SHA256
    }
    assert digests == DEBIAN_SHA256


@pytest.mark.slow
def test_hpo_run_trains_two_trials_on_the_packaged_files_with_no_flag(debian_files, tmp_path):
    spec = tmp_path / "fashion.toml"
    spec.write_text(SPEC)
    env = {k: v for k, v in os.environ.items() if k != "HPO_DATA_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # an empty cache: only Debian's folder
    url = f"sqlite:///{tmp_path / 'fashion.db'}"
    argv = [sys.executable, "-m", "hpo", "run", str(spec), "--storage", url, "--workers", "2"]
    done = subprocess.run(
        [*argv, "--quiet", "--no-report"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="fashion-two", storage=open_storage(url))
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    # Clothes in 10 classes: far above chance (0.1) after two epochs on 2,400 images.
    assert all(t.value > 0.6 for t in trials), [t.value for t in trials]
    # Both trials trained on the split of Debian's files, as this process reads them.
    split = DataConfig(dataset="fashion-mnist", train_size=3000, data_dir=str(debian_files)).load()
    assert {t.user_attrs[RUN_ATTR]["env"]["split"] for t in trials} == {environment(split)["split"]}
    assert not (tmp_path / "cache").exists()
