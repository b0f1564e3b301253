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
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from hpo.allowed import (
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
from hpo.errors import SpecError, UsageError
from trainer.config import RULES, DataConfig, NetConfig, Rule, TrainConfig
from trainer.contract import NetworkError, is_file_reference, split_reference
from trainer.network import ACTIVATIONS, INITS, WEIGHT_DECAY_TYPES
from trainer.optimizers import OPTIMIZERS
from trainer.sources import DATASETS, IDX_SOURCES, DatasetError, check_dataset_name


def _optimizer_params() -> dict[str, Rule]:
    """The optimizers' own searchable hyperparameters (``Optimizer.SEARCHABLE``), each for the
    optimizers that have it, in the registry's order."""
    rules: dict[str, Rule] = {}
    for optimizer, cls in OPTIMIZERS.items():
        for h in cls.searchable():
            when = (*rules[h.name].when, optimizer) if h.name in rules else (optimizer,)
            rules[h.name] = Rule("float", lo=h.low, hi=h.high, closed=(True, False), when=when)
    return rules


PARAMS: dict[str, Rule] = {
    "learning_rate": RULES["training.learning_rate"],
    "weight_decay": RULES["model.weight_decay"],
    "dropout_ratio": RULES["model.dropout_ratio"],
    "init_scale": RULES["model.init_scale"],
    "optimizer": Rule("choice", choices=tuple(OPTIMIZERS)),
    "init": Rule("choice", choices=INITS),
    "activation": Rule("choice", choices=tuple(ACTIVATIONS)),
    "batchnorm": Rule("choice", choices=(False, True)),
    **_optimizer_params(),
}
"""The short names ``[space]`` may search or fix, in the order trials suggest them: the
optimizers' own come from ``trainer.optimizers`` (a new optimizer's are searchable with no edit
here). Every other setting is searched by its place (``SETTINGS``, ``ARGS``)."""

OPTIMIZER_HYPERPARAMETERS = ("learning_rate", *_optimizer_params())

NOT_SEARCHED = ("training.learning_rate", "training.eval_train_samples")
"""Settings with a rule that ``[space]`` does not take by their place: the learning rate is the
short name ``learning_rate``; which rows an epoch's training accuracy counts is no
hyperparameter."""

SETTINGS: dict[str, Rule] = {
    "model.width": replace(RULES["model.width"], hi=MAX_WIDTH),
    "model.depth": replace(RULES["model.depth"], hi=MAX_LAYERS),
    **{
        place: rule
        for place, rule in RULES.items()
        if place.startswith("training.") and place not in NOT_SEARCHED
    },
    "training.epochs": replace(RULES["training.epochs"], hi=MAX_EPOCHS),
}
"""The settings ``[space]`` addresses by their place: the built-in net's width (every hidden
layer's) and depth (its number of hidden layers), and every field of the trainer's
``TrainConfig`` that has a rule in ``trainer.config.RULES`` (``training.batch_size``,
``training.epochs``, ``training.lr_decay``, ``training.patience``). A new searchable training
setting is its ``TrainConfig`` field and its ``RULES`` entry: nothing here."""

ARGS = "model.args."
"""The prefix of a learner's net's constructor keywords in ``[space]``: ``model.args.reg``."""

BUILT_IN_ONLY = (
    "weight_decay",
    "dropout_ratio",
    "init_scale",
    "init",
    "activation",
    "batchnorm",
    "model.width",
    "model.depth",
)
"""Space names that set the built-in net, which a learner's net (``model.network``) has not."""


@dataclass(frozen=True)
class Param:
    """One entry of the search space.

    ``kind`` is ``"float"`` or ``"int"`` (``low``..``high``, optionally ``log`` or ``step``),
    ``"choice"`` (``choices``) or ``"fixed"`` (``value``). ``name`` is a short name of
    ``PARAMS`` or a setting's place (``"training.batch_size"``, ``"model.args.reg"``): the
    name Optuna stores the parameter under.
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    value: Any = None


MODEL_KEYS = ("hidden", "activation", "batchnorm", "weight_decay_type")
"""``[model]``'s keys for the built-in net: ``trainer.config.NetConfig``'s fields (``hidden`` is
``hidden_sizes``); its regularization and init are the space's (``weight_decay``, ...)."""
TRAINING_KEYS = tuple(f.name for f in fields(TrainConfig) if f"training.{f.name}" in RULES)
"""``[training]``'s keys: every ``trainer.config.TrainConfig`` field with a rule in
``trainer.config.RULES`` (the optimizer and its hyperparameters are the space's).
``record_batch_loss`` is the study's own (what it stores)."""
STORED_TRAINING_KEYS = ("epochs", "batch_size", "patience", "lr_decay", "eval_train_samples")
"""The keys every stored spec has held since the first release: always written back; a newer
key is written only when it differs from its default, so that the objective fingerprint of a
study stored before that key existed stays the same."""
SPEC_EPOCHS = 30
"""A study's epochs when ``[training]`` does not say (``python -m trainer``'s default is 20)."""


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
    data: DataConfig = field(default_factory=DataConfig)
    model: NetConfig = field(default_factory=NetConfig)
    training: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=SPEC_EPOCHS))
    search: SearchSpec = field(default_factory=SearchSpec)
    space: tuple[Param, ...] = ()
    source: str = "<spec>"
    record_batch_loss: bool = False  # store every step's loss with the trial, not only epochs'

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data, in the layout of a study file."""
        space = {}
        for p in self.space:
            if p.kind == "fixed":
                space[p.name] = p.value
            elif p.kind == "choice":
                space[p.name] = {"choices": list(p.choices)}
            else:  # "float" or "int"
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

        m = self.model
        model = {
            "hidden": list(m.hidden_sizes),
            "activation": m.activation,
            "batchnorm": m.batchnorm,
            "weight_decay_type": m.weight_decay_type,
        }
        if m.network is not None:  # the built-in net's fields do not apply
            model = {"network": m.network}
        if self.model.args:
            model["args"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model.args}
        for name in ("activation", "batchnorm"):
            if self.param(name) is not None:
                model.pop(name, None)  # searched or fixed in [space]; one place only
        return {
            "study": {"name": self.name, "description": self.description}
            | ({"experiment": self.experiment} if self.experiment else {}),
            "data": section(self.data),
            "model": model,
            "training": {
                **{
                    key: getattr(self.training, key)
                    for key in TRAINING_KEYS
                    if getattr(self.training, key) is not None
                    and (
                        key in STORED_TRAINING_KEYS
                        or getattr(self.training, key) != getattr(TrainConfig, key)
                    )
                },
                "record_batch_loss": self.record_batch_loss,
            },
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
        if self.model.network is not None:  # so does the folder of a network file
            core["model"]["network"] = network_display(self.model.network)
        core["training"].pop("record_batch_loss", None)  # what is kept, not what is trained
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]

    def param(self, name: str) -> Param | None:
        return next((p for p in self.space if p.name == name), None)

    def fixed(self, name: str, default: Any = None) -> Any:
        """The value the space fixes ``name`` to, else ``default`` (searched or not named)."""
        p = self.param(name)
        return p.value if p is not None and p.kind == "fixed" else default

    @property
    def user_network(self) -> bool:
        """Whether the trials train a learner's own net (``[model] network``)."""
        return self.model.network is not None

    def model_text(self) -> str:
        """The nets of the study as the report states them: the built-in net's layers (with
        what the space searches), or a learner's net with its arguments."""

        def searched(name: str) -> bool:
            p = self.param(name)
            return p is not None and p.kind != "fixed"

        if self.model.network is not None:
            args = ", ".join(f"{k}={_show(v)}" for k, v in self.model.args)
            keywords = [p.name[len(ARGS) :] for p in self.space if p.name.startswith(ARGS)]
            tuned = f"; searched: {', '.join(keywords)}" if keywords else ""
            return f"your network {network_display(self.model.network)}({args}){tuned}"
        hidden = list(self.model.hidden_sizes)
        if searched("model.width") or searched("model.depth"):
            width = "width searched" if searched("model.width") else f"width {hidden[0]}"
            depth = "depth searched" if searched("model.depth") else f"depth {len(hidden)}"
            layers = f"hidden layers: {width}, {depth}"
        else:
            layers = f"hidden {hidden}"
        batchnorm = ", BatchNorm" if self.fixed("batchnorm", self.model.batchnorm) is True else ""
        return f"{layers}, {self.activation_text()}{batchnorm}"

    def max_epochs(self) -> int:
        """The most epochs a trial may run (``training.epochs``, or the space's largest)."""
        return self.largest("training.epochs", self.training.epochs)

    def largest(self, name: str, default: Any) -> Any:
        """The largest value the space lets the setting ``name`` take, else ``default``."""
        return max(extremes(self.space, name, default))

    def smallest(self, name: str, default: Any) -> Any:
        """The smallest value the space lets the setting ``name`` take, else ``default``."""
        return min(extremes(self.space, name, default))

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

    def check_rules(self, values: Any, *, unset: dict[str, str] | None = None) -> None:
        """Refuse a field of the dataclass ``values`` that its rule (``trainer.config.RULES``
        at ``TABLE.field``) does not admit; ``unset`` names, per optional field, the value
        that means "none", so that the message states the whole rule."""
        for f in fields(values):
            place = f"{self.prefix}.{f.name}"
            rule = SETTINGS.get(place, RULES.get(place))
            value = getattr(values, f.name)
            if rule is not None and value is not None and not rule.admits(value):
                more = (unset or {}).get(f.name, "")
                raise self.fail(f.name, f"{_show(value)} (allowed: {rule.allowed()}{more})")

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


def spec_from_dict(
    raw: dict[str, Any], *, source: str, default_name: str, base_dir: Path | None = None
) -> StudySpec:
    """Validate the plain data of a study file and build its ``StudySpec``. A relative
    ``[model] network`` file is resolved against ``base_dir`` (the study file's folder; a
    spec read back from storage holds it resolved)."""
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
    dataset = t.get("dataset", "str", DataConfig.dataset)
    try:
        check_dataset_name(dataset)
    except DatasetError:
        raise t.fail(
            "dataset", f"unknown dataset {_show(dataset)} (allowed: {', '.join(DATASETS)})"
        ) from None
    data = DataConfig(
        dataset=dataset,
        data_dir=t.get("data_dir", "str", None, optional=True),
        train_size=t.get("train_size", "int", None),
        validation_fraction=t.get("validation_fraction", "number", DataConfig.validation_fraction),
        test_fraction=t.get("test_fraction", "number", DataConfig.test_fraction),
        seed=t.get("seed", "int", DataConfig.seed),
    )
    t.check_rules(data, unset={"train_size": ", or leave it out for every sample"})
    t.at_least("seed", data.seed, 0, MAX_SEED)
    if data.data_dir is not None and dataset not in IDX_SOURCES:
        raise t.fail(
            "data_dir",
            f"{_show(data.data_dir)} is set, but dataset {_show(dataset)} reads no directory "
            f"(allowed: data_dir with {', '.join(IDX_SOURCES)})",
        )
    t.finish(_field_names(DataConfig))

    model = _read_model(_Table(source, "model", raw.get("model", {})), base_dir)
    if experiment is not None and model.network is not None:
        raise SpecError(
            source,
            "study.experiment",
            f"{_show(experiment)} with model.network (allowed: the chapter's experiments on the "
            "built-in net only; leave experiment out for your own net)",
        )

    t = _Table(source, "training", raw.get("training", {}))
    defaults = TrainConfig(epochs=SPEC_EPOCHS)
    training = TrainConfig(
        **{
            key: t.get(
                key,
                "int" if RULES[f"training.{key}"].kind == "int" else "number",
                getattr(defaults, key),
                optional=getattr(defaults, key) is None,
            )
            for key in TRAINING_KEYS
        }
    )
    record_batch_loss = t.get("record_batch_loss", "bool", False)
    t.check_rules(
        training,
        unset={
            "eval_train_samples": ", or 0 for every row",
            "patience": ", or 0 for no early stopping",
        },
    )
    t.finish((*TRAINING_KEYS, "record_batch_loss"))

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
    if search.timeout is not None and search.timeout <= 0:
        raise t.fail("timeout", f"{search.timeout} (allowed: > 0 seconds, or 0 for none)")
    t.finish(_field_names(SearchSpec))

    model_keys = set(raw.get("model", {}))
    space = _read_space(_Table(source, "space", raw.get("space", {})), model_keys, model)
    fewest = min(extremes(space, "training.epochs", training.epochs))
    if search.pruner in ("hyperband", "sha") and search.warmup_epochs >= fewest:
        fewest_of = " at the fewest the space gives" if fewest != training.epochs else ""
        raise SpecError(
            source,
            "search.warmup_epochs",
            f"{search.warmup_epochs} with pruner {_show(search.pruner)} and training.epochs = "
            f"{fewest}{fewest_of} (allowed: 0 to {fewest - 1}: the first rung must come before "
            "the last epoch)",
        )
    if search.sampler == "grid":
        optimizer = next((p for p in space if p.name == "optimizer"), None)
        for p in space:
            when = rule_for(p.name).when
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
    if search.sampler == "cmaes" and not any(p.kind in ("float", "int") for p in space):
        raise SpecError(
            source,
            "search.sampler",
            '"cmaes" needs at least one float range in [space] (allowed: tpe, random, qmc, grid)',
        )
    return StudySpec(
        name,
        description,
        experiment,
        data,
        model,
        training,
        search,
        space,
        source,
        record_batch_loss=record_batch_loss,
    )


def network_display(reference: str) -> str:
    """A network reference without its folder (``nets.py:TwoLayerNet``): what identifies the
    net across machines, for the fingerprint and the report."""
    if is_file_reference(reference):
        where, name = split_reference(reference)
        return f"{Path(where).name}:{name}"
    return reference


def _read_model(t: _Table, base_dir: Path | None) -> NetConfig:
    """``[model]``: the built-in net's fields, or ``network`` with its ``args`` table."""
    network = t.get("network", "str", None, optional=True)
    if network is None:
        if "args" in t.raw:
            raise t.fail("args", "set, but model.network is not (allowed: args with network)")
        hidden = t.raw.get("hidden", list(NetConfig.hidden_sizes))
        if (
            not isinstance(hidden, list)
            or not hidden
            or len(hidden) > MAX_LAYERS
            or not all(
                isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_WIDTH
                for h in hidden
            )
        ):
            raise t.fail(
                "hidden",
                f"{_show(hidden)} (allowed: a list of 1 to {MAX_LAYERS} layer widths, each 1 "
                f"to {MAX_WIDTH:,})",
            )
        model = NetConfig(
            hidden_sizes=tuple(hidden),
            activation=t.choice("activation", NetConfig.activation, tuple(ACTIVATIONS)),
            batchnorm=t.get("batchnorm", "bool", NetConfig.batchnorm),
            weight_decay_type=t.choice(
                "weight_decay_type", NetConfig.weight_decay_type, WEIGHT_DECAY_TYPES
            ),
        )
        t.finish((*MODEL_KEYS, "network"))
        return model
    try:
        where, name = split_reference(network)
    except NetworkError as e:
        raise t.fail("network", str(e)) from None
    if is_file_reference(network) and base_dir is not None:
        network = f"{(base_dir / where).resolve()}:{name}"
    for key in MODEL_KEYS:
        if key in t.raw:
            raise t.fail(
                key,
                "sets the built-in net, not model.network (allowed: your net's own keywords "
                "in [model.args])",
            )
    a = _Table(t.source, "model.args", t.raw.get("args", {}))
    args = []
    for key, value in a.raw.items():
        ok = isinstance(value, bool | int | float | str) or (
            isinstance(value, list) and all(isinstance(v, bool | int | float | str) for v in value)
        )
        if not key.isidentifier() or not ok:
            raise a.fail(
                key,
                f"{_show(value)} (allowed: a keyword of the constructor set to a number, a "
                "string, true/false or a list of them)",
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise a.fail(key, f"{value} (allowed: a finite number)")
        args.append((key, tuple(value) if isinstance(value, list) else value))
    t.finish(("network", "args"))
    return NetConfig(network=network, args=tuple(args))


def rule_for(name: str) -> Rule:
    """The rule of a ``[space]`` entry: a short name's, a setting's, or any value for a
    learner's net's keyword."""
    if name in PARAMS:
        return PARAMS[name]
    if name in SETTINGS:
        return SETTINGS[name]
    if name.startswith(ARGS) and name[len(ARGS) :].isidentifier():
        return Rule("any")
    raise KeyError(name)


RANGE_KEYS = frozenset(("low", "high", "log", "step", "choices"))


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``[space]`` with TOML's dotted keys (``training.batch_size = ...`` is a nested table)
    as places: ``{"training.batch_size": ...}``; quoted keys are places already."""
    flat = {}
    for key, value in raw.items():
        place = f"{prefix}{key}"
        nested = isinstance(value, dict) and value and not (set(value) & RANGE_KEYS)
        if place == "model.args" and isinstance(value, dict):
            nested = True  # its keys are the net's keywords, even one named step or low
        if nested and (prefix or key in ("model", "training")) and prefix != ARGS:
            flat.update(_flatten(value, f"{place}."))
        else:
            flat[place] = value
    return flat


def _read_space(t: _Table, model_keys: set[str], model: NetConfig) -> tuple[Param, ...]:
    t.raw = _flatten(t.raw)
    names = (*PARAMS, *SETTINGS, f"{ARGS}NAME")
    for key in t.raw:
        try:
            rule_for(key)
        except KeyError:
            raise t.fail(key, f"unknown field (allowed: {', '.join(names)})") from None
        if model.network is not None and key in BUILT_IN_ONLY:
            raise t.fail(
                key,
                f"sets the built-in net, not model.network = {_show(model.network)} (allowed: "
                f"{ARGS}<keyword> for your net's own settings, e.g. {ARGS}reg)",
            )
        if model.network is None and key.startswith(ARGS):
            raise t.fail(key, f"needs model.network (allowed: {ARGS}NAME with your own net)")
        if key.startswith(ARGS) and key[len(ARGS) :] in dict(model.args):
            raise t.fail(key, "also set in [model.args] (allowed: one place)")
    # Short names in the order trials suggest them, then places in the file's order.
    order = [n for n in PARAMS if n in t.raw] + [n for n in t.raw if n not in PARAMS]
    params = [_read_entry(t, name, rule_for(name)) for name in order]

    for name in ("activation", "batchnorm"):
        if name in t.raw and name in model_keys:
            raise SpecError(t.source, f"space.{name}", "also set in [model] (allowed: one place)")
    searched = [p for p in params if p.kind != "fixed"]
    if not searched:
        raise SpecError(
            t.source,
            "space",
            f"searches nothing (allowed: at least one range or choices among {', '.join(names)})",
        )
    return tuple(params)


def extremes(space: tuple[Param, ...], name: str, default: Any) -> list:
    """The values of the setting ``name`` that bound what a trial may run: ``default`` (its
    table's value) unless the space fixes it, lists its choices or ranges it (low and high)."""
    p = next((p for p in space if p.name == name), None)
    if p is None:
        return [default]
    if p.kind == "fixed":
        return [p.value]
    if p.kind == "choice":
        return list(p.choices)
    return [p.low, p.high]


def _read_entry(t: _Table, name: str, rule: Rule) -> Param:
    """One ``[space]`` entry: a fixed value, ``{ choices = [...] }`` or a range table."""
    entry = t.raw[name]
    where = f"{t.prefix}.{name}"
    if not isinstance(entry, dict):
        if rule.kind == "float":
            entry = _as_float(t.source, where, entry)
        if not rule.admits(entry):
            raise SpecError(t.source, where, f"{_show(entry)} (allowed: {rule.allowed()})")
        return Param(name, "fixed", value=tuple(entry) if isinstance(entry, list) else entry)
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
        for i, a in enumerate(choices):  # Optuna stores a choice by its index of the first ==
            for b in choices[i + 1 :]:
                if a == b:
                    raise e.fail(
                        "choices",
                        f"{_show(choices)} has {_show(a)} and {_show(b)}, which are equal "
                        "(allowed: distinct values; true equals 1 and 1 equals 1.0)",
                    )
        if any(isinstance(c, list) for c in choices):
            if not all(isinstance(c, list) for c in choices):
                raise e.fail("choices", f"{_show(choices)} (allowed: all lists, or no list)")
            choices = [tuple(c) for c in choices]
        return Param(name, "choice", choices=tuple(choices))
    if rule.kind == "choice":
        raise SpecError(
            t.source,
            where,
            f"a range is not possible here (allowed: {{ choices = [...] }} or one of "
            f"{rule.allowed()})",
        )
    e.finish(("low", "high", "log", "step"))
    for key in ("low", "high"):
        if key not in e.raw:
            raise e.fail(key, "missing (a range needs low and high)")
    # A setting's kind decides; a learner's keyword is an integer range when its bounds are
    # written as integers (write 0.0 and 1.0 for a float range).
    kind = rule.kind
    if kind == "any":
        bounds = (e.raw["low"], e.raw["high"], e.raw.get("step", 1))
        whole = all(isinstance(v, int) and not isinstance(v, bool) for v in bounds)
        kind = "int" if whole else "float"
    number = "int" if kind == "int" else "number"
    low, high = e.get("low", number, None), e.get("high", number, None)
    log = e.get("log", "bool", False)
    step = e.get("step", number, None)
    if rule.kind != "any":
        for key, v in (("low", low), ("high", high)):
            if not rule.admits(v):
                raise e.fail(key, f"{v} (allowed: {rule.allowed()})")
    if low >= high:
        raise e.fail("low", f"{low} is not below high = {high} (allowed: low < high)")
    if log and low <= 0:
        raise e.fail("low", f"{low} with log = true (allowed: low > 0)")
    if step is not None:
        if log and kind == "float":
            raise e.fail("step", "step and log = true cannot be combined")
        if log and step != 1:
            raise e.fail("step", f"{step} with log = true (allowed: step = 1 or none)")
        if step <= 0 or step > high - low:
            raise e.fail("step", f"{step} (allowed: 0 < step <= high - low)")
    return Param(name, kind, low=low, high=high, log=log, step=step)


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


def packaged_spec_text(name: str) -> str:
    """The file of the packaged spec ``name``, as shipped (raises ``UsageError``)."""
    names = packaged_specs()
    if name not in names:
        raise UsageError(f"{name}: no such packaged spec (allowed: {', '.join(names)})")
    return resources.files("studies").joinpath(f"{name}.toml").read_text(encoding="utf-8")


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
        source, default_name, base_dir = str(path), path.stem, path.parent
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
        source, default_name, base_dir = f"studies/{spec}.toml", spec, None
        text = packaged_spec_text(spec)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{source}: not valid TOML ({e})") from None
    return spec_from_dict(raw, source=source, default_name=default_name, base_dir=base_dir)
