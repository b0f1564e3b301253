"""Study files: TOML data loaded into frozen dataclasses, validated before anything runs.

A study file has the sections ``[study]`` (name, description), ``[data]``, ``[model]``,
``[training]``, ``[search]`` and ``[space]``; every section and key is optional except that the
space must search something. Unknown sections and keys are errors. Each entry of ``[space]`` is a
range table ``{ low, high, log, step }``, a ``{ choices = [...] }`` table, or a bare value that
fixes the parameter.

Every problem is reported as one line ``FILE: field: problem (allowed: ...)``. The same
validation reads a spec back from a study's storage (``spec_from_dict``), so a worker joins with
exactly the spec the study was created with.
"""

import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from hpo.errors import SpecError, UsageError
from hpo.names import (
    EXPERIMENTS,
    MAX_EPOCHS,
    MAX_LAYERS,
    MAX_SEED,
    MAX_TRIALS,
    MAX_WIDTH,
    PRUNERS,
    SAMPLERS,
    show_name,
    study_name_problem,
)
from trainer.network import ACTIVATIONS, INITS, WEIGHT_DECAY_TYPES
from trainer.optimizers import OPTIMIZERS
from trainer.sources import DATASETS, IDX_SOURCES, DatasetError, check_dataset_name


@dataclass(frozen=True)
class ParamRule:
    """What a searchable parameter may be: a float in [lo, hi] (bounds per ``closed``) or one
    of fixed choices; ``when`` names the optimizers it applies to (None: all)."""

    kind: str  # "float" or "choice"
    lo: float = -math.inf
    hi: float = math.inf
    closed: tuple[bool, bool] = (True, True)
    choices: tuple = ()
    when: tuple[str, ...] | None = None

    def allowed(self) -> str:
        if self.kind == "choice":
            return ", ".join(json.dumps(c) for c in self.choices)
        left = f"{self.lo} {'<=' if self.closed[0] else '<'} " if self.lo > -math.inf else ""
        right = f" {'<=' if self.closed[1] else '<'} {self.hi}" if self.hi < math.inf else ""
        return f"{left}value{right}"

    def admits(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices and type(value) is type(self.choices[0])
        lo_ok = value >= self.lo if self.closed[0] else value > self.lo
        hi_ok = value <= self.hi if self.closed[1] else value < self.hi
        return lo_ok and hi_ok


_UNIT = {"lo": 0.0, "hi": 1.0, "closed": (True, False)}  # [0, 1)


def _optimizer_params() -> dict[str, ParamRule]:
    """The optimizers' own searchable hyperparameters (``Optimizer.SEARCHABLE``), each for the
    optimizers that have it, in the registry's order."""
    rules: dict[str, ParamRule] = {}
    for optimizer, cls in OPTIMIZERS.items():
        for h in cls.searchable():
            when = (*rules[h.name].when, optimizer) if h.name in rules else (optimizer,)
            rules[h.name] = ParamRule("float", lo=h.low, hi=h.high, closed=(True, False), when=when)
    return rules


PARAMS: dict[str, ParamRule] = {
    "learning_rate": ParamRule("float", lo=0.0, closed=(False, True)),
    "weight_decay": ParamRule("float", lo=0.0),
    "dropout_ratio": ParamRule("float", **_UNIT),
    "init_scale": ParamRule("float", lo=0.0, closed=(False, True)),
    "optimizer": ParamRule("choice", choices=tuple(OPTIMIZERS)),
    "init": ParamRule("choice", choices=INITS),
    "activation": ParamRule("choice", choices=tuple(ACTIVATIONS)),
    "batchnorm": ParamRule("choice", choices=(False, True)),
    **_optimizer_params(),
}
"""The parameters ``[space]`` may search or fix, in the order trials suggest them: the
optimizers' own come from ``trainer.optimizers`` (a new optimizer's are searchable with no edit
here)."""

OPTIMIZER_HYPERPARAMETERS = ("learning_rate", *_optimizer_params())


@dataclass(frozen=True)
class Param:
    """One entry of the search space.

    ``kind`` is ``"float"`` (``low``..``high``, optionally ``log`` or ``step``), ``"choice"``
    (``choices``) or ``"fixed"`` (``value``).
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    value: Any = None


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "digits"
    data_dir: str | None = None
    train_size: int | None = None
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class ModelSpec:
    hidden: tuple[int, ...] = (100, 100, 100)
    activation: str = "relu"
    batchnorm: bool = False
    weight_decay_type: str = "l2"


@dataclass(frozen=True)
class TrainingSpec:
    epochs: int = 30
    batch_size: int = 100
    patience: int | None = None
    lr_decay: float = 1.0
    record_batch_loss: bool = False  # store every step's loss with the trial, not only epochs'
    eval_train_samples: int | None = None  # training rows the epoch's training accuracy counts


@dataclass(frozen=True)
class SearchSpec:
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    trials: int = 50
    timeout: float | None = None
    startup_trials: int = 10
    pruner_startup_trials: int = 5
    warmup_epochs: int = 5


@dataclass(frozen=True)
class StudySpec:
    """A validated study definition. ``source`` is where it was read from, for messages."""

    name: str
    description: str = ""
    experiment: str | None = None
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    space: tuple[Param, ...] = ()
    source: str = "<spec>"

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data, in the layout of a study file."""
        space = {}
        for p in self.space:
            if p.kind == "fixed":
                space[p.name] = p.value
            elif p.kind == "choice":
                space[p.name] = {"choices": list(p.choices)}
            else:
                entry = {"low": p.low, "high": p.high}
                if p.log:
                    entry["log"] = True
                if p.step is not None:
                    entry["step"] = p.step
                space[p.name] = entry

        def section(obj) -> dict:
            return {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in asdict(obj).items()
                if v is not None
            }

        model = section(self.model)
        for name in ("activation", "batchnorm"):
            if self.param(name) is not None:
                del model[name]  # searched or fixed in [space]; one place only
        return {
            "study": {"name": self.name, "description": self.description}
            | ({"experiment": self.experiment} if self.experiment else {}),
            "data": section(self.data),
            "model": model,
            "training": section(self.training),
            "search": section(self.search),
            "space": space,
        }

    def objective_fingerprint(self) -> str:
        """A hash of what decides a trial's value: data, model, training and space.

        Sampler, pruner, seed, trial target and timeout may change between runs of one study;
        anything in the fingerprint may not, or the stored trials stop being comparable.
        """
        d = self.to_dict()
        core = {k: d[k] for k in ("data", "model", "training", "space")}
        core["data"].pop("data_dir", None)  # where the files are differs between machines
        core["training"].pop("record_batch_loss", None)  # what is kept, not what is trained
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]

    def param(self, name: str) -> Param | None:
        return next((p for p in self.space if p.name == name), None)

    def fixed(self, name: str, default: Any = None) -> Any:
        """The value the space fixes ``name`` to, else ``default`` (searched or not named)."""
        p = self.param(name)
        return p.value if p is not None and p.kind == "fixed" else default

    def activation_text(self) -> str:
        """The nets' activation as a report states it: fixed (in [space] or [model]), or the
        choices a search draws from."""
        p = self.param("activation")
        if p is not None and p.kind == "choice":
            return "activation searched: " + ", ".join(map(str, p.choices))
        return str(self.fixed("activation", self.model.activation))


# ---------------------------------------------------------------------------------------------
# Reading


class _Table:
    """A TOML table being read: typed getters that name the field, and a check for leftovers."""

    def __init__(self, source: str, prefix: str, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise SpecError(source, prefix, f"{_show(raw)} is not a table")
        self.source, self.prefix, self.raw = source, prefix, dict(raw)

    def where(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, problem: str) -> SpecError:
        return SpecError(self.source, self.where(key), problem)

    def finish(self, allowed) -> None:
        for key in self.raw:
            if key not in allowed:
                raise self.fail(key, f"unknown field (allowed: {', '.join(allowed)})")

    def get(self, key: str, kind: str, default: Any, *, optional: bool = False) -> Any:
        if key not in self.raw:
            return default
        value = self.raw[key]
        checks = {
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "str": lambda v: isinstance(v, str),
            "bool": lambda v: isinstance(v, bool),
        }
        if optional and (value == "" or (type(value) in (int, float) and value == 0)):
            return None  # TOML has no null: "" or 0 means "not set" for optional fields
        if not checks[kind](value):
            names = {
                "int": "an integer",
                "number": "a number",
                "str": "a string",
                "bool": "true or false",
            }
            raise self.fail(key, f"{_show(value)} is not {names[kind]}")
        if kind == "number":
            value = float(value)
            if not math.isfinite(value):
                raise self.fail(key, f"{_show(value)} (allowed: a finite number)")
        return value

    def choice(self, key: str, default: str, allowed) -> str:
        value = self.get(key, "str", default)
        if value not in allowed:
            raise self.fail(key, f"unknown value {_show(value)} (allowed: {', '.join(allowed)})")
        return value

    def at_least(self, key: str, value, minimum, maximum=None, *, unset: str = "") -> None:
        """Refuse ``value`` outside ``minimum``..``maximum``; ``unset`` names the value that
        means "none" (an optional field), so that the message states the whole rule."""
        if value is None or (minimum <= value and (maximum is None or value <= maximum)):
            return
        rule = f">= {minimum}" if maximum is None else f"{minimum} to {maximum:,}"
        raise self.fail(key, f"{_show(value)} (allowed: {rule}{unset})")


def _as_float(source: str, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(source, where, f"{_show(value)} is not a number")
    if not math.isfinite(value):
        raise SpecError(source, where, f"{value} (allowed: a finite number)")
    return float(value)


def _field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _show(value: Any) -> str:
    if isinstance(value, str):
        return show_name(value, limit=60)
    if isinstance(value, bool | list):
        shown = json.dumps(value)
        return shown if len(shown) <= 80 else f"{shown[:60]}... ({len(value)} items)"
    return repr(value)


SECTIONS = ("study", "data", "model", "training", "search", "space")


def spec_from_dict(raw: dict[str, Any], *, source: str, default_name: str) -> StudySpec:
    """Validate the plain data of a study file and build its ``StudySpec``."""
    top = _Table(source, "", raw)
    top.finish(SECTIONS)

    t = _Table(source, "study", raw.get("study", {}))
    name = t.get("name", "str", default_name)
    problem = study_name_problem(name)
    if problem is not None:
        if "name" not in t.raw:
            problem = f"not set, and the file's name gives {problem}"
        raise t.fail("name", problem)
    description = t.get("description", "str", StudySpec.description)
    experiment = t.get("experiment", "str", None, optional=True)
    if experiment is not None and experiment not in EXPERIMENTS:
        raise t.fail(
            "experiment", f"unknown value {_show(experiment)} (allowed: {', '.join(EXPERIMENTS)})"
        )
    t.finish(("name", "description", "experiment"))

    t = _Table(source, "data", raw.get("data", {}))
    dataset = t.get("dataset", "str", DataSpec.dataset)
    try:
        check_dataset_name(dataset)
    except DatasetError:
        raise t.fail(
            "dataset", f"unknown dataset {_show(dataset)} (allowed: {', '.join(DATASETS)})"
        ) from None
    data = DataSpec(
        dataset=dataset,
        data_dir=t.get("data_dir", "str", None, optional=True),
        train_size=t.get("train_size", "int", None),
        validation_fraction=t.get("validation_fraction", "number", DataSpec.validation_fraction),
        test_fraction=t.get("test_fraction", "number", DataSpec.test_fraction),
        seed=t.get("seed", "int", DataSpec.seed),
    )
    t.at_least("train_size", data.train_size, 2, unset=", or leave it out for every sample")
    t.at_least("seed", data.seed, 0, MAX_SEED)
    if data.data_dir is not None and dataset not in IDX_SOURCES:
        raise t.fail(
            "data_dir",
            f"{_show(data.data_dir)} is set, but dataset {_show(dataset)} reads no directory "
            f"(allowed: data_dir with {', '.join(IDX_SOURCES)})",
        )
    for key in ("validation_fraction", "test_fraction"):
        if not 0 < getattr(data, key) < 1:
            raise t.fail(key, f"{getattr(data, key)} (allowed: 0 < fraction < 1)")
    t.finish(_field_names(DataSpec))

    t = _Table(source, "model", raw.get("model", {}))
    hidden = t.raw.get("hidden", list(ModelSpec.hidden))
    if (
        not isinstance(hidden, list)
        or not hidden
        or len(hidden) > MAX_LAYERS
        or not all(
            isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_WIDTH for h in hidden
        )
    ):
        raise t.fail(
            "hidden",
            f"{_show(hidden)} (allowed: a list of 1 to {MAX_LAYERS} layer widths, each 1 to "
            f"{MAX_WIDTH:,})",
        )
    model = ModelSpec(
        hidden=tuple(hidden),
        activation=t.choice("activation", ModelSpec.activation, tuple(ACTIVATIONS)),
        batchnorm=t.get("batchnorm", "bool", ModelSpec.batchnorm),
        weight_decay_type=t.choice(
            "weight_decay_type", ModelSpec.weight_decay_type, WEIGHT_DECAY_TYPES
        ),
    )
    t.finish(_field_names(ModelSpec))

    t = _Table(source, "training", raw.get("training", {}))
    training = TrainingSpec(
        epochs=t.get("epochs", "int", TrainingSpec.epochs),
        batch_size=t.get("batch_size", "int", TrainingSpec.batch_size),
        patience=t.get("patience", "int", None, optional=True),
        lr_decay=t.get("lr_decay", "number", TrainingSpec.lr_decay),
        record_batch_loss=t.get("record_batch_loss", "bool", TrainingSpec.record_batch_loss),
        eval_train_samples=t.get("eval_train_samples", "int", None, optional=True),
    )
    t.at_least("epochs", training.epochs, 1, MAX_EPOCHS)
    t.at_least("eval_train_samples", training.eval_train_samples, 1, unset=", or 0 for every row")
    t.at_least("batch_size", training.batch_size, 1)
    t.at_least("patience", training.patience, 1, unset=", or 0 for no early stopping")
    if not 0 < training.lr_decay <= 1:
        raise t.fail("lr_decay", f"{training.lr_decay} (allowed: 0 < factor <= 1)")
    t.finish(_field_names(TrainingSpec))

    t = _Table(source, "search", raw.get("search", {}))
    search = SearchSpec(
        sampler=t.choice("sampler", SearchSpec.sampler, SAMPLERS),
        pruner=t.choice("pruner", SearchSpec.pruner, PRUNERS),
        seed=t.get("seed", "int", SearchSpec.seed),
        trials=t.get("trials", "int", SearchSpec.trials),
        timeout=t.get("timeout", "number", None, optional=True),
        startup_trials=t.get("startup_trials", "int", SearchSpec.startup_trials),
        pruner_startup_trials=t.get(
            "pruner_startup_trials", "int", SearchSpec.pruner_startup_trials
        ),
        warmup_epochs=t.get("warmup_epochs", "int", SearchSpec.warmup_epochs),
    )
    t.at_least("trials", search.trials, 1, MAX_TRIALS)
    t.at_least("seed", search.seed, 0, MAX_SEED)
    t.at_least("startup_trials", search.startup_trials, 0, MAX_TRIALS)
    t.at_least("pruner_startup_trials", search.pruner_startup_trials, 0, MAX_TRIALS)
    t.at_least("warmup_epochs", search.warmup_epochs, 0, MAX_EPOCHS)
    if search.pruner in ("hyperband", "sha") and search.warmup_epochs >= training.epochs:
        raise t.fail(
            "warmup_epochs",
            f"{search.warmup_epochs} with pruner {_show(search.pruner)} and "
            f"training.epochs = {training.epochs} (allowed: 0 to {training.epochs - 1}: the "
            "first rung must come before the last epoch)",
        )
    if search.timeout is not None and search.timeout <= 0:
        raise t.fail("timeout", f"{search.timeout} (allowed: > 0 seconds, or 0 for none)")
    t.finish(_field_names(SearchSpec))

    model_keys = set(raw.get("model", {}))
    space = _read_space(_Table(source, "space", raw.get("space", {})), model_keys)
    if search.sampler == "grid":
        optimizer = next((p for p in space if p.name == "optimizer"), None)
        for p in space:
            when = PARAMS[p.name].when
            varying = optimizer is not None and optimizer.kind == "choice"
            if when is not None and p.kind != "fixed" and varying:
                raise SpecError(
                    source,
                    f"space.{p.name}",
                    f"applies only to {', '.join(when)}, so a grid over the optimizer would "
                    'repeat configurations (allowed with sampler "grid": a fixed value, or '
                    "a fixed optimizer)",
                )
            if p.kind == "float" and p.step is None:
                raise SpecError(
                    source,
                    f"space.{p.name}",
                    "a continuous range cannot be a grid "
                    '(allowed with sampler "grid": choices, fixed values, or a '
                    "range with step)",
                )
    if search.sampler == "cmaes" and not any(p.kind == "float" for p in space):
        raise SpecError(
            source,
            "search.sampler",
            '"cmaes" needs at least one float range in [space] (allowed: tpe, random, qmc, grid)',
        )
    return StudySpec(name, description, experiment, data, model, training, search, space, source)


def _read_space(t: _Table, model_keys: set[str]) -> tuple[Param, ...]:
    t.finish(tuple(PARAMS))
    params = []
    for name, rule in PARAMS.items():
        if name not in t.raw:
            continue
        entry = t.raw[name]
        where = f"{t.prefix}.{name}"
        if not isinstance(entry, dict):
            if rule.kind == "float":
                entry = _as_float(t.source, where, entry)
            if not rule.admits(entry):
                raise SpecError(t.source, where, f"{_show(entry)} (allowed: {rule.allowed()})")
            params.append(Param(name, "fixed", value=entry))
            continue
        e = _Table(t.source, where, entry)
        if "choices" in e.raw:
            e.finish(("choices",))
            choices = e.raw["choices"]
            if not isinstance(choices, list) or not choices:
                raise e.fail("choices", f"{_show(choices)} (allowed: a non-empty list)")
            if rule.kind == "float":
                choices = [_as_float(t.source, f"{where}.choices", c) for c in choices]
            for c in choices:
                if not rule.admits(c):
                    raise e.fail("choices", f"{_show(c)} (allowed: {rule.allowed()})")
            if len(set(map(json.dumps, choices))) != len(choices):
                raise e.fail("choices", f"{_show(choices)} has duplicates")
            params.append(Param(name, "choice", choices=tuple(choices)))
            continue
        if rule.kind == "choice":
            raise SpecError(
                t.source,
                where,
                "a range is not possible here (allowed: "
                f"{{ choices = [...] }} or one of {rule.allowed()})",
            )
        e.finish(("low", "high", "log", "step"))
        for key in ("low", "high"):
            if key not in e.raw:
                raise e.fail(key, "missing (a range needs low and high)")
        low, high = e.get("low", "number", None), e.get("high", "number", None)
        log = e.get("log", "bool", False)
        step = e.get("step", "number", None)
        for key, v in (("low", low), ("high", high)):
            if not rule.admits(v):
                raise e.fail(key, f"{v} (allowed: {rule.allowed()})")
        if low >= high:
            raise e.fail("low", f"{low} is not below high = {high} (allowed: low < high)")
        if log and low <= 0:
            raise e.fail("low", f"{low} with log = true (allowed: low > 0)")
        if step is not None:
            if log:
                raise e.fail("step", "step and log = true cannot be combined")
            if step <= 0 or step > high - low:
                raise e.fail("step", f"{step} (allowed: 0 < step <= high - low)")
        params.append(Param(name, "float", low=low, high=high, log=log, step=step))

    for name in ("activation", "batchnorm"):
        if name in t.raw and name in model_keys:
            raise SpecError(t.source, f"space.{name}", "also set in [model] (allowed: one place)")
    searched = [p for p in params if p.kind != "fixed"]
    if not searched:
        raise SpecError(
            t.source,
            "space",
            f"searches nothing (allowed: at least one range or choices among {', '.join(PARAMS)})",
        )
    return tuple(params)


def packaged_specs() -> dict[str, str]:
    """The study files shipped in the ``studies`` package: name -> first description line;
    ``default`` first, then by name."""
    found = {}
    entries = resources.files("studies").iterdir()
    for entry in sorted(entries, key=lambda e: (e.name != "default.toml", e.name)):
        if entry.name.endswith(".toml"):
            try:
                raw = tomllib.loads(entry.read_text(encoding="utf-8"))
                description = raw.get("study", {}).get("description", "")
            except tomllib.TOMLDecodeError:
                description = "(unreadable)"
            found[entry.name[:-5]] = description.strip().splitlines()[0] if description else ""
    return found


def load_spec(spec: str) -> StudySpec:
    """Load a study file by path, or by the name of a packaged spec (``default``)."""
    if not spec.strip():
        raise UsageError(
            f"SPEC: {_show(spec)} (allowed: a .toml path, or a packaged spec: "
            f"{', '.join(packaged_specs())})"
        )
    path = Path(spec)
    if path.suffix == ".toml" or path.exists() or "/" in spec:
        if path.is_dir():
            raise UsageError(f"{spec}: is a directory (allowed: a .toml study file)")
        if not path.is_file():
            raise UsageError(
                f"{spec}: no such study file (allowed: a .toml path, or a packaged spec: "
                f"{', '.join(packaged_specs())})"
            )
        source, default_name = str(path), path.stem
        try:
            text = path.read_text(encoding="utf-8-sig")  # a BOM, as Windows editors write it
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{spec}: cannot read the study file ({e})") from None
    else:
        names = packaged_specs()
        if spec not in names:
            raise UsageError(
                f"{spec}: no such packaged spec (allowed: {', '.join(names)}, or a path to a "
                ".toml file)"
            )
        source, default_name = f"studies/{spec}.toml", spec
        text = resources.files("studies").joinpath(f"{spec}.toml").read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{source}: not valid TOML ({e})") from None
    return spec_from_dict(raw, source=source, default_name=default_name)
