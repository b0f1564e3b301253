"""Finite search spaces: how many configurations a space holds, and the next one not yet run.

A space is finite when every searched parameter is a list of choices or a stepped range. Such
a study's target is capped at the space's size (more trials could only repeat configurations),
and the random sampler draws each configuration once: among the configurations no trial has
(finished, running or queued), each parameter in the order trials suggest them, uniformly among
its values that still lead to one, with a generator seeded from the study seed and the trial's
number (as ``hpo.service.make_sampler`` seeds a sampler). A space too large to list (above
``MAX_LISTED``) is left to the sampler.
"""

import itertools
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from hpo.spec import Param, StudySpec
from hpo.trial import applies, optuna_choices
from trainer.config import TrainConfig

MAX_LISTED = 100_000
"""The most configurations listed to draw an unseen one from."""


def _values(p: Param) -> list | None:
    """The values a searched parameter takes (None: a continuous range)."""
    if p.kind == "choice":
        return optuna_choices(p)  # as a trial suggests them (a list choice as its JSON text)
    if p.kind == "int":
        return list(range(p.low, p.high + 1, int(p.step or 1)))
    if p.kind == "float" and p.step is not None:
        n = math.floor((p.high - p.low) / p.step + 1e-9)  # never past high
        return [round(p.low + i * p.step, 12) for i in range(n + 1)]
    return None


def _optimizers(spec: StudySpec) -> list[str]:
    """The optimizers the space's trials use."""
    p = spec.param("optimizer")
    if p is not None and p.kind == "choice":
        return list(p.choices)
    return [spec.fixed("optimizer", TrainConfig.optimizer)]


def _searched(spec: StudySpec) -> dict[str, list] | None:
    values = {}
    for p in spec.space:
        if p.kind == "fixed":
            continue
        v = _values(p)
        if v is None:
            return None
        values[p.name] = v
    return values


def space_size(spec: StudySpec) -> int | None:
    """How many configurations the space holds (None: infinitely many)."""
    values = _searched(spec)
    if values is None:
        return None
    total = 0
    for optimizer in _optimizers(spec):
        sizes = [
            len(v) for name, v in values.items() if name != "optimizer" and applies(name, optimizer)
        ]
        total += math.prod(sizes)
    return total


def configurations(spec: StudySpec) -> list[dict[str, Any]] | None:
    """Every configuration of a finite space, as the parameters a trial suggests (None: an
    infinite space, or one above ``MAX_LISTED``)."""
    size = space_size(spec)
    if size is None or size > MAX_LISTED:
        return None
    values = _searched(spec)
    searched_optimizer = "optimizer" in values
    found = []
    for optimizer in _optimizers(spec):
        names = [n for n in values if n != "optimizer" and applies(n, optimizer)]
        for combination in itertools.product(*(values[n] for n in names)):
            params = dict(zip(names, combination, strict=True))
            if searched_optimizer:
                params["optimizer"] = optimizer
            found.append({n: params[n] for n in values if n in params})  # suggestion order
    return found


def _key(spec: StudySpec, params: dict[str, Any]) -> tuple:
    """A configuration's identity: a stepped value by its step number (a sampler's float may
    differ from ``low + i * step`` in the last bit)."""
    key = []
    for name, value in sorted(params.items()):
        p = spec.param(name)
        if p is not None and p.kind == "float" and p.step is not None:
            value = round((value - p.low) / p.step)
        key.append((name, value))
    return tuple(key)


def seen_keys(spec: StudySpec, trials: Iterable[optuna.trial.FrozenTrial]) -> set[tuple]:
    """The configurations of every trial that is not a failure."""
    return {_key(spec, t.params) for t in trials if t.state != TrialState.FAIL and t.params}


def unseen_configuration(
    spec: StudySpec,
    listed: list[dict[str, Any]],
    trials: Iterable[optuna.trial.FrozenTrial],
    *,
    number: int,
) -> dict[str, Any] | None:
    """The configuration the trial numbered ``number`` runs: one no trial has yet, drawn as
    the module docstring says (None: every one has been run)."""
    seen = seen_keys(spec, trials)
    left = [c for c in listed if _key(spec, c) not in seen]
    if not left:
        return None
    rng = np.random.default_rng([spec.search.seed, number])
    for name in dict.fromkeys(n for c in listed for n in c):  # every name, suggestion order
        options = []
        for c in left:
            if c.get(name, _ABSENT) not in options:
                options.append(c.get(name, _ABSENT))
        chosen = options[rng.integers(len(options))]
        left = [c for c in left if c.get(name, _ABSENT) == chosen]
    return left[0]


_ABSENT = object()
"""A conditional parameter's place in a configuration whose optimizer does not have it."""
