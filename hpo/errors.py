"""The one exception family the CLI catches; each maps to an exit code and a one-line message.
Also which database errors are lasting (a full disk, a damaged file): the CLI tells those apart
without importing the storage."""

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


LASTING_ERRORS = (
    "disk is full",  # SQLite's SQLITE_FULL
    "No space left on device",
    "disk I/O error",  # a file gone or unreadable under SQLite (its -wal deleted, ...)
    "database disk image is malformed",
    "file is not a database",
    "readonly database",
    "could not extend file",  # PostgreSQL's disk full
)
"""Words of a database error that waiting does not mend: the disk is full or the file damaged."""


def lasting_reason(error: BaseException) -> str | None:
    """The database's own message when ``error`` (or what caused it) is one that retrying does
    not mend (``LASTING_ERRORS``), else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(getattr(error, "orig", None) or error).strip()
        if any(words in text for words in LASTING_ERRORS):
            return text.splitlines()[0]
        error = error.__cause__ or error.__context__
    return None
