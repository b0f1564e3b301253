"""``reports`` draws plain data: importing all of it imports nothing from ``hpo`` or Optuna."""

import subprocess
import sys

CHECK = """
import sys
import reports.catalog, reports.comparison, reports.experiment_figures, reports.html
import reports.summary
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("hpo", "optuna"))
print(" ".join(leaked))
"""


def test_reports_import_nothing_from_hpo_or_optuna():
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == []
