"""The first code a spawned trial worker runs: ignore SIGINT (and SIGHUP), then import the
rest.

A spawned child imports its target's module while it unpickles the target, before the target
runs; were that module ``hpo.executors`` (NumPy, the trainer: up to a second on a busy machine),
a Ctrl-C to the process group meanwhile would print the child's KeyboardInterrupt traceback
beside the orchestrator's one line. This module imports nothing heavy. The interpreter's own
start-up is covered too: the executor spawns with SIGINT blocked, the child inherits that mask,
and a Ctrl-C meanwhile waits, pending, until ``boot`` ignores it (which discards it) and only
then unblocks it.
"""

import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Blocked while a worker is spawned (``hpo.executors``)."""


def boot(connection, parent_pid: int) -> None:
    # Ctrl-C, and a SIGHUP sent to the whole process group (a closed terminal), are the
    # orchestrator's to handle: it stops its workers, which die with it. SIGTERM stays fatal
    # (multiprocessing's own clean-up terminates with it); the orchestrator counts a worker
    # that a SIGTERM to the whole group killed as interrupted, not lost.
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))
    from hpo.executors import worker_main

    worker_main(connection, parent_pid)
