"""``hpo.reproduction``: the environment a trial stores, and what differs from it."""

import numpy as np

from hpo.reproduction import differences, environment, numpy_blas
from trainer.datasets import load_split


def test_environment_names_the_split_numpy_and_the_blas():
    split = load_split("digits", rng=np.random.default_rng(0), train_size=100)
    env = environment(split)
    assert env == {"split": split.digest()[:16], "numpy": np.__version__, "blas": numpy_blas()}
    assert numpy_blas() != "unknown"  # NumPy's own BLAS is found among the loaded ones
    other = load_split("digits", rng=np.random.default_rng(1), train_size=100)
    assert environment(other)["split"] != env["split"]


def test_differences_name_each_fact_with_both_values():
    here = {"split": "ab", "numpy": "2.3.0", "blas": "openblas 0.3 Haswell"}
    assert differences(dict(here), here) == []
    stored = {**here, "numpy": "2.2.0", "blas": "openblas 0.3 SkylakeX"}
    assert differences(stored, here) == [
        "NumPy: '2.2.0' stored, '2.3.0' here",
        "the BLAS: 'openblas 0.3 SkylakeX' stored, 'openblas 0.3 Haswell' here",
    ]
    assert "stored no environment" in differences(None, here)[0]


def test_the_digest_is_computed_once_and_kept():
    split = load_split("digits", rng=np.random.default_rng(0), train_size=100)
    first = split.digest()
    split.x_train[0, 0] += 1  # a split is not changed after it is made: the digest is kept
    assert split.digest() == first
    again = load_split("digits", rng=np.random.default_rng(0), train_size=100)
    assert again.digest() == first
