"""Adversarial inputs through ``hpo.cli.main``, in process: every bad one is refused cleanly.

The cases come from ``tests.hpo.fuzz_inputs`` (seeded: the same seed, the same cases). Each runs
in a fresh directory holding a copy of a real small hpo database and a valid tiny spec, and must
exit 2 with exactly one stderr line ``python -m hpo COMMAND: error: ...``, raise nothing, leave
the directory's listing as it was (hidden files included: no ``hpo.db.hpo-lock``, ``-wal``,
``-shm`` or report) and the database's bytes unchanged. A case that gets as far as training,
a report or the dashboard is stopped there by the harness's guards and fails as "accepted".

Then the other side: random valid tiny specs (some with a UTF-8 BOM) are accepted and each
runs exactly one finished trial.
"""

import os

import optuna
import pytest
from optuna.trial import TrialState

from hpo.cli import main
from hpo.spec import load_spec
from tests.hpo import fuzz_inputs as fuzz

SEED = int(os.environ.get("FUZZ_SEED", "0"))
N_CASES = int(os.environ.get("FUZZ_CASES", "600"))  # 1572 covers every generated case
CASES = fuzz.generate_cases(seed=SEED, n=N_CASES)
ACCEPTED = fuzz.accepted_specs(seed=SEED, n=8)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    """The database every case gets a copy of (studies fuzz and fuzz-b, two trials each)."""
    return fuzz.make_template_db(tmp_path_factory.mktemp("fuzz-template"))


@pytest.fixture
def hpo_environment_unset(monkeypatch):
    for name in fuzz.HPO_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_the_specs_the_cases_change_are_valid(tmp_path):
    # Each spec case changes one thing in the probe: the change alone must be the defect.
    for name, text in (("probe.toml", fuzz.render(fuzz.PROBE)), ("tiny.toml", fuzz.TINY_SPEC)):
        (tmp_path / name).write_text(text, encoding="utf-8")
        load_spec(str(tmp_path / name))


def test_the_same_seed_gives_the_same_cases():
    assert fuzz.generate_cases(seed=SEED, n=N_CASES) == CASES
    assert len({case.id for case in CASES}) == len(CASES) >= min(500, N_CASES)
    assert {case.description for case in CASES} >= fuzz.CORE


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_input_exits_2_with_one_line_and_changes_nothing(
    case, template_db, tmp_path, monkeypatch, capsys, hpo_environment_unset
):
    fuzz.materialize(case, tmp_path, template_db)
    before = fuzz.snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    for name, value in case.env:
        monkeypatch.setenv(name, fuzz.with_cwd(value, tmp_path))
    for owner, name, replacement in fuzz.guard_patches():
        monkeypatch.setattr(owner, name, replacement)
    capsys.readouterr()

    outcome = fuzz.call_main([fuzz.with_cwd(a, tmp_path) for a in case.argv], seconds=20)

    outcome.stdout, outcome.stderr = capsys.readouterr()
    fuzz.compare_snapshots(outcome, before, fuzz.snapshot(tmp_path))
    found = fuzz.problems(outcome)
    assert not found, (
        f"{case.description}\n  argv: {fuzz.shown_argv(case.argv)}\n  exit "
        f"{outcome.code}: {fuzz.one_line(fuzz.first_stderr_line(outcome))}\n  problems: "
        + "; ".join(found)
        + (f"\n{outcome.crash}" if outcome.crash else "")
    )


@pytest.mark.parametrize("accepted", ACCEPTED, ids=[a.id for a in ACCEPTED])
def test_an_accepted_tiny_spec_runs_exactly_one_finished_trial(
    accepted, tmp_path, monkeypatch, capsys, hpo_environment_unset
):
    (tmp_path / "spec.toml").write_bytes(accepted.data)
    monkeypatch.chdir(tmp_path)

    code = main(["run", "spec.toml", "--trials", "1", "--no-report", "--quiet", "--in-process"])

    err = capsys.readouterr().err
    assert code == 0, f"{err}\n{accepted.data.decode('utf-8', 'replace')}"
    study = optuna.load_study(study_name=accepted.study_name, storage="sqlite:///hpo.db")
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert len(states) == 1 and states[0] in (TrialState.COMPLETE, TrialState.PRUNED), states
