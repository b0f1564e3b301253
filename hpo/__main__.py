"""``python -m hpo``: see ``hpo.cli``. A Ctrl-C, SIGTERM or SIGHUP before the command's own
handler is installed (while Python imports it) ends in one line too.

``python -m`` puts the working directory first on ``sys.path``, where a learner's own
``trainer.py``, ``reports.py`` or ``studies/`` (beside their network file, say) would be
imported in place of hpo's packages of those names. Unless hpo itself was found there (a source
checkout run in place), that entry is dropped before anything else is imported; worker
processes inherit the path.
"""

import os
import signal
import sys
from pathlib import Path


def _drop_working_directory() -> None:
    here = Path.cwd().resolve()
    if Path(__file__).resolve().parent.parent == here:
        return  # hpo's own source folder: its packages are the ones found there
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]


_arrived: list[int] = []


def _stop_while_starting(signum, frame) -> None:
    _arrived.append(signum)
    raise KeyboardInterrupt


for _signum in (signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_signum) is signal.SIG_DFL:
        signal.signal(_signum, _stop_while_starting)
try:
    _drop_working_directory()
    from hpo.cli import main
except KeyboardInterrupt:
    sys.stderr.write("\npython -m hpo: interrupted while starting; nothing was changed\n")
    sys.stderr.flush()
    # Nothing is open yet; and no unwinding that a late signal could interrupt.
    os._exit(128 + (_arrived[0] if _arrived else signal.SIGINT))

sys.exit(main())
