"""The one exception family the CLI catches; each maps to an exit code and a one-line message."""

from trainer import console


class HPOError(Exception):
    """Base of hpo's user-facing errors. ``exit_code`` is what ``main`` returns."""

    exit_code = 1


class UsageError(HPOError, console.UsageError):
    """Bad input: a malformed or unknown field, an impossible range, a missing file, an
    unreachable storage. Raised before anything is written."""

    exit_code = 2


class SpecError(UsageError):
    """A study file that does not validate. The message reads ``FILE: field: problem``."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        super().__init__(f"{source}: {field}: {problem}")
        self.source = source
        self.field = field
        self.problem = problem


class RunError(HPOError):
    """An expected failure at run time (the storage went away, a trial cannot be read)."""

    exit_code = 1
