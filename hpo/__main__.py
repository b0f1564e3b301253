"""``python -m hpo``: see ``hpo.cli``."""

import sys

from hpo.cli import main

sys.exit(main())
