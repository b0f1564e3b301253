"""Benchmark: MNIST-sized trials. hpo's trainer against PyTorch per epoch, its share of the
matmul peak, the book's MNIST search through ``python -m hpo run``, and the memory of workers.

The data: the real Fashion-MNIST when hpo finds it (Debian's ``dataset-fashion-mnist``, or
``$HPO_DATA_DIR``); else (or with ``--data synthetic``) an MNIST-shaped set the benchmark makes
itself, once, as an ``.npz`` in a temporary folder: 60,000 training and 10,000 test images of
784 uint8 pixels in 10 classes (each class a random prototype image plus noise: learnable, as
MNIST is). Either is loaded by ``load_split`` as hpo loads it: 48,000 training and 12,000
validation rows, float32.

1. Seconds per epoch (training on 48,000 rows in batches of 100 with SGD, then the loss and
   accuracy on both whole splits, as every hpo epoch measures them) of hpo's trainer and of
   PyTorch on the CPU (when installed: ``pip install torch==2.13.0``), for the book's 6x100, a
   3x400 and the 512-256 ReLU net of the README's Fashion-MNIST guess, each at the faster of 1
   and 2 threads; both start from the same weights and see the batches in the same order. The
   share of the 1-thread float32 matmul peak (2048^3) the trainer reaches.
2. The book's MNIST search (``studies/book-random.toml``: 500 samples, 6x100, SGD, 50 epochs)
   through ``python -m hpo run book-random --dataset fashion-mnist`` (or ``npz:PATH``), 4
   trials on 2 workers.
3. Memory with 2 workers on the whole set (512-256, one epoch per trial): per worker process its
   peak resident set (RSS, which counts the shared split's pages in each process), proportional
   set (PSS, shared pages divided among their users) and anonymous memory (its own heap: where
   a copy of the split would be), beside the split's own size: workers that map one shared
   split cost about one split in all, not one each.

Run: ``python tests/benchmarks/bench_mnist.py [--repeats 2] [--part epoch|book|memory|all]
[--data auto|synthetic]``.
Not a pytest test.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hpo.shared_split import split_nbytes  # noqa: E402
from tests.benchmarks.bench_trainer import (  # noqa: E402
    BenchConfig,
    import_torch,
    matmul_gflops,
    one_blas_thread,
    run_hpo,
    run_torch,
    trial_matmul_flops,
)
from trainer.datasets import DatasetError, Split, load_split  # noqa: E402

NETS = {"6x100": (100,) * 6, "3x400": (400,) * 3, "512-256": (512, 256)}
MEMORY_NET = (512, 256)


def make_mnist_like(path: Path, *, seed: int = 0) -> Path:
    """60,000 + 10,000 uint8 images of 784 pixels in 10 classes: prototypes plus noise."""
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0, 255, size=(10, 784))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, size=n)
        x = prototypes[y] + rng.normal(0, 90, size=(n, 784))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    x, y = draw(60_000)
    x_test, y_test = draw(10_000)
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    return path


# ---------------------------------------------------------------------------------------------
# 1. Seconds per epoch


def with_threads(threads: int, f, *args):
    with threadpool_limits(limits=threads, user_api="blas"):
        return f(*args)


def torch_with_threads(threads: int, torch, *args):
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return run_torch(*args, torch)
    finally:
        torch.set_num_threads(saved)


def part_epoch(split: Split, repeats: int) -> None:
    torch = import_torch()
    peak_1 = one_blas_thread(matmul_gflops, 2048, runs=3)
    print(
        f"1. seconds per epoch: {len(split.y_train):,} training rows (batch 100, SGD) plus the "
        f"evaluation of both splits; median of {repeats}, each side at its faster thread "
        f"setting\n   float32 matmul peak, 1 BLAS thread, 2048^3: {peak_1:.1f} GFLOP/s"
    )
    header = f"   {'net':7} {'hpo s':>8} {'threads':>7} {'torch s':>8} {'threads':>7} "
    print(header + f"{'hpo/torch':>9} {'hpo GFLOP/s':>11} {'share of peak':>13}")
    for name, hidden in NETS.items():
        config = BenchConfig(hidden_sizes=hidden, epochs=1, learning_rate=0.01)
        times: dict[tuple[str, int], list[float]] = {}
        for r in range(repeats):  # interleaved: machine noise hits both sides alike
            for threads in (1, 2):
                t = with_threads(threads, run_hpo, config, split, r)
                times.setdefault(("hpo", threads), []).append(t.seconds)
                if torch is not None:
                    t = torch_with_threads(threads, torch, config, split, r)
                    times.setdefault(("torch", threads), []).append(t.seconds)
        med = {k: statistics.median(v) for k, v in times.items()}
        hpo_threads = min((1, 2), key=lambda n: med[("hpo", n)])
        hpo_s = med[("hpo", hpo_threads)]
        sizes = [split.n_features, *hidden, split.n_classes]
        flops = trial_matmul_flops(
            sizes, n_train=len(split.y_train), n_val=len(split.y_val), epochs=1
        )
        gflops_1 = flops / med[("hpo", 1)] / 1e9
        if torch is not None:
            torch_threads = min((1, 2), key=lambda n: med[("torch", n)])
            torch_s = med[("torch", torch_threads)]
            torch_text = f"{torch_s:8.3f} {torch_threads:7d} {hpo_s / torch_s:9.2f}"
        else:
            torch_text = f"{'-':>8} {'-':>7} {'-':>9}"
        print(
            f"   {name:7} {hpo_s:8.3f} {hpo_threads:7d} {torch_text} {gflops_1:11.1f} "
            f"{100 * gflops_1 / peak_1:12.1f}%"
        )
        if torch is not None:
            print(
                "          by threads: "
                + ", ".join(f"{side} {n}: {med[(side, n)]:.3f} s" for side, n in sorted(med))
            )
    if torch is None:
        print("   PyTorch is not installed (pip install torch==2.13.0): no reference column")


# ---------------------------------------------------------------------------------------------
# 2. The book's MNIST search through hpo run


def hpo(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo", *args]


def part_book(dataset: str, tmp: Path) -> None:
    url = f"sqlite:///{tmp / 'book.db'}"
    argv = hpo(
        "run", "book-random", "--dataset", dataset, "--trials", "4", "--workers", "2",
        "--storage", url, "--no-report", "--quiet",
    )  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"hpo run failed:\n{done.stderr[-2000:]}")
    best = subprocess.run(
        hpo("best", "--json", "--storage", url), cwd=tmp, capture_output=True, text=True
    )
    print(
        f"2. the book's MNIST search: python -m hpo run book-random --dataset {shown(dataset)} "
        f"--trials 4 --workers 2\n   {seconds:.1f} s for 4 trials of 50 epochs on 400 rows "
        f"(start-up and the split included); best: {best.stdout.strip()[:160]}"
    )


# ---------------------------------------------------------------------------------------------
# 3. Memory of 2 workers


def memory_of(pid: int) -> dict[str, int] | None:
    """RSS, PSS and private bytes of ``pid`` now (``/proc/PID/smaps_rollup``)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    kib = {}
    for line in lines[1:]:
        key, value, *_ = line.split()
        kib[key.rstrip(":")] = int(value) * 1024
    return {"rss": kib.get("Rss", 0), "pss": kib.get("Pss", 0), "anon": kib.get("Anonymous", 0)}


def process_kind(pid: int) -> str:
    """A child of ``hpo run``: a trial worker, or multiprocessing's resource tracker."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return "process"
    return "resource tracker" if b"resource_tracker" in cmdline else "worker"


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def shown(dataset: str) -> str:
    return "npz:TMP/mnist.npz" if dataset.startswith("npz:") else dataset


def part_memory(dataset: str, tmp: Path, split: Split) -> None:
    spec = tmp / "mnist.toml"
    spec.write_text(
        f"""[study]
name = "mnist-memory"
[data]
dataset = "{dataset}"
[model]
hidden = {list(MEMORY_NET)}
[training]
epochs = 1
batch_size = 100
[search]
sampler = "random"
pruner = "none"
trials = 4
[space]
learning_rate = {{ low = 1e-3, high = 1e-1, log = true }}
optimizer = "sgd"
"""
    )
    url = f"sqlite:///{tmp / 'memory.db'}"
    argv = hpo("run", str(spec), "--workers", "2", "--storage", url, "--no-report", "--quiet")
    process = subprocess.Popen(argv, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks: dict[int, dict[str, int]] = {}
    names: dict[int, str] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid in [process.pid, *children_of(process.pid)]:
                m = memory_of(pid)
                if pid not in names:
                    names[pid] = process_kind(pid)
                if m is not None:
                    p = peaks.setdefault(pid, dict.fromkeys(m, 0))
                    for k, v in m.items():
                        p[k] = max(p[k], v)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = process.communicate()
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"hpo run failed:\n{err.decode()[-2000:]}")
    size = split_nbytes(split)
    mib = 2**20
    print(
        f"3. memory: python -m hpo run TMP/mnist.toml --workers 2 ({shown(dataset)}, "
        f"{'-'.join(map(str, MEMORY_NET))}, 1 epoch, 4 trials); "
        f"the split's arrays: {size / mib:.0f} MiB\n"
        f"   {'process':22} {'peak RSS':>9} {'peak PSS':>9} {'peak anonymous':>14}  MiB"
    )
    workers = [pid for pid in peaks if pid != process.pid and names[pid] == "worker"]
    for pid in [process.pid, *(p for p in peaks if p != process.pid)]:
        p = peaks[pid]
        what = "orchestrator" if pid == process.pid else f"{names[pid]} {pid}"
        print(f"   {what:22} {p['rss'] / mib:9.0f} {p['pss'] / mib:9.0f} {p['anon'] / mib:14.0f}")
    print(
        f"   workers in all: {sum(peaks[p]['pss'] for p in workers) / mib:.0f} MiB PSS, "
        f"{sum(peaks[p]['anon'] for p in workers) / mib:.0f} MiB anonymous, against "
        f"{len(workers) * size / mib:.0f} MiB for one copy of the split each"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--part", choices=["epoch", "book", "memory", "all"], default="all")
    parser.add_argument(
        "--data",
        choices=["auto", "synthetic"],
        default="auto",
        help="auto: the real Fashion-MNIST when hpo finds it, else the MNIST-shaped set",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        dataset = "fashion-mnist"
        try:
            if args.data == "synthetic":
                raise DatasetError("asked for the synthetic set")
            split = load_split(dataset, rng=np.random.default_rng(0))
            what = "the real Fashion-MNIST"
        except DatasetError:
            dataset = f"npz:{make_mnist_like(tmp / 'mnist.npz')}"
            split = load_split(dataset, rng=np.random.default_rng(0))
            what = "an MNIST-shaped set"
        print(
            f"bench_mnist: {what} ({len(split.y_train):,} train, "
            f"{len(split.y_val):,} validation, {len(split.y_test):,} test rows of "
            f"{split.n_features} features), cpu count {os.cpu_count()}"
        )
        if args.part in ("epoch", "all"):
            part_epoch(split, args.repeats)
        if args.part in ("book", "all"):
            part_book(dataset, tmp)
        if args.part in ("memory", "all"):
            part_memory(dataset, tmp, split)
    return 0


if __name__ == "__main__":
    sys.exit(main())
