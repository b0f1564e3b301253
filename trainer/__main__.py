"""``python -m trainer``: see ``trainer.cli``. It trains on one BLAS thread, as hpo's trial
workers do (``trainer.console.default_blas_threads``), set before NumPy loads its BLAS."""

import os
import sys

from trainer.console import default_blas_threads

default_blas_threads(os.environ)

from trainer.cli import main  # noqa: E402 - after the BLAS threads are set

sys.exit(main())
