"""``python -m hpo``: see ``hpo.cli``. A Ctrl-C, SIGTERM or SIGHUP before the command's own
handler is installed (while Python imports it) ends in one line too."""

import os
import signal
import sys

_arrived: list[int] = []


def _stop_while_starting(signum, frame) -> None:
    _arrived.append(signum)
    raise KeyboardInterrupt


for _signum in (signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_signum) is signal.SIG_DFL:
        signal.signal(_signum, _stop_while_starting)
try:
    from hpo.cli import main
except KeyboardInterrupt:
    sys.stderr.write("\npython -m hpo: interrupted while starting; nothing was changed\n")
    sys.stderr.flush()
    # Nothing is open yet; and no unwinding that a late signal could interrupt.
    os._exit(128 + (_arrived[0] if _arrived else signal.SIGINT))

sys.exit(main())
