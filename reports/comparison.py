"""Several studies of one objective side by side: best-so-far against trials and compute time.

The book compares search strategies by how soon they find a good configuration. For each study,
``comparison_data`` walks its finished trials (complete and pruned) in the order they were
created and keeps the best validation accuracy so far, against the trial count and against the
compute time spent so far (each trial from its creation to its end: sampling, training,
storage; less the time it waited queued for a worker, which its run records).
``plot_comparison`` draws both; ``render_comparison`` writes the page.
"""

import math
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from reports.figures import styled
from reports.html import png_base64, template_environment
from reports.snapshot import StudySnapshot

STUDY_COLORS = ("#9e9e9e", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def _study_curve(s: StudySnapshot) -> dict:
    finished = sorted(
        (t for t in s.trials if t.state in ("COMPLETE", "PRUNED")), key=lambda t: t.number
    )
    best, seconds, training = -math.inf, 0.0, 0.0
    best_so_far, elapsed = [], []
    for t in finished:
        if t.value is not None:
            best = max(best, t.value)
        if t.started is not None and t.completed is not None:
            seconds += (t.completed - t.started).total_seconds() - (t.queued_seconds or 0.0)
        training += t.train_seconds or 0.0
        best_so_far.append(best if best > -math.inf else None)
        elapsed.append(seconds)
    return {
        "name": s.name,
        "sampler": s.spec.sampler,
        "pruner": s.spec.pruner,
        "trials": len(finished),
        "best": best if best > -math.inf else None,
        "best_so_far": best_so_far,
        "seconds": elapsed,
        "training_seconds": training,
    }


def comparison_data(snapshots: list[StudySnapshot]) -> dict:
    """Per study its best-so-far curve; and for each ordered pair (a, b) of studies the trial
    and the compute time at which b first reached a's final best (None: never)."""
    studies = [_study_curve(s) for s in snapshots]
    reaches = []
    for a in studies:
        for b in studies:
            if a is b or a["best"] is None:
                continue
            at = next(
                (i for i, v in enumerate(b["best_so_far"]) if v is not None and v >= a["best"]),
                None,
            )
            reaches.append(
                {
                    "target": a["name"],
                    "target_best": a["best"],
                    "target_trials": a["trials"],
                    "study": b["name"],
                    "trial": None if at is None else at + 1,
                    "seconds": None if at is None else b["seconds"][at],
                    "of_seconds": b["seconds"][-1] if b["seconds"] else 0.0,
                }
            )
    return {"studies": studies, "reaches": reaches}


def reach_sentences(data: dict) -> list[str]:
    """One sentence per ordered pair: when one study reached another's best."""
    out = []
    for r in data["reaches"]:
        if r["trial"] is None:
            out.append(f"{r['study']} never reached {r['target']}'s best ({r['target_best']:.4f}).")
        else:
            out.append(
                f"{r['study']} reached {r['target']}'s best of {r['target_trials']} trials "
                f"({r['target_best']:.4f}) at its trial {r['trial']}, after "
                f"{r['seconds']:.1f} s of its {r['of_seconds']:.1f} s."
            )
    return out


@styled
def plot_comparison(data: dict) -> Figure:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.6), sharey=True)
    for i, s in enumerate(data["studies"]):
        color = STUDY_COLORS[i % len(STUDY_COLORS)]
        label = f"{s['name']} ({s['sampler']})"
        ys = [math.nan if v is None else v for v in s["best_so_far"]]
        ax1.step(range(1, len(ys) + 1), ys, where="post", color=color, lw=1.6, label=label)
        ax2.step(s["seconds"], ys, where="post", color=color, lw=1.6, label=label)
    ax1.set_xlabel("finished trials")
    ax1.set_ylabel("best validation accuracy so far")
    ax2.set_xlabel("compute time (s, summed over trials)")
    ax1.legend(loc="lower right")
    fig.tight_layout()
    return fig


def render_comparison(snapshots: list[StudySnapshot], *, generated: datetime | None = None) -> str:
    """The comparison page as an HTML string."""
    data = comparison_data(snapshots)
    template = template_environment().get_template("comparison.html.j2")
    return template.render(
        studies=data["studies"],
        snapshots=snapshots,
        sentences=reach_sentences(data),
        figure=png_base64(plot_comparison(data)),
        storage=snapshots[0].storage if snapshots else "",
        fingerprints_differ=len({s.spec.fingerprint for s in snapshots}) > 1,
        generated=generated or datetime.now(),
    )


def write_comparison(snapshots: list[StudySnapshot], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(render_comparison(snapshots), encoding="utf-8")
    return path
