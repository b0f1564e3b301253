"""Each layer's backward pass against a float64 numerical gradient; train and inference modes."""

import numpy as np
import pytest

from tests.trainer.gradient_check import numerical_gradient, relative_error
from trainer.layers import (
    Affine,
    BatchNorm,
    Dropout,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
    cross_entropy,
    sample_cross_entropy,
)


def check_layer(layer, x: np.ndarray, rng: np.random.Generator, *, reset=None) -> None:
    """Compare backward with central differences of sum(forward(x) * dout)."""
    out = layer.forward(x, train=True)
    dout = rng.standard_normal(out.shape)
    dout_before = dout.copy()

    def f() -> float:
        if reset is not None:
            reset()
        return float(np.sum(layer.forward(x, train=True) * dout))

    if reset is not None:
        reset()
    layer.forward(x, train=True)
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dout, dout_before)  # backward never writes into dout
    (num_dx,) = numerical_gradient(f, [x])
    assert relative_error(dx, num_dx) < 1e-6
    for key, param in layer.params.items():
        (num,) = numerical_gradient(f, [param])
        assert relative_error(layer.grads[key], num) < 1e-6, key


def test_affine_gradient(rng):
    layer = Affine(rng.standard_normal((5, 4)), rng.standard_normal(4))
    check_layer(layer, rng.standard_normal((3, 5)), rng)


@pytest.mark.parametrize("cls", [ReLU, LeakyReLU, Sigmoid, Tanh])
def test_activation_gradient(cls, rng):
    x = rng.standard_normal((4, 6))
    x[np.abs(x) < 1e-3] = 0.5  # keep central differences away from ReLU's kink
    check_layer(cls(), x, rng)


def test_batchnorm_gradient(rng):
    layer = BatchNorm(5, dtype=np.float64)
    layer.params["gamma"][:] = rng.standard_normal(5)
    layer.params["beta"][:] = rng.standard_normal(5)
    check_layer(layer, 3 * rng.standard_normal((8, 5)) + 1, rng)


def test_dropout_gradient_with_fixed_mask(rng):
    layer = Dropout(0.4, rng=np.random.default_rng(0))

    def reset():
        layer.rng = np.random.default_rng(0)

    check_layer(layer, rng.standard_normal((6, 7)), rng, reset=reset)


def test_softmax_with_loss_gradient(rng):
    scores = rng.standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    loss_layer = SoftmaxWithLoss()
    loss_layer.forward(scores, labels)
    dscores = loss_layer.backward()
    (num,) = numerical_gradient(lambda: cross_entropy(scores, labels), [scores])
    assert relative_error(dscores, num) < 1e-6


def test_softmax_with_loss_is_stable_for_huge_scores():
    scores = np.array([[1000.0, 0.0], [0.0, -1000.0]])
    loss = SoftmaxWithLoss().forward(scores, np.array([0, 0]))
    assert np.isfinite(loss) and loss == pytest.approx(0.0)


def test_softmax_with_loss_of_uniform_scores_is_log_classes():
    loss = SoftmaxWithLoss().forward(np.zeros((3, 10)), np.array([1, 2, 3]))
    assert loss == pytest.approx(np.log(10))


def test_batchnorm_uses_running_statistics_at_inference(rng):
    layer = BatchNorm(3, momentum=0.0, dtype=np.float64)  # momentum 0: running = last batch
    x = rng.standard_normal((50, 3)) * 4 + 7
    layer.forward(x, train=True)
    np.testing.assert_allclose(layer.running_mean, x.mean(axis=0))
    np.testing.assert_allclose(layer.running_var, x.var(axis=0))
    single = x[:1]
    expected = (single - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + layer.eps)
    np.testing.assert_allclose(layer.forward(single, train=False), expected)


def test_batchnorm_inference_does_not_change_running_statistics(rng):
    layer = BatchNorm(3, dtype=np.float64)
    layer.forward(rng.standard_normal((10, 3)), train=True)
    mean, var = layer.running_mean.copy(), layer.running_var.copy()
    layer.forward(rng.standard_normal((10, 3)) + 5, train=False)
    np.testing.assert_array_equal(layer.running_mean, mean)
    np.testing.assert_array_equal(layer.running_var, var)


def test_dropout_is_identity_at_inference(rng):
    layer = Dropout(0.5, rng=rng)
    x = rng.standard_normal((20, 30))
    np.testing.assert_array_equal(layer.forward(x, train=False), x)


def test_dropout_keeps_the_expected_activation(rng):
    layer = Dropout(0.3, rng=rng)
    x = np.ones((200, 500))
    out = layer.forward(x, train=True)
    assert np.mean(out == 0) == pytest.approx(0.3, abs=0.01)
    assert out.mean() == pytest.approx(1.0, abs=0.02)


def test_dropout_draws_masks_from_the_given_generator():
    x = np.ones((4, 8))
    a = Dropout(0.5, rng=np.random.default_rng(7)).forward(x, train=True)
    b = Dropout(0.5, rng=np.random.default_rng(7)).forward(x, train=True)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("ratio", [-0.1, 1.0])
def test_dropout_rejects_ratio_outside_unit_interval(ratio, rng):
    with pytest.raises(ValueError, match="ratio"):
        Dropout(ratio, rng=rng)


def test_float32_stays_float32(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    layers = [
        Affine(np.ones((5, 5), np.float32), np.zeros(5, np.float32)),
        BatchNorm(5),
        Sigmoid(),
        Tanh(),
        LeakyReLU(),
        Dropout(0.5, rng=rng),
    ]
    for layer in layers:
        x = layer.forward(x, train=True)
        assert x.dtype == np.float32, type(layer).__name__
    for layer in reversed(layers):
        x = layer.backward(x)
        assert x.dtype == np.float32, type(layer).__name__


def test_affine_input_gradient_follows_weights_changed_in_place(rng):
    # backward copies W.T for its dx product: the copy must be of the weights as they are now.
    W = rng.standard_normal((5, 4))
    layer = Affine(W, np.zeros(4))
    x, dout = rng.standard_normal((3, 5)), rng.standard_normal((3, 4))
    layer.forward(x, train=True)
    layer.backward(dout)
    W += 1.0
    layer.forward(x, train=True)
    np.testing.assert_allclose(layer.backward(dout), dout @ W.T, rtol=1e-12)


@pytest.mark.parametrize("cls", [Affine, ReLU, LeakyReLU, Sigmoid, Tanh, Dropout])
def test_inference_keeps_no_cache(cls, rng):
    x = rng.standard_normal((4, 3))
    if cls is Affine:
        layer = Affine(rng.standard_normal((3, 3)), np.zeros(3))
    elif cls is Dropout:
        layer = Dropout(0.5, rng=rng)
    else:
        layer = cls()
    layer.forward(x, train=True)
    layer.forward(x, train=False)
    caches = {k: v for k, v in vars(layer).items() if k in ("x", "mask", "slope", "out")}
    assert caches and all(v is None for v in caches.values())


def test_sample_cross_entropy_is_minus_log_softmax_of_the_label(rng):
    scores = 3 * rng.standard_normal((6, 4))
    labels = np.array([0, 3, 1, 1, 2, 0])
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    expected = -np.log(probs[np.arange(6), labels])
    np.testing.assert_allclose(sample_cross_entropy(scores, labels), expected, rtol=1e-12)
    assert cross_entropy(scores, labels) == pytest.approx(expected.mean(), rel=1e-12)
    assert SoftmaxWithLoss().forward(scores, labels) == pytest.approx(expected.mean(), rel=1e-12)


def test_sample_cross_entropy_is_stable_for_huge_scores():
    scores = np.array([[1000.0, 0.0], [0.0, -1000.0]], dtype=np.float32)
    losses = sample_cross_entropy(scores, np.array([0, 1]))
    assert losses.dtype == np.float32
    np.testing.assert_allclose(losses, [0.0, 1000.0])
