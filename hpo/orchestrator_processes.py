"""More orchestrator processes for one ``hpo run`` with many local workers.

An orchestrator's bookkeeping costs it 60-80 ms of CPU a trial of 30 epochs, nearly all of it
Optuna's public storage API on SQLite (a ``trial.report`` write an epoch, ask, suggest, tell):
one process tops out near 13 trials a second, fewer than 16 workers of 1-s trials finish
(``tests/benchmarks/bench_orchestrator.py``). So ``hpo run`` shares its local workers among
``orchestrator_count`` processes: itself, and ``hpo worker`` processes that it starts on the
same study once the study exists. They claim under the same storage lock and count toward the
same target, as ``hpo worker`` processes on other machines do; each has its own share of the
worker processes. On 2 cores two orchestrators do best (three, each on a third of 16 workers,
ran 1,000 1-s trials 7% slower than two).

A helper runs in its own session, so a Ctrl-C at the terminal reaches this process alone: it
hands its first stopping signal on to each helper once (``stop``), and each fails its trials in
flight as interrupted and exits, as ``hpo run`` itself does. A helper ends with this process
however this one ends (a SIGKILL included: the kernel's parent-death signal sends it SIGTERM).
Its output is kept, not shown: a helper that stops early for a reason of its own is named in
one line at the end, with the last line it wrote.
"""

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import hpo

WORKERS_PER_ORCHESTRATOR = 8
"""Local workers one orchestrator process keeps busy before ``hpo run`` starts another: 16
workers of 1-s trials are two orchestrators' work on this machine's 2 cores."""
STOP_SECONDS = 30.0
"""How long a helper has, once told to stop, to fail its trials in flight and exit before it is
killed (its trials are then failed and retried after the heartbeat's grace period)."""
POLL_SECONDS = 0.5


def orchestrator_count(workers: int, *, cpus: int | None = None) -> int:
    """Orchestrator processes for ``workers`` local workers: one per ``WORKERS_PER_ORCHESTRATOR``
    workers, at most one per core, at least one."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(cpus, workers // WORKERS_PER_ORCHESTRATOR))


def shares(workers: int, count: int) -> list[int]:
    """``workers`` split as evenly as can be among ``count`` orchestrators, the largest first
    (this process's)."""
    base, extra = divmod(workers, count)
    return [base + (i < extra) for i in range(count)]


class Helper:
    """One ``hpo worker`` process joined to this run's study, and the last lines it wrote."""

    def __init__(self, argv: list[str], *, storage_url: str) -> None:
        # The storage goes in the environment, not the command line that ps shows: its URL may
        # hold a password.
        env = {**os.environ, "HPO_STORAGE": storage_url}
        # The helper imports the hpo this process runs, wherever it was found.
        home = str(Path(hpo.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [home, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.told: int | None = None  # the signal it was told to stop with
        self.last_lines: collections.deque[str] = collections.deque(maxlen=3)
        self._reader = threading.Thread(target=self._read, name="hpo-helper-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            text = line.decode(errors="replace").strip()
            if text:
                self.last_lines.append(text)

    def tell_to_stop(self, signum: int) -> None:
        if self.told is None and self.process.poll() is None:
            self.told = signum
            self.process.send_signal(signum)

    def problem(self) -> str | None:
        """Why it ended other than as asked: None for a helper that reached the target, or that
        stopped with the signal it was told."""
        code = self.process.returncode
        if code == 0 or (self.told is not None and code in (128 + self.told, -self.told)):
            return None
        self._reader.join(timeout=1.0)
        said = self.last_lines[-1] if self.last_lines else "no message"
        return f"orchestrator process {self.process.pid} stopped early (exit {code}): {said}"


class OrchestratorProcesses:
    """The helpers of one run: started on the existing study, stopped with this process.

    Args:
        study_name: the study they join (it holds the spec and the target).
        storage_url: where it lives.
        shares: local workers of each helper.
        deadline: ``time.monotonic()`` after which no trial is claimed; None: none.
    """

    def __init__(
        self,
        *,
        study_name: str,
        storage_url: str,
        shares: list[int],
        deadline: float | None,
    ) -> None:
        self.helpers: list[Helper] = []
        try:
            for workers in shares:
                argv = [sys.executable, "-m", "hpo", "worker", "--study", study_name]
                argv += ["--workers", str(workers), "--quiet", "--parent-pid", str(os.getpid())]
                if deadline is not None:
                    argv += ["--seconds-left", f"{max(0.0, deadline - time.monotonic()):.3f}"]
                self.helpers.append(Helper(argv, storage_url=storage_url))
        except BaseException:
            self.stop(signal.SIGTERM)
            raise

    def stop(self, signum: int) -> None:
        """Hand ``signum`` on to every helper still running, once, and wait for them to exit
        (killing one that takes longer than ``STOP_SECONDS``)."""
        for helper in self.helpers:
            helper.tell_to_stop(signum)
        end = time.monotonic() + STOP_SECONDS
        for helper in self.helpers:
            try:
                helper.process.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                helper.process.kill()
                helper.process.wait()

    def wait(self, *, check: Callable[[], None], every: Callable[[], None] | None = None) -> None:
        """Wait for every helper to reach the target and exit, calling ``check`` (which raises
        to stop the wait: a Ctrl-C) and ``every`` (progress) twice a second."""
        while any(h.process.poll() is None for h in self.helpers):
            check()
            if every is not None:
                every()
            time.sleep(POLL_SECONDS)

    def problems(self) -> list[str]:
        return [p for h in self.helpers if (p := h.problem()) is not None]
