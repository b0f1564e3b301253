"""Ctrl-C where it is safe: during training, never inside a storage transaction.

A KeyboardInterrupt raised inside SQLAlchemy leaves the session's connection half-closed, and
the worker can then no longer mark its trial failed: the trial would stay RUNNING. So storage
calls run with SIGINT held back (``sigint_deferred``) and the interrupt is raised once they are
done (``storage_step``); the bookkeeping after an interrupt runs with SIGINT ignored.
"""

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def sigint_deferred() -> Iterator[list]:
    """Hold back SIGINT for the block; the yielded list is non-empty if one arrived. Outside
    the main thread (where no signal arrives) it holds nothing back."""
    arrived: list = []
    if threading.current_thread() is not threading.main_thread():
        yield arrived
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(signum))
    try:
        yield arrived
    finally:
        signal.signal(signal.SIGINT, previous)


def storage_step(fn: Callable[[], T]) -> T:
    """``fn()`` with SIGINT held back; a Ctrl-C that arrived meanwhile is raised after it."""
    with sigint_deferred() as interrupted:
        result = fn()
    if interrupted:
        raise KeyboardInterrupt
    return result


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
