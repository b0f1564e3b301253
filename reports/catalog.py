"""The report's figures, declared once: what each shows, how it is titled and captioned, and
when it applies.

``KINDS`` lists every kind of figure in the report's order, like the optimizers' registry: a
``FigureKind`` names its data function (``snapshot, top_k, **variant -> data or None``; None
leaves the figure out), its plot function (``data -> Figure``) and its caption (a string, or a
function of the data and the snapshot). A kind drawn once per parameter or pair of parameters
lists its ``variants`` for a snapshot; the key and title are formatted with them. The page
(``reports.html``) draws ``instances(snapshot)`` after the experiment's own figures
(``reports.experiment_figures``), and the tests run every kind: adding a figure is one entry
here and its two functions in ``reports.figures``.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure

from reports import figures
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

Caption = str | Callable[..., str]  # or (data, snapshot, **variant) -> str


@dataclass(frozen=True)
class FigureKind:
    """One kind of figure: ``key`` and ``title`` are formatted with the variant's fields,
    ``top`` (the configurations shown) and ``curves`` (the learning-curve panels drawn)."""

    key: str
    title: str
    caption: Caption
    data: Callable[..., Any]
    plot: Callable[[Any], Figure]
    variants: Callable[[StudySnapshot], list[dict[str, str]]] = field(default=lambda snapshot: [{}])


@dataclass(frozen=True)
class FigureInstance:
    """A kind of figure for one snapshot and variant: ``data()`` computes what it draws."""

    key: str
    title: str
    kind: FigureKind
    variant: dict[str, str]
    data: Callable[[], Any]

    def caption(self, data: Any, snapshot: StudySnapshot) -> str:
        c = self.kind.caption
        return c(data, snapshot, **self.variant) if callable(c) else c


PAIRS = (
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
)
"""The pairs of parameters drawn against each other when a study searches both."""


def _pairs(snapshot: StudySnapshot) -> list[dict[str, str]]:
    names = {p.name for p in snapshot.params}
    return [{"x": x, "y": y} for x, y, _ in PAIRS if x in names and y in names]


def _categoricals(snapshot: StudySnapshot) -> list[dict[str, str]]:
    return [{"name": p.name} for p in snapshot.params if p.kind == "categorical"]


KINDS: tuple[FigureKind, ...] = (
    FigureKind(
        "confirmed",
        "Confirmed ranking",
        lambda data, snapshot: (
            f"The top {len(data['rows'])} configurations of the search retrained with fresh "
            "seeds, seed i the same for each (hpo confirm): every run (grey), the mean and its "
            "95% Student-t interval (red: first by mean; orange: a paired t-test at 5% cannot "
            "tell it from the first; blue: it can), and the search's own single run (x)."
        ),
        lambda snapshot, top_k: figures.confirmed_data(snapshot),
        figures.plot_confirmed,
    ),
    FigureKind(
        "curves",
        "Learning curves of the top {curves}",
        "Training (blue) and validation (red) accuracy per epoch; the dotted line marks the "
        "best epoch, whose weights the trial keeps. The accuracy axis starts at the lowest value "
        "after the first epoch, so that the top trials' differences show.",
        figures.learning_curves_data,
        figures.plot_learning_curves,
    ),
    FigureKind(
        "history",
        "Optimization history",
        "Each trial's best validation accuracy, the best so far, and where pruned or diverged "
        "trials stopped.",
        lambda snapshot, top_k: figures.history_data(snapshot),
        figures.plot_history,
    ),
    FigureKind(
        "importance",
        "Hyperparameter importance",
        IMPORTANCE_NOTE,
        lambda snapshot, top_k: figures.importance_data(snapshot),
        figures.plot_importance,
    ),
    FigureKind(
        "pair-{x}-{y}",
        "{x} x {y}",
        lambda data, snapshot, x, y: next(c for a, b, c in PAIRS if (a, b) == (x, y)),
        lambda snapshot, top_k, x, y: figures.pair_data(snapshot, x, y),
        figures.plot_pair,
        _pairs,
    ),
    FigureKind(
        "by-{name}",
        "Validation accuracy by {name}",
        "Per choice: the box spans the complete trials' quartiles; dots are complete trials, x "
        "pruned ones at their last epoch's value; below each choice, how many of each.",
        lambda snapshot, top_k, name: figures.by_category_data(snapshot, name),
        figures.plot_by_category,
        _categoricals,
    ),
    FigureKind(
        "slices",
        "Slices",
        "Validation accuracy against each parameter: every complete trial (dots) and every "
        "pruned one at its last epoch's value (x).",
        lambda snapshot, top_k: figures.slice_data(snapshot),
        figures.plot_slices,
    ),
    FigureKind(
        "parallel",
        "Parallel coordinates of the top {top}",
        "Each line is a configuration, coloured by validation accuracy (brighter is better).",
        figures.parallel_data,
        figures.plot_parallel,
    ),
    FigureKind(
        "intermediate",
        "Intermediate values",
        "Validation accuracy per epoch of every trial; pruned trials in grey end where the pruner "
        "cut them.",
        lambda snapshot, top_k: figures.intermediate_data(snapshot),
        figures.plot_intermediate,
    ),
    FigureKind(
        "activations",
        "Activations of the best configuration",
        lambda data, snapshot: (
            snapshot.activation_note
            or "Histograms of each hidden layer's activations on the validation inputs, at "
            "initialization (top) and after training (bottom)."
        ),
        lambda snapshot, top_k: figures.activations_data(snapshot),
        figures.plot_activations,
    ),
    FigureKind(
        "gap",
        "Generalization gap of the best configuration",
        "Training against validation accuracy over the epochs; a widening gap is overfitting.",
        lambda snapshot, top_k: figures.gap_data(snapshot),
        figures.plot_gap,
    ),
    FigureKind(
        "first-layer",
        "First-layer weights",
        "First-layer weights of the best configuration, trained again with its seed: each "
        "square is one hidden unit's incoming weights laid out as the input image (red "
        "positive, blue negative, each on its own scale). A well-trained narrow net shows "
        "smooth strokes and blobs; many near-identical or empty squares mean dead or "
        "redundant units (cs231n's visual check). Noise means little learned only where the "
        "accuracy agrees: in a wide layer (hundreds of units, as on Fashion-MNIST) each unit "
        "moves little from its random start, so even a net at 91% shows mostly noise.",
        lambda snapshot, top_k: figures.first_layer_data(snapshot),
        figures.plot_first_layer,
    ),
)
"""Every kind of figure the report may hold, in its order."""


def instances(snapshot: StudySnapshot, top_k: int = 10) -> list[FigureInstance]:
    """Every figure of the study's kinds and variants (some may have no data), in order."""
    shown = min(top_k, len(snapshot.ranked()))
    out = []
    for kind in KINDS:
        for variant in kind.variants(snapshot):
            fields = {"top": shown, "curves": min(shown, figures.MAX_CURVE_PANELS), **variant}
            title = kind.title.format(**{k: str(v).replace("_", " ") for k, v in fields.items()})
            out.append(
                FigureInstance(
                    kind.key.format(**variant),
                    title[0].upper() + title[1:],
                    kind,
                    variant,
                    lambda kind=kind, variant=variant: kind.data(snapshot, top_k, **variant),
                )
            )
    return out
