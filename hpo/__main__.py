"""``python -m hpo``: see ``hpo.cli``. A Ctrl-C before the command's own handler is installed
(while Python imports it) ends in one line too."""

import os
import sys

try:
    from hpo.cli import main
except KeyboardInterrupt:
    sys.stderr.write("\npython -m hpo: interrupted while starting; nothing was changed\n")
    sys.stderr.flush()
    os._exit(130)  # nothing is open yet; and no unwinding that a late signal could interrupt

sys.exit(main())
