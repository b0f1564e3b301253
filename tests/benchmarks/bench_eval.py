"""Benchmark: what ``[training] eval_train_samples`` saves per epoch on an MNIST-sized split.

After every epoch the trainer measures loss and accuracy on the training split and the
validation split. On MNIST's 48,000 training rows that evaluation is a forward pass over 60,000
rows, beside the epoch's 480 training steps of 100. The benchmark trains the book's MNIST-sized
net (784 inputs, three hidden layers of 400 ReLU units, 10 classes, batch 100, Adam, one BLAS
thread, as hpo's workers train) on an MNIST-shaped synthetic split (48,000 training and 12,000
validation rows of 784 features with labels from a random linear teacher; no download is possible
here), one epoch at a time, with every training row measured and with a 5,000-row subset,
interleaved so that machine noise hits both alike. Reported: seconds per epoch for each, the
evaluation's share of the epoch, and the ratio.

Run: ``python tests/benchmarks/bench_eval.py [--repeats 3]`` (about a minute on 2 cores). Not a
pytest test: the default pytest run ignores ``tests/benchmarks``.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from trainer.network import MultiLayerNet  # noqa: E402
from trainer.optimizers import make_optimizer  # noqa: E402
from trainer.training import evaluate_splits, train  # noqa: E402

N_TRAIN, N_VAL, FEATURES, CLASSES = 48_000, 12_000, 784, 10
HIDDEN = (400, 400, 400)
SUBSET = 5_000


def mnist_shaped(rng: np.random.Generator):
    """(x_train, y_train, x_val, y_val): standardized float32 rows, labels of a linear teacher."""
    x = rng.standard_normal((N_TRAIN + N_VAL, FEATURES), dtype=np.float32)
    teacher = rng.standard_normal((FEATURES, CLASSES), dtype=np.float32)
    y = np.argmax(x @ teacher + rng.standard_normal((len(x), CLASSES), dtype=np.float32), axis=1)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def epoch_seconds(data, eval_train, seed: int) -> float:
    x_train, y_train, x_val, y_val = data
    net = MultiLayerNet(
        input_size=FEATURES,
        hidden_sizes=HIDDEN,
        output_size=CLASSES,
        rng=np.random.default_rng(seed),
    )
    start = time.perf_counter()
    optimizer = make_optimizer("adam", learning_rate=1e-3)
    shuffle = np.random.default_rng(seed)
    train(net, optimizer, x_train, y_train, x_val, y_val, epochs=1, batch_size=100,
          rng=shuffle, eval_train=eval_train)  # fmt: skip
    return time.perf_counter() - start


def eval_seconds(data, eval_train, seed: int) -> float:
    """The per-epoch evaluation alone, as ``train`` runs it."""
    x_train, y_train, x_val, y_val = data
    if eval_train is not None:
        x_train, y_train = x_train[eval_train], y_train[eval_train]
    net = MultiLayerNet(
        input_size=FEATURES, hidden_sizes=HIDDEN, output_size=CLASSES,
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    both = (np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]))
    start = time.perf_counter()
    evaluate_splits(net, both, len(y_train))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, metavar="N")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    data = mnist_shaped(rng)
    subset = np.sort(rng.choice(N_TRAIN, size=SUBSET, replace=False))
    runs = {"every training row": None, f"eval_train_samples = {SUBSET:,}": subset}
    epochs: dict[str, list[float]] = {name: [] for name in runs}
    evals: dict[str, list[float]] = {name: [] for name in runs}
    with threadpool_limits(limits=1, user_api="blas"):
        for repeat in range(args.repeats):
            for name, rows in runs.items():
                epochs[name].append(epoch_seconds(data, rows, repeat))
                evals[name].append(eval_seconds(data, rows, repeat))
    print(
        f"bench_eval: {N_TRAIN:,} + {N_VAL:,} rows x {FEATURES}, hidden {list(HIDDEN)}, batch "
        f"100, Adam, 1 BLAS thread; median of {args.repeats}"
    )
    print(f"  {'':34}  {'s/epoch':>8}  {'evaluation s':>12}  {'share of the epoch':>18}")
    for name in runs:
        epoch, ev = statistics.median(epochs[name]), statistics.median(evals[name])
        print(f"  {name:34}  {epoch:8.2f}  {ev:12.2f}  {ev / epoch:18.0%}")
    ratio = statistics.median(epochs["every training row"]) / statistics.median(
        epochs[f"eval_train_samples = {SUBSET:,}"]
    )
    print(f"  epochs per second, subset over every row: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
