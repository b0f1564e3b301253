"""A kill at any instant loses nothing: a seeded storm of SIGKILLs of ``hpo run --workers 2``,
at instants spread over a run's whole life (imports, study creation, claims, training, tells,
sweeps, the report), then one resume: the exact target, nothing RUNNING, every killed trial
retried with its parameters (or failed after the retry limit), no parameter set finished twice,
and no process left behind.

Heartbeats run fast (a 3 s grace period), so the resume sweeps the killed runs' trials soon.
"""

import os
import random
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from hpo.heartbeat import FAIL_REASON_ATTR
from hpo.storage import MAX_STALE_TRIAL_RETRIES, close_storages, open_storage

KILLS = 32
TARGET = 40
STORM_SEED = 24
FAST_HEARTBEAT = {"HPO_HEARTBEAT_INTERVAL": "1", "HPO_GRACE_PERIOD": "3"}


SLEEPY_NET = """
import time

import numpy as np


class Sleepy:
    def __init__(self, input_size, output_size, x=0.0):
        self.params = {"W": np.zeros((input_size, output_size))}

    def predict(self, x):
        return x @ self.params["W"]

    def gradient(self, x, t):
        time.sleep(0.03)
        return {"W": np.zeros_like(self.params["W"])}
"""

STORM_SPEC = """
[study]
name = "tiny"
[data]
dataset = "digits"
train_size = 200
[model]
network = "sleepy.py:Sleepy"
[training]
epochs = 4
batch_size = 40
[search]
sampler = "random"
pruner = "none"
trials = {trials}
[space]
learning_rate = {{ low = 1e-3, high = 1e-1, log = true }}
model.args.x = {{ low = 0.0, high = 1.0 }}
"""


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_a_storm_of_sigkills_loses_no_trial_and_repeats_no_parameter_set(tmp_path):
    # Trials of wall time, not CPU: a learner's net whose step sleeps (0.5 s a trial), so that
    # the storm hits trials in flight on an idle machine as on a busy one.
    (tmp_path / "sleepy.py").write_text(SLEEPY_NET)
    spec = tmp_path / "storm.toml"
    spec.write_text(STORM_SPEC.format(trials=TARGET))
    url = f"sqlite:///{tmp_path / 'storm.db'}"
    argv = [sys.executable, "-m", "hpo", "run", str(spec), "--storage", url, "--workers", "2"]
    env = {**os.environ, **FAST_HEARTBEAT}
    rng = random.Random(STORM_SEED)
    groups = []
    for cycle in range(KILLS):
        flags = ["--quiet"] if cycle % 4 == 0 else ["--quiet", "--no-report"]
        proc = subprocess.Popen(
            [*argv, *flags],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own group: what is left of it can be found
        )
        groups.append(proc.pid)
        time.sleep(rng.uniform(0.0, 4.0))  # imports take ~1 s; a cycle finishes a few trials
        proc.kill()
        proc.wait()

    resumed = subprocess.run(
        [*argv, "--quiet", "--no-report"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    deadline = time.monotonic() + 60  # the workers die with their parent, a moment later
    while [g for g in groups if group_alive(g)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [g for g in groups if group_alive(g)]

    trials = optuna.load_study(study_name="tiny", storage=open_storage(url, write=False))
    trials = trials.get_trials()
    close_storages()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == TARGET
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    params = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(params)) == len(params)  # no parameter set finished twice
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    for t in trials:
        if t.state == TrialState.FAIL and FAIL_REASON_ATTR not in t.system_attrs:
            tries = len(t.system_attrs.get("retry_history", ())) + 1
            assert t.number in retried or tries > MAX_STALE_TRIAL_RETRIES, t.number
    for t in trials:
        history = t.system_attrs.get("retry_history")
        if history and t.params:  # a retry runs with the parameters of the trial it retries
            original = next(o for o in trials if o.number == history[0])
            assert not original.params or t.params == original.params
    killed = sum(t.state == TrialState.FAIL for t in trials)
    assert killed >= 1  # the storm did hit trials in flight
