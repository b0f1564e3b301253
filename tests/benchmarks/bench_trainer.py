"""Benchmark: hpo's trainer against a book-style NumPy net and PyTorch, on the book's search setup.

The configuration is the one the book's hyperparameter search trains per trial: 500 digits (400
train, 100 validation), six hidden layers of 100 ReLU units, He init, batches of 100, 50 epochs of
SGD at learning rate 0.01, with loss and accuracy measured on both whole splits after every epoch.
Three implementations train it side by side:

1. hpo's ``trainer.training.train`` (float32), timed by its own ``train_seconds``;
2. a book-style NumPy net written below (float64, Affine/Relu/SoftmaxWithLoss layers in an
   OrderedDict, as in "Deep Learning from Scratch" ch. 6);
3. PyTorch on the CPU (float32, ``nn.Sequential``), when installed, at its default thread count
   and again at one thread.

hpo's trainer also runs a second time per repeat with BLAS held to one thread, because its
100-wide matmuls are too small for a second thread to pay off (and hpo's workers train so).
PyTorch gets the same choice, and the target compares each side at its faster setting. On an idle
machine each side's two settings are within a few percent; on a busy one the default threads
(OpenBLAS's and PyTorch's OpenMP) spin against the other processes and run several times slower,
which would decide the ratio instead of the code.

Each repeat draws a new split, initial weights and shuffling order from its own seed; within a
repeat all three start from the same weights and see the batches in the same order, so their
validation accuracies should agree closely. The implementations are interleaved within each repeat
so that machine noise hits them alike. hpo and PyTorch measure both splits in one forward pass
per epoch. The report adds the machine's float32 matmul peak (at the default thread count and at
one thread) and the GFLOP/s hpo's trainer achieves.

Run: ``python tests/benchmarks/bench_trainer.py [--repeats N] [--seed S] [--json]``. Not a pytest
test: the default pytest run ignores ``tests/benchmarks``.
"""

import argparse
import gc
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

# Run as a script, the file's own directory is on sys.path, not the repository's root.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from trainer.datasets import Split, load_split  # noqa: E402
from trainer.network import MultiLayerNet  # noqa: E402
from trainer.optimizers import SGD  # noqa: E402
from trainer.training import train  # noqa: E402

TARGET_HPO_OVER_TORCH = 0.6
"""hpo's trainer should need at most this share of PyTorch's time per trial."""


@dataclass(frozen=True)
class BenchConfig:
    """The book's search configuration, one trial's worth."""

    dataset: str = "digits"
    train_size: int = 500  # 400 train + 100 validation
    hidden_sizes: tuple[int, ...] = (100,) * 6
    batch_size: int = 100
    epochs: int = 50
    learning_rate: float = 0.01


@dataclass(frozen=True)
class Trial:
    """One timed training run."""

    seconds: float
    best_val_accuracy: float
    epochs_run: int


def he_weights(sizes: list[int], rng: np.random.Generator) -> list[np.ndarray]:
    """He-normal weights (fan_in, fan_out), float64, drawn in MultiLayerNet's order.

    With the same seed, every implementation starts from the weights hpo's net starts from.
    """
    return [
        np.sqrt(2.0 / fan_in) * rng.standard_normal((fan_in, fan_out))
        for fan_in, fan_out in itertools.pairwise(sizes)
    ]


def layer_sizes(config: BenchConfig, split: Split) -> list[int]:
    return [split.n_features, *config.hidden_sizes, split.n_classes]


# ---------------------------------------------------------------------------------------------
# 1. hpo's trainer


def run_hpo(config: BenchConfig, split: Split, seed: int) -> Trial:
    net = MultiLayerNet(
        input_size=split.n_features,
        hidden_sizes=config.hidden_sizes,
        output_size=split.n_classes,
        activation="relu",
        init="he",
        dtype=np.float32,
        rng=np.random.default_rng(seed),
    )
    result = train(
        net,
        SGD(learning_rate=config.learning_rate),
        split.x_train,
        split.y_train,
        split.x_val,
        split.y_val,
        epochs=config.epochs,
        batch_size=config.batch_size,
        rng=np.random.default_rng(seed + 1),
    )
    return Trial(result.train_seconds, result.best_val_accuracy, result.epochs_run)


def run_hpo_one_blas_thread(config: BenchConfig, split: Split, seed: int) -> Trial:
    """hpo's trainer with BLAS held to one thread: small matmuls gain little from a second."""
    with threadpool_limits(limits=1, user_api="blas"):
        return run_hpo(config, split, seed)


# ---------------------------------------------------------------------------------------------
# 2. Book-style NumPy reference (float64), after "Deep Learning from Scratch" ch. 5-6


class Affine:
    def __init__(self, W: np.ndarray, b: np.ndarray) -> None:
        self.W, self.b = W, b
        self.x = self.dW = self.db = None

    def forward(self, x):
        self.x = x
        return np.dot(x, self.W) + self.b

    def backward(self, dout):
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return np.dot(dout, self.W.T)


class Relu:
    def __init__(self) -> None:
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dx = dout.copy()
        dx[self.mask] = 0
        return dx


class SoftmaxWithLoss:
    def __init__(self) -> None:
        self.y = self.t = None

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        return cross_entropy_error(self.y, t)

    def backward(self):
        n = len(self.t)
        dx = self.y.copy()
        dx[np.arange(n), self.t] -= 1
        return dx / n


def softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy_error(y, t):
    return -np.sum(np.log(y[np.arange(len(t)), t] + 1e-7)) / len(t)


class BookNet:
    """The book's MultiLayerNet: an OrderedDict of layers, forward in order, backward reversed."""

    def __init__(self, weights: list[np.ndarray]) -> None:
        self.layers = OrderedDict()
        for i, W in enumerate(weights, start=1):
            self.layers[f"Affine{i}"] = Affine(W, np.zeros(W.shape[1]))
            if i < len(weights):
                self.layers[f"Relu{i}"] = Relu()
        self.affines = [layer for layer in self.layers.values() if isinstance(layer, Affine)]
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def gradient(self, x, t):
        loss = self.last_layer.forward(self.predict(x), t)
        dout = self.last_layer.backward()
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        return loss

    def loss_and_accuracy(self, x, t):
        # One forward pass for both, as hpo's evaluate does.
        scores = self.predict(x)
        loss = cross_entropy_error(softmax(scores), t)
        return loss, np.mean(np.argmax(scores, axis=1) == t)


def run_book(config: BenchConfig, split: Split, seed: int) -> Trial:
    net = BookNet(he_weights(layer_sizes(config, split), np.random.default_rng(seed)))
    x_train, x_val = split.x_train.astype(np.float64), split.x_val.astype(np.float64)
    y_train, y_val = split.y_train, split.y_val
    shuffle_rng = np.random.default_rng(seed + 1)
    lr, n = config.learning_rate, len(x_train)
    best_val, epochs_run = 0.0, 0
    start = time.perf_counter()
    for _ in range(config.epochs):
        order = shuffle_rng.permutation(n)
        for first in range(0, n, config.batch_size):
            idx = order[first : first + config.batch_size]
            net.gradient(x_train[idx], y_train[idx])
            for a in net.affines:
                a.W -= lr * a.dW
                a.b -= lr * a.db
        net.loss_and_accuracy(x_train, y_train)
        _, val_acc = net.loss_and_accuracy(x_val, y_val)
        best_val = max(best_val, float(val_acc))
        epochs_run += 1
    return Trial(time.perf_counter() - start, best_val, epochs_run)


# ---------------------------------------------------------------------------------------------
# 3. PyTorch on the CPU


def import_torch():
    """The torch module, or None when it cannot be imported."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def run_torch(config: BenchConfig, split: Split, seed: int, torch) -> Trial:
    nn, functional = torch.nn, torch.nn.functional
    modules = []
    for i, W in enumerate(he_weights(layer_sizes(config, split), np.random.default_rng(seed))):
        linear = nn.Linear(*W.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T.astype(np.float32)))  # (out, in)
            linear.bias.zero_()
        modules.append(linear)
        if i < len(config.hidden_sizes):
            modules.append(nn.ReLU())
    model = nn.Sequential(*modules)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate)
    x_train, y_train = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    # Both splits in one forward pass an epoch, as hpo's trainer measures them.
    x_both = torch.from_numpy(np.concatenate([split.x_train, split.x_val]))
    y_both = torch.from_numpy(np.concatenate([split.y_train, split.y_val]))
    shuffle_rng = np.random.default_rng(seed + 1)
    n = len(x_train)
    best_val, best_state, epochs_run = -1.0, None, 0
    start = time.perf_counter()
    for _ in range(config.epochs):
        order = torch.from_numpy(shuffle_rng.permutation(n))
        for first in range(0, n, config.batch_size):
            idx = order[first : first + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = functional.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            if not math.isfinite(loss.item()):  # hpo checks every step too
                break
            optimizer.step()
        with torch.inference_mode():
            scores = model(x_both)
            losses = functional.cross_entropy(scores, y_both, reduction="none")
            correct = (scores.argmax(dim=1) == y_both).float()
            metrics = [
                part.mean().item()
                for split_rows in (slice(0, n), slice(n, None))
                for part in (losses[split_rows], correct[split_rows])
            ]
        epochs_run += 1
        if metrics[3] > best_val:  # keep the best weights, as hpo's restore_best does
            best_val = metrics[3]
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return Trial(time.perf_counter() - start, best_val, epochs_run)


def run_torch_one_thread(config: BenchConfig, split: Split, seed: int, torch) -> Trial:
    """PyTorch held to one thread, the setting hpo's trainer also gets measured at."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_torch(config, split, seed, torch)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# FLOPs and the machine


def trial_matmul_flops(sizes: list[int], *, n_train: int, n_val: int, epochs: int) -> int:
    """Matmul FLOPs (2*M*N*K each) of hpo's trainer for one trial of ``epochs`` epochs.

    Per training sample every Affine does its forward ``x @ W`` and, backward, ``x.T @ dout`` and
    ``dout @ W.T``, except the first, which computes no ``dx`` (nothing needs it): three times the
    forward's FLOPs less the first layer's ``dx``. The per-epoch evaluation runs the forward on
    both whole splits.
    """
    forward_per_sample = sum(2 * d * m for d, m in itertools.pairwise(sizes))
    first_dx_per_sample = 2 * sizes[0] * sizes[1]
    step_per_sample = 3 * forward_per_sample - first_dx_per_sample
    return epochs * (step_per_sample * n_train + forward_per_sample * (n_train + n_val))


def matmul_gflops(n: int, *, runs: int, dtype=np.float32) -> float:
    """Best-of-``runs`` GFLOP/s of an (n, n) @ (n, n) NumPy matmul."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)).astype(dtype), rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype=dtype)
    inner = max(1, int(2e8 // (2 * n**3)))  # enough calls that tiny matmuls are measurable
    best = math.inf
    for _ in range(runs + 1):  # the first is a warm-up
        start = time.perf_counter()
        for _ in range(inner):
            np.matmul(a, b, out=out)
        best = min(best, (time.perf_counter() - start) / inner)
    return 2 * n**3 / best / 1e9


def one_blas_thread(f, *args, **kwargs):
    """``f(*args, **kwargs)`` with BLAS held to one thread."""
    with threadpool_limits(limits=1, user_api="blas"):
        return f(*args, **kwargs)


def library_owner(filepath: str) -> str:
    """The package a shared library ships with, e.g. ``numpy.libs`` or ``torch``."""
    parts = Path(filepath).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    return str(Path(filepath).parent)


def thread_info(torch) -> dict:
    pools = [
        {"owner": library_owner(pool["filepath"])}
        | {
            key: pool.get(key)
            for key in ("prefix", "internal_api", "version", "threading_layer", "architecture")
        }
        | {"num_threads": pool["num_threads"]}
        for pool in threadpool_info()
    ]
    return {
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "threadpools": pools,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------
# The benchmark


def benchmark(*, repeats: int, seed: int, config: BenchConfig = BenchConfig()) -> dict:
    """Time every implementation ``repeats`` times, interleaved; return the raw results."""
    torch = import_torch()
    runners: dict[str, Callable[[BenchConfig, Split, int], Trial]] = {
        "hpo": run_hpo,
        "hpo_1_blas_thread": run_hpo_one_blas_thread,
        "book": run_book,
    }
    if torch is not None:
        runners["torch"] = lambda c, s, sd: run_torch(c, s, sd, torch)
        runners["torch_1_thread"] = lambda c, s, sd: run_torch_one_thread(c, s, sd, torch)

    def split_for(s: int) -> Split:
        rng = np.random.default_rng(s)
        return load_split(config.dataset, rng=rng, train_size=config.train_size)

    load_before = os.getloadavg()[0]
    warmup_seed = seed + 1000 * repeats  # a seed no timed repeat uses
    warmup_split = split_for(warmup_seed)
    for run in runners.values():
        run(config, warmup_split, warmup_seed)

    trials: dict[str, list[Trial]] = {name: [] for name in runners}
    for r in range(repeats):
        trial_seed = seed + 1000 * r  # run_* also use trial_seed + 1 for the shuffling
        split = split_for(trial_seed)
        for name, run in runners.items():
            gc.collect()
            trials[name].append(run(config, split, trial_seed))

    sizes = layer_sizes(config, split)
    flops = [
        trial_matmul_flops(
            sizes, n_train=len(split.y_train), n_val=len(split.y_val), epochs=t.epochs_run
        )
        for t in trials["hpo"]
    ]
    return {
        "config": asdict(config),
        "n_train": len(split.y_train),
        "n_val": len(split.y_val),
        "repeats": repeats,
        "seed": seed,
        "environment": thread_info(torch),
        # Other processes on the machine show up as outliers; the 1-minute load tells of them.
        "load_average": [load_before, os.getloadavg()[0]],
        "trials": {name: [asdict(t) for t in ts] for name, ts in trials.items()},
        "hpo_trial_gflop": statistics.median(flops) / 1e9,
        "peak_gflops_2048": matmul_gflops(2048, runs=5),
        "gflops_100": matmul_gflops(100, runs=5),
        "peak_gflops_2048_1_thread": one_blas_thread(matmul_gflops, 2048, runs=3),
        "gflops_100_1_thread": one_blas_thread(matmul_gflops, 100, runs=5),
    }


def summarize(raw: dict) -> dict:
    """Medians, ratios and GFLOP/s from ``benchmark``'s raw results."""
    medians = {
        name: {
            "seconds": statistics.median(t["seconds"] for t in ts),
            "best_val_accuracy": statistics.median(t["best_val_accuracy"] for t in ts),
        }
        for name, ts in raw["trials"].items()
    }
    hpo, hpo_1 = medians["hpo"]["seconds"], medians["hpo_1_blas_thread"]["seconds"]
    achieved = raw["hpo_trial_gflop"] / hpo
    achieved_1 = raw["hpo_trial_gflop"] / hpo_1
    summary = {
        "medians": medians,
        "hpo_over_book": hpo / medians["book"]["seconds"],
        "hpo_achieved_gflops": achieved,
        "hpo_share_of_peak": achieved / raw["peak_gflops_2048"],
        "hpo_1_blas_thread_achieved_gflops": achieved_1,
        "hpo_1_blas_thread_share_of_peak": achieved_1 / raw["peak_gflops_2048_1_thread"],
    }
    if "torch" not in medians:
        return summary

    def faster(*names: str) -> str:
        return min(names, key=lambda name: medians[name]["seconds"])

    def ratio(name: str, torch_name: str) -> float:
        return medians[name]["seconds"] / medians[torch_name]["seconds"]

    def paired(name: str, torch_name: str) -> float:
        # The median of per-repeat ratios: the runs of one repeat share the machine's load.
        pairs = zip(raw["trials"][name], raw["trials"][torch_name], strict=True)
        return statistics.median(a["seconds"] / b["seconds"] for a, b in pairs)

    # The target compares each side at its faster thread setting (by median), so that neither
    # one's thread count, nor a busy machine's toll on spinning threads, decides the ratio.
    hpo_best, torch_best = faster("hpo", "hpo_1_blas_thread"), faster("torch", "torch_1_thread")
    return summary | {
        "hpo_setting": hpo_best,
        "torch_setting": torch_best,
        "hpo_over_torch": ratio(hpo_best, torch_best),
        "hpo_over_torch_paired": paired(hpo_best, torch_best),
        "default_threads_ratio": ratio("hpo", "torch"),
        "one_thread_ratio": ratio("hpo_1_blas_thread", "torch_1_thread"),
    }


def blas_threads(env: dict) -> int | None:
    """NumPy's BLAS thread count from ``thread_info``'s pools."""
    pools = [p for p in env["threadpools"] if p["owner"].startswith("numpy")]
    return pools[0]["num_threads"] if pools else None


def format_report(raw: dict, summary: dict) -> str:
    config, env = raw["config"], raw["environment"]
    hidden = config["hidden_sizes"]
    lines = [
        f"Config: {config['dataset']} {raw['n_train']} train / {raw['n_val']} val, "
        f"{len(hidden)}x{hidden[0]} ReLU, He init, batch {config['batch_size']}, "
        f"{config['epochs']} epochs,",
        f"        SGD lr {config['learning_rate']}, loss and accuracy on train+val every epoch",
        f"Repeats: {raw['repeats']} (interleaved, seeds {raw['seed']} + 1000*r, one warm-up each)",
        "",
        f"{'implementation':<32}{'median s/trial':>15}{'min s':>9}{'max s':>9}{'best val acc':>14}",
    ]
    labels = {
        "hpo": "hpo trainer (NumPy, float32)",
        "hpo_1_blas_thread": "  same, BLAS held to 1 thread",
        "book": "book-style (NumPy, float64)",
        "torch": f"PyTorch CPU ({env['torch_threads']} threads)",
        "torch_1_thread": "PyTorch CPU (1 thread)",
    }
    for name, ts in raw["trials"].items():
        seconds = [t["seconds"] for t in ts]
        m = summary["medians"][name]
        lines.append(
            f"{labels[name]:<32}{m['seconds']:>15.3f}{min(seconds):>9.3f}{max(seconds):>9.3f}"
            f"{m['best_val_accuracy']:>14.3f}"
        )
    if "torch" not in raw["trials"]:
        lines.append(f"{'PyTorch CPU':<32}  skipped: `import torch` failed")
    lines.append("")
    settings = {
        "hpo": f"default BLAS threads ({blas_threads(env)})",
        "hpo_1_blas_thread": "1 BLAS thread",
        "torch": f"{env['torch_threads']} threads (default)",
        "torch_1_thread": "1 thread",
    }
    if "hpo_over_torch" in summary:
        met = "met" if summary["hpo_over_torch"] <= TARGET_HPO_OVER_TORCH else "NOT met"
        lines += [
            f"hpo / pytorch time, each at its faster setting: {summary['hpo_over_torch']:.3f}  "
            f"(target <= {TARGET_HPO_OVER_TORCH}: {met})",
            f"  hpo with {settings[summary['hpo_setting']]}, "
            f"PyTorch with {settings[summary['torch_setting']]}",
            f"  median of per-repeat ratios: {summary['hpo_over_torch_paired']:.3f}; "
            f"default threads each: {summary['default_threads_ratio']:.3f}; "
            f"one thread each: {summary['one_thread_ratio']:.3f}",
        ]
    lines += [
        f"hpo / book-style time: {summary['hpo_over_book']:.3f}",
        f"hpo matmul work per trial: {raw['hpo_trial_gflop']:.2f} GFLOP "
        "(fwd+bwd of every step, fwd of every evaluation)",
        f"hpo achieved: {summary['hpo_achieved_gflops']:.1f} GFLOP/s = "
        f"{100 * summary['hpo_share_of_peak']:.1f}% of the default-thread peak; "
        f"1 BLAS thread: {summary['hpo_1_blas_thread_achieved_gflops']:.1f} GFLOP/s = "
        f"{100 * summary['hpo_1_blas_thread_share_of_peak']:.1f}% of the 1-thread peak",
        f"peak float32 matmul (numpy, default threads) 2048^3: "
        f"{raw['peak_gflops_2048']:.1f} GFLOP/s; at 100^3: {raw['gflops_100']:.1f} GFLOP/s",
        f"peak float32 matmul (numpy, 1 BLAS thread)   2048^3: "
        f"{raw['peak_gflops_2048_1_thread']:.1f} GFLOP/s; at 100^3: "
        f"{raw['gflops_100_1_thread']:.1f} GFLOP/s",
        "",
        f"1-min load average before/after: {raw['load_average'][0]:.2f} / "
        f"{raw['load_average'][1]:.2f} (this benchmark adds up to {env['cpu_count']}; "
        "beyond that, other processes add noise: compare medians)",
        f"CPUs: {env['cpu_count']}, numpy {env['numpy']}, torch {env['torch']} "
        f"(torch.get_num_threads() = {env['torch_threads']})",
    ]
    for pool in env["threadpools"]:
        details = ", ".join(
            f"{k}={v}" for k, v in pool.items() if k not in ("owner", "prefix") and v is not None
        )
        lines.append(f"  {pool['owner']}: {pool['prefix']} {details}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed trials per implementation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first repeat")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1. Got {args.repeats}.")
    raw = benchmark(repeats=args.repeats, seed=args.seed)
    summary = summarize(raw)
    if args.json:
        print(json.dumps(raw | {"summary": summary}, indent=2))
    else:
        print(format_report(raw, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
