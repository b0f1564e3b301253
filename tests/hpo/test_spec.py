"""Study files: loading, the one-line validation messages, fixed values, round trips and the
objective fingerprint. No training and no optuna study runs."""

import dataclasses
import tomllib
from pathlib import Path
from typing import ClassVar

import pytest

from hpo.errors import SpecError, UsageError
from hpo.spec import Param, StudySpec, load_spec, packaged_specs, spec_from_dict
from trainer.optimizers import OPTIMIZERS

# A [space] that searches something, for files whose subject is another section.
RANGE = "learning_rate = { low = 0.001, high = 0.1 }"
SPACE = f"[space]\n{RANGE}\n"


def write_study(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> StudySpec:
    return load_spec(str(write_study(tmp_path, text)))


def from_dict(raw: dict) -> StudySpec:
    return spec_from_dict(raw, source="test.toml", default_name="test")


# ---------------------------------------------------------------------------------------------
# The packaged default spec


def test_default_spec_loads_by_packaged_name():
    spec = load_spec("default")
    assert spec.name == "default"
    assert spec.source == "studies/default.toml"
    assert spec.data.dataset == "digits"
    assert spec.model.hidden_sizes == (100, 100, 100)


@pytest.mark.parametrize("name", ["learning_rate", "weight_decay", "init_scale"])
def test_default_spec_searches_scales_log_uniformly(name):
    p = load_spec("default").param(name)
    assert p.kind == "float" and p.log and p.step is None
    assert 0 < p.low < p.high


def test_default_dropout_ratio_keeps_zero_reachable():
    p = load_spec("default").param("dropout_ratio")
    assert p.kind == "float" and not p.log
    assert p.low == 0.0  # with a step, the grid starts exactly at 0: no dropout stays possible
    assert p.step is not None and 0 < p.step <= p.high - p.low


def test_default_optimizer_choices_are_every_registered_optimizer():
    p = load_spec("default").param("optimizer")
    assert p.kind == "choice"
    assert sorted(p.choices) == sorted(OPTIMIZERS)
    assert len(p.choices) == len(OPTIMIZERS)


def test_packaged_specs_lists_default_with_a_one_line_description():
    description = packaged_specs()["default"]
    assert description.startswith("Digits")
    assert "\n" not in description


# ---------------------------------------------------------------------------------------------
# Loading


def test_load_by_path_names_the_study_after_the_file(tmp_path):
    path = write_study(tmp_path, SPACE, name="mine.toml")
    spec = load_spec(str(path))
    assert spec.name == "mine"
    assert spec.source == str(path)
    assert spec.param("learning_rate") == Param("learning_rate", "float", low=0.001, high=0.1)


def test_load_by_path_takes_the_name_from_the_study_section(tmp_path):
    spec = load_text(tmp_path, f'[study]\nname = "lr-only"\ndescription = "x"\n{SPACE}')
    assert spec.name == "lr-only"
    assert spec.description == "x"


def test_missing_study_file_is_a_usage_error_naming_it(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(UsageError) as excinfo:
        load_spec(str(path))
    assert excinfo.type is UsageError
    assert str(excinfo.value).startswith(f"{path}: no such study file (allowed: a .toml path")


def test_unknown_packaged_name_is_a_usage_error_listing_the_packaged_specs():
    with pytest.raises(UsageError) as excinfo:
        load_spec("no-such-study")
    message = str(excinfo.value)
    assert message.startswith("no-such-study: no such packaged spec")
    assert "(allowed: default" in message
    assert ".toml" in message  # a path is the other thing allowed
    assert "\n" not in message


def test_invalid_toml_is_a_usage_error_naming_the_file(tmp_path):
    path = write_study(tmp_path, "[data\ndataset = 'digits'\n")
    with pytest.raises(UsageError) as excinfo:
        load_spec(str(path))
    message = str(excinfo.value)
    assert message.startswith(f"{path}: not valid TOML")
    assert "\n" not in message


# ---------------------------------------------------------------------------------------------
# Validation: every rule is one line `FILE: field: problem (allowed: ...)`

INVALID = [
    # (file text, dotted field, fragments of the problem)
    pytest.param(
        f"[extra]\nx = 1\n{SPACE}",
        "extra",
        ["unknown field", "allowed: study, data, model, training, search, space"],
        id="unknown-section",
    ),
    pytest.param(f"study = 3\n{SPACE}", "study", ["3 is not a table"], id="section-not-a-table"),
    pytest.param(
        f'[study]\ncolour = "red"\n{SPACE}',
        "study.colour",
        ["unknown field", "allowed: name, description"],
        id="unknown-key-study",
    ),
    pytest.param(
        f"[data]\ncolour = 1\n{SPACE}",
        "data.colour",
        ["unknown field", "allowed: dataset, data_dir, train_size"],
        id="unknown-key-data",
    ),
    pytest.param(
        f"[model]\ncolour = 1\n{SPACE}",
        "model.colour",
        ["unknown field", "allowed: hidden, activation, batchnorm"],
        id="unknown-key-model",
    ),
    pytest.param(
        f"[training]\ncolour = 1\n{SPACE}",
        "training.colour",
        ["unknown field", "allowed: epochs, batch_size, patience, lr_decay"],
        id="unknown-key-training",
    ),
    pytest.param(
        f"[search]\ncolour = 1\n{SPACE}",
        "search.colour",
        ["unknown field", "allowed: sampler, pruner, seed, trials, timeout"],
        id="unknown-key-search",
    ),
    pytest.param(
        f"{SPACE}colour = 1\n",
        "space.colour",
        ["unknown field", "allowed: learning_rate, weight_decay, dropout_ratio"],
        id="unknown-key-space",
    ),
    pytest.param(
        "[space]\nlearning_rate = { low = 0.001, high = 0.1, base = 10 }\n",
        "space.learning_rate.base",
        ["unknown field", "allowed: low, high, log, step"],
        id="unknown-key-range",
    ),
    pytest.param(
        '[space]\noptimizer = { choices = ["sgd"], weights = [1] }\n',
        "space.optimizer.weights",
        ["unknown field", "allowed: choices"],
        id="unknown-key-choices",
    ),
    pytest.param(
        f'[training]\nepochs = "ten"\n{SPACE}',
        "training.epochs",
        ['"ten" is not an integer'],
        id="string-for-int",
    ),
    pytest.param(
        f"[training]\nepochs = true\n{SPACE}",
        "training.epochs",
        ["true is not an integer"],
        id="bool-for-int",
    ),
    pytest.param(
        f"[training]\nbatch_size = 50.0\n{SPACE}",
        "training.batch_size",
        ["50.0 is not an integer"],
        id="float-for-int",
    ),
    pytest.param(
        f"[training]\nlr_decay = true\n{SPACE}",
        "training.lr_decay",
        ["true is not a number"],
        id="bool-for-number",
    ),
    pytest.param(
        f"[model]\nbatchnorm = 1\n{SPACE}",
        "model.batchnorm",
        ["1 is not true or false"],
        id="int-for-bool",
    ),
    pytest.param(
        f"[study]\nname = 3\n{SPACE}", "study.name", ["3 is not a string"], id="int-for-string"
    ),
    pytest.param(
        f'[study]\nname = " "\n{SPACE}',
        "study.name",
        ['" "', "allowed: 1 to 128 printable characters"],
        id="blank-name",
    ),
    pytest.param(
        "[space]\nlearning_rate = { low = true, high = 0.1 }\n",
        "space.learning_rate.low",
        ["true is not a number"],
        id="bool-for-bound",
    ),
    pytest.param(
        "[space]\nlearning_rate = { low = 0.001, high = inf }\n",
        "space.learning_rate.high",
        ["inf", "allowed: a finite number"],
        id="infinite-bound",
    ),
    pytest.param(
        "[space]\nlearning_rate = { low = 0.1, high = 0.01 }\n",
        "space.learning_rate.low",
        ["0.1 is not below high = 0.01", "allowed: low < high"],
        id="low-above-high",
    ),
    pytest.param(
        "[space]\nlearning_rate = { low = 0.1, high = 0.1 }\n",
        "space.learning_rate.low",
        ["0.1 is not below high = 0.1", "allowed: low < high"],
        id="low-equals-high",
    ),
    pytest.param(
        "[space]\nweight_decay = { low = 0, high = 0.1, log = true }\n",
        "space.weight_decay.low",
        ["0.0 with log = true", "allowed: low > 0"],
        id="log-from-zero",
    ),
    pytest.param(
        "[space]\nlearning_rate = { low = 0, high = 0.1 }\n",
        "space.learning_rate.low",
        ["0.0", "allowed: > 0"],
        id="bound-outside-parameter-range",
    ),
    pytest.param(
        "[space]\nlearning_rate = { low = 0.001, high = 0.1, log = true, step = 0.01 }\n",
        "space.learning_rate.step",
        ["step and log = true cannot be combined"],
        id="step-with-log",
    ),
    pytest.param(
        "[space]\ndropout_ratio = { low = 0, high = 0.5, step = 0.6 }\n",
        "space.dropout_ratio.step",
        ["0.6", "allowed: 0 < step <= high - low"],
        id="step-too-large",
    ),
    pytest.param(
        "[space]\ndropout_ratio = { low = 0, high = 0.5, step = 0 }\n",
        "space.dropout_ratio.step",
        ["0.0", "allowed: 0 < step <= high - low"],
        id="step-zero",
    ),
    pytest.param(
        "[space]\nlearning_rate = { low = 0.001 }\n",
        "space.learning_rate.high",
        ["missing"],
        id="range-without-high",
    ),
    pytest.param(
        '[space]\noptimizer = { choices = ["sgd", "lion"] }\n',
        "space.optimizer.choices",
        ['"lion"', 'allowed: "sgd", "momentum"'],
        id="unknown-optimizer-choice",
    ),
    pytest.param(
        "[space]\noptimizer = { low = 0, high = 1 }\n",
        "space.optimizer",
        ["a range is not possible here", "allowed:"],
        id="range-for-a-choice",
    ),
    pytest.param(
        "[space]\nmomentum = { choices = [0.9, 1.0] }\n",
        "space.momentum.choices",
        ["1.0", "allowed: 0 <= value < 1"],
        id="float-choice-out-of-range",
    ),
    pytest.param(
        "[space]\noptimizer = { choices = [] }\n",
        "space.optimizer.choices",
        ["[]", "allowed: a non-empty list"],
        id="empty-choices",
    ),
    pytest.param(
        '[space]\noptimizer = { choices = ["sgd", "sgd"] }\n',
        "space.optimizer.choices",
        ['["sgd", "sgd"] has "sgd" and "sgd", which are equal'],
        id="duplicate-choices",
    ),
    pytest.param(
        "[space]\ninit_scale = { choices = [1, 1.0] }\n",
        "space.init_scale.choices",
        ["[1.0, 1.0] has 1.0 and 1.0, which are equal"],
        id="duplicate-int-and-float-choices",
    ),
    pytest.param(
        f'{SPACE}activation = "swish"\n',
        "space.activation",
        ['"swish"', 'allowed: "relu", "sigmoid"'],
        id="unknown-activation-in-space",
    ),
    pytest.param(
        f'[model]\nactivation = "swish"\n{SPACE}',
        "model.activation",
        ['unknown value "swish"', "allowed: relu, sigmoid, tanh"],
        id="unknown-activation",
    ),
    pytest.param(
        f'[data]\ndataset = "cifar"\n{SPACE}',
        "data.dataset",
        ['unknown dataset "cifar"', "allowed: digits"],
        id="unknown-dataset",
    ),
    pytest.param(
        f'[search]\nsampler = "bayes"\n{SPACE}',
        "search.sampler",
        ['unknown value "bayes"', "allowed: tpe, random, cmaes, qmc, grid"],
        id="unknown-sampler",
    ),
    pytest.param(
        f'[search]\npruner = "never"\n{SPACE}',
        "search.pruner",
        ['unknown value "never"', "allowed: median, hyperband, sha, none"],
        id="unknown-pruner",
    ),
    pytest.param(
        f"{SPACE}dropout_ratio = 1.0\n",
        "space.dropout_ratio",
        ["1.0", "allowed: 0 <= value < 1"],
        id="fixed-dropout-of-one",
    ),
    pytest.param(
        "[space]\ndropout_ratio = { low = 0, high = 1 }\n",
        "space.dropout_ratio.high",
        ["1.0", "allowed: 0 <= value < 1"],
        id="dropout-range-to-one",
    ),
    pytest.param(
        '[space]\nlearning_rate = 0.01\ninit = "he"\n',
        "space",
        ["searches nothing", "allowed: at least one range or choices"],
        id="only-fixed-values",
    ),
    pytest.param(
        "[training]\nepochs = 5\n", "space", ["searches nothing", "allowed:"], id="no-space"
    ),
    pytest.param(
        f'[search]\nsampler = "grid"\n{SPACE}',
        "space.learning_rate",
        ["continuous range cannot be a grid", 'allowed with sampler "grid"'],
        id="grid-with-continuous-range",
    ),
    pytest.param(
        '[search]\nsampler = "cmaes"\n[space]\noptimizer = { choices = ["sgd", "adam"] }\n',
        "search.sampler",
        ['"cmaes" needs at least one float range', "allowed: tpe"],
        id="cmaes-with-only-choices",
    ),
    pytest.param(
        f'[model]\nactivation = "relu"\n{SPACE}activation = {{ choices = ["relu", "tanh"] }}\n',
        "space.activation",
        ["also set in [model]", "allowed: one place"],
        id="activation-in-model-and-space",
    ),
    pytest.param(
        f"[model]\nbatchnorm = true\n{SPACE}batchnorm = {{ choices = [false, true] }}\n",
        "space.batchnorm",
        ["also set in [model]", "allowed: one place"],
        id="batchnorm-in-model-and-space",
    ),
    pytest.param(
        f"[model]\nhidden = []\n{SPACE}",
        "model.hidden",
        ["[]", "allowed: a list of 1 to 100 layer widths, each 1 to 65,536"],
        id="hidden-empty",
    ),
    pytest.param(
        f"[model]\nhidden = [100, 0]\n{SPACE}",
        "model.hidden",
        ["[100, 0]", "allowed: a list of 1 to 100 layer widths, each 1 to 65,536"],
        id="hidden-zero-width",
    ),
    pytest.param(
        f"[data]\ntrain_size = -5\n{SPACE}",
        "data.train_size",
        ["-5", "allowed: an integer >= 2"],
        id="negative-train-size",
    ),
    pytest.param(
        f"[data]\nvalidation_fraction = 1.0\n{SPACE}",
        "data.validation_fraction",
        ["1.0", "allowed: 0 < value < 1"],
        id="validation-fraction-one",
    ),
    pytest.param(
        f"[training]\nepochs = 0\n{SPACE}",
        "training.epochs",
        ["0", "allowed: an integer from 1 to 100,000"],
        id="zero-epochs",
    ),
    pytest.param(
        f"[training]\nepochs = 1000000000\n{SPACE}",
        "training.epochs",
        ["1000000000", "allowed: an integer from 1 to 100,000"],
        id="epochs-too-many",
    ),
    pytest.param(
        f"[model]\nhidden = [{', '.join(['10'] * 101)}]\n{SPACE}",
        "model.hidden",
        ["(101 items)", "allowed: a list of 1 to 100 layer widths"],
        id="too-many-layers",
    ),
    pytest.param(
        f"[model]\nhidden = [100000000]\n{SPACE}",
        "model.hidden",
        ["[100000000]", "each 1 to 65,536"],
        id="layer-too-wide",
    ),
    pytest.param(
        f"[data]\ntrain_size = 0\n{SPACE}",
        "data.train_size",
        ["0", "allowed: an integer >= 2, or leave it out for every sample"],
        id="zero-train-size",
    ),
    pytest.param(
        f'[data]\ndata_dir = "/data"\n{SPACE}',
        "data.data_dir",
        ['"/data" is set, but dataset "digits" reads no directory', "allowed: data_dir with"],
        id="data-dir-for-digits",
    ),
    pytest.param(
        f"[search]\ntrials = 0\n{SPACE}",
        "search.trials",
        ["0", "allowed: 1 to 1,000,000"],
        id="zero-trials",
    ),
    pytest.param(
        f"[search]\nseed = 4294967296\n{SPACE}",
        "search.seed",
        ["4294967296", "allowed: 0 to 4,294,967,295"],
        id="seed-past-32-bits",
    ),
    pytest.param(
        f"[training]\npatience = -1\n{SPACE}",
        "training.patience",
        ["-1", "allowed: an integer >= 1, or 0 for no early stopping"],
        id="negative-patience",
    ),
    pytest.param(
        f"[training]\neval_train_samples = -5\n{SPACE}",
        "training.eval_train_samples",
        ["-5", "allowed: an integer >= 1, or 0 for every row"],
        id="negative-eval-train-samples",
    ),
    pytest.param(
        f'[training]\nepochs = 3\n[search]\npruner = "hyperband"\nwarmup_epochs = 3\n{SPACE}',
        "search.warmup_epochs",
        ['3 with pruner "hyperband"', "allowed: 0 to 2"],
        id="hyperband-rung-past-the-last-epoch",
    ),
    pytest.param(
        f'[study]\nname = "a\\nb"\n{SPACE}',
        "study.name",
        ['"a\\x0ab"', "printable characters"],
        id="newline-in-name",
    ),
    pytest.param(
        f'[study]\nname = "{"x" * 129}"\n{SPACE}',
        "study.name",
        ["(129 characters)", "allowed: 1 to 128 printable characters"],
        id="name-too-long",
    ),
    pytest.param(
        f"[training]\nlr_decay = 0\n{SPACE}",
        "training.lr_decay",
        ["0.0", "allowed: 0 < value <= 1"],
        id="lr-decay-zero",
    ),
    pytest.param(
        f"[search]\ntimeout = -1\n{SPACE}",
        "search.timeout",
        ["-1.0", "allowed: > 0 seconds"],
        id="negative-timeout",
    ),
]


@pytest.mark.parametrize(("text", "field", "fragments"), INVALID)
def test_invalid_study_file_is_a_one_line_spec_error(tmp_path, text, field, fragments):
    path = write_study(tmp_path, text)
    with pytest.raises(SpecError) as excinfo:
        load_spec(str(path))
    error = excinfo.value
    message = str(error)
    assert "\n" not in message
    assert (error.source, error.field) == (str(path), field)
    assert message.startswith(f"{path}: {field}: ")
    for fragment in fragments:
        assert fragment in error.problem


def test_spec_error_is_a_usage_error():
    with pytest.raises(UsageError) as excinfo:
        from_dict({"space": {}})
    assert excinfo.value.exit_code == 2


# ---------------------------------------------------------------------------------------------
# Fixed values and numbers


def test_bare_float_fixes_the_parameter(tmp_path):
    spec = load_text(tmp_path, '[space]\nlearning_rate = 0.01\noptimizer = { choices = ["sgd"] }\n')
    assert spec.param("learning_rate") == Param("learning_rate", "fixed", value=0.01)


def test_bare_string_fixes_the_parameter(tmp_path):
    spec = load_text(tmp_path, f'{SPACE}init = "xavier"\n')
    assert spec.param("init") == Param("init", "fixed", value="xavier")


def test_int_is_accepted_as_a_float_bound(tmp_path):
    spec = load_text(
        tmp_path,
        "[space]\ndropout_ratio = { low = 0, high = 0.5 }\n"
        "learning_rate = { low = 0.001, high = 1 }\n",
    )
    dropout, learning_rate = spec.param("dropout_ratio"), spec.param("learning_rate")
    assert dropout.low == 0.0 and type(dropout.low) is float
    assert learning_rate.high == 1.0 and type(learning_rate.high) is float


def test_int_is_accepted_as_a_fixed_float(tmp_path):
    spec = load_text(tmp_path, f"{SPACE}init_scale = 2\n")
    value = spec.param("init_scale").value
    assert value == 2.0 and type(value) is float


def test_int_is_accepted_as_a_float_choice(tmp_path):
    spec = load_text(tmp_path, "[space]\ninit_scale = { choices = [1, 2.5] }\n")
    assert spec.param("init_scale").choices == (1.0, 2.5)
    assert all(type(c) is float for c in spec.param("init_scale").choices)


def test_space_keeps_the_parameter_order_trials_suggest_in(tmp_path):
    spec = load_text(tmp_path, f'[space]\noptimizer = {{ choices = ["sgd"] }}\n{RANGE}\n')
    assert [p.name for p in spec.space] == ["learning_rate", "optimizer"]


def test_zero_timeout_means_none(tmp_path):
    assert load_text(tmp_path, f"[search]\ntimeout = 0\n{SPACE}").search.timeout is None


# ---------------------------------------------------------------------------------------------
# Round trip through to_dict

RICH = """
[study]
name = "rich"
description = "every kind of entry"

[data]
train_size = 500
seed = 3

[model]
hidden = [64, 32]
activation = "tanh"

[training]
epochs = 4
patience = 2
lr_decay = 0.9

[search]
sampler = "random"
timeout = 60

[space]
learning_rate = { low = 1e-4, high = 1, log = true }
dropout_ratio = { low = 0, high = 0.5, step = 0.1 }
optimizer = { choices = ["sgd", "adam"] }
momentum = { choices = [0.5, 0.9] }
init = "xavier"
init_scale = 2
"""


def round_trip(spec: StudySpec) -> StudySpec:
    back = spec_from_dict(spec.to_dict(), source="stored", default_name="ignored")
    return dataclasses.replace(back, source=spec.source)


def test_default_spec_round_trips_through_to_dict():
    spec = load_spec("default")
    assert round_trip(spec) == spec


def test_spec_with_every_kind_of_entry_round_trips_through_to_dict(tmp_path):
    spec = load_text(tmp_path, RICH)
    assert {p.kind for p in spec.space} == {"float", "choice", "fixed"}
    assert round_trip(spec) == spec


def test_spec_searching_activation_round_trips_through_to_dict(tmp_path):
    spec = load_text(tmp_path, f'{SPACE}activation = {{ choices = ["relu", "tanh"] }}\n')
    assert round_trip(spec) == spec


def test_spec_searching_batchnorm_round_trips_through_to_dict(tmp_path):
    spec = load_text(tmp_path, f"{SPACE}batchnorm = {{ choices = [false, true] }}\n")
    assert round_trip(spec) == spec


# ---------------------------------------------------------------------------------------------
# Objective fingerprint


def default_with(section: str, key: str, value) -> StudySpec:
    raw = load_spec("default").to_dict()
    raw[section][key] = value
    return from_dict(raw)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sampler", "random"),
        ("pruner", "none"),
        ("seed", 7),
        ("trials", 5),
        ("timeout", 60),
        ("startup_trials", 3),
        ("warmup_epochs", 1),
    ],
)
def test_fingerprint_ignores_the_search_section(key, value):
    assert default_with("search", key, value).objective_fingerprint() == (
        load_spec("default").objective_fingerprint()
    )


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("data", "seed", 1),
        ("data", "validation_fraction", 0.3),
        ("data", "train_size", 500),
        ("model", "hidden", [50]),
        ("model", "batchnorm", True),
        ("training", "epochs", 10),
        ("training", "batch_size", 20),
        ("space", "learning_rate", {"low": 1e-3, "high": 1e-1, "log": True}),
        ("space", "dropout_ratio", 0.1),
        ("space", "rho", {"low": 0.8, "high": 0.99}),
    ],
)
def test_fingerprint_changes_with_what_decides_a_trial(section, key, value):
    assert default_with(section, key, value).objective_fingerprint() != (
        load_spec("default").objective_fingerprint()
    )


def test_fingerprint_ignores_what_is_recorded_and_the_experiment():
    raw = load_spec("default").to_dict()
    raw["training"]["record_batch_loss"] = True
    raw["study"]["experiment"] = "optimizers"
    spec = from_dict(raw)
    assert spec.record_batch_loss and spec.experiment == "optimizers"
    assert spec.objective_fingerprint() == load_spec("default").objective_fingerprint()


def test_experiment_round_trips_through_to_dict():
    raw = load_spec("default").to_dict()
    raw["study"]["experiment"] = "batchnorm"
    assert from_dict(from_dict(raw).to_dict()).experiment == "batchnorm"
    assert "experiment" not in load_spec("default").to_dict()["study"]


def test_unknown_experiment_names_the_allowed_ones(tmp_path):
    with pytest.raises(SpecError) as excinfo:
        load_text(tmp_path, f'[study]\nexperiment = "dropout"\n{SPACE}')
    assert excinfo.value.field == "study.experiment"
    assert "optimizers, init, batchnorm, overfit" in str(excinfo.value)


# ---------------------------------------------------------------------------------------------
# Known bugs in hpo/spec.py


def test_string_fixed_value_for_a_float_parameter_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError) as excinfo:
        load_text(
            tmp_path, '[space]\nlearning_rate = "fast"\nmomentum = { low = 0.5, high = 0.9 }\n'
        )
    assert excinfo.value.field == "space.learning_rate"


def test_bool_fixed_value_for_a_float_parameter_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError) as excinfo:
        load_text(tmp_path, f"{SPACE}weight_decay = true\n")
    assert excinfo.value.field == "space.weight_decay"


def test_infinite_fixed_value_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError) as excinfo:
        load_text(tmp_path, '[space]\nlearning_rate = inf\noptimizer = { choices = ["sgd"] }\n')
    assert excinfo.value.field == "space.learning_rate"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("search", "timeout"),
        ("training", "patience"),
        ("training", "eval_train_samples"),
        ("data", "train_size"),
    ],
)
def test_false_for_an_optional_number_is_a_spec_error(tmp_path, section, key):
    with pytest.raises(SpecError) as excinfo:
        load_text(tmp_path, f"[{section}]\n{key} = false\n{SPACE}")
    assert excinfo.value.field == f"{section}.{key}"


@pytest.mark.parametrize("section", ["search", "data"])
def test_negative_seed_is_a_spec_error(tmp_path, section):
    with pytest.raises(SpecError) as excinfo:
        load_text(tmp_path, f"[{section}]\nseed = -1\n{SPACE}")
    assert excinfo.value.field == f"{section}.seed"


def test_grid_refuses_a_conditional_parameter_under_a_searched_optimizer(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(
        '[search]\nsampler = "grid"\n[space]\noptimizer = { choices = ["sgd", "momentum"] }\n'
        "momentum = { choices = [0.5, 0.9] }\n"
    )
    with pytest.raises(SpecError) as e:
        load_spec(str(path))
    assert e.value.field == "space.momentum" and "repeat configurations" in str(e.value)


def test_the_readmes_study_file_example_is_a_valid_spec():
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    spec = spec_from_dict(tomllib.loads(block), source="README.md", default_name="readme")
    assert spec.name == "lr-sweep" and spec.experiment is None
    assert not spec.record_batch_loss


def test_eval_train_samples_of_0_means_every_row_and_leaves_the_fingerprint(tmp_path):
    plain = load_text(tmp_path, SPACE)
    assert load_text(tmp_path, f"[training]\neval_train_samples = 0\n{SPACE}") == plain
    some = load_text(tmp_path, f"[training]\neval_train_samples = 500\n{SPACE}")
    assert some.training.eval_train_samples == 500
    assert some.objective_fingerprint() != plain.objective_fingerprint()  # curves differ


def test_a_new_optimizers_hyperparameters_become_searchable_from_its_class(monkeypatch):
    from hpo import spec as spec_module
    from trainer import optimizers

    class Lion(optimizers.Optimizer):
        SEARCHABLE: ClassVar = {"beta1": (0.0, 1.0), "gamma": (0.0, 1.0)}

        def __init__(self, *, learning_rate=1e-4, beta1=0.9, gamma=0.99):
            super().__init__(learning_rate=learning_rate)

    monkeypatch.setitem(optimizers.OPTIMIZERS, "lion", Lion)
    rules = spec_module._optimizer_params()
    assert rules["beta1"].when == ("adam", "lion") and rules["gamma"].when == ("lion",)
    assert list(rules) == ["momentum", "rho", "beta1", "beta2", "gamma"]


def test_the_fashion_mnist_study_searches_what_matters_at_that_size_within_two_hours():
    spec = load_spec("fashion-mnist")
    assert spec.data.dataset == "fashion-mnist" and spec.data.train_size is None  # all 60,000
    searched = {p.name for p in spec.space if p.kind != "fixed"}
    assert {
        "model.width",
        "model.depth",
        "learning_rate",
        "weight_decay",
        "dropout_ratio",
        "training.batch_size",
        "training.lr_decay",
        "optimizer",
        "batchnorm",
    } <= searched
    assert spec.search.pruner == "hyperband" and spec.search.timeout <= 2 * 3600
