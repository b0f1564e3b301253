"""trainer.checkpoint: a trained net saved with its standardization, loaded back the same."""

import numpy as np

from trainer.checkpoint import load_checkpoint, predict_raw, save_checkpoint
from trainer.config import DataConfig, NetConfig, RunConfig, TrainConfig


def test_a_saved_net_loads_back_with_the_same_state_and_predictions(tmp_path):
    run = RunConfig(
        data=DataConfig(train_size=300),
        net=NetConfig(hidden_sizes=(16, 8), batchnorm=True, dropout_ratio=0.1),
        training=TrainConfig(optimizer="adam", epochs=2),
    )
    split = run.data.load()
    net, _ = run.train(split, np.random.SeedSequence(0))
    path = tmp_path / "net.npz"
    save_checkpoint(path, net, mean=split.mean, std=split.std, extra={"trial": 3})
    loaded, meta = load_checkpoint(path)
    assert meta["extra"] == {"trial": 3}
    assert all((a == b).all() for a, b in zip(net.state(), loaded.state(), strict=True))
    assert (loaded.predict(split.x_test) == net.predict(split.x_test)).all()
    raw = split.x_test * split.std + split.mean  # back to the inputs before standardization
    expected = np.argmax(net.predict(split.x_test), axis=1)
    assert (predict_raw(loaded, meta, raw) == expected).mean() > 0.99


def test_a_checkpoint_needs_no_pickle(tmp_path):
    run = RunConfig(data=DataConfig(train_size=100), net=NetConfig(hidden_sizes=(4,)))
    split = run.data.load()
    net, _ = run.build(split, np.random.SeedSequence(1))
    path = tmp_path / "net.npz"
    save_checkpoint(path, net, mean=split.mean, std=split.std)
    with np.load(path, allow_pickle=False) as archive:
        assert {"meta", "mean", "std", "state_0"} <= set(archive.files)
