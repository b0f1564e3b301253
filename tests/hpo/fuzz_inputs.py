"""Adversarial inputs for ``python -m hpo``: a seeded generator of bad inputs, a runner, a table.

Every generated case is an input the command line must refuse: exit 2 with exactly one line on
stderr (``python -m hpo COMMAND: error: ...``), no traceback, no file created or removed in the
working directory (no database, no ``.hpo-lock``, no ``-wal``/``-shm``, no report), and not one
byte of an existing database changed. No case is valid, so no case may train.

A case runs in a fresh directory holding a copy of a small real hpo database (``hpo.db``, studies
``fuzz`` and ``fuzz-b``, two trials each, made once by ``make_template_db``) and a valid tiny spec
(``tiny.toml``, the ``fuzz`` study's), plus the case's own files; a few run in an empty
directory. Randomness comes from one ``np.random.default_rng(seed)`` passed to every generator:
the same seed gives the same cases.

In process (the default, and what ``tests/hpo/test_input_fuzz.py`` does), ``guard_patches``
stops a case that gets as far as training, writing a report or serving the dashboard, so that a
survey of code that accepts a bad input ends in minutes instead of training for hours; such a
case counts as "accepted". ``--subprocess`` runs each case as a real ``python -m hpo`` process
instead (with a timeout and a memory limit), which also sees what a process prints outside
``sys.stderr`` (logging handlers, warnings).

Run from the repository root::

    python -m tests.hpo.fuzz_inputs [--n 600] [--seed 0] [--subprocess] [--timeout 60]
"""

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
import traceback
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

PROG = "python -m hpo"
SPEC_FILE = "tiny.toml"
DB_FILE = "hpo.db"
STUDY = "fuzz"
OTHER_STUDY = "fuzz-b"
CWD = "@CWD@"
"""Replaced in argv and environment values by the case's working directory (absolute paths)."""
HPO_VARIABLES = ("HPO_STORAGE", "HPO_HEARTBEAT_INTERVAL", "HPO_GRACE_PERIOD", "HPO_DATA_DIR")
"""Environment variables hpo reads: unset for every case unless the case sets one."""
RUN_FLAGS = ("--no-report", "--quiet", "--in-process")
"""What every ``run`` case adds, so that an accepted one stops at the harness's guard at once."""
BOM = b"\xef\xbb\xbf"

TINY_SPEC = """\
[study]
name = "fuzz"

[data]
dataset = "digits"
train_size = 200

[model]
hidden = [8]

[training]
epochs = 1
batch_size = 50

[search]
sampler = "random"
pruner = "none"
trials = 2

[space]
learning_rate = { low = 0.001, high = 0.1, log = true }
optimizer = { choices = ["sgd", "adam"] }
"""
"""The valid spec of the database's studies, present in every case's directory."""

PROBE: dict[str, dict[str, str]] = {
    "study": {"name": '"probe"', "description": '"fuzz probe"'},
    "data": {
        "dataset": '"digits"',
        "train_size": "200",
        "validation_fraction": "0.2",
        "test_fraction": "0.2",
        "seed": "0",
    },
    "model": {
        "hidden": "[8]",
        "activation": '"relu"',
        "batchnorm": "false",
        "weight_decay_type": '"l2"',
    },
    "training": {
        "epochs": "1",
        "batch_size": "50",
        "patience": "1",
        "lr_decay": "1.0",
        "record_batch_loss": "false",
    },
    "search": {
        "sampler": '"random"',
        "pruner": '"none"',
        "seed": "0",
        "trials": "2",
        "timeout": "600",
        "startup_trials": "1",
        "pruner_startup_trials": "1",
        "warmup_epochs": "0",
    },
    "space": {
        "learning_rate": "{ low = 0.001, high = 0.1, log = true }",
        "optimizer": '{ choices = ["sgd", "adam"] }',
    },
}
"""A valid spec with every field written out (as TOML literals), under a study name the
database does not hold: each spec case changes one thing in it, so the change alone is what
must be refused (and an accepted one would create a new study, not resume ``fuzz``)."""

SECTION_FIELDS = {section: tuple(keys) for section, keys in PROBE.items() if section != "space"}
SECTION_FIELDS["study"] = ("name", "description", "experiment")
SECTION_FIELDS["data"] = ("dataset", "data_dir", *PROBE["data"])
FLOAT_PARAMS = (
    "learning_rate",
    "weight_decay",
    "dropout_ratio",
    "init_scale",
    "momentum",
    "rho",
    "beta1",
    "beta2",
)
CHOICE_PARAMS = ("optimizer", "init", "activation", "batchnorm")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
NAME_MAX = 128


def is_valid_study_name(name: str) -> bool:
    """The rule study names follow: 1 to 128 printable characters, no space at either end."""
    return 1 <= len(name) <= NAME_MAX and name.isprintable() and name == name.strip()


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Fixture:
    """A file the case puts in its directory: ``kind`` is ``file`` (``data`` its bytes),
    ``dir``, ``symlink`` (``data`` the target), ``sqlite`` (another program's database) or
    ``npz`` (``data`` names an ``NPZ_ARRAYS`` entry)."""

    kind: str
    path: str
    data: bytes | str = b""


@dataclass(frozen=True)
class Case:
    """One bad input: the argv of ``python -m hpo`` and the directory it runs in."""

    category: str
    description: str
    argv: tuple[str, ...]
    fixtures: tuple[Fixture, ...] = ()
    with_db: bool = True  # a copy of the template database as hpo.db
    with_spec: bool = True  # the valid tiny.toml
    env: tuple[tuple[str, str], ...] = ()
    id: str = ""

    def key(self) -> tuple:
        return (self.argv, self.fixtures, self.with_db, self.with_spec, self.env)

    def has_nul(self) -> bool:
        """An argv or environment value with a NUL, which no process can be given."""
        return any("\0" in a for a in self.argv) or any("\0" in v for _, v in self.env)


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string, every character TOML does not allow raw escaped."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\t" or (c.isprintable() and c != "\x7f"):
            out.append(c)
        elif ord(c) <= 0xFFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def render(sections: dict[str, dict[str, str]], top: tuple[str, ...] = ()) -> str:
    """A study file from sections of ``key -> TOML literal``; ``top`` lines come first."""
    lines = list(top)
    for section, entries in sections.items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {value}" for key, value in entries.items())
    return "\n".join(lines).lstrip("\n") + "\n"


def probe_with(changes: dict[tuple[str, str], str | None]) -> dict[str, dict[str, str]]:
    """The probe's sections with ``(section, key) -> literal`` set (None: removed)."""
    sections = {s: dict(entries) for s, entries in PROBE.items()}
    for (section, key), value in changes.items():
        if value is None:
            sections[section].pop(key, None)
        else:
            sections.setdefault(section, {})[key] = value
    return sections


def parses(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def run_file(
    category: str,
    description: str,
    data: bytes | str,
    *,
    name: str = "bad.toml",
    fixtures: tuple[Fixture, ...] = (),
) -> Case:
    """A case that runs the study file ``data``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return Case(
        category,
        description,
        ("run", name, *RUN_FLAGS),
        fixtures=(Fixture("file", name, raw), *fixtures),
    )


def spec_case(category: str, description: str, changes, *, top: tuple[str, ...] = ()) -> Case:
    return run_file(category, description, render(probe_with(changes), top))


def pick(rng: np.random.Generator, items: list, k: int) -> list:
    """``k`` of ``items`` (all if fewer), in their order."""
    if len(items) <= k:
        return list(items)
    return [items[i] for i in sorted(rng.choice(len(items), size=k, replace=False))]


# ---------------------------------------------------------------------------------------------
# Generators: each returns its cases, drawing what it varies from ``rng``


def broken_toml(rng: np.random.Generator) -> list[Case]:
    """Study files that are not TOML: truncated, unbalanced, duplicated keys, stray tokens."""
    cat = "toml"
    text = render(PROBE)
    cases = []
    cuts = [i for i in range(1, len(text)) if not parses(text[:i])]
    for i in pick(rng, cuts, 40):
        cases.append(run_file(cat, f"truncated at character {i} of {len(text)}", text[:i]))
    edits = [
        ("[model]", "[model"),
        ("[model]", "model]"),
        ("[space]", "[[space]"),
        ("[space]", "[space]]"),
        ("[search]", "[search"),
        ("hidden = [8]", "hidden = [8"),
        ("hidden = [8]", "hidden = [8]]"),
        ("hidden = [8]", "hidden = 8]"),
        ("log = true }", "log = true"),
        ("{ low = 0.001", "low = 0.001"),
        ('["sgd", "adam"]', '["sgd", "adam"'),
        ('["sgd", "adam"]', '["sgd" "adam"]'),
        ('"digits"', '"digits'),
        ('"digits"', "'digits\""),
        ('name = "probe"', 'name = """probe'),
        ('name = "probe"', "name = probe"),
        ('name = "probe"', 'name = "pro\nbe"'),
        ('name = "probe"', 'name = "pro\\qbe"'),
        ("epochs = 1", "epochs = 01"),
        ("epochs = 1", "epochs = 1_"),
        ("epochs = 1", "epochs = 1__0"),
        ("epochs = 1", "epochs = 0x"),
        ("epochs = 1", "epochs = 1e"),
        ("epochs = 1", "epochs ="),
        ("epochs = 1", "epochs"),
        ("epochs = 1", "= 1"),
        ("train_size = 200", "train size = 200"),
        ("seed = 0", "seed = 1979-13-40"),
        ("lr_decay = 1.0", "lr_decay = 1."),
        ("lr_decay = 1.0", "lr_decay = .5"),
        ("batchnorm = false", "batchnorm = False"),
        ("batchnorm = false", "batchnorm = no"),
        ("high = 0.1", "high = 0.1,"),
        ("low = 0.001, high", "low = 0.001,, high"),
    ]
    for old, new in edits:
        changed = text.replace(old, new, 1)
        if changed != text and not parses(changed):
            cases.append(run_file(cat, f"{old!r} written {new!r}", changed))
    lines = text.splitlines()
    keyed = [i for i, line in enumerate(lines) if " = " in line]
    for i in pick(rng, keyed, 20):
        key = lines[i].split(" = ")[0]
        for value in (lines[i].split(" = ", 1)[1], "7"):
            doubled = "\n".join([*lines[: i + 1], f"{key} = {value}", *lines[i + 1 :]]) + "\n"
            if not parses(doubled):
                cases.append(run_file(cat, f"duplicate key {key} = {value}", doubled))
    for section in PROBE:
        doubled = text + f"\n[{section}]\n"
        if not parses(doubled):
            cases.append(run_file(cat, f"duplicate section [{section}]", doubled))
    for extra in (
        "space.learning_rate.low = 0.01",
        "[space.learning_rate]\nlow = 0.01",
        "[space.optimizer]\nchoices = ['sgd']",
    ):
        doubled = text + "\n" + extra + "\n"
        if not parses(doubled):
            cases.append(run_file(cat, f"inline table extended: {extra!r}", doubled))
    cases.extend(stray_tokens(rng, 25))
    for i in pick(rng, cuts, 5):
        cases.append(run_file(cat, f"BOM, then truncated at {i}", BOM + text[:i].encode()))
    return cases


JUNK = ("[", "]", "{", "}", "=", '"', "'''", ",", "\\", "[[x]]", "x = ", "= 1", "#\n=", "\x00")


def stray_tokens(rng: np.random.Generator, k: int) -> list[Case]:
    """The probe with a stray token at random places (only where it breaks the TOML)."""
    text = render(PROBE)
    cases, tries = [], 0
    while len(cases) < k and tries < 50 * k:
        tries += 1
        pos = int(rng.integers(0, len(text)))
        token = JUNK[int(rng.integers(len(JUNK)))]
        changed = text[:pos] + token + text[pos:]
        if not parses(changed):
            description = f"{token!r} inserted at character {pos}"
            cases.append(run_file("toml", description, changed))
    return cases


def near_misses(key: str) -> list[str]:
    """Typos of ``key``: one letter dropped, a capital, a hyphen, a plural, a prefix."""
    found = [key[:-1], key + "s", key.capitalize(), key.upper(), key.replace("_", "-"), "x" + key]
    if "_" in key:
        found.append(key.replace("_", ""))
    if len(key) > 3:
        found.append(key[1] + key[0] + key[2:])
    return [k for k in dict.fromkeys(found) if k and k != key]


def unknown_keys(rng: np.random.Generator) -> list[Case]:
    """Sections and keys the study file has no place for."""
    cat = "unknown-key"
    cases = []
    for section in ("extra", "Study", "studies", "datas", "optimizer", "sampler", "train", "x"):
        changes = {(section, "value"): "1"}
        cases.append(spec_case(cat, f"unknown section [{section}]", changes))
    for section, keys in SECTION_FIELDS.items():
        allowed = set(keys)
        typos = [t for k in keys for t in near_misses(k) if t not in allowed]
        for typo in pick(rng, typos, 8):
            changes = {(section, typo): "1"}
            cases.append(spec_case(cat, f"unknown key {section}.{typo}", changes))
        cases.append(spec_case(cat, f"sub-table [{section}.extra]", {(section, "extra"): "{}"}))
    space_typos = [t for p in FLOAT_PARAMS + CHOICE_PARAMS for t in near_misses(p)]
    space_typos += ["lr", "epochs", "hidden", "weight_decay_type", "patience"]
    for typo in pick(rng, [t for t in space_typos if t not in FLOAT_PARAMS + CHOICE_PARAMS], 12):
        cases.append(spec_case(cat, f"unknown key space.{typo}", {("space", typo): "0.1"}))
    for extra in (
        "base = 10",
        "Low = 0.01",
        "steps = 0.01",
        "logs = true",
        "q = 1",
        "choices = []",
    ):
        value = f"{{ low = 0.001, high = 0.1, {extra} }}"
        changes = {("space", "learning_rate"): value}
        cases.append(spec_case(cat, f"range with {extra}", changes))
    for extra in ("weights = [1, 1]", "choice = 1", "Choices = []", "low = 0", "default = 'sgd'"):
        value = f'{{ choices = ["sgd", "adam"], {extra} }}'
        changes = {("space", "optimizer"): value}
        cases.append(spec_case(cat, f"choices with {extra}", changes))
    for line in ('name = "probe"', "trials = 3", "seed = 0", "version = 2"):
        cases.append(spec_case(cat, f"top-level key {line}", {}, top=(line,)))
    return cases


WRONG = {
    "int": ('"3"', "3.5", "true", "false", "[3]", "{ n = 3 }", "1979-05-27", "07:32:00", "nan"),
    "number": ('"0.2"', "true", "[0.2]", "{ v = 0.2 }", "1979-05-27", "07:32:00"),
    "str": ("3", "1.5", "true", '["x"]', '{ v = "x" }', "1979-05-27", "1979-05-27T07:32:00Z"),
    "bool": ('"true"', "1", "0", "1.0", "[true]", "{ v = true }", "1979-05-27", '"yes"'),
    "hidden": (
        '"8"',
        "8",
        "8.0",
        "[8.0]",
        '["8"]',
        "[true]",
        "[[8]]",
        "{ width = 8 }",
        "[]",
        '[8, "8"]',
        "[8, 8.5]",
        "1979-05-27",
    ),
}
FIELD_KINDS = {
    "study": {"name": "str", "description": "str", "experiment": "str"},
    "data": {
        "dataset": "str",
        "data_dir": "str",
        "train_size": "int",
        "validation_fraction": "number",
        "test_fraction": "number",
        "seed": "int",
    },
    "model": {
        "hidden": "hidden",
        "activation": "str",
        "batchnorm": "bool",
        "weight_decay_type": "str",
    },
    "training": {
        "epochs": "int",
        "batch_size": "int",
        "patience": "int",
        "lr_decay": "number",
        "record_batch_loss": "bool",
    },
    "search": {
        "sampler": "str",
        "pruner": "str",
        "seed": "int",
        "trials": "int",
        "timeout": "number",
        "startup_trials": "int",
        "pruner_startup_trials": "int",
        "warmup_epochs": "int",
    },
}
"""The type of every field of the study file (``hpo.spec``'s dataclasses)."""


def wrong_types(rng: np.random.Generator) -> list[Case]:
    """Every field of every section, and every ``[space]`` parameter, given another type."""
    cat = "wrong-type"
    cases = []
    for section, kinds in FIELD_KINDS.items():
        for key, kind in kinds.items():
            for value in WRONG[kind]:
                changes = {(section, key): value}
                cases.append(spec_case(cat, f"{section}.{key} = {value}", changes))
    for section in PROBE:
        for value in ("3", '"x"', "[1, 2]", "true"):
            sections = {s: e for s, e in PROBE.items() if s != section}
            text = render(sections, top=(f"{section} = {value}",))
            cases.append(run_file(cat, f"section {section} = {value}", text))
        text = render(PROBE).replace(f"[{section}]", f"[[{section}]]", 1)
        cases.append(run_file(cat, f"section [[{section}]] (an array of tables)", text))
    for param in FLOAT_PARAMS:
        values = [
            '"0.01"',
            "true",
            "[0.01]",
            "1979-05-27",
            '{ low = "0.001", high = 0.1 }',
            "{ low = 0.001, high = true }",
            "{ low = [0.001], high = 0.1 }",
            '{ low = 0.001, high = 0.1, log = "yes" }',
            "{ low = 0.001, high = 0.1, log = 1 }",
            '{ low = 0.001, high = 0.1, step = "0.01" }',
            '{ choices = "0.01" }',
            "{ choices = 0.01 }",
            "{ choices = [true] }",
            '{ choices = ["0.01"] }',
            "{ choices = { a = 0.01 } }",
        ]
        for value in pick(rng, values, 9):
            cases.append(spec_case(cat, f"space.{param} = {value}", {("space", param): value}))
    choice_values = {
        "optimizer": ("3", "true", '["sgd"]', '{ choices = "sgd" }', '{ choices = ["sgd", 3] }'),
        "init": ("3", "true", '["he"]', '{ choices = "he" }', '{ choices = ["he", 1.0] }'),
        "activation": ("1", "false", '["relu"]', '{ choices = "relu" }'),
        "batchnorm": ('"true"', "1", "0", "[true]", "{ choices = [0, 1] }", '{ choices = ["no"] }'),
    }
    for param, values in choice_values.items():
        for value in values:
            changes = {("space", param): value}
            if param in ("activation", "batchnorm"):
                changes[("model", param)] = None  # else "set in both places" is the defect
            cases.append(spec_case(cat, f"space.{param} = {value}", changes))
    return cases


def out_of_range(rng: np.random.Generator) -> list[Case]:
    """Numbers outside what each field allows, and unknown names where names are chosen."""
    cat = "out-of-range"
    values: dict[tuple[str, str], list[str]] = {
        ("data", "validation_fraction"): ["0", "0.0", "1", "1.0", "-0.2", "1.5", "nan", "inf"],
        ("data", "test_fraction"): ["0", "1.0", "-0.5", "2", "nan", "-inf", "1e-400", "1e308"],
        ("data", "seed"): ["-1", "-9223372036854775808"],
        ("data", "train_size"): ["0", "-1", "1", "-200"],
        ("training", "epochs"): ["0", "-1", "100001", "1000000000", "9223372036854775807"],
        ("training", "batch_size"): ["0", "-1", "-50"],
        ("training", "patience"): ["-1", "-5"],
        ("training", "lr_decay"): ["0", "0.0", "-0.5", "1.0000001", "1.5", "nan", "inf", "-inf"],
        ("search", "trials"): ["0", "-1", "1000001", "10000000", "9223372036854775807"],
        ("search", "seed"): ["-1"],
        ("search", "timeout"): ["-1", "-0.5", "nan", "inf", "-inf"],
        ("search", "startup_trials"): ["-1"],
        ("search", "pruner_startup_trials"): ["-1"],
        ("search", "warmup_epochs"): ["-1"],
        ("model", "hidden"): ["[0]", "[-1]", "[8, 0]", "[65537]", "[9223372036854775807]"],
        ("study", "experiment"): ['"optimiser"', '"OPTIMIZERS"', '"init "', '"none"'],
        ("data", "dataset"): ['"cifar"', '"Digits"', '"digits "', '"mnist-fashion"', '"npz:"'],
        ("model", "activation"): ['"gelu"', '"ReLU"', '""'],
        ("model", "weight_decay_type"): ['"l3"', '"L2"', '""'],
        ("search", "sampler"): ['"bayes"', '"TPE"', '""', '"grid "'],
        ("search", "pruner"): ['"percentile"', '"Median"', '""'],
    }
    for _ in range(4):  # random ones beside the edges above
        values[("training", "epochs")].append(str(int(rng.integers(100_001, 2**62))))
        values[("search", "trials")].append(str(int(rng.integers(1_000_001, 2**62))))
        values[("training", "batch_size")].append(str(-int(rng.integers(1, 2**62))))
        values[("model", "hidden")].append(f"[{int(rng.integers(65_537, 2**62))}]")
        values[("data", "validation_fraction")].append(repr(float(rng.uniform(1.0, 100.0))))
        values[("training", "lr_decay")].append(repr(float(rng.uniform(1.0001, 1e6))))
    cases = []
    for (section, key), literals in values.items():
        for value in literals:
            changes = {(section, key): value}
            cases.append(spec_case(cat, f"{section}.{key} = {value}", changes))
    fixed = {
        "learning_rate": ["0", "-0.01", "nan", "inf", "-inf"],
        "weight_decay": ["-1e-4", "nan"],
        "dropout_ratio": ["1.0", "-0.1", "1.5"],
        "init_scale": ["0", "-1"],
        "momentum": ["1.0", "-0.5"],
        "rho": ["1.0"],
        "beta1": ["1"],
        "beta2": ["2"],
        "optimizer": ['"lion"', '"SGD"', '""'],
        "init": ['"kaiming"', '"He"'],
    }
    for param, literals in fixed.items():
        for value in literals:
            changes = {("space", param): value}
            cases.append(spec_case(cat, f"space.{param} = {value} (fixed)", changes))
    ranges = {
        "dropout_ratio": "{ low = 0.0, high = 1.0 }",
        "momentum": "{ low = 0.5, high = 1.5 }",
        "learning_rate": "{ low = -1.0, high = 0.1 }",
        "weight_decay": "{ low = -1e-8, high = 1e-2 }",
        "init_scale": "{ low = 0.0, high = 1.0 }",
        "beta2": "{ low = 0.9, high = 1.0 }",
    }
    for param, value in ranges.items():
        cases.append(spec_case(cat, f"space.{param} = {value}", {("space", param): value}))
    return cases


def impossible_spaces(rng: np.random.Generator) -> list[Case]:
    """``[space]`` entries that describe no search: empty, reversed or stepless ranges, ..."""
    cat = "space"
    bounds = {
        "learning_rate": (0.001, 0.1),
        "weight_decay": (1e-8, 1e-2),
        "dropout_ratio": (0.0, 0.5),
        "init_scale": (0.1, 10.0),
        "momentum": (0.5, 0.99),
        "rho": (0.8, 0.99),
        "beta1": (0.8, 0.95),
        "beta2": (0.9, 0.999),
    }
    entries: list[tuple[str, str]] = []
    for param, (low, high) in bounds.items():
        mid = (low + high) / 2
        entries += [
            (param, f"{{ low = {high}, high = {low} }}"),
            (param, f"{{ low = {mid}, high = {mid} }}"),
            (param, f"{{ low = {low}, high = {high}, step = 0 }}"),
            (param, f"{{ low = {low}, high = {high}, step = -0.01 }}"),
            (param, f"{{ low = {low}, high = {high}, step = {2 * (high - low)} }}"),
            (param, f"{{ low = {low}, high = {high}, step = nan }}"),
            (param, f"{{ low = {low}, high = {high}, step = inf }}"),
            (param, f"{{ high = {high} }}"),
            (param, f"{{ low = {low} }}"),
            (param, "{}"),
            (param, "{ log = true }"),
            (param, f"{{ low = nan, high = {high} }}"),
            (param, f"{{ low = {low}, high = inf }}"),
            (param, "{ choices = [] }"),
            (param, f"{{ choices = [{mid}, {mid}] }}"),
        ]
        if low > 0:
            entries.append((param, f"{{ low = {low}, high = {high}, log = true, step = {low} }}"))
    entries += [
        ("weight_decay", "{ low = 0.0, high = 0.01, log = true }"),
        ("dropout_ratio", "{ low = 0.0, high = 0.5, log = true }"),
        ("momentum", "{ low = 0.0, high = 0.9, log = true }"),
        ("learning_rate", "{ choices = [0.01, 1e-2] }"),
        ("learning_rate", '{ choices = [0.01, "0.1"] }'),
        ("optimizer", "{ choices = [] }"),
        ("optimizer", '{ choices = ["sgd", "sgd"] }'),
        ("optimizer", '{ choices = ["sgd", "lion"] }'),
        ("init", "{ choices = [] }"),
        ("init", '{ choices = ["he", "he"] }'),
        ("optimizer", "{ low = 0, high = 1 }"),
        ("init", "{ low = 0, high = 1 }"),
        ("optimizer", '{ low = "sgd", high = "adam" }'),
    ]
    cases = []
    for param, value in pick(rng, entries, 110):
        cases.append(spec_case(cat, f"space.{param} = {value}", {("space", param): value}))
    for param in ("activation", "batchnorm"):
        value = "{ low = 0, high = 1 }"
        changes = {("space", param): value, ("model", param): None}
        cases.append(spec_case(cat, f"space.{param} = {value}", changes))
        cases.append(spec_case(cat, f"space.{param} = {{ choices = [] }}", changes))
        both = {("space", param): "true" if param == "batchnorm" else '"relu"'}
        cases.append(spec_case(cat, f"{param} in [model] and in [space]", both))
    nothing = {("space", "learning_rate"): "0.01", ("space", "optimizer"): '"adam"'}
    cases.append(spec_case(cat, "space fixes every parameter", nothing))
    cases.append(
        spec_case(
            cat,
            "space = {} (empty)",
            {("space", "learning_rate"): None, ("space", "optimizer"): None},
        )
    )
    sections = {s: e for s, e in PROBE.items() if s != "space"}
    cases.append(run_file(cat, "no [space] section", render(sections)))
    grid = {("search", "sampler"): '"grid"'}
    cases.append(spec_case(cat, "grid sampler over a continuous range", grid))
    grid_when = {
        ("search", "sampler"): '"grid"',
        ("space", "learning_rate"): "{ choices = [0.01, 0.1] }",
        ("space", "momentum"): "{ low = 0.5, high = 0.9, step = 0.2 }",
    }
    cases.append(spec_case(cat, "grid over the optimizer with momentum searched", grid_when))
    cmaes = {("search", "sampler"): '"cmaes"', ("space", "learning_rate"): "0.01"}
    cases.append(spec_case(cat, "cmaes sampler without a float range", cmaes))
    return cases


def bad_names(rng: np.random.Generator) -> list[str]:
    """Study names the rule refuses: empty, blank, padded, unprintable, too long."""
    names = [
        "",
        " ",
        "   ",
        "\t",
        "\n",
        "\r\n",
        " probe",
        "probe ",
        "\tprobe",
        "probe\n",
        "pro\nbe",
        "pro\rbe",
        "pro\x00be",
        "\x00",
        "pro\x1bbe",
        "\x1b[31mred\x1b[0m",
        "pro\x7fbe",
        "pro\u200bbe",
        "pro\u2028be",
        "pro\u00a0be",
        "\ufeffprobe",
        "pro\x08be",
        "a" * 129,
        "a" * 250,
        "a" * 10000,
        "é" * 129,
        "x" * 128 + " ",
    ]
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_ ./é日"
    controls = [chr(c) for c in (*range(0, 32), 127, 0x85, 0x2029, 0xFEFF, 0x200E)]
    for _ in range(6):
        length = int(rng.integers(3, 40))
        base = "n" + "".join(alphabet[i] for i in rng.integers(len(alphabet), size=length)) + "n"
        pos = int(rng.integers(0, len(base) + 1))
        names.append(base[:pos] + controls[int(rng.integers(len(controls)))] + base[pos:])
        names.append("n" * int(rng.integers(129, 600)))
    names = list(dict.fromkeys(names))
    assert not [n for n in names if is_valid_study_name(n)]
    return names


def shown(text: str, limit: int = 24) -> str:
    """A value for a case's description: escaped, long ones cut."""
    cut = text if len(text) <= limit else text[:limit]
    more = f"...({len(text)} chars)" if len(text) > limit else ""
    return json.dumps(cut, ensure_ascii=False)[1:-1].join("''") + more


def study_names(rng: np.random.Generator) -> list[Case]:
    """Bad study names as ``[study] name``, as ``--study`` on every command, as compare's."""
    cat = "name"
    cases = []
    for name in bad_names(rng):
        s = shown(name)
        cases.append(spec_case(cat, f"[study] name = {s}", {("study", "name"): toml_string(name)}))
        cases.append(Case(cat, f"run --study {s}", ("run", SPEC_FILE, "--study", name, *RUN_FLAGS)))
        cases.append(
            Case(cat, f"worker --study {s}", ("worker", "--study", name, "--quiet", "--in-process"))
        )
        cases.append(Case(cat, f"best --study {s}", ("best", "--study", name)))
        cases.append(Case(cat, f"report --study {s}", ("report", "--study", name)))
        cases.append(Case(cat, f"compare {STUDY} {s}", ("compare", STUDY, name)))
    nameless = render(probe_with({("study", "name"): None}))  # named after its file
    for file_name in (" lead.toml", "trail .toml", "tab\t.toml", "a" * 129 + ".toml"):
        cases.append(
            run_file(
                cat, f"no [study] name, file named {shown(file_name)}", nameless, name=file_name
            )
        )
    for name in ("\udcff", "pro\udcffbe"):  # an argv byte that is not UTF-8
        cases.append(
            Case(cat, f"run --study {shown(name)}", ("run", SPEC_FILE, "--study", name, *RUN_FLAGS))
        )
        cases.append(Case(cat, f"best --study {shown(name)}", ("best", "--study", name)))
    return cases


def sizes(rng: np.random.Generator) -> list[Case]:
    """Sizes no machine trains, and data sizes the split cannot serve."""
    cat = "size"
    cases = [
        spec_case(cat, "hidden = [100000000]", {("model", "hidden"): "[100000000]"}),
        spec_case(cat, "hidden = 5000 layers of 8", {("model", "hidden"): str([8] * 5000)}),
        spec_case(cat, "hidden = 101 layers of 1", {("model", "hidden"): str([1] * 101)}),
        spec_case(cat, "hidden = 50 layers of 65536", {("model", "hidden"): str([65536] * 50)}),
        spec_case(cat, "hidden = 2 layers of 65537", {("model", "hidden"): "[65537, 65537]"}),
        spec_case(cat, "epochs = 1000000000", {("training", "epochs"): "1000000000"}),
        spec_case(cat, "batch_size = 0", {("training", "batch_size"): "0"}),
        spec_case(cat, "train_size = 0", {("data", "train_size"): "0"}),
        spec_case(cat, "train_size = 5", {("data", "train_size"): "5"}),
        spec_case(cat, "patience = -1", {("training", "patience"): "-1"}),
    ]
    # Digits has 10 classes: a split with fewer rows than that cannot hold every class.
    small = []
    for _ in range(12):
        fraction = float(rng.choice([0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9]))
        size = int(rng.integers(2, 200))
        n_val = round(fraction * size)
        if n_val < 10 or size - n_val < 10:
            small.append((size, fraction))
    for size, fraction in [(2, 0.2), (9, 0.2), (19, 0.2), (30, 0.2), (45, 0.2), *small]:
        changes = {
            ("data", "train_size"): str(size),
            ("data", "validation_fraction"): f"{fraction}",
        }
        cases.append(spec_case(cat, f"train_size = {size} at validation {fraction}", changes))
    for size, test in [(1500, 0.2), (5000, 0.2), (1000, 0.5), (10**12, 0.2), (2**63 - 1, 0.2)]:
        changes = {("data", "train_size"): str(size), ("data", "test_fraction"): str(test)}
        cases.append(spec_case(cat, f"train_size = {size} with test_fraction {test}", changes))
    return cases


def _xy(rows: int = 200, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Valid inputs (rows, 6) and labels (rows,) of ``classes`` classes."""
    x = np.random.default_rng(1).normal(size=(rows, 6)).astype(np.float32)
    return x, np.arange(rows) % classes


def _pair(**more: np.ndarray) -> dict[str, np.ndarray]:
    x, y = _xy()
    return {"x": x, "y": y, **more}


NPZ_ARRAYS: dict[str, Callable[[], dict[str, np.ndarray]]] = {
    "missing y": lambda: {"x": _xy()[0]},
    "missing x": lambda: {"y": _xy()[1]},
    "unknown array z": lambda: _pair(z=np.zeros(3)),
    "x_test without y_test": lambda: _pair(x_test=_xy()[0]),
    "1-D x": lambda: _pair(x=np.arange(200.0)),
    "float labels": lambda: _pair(y=_xy()[1].astype(float)),
    "2-D labels": lambda: _pair(y=_xy()[1].reshape(100, 2)),
    "fewer labels than rows": lambda: _pair(y=_xy()[1][:150]),
    "negative labels": lambda: _pair(y=_xy()[1] - 1),
    "string inputs": lambda: _pair(x=np.full((200, 3), "a")),
    "NaN inputs": lambda: _pair(x=np.full((200, 3), np.nan)),
    "one class": lambda: _pair(y=np.zeros(200, dtype=np.int64)),
    "no rows": lambda: {"x": np.zeros((0, 3)), "y": np.zeros(0, dtype=np.int64)},
    "x_test with other features": lambda: _pair(x_test=np.zeros((20, 5)), y_test=_xy()[1][:20]),
    "y_test beyond y's classes": lambda: _pair(x_test=_xy()[0][:20], y_test=_xy()[1][:20] + 9),
    "object arrays": lambda: _pair(x=np.array([[1], "a"], dtype=object)),
    "too few rows for the split": lambda: dict(zip(("x", "y"), _xy(12, 4), strict=True)),
}
"""Archives whose arrays break one rule of ``npz:`` datasets (built when the case runs)."""


def npz_datasets(rng: np.random.Generator) -> list[Case]:
    """``dataset = "npz:..."`` naming a missing file, a file that is no archive, bad arrays."""
    cat = "npz"
    cases = []

    def npz_case(description: str, dataset: str, fixtures: tuple[Fixture, ...] = ()) -> Case:
        changes = {("data", "dataset"): toml_string(dataset), ("data", "train_size"): None}
        text = render(probe_with(changes))
        return run_file(cat, description, text, fixtures=fixtures)

    cases.append(npz_case("npz: missing file", "npz:missing.npz"))
    cases.append(npz_case("npz: missing directory", "npz:missing-dir/data.npz"))
    cases.append(npz_case("npz: a directory", "npz:subdir", (Fixture("dir", "subdir"),)))
    cases.append(
        npz_case(
            "npz: a text file", "npz:notes.npz", (Fixture("file", "notes.npz", b"not a zip\n"),)
        )
    )
    cases.append(npz_case("npz: the database", f"npz:{DB_FILE}"))
    cases.append(npz_case("npz: the spec", f"npz:{SPEC_FILE}"))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        # A fixed date: writestr with a name stamps the current time, and the same seed must
        # give the same bytes.
        archive.writestr(zipfile.ZipInfo("x.npy", date_time=(2020, 1, 1, 0, 0, 0)), b"not an array")
    cases.append(
        npz_case(
            "npz: a zip of junk", "npz:junk.npz", (Fixture("file", "junk.npz", zipped.getvalue()),)
        )
    )
    cases.append(
        npz_case(
            "npz: object arrays",
            "npz:objects.npz",
            (Fixture("npz", "objects.npz", "object arrays"),),
        )
    )
    for name in NPZ_ARRAYS:
        if name != "object arrays":
            cases.append(
                npz_case(f"npz: {name}", "npz:data.npz", (Fixture("npz", "data.npz", name),))
            )
    return cases


def spec_paths(rng: np.random.Generator) -> list[Case]:
    """The spec argument: a directory, a missing file, binary, not UTF-8, empty, a loop."""
    cat = "spec-path"
    valid = render(PROBE)
    junk = bytes(rng.integers(0, 256, size=300, dtype=np.uint8))
    cases = [
        Case(
            cat, "spec is a directory", ("run", "subdir", *RUN_FLAGS), (Fixture("dir", "subdir"),)
        ),
        Case(
            cat,
            "spec is a directory named .toml",
            ("run", "d.toml", *RUN_FLAGS),
            (Fixture("dir", "d.toml"),),
        ),
        Case(cat, "spec is the working directory", ("run", ".", *RUN_FLAGS)),
        Case(cat, "spec is the empty string", ("run", "", *RUN_FLAGS)),
        Case(cat, "spec is blank", ("run", "  ", *RUN_FLAGS)),
        Case(cat, "spec is missing", ("run", "missing.toml", *RUN_FLAGS)),
        Case(cat, "spec in a missing directory", ("run", "missing-dir/x.toml", *RUN_FLAGS)),
        Case(cat, "spec is a missing absolute path", ("run", f"{CWD}/missing.toml", *RUN_FLAGS)),
        Case(cat, "spec is /dev/null", ("run", "/dev/null", *RUN_FLAGS)),
        Case(cat, "spec is the database", ("run", DB_FILE, *RUN_FLAGS)),
        Case(cat, "spec path with a NUL", ("run", "tiny\x00.toml", *RUN_FLAGS)),
        Case(cat, "spec is an unknown packaged name", ("run", "nosuchspec", *RUN_FLAGS)),
        Case(cat, "spec is a packaged name in capitals", ("run", "DEFAULT", *RUN_FLAGS)),
        Case(
            cat,
            "spec is a symlink to itself",
            ("run", "loop.toml", *RUN_FLAGS),
            (Fixture("symlink", "loop.toml", "loop.toml"),),
        ),
        Case(
            cat,
            "spec is a dangling symlink",
            ("run", "dangling.toml", *RUN_FLAGS),
            (Fixture("symlink", "dangling.toml", "nowhere.toml"),),
        ),
        run_file(cat, "spec is random bytes", b"\xff\xfe" + junk, name="bin.toml"),
        run_file(cat, "spec is NUL bytes", b"\x00" * 64, name="nul.toml"),
        run_file(
            cat,
            "spec in Latin-1",
            valid.replace("fuzz probe", "café").encode("latin-1"),
            name="latin1.toml",
        ),
        run_file(cat, "spec in UTF-16", valid.encode("utf-16"), name="utf16.toml"),
        run_file(cat, "spec in UTF-16 BE, no BOM", valid.encode("utf-16-be"), name="be.toml"),
        run_file(cat, "spec is empty", b"", name="empty.toml"),
        run_file(cat, "spec is blank lines", b"\n\n   \n", name="blank.toml"),
        run_file(cat, "spec is a comment", b"# nothing here\n", name="comment.toml"),
        run_file(cat, "spec is a BOM alone", BOM, name="bom.toml"),
        run_file(cat, "spec is two BOMs then valid", BOM + BOM + valid.encode(), name="bom2.toml"),
        run_file(
            cat,
            "spec with a lone surrogate byte",
            valid.encode().replace(b"fuzz probe", b"\xed\xa0\x80"),
            name="surrogate.toml",
        ),
    ]
    for description, changes in (
        ("unknown key", {("training", "epoch"): "3"}),
        ("epochs = 0", {("training", "epochs"): "0"}),
        ("name = ''", {("study", "name"): '""'}),
        ("wrong type", {("training", "epochs"): '"three"'}),
    ):
        data = BOM + render(probe_with(changes)).encode()
        cases.append(run_file(cat, f"BOM, then {description}", data, name="bom-bad.toml"))
    return cases


def cli_arguments(rng: np.random.Generator) -> list[Case]:
    """Bad flags and values on every command."""
    cat = "cli"
    run = ("run", SPEC_FILE)
    cases = []

    def add(description: str, argv: tuple[str, ...], **options) -> None:
        cases.append(Case(cat, description, argv, **options))

    trials = [
        "abc",
        "1.5",
        "",
        "-1",
        "0",
        "-0",
        "+0",
        "00",
        "1000001",
        "10000000",
        "99999999999999999999999",
        "1e3",
        "0x10",
        "\u22121",
        "nan",
        "inf",
        " ",
    ]
    trials += [str(int(rng.integers(1_000_001, 2**62))), str(-int(rng.integers(1, 2**62)))]
    for value in trials:
        add(f"run --trials {value!r}", (*run, "--trials", value, *RUN_FLAGS))
    for value in ("0", "-1", "10000000"):
        add(f"run --trials {value} --create-only", (*run, "--trials", value, "--create-only"))
    add(
        "run --trials 10000000 (worker processes)",
        (*run, "--trials", "10000000", "--quiet", "--no-report"),
    )
    for value in ("0", "-1", "abc", "1.5", "", "nan"):
        add(f"run --workers {value!r}", (*run, "--workers", value, *RUN_FLAGS))
    for value in ("0", "-1", "nan", "abc", "", "-inf", "0.0", "-0", "1e-400", "-1e-9"):
        add(f"run --timeout {value!r}", (*run, "--timeout", value, *RUN_FLAGS))
    for value in ("-1", "abc", "1.5", "", "1e3"):
        add(f"run --seed {value!r}", (*run, "--seed", value, *RUN_FLAGS))
    for flag, value in (
        ("--sampler", "bayes"),
        ("--sampler", "TPE"),
        ("--sampler", ""),
        ("--pruner", "percentile"),
        ("--pruner", "Median"),
        ("--pruner", ""),
        ("--dataset", "cifar"),
        ("--dataset", ""),
        ("--dataset", "npz:"),
        ("--dataset", "npz:missing.npz"),
        ("--dataset", "MNIST"),
        ("--dataset", f"npz:{SPEC_FILE}"),
    ):
        add(f"run {flag} {value!r}", (*run, flag, value, *RUN_FLAGS))
    for extra in (
        ("--frobnicate",),
        ("--triasl", "3"),
        ("-x",),
        ("--trials",),
        ("--timeout",),
        ("--study",),
        ("--storage",),
        ("extra.toml",),
        ("--in-process=yes",),
    ):
        add(f"run {' '.join(extra)}", (*run, *RUN_FLAGS, *extra))
    worker = ("worker", "--study", STUDY, "--quiet", "--in-process")
    for value in ("0", "-1", "abc", "", "1.5"):
        add(f"worker --workers {value!r}", (*worker, "--workers", value))
    add("worker without --study", ("worker", "--quiet", "--in-process"))
    add("worker --study without a value", ("worker", "--quiet", "--study"))
    add("worker --trials 3", (*worker, "--trials", "3"))
    add("worker with a spec", (*worker, SPEC_FILE))
    best = ("best", "--study", STUDY)
    for value in ("weights", "w.npy", "", "w.npz.txt", "subdir"):
        add(
            f"best --export {value!r}",
            (*best, "--export", value),
            fixtures=(Fixture("dir", "subdir"),),
        )
    add(
        "best --export into a missing directory",
        (*best, "--retrain", "--export", "missing-dir/w.npz"),
    )
    add(
        "best --export to an existing directory",
        (*best, "--retrain", "--export", "out.npz"),
        fixtures=(Fixture("dir", "out.npz"),),
    )
    add("best --export under a file", (*best, "--export", f"{SPEC_FILE}/w.npz"))
    add("best --top 3", (*best, "--top", "3"))
    add("best with an extra argument", (*best, "--json", "extra"))
    add("best --export without a value", (*best, "--export"))
    report = ("report", "--study", STUDY)
    for value in ("0", "-1", "abc", "", "1.5", "1e3"):
        add(f"report --top {value!r}", (*report, "--top", value))
    for value in (
        ".",
        "",
        "subdir",
        "subdir/",
        "missing-dir/r.html",
        f"{CWD}/missing-dir/r.html",
        f"{SPEC_FILE}/r.html",
        "r.html\x00",
    ):
        add(
            f"report --out {value!r}",
            (*report, "--out", value),
            fixtures=(Fixture("dir", "subdir"),),
        )
    add("report with an extra argument", (*report, "extra"))
    for studies in (
        (STUDY,),
        (STUDY, STUDY),
        (STUDY, "nope"),
        ("nope1", "nope2"),
        ("", STUDY),
        (STUDY, OTHER_STUDY, STUDY),
    ):
        add(f"compare {' '.join(studies)}", ("compare", *studies))
    add("compare with no study", ("compare",))
    for value in (".", "subdir", "missing-dir/c.html", ""):
        add(
            f"compare --out {value!r}",
            ("compare", STUDY, OTHER_STUDY, "--out", value),
            fixtures=(Fixture("dir", "subdir"),),
        )
    add("studies with an extra argument", ("studies", "extra"))
    add("studies --study", ("studies", "--study", STUDY))
    add("studies --storage without a value", ("studies", "--storage"))
    for value in ("70000", "65536", "-1", "abc", "", "1.5", "99999999999999999999"):
        add(f"dashboard --port {value!r}", ("dashboard", "--port", value))
    for host in ("0.0.0.0", "", "::", "192.168.0.1", "example.com"):
        add(
            f"dashboard --host {host!r} without the flag",
            ("dashboard", "--host", host, "--port", "0"),
        )
    add("dashboard with an extra argument", ("dashboard", "extra"))
    add("dashboard --study", ("dashboard", "--study", STUDY))
    add("specs with an extra argument", ("specs", "extra"))
    add("specs --json", ("specs", "--json"))
    for argv in ((), ("frob",), ("RUN",), ("--version",), ("--storage", "sqlite:///x.db")):
        add(f"top level {' '.join(argv) or '(nothing)'}", argv)
    return cases


BAD_URLS = (
    "",
    " ",
    "sqlite://",
    "sqlite:///:memory:",
    "sqlite:///file::memory:?uri=true",
    "sqlite:///missing-dir/x.db",
    f"sqlite:///{CWD}/missing-dir/x.db",
    "sqlite:///subdir",
    "sqlite:///notes.db",
    "sqlite:///app.db",
    "sqlite:////",
    f"sqlite:///{SPEC_FILE}",
    "mysql://x",
    "mysql+pymysql://u:p@h/d",
    "oracle://x",
    "http://example.com/db",
    "not-a-url",
    DB_FILE,
    "journal:",
    "journal://",
    "journal:///",
    "journal:missing-dir/x.log",
    f"journal:///{CWD}/missing-dir/x.log",
    "journal:subdir",
    "journal:notes.db",
    f"journal:{DB_FILE}",
    "postgresql://nobody@127.0.0.1:1/x",
    "postgres://nobody@127.0.0.1:1/x",
    "postgresql://u:p@ss@127.0.0.1:1/x",
)
"""Storages no command may use (the case's files: subdir/, notes.db, app.db)."""
STORAGE_FIXTURES = (
    Fixture("dir", "subdir"),
    Fixture("file", "notes.db", b"these are my notes, not a database\n"),
    Fixture("sqlite", "app.db"),
)
COMMANDS = {
    "run": ("run", SPEC_FILE, "--trials", "1", *RUN_FLAGS),
    "worker": ("worker", "--study", STUDY, "--quiet", "--in-process"),
    "studies": ("studies",),
    "best": ("best", "--study", STUDY),
    "report": ("report", "--study", STUDY),
    "compare": ("compare", STUDY, OTHER_STUDY),
    "dashboard": ("dashboard", "--port", "0"),
}
READ_ONLY = ("studies", "best", "report", "compare", "dashboard")


def storages(rng: np.random.Generator) -> list[Case]:
    """Bad storage URLs on every command, as ``--storage`` and as ``$HPO_STORAGE``."""
    cat = "storage"
    cases = []
    for command, argv in COMMANDS.items():
        urls = list(BAD_URLS)
        if command in READ_ONLY:
            urls += ["sqlite:///missing.db", "journal:missing.log", f"sqlite:///{CWD}/missing.db"]
        else:
            urls.append("journal:missing.log" if command == "worker" else "sqlite:///notes.db")
        for url in dict.fromkeys(urls):
            description = f"{command} --storage {url!r}"
            cases.append(Case(cat, description, (*argv, "--storage", url), STORAGE_FIXTURES))
    for url in (
        "sqlite://",
        "sqlite:///:memory:",
        "mysql://x",
        "sqlite:///missing-dir/x.db",
        "journal:",
        " ",
        "journal:subdir",
    ):
        for command in ("run", "worker", "studies"):
            env = (("HPO_STORAGE", url),)
            cases.append(
                Case(
                    cat,
                    f"{command} with HPO_STORAGE={url!r}",
                    COMMANDS[command],
                    STORAGE_FIXTURES,
                    env=env,
                )
            )
    for name, value in (
        ("HPO_HEARTBEAT_INTERVAL", "abc"),
        ("HPO_HEARTBEAT_INTERVAL", "0"),
        ("HPO_HEARTBEAT_INTERVAL", "-1"),
        ("HPO_GRACE_PERIOD", "5"),
        ("HPO_GRACE_PERIOD", "abc"),
    ):
        for command in ("run", "worker"):
            cases.append(
                Case(
                    cat, f"{command} with {name}={value!r}", COMMANDS[command], env=((name, value),)
                )
            )
    return cases


def missing_things(rng: np.random.Generator) -> list[Case]:
    """Commands in an empty directory, on a missing database, or naming a missing study."""
    cases = []
    empty = [
        ("worker", "--study", "x", "--quiet", "--in-process"),
        ("worker", "--study", STUDY, "--quiet", "--in-process"),
        ("studies",),
        ("best",),
        ("best", "--study", STUDY),
        ("best", "--json"),
        ("report",),
        ("report", "--study", STUDY),
        ("compare", STUDY, OTHER_STUDY),
        ("dashboard", "--port", "0"),
        ("worker", "--study", "x", "--storage", "journal:hpo.log", "--quiet"),
        ("best", "--storage", "journal:hpo.log"),
        ("studies", "--storage", f"sqlite:///{DB_FILE}"),
    ]
    for argv in empty:
        cases.append(
            Case(
                "empty-dir",
                f"{' '.join(argv)} in an empty directory",
                argv,
                with_db=False,
                with_spec=False,
            )
        )
    for argv in empty[:10]:
        cases.append(
            Case("missing-db", f"{' '.join(argv)} without a database", argv, with_db=False)
        )
    for study in ("nope", "FUZZ", "fuzz-c", "Fuzz", "fuzz.db", "fuzz\u00e9"):
        for argv in (
            ("worker", "--study", study, "--quiet", "--in-process"),
            ("best", "--study", study),
            ("best", "--study", study, "--json"),
            ("report", "--study", study),
            ("compare", STUDY, study),
            ("best", "--study", study, "--retrain"),
        ):
            cases.append(Case("missing-study", f"{' '.join(argv)}: no such study", argv))
    # Without --study on two studies, best and report take the most recently updated one and
    # name it (tests/hpo/test_cli.py): no longer bad input.
    return cases


GENERATORS: tuple[Callable[[np.random.Generator], list[Case]], ...] = (
    broken_toml,
    unknown_keys,
    wrong_types,
    out_of_range,
    impossible_spaces,
    study_names,
    sizes,
    npz_datasets,
    spec_paths,
    cli_arguments,
    storages,
    missing_things,
)


def more_cases(rng: np.random.Generator) -> Case:
    """One more random case, for a ``n`` beyond the generators' own cases."""
    kind = int(rng.integers(4))
    if kind == 0:
        return stray_tokens(rng, 1)[0]
    if kind == 1:
        name = bad_names(rng)[-int(rng.integers(1, 13))]
        return Case("name", f"best --study {shown(name)}", ("best", "--study", name))
    if kind == 2:
        value = str(int(rng.integers(1_000_001, 2**62)))
        argv = ("run", SPEC_FILE, "--trials", value, *RUN_FLAGS)
        return Case("cli", f"run --trials {value}", argv)
    value = str(-int(rng.integers(1, 2**62)))
    return spec_case("out-of-range", f"training.epochs = {value}", {("training", "epochs"): value})


_CORE_NAMES = ("", " ", "\x00", "\n", "a" * 129, "a" * 250, "a" * 10000)
CORE = frozenset(
    [
        "hidden = [100000000]",
        "hidden = 5000 layers of 8",
        "training.epochs = 1000000000",
        "training.batch_size = 0",
        "data.train_size = 0",
        "train_size = 5",
        "training.patience = -1",
        *(f"run --trials {v!r}" for v in ("0", "10000000", "-1", "abc")),
        *(f"run --timeout {v!r}" for v in ("0", "-1", "nan", "abc")),
        "run --workers '0'",
        "dashboard --port '70000'",
        "best --export 'weights'",
        "report --out '.'",
        "report --out 'missing-dir/r.html'",
        "report --top '0'",
        *(
            f"{command} --storage {url!r}"
            for command in ("run", "studies", "worker")
            for url in (
                "",
                "sqlite://",
                "sqlite:///:memory:",
                "sqlite:///missing-dir/x.db",
                "mysql://x",
                "journal:missing-dir/x.log",
                "sqlite:///subdir",
                "sqlite:///notes.db",
                "postgresql://nobody@127.0.0.1:1/x",
            )
        ),
        *(f"{' '.join(argv)} in an empty directory" for argv in (("studies",), ("best",))),
        "worker --study x --quiet --in-process in an empty directory",
        *(f"{command} without a database" for command in ("studies", "best", "report")),
        *(
            f"{' '.join(argv)}: no such study"
            for argv in (
                ("worker", "--study", "nope", "--quiet", "--in-process"),
                ("best", "--study", "nope"),
                ("report", "--study", "nope"),
            )
        ),
        *(f"[study] name = {shown(name)}" for name in _CORE_NAMES),
        *(f"run --study {shown(name)}" for name in _CORE_NAMES),
        "spec is a directory",
        "spec is missing",
        "spec is random bytes",
        "spec in Latin-1",
        # What wider surveys found (seeds 0 to 3, all 1,572 cases): kept in every sample.
        "npz: no rows",
        "best --export to an existing directory",
        "report --out 'r.html\\x00'",
    ]
)
"""Descriptions of the cases always among the chosen, whatever ``n``: those the rules name, and
those that found a bug."""


def generate_cases(*, seed: int = 0, n: int = 600) -> list[Case]:
    """``n`` distinct bad inputs drawn with ``np.random.default_rng(seed)``, every category
    represented, each with an id ``CATEGORY-NNN-what-it-does``."""
    rng = np.random.default_rng(seed)
    pool: dict[tuple, Case] = {}
    for generate in GENERATORS:
        for case in generate(rng):
            pool.setdefault(case.key(), case)
    cases = list(pool.values())
    if len(cases) > n:
        by_category: dict[str, list[int]] = {}
        for i, case in enumerate(cases):
            by_category.setdefault(case.category, []).append(i)
        chosen = [i for i, case in enumerate(cases) if case.description in CORE]
        for indices in by_category.values():  # one of each category too
            if not any(cases[i].category == cases[indices[0]].category for i in chosen):
                chosen.append(indices[int(rng.integers(len(indices)))])
        taken = set(chosen)
        rest = [int(i) for i in rng.permutation(len(cases)) if int(i) not in taken]
        chosen += rest[: max(0, n - len(chosen))]
        cases = [cases[i] for i in sorted(chosen)]
    tries = 0
    while len(cases) < n and tries < 100 * n:
        tries += 1
        case = more_cases(rng)
        if case.key() not in pool:
            pool[case.key()] = case
            cases.append(case)
    counters: dict[str, int] = {}
    numbered = []
    for case in cases:
        k = counters[case.category] = counters.get(case.category, 0) + 1
        slug = re.sub(r"[^a-z0-9]+", "-", case.description.lower()).strip("-")[:40].strip("-")
        numbered.append(replace(case, id=f"{case.category}-{k:03d}-{slug}"))
    return numbered


# ---------------------------------------------------------------------------------------------
# Accepted specs: random valid combinations, each of which must run one trial


@dataclass(frozen=True)
class AcceptedSpec:
    id: str
    study_name: str
    data: bytes  # the file's bytes (some start with a UTF-8 BOM)


VALID_NAMES = ("tiny", "lr sweep", "é-ü 日本", "a" * 128, "x", "book/tpe:1", "名前", "🙂 emoji")


def accepted_specs(*, seed: int = 0, n: int = 8) -> list[AcceptedSpec]:
    """``n`` valid tiny specs (sampler, pruner, optimizer, activation, init, fractions, hidden,
    1 or 2 epochs drawn at random); two of them start with a UTF-8 BOM."""
    rng = np.random.default_rng(seed)
    with_bom = set(rng.choice(n, size=min(2, n), replace=False).tolist())
    # Samplers, pruners and names in a shuffled cycle: eight specs cover every one of them.
    samplers = [str(x) for x in rng.permutation(["tpe", "random", "cmaes", "qmc", "grid"])]
    pruners = [str(x) for x in rng.permutation(["median", "hyperband", "sha", "none"])]
    names = [str(x) for x in rng.permutation(VALID_NAMES)]
    found = []
    for i in range(n):
        name = names[i % len(names)]
        assert is_valid_study_name(name)
        sampler, pruner = samplers[i % len(samplers)], pruners[i % len(pruners)]
        epochs = int(rng.integers(1, 3))
        if pruner in ("hyperband", "sha") and epochs == 1:
            epochs = 2  # its first rung must come before the last epoch
        warmup = 0 if pruner in ("hyperband", "sha") else int(rng.integers(0, 3))
        width = [int(w) for w in rng.integers(4, 17, size=int(rng.integers(1, 3)))]
        data = {
            "dataset": '"digits"',
            "validation_fraction": str(float(rng.choice([0.15, 0.2, 0.25, 0.3]))),
            "test_fraction": str(float(rng.choice([0.1, 0.2, 0.3]))),
            "seed": str(int(rng.integers(0, 1000))),
        }
        if rng.random() < 0.5:
            data["train_size"] = str(int(rng.integers(300, 801)))
        model = {"hidden": str(width), "weight_decay_type": str(rng.choice(['"l1"', '"l2"']))}
        training = {
            "epochs": str(epochs),
            "batch_size": str(int(rng.integers(16, 129))),
            "lr_decay": str(float(rng.choice([1.0, 0.9, 0.5]))),
            "record_batch_loss": str(bool(rng.random() < 0.5)).lower(),
        }
        if rng.random() < 0.5:
            training["patience"] = str(int(rng.integers(0, 3)))
        search = {
            "sampler": f'"{sampler}"',
            "pruner": f'"{pruner}"',
            "seed": str(int(rng.integers(0, 100))),
            "trials": str(int(rng.integers(1, 51))),
            "startup_trials": str(int(rng.integers(0, 6))),
            "pruner_startup_trials": str(int(rng.integers(0, 6))),
            "warmup_epochs": str(warmup),
        }
        optimizers = [
            str(o) for o in rng.choice(OPTIMIZERS, size=int(rng.integers(1, 4)), replace=False)
        ]
        space = {}
        if sampler == "grid":
            space["learning_rate"] = "{ low = 0.01, high = 0.1, step = 0.03 }"
            space["dropout_ratio"] = str(rng.choice(["0.0", "{ choices = [0.0, 0.2] }"]))
        else:
            space["learning_rate"] = "{ low = 0.001, high = 0.1, log = true }"
            space["weight_decay"] = str(
                rng.choice(["0.0", "{ low = 1e-8, high = 1e-3, log = true }"])
            )
            if "momentum" in optimizers or "nesterov" in optimizers:
                space["momentum"] = "{ low = 0.5, high = 0.95 }"
        if len(optimizers) == 1:
            space["optimizer"] = f'"{optimizers[0]}"'
        else:
            space["optimizer"] = "{ choices = [" + ", ".join(f'"{o}"' for o in optimizers) + "] }"
        activations = ["relu", "sigmoid", "tanh", "leaky_relu"]
        activation = str(rng.choice(activations))
        where = int(rng.integers(3))
        if where == 0:
            model["activation"] = f'"{activation}"'
            model["batchnorm"] = str(bool(rng.random() < 0.5)).lower()
        elif where == 1:
            space["activation"] = f'"{activation}"'
        else:
            space["activation"] = '{ choices = ["relu", "tanh"] }'
        init = str(rng.choice(["he", "xavier", "std"]))
        space["init"] = f'"{init}"'
        if init == "std":
            space["init_scale"] = "0.05"
        sections = {
            "study": {"name": toml_string(name)},
            "data": data,
            "model": model,
            "training": training,
            "search": search,
            "space": space,
        }
        text = render(sections).encode()
        bom = i in with_bom
        found.append(
            AcceptedSpec(
                f"accepted-{i}-{sampler}-{pruner}{'-bom' if bom else ''}",
                name,
                (BOM if bom else b"") + text,
            )
        )
    return found


# ---------------------------------------------------------------------------------------------
# Setting a case up and looking at what it left


def make_template_db(directory: Path) -> Path:
    """A real small hpo database: studies ``fuzz`` and ``fuzz-b`` of ``TINY_SPEC``, two finished
    trials each. Returns its path (the lock file beside it is removed)."""
    from hpo.cli import main

    directory.mkdir(parents=True, exist_ok=True)
    spec = directory / SPEC_FILE
    spec.write_text(TINY_SPEC, encoding="utf-8")
    db = directory / DB_FILE
    for study in (STUDY, OTHER_STUDY):
        argv = [
            "run",
            str(spec),
            "--storage",
            f"sqlite:///{db}",
            "--study",
            study,
            "--trials",
            "2",
            *RUN_FLAGS,
        ]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        if code != 0:
            raise RuntimeError(f"making the template database failed ({code}): {err.getvalue()}")
    for side in directory.glob(DB_FILE + "?*"):
        side.unlink()
    return db


def materialize(case: Case, directory: Path, template_db: Path) -> None:
    """Fill the (empty) ``directory`` with what ``case`` runs on."""
    directory.mkdir(parents=True, exist_ok=True)
    if case.with_db:
        shutil.copyfile(template_db, directory / DB_FILE)
    if case.with_spec:
        (directory / SPEC_FILE).write_text(TINY_SPEC, encoding="utf-8")
    for fixture in case.fixtures:
        path = directory / fixture.path
        if fixture.kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
        elif fixture.kind == "file":
            path.write_bytes(fixture.data)
        elif fixture.kind == "symlink":
            path.symlink_to(fixture.data)
        elif fixture.kind == "sqlite":
            connection = sqlite3.connect(path)
            with connection:
                connection.execute("CREATE TABLE users (name TEXT)")
                connection.execute("INSERT INTO users VALUES ('ada')")
            connection.close()
        elif fixture.kind == "npz":
            with open(path, "wb") as f:
                np.savez(f, **NPZ_ARRAYS[fixture.data]())
        else:
            raise ValueError(f"unknown fixture kind {fixture.kind!r}")


def snapshot(directory: Path) -> dict[str, str]:
    """Every entry under ``directory`` (hidden ones too, symlinks not followed): relative path
    -> ``dir``, ``link:TARGET`` or the file's sha256."""
    found = {}
    stack = [directory]
    while stack:
        current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                rel = os.path.relpath(entry.path, directory)
                if entry.is_symlink():
                    found[rel] = "link:" + os.readlink(entry.path)
                elif entry.is_dir():
                    found[rel] = "dir"
                    stack.append(Path(entry.path))
                else:
                    found[rel] = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
    return dict(sorted(found.items()))


def with_cwd(value: str, cwd: Path) -> str:
    return value.replace(CWD, str(cwd))


# ---------------------------------------------------------------------------------------------
# Running a case


class HarnessStop(BaseException):
    """Raised by a guard: the case got as far as training, a report or serving (a
    BaseException, so that no ``except Exception`` in hpo turns it into a failed trial)."""


class CaseTimeout(BaseException):
    """Raised by ``time_limit`` when an in-process case runs too long."""


def _stop(what: str) -> Callable:
    def stop(*args, **kwargs):
        raise HarnessStop(what)

    return stop


def guard_patches() -> list[tuple[object, str, Callable]]:
    """``(owner, attribute, replacement)`` for every place where an accepted input starts real
    work: executors and the orchestrator (training), a network (retraining), the report's
    snapshot (which trains the best configuration again), and the dashboard's server."""
    import socketserver

    from hpo import dashboard, executors, pages, runner
    from trainer import network

    patches: list[tuple[object, str, Callable]] = []
    classes = [executors.InlineExecutor, executors.LocalProcessExecutor]
    classes += [c for c in executors.TrialExecutor.__subclasses__() if c not in classes]
    for cls in classes:
        patches.append((cls, "__init__", _stop("train trials")))
    patches.append((runner.Orchestrator, "run", _stop("train trials")))
    patches.append((network.MultiLayerNet, "__init__", _stop("build a network")))
    for name in ("build_snapshot", "trials_snapshot"):
        if hasattr(pages, name):
            patches.append((pages, name, _stop("write a report")))
    patches.append((dashboard, "make_server", _stop("serve the dashboard")))
    patches.append((socketserver.BaseServer, "serve_forever", _stop("serve the dashboard")))
    return patches


@contextlib.contextmanager
def patched(patches: list[tuple[object, str, Callable]]) -> Iterator[None]:
    saved = [(owner, name, owner.__dict__.get(name, None)) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, old in reversed(saved):
            if old is None:
                delattr(owner, name)
            else:
                setattr(owner, name, old)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise CaseTimeout in this (main) thread after ``seconds``."""

    def expire(signum, frame):
        raise CaseTimeout(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Outcome:
    """What a case did. ``code`` is None when main did not return (a crash, a guard, a
    timeout)."""

    code: int | None
    stdout: str = ""
    stderr: str = ""
    crash: str | None = None  # the traceback of an exception that escaped main
    stopped: str | None = None  # what a guard stopped
    timed_out: bool = False
    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0


def call_main(argv: list[str], *, seconds: float = 30.0) -> Outcome:
    """``hpo.cli.main(argv)`` in this process; the exit code, or what stopped it."""
    from hpo.cli import main

    try:
        with time_limit(seconds):
            return Outcome(code=main(argv))
    except SystemExit as e:  # argparse
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return Outcome(code=code)
    except HarnessStop as e:
        return Outcome(code=None, stopped=str(e))
    except CaseTimeout:
        return Outcome(code=None, timed_out=True)
    except BaseException as e:  # a crash is what the survey reports
        if isinstance(e, KeyboardInterrupt):
            raise
        return Outcome(code=None, crash="".join(traceback.format_exception(e)))


def compare_snapshots(outcome: Outcome, before: dict[str, str], after: dict[str, str]) -> None:
    outcome.created = [p for p in after if p not in before]
    outcome.removed = [p for p in before if p not in after]
    outcome.changed = [p for p in before if p in after and before[p] != after[p]]


def run_in_process(case: Case, directory: Path, template_db: Path, *, seconds: float) -> Outcome:
    """Run ``case`` through ``hpo.cli.main`` in ``directory``, guarded (see ``guard_patches``)."""
    materialize(case, directory, template_db)
    before = snapshot(directory)
    old_cwd = os.getcwd()
    old_env = {name: os.environ.get(name) for name in HPO_VARIABLES}
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    try:
        os.chdir(directory)
        for name in HPO_VARIABLES:
            os.environ.pop(name, None)
        for name, value in case.env:
            os.environ[name] = with_cwd(value, directory)
        argv = [with_cwd(a, directory) for a in case.argv]
        with (
            patched(guard_patches()),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            outcome = call_main(argv, seconds=seconds)
    finally:
        os.chdir(old_cwd)
        for name, value in old_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    outcome.stdout, outcome.stderr = out.getvalue(), err.getvalue()
    outcome.seconds = time.monotonic() - start
    compare_snapshots(outcome, before, snapshot(directory))
    return outcome


def source_root() -> Path:
    """The directory holding the ``hpo`` package this process imports."""
    import hpo

    return Path(hpo.__file__).resolve().parents[1]


MEMORY_LIMIT_KIB = 8 * 2**20
"""A case process's address space (``ulimit -v``): an accepted giant net fails to allocate
instead of swapping the machine."""


def run_subprocess(case: Case, directory: Path, template_db: Path, *, seconds: float) -> Outcome:
    """Run ``case`` as ``python -m hpo`` in ``directory``, killed after ``seconds``."""
    if case.has_nul():
        return Outcome(code=None, skipped="a NUL cannot be passed to a process")
    materialize(case, directory, template_db)
    before = snapshot(directory)
    env = {k: v for k, v in os.environ.items() if k not in HPO_VARIABLES}
    env.update({name: with_cwd(value, directory) for name, value in case.env})
    # The hpo this harness imported, not whichever one is installed: the same code either way.
    env["PYTHONPATH"] = os.pathsep.join([str(source_root()), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    command = [sys.executable, "-m", "hpo", *(with_cwd(a, directory) for a in case.argv)]
    argv = ["sh", "-c", f'ulimit -v {MEMORY_LIMIT_KIB}; exec "$@"', "sh", *command]
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=seconds)
        outcome = Outcome(code=proc.returncode)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        outcome = Outcome(code=None, timed_out=True)
    outcome.stdout = out.decode("utf-8", "replace")
    outcome.stderr = err.decode("utf-8", "replace")
    outcome.seconds = time.monotonic() - start
    compare_snapshots(outcome, before, snapshot(directory))
    return outcome


# ---------------------------------------------------------------------------------------------
# Judging and the table


def stderr_lines(outcome: Outcome) -> list[str]:
    return [line for line in outcome.stderr.splitlines() if line.strip()]


def has_traceback(outcome: Outcome) -> bool:
    return outcome.crash is not None or "Traceback (most recent call last)" in outcome.stderr


def problems(outcome: Outcome) -> list[str]:
    """What ``outcome`` did that a refused bad input must not (empty: the case passed)."""
    found = []
    if outcome.crash is not None:
        last = outcome.crash.strip().splitlines()[-1]
        found.append(f"traceback ({last[:100]})")
    elif "Traceback (most recent call last)" in outcome.stderr:
        found.append("traceback on stderr")
    if outcome.stopped:
        found.append(f"accepted: went on to {outcome.stopped}")
    if outcome.timed_out:
        found.append("timed out")
    if outcome.code == 0:
        found.append("exit 0")
    elif outcome.code is not None and outcome.code != 2:
        found.append(f"exit {outcome.code}")
    lines = stderr_lines(outcome)
    if outcome.code is not None and not has_traceback(outcome):
        if len(lines) > 1 or (not lines and outcome.code != 0):  # exit 0 is failure enough
            found.append(f"{len(lines)} stderr lines")
        elif lines and outcome.code != 0 and not lines[0].startswith(PROG):
            found.append(f"stderr line does not start with {PROG!r}")
    if outcome.created:
        found.append("created " + ", ".join(outcome.created))
    if outcome.removed:
        found.append("removed " + ", ".join(outcome.removed))
    if outcome.changed:
        found.append("changed " + ", ".join(outcome.changed))
    return found


def exit_2_with_one_line(outcome: Outcome) -> bool:
    lines = stderr_lines(outcome)
    return (
        outcome.code == 2
        and not has_traceback(outcome)
        and len(lines) == 1
        and lines[0].startswith(PROG)
    )


def unlike_a_refusal_line(outcome: Outcome) -> bool:
    """Refused (exit other than 0) without a traceback, but with no stderr line, or one not
    from ``PROG``."""
    lines = stderr_lines(outcome)
    if outcome.code in (None, 0) or has_traceback(outcome):
        return False
    return not lines or (len(lines) == 1 and not lines[0].startswith(PROG))


ROWS: tuple[tuple[str, Callable[[Outcome], bool]], ...] = (
    ("exit 2 with one line", exit_2_with_one_line),
    ("tracebacks", has_traceback),
    (
        "other exit codes",
        lambda o: o.code is not None and o.code not in (0, 2) and not has_traceback(o),
    ),
    ("more than one stderr line", lambda o: len(stderr_lines(o)) > 1 and not has_traceback(o)),
    ("no stderr line, or one not 'python -m hpo ...'", unlike_a_refusal_line),
    ("silent fallbacks (exit 0 on a bad input)", lambda o: o.code == 0),
    ("accepted: went on to train/report/serve (guard)", lambda o: o.stopped is not None),
    ("timed out", lambda o: o.timed_out),
    ("files created by a refusal (or removed)", lambda o: bool(o.created or o.removed)),
    ("database bytes changed", lambda o: bool(o.changed)),
    ("passed every check", lambda o: not problems(o)),
)
"""The table's rows after "tried": a label and which outcomes it counts (a case can count in
several: a refusal that also left a lock file)."""


def one_line(text: str, limit: int = 160) -> str:
    text = json.dumps(text, ensure_ascii=False)[1:-1]
    return text if len(text) <= limit else text[:limit] + "..."


def shown_argv(argv: tuple[str, ...]) -> str:
    import shlex

    parts = []
    for a in argv:
        if len(a) > 40:
            a = a[:20] + f"...({len(a)} chars)"
        parts.append(shlex.quote(a) if a.isprintable() else "$" + shlex.quote(one_line(a, 60)))
    return "python -m hpo " + " ".join(parts)


def first_stderr_line(outcome: Outcome) -> str:
    if outcome.crash is not None:
        return "(exception) " + outcome.crash.strip().splitlines()[-1]
    lines = stderr_lines(outcome)
    return lines[0] if lines else "(nothing on stderr)"


def failure_class(case: Case, outcome: Outcome) -> str:
    """A case's category and problems without its details: what groups the summary."""
    kinds = []
    for problem in problems(outcome):
        if problem.startswith("traceback (") and outcome.crash:
            problem = "traceback " + outcome.crash.strip().splitlines()[-1].split(":")[0]
        kinds.append(problem)
    return f"[{case.category}] " + "; ".join(kinds)


def print_report(
    results: list[tuple[Case, Outcome]], *, mode: str, seconds: float, file=sys.stdout
) -> None:
    tried = [(c, o) for c, o in results if o.skipped is None]
    skipped = len(results) - len(tried)
    print(f"hpo input fuzz: {len(tried)} cases, {mode}, {seconds:.1f} s", file=file)
    width = max(len(label) for label, _ in ROWS)
    print(f"  {'tried':<{width}}  {len(tried):>5}", file=file)
    for label, counts in ROWS:
        print(f"  {label:<{width}}  {sum(counts(o) for _, o in tried):>5}", file=file)
    if skipped:
        print(f"  {'skipped (a NUL in argv)':<{width}}  {skipped:>5}", file=file)
    failing = [(c, o) for c, o in tried if problems(o)]
    print(f"\nfailing cases ({len(failing)}):", file=file)
    for case, outcome in failing:
        print(f"- {case.id}: {case.description}", file=file)
        print(f"    argv: {shown_argv(case.argv)}", file=file)
        if case.env:
            print(f"    env: {' '.join(f'{k}={v!r}' for k, v in case.env)}", file=file)
        code = "-" if outcome.code is None else outcome.code
        print(f"    exit {code}: {one_line(first_stderr_line(outcome))}", file=file)
        print(f"    problems: {'; '.join(problems(outcome))}", file=file)
    classes: dict[str, list[tuple[Case, Outcome]]] = {}
    for case, outcome in failing:
        classes.setdefault(failure_class(case, outcome), []).append((case, outcome))
    print(f"\nfailure classes ({len(classes)}):", file=file)
    for name, members in sorted(classes.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        case, outcome = members[0]
        print(f"- {len(members):>3} x {name}", file=file)
        print(f"    e.g. {shown_argv(case.argv)}  ({case.description})", file=file)
        print(f"    -> {one_line(first_stderr_line(outcome))}", file=file)


def survey(
    cases: list[Case], *, subprocesses: bool, seconds: float, jobs: int, keep: bool
) -> list[tuple[Case, Outcome]]:
    root = Path(tempfile.mkdtemp(prefix="hpo-fuzz-"))
    try:
        template_db = make_template_db(root / "template")
        directories = [root / f"case-{i:04d}" for i in range(len(cases))]
        if subprocesses:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                outcomes = list(
                    pool.map(
                        lambda pair: run_subprocess(pair[0], pair[1], template_db, seconds=seconds),
                        zip(cases, directories, strict=True),
                    )
                )
        else:
            outcomes = [
                run_in_process(case, directory, template_db, seconds=seconds)
                for case, directory in zip(cases, directories, strict=True)
            ]
        return list(zip(cases, outcomes, strict=True))
    finally:
        if keep:
            print(f"case directories kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.hpo.fuzz_inputs",
        description=textwrap.dedent(__doc__.split("\n\n")[0]),
    )
    parser.add_argument("--n", type=int, default=600, help="cases (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed (default 0)")
    parser.add_argument(
        "--subprocess",
        action="store_true",
        help="run each case as a python -m hpo process (unguarded, with --timeout)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds a case may take (default 60)"
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes at once (--subprocess)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the case directories")
    parser.add_argument("--only", metavar="TEXT", help="only the cases whose id contains TEXT")
    args = parser.parse_args(argv)
    cases = generate_cases(seed=args.seed, n=args.n)
    if args.only:
        cases = [c for c in cases if args.only in c.id]
    start = time.monotonic()
    results = survey(
        cases,
        subprocesses=args.subprocess,
        seconds=args.timeout,
        jobs=args.jobs,
        keep=args.keep,
    )
    mode = "one python -m hpo process each" if args.subprocess else "in process, guarded"
    print_report(results, mode=mode, seconds=time.monotonic() - start)
    return 0 if all(not problems(o) for _, o in results if o.skipped is None) else 1


if __name__ == "__main__":
    sys.exit(main())
