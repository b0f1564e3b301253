"""Numerical gradients for the tests' gradient checks (float64; slow: two calls per element)."""

import numpy as np


def numerical_gradient(f, params: list[np.ndarray], *, h: float = 1e-5) -> list[np.ndarray]:
    """Central-difference gradient of the scalar ``f()`` with respect to each array in ``params``.

    ``f`` takes no argument and reads the arrays, which are perturbed in place and restored.
    Meant for float64 gradient checks: slow, two calls to ``f`` per element.
    """
    grads = []
    for p in params:
        g = np.zeros_like(p)
        it = np.nditer(p, flags=["multi_index"])
        for _ in it:
            i = it.multi_index
            old = p[i]
            p[i] = old + h
            plus = f()
            p[i] = old - h
            minus = f()
            p[i] = old
            g[i] = (plus - minus) / (2 * h)
        grads.append(g)
    return grads


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest elementwise difference relative to the larger array's largest magnitude.

    Arrays that are both zero to within 1e-9 (the gradient of a bias that BatchNorm cancels)
    count as equal: central differences leave rounding noise of about 1e-11 there.
    """
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()))
    return 0.0 if scale < 1e-9 else float(np.abs(a - b).max()) / scale
