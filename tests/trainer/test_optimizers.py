"""One contract suite over every optimizer, and Adam against hand-computed steps."""

import functools

import numpy as np
import pytest

from trainer.optimizers import OPTIMIZERS, Adam, make_optimizer

# Step sizes that suit f(x, y) = x²/20 + y² (the book's comparison uses similar ones); an
# optimizer not listed gets the best of RATE_GRID (``rate_for``), so a new one is in the suite.
LEARNING_RATES = {
    "sgd": 0.95,
    "momentum": 0.1,
    "nesterov": 0.1,
    "adagrad": 1.5,
    "rmsprop": 0.1,
    "adam": 0.3,
}


def f(p: np.ndarray) -> float:
    return p[0] ** 2 / 20 + p[1] ** 2


def grad_f(p: np.ndarray) -> np.ndarray:
    return np.array([p[0] / 10, 2 * p[1]])


RATE_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 0.95, 1.5)


@functools.cache
def rate_for(name: str) -> float:
    """The listed step size, else the one of ``RATE_GRID`` that gets lowest in 200 steps."""
    if name in LEARNING_RATES:
        return LEARNING_RATES[name]
    return min(RATE_GRID, key=lambda lr: f(descend(name, 200, learning_rate=lr)[-1]))


def descend(name: str, steps: int, *, learning_rate: float | None = None) -> list[np.ndarray]:
    rate = rate_for(name) if learning_rate is None else learning_rate
    optimizer = make_optimizer(name, learning_rate=rate)
    p = np.array([-7.0, 2.0])
    path = [p.copy()]
    for _ in range(steps):
        optimizer.update([p], [grad_f(p)])
        path.append(p.copy())
    return path


def test_the_listed_step_sizes_name_registered_optimizers():
    assert set(LEARNING_RATES) <= set(OPTIMIZERS)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_minimizes_the_book_test_function(name):
    path = descend(name, 200)
    start, end = f(path[0]), f(path[-1])
    assert end < 1e-3 * start
    assert np.all(np.isfinite(path))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_is_deterministic(name):
    np.testing.assert_array_equal(descend(name, 30), descend(name, 30))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_shapes_match_parameters(name, rng):
    params = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    optimizer = make_optimizer(name)
    optimizer.update(params, grads)
    states = [
        value
        for value in vars(optimizer).values()
        if isinstance(value, list) and value and isinstance(value[0], np.ndarray)
    ]
    for state in states:
        assert [s.shape for s in state] == [p.shape for p in params]
    assert states or name == "sgd"


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_arrays_are_every_state_array_and_empty_before_the_first_update(name, rng):
    params, grads = [rng.standard_normal(5)], [rng.standard_normal(5)]
    optimizer = make_optimizer(name)
    assert optimizer.state_arrays() == []
    optimizer.update(params, grads)
    states = [a for value in vars(optimizer).values() if isinstance(value, list) for a in value]
    kinds = optimizer.state_arrays()
    assert all(len(kind) == len(params) for kind in kinds)
    assert sorted(id(a) for kind in kinds for a in kind) == sorted(map(id, states))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_keeps_float32_parameters_float32(name, rng):
    p = rng.standard_normal((3, 3)).astype(np.float32)
    g = rng.standard_normal((3, 3)).astype(np.float32)
    optimizer = make_optimizer(name)
    updates = optimizer._updates([p], [g])
    assert all(u.dtype == np.float32 for u in updates)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_rejects_non_positive_learning_rate(name):
    with pytest.raises(ValueError, match="learning_rate"):
        make_optimizer(name, learning_rate=0.0)


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ValueError, match="sgd, momentum"):
        make_optimizer("lion")


def test_adam_first_steps_match_hand_computation():
    # lr 0.1, g = 2 then 4, defaults beta1 0.9, beta2 0.999, eps 1e-8.
    adam = Adam(learning_rate=0.1)
    p = np.array([1.0])
    adam.update([p], [np.array([2.0])])
    # m = 0.2, v = 0.004; m_hat = 2, v_hat = 4: step = 0.1 * 2 / (2 + 1e-8)
    assert p[0] == pytest.approx(1.0 - 0.1 * 2 / (2 + 1e-8), abs=1e-12)
    adam.update([p], [np.array([4.0])])
    m = 0.9 * 0.2 + 0.1 * 4  # 0.58
    v = 0.999 * 0.004 + 0.001 * 16  # 0.019996
    m_hat, v_hat = m / (1 - 0.9**2), v / (1 - 0.999**2)
    expected = 1.0 - 0.1 * 2 / (2 + 1e-8) - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8)
    assert p[0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_one_flat_array_steps_like_the_arrays_it_holds(name, rng):
    # The training loop hands optimizers the net's flat buffers: every rule is elementwise, so
    # stepping the concatenation must give, bit for bit, what stepping each array gives.
    shapes = [(3, 4), (4,), (4, 2)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    flat = np.concatenate([p.ravel() for p in params])
    per_array, whole = make_optimizer(name), make_optimizer(name)
    for _ in range(3):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        per_array.update(params, grads)
        whole.update([flat], [np.concatenate([g.ravel() for g in grads])])
    np.testing.assert_array_equal(flat, np.concatenate([p.ravel() for p in params]))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_searchable_hyperparameters_are_keywords_with_defaults_in_their_range(name):
    cls = OPTIMIZERS[name]
    for h in cls.searchable():
        assert h.low <= h.default < h.high
        make_optimizer(name, learning_rate=0.1, **{h.name: h.low})  # the range is allowed
        with pytest.raises(ValueError):
            make_optimizer(name, learning_rate=0.1, **{h.name: h.high})
