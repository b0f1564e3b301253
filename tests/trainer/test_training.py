"""The training loop: convergence, determinism, divergence, callbacks and early stopping."""

import numpy as np
import pytest

from trainer.datasets import load_split
from trainer.network import MultiLayerNet
from trainer.optimizers import make_optimizer
from trainer.training import FLUSH_BELOW, NegligibleFlush, evaluate, evaluate_splits, train


def run(
    *,
    seed=0,
    optimizer="adam",
    learning_rate=None,
    epochs=5,
    batch_size=50,
    train_size=300,
    **options,
):
    seeds = np.random.SeedSequence(seed).spawn(3)
    split = load_split("digits", rng=np.random.default_rng(seeds[0]), train_size=train_size)
    net_options = {
        "hidden_sizes": (50, 50),
        **{k: options.pop(k) for k in list(options) if k in ("batchnorm", "dropout_ratio")},
    }
    net = MultiLayerNet(
        input_size=split.n_features,
        output_size=split.n_classes,
        rng=np.random.default_rng(seeds[1]),
        **net_options,
    )
    hyper = {} if learning_rate is None else {"learning_rate": learning_rate}
    result = train(
        net,
        make_optimizer(optimizer, **hyper),
        split.x_train,
        split.y_train,
        split.x_val,
        split.y_val,
        epochs=epochs,
        batch_size=batch_size,
        rng=np.random.default_rng(seeds[2]),
        **options,
    )
    return result, net, split


def test_digits_reaches_95_percent_with_adam_within_30_epochs():
    seeds = np.random.SeedSequence(0).spawn(3)
    split = load_split("digits", rng=np.random.default_rng(seeds[0]))
    net = MultiLayerNet(
        input_size=64, hidden_sizes=(100, 100), output_size=10, rng=np.random.default_rng(seeds[1])
    )
    result = train(
        net,
        make_optimizer("adam"),
        split.x_train,
        split.y_train,
        split.x_val,
        split.y_val,
        epochs=30,
        batch_size=100,
        rng=np.random.default_rng(seeds[2]),
    )
    assert result.best_val_accuracy >= 0.95
    assert net.accuracy(split.x_val, split.y_val) == result.best_val_accuracy  # best restored


def test_same_seed_gives_identical_history():
    a, _, _ = run(seed=3, dropout_ratio=0.2, batchnorm=True)
    b, _, _ = run(seed=3, dropout_ratio=0.2, batchnorm=True)
    assert a.history.as_dict() == b.history.as_dict()


def test_different_seeds_give_different_histories():
    a, _, _ = run(seed=3)
    b, _, _ = run(seed=4)
    assert a.history.as_dict() != b.history.as_dict()


def test_history_has_one_entry_per_epoch():
    result, _, _ = run(epochs=4)
    assert result.epochs_run == 4
    assert result.stop_reason == "completed"
    assert all(len(v) == 4 for v in result.history.as_dict().values())
    assert result.best_val_accuracy == max(result.history.val_accuracy)
    assert result.history.val_accuracy[result.best_epoch - 1] == result.best_val_accuracy


def test_batch_loss_has_one_entry_per_step():
    result, _, _ = run(epochs=3, batch_size=64, train_size=300)  # 240 training rows: 4 steps
    assert len(result.batch_loss) == 3 * 4
    assert all(isinstance(v, float) and v > 0 for v in result.batch_loss)
    assert result.batch_loss[-1] < result.batch_loss[0]


def test_non_finite_loss_stops_at_once_without_warnings(recwarn):
    result, net, _ = run(optimizer="sgd", learning_rate=1e4, epochs=50, divergence_factor=None)
    assert result.diverged and result.stop_reason == "diverged"
    assert result.epochs_run < 50
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    if result.epochs_run:
        assert all(np.all(np.isfinite(p)) for p in net.params)


def test_exploding_loss_counts_as_diverged_before_it_overflows():
    result, _, _ = run(optimizer="sgd", learning_rate=10.0, epochs=20)
    assert result.diverged and result.epochs_run <= 1
    slow, _, _ = run(optimizer="sgd", learning_rate=10.0, epochs=20, divergence_factor=None)
    assert not slow.diverged or slow.epochs_run > result.epochs_run


def test_callback_can_stop_training():
    seen = []

    def stop_after_two(metrics):
        seen.append(metrics.epoch)
        return metrics.epoch == 2

    result, _, _ = run(epochs=10, on_epoch_end=stop_after_two)
    assert seen == [1, 2]
    assert result.epochs_run == 2 and result.stop_reason == "callback"


def test_early_stopping_restores_best_weights():
    result, net, split = run(epochs=60, patience=2, learning_rate=0.05, optimizer="sgd")
    assert result.stop_reason == "early_stopping"
    assert result.epochs_run == result.best_epoch + 2
    assert net.accuracy(split.x_val, split.y_val) == result.best_val_accuracy


def test_learning_rate_decay_is_applied_per_epoch():
    seeds = np.random.SeedSequence(0).spawn(2)
    split = load_split("digits", rng=np.random.default_rng(seeds[0]), train_size=100)
    net = MultiLayerNet(
        input_size=64, hidden_sizes=(10,), output_size=10, rng=np.random.default_rng(1)
    )
    optimizer = make_optimizer("sgd", learning_rate=0.1)
    train(
        net,
        optimizer,
        split.x_train,
        split.y_train,
        split.x_val,
        split.y_val,
        epochs=3,
        batch_size=20,
        rng=np.random.default_rng(2),
        lr_decay=0.5,
    )
    assert optimizer.learning_rate == pytest.approx(0.1 * 0.5**3)


@pytest.mark.parametrize(
    ("option", "value"), [("epochs", 0), ("batch_size", 0), ("patience", 0), ("lr_decay", 1.5)]
)
def test_rejects_bad_arguments(option, value):
    with pytest.raises(ValueError, match=option):
        run(**{option: value})


def test_evaluate_splits_measures_each_split_as_evaluate_does():
    _, net, split = run(epochs=1)
    x = np.concatenate([split.x_train, split.x_val])
    both = (x, np.concatenate([split.y_train, split.y_val]))
    first, second = evaluate_splits(net, both, len(split.y_train))
    train_loss, train_acc = evaluate(net, split.x_train, split.y_train)
    val_loss, val_acc = evaluate(net, split.x_val, split.y_val)
    assert first[0] == pytest.approx(train_loss, rel=1e-5) and first[1] == train_acc
    assert second[0] == pytest.approx(val_loss, rel=1e-5) and second[1] == val_acc


def test_eval_train_measures_a_subset_and_changes_nothing_else():
    seeds = np.random.SeedSequence(0).spawn(2)
    split = load_split("digits", rng=np.random.default_rng(seeds[0]), train_size=300)
    subset = np.array([0, 5, 7, 100, 200])

    def fit(**options):
        net = MultiLayerNet(input_size=64, hidden_sizes=(30,), output_size=10,
                            rng=np.random.default_rng(seeds[1]))  # fmt: skip
        result = train(net, make_optimizer("adam"), split.x_train, split.y_train, split.x_val,
                       split.y_val, epochs=3, batch_size=50, rng=np.random.default_rng(1),
                       restore_best=False, **options)  # fmt: skip
        return net, result

    net_all, every = fit()
    net_some, some = fit(eval_train=subset)
    assert some.batch_loss == every.batch_loss  # the same training, step for step
    assert some.history.val_accuracy == every.history.val_accuracy
    assert some.history.val_loss == every.history.val_loss
    loss, accuracy = evaluate(net_some, split.x_train[subset], split.y_train[subset])
    assert some.history.train_accuracy[-1] == accuracy
    assert some.history.train_loss[-1] == pytest.approx(loss, rel=1e-6)
    assert every.history.train_accuracy[-1] == evaluate(net_all, split.x_train, split.y_train)[1]


def test_a_split_larger_than_an_evaluation_batch_is_never_copied():
    """Workers map a large split from a shared file: the epoch's evaluation must read it in
    place, not concatenate it into a private copy."""
    import tracemalloc

    rng = np.random.default_rng(0)
    x = rng.standard_normal((6000, 500)).astype(np.float32)  # 12 MB, > EVAL_BATCH rows
    y = rng.integers(0, 3, size=6000)
    x.flags.writeable = False
    net = MultiLayerNet(input_size=500, hidden_sizes=[8], output_size=3, rng=rng)
    tracemalloc.start()
    try:
        result = train(
            net, make_optimizer("sgd", learning_rate=0.01), x[:5000], y[:5000], x[5000:], y[5000:],
            epochs=1, batch_size=100, rng=rng,
        )  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.epochs_run == 1
    assert peak < x.nbytes / 4, (
        f"{peak / 2**20:.1f} MiB allocated for a {x.nbytes / 2**20:.1f} MiB split"
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_flush_zeroes_negligible_weights_and_their_state_and_nothing_else(dtype):
    tiny, below = np.finfo(dtype).tiny, FLUSH_BELOW[np.dtype(dtype)]
    values = np.array([tiny / 2, -below / 2, -tiny, 0.0, -0.0, below, 1.0, -3e-3], dtype=dtype)
    params = values.copy()
    optimizer = make_optimizer("adam")
    optimizer.update([params], [np.ones_like(params)])  # a state of nonzero moments
    params[...] = values
    (first,), (second,) = ([a.copy() for a in kind] for kind in optimizer.state_arrays())
    NegligibleFlush(optimizer)([params])
    zeroed = np.array([True, True, True, False, False, False, False, False])
    np.testing.assert_array_equal(params, np.where(zeroed, 0, values))
    np.testing.assert_array_equal(optimizer.state_arrays()[0][0], np.where(zeroed, 0, first))
    np.testing.assert_array_equal(optimizer.state_arrays()[1][0], np.where(zeroed, 0, second))


def test_the_flush_takes_each_parameter_array_with_its_own_state(rng):
    params = [rng.standard_normal((3, 4)), np.array([1e-200, 2.0])]
    optimizer = make_optimizer("momentum")
    optimizer.update(params, [np.ones_like(p) for p in params])
    params[0][1, 2], params[1][...] = 1e-200, [1e-200, 2.0]
    before = [v.copy() for v in optimizer.velocities]
    NegligibleFlush(optimizer)(params)
    assert params[0][1, 2] == 0 and np.count_nonzero(params[0]) == 11
    assert params[1].tolist() == [0.0, 2.0]
    assert optimizer.velocities[0][1, 2] == 0 and optimizer.velocities[1][0] == 0
    assert optimizer.velocities[1][1] == before[1][1]


def decaying_run(*, flush_negligible: bool):
    """Adam with L2 decay on digits: the first-layer weights of its blank border pixels get
    nothing but the decay's gradient and shrink geometrically, past float32's smallest normal."""
    seeds = np.random.SeedSequence(0).spawn(3)
    split = load_split("digits", rng=np.random.default_rng(seeds[0]), train_size=400)
    net = MultiLayerNet(
        input_size=split.n_features,
        hidden_sizes=(8,),
        output_size=split.n_classes,
        weight_decay=0.003,
        rng=np.random.default_rng(seeds[1]),
    )
    result = train(
        net,
        make_optimizer("adam"),
        split.x_train,
        split.y_train,
        split.x_val,
        split.y_val,
        epochs=60,
        batch_size=10,
        rng=np.random.default_rng(seeds[2]),
        restore_best=False,
        flush_negligible=flush_negligible,
    )
    magnitude = np.abs(net.flat_params)
    subnormal = np.count_nonzero((magnitude > 0) & (magnitude < np.finfo(np.float32).tiny))
    return result, subnormal


def test_weight_decay_with_adam_makes_subnormal_weights_that_the_flush_prevents():
    assert decaying_run(flush_negligible=False)[1] > 0
    first, subnormal = decaying_run(flush_negligible=True)
    assert subnormal == 0
    again, _ = decaying_run(flush_negligible=True)
    assert again.history.as_dict() == first.history.as_dict()
    assert again.batch_loss == first.batch_loss
