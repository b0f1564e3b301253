"""hpo's Python API: a notebook user's session from run to report, and scripts with and without
a ``__main__`` guard."""

import subprocess
import sys
import textwrap

import numpy as np
import optuna
import pytest

import hpo
from hpo.errors import RunError, UsageError
from tests.hpo.conftest import write_spec


@pytest.mark.slow
def test_a_notebook_session_runs_reads_retrains_and_reports(tmp_path):
    spec = write_spec(tmp_path / "tiny.toml", trials=4)
    storage = f"sqlite:///{tmp_path / 'nb.db'}"

    study = hpo.run(str(spec), storage=storage)
    assert isinstance(study, optuna.Study) and len(study.trials) == 4
    best = hpo.best(study)
    assert best["trial"] == study.best_trial.number and best["value"] == study.best_value

    run = hpo.configuration(study)
    assert dict(run.training.hyperparameters)["learning_rate"] == best["params"]["learning_rate"]
    net, result = hpo.retrain(study)
    stored = study.best_trial.user_attrs["run"]["curves"]["val_accuracy"]
    assert result.history.val_accuracy == stored  # bit for bit
    assert net.predict(np.zeros((2, 64), dtype=np.float32)).shape == (2, 10)

    path = hpo.make_report(study, tmp_path / "r.html")
    assert path.read_text().rstrip().endswith("</html>")

    again = hpo.run(str(spec), storage=storage, trials=6)  # resumes to the larger target
    assert len(again.trials) == 6
    assert hpo.load("tiny", storage=storage).best_value == again.best_value
    assert hpo.spec_of(again).name == "tiny"


def test_a_pruned_trial_retrains_to_where_it_was_pruned(tmp_path):
    spec = write_spec(tmp_path / "tiny.toml", trials=10, epochs=4)
    study = hpo.run(str(spec), storage=f"sqlite:///{tmp_path / 'p.db'}", workers=1)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    if not pruned:
        pytest.skip("this seed pruned no trial")
    t = pruned[0]
    _, result = hpo.retrain(study, t.number)
    assert result.history.val_accuracy == t.user_attrs["run"]["curves"]["val_accuracy"]


def test_bad_input_raises_one_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such packaged spec"):
        hpo.run("nope", storage=f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(UsageError, match="no such database file"):
        hpo.load("ghost", storage=f"sqlite:///{tmp_path / 'x.db'}")
    study = optuna.create_study()
    with pytest.raises(RunError, match=r"was not opened by hpo\.run or hpo\.load"):
        hpo.make_report(study)


SCRIPT = """
import hpo
study = hpo.run({spec!r}, storage="sqlite:///s.db", workers={workers})
print("best", hpo.best(study)["value"])
"""


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_script_without_a_main_guard(tmp_path, workers):
    spec = write_spec(tmp_path / "tiny.toml", trials=2, epochs=1)
    script = tmp_path / "tune.py"
    script.write_text(textwrap.dedent(SCRIPT.format(spec=str(spec), workers=workers)))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    if workers == 1:  # trains in the script's own process: nothing to guard
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("best ")
    else:
        assert done.returncode == 1
        last = done.stderr.strip().splitlines()[-1]
        assert 'has no if __name__ == "__main__": guard' in last
        assert done.stderr.count("Traceback") == 1  # the script's own, not one per worker


TERMINATED = """
import os, signal, threading
import hpo
hpo.run({spec!r}, storage="sqlite:///s.db", trials=1)  # everything imported and loaded
threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
hpo.run({spec!r}, storage="sqlite:///s.db", trials=100_000)
print("not reached")
"""


@pytest.mark.slow
def test_a_sigterm_during_a_run_keeps_the_trials_and_ends_the_script_as_sigterm_does(tmp_path):
    spec = write_spec(tmp_path / "tiny.toml", epochs=2)
    script = tmp_path / "tune.py"
    script.write_text(textwrap.dedent(TERMINATED.format(spec=str(spec))))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == -15, done.stderr  # as a shell sees it: 143, not Ctrl-C's 130
    assert "not reached" not in done.stdout and "Traceback" not in done.stderr
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 's.db'}")
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) > 1
    assert optuna.trial.TrialState.RUNNING not in states


def test_importing_hpo_imports_neither_optuna_nor_the_api():
    code = "import sys, hpo; print('optuna' in sys.modules, 'hpo.api' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "False"]


def test_a_second_interrupt_in_a_python_session_raises_instead_of_ending_the_process():
    import signal

    from hpo.api import _session
    from hpo.interrupts import INTERRUPTS

    with _session():
        assert not INTERRUPTS.exit_on_second
        INTERRUPTS._on_signal(signal.SIGINT, None)  # the first: recorded, stops at a safe point
        with pytest.raises(KeyboardInterrupt):
            INTERRUPTS._on_signal(signal.SIGINT, None)  # the second: raises, no os._exit
    assert INTERRUPTS.exit_on_second and not INTERRUPTS.installed
