"""``python -m hpo``: see ``hpo.cli``. A Ctrl-C before the command's own handler is installed
(while Python imports it) ends in one line too."""

import sys

try:
    from hpo.cli import main
except KeyboardInterrupt:
    sys.stderr.write("\npython -m hpo: interrupted while starting; nothing was changed\n")
    sys.exit(130)

sys.exit(main())
