"""Ctrl-C, SIGTERM and SIGHUP, safely: one handler for the whole command, which sets a flag.

SIGTERM (kill, systemd, Docker, Kubernetes, a batch scheduler's time limit) and SIGHUP (a
closed terminal) end a command as a Ctrl-C does, with the exit code of the signal (130, 143,
129): ``signal_name`` and ``exit_code`` say which arrived first.

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
ignored: ``install`` then changes nothing, and neither does ``raising``; the same holds for
SIGHUP under ``nohup``.
"""

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

SECOND_INTERRUPT_MESSAGE = b"\ninterrupted again: stopped at once\n"
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""The signals that stop a command cleanly (each left alone where the process ignores it)."""


class Interrupts:
    """The process's stopping signals: how many arrived, the first one, and whether one raises
    right now."""

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None
        self.installed: dict[int, object] = {}  # signal -> the handler it had before
        self._raising = 0
        self.exit_on_second = True  # a command line's; a Python session's raises instead

    def install(self) -> None:
        """Take over SIGINT, SIGTERM and SIGHUP for this process (main thread only; each one
        the process ignores stays ignored)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN or signum in self.installed:
                continue
            signal.signal(signum, self._on_signal)
            self.installed[signum] = previous

    def uninstall(self) -> None:
        for signum, previous in self.installed.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self.installed = {}
        self.count = 0
        self.first = None
        self._raising = 0

    def _on_signal(self, signum, frame) -> None:
        self.count += 1
        if self.first is None:
            self.first = signum
        if self.count >= 2 and self.exit_on_second:
            os.write(2, SECOND_INTERRUPT_MESSAGE)
            os._exit(self.exit_code)
        if self._raising or self.count >= 2:
            raise KeyboardInterrupt

    @property
    def exit_code(self) -> int:
        """128 + the first signal's number (130 for Ctrl-C, 143 SIGTERM, 129 SIGHUP)."""
        return 128 + (self.first or signal.SIGINT)

    @property
    def signal_name(self) -> str:
        """The first signal's name (SIGINT when none arrived: a KeyboardInterrupt otherwise)."""
        return signal.Signals(self.first or signal.SIGINT).name

    def requested(self) -> bool:
        """Whether a stopping signal arrived (training polls this between minibatch steps)."""
        return self.count > 0

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stopping signal arrived: call it where stopping is safe."""
        if self.count:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """A block that writes nothing: a Ctrl-C inside it raises KeyboardInterrupt at once."""
        self.check()
        self._raising += 1
        # A signal that lands in a garbage collector's or a weak reference's callback raises
        # there, where Python prints it as "Exception ignored" and goes on: silence that print
        # here, and stop once the block ends instead.
        hook = sys.unraisablehook
        sys.unraisablehook = _quiet_interrupt(hook)
        try:
            yield
        finally:
            self._raising -= 1
            sys.unraisablehook = hook
        self.check()


def _quiet_interrupt(hook):
    def unraisable(info) -> None:
        if not isinstance(info.exc_value, KeyboardInterrupt):
            hook(info)

    return unraisable


INTERRUPTS = Interrupts()
"""The one instance: a signal handler is the process's, not an object's."""
