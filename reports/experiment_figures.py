"""The chapter's experiments' own figures, for studies whose spec names an ``experiment``.

Like ``reports.figures``: a pure ``..._data(snapshot)`` returns plain data (None when the study
has nothing to show) and a ``plot_...(data)`` draws it. ``figure_specs`` lists the figures of the
snapshot's experiment for ``reports.html``, each caption stating the figure's measured result.

- ``optimizers``: each optimizer's training loss over iterations at its tuned learning rate,
  the validation accuracy of every optimizer and learning rate, and the paths on x²/20 + y².
- ``init``: activation histograms per layer at initialization, and the training loss per init.
- ``batchnorm``: training accuracy with and without BatchNorm, one panel per weight std.
- ``overfit``: training against validation accuracy without and with weight decay and dropout.
"""

import math
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from reports.figures import COLORS, panel_grid, styled
from reports.snapshot import StudySnapshot, TrialRecord
from reports.summary import mean_interval
from trainer.optimizers import OPTIMIZERS

SMOOTHING_WINDOW = 20
"""Steps averaged into each point of a training-loss curve (minibatch losses are noisy)."""
GAP_EPOCHS = 10
"""The generalization gap is the mean over the last this many epochs (one epoch is noisy)."""
TRAINS = 0.9
"""The training accuracy at which the batchnorm experiment calls a net trained."""
OPTIMIZER_ORDER = tuple(OPTIMIZERS)  # the registry's order: the chapter's
PALETTE = ("#1f77b4", "#ff7f0e", "#8c564b", "#2ca02c", "#9467bd", "#d62728", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")  # fmt: skip
OPTIMIZER_COLORS = {
    name: PALETTE[i % len(PALETTE)] for i, name in enumerate(OPTIMIZER_ORDER)
}  # one colour per registered optimizer, in its order
INIT_ORDER = ("std", "xavier", "he")
INIT_COLORS = {"std 1": "#9e9e9e", "std 0.01": "#ff7f0e", "Xavier": "#2ca02c", "He": "#1f77b4"}


def smooth(values: list[float | None], window: int | None = None) -> dict[str, list]:
    """Trailing means of ``window`` values (default ``SMOOTHING_WINDOW``; missing values count
    as NaN): ``step`` (from 1) is the last step of each window, ``value`` its mean. Shorter
    series use one window of all."""
    v = np.array([math.nan if x is None else x for x in values], dtype=np.float64)
    w = max(1, min(SMOOTHING_WINDOW if window is None else window, len(v)))
    if not len(v):
        return {"step": [], "value": []}
    sums = np.cumsum(np.concatenate([[0.0], v]))
    means = (sums[w:] - sums[:-w]) / w
    return {
        "step": list(range(w, len(v) + 1)),
        "value": [float(m) if math.isfinite(m) else None for m in means],
    }


def _complete_by(snapshot: StudySnapshot, key: Callable[[TrialRecord], Any]) -> dict:
    """The best completed trial per ``key(trial)`` (ties: the earlier trial)."""
    best: dict = {}
    for t in snapshot.ranked():
        best.setdefault(key(t), t)
    return best


def runs_of(snapshot: StudySnapshot, trial: TrialRecord) -> list[TrialRecord]:
    """``trial``'s own run, then its confirmation runs (``hpo confirm``): one per seed."""
    return [trial, *(r for r in snapshot.confirm_runs if r.source == trial.number)]


def over_seeds(values: list[float], fmt: str = ".3f") -> str:
    """One seed's value as it is; over several, the mean and its 95% Student-t interval (each
    number formatted with ``fmt``)."""
    if len(values) == 1:
        return format(values[0], fmt)
    mean, low, high = mean_interval(values)
    return f"{mean:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def seeds_sentence(counts: list[int], n_trials: int) -> str:
    """How many seeds the caption's figures rest on, or how to get more than one."""
    if counts and min(counts) > 1:
        low, high = min(counts), max(counts)
        n = f"{low}" if low == high else f"{low} to {high}"
        fresh = f"{low - 1}" if low == high else f"{low - 1} to {high - 1}"
        return (
            f" Each value is the mean over {n} runs (the search's own and {fresh} fresh seeds "
            "of hpo confirm) with its 95% interval in brackets."
        )
    return (
        " Each value is one seed's: hpo confirm --top "
        f"{n_trials} --seeds 4 retrains every configuration with 4 more, for intervals."
    )


def _gap(curves: dict[str, list[float]]) -> dict[str, float]:
    train, val = curves["train_accuracy"][-GAP_EPOCHS:], curves["val_accuracy"][-GAP_EPOCHS:]
    t, v = sum(train) / len(train), sum(val) / len(val)
    return {"train": t, "val": v, "gap": t - v}


# ---------------------------------------------------------------------------------------------
# optimizers


def optimizer_loss_data(snapshot: StudySnapshot) -> dict | None:
    """Per optimizer, its tuned trial (the best completed one) and that trial's smoothed
    training loss per step; and the grid of best validation accuracy per learning rate."""
    tuned = _complete_by(snapshot, lambda t: t.params.get("optimizer"))
    lines = []
    for name in OPTIMIZER_ORDER:
        t = tuned.get(name)
        if t is None or not t.batch_loss:
            continue
        lines.append(
            {
                "optimizer": name,
                "learning_rate": t.params.get("learning_rate"),
                "trial": t.number,
                "value": t.value,
                "loss": smooth(t.batch_loss),
                "finals": [  # the final smoothed loss of each seed's run
                    _last(smooth(r.batch_loss)["value"])
                    for r in runs_of(snapshot, t)
                    if r.batch_loss
                ],
            }
        )
    if not lines:
        return None
    rates = sorted(
        {t.params["learning_rate"] for t in snapshot.trials if "learning_rate" in t.params}
    )
    grid = []
    for name in OPTIMIZER_ORDER:
        row = {r: None for r in rates}
        for t in snapshot.trials:
            if t.params.get("optimizer") == name and t.state in ("COMPLETE", "PRUNED"):
                row[t.params["learning_rate"]] = 0.0 if t.diverged else t.value
        if any(t.params.get("optimizer") == name for t in snapshot.trials):
            grid.append({"optimizer": name, "values": [row[r] for r in rates]})
    return {
        "window": SMOOTHING_WINDOW,
        "lines": lines,
        "learning_rates": rates,
        "grid": grid,
        "trials": len(snapshot.trials),
    }


def optimizer_loss_caption(data: dict) -> str:
    def final(d: dict) -> float:
        return sum(d["finals"]) / len(d["finals"])

    ranked = sorted(data["lines"], key=final)
    order = ", ".join(
        f"{d['optimizer']} (lr {d['learning_rate']:g}: {over_seeds(d['finals'], '.3g')})"
        for d in ranked
    )
    return (
        "Left: the training loss of every minibatch step, averaged over "
        f"{data['window']} steps, of each optimizer at its tuned learning rate (the one of its "
        "best validation accuracy). Right: the best validation accuracy of every optimizer and "
        "learning rate; a cross is a run that diverged. Final smoothed loss, lowest first: "
        f"{order}." + seeds_sentence([len(d["finals"]) for d in ranked], data["trials"])
    )


def _last(values: list[float | None]) -> float:
    finite = [v for v in values if v is not None]
    return finite[-1] if finite else math.inf


@styled
def plot_optimizer_loss(data: dict) -> Figure:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.6), width_ratios=(1.6, 1))
    for d in data["lines"]:
        ax.plot(
            d["loss"]["step"],
            [math.nan if v is None else v for v in d["loss"]["value"]],
            color=OPTIMIZER_COLORS[d["optimizer"]],
            lw=1.2,
            label=f"{d['optimizer']} (lr {d['learning_rate']:g})",
        )
    ax.set_yscale("log")
    ax.set_xlabel("iteration (minibatch step)")
    ax.set_ylabel("training loss")
    ax.legend(loc="upper right")
    rates = data["learning_rates"]
    for row in data["grid"]:
        color = OPTIMIZER_COLORS[row["optimizer"]]
        xs = [r for r, v in zip(rates, row["values"], strict=True) if v is not None]
        ys = [v for v in row["values"] if v is not None]
        ax2.plot(xs, ys, "o-", color=color, ms=4, lw=1, label=row["optimizer"])
        crosses = [r for r, v in zip(rates, row["values"], strict=True) if v == 0.0]
        ax2.plot(crosses, [0.0] * len(crosses), "x", color=color, ms=7)
    ax2.set_xscale("log")
    ax2.set_ylim(-0.03, 1.03)
    ax2.set_xlabel("learning rate")
    ax2.set_ylabel("best validation accuracy")
    fig.tight_layout()
    return fig


def optimizer_paths_data(snapshot: StudySnapshot) -> dict | None:
    """The optimizers' paths on the test function, as the experiment computed them."""
    exp = snapshot.experiment or {}
    if exp.get("name") != "optimizers" or not exp.get("paths"):
        return None
    paths = []
    for p in exp["paths"]:
        x, y = p["x"][-1], p["y"][-1]
        paths.append({**p, "final": x**2 / 20 + y**2})
    return {"function": exp["function"], "start": exp["start"], "paths": paths}


def optimizer_paths_caption(data: dict) -> str:
    steps = len(data["paths"][0]["x"]) - 1
    finals = ", ".join(f"{p['optimizer']} {p['final']:.2g}" for p in data["paths"])
    start = data["start"]
    f0 = start[0] ** 2 / 20 + start[1] ** 2
    return (
        f"{steps} steps of each optimizer on f(x, y) = {data['function']} from "
        f"({start[0]:g}, {start[1]:g}), where f = {f0:.3g}, with the chapter's step sizes "
        f"(in each title); the minimum is at the cross. f after {steps} steps: {finals}."
    )


@styled
def plot_optimizer_paths(data: dict) -> Figure:
    paths = data["paths"]
    fig, axes = panel_grid(len(paths), max_cols=3, size=(3.3, 2.5))
    xs, ys = np.meshgrid(np.linspace(-10, 10, 200), np.linspace(-5, 5, 200))
    zs = xs**2 / 20 + ys**2
    for ax, p in zip(axes.flat, paths, strict=False):
        ax.contour(xs, ys, zs, levels=np.geomspace(0.05, 25, 12), colors="#bbbbbb", linewidths=0.6)
        ax.plot(p["x"], p["y"], "o-", color=OPTIMIZER_COLORS.get(p["optimizer"], "k"), ms=2.5, lw=1)
        ax.plot(0, 0, "+", color="k", ms=8)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-5, 5)
        ax.set_title(f"{p['optimizer']} (lr {p['learning_rate']:g})")
        ax.grid(False)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# init


def init_label(init: str, scale: float) -> str:
    """'std 0.01', 'Xavier', 'He ×0.1': the rule and, unless 1, its scale."""
    if init == "std":
        return f"std {scale:g}"
    name = {"xavier": "Xavier", "he": "He"}.get(init, init)
    return name if scale == 1 else f"{name} ×{scale:g}"


def _init_key(d: dict) -> tuple:
    return (INIT_ORDER.index(d["init"]) if d["init"] in INIT_ORDER else 99, -d["init_scale"])


def _drawn_inits(items: list[dict]) -> list[dict]:
    """Fixed stds at every scale, Xavier and He as the rule is (their scaled-down runs only
    repeat std 0.01's story), in the chapter's order."""
    kept = [d for d in items if d["init"] == "std" or d["init_scale"] == 1]
    return sorted(kept, key=_init_key)


def init_histograms_data(snapshot: StudySnapshot, activation: str) -> dict | None:
    """For one activation: per init (rows) the activation histogram of each hidden layer."""
    exp = snapshot.experiment or {}
    if exp.get("name") != "init":
        return None
    items = [h for h in exp.get("histograms", []) if h["activation"] == activation]
    if not items:
        return None
    rows = []
    for h in _drawn_inits(items):
        rows.append(
            {
                "label": init_label(h["init"], h["init_scale"]),
                "trial": h["trial"],
                "edges": h["edges"],
                "layers": h["layers"],
            }
        )
    return {"activation": activation, "samples": exp.get("samples"), "rows": rows}


def init_histograms_caption(data: dict) -> str:
    parts = []
    for row in data["rows"]:
        last = row["layers"][-1]
        edges = row["edges"]
        counts = last["counts"]
        total = sum(counts) or 1
        low_half = sum(counts[: len(counts) // 2]) / total
        parts.append(
            f"{row['label']}: layer {len(row['layers'])} has {last['zeros']:.0%} exact zeros, "
            f"{last['above']:.0%} above {edges[-1]:g}, {low_half:.0%} of the rest below "
            f"{edges[len(edges) // 2]:g}"
        )
    return (
        f"{data['activation']}: each hidden layer's activations on {data['samples']} validation "
        "inputs with the weights each trial started from (one row per init, one column per "
        "layer; bars are fractions of the values in range). " + "; ".join(parts) + "."
    )


@styled
def plot_init_histograms(data: dict) -> Figure:
    rows = data["rows"]
    n_layers = max(len(r["layers"]) for r in rows)
    fig, axes = plt.subplots(
        len(rows),
        n_layers,
        figsize=(1.7 * n_layers + 0.8, 1.25 * len(rows) + 0.5),
        squeeze=False,
        sharex=True,
    )
    for i, row in enumerate(rows):
        edges = row["edges"]
        widths = np.diff(edges)
        for j, layer in enumerate(row["layers"]):
            ax = axes[i][j]
            total = max(1, sum(layer["counts"]))
            ax.bar(
                edges[:-1],
                [c / total for c in layer["counts"]],
                width=widths,
                align="edge",
                color=INIT_COLORS.get(row["label"], COLORS["complete"]),
            )
            notes = []
            if layer["zeros"] >= 0.005:
                notes.append(f"{layer['zeros']:.0%} = 0")
            if layer["above"] >= 0.005:
                notes.append(f"{layer['above']:.0%} > {edges[-1]:g}")
            if notes:
                ax.text(
                    0.97,
                    0.92,
                    "\n".join(notes),
                    transform=ax.transAxes,
                    ha="right",
                    va="top",
                    fontsize=7,
                )
            ax.set_yticks([])
            ax.grid(False)
            if i == 0:
                ax.set_title(f"layer {j + 1}")
            if j == 0:
                ax.set_ylabel(row["label"], rotation=0, ha="right", va="center")
        for j in range(len(row["layers"]), n_layers):
            axes[i][j].set_visible(False)
    fig.suptitle(data["activation"], fontsize=10)
    fig.tight_layout()
    return fig


def init_loss_data(snapshot: StudySnapshot) -> list[dict] | None:
    """Per activation: each init's smoothed training loss per step and its best accuracy."""
    panels: dict[str, list] = {}
    for t in snapshot.trials:
        if not t.batch_loss or ("init" not in t.params and "init_scale" not in t.params):
            continue
        spec = snapshot.spec
        activation = t.params.get("activation", spec.fixed("activation", spec.activation))
        init = t.params.get("init", spec.fixed("init"))
        scale = t.params.get("init_scale", spec.fixed("init_scale", 1.0))
        panels.setdefault(activation, []).append(
            {
                "init": init,
                "init_scale": scale,
                "label": init_label(init, scale),
                "trial": t.number,
                "value": 0.0 if t.diverged else t.value,
                "diverged": t.diverged,
                "loss": smooth(t.batch_loss),
                "values": [0.0 if r.diverged else r.value for r in runs_of(snapshot, t)],
            }
        )
    if not panels:
        return None
    order = activation_order(snapshot)
    return [
        {"activation": a, "lines": _drawn_inits(panels[a])}
        for a in sorted(panels, key=lambda a: order.index(a) if a in order else len(order))
    ]


def activation_order(snapshot: StudySnapshot) -> list[str]:
    """The activations the study's space tries, in its order (the chapter's: sigmoid, tanh,
    then ReLU), else the one it fixes; the figures follow it, naming no activation
    themselves."""
    spec = snapshot.spec
    p = spec.param("activation")
    if p is not None and p.kind == "choice":
        return [str(c) for c in p.choices]
    return [str(spec.fixed("activation", spec.activation))]


def init_loss_caption(panels: list[dict]) -> str:
    parts = []
    for p in panels:
        values = ", ".join(
            f"{d['label']} {'diverged' if d['diverged'] else over_seeds(d['values'])}"
            for d in p["lines"]
        )
        parts.append(f"{p['activation']}: {values}")
    lines = [d for p in panels for d in p["lines"] if not d["diverged"]]
    return (
        f"Training loss per minibatch step (mean of {SMOOTHING_WINDOW}) for each init; a line "
        "that stays at ln 10 ≈ 2.30 is a net that does not learn. Best validation accuracy: "
        + "; ".join(parts)
        + "."
        + seeds_sentence([len(d["values"]) for d in lines], sum(len(p["lines"]) for p in panels))
    )


@styled
def plot_init_loss(panels: list[dict]) -> Figure:
    fig, axes = panel_grid(len(panels), max_cols=3, size=(3.6, 3.0), sharey=True)
    for ax, p in zip(axes.flat, panels, strict=False):
        for d in p["lines"]:
            ax.plot(
                d["loss"]["step"],
                [math.nan if v is None else v for v in d["loss"]["value"]],
                color=INIT_COLORS.get(d["label"]),
                lw=1.2,
                label=d["label"] + (" (diverged)" if d["diverged"] else ""),
            )
        ax.set_title(p["activation"])
        ax.set_xlabel("iteration")
        ax.set_ylim(0, 5.0)  # std 1 starts far above; ln 10 ≈ 2.30 is chance
        ax.legend(loc="upper right")
    axes[0][0].set_ylabel("training loss")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# batchnorm


def batchnorm_data(snapshot: StudySnapshot) -> dict | None:
    """Per weight std (largest first): training accuracy per epoch with and without BatchNorm
    (None when that run diverged before its first epoch ended)."""
    by_scale: dict[float, dict] = {}
    for t in snapshot.trials:
        if "init_scale" not in t.params or "batchnorm" not in t.params or t.curves is None:
            continue
        entry = by_scale.setdefault(t.params["init_scale"], {})
        key = "with" if t.params["batchnorm"] else "without"
        entry[key] = {
            "trial": t.number,
            "train_accuracy": list(t.curves["train_accuracy"]),
            "diverged": t.diverged,
            "best": max(t.curves["train_accuracy"], default=0.0),
            "by_seed": {  # the best training accuracy of each seed's run: None, the trial's own
                r.seed_index: max(r.curves["train_accuracy"], default=0.0)
                for r in runs_of(snapshot, t)
                if r.curves is not None
            },
        }
    if not by_scale:
        return None
    panels = [
        {"scale": s, "with": by_scale[s].get("with"), "without": by_scale[s].get("without")}
        for s in sorted(by_scale, reverse=True)
    ]
    trained = {
        key: sum(1 for p in panels if p[key] and p[key]["best"] >= TRAINS)
        for key in ("with", "without")
    }
    # Per seed that every run has (the trials' own, then hpo confirm's): how many stds train. A
    # run that diverged is never confirmed (hpo confirm retrains complete trials): it counts as
    # not training at every seed.
    runs = [p[key] for p in panels for key in ("with", "without") if p[key]]
    kept = [r for r in runs if not r["diverged"]]
    seeds = sorted(
        set.intersection(*(set(r["by_seed"]) for r in kept)) if kept else {None},
        key=lambda i: -1 if i is None else i,
    )
    trained_by_seed = {
        key: [
            sum(
                1
                for p in panels
                if p[key] and not p[key]["diverged"] and p[key]["by_seed"][i] >= TRAINS
            )
            for i in seeds
        ]
        for key in ("with", "without")
    }
    return {
        "panels": panels,
        "trained": trained,
        "trained_by_seed": trained_by_seed,
        "threshold": TRAINS,
    }


def batchnorm_caption(data: dict) -> str:
    n = len(data["panels"])
    by_seed = data["trained_by_seed"]
    if len(by_seed["with"]) > 1:
        counts = f"with BatchNorm at {over_seeds(by_seed['with'], '.1f')} of {n} stds, without at "
        counts += f"{over_seeds(by_seed['without'], '.1f')} of {n}"
    else:
        counts = f"with BatchNorm at {data['trained']['with']} of {n} stds, without at "
        counts += f"{data['trained']['without']} of {n}"
    return (
        "Training accuracy per epoch with BatchNorm (blue) and without (grey, dashed), one panel "
        "per weight std of the fixed-std init, largest first. Reaches a training accuracy of "
        f"{data['threshold']:.0%}: {counts}." + seeds_sentence([len(by_seed["with"])], 2 * n)
    )


@styled
def plot_batchnorm(data: dict) -> Figure:
    panels = data["panels"]
    cols = math.ceil(math.sqrt(len(panels)))
    fig, axes = panel_grid(len(panels), max_cols=cols, size=(2.4, 1.9), sharex=True, sharey=True)
    for ax, p in zip(axes.flat, panels, strict=False):
        for key, color, style, label in (
            ("with", COLORS["complete"], "-", "BatchNorm"),
            ("without", COLORS["pruned"], "--", "plain"),
        ):
            run = p[key]
            if run is None:
                continue
            acc = run["train_accuracy"]
            ax.plot(range(1, len(acc) + 1), acc, style, color=color, lw=1.3, label=label)
            if run["diverged"]:
                ax.text(
                    0.5,
                    0.08,
                    f"{label}: diverged",
                    transform=ax.transAxes,
                    ha="center",
                    fontsize=7,
                    color=color,
                )
        ax.set_title(f"std {p['scale']:.3g}")
        ax.set_ylim(0, 1.02)
    axes[0][0].legend(loc="lower right")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for row in axes:
        row[0].set_ylabel("train accuracy")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# overfit


def overfit_label(weight_decay: float, dropout_ratio: float) -> str:
    parts = []
    if weight_decay:
        parts.append(f"weight decay {weight_decay:g}")
    if dropout_ratio:
        parts.append(f"dropout {dropout_ratio:g}")
    return " + ".join(parts) or "no regularization"


def overfit_data(snapshot: StudySnapshot) -> list[dict] | None:
    """Per trial (no regularization first): training and validation accuracy per epoch, and
    the gap between them over the last ``GAP_EPOCHS`` epochs."""
    spec = snapshot.spec
    panels = []
    for t in snapshot.trials:
        if t.curves is None or not t.curves["train_accuracy"]:
            continue
        wd = t.params.get("weight_decay", spec.fixed("weight_decay", 0.0))
        dr = t.params.get("dropout_ratio", spec.fixed("dropout_ratio", 0.0))
        if not isinstance(wd, int | float) or not isinstance(dr, int | float):
            continue
        panels.append(
            {
                "trial": t.number,
                "weight_decay": wd,
                "dropout_ratio": dr,
                "label": overfit_label(wd, dr),
                "train_accuracy": list(t.curves["train_accuracy"]),
                "val_accuracy": list(t.curves["val_accuracy"]),
                "last": _gap(t.curves),
                "gaps": [_gap(r.curves)["gap"] for r in runs_of(snapshot, t) if r.curves],
            }
        )
    if not panels:
        return None
    # No regularization, weight decay alone, dropout alone, both.
    return sorted(
        panels,
        key=lambda p: (
            bool(p["weight_decay"]) + bool(p["dropout_ratio"]),
            p["dropout_ratio"] > 0,
            p["weight_decay"],
            p["dropout_ratio"],
        ),
    )


def overfit_caption(panels: list[dict]) -> str:
    if all(len(p["gaps"]) > 1 for p in panels):
        gaps = "; ".join(f"{p['label']}: {over_seeds(p['gaps'])}" for p in panels)
        what = "gap"
    else:
        gaps = "; ".join(
            f"{p['label']}: {p['last']['train']:.3f} - {p['last']['val']:.3f} = "
            f"{p['last']['gap']:.3f}"
            for p in panels
        )
        what = "training - validation = gap"
    return (
        "Training (blue) and validation (red) accuracy per epoch; the grey band is the gap. "
        f"Mean over the last {GAP_EPOCHS} epochs, {what}: {gaps}."
        + underfit_sentence(panels)
        + seeds_sentence([len(p["gaps"]) for p in panels], len(panels))
    )


UNDERFIT_MARGIN = 0.05
"""A regularization whose validation accuracy is this far below the best one's narrows the gap
by underfitting."""


def underfit_sentence(panels: list[dict]) -> str:
    """The smallest gap is no win when it comes with a clearly lower validation accuracy: the
    net then fits the training data less instead of generalizing better."""
    smallest = min(panels, key=lambda p: p["last"]["gap"])
    best = max(panels, key=lambda p: p["last"]["val"])
    if best["last"]["val"] - smallest["last"]["val"] <= UNDERFIT_MARGIN:
        return ""
    return (
        f" The smallest gap, {smallest['label']}'s, comes with validation accuracy "
        f"{smallest['last']['val']:.3f} against {best['last']['val']:.3f} for {best['label']}: "
        "it underfits, narrowing the gap by fitting the training data less, not by "
        "generalizing better."
    )


@styled
def plot_overfit(panels: list[dict]) -> Figure:
    fig, axes = panel_grid(len(panels), max_cols=4, size=(2.9, 2.6), sharey=True)
    for ax, p in zip(axes.flat, panels, strict=False):
        epochs = range(1, len(p["train_accuracy"]) + 1)
        ax.plot(epochs, p["train_accuracy"], color=COLORS["train"], lw=1.1, label="training")
        ax.plot(epochs, p["val_accuracy"], color=COLORS["val"], lw=1.1, label="validation")
        ax.fill_between(epochs, p["val_accuracy"], p["train_accuracy"], color="#bbbbbb", alpha=0.5)
        ax.set_title(f"{p['label']}\ngap {p['last']['gap']:.3f}")
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------


FigureSpec = tuple[str, str, Any, Callable, Callable]


def optimizers_figures(snapshot: StudySnapshot) -> list[FigureSpec]:
    return [
        (
            "exp-optimizer-loss",
            "Experiment: optimizers compared",
            optimizer_loss_caption,
            lambda: optimizer_loss_data(snapshot),
            plot_optimizer_loss,
        ),
        (
            "exp-optimizer-paths",
            "Experiment: optimizer paths on x²/20 + y²",
            optimizer_paths_caption,
            lambda: optimizer_paths_data(snapshot),
            plot_optimizer_paths,
        ),
    ]


def init_figures(snapshot: StudySnapshot) -> list[FigureSpec]:
    specs = [
        (
            "exp-init-loss",
            "Experiment: training loss per weight init",
            init_loss_caption,
            lambda: init_loss_data(snapshot),
            plot_init_loss,
        ),
    ]
    for activation in activation_order(snapshot):
        specs.append(
            (
                f"exp-init-{activation}",
                f"Experiment: activations at init, {activation}",
                init_histograms_caption,
                lambda a=activation: init_histograms_data(snapshot, a),
                plot_init_histograms,
            )
        )
    return specs


def batchnorm_figures(snapshot: StudySnapshot) -> list[FigureSpec]:
    return [
        (
            "exp-batchnorm",
            "Experiment: with and without BatchNorm",
            batchnorm_caption,
            lambda: batchnorm_data(snapshot),
            plot_batchnorm,
        ),
    ]


def overfit_figures(snapshot: StudySnapshot) -> list[FigureSpec]:
    return [
        (
            "exp-overfit",
            "Experiment: overfitting, weight decay and dropout",
            overfit_caption,
            lambda: overfit_data(snapshot),
            plot_overfit,
        ),
    ]


FIGURES: dict[str, Callable[[StudySnapshot], list[FigureSpec]]] = {
    "optimizers": optimizers_figures,
    "init": init_figures,
    "batchnorm": batchnorm_figures,
    "overfit": overfit_figures,
}
"""Each experiment (``hpo.allowed.EXPERIMENTS``; a test keeps the two lists equal) and its
figures."""


def figure_specs(snapshot: StudySnapshot) -> list[FigureSpec]:
    """The experiment's figures for ``reports.html``: (key, title, caption, data, plot), where
    caption is a function of the data."""
    figures = FIGURES.get((snapshot.experiment or {}).get("name"))
    return figures(snapshot) if figures else []
