"""MultiLayerNet: whole-network gradients, init rules, weight decay and state."""

import numpy as np
import pytest

from tests.trainer.gradient_check import numerical_gradient, relative_error
from trainer.layers import BatchNorm, Dropout, Sigmoid
from trainer.network import MultiLayerNet, init_std


def make_net(**overrides) -> MultiLayerNet:
    options = dict(
        input_size=6,
        hidden_sizes=(5, 4),
        output_size=3,
        activation="tanh",
        dtype=np.float64,
        rng=np.random.default_rng(3),
    )
    options.update(overrides)
    return MultiLayerNet(**options)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"batchnorm": True},
        {"dropout_ratio": 0.3},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "weight_decay_type": "l1"},
        {"batchnorm": True, "dropout_ratio": 0.3, "weight_decay": 0.05, "activation": "sigmoid"},
    ],
    ids=["plain", "batchnorm", "dropout", "l2", "l1", "all"],
)
def test_backprop_matches_numerical_gradient(overrides, rng):
    net = make_net(**overrides)
    x = rng.standard_normal((7, 6))
    labels = np.array([0, 1, 2, 0, 1, 2, 0])
    dropouts = [layer for layer in net.layers if isinstance(layer, Dropout)]

    def fix_masks():
        for i, layer in enumerate(dropouts):
            layer.rng = np.random.default_rng(100 + i)

    def loss() -> float:
        fix_masks()
        return net.loss(x, labels, train=True)

    fix_masks()
    net.gradient(x, labels)
    analytic = [g.copy() for g in net.grads]
    numeric = numerical_gradient(loss, net.params)
    for a, n in zip(analytic, numeric, strict=True):
        assert relative_error(a, n) < 1e-6


def test_layer_stack_order():
    net = make_net(batchnorm=True, dropout_ratio=0.5, activation="sigmoid")
    names = [type(layer).__name__ for layer in net.layers]
    assert names == [
        "Affine",
        "BatchNorm",
        "Sigmoid",
        "Dropout",
        "Affine",
        "BatchNorm",
        "Sigmoid",
        "Dropout",
        "Affine",
    ]
    assert isinstance(net.layers[1], BatchNorm) and isinstance(net.layers[2], Sigmoid)


@pytest.mark.parametrize(
    ("init", "scale", "expected"),
    [
        ("he", 1.0, np.sqrt(2 / 400)),
        ("xavier", 1.0, np.sqrt(1 / 400)),
        ("std", 0.01, 0.01),
        ("he", 0.5, 0.5 * np.sqrt(2 / 400)),
    ],
)
def test_init_rule_sets_weight_std(init, scale, expected):
    net = MultiLayerNet(
        input_size=400,
        hidden_sizes=(400,),
        output_size=400,
        init=init,
        init_scale=scale,
        rng=np.random.default_rng(0),
    )
    assert net.affines[0].params["W"].std() == pytest.approx(expected, rel=0.02)
    assert not net.affines[0].params["b"].any()


def test_weight_decay_applies_to_weights_only():
    net = make_net(weight_decay=0.0, batchnorm=True)
    decayed = make_net(weight_decay=0.5, batchnorm=True)
    x = np.random.default_rng(0).standard_normal((4, 6))
    labels = np.array([0, 1, 2, 1])
    net.gradient(x, labels)
    decayed.gradient(x, labels)
    for layer, other in zip(net.layers, decayed.layers, strict=True):
        for key in layer.grads:
            diff = other.grads[key] - layer.grads[key]
            if key == "W":
                np.testing.assert_allclose(diff, 0.5 * layer.params["W"], atol=1e-12)
            else:
                np.testing.assert_array_equal(diff, 0.0)


def test_l2_penalty_value():
    net = make_net(weight_decay=0.2)
    total = sum(np.sum(a.params["W"] ** 2) for a in net.affines)
    assert net.penalty() == pytest.approx(0.1 * total)


def test_state_round_trip_includes_batchnorm_statistics(rng):
    net = make_net(batchnorm=True)
    saved = net.state()
    net.gradient(rng.standard_normal((5, 6)), np.array([0, 1, 2, 0, 1]))
    for p, g in zip(net.params, net.grads, strict=True):
        p -= g
    bn = net.layers[1]
    assert not np.array_equal(bn.running_mean, saved[len(net.params)])
    net.load_state(saved)
    for a, b in zip(net.state(), saved, strict=True):
        np.testing.assert_array_equal(a, b)


def test_same_seed_gives_same_weights_across_dtypes():
    a = make_net(dtype=np.float32, rng=np.random.default_rng(5))
    b = make_net(dtype=np.float64, rng=np.random.default_rng(5))
    for pa, pb in zip(a.params, b.params, strict=True):
        assert pa.dtype == np.float32
        np.testing.assert_array_equal(pa, pb.astype(np.float32))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"activation": "swish"}, "activation"),
        ({"init": "lecun"}, "init"),
        ({"init_scale": 0.0}, "init_scale"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"weight_decay_type": "l3"}, "weight_decay_type"),
        ({"hidden_sizes": (0,)}, "sizes"),
    ],
)
def test_rejects_bad_arguments(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_net(**overrides)


def test_params_and_grads_are_views_into_the_flat_buffers(rng):
    net = make_net(batchnorm=True)
    assert net.flat_params.size == sum(p.size for p in net.params)
    layer_params = [v for layer in net.layers for v in layer.params.values()]
    layer_grads = [v for layer in net.layers for v in layer.grads.values()]
    assert all(a is b for a, b in zip(layer_params, net.params, strict=True))
    assert all(a is b for a, b in zip(layer_grads, net.grads, strict=True))
    assert all(np.shares_memory(p, net.flat_params) for p in net.params)
    assert all(np.shares_memory(g, net.flat_grads) for g in net.grads)
    net.gradient(rng.standard_normal((5, 6)), np.array([0, 1, 2, 0, 1]))
    np.testing.assert_array_equal(net.flat_grads, np.concatenate([g.ravel() for g in net.grads]))
    np.testing.assert_array_equal(net.flat_params, np.concatenate([p.ravel() for p in net.params]))


def test_flat_buffer_keeps_the_initial_weights():
    # Copying the weights into the buffer must not change the draw a seed gives.
    net = make_net(rng=np.random.default_rng(5))
    rng = np.random.default_rng(5)
    W = init_std("he", 6, 1.0) * rng.standard_normal((6, 5))
    np.testing.assert_array_equal(net.affines[0].params["W"], W)


def test_updating_the_flat_buffer_moves_the_layers_weights(rng):
    net = make_net()
    x, labels = rng.standard_normal((5, 6)), np.array([0, 1, 2, 0, 1])
    before = net.loss(x, labels)
    net.gradient(x, labels)
    net.flat_params -= 0.1 * net.flat_grads
    assert net.loss(x, labels) < before
    np.testing.assert_array_equal(net.affines[0].params["W"], net.params[0])


def test_load_state_keeps_params_as_views(rng):
    net = make_net(batchnorm=True)
    saved = net.state()
    net.flat_params += 1.0
    net.load_state(saved)
    assert all(np.shares_memory(p, net.flat_params) for p in net.params)
    for p, s in zip(net.params, saved[: len(net.params)], strict=True):
        np.testing.assert_array_equal(p, s)
        assert not np.shares_memory(s, net.flat_params)  # state() copies


@pytest.mark.parametrize(
    "overrides",
    [{}, {"batchnorm": True, "dropout_ratio": 0.3, "weight_decay": 0.1}],
    ids=["plain", "all"],
)
def test_float32_net_computes_in_float32(overrides, rng):
    # Gradients land in float32 buffers through out=, which would cast a float64 upcast away
    # silently: check what each layer hands on instead.
    net = make_net(dtype=np.float32, activation="relu", **overrides)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1])
    for layer in net.layers:
        x = layer.forward(x, train=True)
        assert x.dtype == np.float32, type(layer).__name__
    net.loss_layer.forward(x, labels)
    dout = net.loss_layer.backward()
    assert dout.dtype == np.float32
    for layer in reversed(net.layers[1:]):
        dout = layer.backward(dout)
        assert dout.dtype == np.float32, type(layer).__name__
    assert isinstance(net.gradient(rng.standard_normal((5, 6)).astype(np.float32), labels), float)
