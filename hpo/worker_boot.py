"""The first code a spawned trial worker runs: ignore SIGINT, then import the rest.

A spawned child imports its target's module while it unpickles the target, before the target
runs; were that module ``hpo.executors`` (NumPy, the trainer: up to a second on a busy machine),
a Ctrl-C to the process group meanwhile would print the child's KeyboardInterrupt traceback
beside the orchestrator's one line. This module imports nothing heavy, so the window is the
interpreter's own start-up (~20 ms).
"""

import signal


def boot(connection, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the orchestrator's to handle
    from hpo.executors import worker_main

    worker_main(connection, parent_pid)
