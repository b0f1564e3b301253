"""Render a study snapshot as one self-contained HTML file.

Figures are inline base64 PNGs (their size does not grow with the number of points, which keeps a
5,000-trial report small); the page loads nothing from the network. The Jinja2 template escapes
everything: study names, parameter values and spec text are user data.
"""

import base64
import io
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2
import matplotlib.pyplot as plt

from reports import catalog, experiment_figures, figures, summary
from reports.snapshot import StudySnapshot


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
    """Every figure the study has data for, in report order: the experiment's own first, then
    the kinds of ``reports.catalog``."""
    out = []
    for key, title, caption, data_fn, plot_fn in experiment_figures.figure_specs(snapshot):
        data = data_fn()
        if data is not None:
            text = caption(data) if callable(caption) else caption
            out.append(Figure(key, title, text, png_base64(plot_fn(data))))
    for figure in catalog.instances(snapshot, top_k):
        data = figure.data()
        if data is not None:
            caption = figure.caption(data, snapshot)
            out.append(
                Figure(figure.key, figure.title, caption, png_base64(figure.kind.plot(data)))
            )
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
        dataset=spec.dataset,
        space=spec.space,
        spec_json=json.dumps(spec.definition, indent=2, sort_keys=True),
        counts=summary.counts(snapshot),
        time=summary.compute_time(snapshot),
        findings=summary.findings(snapshot),
        sanity=summary.sanity_lines(snapshot),
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
