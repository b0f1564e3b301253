"""trainer.contract: a learner's net of either shape trains through train(), and a net that
breaks the contract is refused with one line naming what is wrong."""

from pathlib import Path

import numpy as np
import pytest

from trainer.config import NetConfig, RunConfig, TrainConfig
from trainer.contract import (
    BOOK,
    CS231N,
    AdaptedNet,
    NetworkError,
    Trainable,
    build_network,
    check_network,
    load_network,
)
from trainer.datasets import load_split
from trainer.network import MultiLayerNet

NETS = Path(__file__).parent.parent / "nets"
BOOK_NET = f"{NETS / 'book_net.py'}:TwoLayerNet"
CS231N_NET = f"{NETS / 'cs231n_net.py'}:TwoLayerNet"
BAD = NETS / "bad_nets.py"


@pytest.fixture(scope="module")
def split():
    return load_split("digits", rng=np.random.default_rng(0), train_size=600)


def build(reference, split, seed=0, **args):
    return build_network(
        load_network(reference),
        args,
        n_features=split.n_features,
        n_classes=split.n_classes,
        rng=np.random.default_rng(seed),
    )


def test_the_built_in_net_and_an_adapted_net_are_trainables(split):
    net = MultiLayerNet(input_size=4, hidden_sizes=(3,), output_size=2, rng=np.random.default_rng())
    assert isinstance(net, Trainable)
    assert isinstance(build(BOOK_NET, split, hidden_size=8), Trainable)


@pytest.mark.parametrize(
    ("reference", "shape", "args"),
    [(BOOK_NET, BOOK, {"hidden_size": 30}), (CS231N_NET, CS231N, {"hidden_dim": 30})],
    ids=["book", "cs231n"],
)
def test_each_shape_trains_above_chance_on_digits(split, reference, shape, args):
    run = RunConfig(
        net=NetConfig(network=reference, args=tuple(args.items())),
        training=TrainConfig(optimizer="adam", hyperparameters=(("learning_rate", 0.01),)),
    )
    net, result = run.train(split, np.random.SeedSequence(0))
    assert net.shape == shape
    assert result.best_val_accuracy > 0.8  # chance is 0.1
    assert not result.diverged


def test_the_optimizer_updates_params_in_place_so_layers_holding_them_see_each_step(split):
    net = build(BOOK_NET, split, hidden_size=8)
    w1 = net.net.params["W1"]
    held = net.net.layers["Affine1"].W  # the book's layers keep references to params' arrays
    before = w1.copy()
    run = RunConfig(training=TrainConfig(epochs=1, hyperparameters=(("learning_rate", 0.1),)))
    run.fit(net, split, np.random.default_rng(0))
    assert net.net.params["W1"] is w1 and held is w1
    assert not np.array_equal(w1, before)


def test_the_global_random_state_is_seeded_from_the_run_so_a_run_repeats_bit_for_bit(split):
    run = RunConfig(
        net=NetConfig(network=CS231N_NET, args=(("hidden_dim", 20),)),
        training=TrainConfig(epochs=3, hyperparameters=(("learning_rate", 0.1),)),
    )
    histories = []
    for _ in range(2):
        np.random.seed(12345)  # noqa: NPY002 - whatever state the process was in
        np.random.rand(7)  # noqa: NPY002
        _, result = run.train(split, np.random.SeedSequence([0, 5]))
        histories.append(result.history.as_dict())
    assert histories[0] == histories[1]
    _, other = run.train(split, np.random.SeedSequence([0, 6]))
    assert other.history.as_dict() != histories[0]


def test_the_data_sizes_go_to_the_constructor_under_its_own_names(split):
    book, cs231n = build(BOOK_NET, split, hidden_size=5), build(CS231N_NET, split, hidden_dim=5)
    assert book.net.params["W1"].shape == (split.n_features, 5)
    assert book.net.params["W2"].shape == (5, split.n_classes)
    assert cs231n.net.params["W2"].shape == (5, split.n_classes)


def test_restoring_the_best_epoch_puts_the_params_back_in_place(split):
    net = build(CS231N_NET, split, hidden_dim=5)
    saved = net.state()
    w1 = net.net.params["W1"]
    w1 += 1.0
    net.load_state(saved)
    assert net.net.params["W1"] is w1
    np.testing.assert_array_equal(w1, saved[0])


def test_a_net_whose_gradients_are_nan_is_a_diverged_run(split):
    run = RunConfig(net=NetConfig(network=f"{BAD}:Diverges"), training=TrainConfig(epochs=3))
    _, result = run.train(split, np.random.SeedSequence(0))
    assert result.diverged and result.stop_reason == "diverged"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("RaisesInConstructor", "RaisesInConstructor(...) raised RuntimeError: out of coffee"),
        ("NoParams", "has no params dict of arrays"),
        ("NoGradient", "neither gradient(x, t) with predict(x)"),
        ("WrongKeys", "missing ['W2'], extra ['W3']"),
        ("WrongShape", "the gradient of 'W1' has shape (3,), params['W1'] (64, 8)"),
        ("WrongScores", "have shape (8, 3) (allowed: (8, 10), one column per class)"),
        ("RaisesInGradient", "raised IndexError: index 64 is out of bounds on a batch of 8"),
        ("ListParams", "params['W1'] is a list (allowed: a floating-point ndarray)"),
    ],
)
def test_a_net_that_breaks_the_contract_is_one_line_naming_what_is_wrong(split, name, fragment):
    with pytest.raises(NetworkError) as excinfo:
        NetConfig(network=f"{BAD}:{name}").check(split)
    message = str(excinfo.value)
    assert fragment in message and "\n" not in message


def test_a_net_that_meets_the_contract_passes_the_check(split):
    NetConfig(network=BOOK_NET, args=(("hidden_size", 4),)).check(split)
    NetConfig(network=CS231N_NET).check(split)
    check_network(build(BOOK_NET, split, hidden_size=4), split.x_train[:3], split.y_train[:3], 10)


@pytest.mark.parametrize(
    ("text", "reference", "fragment"),
    [
        ("import numpy as np\n\nclass Broken(\n", "net.py:Broken", "net.py does not import: "),
        ("import not_a_module_anywhere\n", "net.py:X", "No module named 'not_a_module_anywhere'"),
        ("class Other:\n    pass\n", "net.py:TwoLayerNet", "no class TwoLayerNet (classes there: "),
        (None, "missing.py:Net", "missing.py: no such file"),
        (None, "no_such_package.nets:Net", "module no_such_package.nets does not import"),
        (None, "nets.py", "is not FILE.py:Class or package.module:Class"),
    ],
    ids=["syntax", "import", "class", "file", "module", "form"],
)
def test_a_network_that_cannot_be_loaded_is_one_line(tmp_path, text, reference, fragment):
    if text is not None:
        (tmp_path / "net.py").write_text(text)
    where = f"{tmp_path}/{reference}" if reference.split(":")[0].endswith(".py") else reference
    with pytest.raises(NetworkError) as excinfo:
        load_network(where)
    assert fragment in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_an_argument_the_constructor_does_not_take_names_the_ones_it_does(split):
    with pytest.raises(NetworkError, match=r"takes no argument 'hidden' \(allowed: hidden_dim"):
        build(CS231N_NET, split, hidden=5)
    with pytest.raises(NetworkError, match="input_dim is set by the data"):
        build(CS231N_NET, split, input_dim=5)


def test_a_learner_net_and_its_arguments_round_trip_through_the_trainer_flags(split):
    from trainer.cli import build_parser, run_config

    run = RunConfig(net=NetConfig(network=CS231N_NET, args=(("hidden_dim", 7), ("reg", 0.25))))
    assert run_config(build_parser().parse_args(run.flags((0, 3)))) == run


def test_an_adapted_net_exports_and_loads_with_its_own_keys(split, tmp_path):
    from trainer.checkpoint import load_checkpoint, predict_raw, save_checkpoint

    net = build(CS231N_NET, split, hidden_dim=6)
    network = {"network": CS231N_NET, "args": {"hidden_dim": 6}, "n_classes": split.n_classes}
    path = tmp_path / "net.npz"
    save_checkpoint(path, net, mean=split.mean, std=split.std, network=network)
    with np.load(path) as archive:
        assert {"param:W1", "param:b1", "param:W2", "param:b2"} <= set(archive.files)
    loaded, meta = load_checkpoint(path)
    assert isinstance(loaded, AdaptedNet)
    raw = split.x_val[:5] * split.std + split.mean
    np.testing.assert_array_equal(
        predict_raw(loaded, meta, raw), np.argmax(net.predict(split.x_val[:5]), axis=1)
    )
