"""The plain data a report is drawn from: a snapshot of one study, with no Optuna objects.

``hpo.study_snapshot`` fills a ``StudySnapshot`` from the storage; everything in ``reports``
reads only this, so figures and the summary are pure functions of plain data and can be tested
by equality. ``reports`` imports nothing from ``hpo``: the study's definition reaches it as
``SpecFacts``, the few things a report states about it.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ParamInfo:
    """A searched parameter: ``kind`` is ``"float"`` (with ``log``) or ``"categorical"``."""

    name: str
    kind: str
    log: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple = ()


@dataclass(frozen=True)
class SpaceEntry:
    """One entry of the study's search space as its file gives it: ``kind`` is ``"float"`` or
    ``"int"`` (``low``..``high``, ``log``, ``step``), ``"choice"`` (``choices``) or ``"fixed"``
    (``value``)."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    value: Any = None


@dataclass(frozen=True)
class SpecFacts:
    """What a report states about the study's definition (its stored spec): ``model`` is the
    nets in words, ``epochs`` the most a trial may run, ``definition`` the spec in the layout of
    a study file and ``fingerprint`` the hash of what decides a trial's value."""

    description: str = ""
    dataset: str = "digits"
    model: str = ""
    activation: str = "relu"  # [model]'s, where the space does not fix or search it
    epochs: int = 30
    batch_size: int = 100
    user_network: bool = False
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    warmup_epochs: int = 5
    space: tuple[SpaceEntry, ...] = ()
    definition: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    def param(self, name: str) -> SpaceEntry | None:
        return next((p for p in self.space if p.name == name), None)

    def fixed(self, name: str, default: Any = None) -> Any:
        """The value the space fixes ``name`` to, else ``default`` (searched or not named)."""
        p = self.param(name)
        return p.value if p is not None and p.kind == "fixed" else default


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the report sees it. Curves are per epoch, epoch 1 first."""

    number: int
    state: str
    value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    intermediate: dict[int, float] = field(default_factory=dict)
    curves: dict[str, list[float]] | None = None
    batch_loss: list[float | None] | None = None  # every step's training loss, when recorded
    best_epoch: int | None = None
    train_accuracy: float | None = None
    epochs_run: int | None = None
    train_seconds: float | None = None
    queued_seconds: float | None = None  # RUNNING but waiting for a worker
    diverged: bool = False
    started: datetime | None = None
    completed: datetime | None = None
    # a confirmation run (hpo confirm): the trial it retrains and its seed's index
    source: int | None = None
    seed_index: int | None = None


@dataclass(frozen=True)
class LayerHistograms:
    """Activation histograms of one hidden layer (the best configuration, on validation
    inputs): counts of the nonzero activations in shared bins ``edges`` at initialization and
    after training, and the fraction of exact zeros apart (a ReLU layer's zeros would otherwise
    dwarf every other bar)."""

    layer: int
    edges: tuple[float, ...]
    initial: tuple[int, ...]
    trained: tuple[int, ...]
    initial_zeros: float = 0.0
    trained_zeros: float = 0.0


@dataclass(frozen=True)
class FirstLayer:
    """The trained best net's first-layer weights as images: per hidden unit (the first
    ``len(units)``), its ``side`` x ``side`` incoming weights, row by row."""

    trial: int
    side: int
    units: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class SanityChecks:
    """cs231n's two checks on the best configuration, with weight decay and dropout off: the
    loss of the untrained net on the training rows against ln(classes), and the training
    accuracy it reaches on ``overfit_samples`` rows in ``overfit_epochs`` epochs."""

    trial: int
    classes: int
    initial_loss: float
    overfit_samples: int
    overfit_epochs: int
    overfit_accuracy: float
    overfit_diverged: bool = False


@dataclass(frozen=True)
class ConfirmedRecord:
    """A configuration retrained over seeds (``hpo confirm``): its runs' mean and 95% interval
    (NaN bounds with one run), its rank by mean, and the paired test against the first."""

    trial: int
    params: dict[str, Any]
    mean: float
    low: float
    high: float
    values: tuple[float, ...]
    rank: int
    search_value: float
    search_rank: int
    p_vs_best: float | None
    tied: bool
    diverged: int = 0


@dataclass(frozen=True)
class StudySnapshot:
    name: str
    storage: str  # password masked
    spec: SpecFacts  # of the spec stored with the study
    split_sizes: dict[str, int]  # train, validation, test
    trials: tuple[TrialRecord, ...]
    params: tuple[ParamInfo, ...]
    importances: dict[str, float] | None = None
    # per parameter, the 5th and 95th percentile of its importance over bootstrap resamples
    importance_spread: dict[str, tuple[float, float]] | None = None
    importance_note: str = ""
    # {"trial", "test_accuracy", "epochs"}, and "test_accuracies", "test_interval" over seeds
    test_accuracy: dict[str, Any] | None = None
    activations: tuple[LayerHistograms, ...] = ()
    activation_note: str = ""
    first_layer: "FirstLayer | None" = None  # the best net's first-layer weights, as images
    sanity: "SanityChecks | None" = None
    experiment: dict[str, Any] | None = None  # the spec's experiment's extra data, by name
    generated: datetime | None = None
    confirmed: tuple[ConfirmedRecord, ...] = ()  # by confirmed rank; empty: none ran
    confirm_runs: tuple[TrialRecord, ...] = ()  # every stored confirmation run
    confirm_verdict: str = ""
    confirm_command: str = ""  # the command that confirms the ranking (or adds seeds)

    @property
    def epochs(self) -> int:
        """The most epochs a trial may run (the space may search them)."""
        return self.spec.epochs

    def by_state(self, state: str) -> list[TrialRecord]:
        return [t for t in self.trials if t.state == state]

    def ranked(self) -> list[TrialRecord]:
        """Completed trials, best first (ties: the earlier trial)."""
        return sorted(self.by_state("COMPLETE"), key=lambda t: (-t.value, t.number))

    def best_trial(self) -> TrialRecord | None:
        """The configuration the report is about: once ``hpo confirm`` ran, the first by mean
        over seeds; else the search's best (None before a trial completed)."""
        ranked = self.ranked()
        if self.confirmed:
            first = self.confirmed[0].trial
            return next((t for t in ranked if t.number == first), ranked[0] if ranked else None)
        return ranked[0] if ranked else None
