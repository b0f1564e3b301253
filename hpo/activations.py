"""A trial's net trained again for the report: its hidden layers' activations on validation
inputs, which the activation histograms and the init experiment's figures count."""

from typing import Any

import numpy as np

from hpo.spec import StudySpec
from hpo.trial import configuration, trial_seed
from trainer.config import RunConfig
from trainer.contract import Trainable
from trainer.datasets import Split

ACTIVATION_SAMPLES = 500
"""Validation inputs whose hidden activations the report's histograms count."""
HISTOGRAM_BINS = 30


def trial_net(
    spec: StudySpec, params: dict[str, Any], number: int, split: Split
) -> tuple[RunConfig, Trainable, np.random.Generator]:
    """Trial ``number``'s run, its net with the very weights it started from (its
    configuration, its seed) and the generator of its batches, to train it again."""
    run = configuration(spec, params)
    net, rng = run.build(split, trial_seed(spec.search.seed, number))
    return run, net, rng


def hidden_activations(net: Trainable, split: Split) -> list[np.ndarray]:
    """Each hidden layer's activations on the first ``ACTIVATION_SAMPLES`` validation inputs
    (a badly scaled net overflows: its values are what the histograms show, not warnings)."""
    with np.errstate(all="ignore"):
        return net.hidden_activations(split.x_val[:ACTIVATION_SAMPLES])
