"""Gradient-descent update rules and the registry the search space reads its choices from.

Every optimizer computes its updates (``_updates``) separately from applying them (``update``
adds them to the parameters in place). Hyperparameters are keyword-only, with the defaults of the
paper or lecture that introduced the rule. State (velocities, squared-gradient averages) lives in
attributes, one array per parameter, allocated on the first update.
"""

import inspect
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class Hyperparameter:
    """A hyperparameter a search may set besides the learning rate: its keyword, its default
    (the rule's own, from its signature) and the half-open range ``[low, high)`` it allows."""

    name: str
    default: float
    low: float
    high: float


class Optimizer:
    """Base of the update rules.

    ``SEARCHABLE`` names the hyperparameters beyond the learning rate that a search may set, with
    their ranges ``[low, high)``: ``hpo``'s search space reads them from here (``searchable``).

    Args:
        learning_rate: the step size, > 0.
    """

    SEARCHABLE: ClassVar[dict[str, tuple[float, float]]] = {}

    @classmethod
    def searchable(cls) -> tuple[Hyperparameter, ...]:
        """The hyperparameters of ``SEARCHABLE`` with their defaults, in signature order."""
        signature = inspect.signature(cls.__init__).parameters
        return tuple(
            Hyperparameter(name, float(signature[name].default), *cls.SEARCHABLE[name])
            for name in signature
            if name in cls.SEARCHABLE
        )

    def __init__(self, *, learning_rate: float) -> None:
        if not learning_rate > 0:
            raise ValueError(
                f"The 'learning_rate' parameter of {type(self).__name__} must be > 0. "
                f"Got {learning_rate} instead."
            )
        # Python floats keep float32 arrays float32 (NumPy scalars would promote them).
        self.learning_rate = float(learning_rate)

    def update(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        """Apply one step: ``params[i] += update[i]``, in place."""
        for p, u in zip(params, self._updates(params, grads), strict=True):
            p += u

    def _updates(self, params: list[np.ndarray], grads: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def state_arrays(self) -> list[list[np.ndarray]]:
        """The rule's state, each kind (velocities, moments) a list of arrays parallel to the
        parameters and updated in place; empty before the first update and for a rule without
        state."""
        return []

    def _zeros_like(self, params: list[np.ndarray]) -> list[np.ndarray]:
        return [np.zeros_like(p) for p in params]


def _check_unit_interval(owner: str, name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"The '{name}' parameter of {owner} must be in [0, 1). Got {value}.")


class SGD(Optimizer):
    """Plain stochastic gradient descent: ``p -= learning_rate * g``."""

    def __init__(self, *, learning_rate: float = 0.01) -> None:
        super().__init__(learning_rate=learning_rate)

    def _updates(self, params, grads):
        return [-self.learning_rate * g for g in grads]

    def update(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        # The same step as _updates, applied without building the list: the book's search
        # runs SGD, and this is one pass over the parameters instead of two.
        lr = self.learning_rate
        for p, g in zip(params, grads, strict=True):
            p -= lr * g


class Momentum(Optimizer):
    """SGD with momentum (Polyak, 1964): ``v = momentum * v - learning_rate * g; p += v``."""

    SEARCHABLE: ClassVar = {"momentum": (0.0, 1.0)}

    def __init__(self, *, learning_rate: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(learning_rate=learning_rate)
        _check_unit_interval("Momentum", "momentum", momentum)
        self.momentum = float(momentum)
        self.velocities: list[np.ndarray] | None = None

    def _updates(self, params, grads):
        if self.velocities is None:
            self.velocities = self._zeros_like(params)
        for v, g in zip(self.velocities, grads, strict=True):
            v *= self.momentum
            v -= self.learning_rate * g
        return self.velocities

    def state_arrays(self) -> list[list[np.ndarray]]:
        return [] if self.velocities is None else [self.velocities]


class Nesterov(Momentum):
    """Nesterov's accelerated gradient in the form of Sutskever et al. (2013).

    With ``v = momentum * v - learning_rate * g`` the step is
    ``momentum * v - learning_rate * g``: the gradient is, in effect, taken at the look-ahead point.
    """

    def _updates(self, params, grads):
        velocities = super()._updates(params, grads)
        mu, lr = self.momentum, self.learning_rate
        return [mu * v - lr * g for v, g in zip(velocities, grads, strict=True)]


class AdaGrad(Optimizer):
    """AdaGrad (Duchi et al., 2011): per-parameter steps shrink with the summed squared gradient.

    ``h += g * g; p -= learning_rate * g / (sqrt(h) + eps)``.
    """

    def __init__(self, *, learning_rate: float = 0.01, eps: float = 1e-8) -> None:
        super().__init__(learning_rate=learning_rate)
        self.eps = float(eps)
        self.squared_sums: list[np.ndarray] | None = None

    def _updates(self, params, grads):
        if self.squared_sums is None:
            self.squared_sums = self._zeros_like(params)
        updates = []
        for h, g in zip(self.squared_sums, grads, strict=True):
            h += g * g
            updates.append(-self.learning_rate * g / (np.sqrt(h) + self.eps))
        return updates

    def state_arrays(self) -> list[list[np.ndarray]]:
        return [] if self.squared_sums is None else [self.squared_sums]


class RMSprop(Optimizer):
    """RMSprop (Tieleman & Hinton, 2012, lecture 6e): AdaGrad with a decaying average.

    ``h = rho * h + (1 - rho) * g * g; p -= learning_rate * g / (sqrt(h) + eps)``.
    """

    SEARCHABLE: ClassVar = {"rho": (0.0, 1.0)}

    def __init__(self, *, learning_rate: float = 0.001, rho: float = 0.9, eps: float = 1e-8):
        super().__init__(learning_rate=learning_rate)
        _check_unit_interval("RMSprop", "rho", rho)
        self.rho = float(rho)
        self.eps = float(eps)
        self.square_averages: list[np.ndarray] | None = None

    def _updates(self, params, grads):
        if self.square_averages is None:
            self.square_averages = self._zeros_like(params)
        updates = []
        for h, g in zip(self.square_averages, grads, strict=True):
            h *= self.rho
            h += (1.0 - self.rho) * g * g
            updates.append(-self.learning_rate * g / (np.sqrt(h) + self.eps))
        return updates

    def state_arrays(self) -> list[list[np.ndarray]]:
        return [] if self.square_averages is None else [self.square_averages]


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), with the paper's bias correction and defaults.

    ``m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g * g;``
    ``p -= learning_rate * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - beta1**t)`` and
    ``v_hat = v / (1 - beta2**t)`` at step ``t`` (from 1).
    """

    SEARCHABLE: ClassVar = {"beta1": (0.0, 1.0), "beta2": (0.0, 1.0)}

    def __init__(
        self,
        *,
        learning_rate: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(learning_rate=learning_rate)
        _check_unit_interval("Adam", "beta1", beta1)
        _check_unit_interval("Adam", "beta2", beta2)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.eps = float(eps)
        self.step = 0
        self.first_moments: list[np.ndarray] | None = None
        self.second_moments: list[np.ndarray] | None = None

    def _updates(self, params, grads):
        if self.first_moments is None:
            self.first_moments = self._zeros_like(params)
            self.second_moments = self._zeros_like(params)
        self.step += 1
        b1, b2 = self.beta1, self.beta2
        # Folding both corrections into the step size saves two array passes per parameter.
        step_size = self.learning_rate * math.sqrt(1.0 - b2**self.step) / (1.0 - b1**self.step)
        eps_hat = self.eps * math.sqrt(1.0 - b2**self.step)
        updates = []
        for m, v, g in zip(self.first_moments, self.second_moments, grads, strict=True):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            updates.append(-step_size * m / (np.sqrt(v) + eps_hat))
        return updates

    def state_arrays(self) -> list[list[np.ndarray]]:
        return [] if self.first_moments is None else [self.first_moments, self.second_moments]


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}
"""The update rules by name; the search space's optimizer choices come from these keys."""


def keywords(cls: type[Optimizer]) -> tuple[str, ...]:
    """The keyword hyperparameters ``cls`` takes, in signature order."""
    return tuple(n for n in inspect.signature(cls.__init__).parameters if n != "self")


def make_optimizer(name: str, **hyperparameters: float) -> Optimizer:
    """Build the optimizer registered as ``name`` with the given keyword hyperparameters."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(
            f"The 'optimizer' parameter must be one of {', '.join(OPTIMIZERS)}. Got {name!r}."
        ) from None
    return cls(**hyperparameters)
