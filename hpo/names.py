"""The names a study file and the command line accept for its sampler, pruner and experiment:
plain tuples, light to import (``--help`` shows them without importing NumPy or Optuna)."""

SAMPLERS = ("tpe", "random", "cmaes", "qmc", "grid")
EXPERIMENTS = ("optimizers", "init", "batchnorm", "overfit")
"""The chapter's experiments whose own figure a study's report may carry (``[study]
experiment``); ``reports.experiments`` draws them."""
PRUNERS = ("median", "hyperband", "sha", "none")
