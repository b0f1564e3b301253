"""Ctrl-C, safely: one SIGINT handler for the whole command, which sets a flag.

A KeyboardInterrupt raised inside SQLAlchemy leaves the session's connection half-closed, and
the command can then no longer mark its trials failed: they would stay RUNNING. So ``main``
installs one handler (``install``) that only records the interrupt. The code that writes
nothing (loading data, drawing the report, serving the dashboard) runs inside ``raising()``,
where a Ctrl-C raises KeyboardInterrupt at once; everywhere else the flag is looked at where
stopping is safe: the orchestrator between its storage calls, training between minibatch steps
(``requested``), a command between its phases (``check``). A second Ctrl-C ends the process at
once: every finished trial is already committed, and a trial left RUNNING is swept as stale
later.

A process that started with SIGINT ignored (``nohup``, ``cmd &`` in a script) keeps it
ignored: ``install`` then changes nothing, and neither does ``raising``.
"""

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

SECOND_INTERRUPT_MESSAGE = b"\ninterrupted again: stopped at once\n"


class Interrupts:
    """The process's SIGINT state: how many arrived, and whether one raises right now."""

    def __init__(self) -> None:
        self.count = 0
        self.installed = False
        self._raising = 0

    def install(self) -> None:
        """Take over SIGINT for this process (main thread only; no-op where it is ignored)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return
        signal.signal(signal.SIGINT, self._on_sigint)
        self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.installed = False
        self.count = 0
        self._raising = 0

    def _on_sigint(self, signum, frame) -> None:
        self.count += 1
        if self.count >= 2:
            os.write(2, SECOND_INTERRUPT_MESSAGE)
            os._exit(130)
        if self._raising:
            raise KeyboardInterrupt

    def requested(self) -> bool:
        """Whether a Ctrl-C arrived (training polls this between minibatch steps)."""
        return self.count > 0

    def check(self) -> None:
        """Raise KeyboardInterrupt if a Ctrl-C arrived: call it where stopping is safe."""
        if self.count:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """A block that writes nothing: a Ctrl-C inside it raises KeyboardInterrupt at once."""
        self.check()
        self._raising += 1
        try:
            yield
        finally:
            self._raising -= 1


INTERRUPTS = Interrupts()
"""The one instance: a signal handler is the process's, not an object's."""
