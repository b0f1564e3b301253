"""What the chapter's experiments show beyond their trials' records, computed for the report.

A study whose spec names an ``experiment`` (``[study] experiment``) gets that experiment's own
figures in its report. Most are drawn from the stored trials alone; two need more, computed here
because they need the trainer:

- ``optimizers``: each optimizer's path over the chapter's test function f(x, y) = x²/20 + y²
  from (-7, 2), with the step sizes the chapter uses for it (the learning rates tuned on the
  network mean nothing on this function);
- ``init``: the activations of every trial's net at initialization. A trial's net is rebuilt
  from its configuration and seed, so its weights are the very ones the trial started from.
"""

import inspect
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from hpo.activations import ACTIVATION_SAMPLES, HISTOGRAM_BINS, hidden_activations, trial_net
from hpo.spec import StudySpec
from trainer.datasets import Split
from trainer.network import ACTIVATIONS
from trainer.optimizers import OPTIMIZERS, make_optimizer

TEST_FUNCTION = "x²/20 + y²"
TEST_START = (-7.0, 2.0)
TEST_STEPS = 30
TEST_LEARNING_RATES = {
    "sgd": 0.95,
    "momentum": 0.1,
    "nesterov": 0.1,
    "adagrad": 1.5,
    "rmsprop": 0.3,
    "adam": 0.3,
}
"""Step sizes that suit f: the chapter's own for SGD, Momentum, AdaGrad and Adam; Nesterov as
Momentum; RMSprop as Adam (with 0.1 it is still far from the minimum after 30 steps)."""


def test_function_paths(steps: int = TEST_STEPS) -> list[dict[str, Any]]:
    """Each optimizer's ``steps``-step path over f from ``TEST_START``: ``x`` and ``y`` hold
    ``steps + 1`` points, the start first."""
    paths = []
    for name in OPTIMIZERS:
        # An optimizer the chapter has no step size for takes its own default learning rate.
        default = inspect.signature(OPTIMIZERS[name].__init__).parameters["learning_rate"].default
        learning_rate = TEST_LEARNING_RATES.get(name, default)
        optimizer = make_optimizer(name, learning_rate=learning_rate)
        p = np.array(TEST_START)
        points = [p.copy()]
        for _ in range(steps):
            grad = np.array([p[0] / 10.0, 2.0 * p[1]])  # ∇f
            optimizer.update([p], [grad])
            points.append(p.copy())
        xy = np.array(points)
        paths.append(
            {
                "optimizer": name,
                "learning_rate": learning_rate,
                "x": [float(v) for v in xy[:, 0]],
                "y": [float(v) for v in xy[:, 1]],
            }
        )
    return paths


def initial_activation_histograms(
    spec: StudySpec, trials: list[optuna.trial.FrozenTrial], split: Split
) -> list[dict[str, Any]]:
    """For each trial that has its parameters: the histogram of every hidden layer's activations
    on the first ``ACTIVATION_SAMPLES`` validation inputs, with the weights the trial started from.

    Per trial: ``trial``, ``init``, ``init_scale``, ``activation``, the bin ``edges`` and per
    layer ``counts`` of the values inside them, and the fractions ``zeros`` (exactly 0: a dead
    ReLU unit) and ``above`` (beyond the last edge).
    """
    out = []
    for t in trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        run, net, _ = trial_net(spec, t.params, t.number, split)
        lo, hi = ACTIVATIONS[run.net.activation].HISTOGRAM_RANGE  # the layer's own bins
        edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
        layers = []
        for a in hidden_activations(net, split):  # std 1 nets overflow: that is the point
            a = a.ravel().astype(np.float64)
            nonzero = a[a != 0]
            counts, _ = np.histogram(nonzero[nonzero <= hi], bins=edges)
            layers.append(
                {
                    "counts": [int(c) for c in counts],
                    "zeros": float(np.mean(a == 0)),
                    "above": float(np.mean(~(a <= hi))),  # NaN and inf count as above
                }
            )
        out.append(
            {
                "trial": t.number,
                "init": run.net.init,
                "init_scale": run.net.init_scale,
                "activation": run.net.activation,
                "edges": [float(e) for e in edges],
                "layers": layers,
            }
        )
    return out


def optimizers_data(spec: StudySpec, trials, split: Split) -> dict[str, Any]:
    return {"function": TEST_FUNCTION, "start": list(TEST_START), "paths": test_function_paths()}


def init_data(spec: StudySpec, trials, split: Split) -> dict[str, Any]:
    return {
        "samples": min(ACTIVATION_SAMPLES, len(split.x_val)),
        "histograms": initial_activation_histograms(spec, trials, split),
    }


EXTRA_DATA = {"optimizers": optimizers_data, "init": init_data}
"""The experiments whose figures need more than the stored trials, and how to compute it; the
others (``hpo.allowed.EXPERIMENTS``) draw from the trials alone."""


def experiment_data(
    spec: StudySpec, trials: list[optuna.trial.FrozenTrial], split: Split
) -> dict[str, Any] | None:
    """The extra data of the spec's experiment (with its ``name``), or None when it has none."""
    if spec.experiment is None:
        return None
    extra = EXTRA_DATA.get(spec.experiment)
    return {"name": spec.experiment, **(extra(spec, trials, split) if extra else {})}
