"""Benchmark: the subnormal slowdown of Adam with L2 weight decay, with and without the flush.

The configuration of issue 28's 702-second trial, on the net of the good guess: Fashion-MNIST
(Debian's ``dataset-fashion-mnist``, or ``--data-dir``), 784-512-256-10 ReLU, Adam at learning
rate 0.001, L2 weight decay 0.003, batch 100, float32, one BLAS thread. The same seed trains
twice, side by side in one run: once as every run trains (``flush_negligible=True``: parameters
below 2**-50 are set to zero with their optimizer state every 8 steps,
``trainer.training.NegligibleFlush``) and once without the flush (the behaviour before). For
each epoch it prints the seconds (the steps and the epoch's evaluation) of CPU time of the
process (on one BLAS thread, what the epoch computed: other programs on the machine hardly
change it, where they change the wall-clock time) and of the wall clock, the CPU time's ratio
to the same run's first epoch, and how many parameters and Adam moments are subnormal at the
epoch's end.

The claim it checks: with the flush, no epoch takes more than 1.3 times the first's CPU time.

``--part cost``: what the flush costs where nothing is negligible, interleaved with and without
it, median CPU seconds of ``--repeats`` runs each (5): the book's digits trial of
bench_trainer.py (500 samples, 6x100, SGD, batch 100, 50 epochs) and two epochs of the net
above on 20,000 Fashion-MNIST rows.

Run: ``python tests/benchmarks/bench_subnormal.py [--epochs 12] [--train-size N] [--side flush]``
(``--side flush`` leaves out the run without the flush), or ``--part cost``. Not a pytest test.
"""

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from trainer.config import DataConfig, NetConfig, RunConfig, TrainConfig  # noqa: E402
from trainer.datasets import DatasetError, Split  # noqa: E402
from trainer.training import EpochMetrics, train  # noqa: E402

LIMIT = 1.3
"""The largest allowed ratio of an epoch's seconds to the first epoch's, with the flush."""


def subnormal_count(a: np.ndarray) -> int:
    magnitude = np.abs(a)
    return int(np.count_nonzero((magnitude > 0) & (magnitude < np.finfo(a.dtype).tiny)))


def run(config: RunConfig, split: Split, *, flush: bool) -> list[tuple[float, int, int]]:
    """Per epoch: CPU seconds, subnormal parameters, subnormal Adam moments (both)."""
    net, rng = config.build(split, np.random.SeedSequence(0))
    optimizer = config.training.make_optimizer()
    rows: list[tuple[float, int, int]] = []
    last_cpu, last_wall = time.process_time(), time.perf_counter()

    def on_epoch_end(m: EpochMetrics) -> None:
        nonlocal last_cpu, last_wall
        cpu, wall = time.process_time() - last_cpu, time.perf_counter() - last_wall
        moments = (optimizer.first_moments or []) + (optimizer.second_moments or [])
        rows.append((cpu, subnormal_count(net.flat_params), sum(map(subnormal_count, moments))))
        print(
            f"   {'flush' if flush else 'none':5} epoch {m.epoch:3d}: {cpu:6.2f} s CPU "
            f"({cpu / rows[0][0]:5.2f}x the first), {wall:6.2f} s wall; subnormal: "
            f"{rows[-1][1]:7,} of {net.flat_params.size:,} parameters, {rows[-1][2]:7,} Adam "
            f"moments; val acc {m.val_accuracy:.4f}",
            flush=True,
        )
        last_cpu, last_wall = time.process_time(), time.perf_counter()  # not the counting

    t = config.training
    with threadpool_limits(limits=1, user_api="blas"):
        train(
            net,
            optimizer,
            split.x_train,
            split.y_train,
            split.x_val,
            split.y_val,
            epochs=t.epochs,
            batch_size=t.batch_size,
            rng=rng,
            on_epoch_end=on_epoch_end,
            flush_negligible=flush,
        )
    return rows


def cpu_seconds(config: RunConfig, split: Split, *, flush: bool) -> float:
    net, rng = config.build(split, np.random.SeedSequence(0))
    t = config.training
    start = time.process_time()
    train(
        net,
        t.make_optimizer(),
        split.x_train,
        split.y_train,
        split.x_val,
        split.y_val,
        epochs=t.epochs,
        batch_size=t.batch_size,
        rng=rng,
        flush_negligible=flush,
    )
    return time.process_time() - start


def part_cost(fashion: RunConfig, repeats: int = 5) -> None:
    from tests.benchmarks.bench_trainer import BenchConfig

    book = BenchConfig()
    runs = {
        "digits, the book's trial (bench_trainer.py)": RunConfig(
            data=DataConfig(dataset=book.dataset, train_size=book.train_size),
            net=NetConfig(hidden_sizes=book.hidden_sizes),
            training=TrainConfig(
                hyperparameters=(("learning_rate", book.learning_rate),),
                epochs=book.epochs,
                batch_size=book.batch_size,
            ),
        ),
        "Fashion-MNIST 20,000 rows, 784-512-256-10, Adam, 2 epochs": RunConfig(
            data=replace(fashion.data, train_size=20_000),
            net=fashion.net,
            training=replace(fashion.training, epochs=2),
        ),
    }
    print(
        f"the flush's cost: median CPU seconds of {repeats} runs each, interleaved, 1 BLAS thread"
    )
    for name, config in runs.items():
        split = config.data.load()
        times: dict[bool, list[float]] = {True: [], False: []}
        with threadpool_limits(limits=1, user_api="blas"):
            for _ in range(repeats):
                for flush in (False, True):
                    times[flush].append(cpu_seconds(config, split, flush=flush))
        off, on = statistics.median(times[False]), statistics.median(times[True])
        print(f"   {name}: {off:.3f} s without, {on:.3f} s with: {on / off:.3f}x")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--train-size", type=int, default=None, help="default: all 60,000")
    p.add_argument("--data-dir", default=None)
    p.add_argument(
        "--side", choices=["both", "flush"], default="both", help="flush: leave out the reference"
    )
    p.add_argument("--part", choices=["epochs", "cost"], default="epochs")
    p.add_argument("--repeats", type=int, default=5, help="runs of each side with --part cost")
    args = p.parse_args(argv)
    config = RunConfig(
        data=DataConfig(
            dataset="fashion-mnist",
            data_dir=args.data_dir,
            train_size=args.train_size,
            validation_fraction=0.1,
        ),
        net=NetConfig(hidden_sizes=(512, 256), weight_decay=0.003, weight_decay_type="l2"),
        training=TrainConfig(
            optimizer="adam",
            hyperparameters=(("learning_rate", 0.001),),
            epochs=args.epochs,
            batch_size=100,
        ),
    )
    try:
        split = config.data.load()
    except DatasetError as e:
        print(f"bench_subnormal: {e}", file=sys.stderr)
        return 2
    if args.part == "cost":
        part_cost(config, args.repeats)
        return 0
    print(
        f"Fashion-MNIST, {len(split.y_train):,} training rows, 784-512-256-10 ReLU, Adam lr "
        f"0.001, L2 weight decay 0.003, batch 100, float32, 1 BLAS thread, {args.epochs} epochs"
    )
    results = {}
    for flush in (False, True) if args.side == "both" else (True,):
        results[flush] = run(config, split, flush=flush)
    for flush, rows in results.items():
        seconds = [r[0] for r in rows]
        worst = max(range(len(rows)), key=lambda i: seconds[i])
        print(
            f"{'with' if flush else 'without':7} the flush: {sum(seconds):7.1f} s CPU in all, "
            f"slowest epoch {worst + 1} at {seconds[worst] / seconds[0]:.2f}x the first;"
            f" at the end {rows[-1][1]:,} subnormal parameters, {rows[-1][2]:,} subnormal"
            " Adam moments"
        )
    worst_ratio = max(r[0] for r in results[True]) / results[True][0][0]
    verdict = "holds" if worst_ratio <= LIMIT else "FAILS"
    print(f"no epoch above {LIMIT}x the first with the flush: {verdict} ({worst_ratio:.2f}x)")
    return 0 if worst_ratio <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
