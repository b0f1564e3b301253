"""Render a study snapshot as one self-contained HTML file.

Figures are inline base64 PNGs (their size does not grow with the number of points, which keeps a
5,000-trial report small); the page loads nothing from the network. The Jinja2 template escapes
everything: study names, parameter values and spec text are user data.
"""

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2
import matplotlib.pyplot as plt

from reports import experiment_figures, figures, summary
from reports.snapshot import StudySnapshot

IMPORTANCE_NOTE = (
    "Each bar is the parameter's importance for validation accuracy (normalized to sum to 1), "
    "the median over 20 random subsamples of 80% of the complete trials; whiskers and the "
    "figures in brackets: their 5th to 95th percentile (with fewer than 5 complete trials, one "
    "value from all of them and no whiskers). Optuna 5 computes it with PED-ANOVA: how "
    "differently a parameter is distributed among the best trials than among all trials. A "
    "long bar means the good trials agree on that parameter's value; it says nothing about "
    "which direction is better (see the slices). Where two parameters' ranges overlap, their "
    "order is not settled by this study."
)


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    caption: str
    png: str  # base64


def png_base64(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", pad_inches=0.1)  # legends too
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def build_figures(snapshot: StudySnapshot, top_k: int) -> list[Figure]:
    """Every figure the study has data for, in report order."""
    names = {p.name for p in snapshot.params}
    shown = min(top_k, len(snapshot.ranked()))
    specs: list[tuple[str, str, str, Callable[[], object], Callable]] = [
        (
            "confirmed",
            "Confirmed ranking",
            lambda data: (
                f"The top {len(data['rows'])} configurations of the search retrained with "
                "fresh seeds, seed i the same for each (hpo confirm): every run (grey), the "
                "mean and its 95% Student-t "
                "interval (red: first by mean; orange: a paired t-test at 5% cannot tell it from "
                "the first; blue: it can), and the search's own single run (x)."
            ),
            lambda: figures.confirmed_data(snapshot),
            figures.plot_confirmed,
        ),
        (
            "curves",
            f"Learning curves of the top {min(shown, figures.MAX_CURVE_PANELS)}",
            "Training (blue) and validation (red) accuracy per epoch; the dotted line marks the "
            "best epoch, whose weights the trial keeps. The accuracy axis starts at the lowest "
            "value after the first epoch, so that the top trials' differences show.",
            lambda: figures.learning_curves_data(snapshot, top_k),
            figures.plot_learning_curves,
        ),
        (
            "history",
            "Optimization history",
            "Each trial's best validation accuracy, the best so far, and where pruned or diverged "
            "trials stopped.",
            lambda: figures.history_data(snapshot),
            figures.plot_history,
        ),
        (
            "importance",
            "Hyperparameter importance",
            IMPORTANCE_NOTE,
            lambda: figures.importance_data(snapshot),
            figures.plot_importance,
        ),
    ]
    for x, y, caption in (
        (
            "learning_rate",
            "weight_decay",
            "Learning rate against weight decay, log-log, as the book plots its random search. "
            "Dots: complete trials; x: pruned trials at their last epoch's value. The colour "
            "scale runs from the complete trials' lower quartile to the best.",
        ),
        (
            "learning_rate",
            "init_scale",
            "Learning rate against the weight-init scale; dots and x as above.",
        ),
    ):
        if x in names and y in names:
            specs.append(
                (
                    f"pair-{x}-{y}",
                    f"{x} x {y}".replace("_", " ").capitalize(),
                    caption,
                    lambda x=x, y=y: figures.pair_data(snapshot, x, y),
                    figures.plot_pair,
                )
            )
    for p in snapshot.params:
        if p.kind == "categorical":
            specs.append(
                (
                    f"by-{p.name}",
                    f"Validation accuracy by {p.name.replace('_', ' ')}",
                    "Per choice: the box spans the complete trials' quartiles; dots are "
                    "complete trials, x pruned ones at their last epoch's value; below each "
                    "choice, how many of each.",
                    lambda name=p.name: figures.by_category_data(snapshot, name),
                    figures.plot_by_category,
                )
            )
    specs += [
        (
            "slices",
            "Slices",
            "Validation accuracy against each parameter: every complete trial (dots) and "
            "every pruned one at its last epoch's value (x).",
            lambda: figures.slice_data(snapshot),
            figures.plot_slices,
        ),
        (
            "parallel",
            f"Parallel coordinates of the top {shown}",
            "Each line is a configuration, coloured by validation accuracy (brighter is better).",
            lambda: figures.parallel_data(snapshot, top_k),
            figures.plot_parallel,
        ),
        (
            "intermediate",
            "Intermediate values",
            "Validation accuracy per epoch of every trial; pruned trials in grey end where the "
            "pruner cut them.",
            lambda: figures.intermediate_data(snapshot),
            figures.plot_intermediate,
        ),
        (
            "activations",
            "Activations of the best configuration",
            snapshot.activation_note
            or "Histograms of each hidden layer's activations on the "
            "validation inputs, at initialization (top) and after training (bottom).",
            lambda: figures.activations_data(snapshot),
            figures.plot_activations,
        ),
        (
            "gap",
            "Generalization gap of the best configuration",
            "Training against validation accuracy over the epochs; a widening gap is overfitting.",
            lambda: figures.gap_data(snapshot),
            figures.plot_gap,
        ),
    ]
    out = []
    # The experiment's own figures first, then the usual ones.
    for key, title, caption, data_fn, plot_fn in experiment_figures.figure_specs(snapshot) + specs:
        data = data_fn()
        if data is not None:
            text = caption(data) if callable(caption) else caption
            out.append(Figure(key, title, text, png_base64(plot_fn(data))))
    return out


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["fmt"] = summary.fmt_value
    env.filters["seconds"] = _fmt_seconds
    env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M") if d else "-"
    env.filters["capitalize_first"] = lambda text: text[:1].upper() + text[1:]
    return env


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.2f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def render(snapshot: StudySnapshot, *, top_k: int = 10) -> str:
    """The report as an HTML string."""
    ranked = snapshot.ranked()[:top_k]
    best = snapshot.best_trial()
    test = snapshot.test_accuracy or {}
    rows = [
        {
            "rank": i,
            "trial": t.number,
            "value": t.value,
            "best_epoch": t.best_epoch,
            "train_accuracy": t.train_accuracy,
            "test_accuracy": test.get("test_accuracy") if test.get("trial") == t.number else None,
            "params": t.params,
            "best": best is not None and t.number == best.number,
        }
        for i, t in enumerate(ranked, start=1)
    ]
    param_names = [p.name for p in snapshot.params]
    spec = snapshot.spec
    template = template_environment().get_template("report.html.j2")
    return template.render(
        s=snapshot,
        missing_importance=(
            snapshot.importance_note if figures.importance_data(snapshot) is None else ""
        ),
        dataset=spec.data.dataset,
        search=spec.search,
        space=spec.space,
        spec_json=json.dumps(spec.to_dict(), indent=2, sort_keys=True),
        counts=summary.counts(snapshot),
        time=summary.compute_time(snapshot),
        findings=summary.findings(snapshot),
        noise=summary.uncertainty(snapshot, top_k),
        description=spec.description,
        rows=rows,
        param_names=param_names,
        top_k=top_k,
        figures=build_figures(snapshot, top_k),
        generated=snapshot.generated or datetime.now(),
    )


def write_report(snapshot: StudySnapshot, path: str | Path, *, top_k: int = 10) -> Path:
    """Write the report to ``path`` (its directory must exist) and return the path."""
    path = Path(path)
    path.write_text(render(snapshot, top_k=top_k), encoding="utf-8")
    return path
