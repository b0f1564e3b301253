"""The first code a spawned trial worker runs: ignore SIGINT, then import the rest.

A spawned child imports its target's module while it unpickles the target, before the target
runs; were that module ``hpo.executors`` (NumPy, the trainer: up to a second on a busy machine),
a Ctrl-C to the process group meanwhile would print the child's KeyboardInterrupt traceback
beside the orchestrator's one line. This module imports nothing heavy. The interpreter's own
start-up is covered too: the executor spawns with SIGINT blocked, the child inherits that mask,
and a Ctrl-C meanwhile waits, pending, until ``boot`` ignores it (which discards it) and only
then unblocks it.
"""

import signal


def boot(connection, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the orchestrator's to handle
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    from hpo.executors import worker_main

    worker_main(connection, parent_pid)
