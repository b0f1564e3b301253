"""What a study file and the command line allow: the names of samplers, pruners and experiments,
and the limits of every count. Plain values, light to import (``--help`` shows them without
importing NumPy or Optuna)."""

SAMPLERS = ("tpe", "random", "cmaes", "qmc", "grid")
EXPERIMENTS = ("optimizers", "init", "batchnorm", "overfit")
"""The chapter's experiments whose own figure a study's report may carry (``[study]
experiment``); ``reports.experiment_figures`` draws them."""
PRUNERS = ("median", "hyperband", "sha", "none")

MAX_SEED = 2**32 - 1
"""Seeds are 0 to 2**32 - 1: NumPy's legacy generator, which Optuna's grid sampler seeds, takes
no larger."""
MAX_TRIALS = 1_000_000
MAX_EPOCHS = 100_000
MAX_LAYERS = 100
MAX_WIDTH = 65_536
"""Upper limits far past any study this tool is for (a 10,000-trial study, a 100-layer net):
a larger value is a typo, refused before a study exists."""
MAX_WORKERS = 256
"""Trials in flight from one command (``--workers``)."""
MAX_CONFIRM_TOP = 100
MAX_CONFIRM_SEEDS = 1000
DEFAULT_CONFIRM_SEEDS = 5  # hpo confirm --seeds when not given (and not --json)
"""``hpo confirm``: configurations confirmed at once, and seeds added at once."""

STUDY_NAME_MAX = 128
"""Study names: 1 to 128 printable characters (Optuna stores up to 512; a report's file name,
``hpo-report-NAME.html``, must stay under the file system's 255 bytes)."""
STUDY_NAME_RULE = f"1 to {STUDY_NAME_MAX} printable characters, not starting or ending with a space"


def show_name(name: str, limit: int = 40) -> str:
    """A name as a message shows it: quoted, every unprintable character escaped (a message
    stays one line), a long name cut to ``limit`` characters."""
    shown = name if len(name) <= limit else name[:limit]
    escaped = "".join(c if c.isprintable() and c not in '"\\' else _escape(c) for c in shown)
    more = f"... ({len(name)} characters)" if len(name) > limit else ""
    return f'"{escaped}"{more}'


def _escape(c: str) -> str:
    if c in '"\\':
        return "\\" + c
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def study_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a study (the value and the rule), or None when it can."""
    if name and len(name) <= STUDY_NAME_MAX and name.isprintable() and name == name.strip():
        return None
    return f"{show_name(name)} (allowed: {STUDY_NAME_RULE})"
