"""hpo, trainer and reports use Optuna through its public API only (STYLE.md, point 13).

The sources are parsed, not imported: a private name is caught wherever it is written, also in
code that no test runs. A name is private when it starts with ``_`` and is not a dunder. Private
modules and names are checked in imports from optuna (and optuna-dashboard); private attributes
on any object but the class's own, whatever package the object comes from.
"""

import ast
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hpo", "trainer", "reports")

OWN_OBJECTS = {"self", "cls", "super()"}
"""Whose private attributes a class may use: its own and its bases' (its own code)."""
ALLOWED_PRIVATE_ATTRIBUTES = {
    # The documented way out of a worker or a second Ctrl-C without running atexit handlers,
    # flushing inherited buffers or joining threads (the os module documents it).
    "os._exit",
}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def parsed(*packages: str) -> list[tuple[ast.Module, str]]:
    """Each source file of ``packages``, parsed, with its path from the repository's root."""
    files = [f for p in packages for f in sorted((ROOT / p).rglob("*.py"))]
    assert files, f"no sources under {ROOT}"
    return [(ast.parse(f.read_text(encoding="utf-8")), str(f.relative_to(ROOT))) for f in files]


def in_source_order(tree: ast.Module) -> list[ast.AST]:
    located = [n for n in ast.walk(tree) if hasattr(n, "lineno")]
    return sorted(located, key=lambda n: (n.lineno, n.col_offset))


def private_optuna_imports(tree: ast.Module, name: str) -> list[str]:
    """``import optuna._x``, ``from optuna.storages._rdb import ...``, ``from optuna import _x``
    (optuna-dashboard's modules too)."""
    found = []
    for node in in_source_order(tree):
        if isinstance(node, ast.Import):
            modules, names = [alias.name for alias in node.names], []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules, names = [node.module], [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if not parts[0].startswith("optuna"):
                continue
            if any(is_private(p) for p in [*parts, *names]):
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def private_attribute_uses(tree: ast.Module, name: str) -> list[str]:
    """``x._name`` on anything but the class's own objects, and ``getattr(x, "_name")``."""
    found = []
    for node in in_source_order(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = ast.unparse(node.value)
            text = f"{owner}.{node.attr}"
            if owner not in OWN_OBJECTS and text not in ALLOWED_PRIVATE_ATTRIBUTES:
                found.append(f"{name}:{node.lineno}: {text}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
        ):
            found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def private_base_classes(tree: ast.Module, name: str) -> list[str]:
    found = []
    for node in in_source_order(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                base_name = ast.unparse(base).split("[")[0]  # Generic[T] is named Generic
                if is_private(base_name.split(".")[-1]):
                    found.append(f"{name}:{node.lineno}: class {node.name}({ast.unparse(base)})")
    return found


def test_no_module_imports_optunas_private_modules_or_names():
    found = [hit for tree, name in parsed(*PACKAGES) for hit in private_optuna_imports(tree, name)]
    assert found == []


def test_no_module_reads_a_private_attribute_of_another_object():
    found = [hit for tree, name in parsed(*PACKAGES) for hit in private_attribute_uses(tree, name)]
    assert found == []


def test_no_hpo_class_subclasses_a_private_class():
    found = [hit for tree, name in parsed("hpo") for hit in private_base_classes(tree, name)]
    assert found == []


BAD = """\
import optuna.storages._rdb.models
from optuna.pruners._percentile import _get_percentile_intermediate_result_over_trials
from optuna import _imports
class Cached(optuna.storages._CachedStorage):
    def f(self, study, trial):
        self._own = study._study_id + getattr(trial, "_trial_id") + super()._base()
        return os._exit, sys._getframe, self.__dict__
"""


def test_the_checks_catch_each_kind_of_private_use():
    tree = ast.parse(BAD)
    assert private_optuna_imports(tree, "bad.py") == [
        "bad.py:1: import optuna.storages._rdb.models",
        "bad.py:2: from optuna.pruners._percentile import "
        "_get_percentile_intermediate_result_over_trials",
        "bad.py:3: from optuna import _imports",
    ]
    assert private_attribute_uses(tree, "bad.py") == [
        "bad.py:4: optuna.storages._CachedStorage",
        "bad.py:6: study._study_id",
        "bad.py:6: getattr(trial, '_trial_id')",
        "bad.py:7: sys._getframe",
    ]
    assert private_base_classes(tree, "bad.py") == [
        "bad.py:4: class Cached(optuna.storages._CachedStorage)"
    ]


def test_pyproject_pins_optuna_to_major_version_5():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = [Requirement(d) for d in project["dependencies"] if Requirement(d).name == "optuna"]
    assert len(pins) == 1, project["dependencies"]
    allowed = pins[0].specifier
    assert version("optuna") in allowed  # the installed one
    for outside in ("4.9.9", "6.0", "6.0.1", "7.0"):
        assert outside not in allowed, f"{pins[0]} admits optuna {outside}"
