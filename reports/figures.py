"""The report's figures: for each, a pure ``..._data(snapshot)`` and a ``plot_...(data)``.

Data functions return plain dicts and lists (tested by equality); plot functions draw them with
matplotlib's Agg backend in one style and return the Figure; the caller saves and closes it.
A data function returns None when the study has nothing to show for that figure.
"""

import itertools
import math
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from reports.snapshot import ParamInfo, StudySnapshot

COLORS = {
    "train": "#1f77b4",
    "val": "#d62728",
    "complete": "#1f77b4",
    "best": "#d62728",
    "pruned": "#9e9e9e",
    "diverged": "#ff7f0e",
}
STYLE = {
    "figure.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
}
MAX_CURVE_PANELS = 20


def styled(fn):
    """Draw inside the report's rc style."""

    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


def panel_grid(
    n: int, *, max_cols: int, size: tuple[float, float], extra_height: float = 0.0, **share
):
    """Small multiples: a rows x cols grid (2-D axes array) for ``n`` panels, the unused
    cells hidden; ``size`` is one panel's (width, height) in inches."""
    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(size[0] * cols, size[1] * rows + extra_height), squeeze=False, **share
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _log_axis(axis, set_scale) -> None:
    """A log scale with labels that do not overlap: at the powers of ten over three decades or
    more, else at 1, 2 and 5 times them, written plainly (0.2, 0.5, 1, 2); no minor labels.
    Call it after plotting: it reads the axis's range."""
    set_scale("log")
    low, high = sorted(axis.get_view_interval())
    if low > 0 and math.log10(high / low) < 3:
        axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def last_value(t) -> float:
    """A pruned trial's value in the figures: its last epoch's validation accuracy (0 for a
    diverged one, as stored)."""
    return t.intermediate[max(t.intermediate)] if t.intermediate else 0.0


def color_range(values: list[float]) -> tuple[float, float]:
    """A colour scale that tells the good trials apart: from the lower quartile of the
    complete trials' values to their best (lower values take the lowest colour)."""
    ordered = sorted(values)
    if len(ordered) < 4:
        return ordered[0], ordered[-1]
    return ordered[len(ordered) // 4], ordered[-1]


# ---------------------------------------------------------------------------------------------
# 1. Learning curves of the top K


def learning_curves_data(snapshot: StudySnapshot, top_k: int) -> list[dict] | None:
    """Per top trial: its rank, number, value and training/validation accuracy per epoch."""
    panels = []
    best = snapshot.best_trial()
    confirmed = bool(snapshot.confirmed)
    for rank, t in enumerate(snapshot.ranked()[: min(top_k, MAX_CURVE_PANELS)], start=1):
        if not t.curves:
            continue
        panels.append(
            {
                "rank": rank,
                "confirmed_best": confirmed and t.number == best.number,
                "trial": t.number,
                "value": t.value,
                "best_epoch": t.best_epoch,
                "train_accuracy": list(t.curves["train_accuracy"]),
                "val_accuracy": list(t.curves["val_accuracy"]),
            }
        )
    return panels or None


@styled
def plot_learning_curves(panels: list[dict]) -> Figure:
    fig, axes = panel_grid(
        len(panels), max_cols=5, size=(2.3, 1.9), extra_height=0.4, sharex=True, sharey=True
    )
    for ax, p in zip(axes.flat, panels, strict=False):
        epochs = range(1, len(p["val_accuracy"]) + 1)
        marker = "o" if len(epochs) == 1 else None  # one epoch: a point, not an empty line
        ax.plot(epochs, p["train_accuracy"], color=COLORS["train"], lw=1.2, marker=marker,
                label="training")  # fmt: skip
        ax.plot(epochs, p["val_accuracy"], color=COLORS["val"], lw=1.2, marker=marker,
                label="validation")  # fmt: skip
        if p["best_epoch"]:
            ax.axvline(p["best_epoch"], color="k", lw=0.6, ls=":")
        title = f"Best-{p['rank']}: #{p['trial']} ({p['value']:.3f})"
        if p.get("confirmed_best"):
            title += ", confirmed best"
        ax.set_title(title, fontsize=8, fontweight="bold" if p.get("confirmed_best") else None)
    # From the lowest accuracy after the first epoch (rounded down to 0.05): the top trials'
    # curves differ in the last points, which a 0-1 axis flattens into one line.
    later = [v for p in panels for v in (*p["train_accuracy"][1:], *p["val_accuracy"][1:])]
    low = math.floor(min(later, default=0.0) * 20) / 20
    axes.flat[0].set_ylim(min(low, 0.95), 1.005)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    axes.flat[0].legend(loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# 2. Optimization history


def history_data(snapshot: StudySnapshot) -> dict | None:
    """Values of complete trials by number, best so far, and pruned/diverged trials' last
    reported validation accuracy (0 for a diverged one)."""
    complete = [(t.number, t.value) for t in snapshot.trials if t.state == "COMPLETE"]
    pruned, diverged = [], []
    for t in snapshot.trials:
        if t.state != "PRUNED":
            continue
        last = t.intermediate[max(t.intermediate)] if t.intermediate else 0.0
        (diverged if t.diverged else pruned).append((t.number, last))
    if not complete and not pruned and not diverged:
        return None
    best, running = [], -math.inf
    for number, value in complete:
        running = max(running, value)
        best.append((number, running))
    return {"complete": complete, "best": best, "pruned": pruned, "diverged": diverged}


@styled
def plot_history(data: dict) -> Figure:
    fig, ax = plt.subplots(figsize=(8, 3.2))
    if data["pruned"]:
        x, y = zip(*data["pruned"], strict=True)
        ax.scatter(x, y, s=10, marker="x", color=COLORS["pruned"], label="pruned (last epoch)")
    if data["diverged"]:
        x, y = zip(*data["diverged"], strict=True)
        ax.scatter(x, y, s=14, marker="v", color=COLORS["diverged"], label="diverged")
    if data["complete"]:
        x, y = zip(*data["complete"], strict=True)
        ax.scatter(x, y, s=12, color=COLORS["complete"], label="complete", zorder=3)
        bx, by = zip(*data["best"], strict=True)
        ax.step(bx, by, where="post", color=COLORS["best"], lw=1.5, label="best so far", zorder=4)
    ax.set_xlabel("trial number")
    ax.set_ylabel("validation accuracy")
    ax.legend(loc="lower right", ncol=4)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# 3. Importance


def importance_data(snapshot: StudySnapshot) -> dict | None:
    if not snapshot.importances:
        return None
    items = sorted(snapshot.importances.items(), key=lambda kv: kv[1])
    data = {"names": [k for k, _ in items], "values": [v for _, v in items]}
    spread = snapshot.importance_spread or {}
    if all(k in spread for k, _ in items):
        data["spread"] = [list(spread[k]) for k, _ in items]
    return data


@styled
def plot_importance(data: dict) -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(data["names"]) + 1.0))
    ax.barh(data["names"], data["values"], color=COLORS["complete"])
    spread = data.get("spread")
    if spread:
        lows = [max(0.0, v - lo) for v, (lo, _) in zip(data["values"], spread, strict=True)]
        highs = [max(0.0, hi - v) for v, (_, hi) in zip(data["values"], spread, strict=True)]
        ax.errorbar(data["values"], range(len(spread)), xerr=[lows, highs], fmt="none",
                    ecolor="k", elinewidth=1, capsize=3)  # fmt: skip
    right = max([*data["values"], *(hi for _, hi in spread or [])])
    for y, v in enumerate(data["values"]):
        text = f" {v:.2f}" + (f" ({spread[y][0]:.2f}-{spread[y][1]:.2f})" if spread else "")
        ax.text(right * 1.02 if spread else v, y, text, va="center", fontsize=8)
    ax.set_xlabel("importance (PED-ANOVA, normalized to sum to 1)")
    ax.set_xlim(0, right * (1.45 if spread else 1.2) or 1)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# 4. Two parameters against each other, coloured by validation accuracy


def pair_data(snapshot: StudySnapshot, x: str, y: str) -> dict | None:
    """Complete trials that have both parameters: their values and validation accuracy."""
    infos = {p.name: p for p in snapshot.params}
    if x not in infos or y not in infos:
        return None
    points = [
        (t.params[x], t.params[y], t.value)
        for t in snapshot.by_state("COMPLETE")
        if x in t.params and y in t.params
    ]
    pruned = [
        (t.params[x], t.params[y], last_value(t))
        for t in snapshot.by_state("PRUNED")
        if x in t.params and y in t.params
    ]
    if not points and not pruned:
        return None
    return {
        "x": x,
        "y": y,
        "x_log": infos[x].log,
        "y_log": infos[y].log,
        "points": sorted(points, key=lambda p: p[2]),  # best drawn last, on top
        "pruned": sorted(pruned, key=lambda p: p[2]),  # at their last epoch's value
        "color_range": color_range([p[2] for p in points] or [p[2] for p in pruned]),
    }


@styled
def plot_pair(data: dict) -> Figure:
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    low, high = data["color_range"]
    norm = matplotlib.colors.Normalize(vmin=low, vmax=high if high > low else low + 1e-9)
    sc = None
    if data["pruned"]:
        xs, ys, cs = zip(*data["pruned"], strict=True)
        sc = ax.scatter(xs, ys, c=cs, cmap="viridis", norm=norm, s=18, marker="x",
                        linewidths=0.9, label="pruned (last epoch)")  # fmt: skip
    if data["points"]:
        xs, ys, cs = zip(*data["points"], strict=True)
        sc = ax.scatter(xs, ys, c=cs, cmap="viridis", norm=norm, s=24, edgecolors="k",
                        linewidths=0.3, label="complete")  # fmt: skip
        best = data["points"][-1]
        ax.scatter([best[0]], [best[1]], marker="*", s=180, color=COLORS["best"], label="best")
    if data["x_log"]:
        _log_axis(ax.xaxis, ax.set_xscale)
    if data["y_log"]:
        _log_axis(ax.yaxis, ax.set_yscale)
    ax.set_xlabel(data["x"].replace("_", " "))
    ax.set_ylabel(data["y"].replace("_", " "))
    fig.colorbar(sc, ax=ax, label="validation accuracy", extend="min" if low > 0 else "neither")
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# 5. Validation accuracy by optimizer (or any categorical)


def by_category_data(snapshot: StudySnapshot, name: str) -> dict | None:
    groups: dict[str, list[float]] = defaultdict(list)
    pruned: dict[str, list[float]] = defaultdict(list)
    for t in snapshot.trials:
        if name in t.params and t.state == "COMPLETE":
            groups[str(t.params[name])].append(t.value)
        elif name in t.params and t.state == "PRUNED":
            pruned[str(t.params[name])].append(last_value(t))
    if not groups and not pruned:
        return None
    order = sorted(
        {*groups, *pruned},
        key=lambda g: (-max(groups[g], default=-1.0), -max(pruned[g], default=-1.0), g),
    )
    return {
        "name": name,
        "groups": {g: sorted(groups[g]) for g in order},  # complete trials; [] when none
        "pruned": {g: sorted(pruned[g]) for g in order},  # at their last epoch's value
    }


@styled
def plot_by_category(data: dict) -> Figure:
    groups, pruned = data["groups"], data["pruned"]
    fig, ax = plt.subplots(figsize=(1.2 * len(groups) + 2.5, 3.4))
    labels = list(groups)
    boxed = [i for i, g in enumerate(labels, start=1) if groups[g]]
    if boxed:
        ax.boxplot([groups[labels[i - 1]] for i in boxed], positions=boxed, showfliers=False,
                   widths=0.5)  # fmt: skip
    for i, g in enumerate(labels, start=1):
        for values, style in (
            (groups[g], {"s": 10, "alpha": 0.6, "color": COLORS["complete"]}),
            (pruned[g], {"s": 14, "alpha": 0.7, "marker": "x", "color": COLORS["pruned"]}),
        ):
            offsets = [(j % 7 - 3) * 0.04 for j in range(len(values))]
            ax.scatter([i + o for o in offsets], values, **style)
    ax.scatter([], [], s=10, color=COLORS["complete"], label="complete")
    ax.scatter([], [], s=14, marker="x", color=COLORS["pruned"], label="pruned (last epoch)")
    ax.legend(loc="lower left", fontsize=7)
    ax.set_xticks(
        range(1, len(labels) + 1),
        [f"{g}\n{len(groups[g])} + {len(pruned[g])} pruned" for g in labels],
    )
    ax.set_xlim(0.4, len(labels) + 0.6)
    ax.set_ylabel("validation accuracy")
    ax.set_xlabel(data["name"].replace("_", " "))
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# 6. Slices and parallel coordinates


def slice_data(snapshot: StudySnapshot) -> list[dict] | None:
    """Per searched parameter: (value, validation accuracy) of every complete trial."""
    complete, pruned = snapshot.by_state("COMPLETE"), snapshot.by_state("PRUNED")
    panels = []
    for p in snapshot.params:
        points = [(t.params[p.name], t.value) for t in complete if p.name in t.params]
        cut = [(t.params[p.name], last_value(t)) for t in pruned if p.name in t.params]
        if points or cut:
            panels.append(
                {"name": p.name, "kind": p.kind, "log": p.log, "points": points, "pruned": cut}
            )
    return panels or None


@styled
def plot_slices(panels: list[dict]) -> Figure:
    fig, axes = panel_grid(len(panels), max_cols=3, size=(3.3, 2.5), sharey=True)
    for ax, p in zip(axes.flat, panels, strict=False):
        labels = sorted({str(x) for x, _ in (*p["points"], *p["pruned"])})
        for points, style in (
            (p["pruned"], {"s": 12, "alpha": 0.7, "marker": "x", "color": COLORS["pruned"]}),
            (p["points"], {"s": 10, "alpha": 0.7, "color": COLORS["complete"]}),
        ):
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            if p["kind"] == "categorical":
                xs = [labels.index(str(x)) for x in xs]
            ax.scatter(xs, ys, **style)
        if p["kind"] == "categorical":
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        if p["log"]:
            _log_axis(ax.xaxis, ax.set_xscale)
        ax.set_xlabel(p["name"].replace("_", " "))
    for ax in axes[:, 0]:
        ax.set_ylabel("validation accuracy")
    fig.tight_layout()
    return fig


def parallel_data(snapshot: StudySnapshot, top_k: int) -> dict | None:
    """The top trials' parameters scaled to [0, 1] per axis (log axes in log space)."""
    top = snapshot.ranked()[:top_k]
    params = [p for p in snapshot.params if any(p.name in t.params for t in top)]
    if not top or not params:
        return None
    axes = []
    for p in params:
        values = [t.params.get(p.name) for t in top]
        axes.append({"name": p.name, **_axis_scale(p, [v for v in values if v is not None])})
    lines = []
    for t in top:
        coords = []
        for p, axis in zip(params, axes, strict=True):
            coords.append(None if p.name not in t.params else _scaled(t.params[p.name], axis))
        lines.append({"trial": t.number, "value": t.value, "coords": coords})
    return {"axes": axes, "lines": lines}


def _axis_scale(p: ParamInfo, values: list) -> dict:
    if p.kind == "categorical":
        labels = [str(c) for c in p.choices] or sorted({str(v) for v in values})
        return {"categorical": True, "labels": labels}
    lo = p.low if p.low is not None else min(values)
    hi = p.high if p.high is not None else max(values)
    return {"categorical": False, "log": p.log, "low": lo, "high": hi}


def _scaled(value, axis: dict) -> float:
    if axis["categorical"]:
        labels = axis["labels"]
        return labels.index(str(value)) / max(1, len(labels) - 1)
    lo, hi = axis["low"], axis["high"]
    if axis["log"]:
        lo, hi, value = math.log10(lo), math.log10(hi), math.log10(value)
    return 0.5 if hi == lo else (value - lo) / (hi - lo)


@styled
def plot_parallel(data: dict) -> Figure:
    axes_info = data["axes"]
    fig, ax = plt.subplots(figsize=(1.6 * len(axes_info) + 2, 3.6))
    values = [line["value"] for line in data["lines"]]
    lo, hi = min(values), max(values)
    cmap = plt.get_cmap("viridis")
    for line in reversed(data["lines"]):  # best drawn last
        pts = [(i, c) for i, c in enumerate(line["coords"]) if c is not None]
        shade = 1.0 if hi == lo else (line["value"] - lo) / (hi - lo)
        ax.plot(*zip(*pts, strict=True), color=cmap(shade), lw=1.4, alpha=0.85)
    for i, axis in enumerate(axes_info):
        ax.axvline(i, color="k", lw=0.6)
        if axis["categorical"]:
            ticks = axis["labels"]
            for j, label in enumerate(ticks):
                ax.text(i + 0.03, j / max(1, len(ticks) - 1), label, fontsize=7, va="center")
        else:
            for end, y in (("low", 0.0), ("high", 1.0)):
                ax.text(i + 0.03, y, f"{axis[end]:.3g}", fontsize=7, va="center")
    ax.set_xticks(range(len(axes_info)), [a["name"].replace("_", "\n") for a in axes_info])
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)  # every axis spans 0..1, whatever the lines reach
    ax.grid(False)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    fig.colorbar(sm, ax=ax, label="validation accuracy")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# 7. Intermediate values


def intermediate_data(snapshot: StudySnapshot) -> dict | None:
    """Every finished trial's per-epoch validation accuracy, pruned ones apart."""
    complete, pruned = [], []
    for t in snapshot.trials:
        if not t.intermediate or t.state not in ("COMPLETE", "PRUNED"):
            continue
        steps = sorted(t.intermediate)
        series = [(s, t.intermediate[s]) for s in steps]
        (complete if t.state == "COMPLETE" else pruned).append(series)
    if not complete and not pruned:
        return None
    return {"complete": complete, "pruned": pruned, "epochs": snapshot.epochs}


@styled
def plot_intermediate(data: dict) -> Figure:
    fig, ax = plt.subplots(figsize=(8, 3.4))
    alpha = max(0.05, min(0.6, 30 / max(1, len(data["complete"]) + len(data["pruned"]))))
    if data["pruned"]:
        ax.add_collection(
            LineCollection(
                data["pruned"], colors=COLORS["pruned"], linewidths=0.8, alpha=alpha, label="pruned"
            )
        )
        ends = [s[-1] for s in data["pruned"]]
        ax.scatter(
            *zip(*ends, strict=True),
            marker="x",
            s=8,
            color="#616161",
            zorder=3,
            label="where pruning cut",
        )
    if data["complete"]:
        ax.add_collection(
            LineCollection(
                data["complete"],
                colors=COLORS["complete"],
                linewidths=0.9,
                alpha=min(1, 2 * alpha),
                label="complete",
            )
        )
    last_step = max(s[-1][0] for s in data["complete"] + data["pruned"])
    ax.set_xlim(0.5, max(data["epochs"], last_step, 1) + 0.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# 8. The best configuration: activations and the generalization gap


def activations_data(snapshot: StudySnapshot) -> list[dict] | None:
    if not snapshot.activations:
        return None
    return [
        {
            "layer": h.layer,
            "edges": list(h.edges),
            "initial": list(h.initial),
            "trained": list(h.trained),
            "initial_zeros": h.initial_zeros,
            "trained_zeros": h.trained_zeros,
        }
        for h in snapshot.activations
    ]


@styled
def plot_activations(layers: list[dict]) -> Figure:
    fig, axes = plt.subplots(
        2, len(layers), figsize=(2.1 * len(layers) + 0.6, 3.9), squeeze=False, sharex=True
    )
    for col, layer in enumerate(layers):
        edges = layer["edges"]
        widths = [b - a for a, b in itertools.pairwise(edges)]
        for row, key in enumerate(("initial", "trained")):
            ax = axes[row][col]
            total = max(1, sum(layer[key]))
            color = COLORS["train"] if row == 0 else COLORS["val"]
            ax.bar(
                edges[:-1], [c / total for c in layer[key]], width=widths, align="edge", color=color
            )
            zeros = layer[f"{key}_zeros"]
            if zeros:
                ax.text(
                    0.97,
                    0.92,
                    f"{zeros:.0%} exactly 0",
                    transform=ax.transAxes,
                    ha="right",
                    va="top",
                    fontsize=7,
                )
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"layer {layer['layer']}")
            if col == 0:
                ax.set_ylabel("at init" if row == 0 else "trained")
        axes[1][col].set_xlabel("activation")
    fig.tight_layout()
    return fig


def gap_data(snapshot: StudySnapshot) -> dict | None:
    """The best trial's (``StudySnapshot.best_trial``) training minus validation accuracy per
    epoch."""
    best = snapshot.best_trial()
    if best is None or not best.curves:
        return None
    train, val = best.curves["train_accuracy"], best.curves["val_accuracy"]
    return {
        "trial": best.number,
        "train_accuracy": list(train),
        "val_accuracy": list(val),
        "gap": [a - b for a, b in zip(train, val, strict=True)],
        "best_epoch": best.best_epoch,
    }


@styled
def plot_gap(data: dict) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 3.0))
    epochs = range(1, len(data["gap"]) + 1)
    marker = "o" if len(epochs) == 1 else None
    ax.plot(epochs, data["train_accuracy"], color=COLORS["train"], marker=marker, label="training")
    ax.plot(epochs, data["val_accuracy"], color=COLORS["val"], marker=marker, label="validation")
    ax.fill_between(
        epochs,
        data["val_accuracy"],
        data["train_accuracy"],
        color="#bbbbbb",
        alpha=0.5,
        label="gap (training - validation)",
    )
    if data["best_epoch"]:
        ax.axvline(data["best_epoch"], color="k", lw=0.6, ls=":", label="best epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(f"trial #{data['trial']}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The confirmed ranking (hpo confirm)


def confirmed_data(snapshot: StudySnapshot) -> dict | None:
    """Per confirmed configuration, by confirmed rank: its runs, mean and interval, the search's
    single-run value, and whether it is tied with the first."""
    if not snapshot.confirmed:
        return None
    return {
        "rows": [
            {
                "label": f"#{c.trial} (search rank {c.search_rank})",
                "values": list(c.values),
                "mean": c.mean,
                "low": c.low,
                "high": c.high,
                "search_value": c.search_value,
                "kind": "first" if c.rank == 1 else "tied" if c.tied else "apart",
            }
            for c in snapshot.confirmed
        ]
    }


CONFIRMED_COLORS = {"first": COLORS["best"], "tied": "#ff7f0e", "apart": COLORS["complete"]}
CONFIRMED_LABELS = {
    "first": "first by mean",
    "tied": "tied with the first",
    "apart": "distinguishable from it",
}


@styled
def plot_confirmed(data: dict) -> Figure:
    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.3))
    shown = set()
    for y, r in enumerate(rows):
        color = CONFIRMED_COLORS[r["kind"]]
        offsets = [(j % 5 - 2) * 0.06 for j in range(len(r["values"]))]
        ax.scatter(r["values"], [y + o for o in offsets], s=12, color="#777", alpha=0.7,
                   zorder=2, label="a run" if y == 0 else None)  # fmt: skip
        if r["low"] == r["low"]:  # NaN with one run: no interval
            ax.plot([r["low"], r["high"]], [y, y], color=color, lw=3, alpha=0.8, zorder=3)
        ax.scatter([r["mean"]], [y], s=40, color=color, zorder=4,
                   label=None if r["kind"] in shown else CONFIRMED_LABELS[r["kind"]])  # fmt: skip
        shown.add(r["kind"])
        ax.scatter([r["search_value"]], [y], marker="x", s=36, color="k", zorder=5,
                   label="the search's run" if y == 0 else None)  # fmt: skip
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.invert_yaxis()
    points = [v for r in rows for v in (*r["values"], r["search_value"])]
    span = max(points) - min(points) or 0.01
    ax.set_xlim(min(points) - 0.08 * span, max(points) + 0.08 * span)
    ax.set_xlabel("validation accuracy (mean and 95% interval over seeds)")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# cs231n's debugging views


def first_layer_data(snapshot: StudySnapshot) -> dict | None:
    """The best net's first-layer weights as images, each unit on its own symmetric scale."""
    first = snapshot.first_layer
    if first is None or not first.units:
        return None
    return {
        "trial": first.trial,
        "side": first.side,
        "units": [list(u) for u in first.units],
    }


@styled
def plot_first_layer(data: dict) -> Figure:
    units = data["units"]
    cols = min(6, len(units))
    rows = math.ceil(len(units) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.1 * rows + 0.3), squeeze=False)
    side = data["side"]
    for ax, weights in itertools.zip_longest(axes.flat, units):
        ax.set_xticks([])
        ax.set_yticks([])
        if weights is None:
            ax.set_visible(False)
            continue
        image = np.asarray(weights).reshape(side, side)
        limit = float(np.abs(image).max()) or 1.0
        ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    fig.suptitle(f"trial #{data['trial']}: first-layer weights", fontsize=9)
    fig.tight_layout()
    return fig
