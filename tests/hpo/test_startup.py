"""The light commands start light: each runs in a fresh interpreter, which then reports what it
imported. ``--help`` and ``specs`` import no optuna; ``studies`` and ``best`` no matplotlib,
scikit-learn or optuna-dashboard (the report's and the dashboard's packages), nor the trainer and
the executors (running trials)."""

import json
import subprocess
import sys

import pytest

from hpo.cli import main
from tests.hpo.conftest import write_spec

HEAVY = ("matplotlib", "sklearn", "optuna_dashboard")
RUNNING = ("trainer.training", "trainer.datasets", "hpo.executors", "hpo.runner", "multiprocessing")
"""What only running trials needs: the reading commands leave it out (the spec reads the names
of the net's parts from trainer.network, which stays)."""

RUN_AND_LIST_MODULES = """
import json, sys
from hpo.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as e:  # --help
    code = e.code
watched = json.loads(sys.argv[2])
with open(sys.argv[3], "w") as f:
    json.dump({"code": code, "loaded": [m for m in watched if m in sys.modules]}, f)
"""


def modules_loaded_by(argv: list[str], tmp_path, watched=(*HEAVY, "optuna")) -> list[str]:
    """Run ``main(argv)`` in a new interpreter; which of ``watched`` it imported."""
    out = tmp_path / "loaded.json"
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, json.dumps(argv), json.dumps(watched), out],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["code"] in (0, None), (result, done.stderr)
    return result["loaded"]


@pytest.fixture(scope="module")
def study_url(tmp_path_factory) -> str:
    """A small finished SQLite study."""
    directory = tmp_path_factory.mktemp("startup")
    spec = write_spec(directory / "tiny.toml", epochs=2, trials=3)
    url = f"sqlite:///{directory / 'studies.db'}"
    argv = ["run", str(spec), "--storage", url, "--no-report", "--quiet", "--in-process"]
    assert main(argv) == 0
    return url


def test_help_imports_neither_optuna_nor_the_report_or_dashboard_packages(tmp_path):
    assert modules_loaded_by(["--help"], tmp_path) == []


def test_specs_imports_neither_optuna_nor_the_report_or_dashboard_packages(tmp_path):
    assert modules_loaded_by(["specs"], tmp_path) == []


def test_studies_imports_neither_the_report_nor_the_dashboard_nor_the_trainer(study_url, tmp_path):
    argv = ["studies", "--storage", study_url]
    assert modules_loaded_by(argv, tmp_path, (*HEAVY, *RUNNING)) == []


def test_best_json_imports_neither_the_report_nor_the_dashboard_nor_the_trainer(
    study_url, tmp_path
):
    argv = ["best", "--storage", study_url, "--json"]
    assert modules_loaded_by(argv, tmp_path, (*HEAVY, *RUNNING)) == []


def test_best_of_a_study_never_confirmed_stays_light(study_url, tmp_path):
    argv = ["best", "--storage", study_url]  # it looks for a confirmation, finds none
    assert modules_loaded_by(argv, tmp_path, (*HEAVY, *RUNNING, "hpo.confirm")) == []


def test_the_probe_sees_what_a_command_imports(study_url, tmp_path):
    assert modules_loaded_by(["studies", "--storage", study_url], tmp_path, ("optuna",)) == [
        "optuna"
    ]
