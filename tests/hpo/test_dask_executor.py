"""The Dask executor: trials as tasks on a real cluster of worker processes.

One ``distributed.LocalCluster`` of two single-threaded worker processes serves the module (it
starts in about a second); the tests that kill a worker or the scheduler start their own, and
those with a ``dask scheduler`` and ``dask worker`` processes of their own are marked slow.
"""

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import optuna
import pytest

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
import dask  # noqa: E402 - distributed brings it

import hpo.dask_executor as dask_executor  # noqa: E402 - after the importorskip
from hpo.cli import main  # noqa: E402
from hpo.dask_executor import (  # noqa: E402
    DaskExecutor,
    NoDaskWorkers,
    SchedulerUnreachable,
    _stop_poller,
    train_on_worker,
    worker_split,
)
from hpo.errors import UsageError  # noqa: E402
from hpo.executors import TrialFailed, WorkerLost  # noqa: E402
from hpo.service import run_study  # noqa: E402
from hpo.spec import load_spec, spec_from_dict  # noqa: E402
from hpo.trial import (  # noqa: E402
    INTERRUPTED,
    load_study_split,
    run_task,
)
from tests.hpo.conftest import write_spec  # noqa: E402
from tests.hpo.test_executors import (  # noqa: E402
    RESULT_TIMEOUT,
    Exploding,
    Sleepy,
    started_events,
    task,
    without_timings,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def local_cluster(**options) -> "distributed.LocalCluster":
    return distributed.LocalCluster(
        n_workers=options.pop("n_workers", 2),
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.CRITICAL,
        **options,
    )


@pytest.fixture(scope="module")
def cluster():
    with local_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def spec_and_split(tmp_path_factory):
    spec = load_spec(str(write_spec(tmp_path_factory.mktemp("spec") / "tiny.toml")))
    return spec, load_study_split(spec)


@pytest.fixture
def executor(cluster, spec_and_split):
    executor = DaskExecutor(*spec_and_split, address=cluster.scheduler_address, label="test")
    yield executor
    executor.shutdown(cancel=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trial_states(url: str, name: str = "tiny") -> list[str]:
    study = optuna.load_study(study_name=name, storage=url)
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def finished_params(url: str, name: str = "tiny") -> list[tuple]:
    study = optuna.load_study(study_name=name, storage=url)
    return [
        tuple(sorted(t.params.items()))
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and t.state.name != "FAIL"
    ]


# ---------------------------------------------------------------------------------------------
# Trials on the cluster


def test_a_task_on_the_cluster_returns_what_run_task_returns_here(executor, spec_and_split):
    spec, split = spec_and_split
    t = task(spec, 3)
    result = executor.submit(t).result(timeout=RESULT_TIMEOUT)
    assert without_timings(result) == without_timings(run_task(t, spec, split))


def test_the_task_before_start_returns_is_the_one_that_trains(executor, spec_and_split):
    spec, split = spec_and_split
    replaced = task(spec, 1, learning_rate=0.01)
    result = executor.submit(task(spec, 1), before_start=lambda _: replaced).result(
        timeout=RESULT_TIMEOUT
    )
    assert without_timings(result) == without_timings(run_task(replaced, spec, split))


def test_the_slots_are_the_cluster_threads_unless_workers_says_otherwise(cluster, spec_and_split):
    slots = []
    for workers in (None, 3):
        e = DaskExecutor(*spec_and_split, address=cluster.scheduler_address, workers=workers)
        slots.append(e.slots)
        e.shutdown()
    assert slots == [2, 3]


@pytest.mark.slow
def test_tasks_beyond_the_slots_wait_here_and_each_leaves_the_queue_once(cluster, spec_and_split):
    spec, _ = spec_and_split
    e = DaskExecutor(spec, spec_and_split[1], address=cluster.scheduler_address, workers=1)
    try:
        events, before_start = started_events(3)
        futures = [
            e.submit(task(spec, n, thresholds=Sleepy(0.3)), before_start=before_start)
            for n in range(3)
        ]
        assert events[0].wait(RESULT_TIMEOUT)
        assert not events[1].is_set() and not events[2].is_set()  # one slot: one at a time
        results = [f.result(timeout=RESULT_TIMEOUT) for f in futures]
        assert [r.number for r in results] == [0, 1, 2]
        assert all(ev.is_set() for ev in events)
    finally:
        e.shutdown(cancel=True)


def test_a_raising_trial_fails_with_trial_failed_and_its_last_traceback_line(
    executor, spec_and_split
):
    spec, _ = spec_and_split
    future = executor.submit(task(spec, 0, thresholds=Exploding()))
    with pytest.raises(TrialFailed, match="ValueError: thresholds exploded at epoch 1"):
        future.result(timeout=RESULT_TIMEOUT)
    # The worker is still there for the next trial.
    assert executor.submit(task(spec, 1)).result(timeout=RESULT_TIMEOUT).state == "complete"


def test_a_study_on_the_cluster_reaches_its_target_exactly_and_prunes(cluster, tmp_path):
    spec = load_spec(str(write_spec(tmp_path / "tiny.toml", trials=12, epochs=4)))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    summary = run_study(spec, storage_url=url, dask=cluster.scheduler_address)
    states = trial_states(url)
    assert summary.counts.finished == 12
    assert sorted(set(states)) <= ["COMPLETE", "PRUNED"] and len(states) == 12
    assert "PRUNED" in states  # the median rule pruned with the thresholds it was given
    params = finished_params(url)
    assert len(set(params)) == len(params)


def test_the_same_spec_and_seed_give_the_same_trials_on_the_cluster_as_here(cluster, tmp_path):
    spec = load_spec(str(write_spec(tmp_path / "tiny.toml", trials=4)))
    here, there = f"sqlite:///{tmp_path / 'here.db'}", f"sqlite:///{tmp_path / 'there.db'}"
    run_study(spec, storage_url=here, workers=1)
    run_study(spec, storage_url=there, dask=cluster.scheduler_address, workers=1)

    def trials(url):
        study = optuna.load_study(study_name="tiny", storage=url)
        return [(t.params, t.intermediate_values, t.value) for t in study.trials]

    assert trials(there) == trials(here)


def test_a_learner_net_trains_on_the_cluster_as_here_bit_for_bit(cluster, tmp_path):
    """A cs231n-shaped net draws its weights from NumPy's global state: seeded per trial, on
    every worker, with the trials of one worker process one at a time."""
    from tests.hpo.test_own_network import copy_net, own_spec

    copy_net(tmp_path, "cs231n_net.py")
    spec = load_spec(
        str(own_spec(tmp_path, "cs231n_net.py:TwoLayerNet", args="hidden_dim = 20", trials=4))
    )
    here, there = f"sqlite:///{tmp_path / 'here.db'}", f"sqlite:///{tmp_path / 'there.db'}"
    run_study(spec, storage_url=here, workers=1)
    run_study(spec, storage_url=there, dask=cluster.scheduler_address)

    def trials(url):
        study = optuna.load_study(study_name="own", storage=url)
        return sorted((t.number, t.intermediate_values, t.value) for t in study.trials)

    assert trials(there) == trials(here)


def test_the_cli_runs_a_study_on_the_cluster_given_by_hpo_dask(
    cluster, tmp_path, monkeypatch, capsys
):
    spec = write_spec(tmp_path / "tiny.toml", trials=4)
    monkeypatch.setenv("HPO_DASK", cluster.scheduler_address)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    code = main(["run", str(spec), "--storage", url, "--quiet", "--no-report"])
    assert code == 0, capsys.readouterr().err
    assert trial_states(url) == ["COMPLETE"] * len(trial_states(url))
    assert "4 finished" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Refused at start: nothing stored


def test_an_unreachable_scheduler_is_one_line_naming_it_and_stores_nothing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(dask_executor, "CONNECT_SECONDS", 1.0)
    spec = write_spec(tmp_path / "tiny.toml")
    address = f"tcp://127.0.0.1:{free_port()}"
    code = main(["run", str(spec), "--storage", f"sqlite:///{tmp_path / 'db'}", "--dask", address])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert f"cannot reach a Dask scheduler at {address}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def test_a_port_where_another_protocol_answers_is_refused_in_one_line(tmp_path, capsys):
    # An SSH server greets first; Dask's client read that as a 3 EiB message length.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"

        def greet() -> None:
            with contextlib.suppress(OSError):
                connection, _ = server.accept()
                with connection:
                    connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                    connection.recv(1)

        threading.Thread(target=greet, daemon=True).start()
        spec = write_spec(tmp_path / "tiny.toml")
        argv = ["run", str(spec), "--storage", f"sqlite:///{tmp_path / 'db'}", "--dask", address]
        code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        f"python -m hpo run: error: --dask: {address} is not a Dask scheduler (another protocol "
        "answers there: 'SSH-2.0-OpenSSH_9.6'; allowed: the address a running `dask scheduler` "
        "prints, e.g. tcp://HOST:8786)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def test_a_port_that_accepts_but_never_answers_is_refused_at_the_deadline(monkeypatch):
    monkeypatch.setattr(dask_executor, "CONNECT_SECONDS", 0.5)
    monkeypatch.setattr(dask_executor, "CLOSE_SECONDS", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(SchedulerUnreachable, match="no answer"):
            dask_executor.connect(address, timeout=0.5)


def test_a_scheduler_without_workers_is_refused(spec_and_split, monkeypatch):
    monkeypatch.setattr(dask_executor, "WORKER_WAIT_SECONDS", 0.5)
    with local_cluster(n_workers=0) as empty, pytest.raises(NoDaskWorkers, match="no worker"):
        DaskExecutor(*spec_and_split, address=empty.scheduler_address)


def test_a_worker_that_lacks_the_spec_file_is_named_with_the_path(cluster, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x=rng.normal(size=(300, 4)), y=np.arange(300) % 3)
    raw = load_spec(str(write_spec(tmp_path / "tiny.toml"))).to_dict()
    raw["data"] = {"dataset": f"npz:{path}", "train_size": 150}
    spec = spec_from_dict(raw, source="mine.toml", default_name="mine")
    split = load_study_split(spec)
    path.unlink()  # as on a worker without the file
    with pytest.raises(UsageError) as refused:
        DaskExecutor(spec, split, address=cluster.scheduler_address)
    message = str(refused.value)
    assert "Dask worker tcp://127.0.0.1:" in message and str(path) in message
    assert "no such file" in message


def test_a_worker_whose_split_differs_is_refused(cluster, spec_and_split):
    spec, _ = spec_and_split
    other = load_study_split(load_spec("default"))  # another split than the spec's
    with pytest.raises(UsageError, match="differs from the orchestrator's"):
        DaskExecutor(spec, other, address=cluster.scheduler_address)


def test_a_net_too_big_for_a_workers_memory_limit_is_refused_before_the_study(
    tmp_path, monkeypatch
):
    # This machine's memory is not the one that counts: the workers' limits are.
    monkeypatch.setattr("hpo.service.available_memory", lambda: 1)
    text = write_spec(tmp_path / "big.toml").read_text()
    (tmp_path / "big.toml").write_text(text.replace("hidden = [16]", "hidden = [6000, 6000]"))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with local_cluster(n_workers=1, memory_limit="400MB") as small:
        spec = load_spec(str(tmp_path / "big.toml"))
        with pytest.raises(UsageError, match=r"model.hidden: .* Dask worker tcp://.* may use"):
            run_study(spec, storage_url=url, dask=small.scheduler_address)
    assert not (tmp_path / "db.sqlite").exists()


def test_hpo_worker_joins_a_study_with_its_trials_on_the_cluster(cluster, tmp_path, capsys):
    spec = write_spec(tmp_path / "tiny.toml", trials=4)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(spec), "--storage", url, "--create-only"]) == 0
    code = main(
        ["worker", "--study", "tiny", "--storage", url, "--dask", cluster.scheduler_address,
         "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert trial_states(url).count("COMPLETE") + trial_states(url).count("PRUNED") == 4


def test_in_process_and_dask_together_are_refused(tmp_path, capsys):
    spec = write_spec(tmp_path / "tiny.toml")
    code = main(["run", str(spec), "--in-process", "--dask", "tcp://127.0.0.1:8786"])
    assert code == 2
    assert "--in-process and --dask: one or the other" in capsys.readouterr().err


def test_a_malformed_address_is_refused_before_connecting(tmp_path, capsys):
    code = main(["run", str(write_spec(tmp_path / "tiny.toml")), "--dask", "tcp://a b:1"])
    assert code == 2
    assert "--dask: 'tcp://a b:1' (allowed: tcp://HOST:PORT" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# On the worker


def test_a_worker_computes_the_split_once_and_checks_its_digest(spec_and_split, monkeypatch):
    spec, split = spec_and_split
    calls = []
    real = type(spec.data).load
    monkeypatch.setattr(type(spec.data), "load", lambda d: calls.append(1) or real(d))
    monkeypatch.setattr(dask_executor, "_splits", type(dask_executor._splits)())
    first = worker_split(spec, split.digest())
    assert worker_split(spec, split.digest()) is first
    assert len(calls) == 1
    with pytest.raises(dask_executor.WorkerDataError, match="differs"):
        worker_split(spec, "0" * 64)


def test_a_task_stops_between_steps_once_the_stop_event_is_set(
    cluster, spec_and_split, monkeypatch
):
    monkeypatch.setattr(dask_executor, "STOP_POLL_SECONDS", 0.0)
    spec, split = spec_and_split
    # As the default client here, it is the one a task's Event finds (a worker's, on a worker).
    with distributed.Client(cluster.scheduler_address) as client:
        event = distributed.Event("hpo-test-stop", client=client)
        event.set()
        result = train_on_worker(task(spec, 0), spec, split.digest(), "hpo-test-stop")
        event.clear()
    assert result.state == INTERRUPTED


def test_the_stop_poller_asks_at_most_once_a_period(cluster, monkeypatch):
    monkeypatch.setattr(dask_executor, "STOP_POLL_SECONDS", 3600.0)
    with distributed.Client(cluster.scheduler_address) as client:
        event = distributed.Event("hpo-test-poll", client=client)
        should_stop = _stop_poller("hpo-test-poll")
        event.set()
        assert should_stop() is False  # not asked again within the period
        event.clear()


# ---------------------------------------------------------------------------------------------
# Faults and stopping


def test_shutdown_with_cancel_stops_a_running_trial_and_frees_its_worker(cluster, tmp_path):
    # A trial of 2,000 epochs, each made to last 50 ms: it would train for minutes.
    spec = load_spec(str(write_spec(tmp_path / "long.toml", epochs=2000)))
    e = DaskExecutor(spec, load_study_split(spec), address=cluster.scheduler_address)
    events, before_start = started_events(2)
    futures = [
        e.submit(task(spec, n, thresholds=Sleepy(0.05)), before_start=before_start)
        for n in range(2)
    ]
    assert events[0].wait(RESULT_TIMEOUT) and events[1].wait(RESULT_TIMEOUT)
    time.sleep(1.0)  # both trials are training
    e.shutdown(cancel=True)
    for f in futures:
        with pytest.raises(WorkerLost, match="stopped by the shutdown"):
            f.result(timeout=1)
    # Both single-threaded workers are free again within seconds, not minutes: the trials
    # stopped (a cancelled task that ran on would hold its worker's one thread).
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        done = [client.submit(os.getpid, workers=[w], pure=False) for w in client.nthreads()]
        assert len(client.gather(done)) == 2


@pytest.mark.slow
def test_a_killed_worker_reruns_its_trial_elsewhere(spec_and_split):
    spec, _ = spec_and_split
    with local_cluster() as own:
        e = DaskExecutor(*spec_and_split, address=own.scheduler_address, label="kill")
        try:
            events, before_start = started_events(1)
            future = e.submit(task(spec, 0, thresholds=Sleepy(0.2)), before_start=before_start)
            assert events[0].wait(RESULT_TIMEOUT)
            with distributed.Client(own.scheduler_address, set_as_default=False) as client:
                busy = _worker_running(client, timeout=RESULT_TIMEOUT)
                os.kill(client.run(os.getpid)[busy], signal.SIGKILL)
            result = future.result(timeout=RESULT_TIMEOUT)
            assert result.state == "complete"
        finally:
            e.shutdown(cancel=True)


def _worker_running(client, *, timeout: float) -> str:
    """The address of the worker that is running a task, once one is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for address, keys in client.processing().items():
            if keys:
                return address
        time.sleep(0.05)
    raise AssertionError("no worker started the task")


@pytest.mark.slow
def test_killed_worker_after_the_allowed_failures_fails_the_trial(spec_and_split):
    spec, _ = spec_and_split
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        local_cluster() as own,
    ):
        e = DaskExecutor(*spec_and_split, address=own.scheduler_address, label="killed")
        try:
            future = e.submit(task(spec, 0, thresholds=Sleepy(0.5)))
            with distributed.Client(own.scheduler_address, set_as_default=False) as client:
                busy = _worker_running(client, timeout=RESULT_TIMEOUT)
                os.kill(client.run(os.getpid)[busy], signal.SIGKILL)
            with pytest.raises(TrialFailed, match="every Dask worker that ran trial #0 died"):
                future.result(timeout=RESULT_TIMEOUT)
        finally:
            e.shutdown(cancel=True)


# ---------------------------------------------------------------------------------------------
# A cluster of its own processes: `dask scheduler` and `dask worker`, as a user starts them


class DaskProcesses:
    """A ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, stopped at exit."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path, self.port = tmp_path, free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.scheduler: subprocess.Popen | None = None

    def start_scheduler(self) -> None:
        self.scheduler = self._start(
            "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"
        )

    def start_worker(self, name: str) -> subprocess.Popen:
        # No nanny: a SIGKILL is the whole worker gone, as a lost machine is.
        return self._start(
            "worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
            "--name", name,
        )  # fmt: skip

    def _start(self, *argv: str) -> subprocess.Popen:
        log = open(self.tmp_path / f"dask-{argv[0]}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "dask", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.procs.append(proc)
        return proc

    def start(self, *workers: str) -> None:
        """The scheduler and the workers named, once all have joined."""
        self.start_scheduler()
        for name in workers:
            self.start_worker(name)
        self.wait_for_workers(len(workers))

    def wait_for_workers(self, n: int) -> None:
        with distributed.Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(n, timeout=60)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def dask_processes(tmp_path):
    processes = DaskProcesses(tmp_path)
    yield processes
    processes.stop()


def hpo_run(spec, url: str, address: str, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hpo", "run", str(spec), "--storage", url, "--dask", address,
         "--quiet", "--no-report", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )  # fmt: skip


def slow_trials_spec(path, trials: int):
    """Trials of a second or two each (a wide net on 1,000 samples), no pruning."""
    text = write_spec(path, trials=trials, epochs=10).read_text()
    text = (
        text.replace("hidden = [16]", "hidden = [1024, 1024]")
        .replace("train_size = 200", "train_size = 1000")
        .replace("warmup_epochs = 1", 'warmup_epochs = 1\npruner = "none"')
    )
    path.write_text(text)
    return path


def worker_busy(address: str, name: str, *, timeout: float = 120) -> None:
    """Return once the worker called ``name`` is running a task."""
    with distributed.Client(address, set_as_default=False) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            ours = [a for a, w in workers.items() if w.get("name") == name]
            if ours and client.processing(workers=ours)[ours[0]]:
                return
            time.sleep(0.05)
    raise AssertionError(f"worker {name} ran no task in {timeout} s")


def wait_finished(url: str, n: int, *, timeout: float, name: str = "tiny") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            states = trial_states(url, name)
        except KeyError:
            states = []
        if sum(s in ("COMPLETE", "PRUNED") for s in states) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} trials finished in {timeout} s")


@pytest.mark.slow
def test_a_dask_worker_killed_mid_study_costs_only_its_trial(tmp_path, dask_processes):
    dask_processes.start_scheduler()
    dask_processes.start_worker("stays")
    doomed = dask_processes.start_worker("doomed")
    dask_processes.wait_for_workers(2)
    spec = slow_trials_spec(tmp_path / "tiny.toml", trials=6)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    run = hpo_run(spec, url, dask_processes.address)
    wait_finished(url, 1, timeout=120)
    worker_busy(dask_processes.address, "doomed")
    doomed.send_signal(signal.SIGKILL)  # mid-trial
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    states = trial_states(url)
    assert states == ["COMPLETE"] * 6  # the lost trial ran again on the other worker
    params = finished_params(url)
    assert len(set(params)) == len(params) == 6


@pytest.mark.slow
def test_a_lost_scheduler_fails_the_trials_in_flight_keeps_the_rest_and_resumes(
    tmp_path, dask_processes
):
    dask_processes.start("a", "b")
    spec = slow_trials_spec(tmp_path / "tiny.toml", trials=12)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    run = hpo_run(spec, url, dask_processes.address)
    wait_finished(url, 2, timeout=120)
    dask_processes.scheduler.kill()
    _, err = run.communicate(timeout=120)
    assert run.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"lost the Dask scheduler at {dask_processes.address}" in lines[0]
    states = trial_states(url)
    assert "RUNNING" not in states and states.count("COMPLETE") >= 2
    # Back up: the same command finishes the study.
    dask_processes.stop()
    dask_processes.procs.clear()
    dask_processes.start("c")
    again = hpo_run(spec, url, dask_processes.address)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    states = trial_states(url)
    assert states.count("COMPLETE") == 12 and "RUNNING" not in states


@pytest.mark.slow
def test_ctrl_c_cancels_the_study_tasks_on_the_cluster_and_exits_130(tmp_path, dask_processes):
    dask_processes.start("a", "b")
    spec = slow_trials_spec(tmp_path / "tiny.toml", trials=50)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    run = hpo_run(spec, url, dask_processes.address)
    wait_finished(url, 1, timeout=120)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130
    assert err.strip().splitlines() == [
        "python -m hpo run: interrupted; finished trials are kept, run the same command to resume"
    ]
    states = trial_states(url)
    assert "RUNNING" not in states and states.count("COMPLETE") >= 1
    with distributed.Client(dask_processes.address, set_as_default=False) as client:
        deadline = time.monotonic() + 10
        while any(client.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(client.processing().values())
