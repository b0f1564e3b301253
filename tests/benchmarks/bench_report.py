"""Benchmark: rendering the HTML report of a large study, against its time and size targets.

A synthetic study snapshot stands in for a real one (no Optuna, no training): N trials over six
parameters (three log-scaled floats, two linear floats, one of them conditional on the optimizer,
and the optimizer as a categorical), 30-epoch curves and intermediate values, and mixed states
(about 60% complete, 30% pruned of which some diverged, 5% failed, 5% running), with importances
and activation histograms so that every figure is drawn. ``reports.html.render`` turns it into
the page; the benchmark times that and measures the page's size, for N trials and for a
100-trial reference, side by side with the targets.

Run: ``python tests/benchmarks/bench_report.py [--trials 5000] [--reference 100] [--seed 0]``.
Not a pytest test: the default pytest run ignores ``tests/benchmarks``.
"""

import argparse
import math
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

# Run as a script, the file's own directory is on sys.path, not the repository's root.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from reports.html import render  # noqa: E402
from reports.snapshot import (  # noqa: E402
    LayerHistograms,
    ParamInfo,
    SpaceEntry,
    SpecFacts,
    StudySnapshot,
    TrialRecord,
)

TARGET_SECONDS = 60.0
"""A 5,000-trial report should render within this many seconds..."""
TARGET_MB = 10.0
"""...into a page of at most this many megabytes (10**6 bytes)."""
TARGET_TRIALS = 5000
"""The study size the targets are stated for."""

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
PARAMS = (
    ParamInfo("learning_rate", "float", log=True, low=1e-4, high=1e-1),
    ParamInfo("weight_decay", "float", log=True, low=1e-8, high=1e-2),
    ParamInfo("dropout_ratio", "float", low=0.0, high=0.5),
    ParamInfo("init_scale", "float", log=True, low=0.1, high=10.0),
    ParamInfo("momentum", "float", low=0.5, high=0.99),  # only momentum and nesterov use it
    ParamInfo("optimizer", "categorical", choices=OPTIMIZERS),
)
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
STATE_SHARES = (0.6, 0.3, 0.05, 0.05)


def synthetic_snapshot(n_trials: int, *, epochs: int = 30, seed: int = 0) -> StudySnapshot:
    """A study of ``n_trials`` trials whose accuracy peaks near learning rate 3e-3."""
    rng = np.random.default_rng(seed)
    start = datetime(2024, 1, 1)
    trials = []
    for number in range(n_trials):
        state = STATES[rng.choice(len(STATES), p=STATE_SHARES)]
        optimizer = OPTIMIZERS[rng.integers(len(OPTIMIZERS))]
        params = {
            "learning_rate": float(10 ** rng.uniform(-4, -1)),
            "weight_decay": float(10 ** rng.uniform(-8, -2)),
            "dropout_ratio": float(rng.uniform(0.0, 0.5)),
            "init_scale": float(10 ** rng.uniform(-1, 1)),
            "optimizer": optimizer,
        }
        if optimizer in ("momentum", "nesterov"):
            params["momentum"] = float(rng.uniform(0.5, 0.99))
        quality = 0.97 - 0.08 * (math.log10(params["learning_rate"]) + 2.5) ** 2
        quality = float(np.clip(quality + rng.normal(0.0, 0.01), 0.1, 0.99))
        run = {"COMPLETE": epochs, "FAIL": 0}.get(state) or int(rng.integers(1, epochs))
        e = np.arange(1, run + 1)
        val = quality * (1 - np.exp(-e / 4))  # (run,)
        train = np.minimum(1.0, val + 0.002 * e)
        diverged = state == "PRUNED" and rng.random() < 0.15
        intermediate = dict(zip(e.tolist(), val.tolist(), strict=True))
        if diverged:
            intermediate[run + 1] = 0.0  # as hpo reports a diverged epoch
        best = int(np.argmax(val)) + 1 if run else None
        finished = state != "RUNNING"
        began = start + timedelta(seconds=2 * number)
        trials.append(
            TrialRecord(
                number=number,
                state=state,
                value=float(val.max()) if state == "COMPLETE" else None,
                params=params,
                intermediate=intermediate,
                curves={"train_accuracy": train.tolist(), "val_accuracy": val.tolist()}
                if run
                else None,
                best_epoch=best,
                train_accuracy=float(train[best - 1]) if best else None,
                epochs_run=run,
                train_seconds=0.05 * run if finished else None,
                diverged=diverged,
                started=began,
                completed=began + timedelta(seconds=0.05 * run) if finished else None,
            )
        )
    raw = rng.random(len(PARAMS))
    edges = tuple(float(x) for x in np.linspace(-1.0, 3.0, 31))
    return StudySnapshot(
        name=f"synthetic-{n_trials}",
        storage="sqlite:///synthetic.db",
        spec=SpecFacts(
            description="A synthetic study.",
            model="hidden [100, 100, 100], relu",
            epochs=epochs,
            batch_size=50,
            seed=seed,
            space=tuple(_space_entry(p) for p in PARAMS),
        ),
        split_sizes={"train": 1078, "validation": 359, "test": 360},
        trials=tuple(trials),
        params=PARAMS,
        importances={p.name: float(v / raw.sum()) for p, v in zip(PARAMS, raw, strict=True)},
        activations=tuple(
            LayerHistograms(
                layer=layer,
                edges=edges,
                initial=tuple(int(c) for c in rng.integers(0, 500, size=30)),
                trained=tuple(int(c) for c in rng.integers(0, 500, size=30)),
                initial_zeros=0.5,
                trained_zeros=0.6,
            )
            for layer in (1, 2, 3)
        ),
        generated=start,
    )


def _space_entry(p: ParamInfo) -> SpaceEntry:
    if p.kind == "categorical":
        return SpaceEntry(p.name, "choice", choices=tuple(p.choices))
    return SpaceEntry(p.name, "float", low=p.low, high=p.high, log=p.log)


def measure(n_trials: int, *, seed: int) -> dict:
    """Render the report of an ``n_trials`` synthetic study: seconds and size in MB."""
    snapshot = synthetic_snapshot(n_trials, seed=seed)
    begin = time.perf_counter()
    page = render(snapshot)
    seconds = time.perf_counter() - begin
    return {"trials": n_trials, "seconds": seconds, "mb": len(page.encode("utf-8")) / 1e6}


def format_report(main: dict, reference: dict) -> str:
    time_met = "met" if main["seconds"] <= TARGET_SECONDS else "NOT met"
    size_met = "met" if main["mb"] <= TARGET_MB else "NOT met"
    lines = [
        "reports.html.render on a synthetic study (6 parameters, 30 epochs, mixed states)",
        "",
        f"{'trials':>8}{'seconds':>10}{'HTML MB':>10}",
    ]
    for row in (reference, main):
        lines.append(f"{row['trials']:>8}{row['seconds']:>10.2f}{row['mb']:>10.2f}")
    lines += [
        "",
        f"time: {main['seconds']:.2f} s (target <= {TARGET_SECONDS:.0f} s at "
        f"{TARGET_TRIALS} trials: {time_met})",
        f"size: {main['mb']:.2f} MB (target <= {TARGET_MB:.0f} MB at {TARGET_TRIALS} trials: "
        f"{size_met})",
        f"{main['trials']} / {reference['trials']} trials: "
        f"{main['seconds'] / reference['seconds']:.1f}x the time, "
        f"{main['mb'] / reference['mb']:.2f}x the size",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=TARGET_TRIALS, help="trials in the study")
    parser.add_argument("--reference", type=int, default=100, help="trials in the reference")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic studies")
    args = parser.parse_args(argv)
    for flag, value in (("--trials", args.trials), ("--reference", args.reference)):
        if value < 1:
            parser.error(f"{flag} must be >= 1. Got {value}.")
    # An untimed render pays matplotlib's and Jinja's one-off costs (fonts, template) first.
    render(synthetic_snapshot(10, seed=args.seed))
    reference = measure(args.reference, seed=args.seed)
    result = measure(args.trials, seed=args.seed)
    print(format_report(result, reference))
    return 0


if __name__ == "__main__":
    sys.exit(main())
