"""What both command lines (``python -m trainer``, ``python -m hpo``) share, light to import:
argument types with the rule in their errors, and a quiet end on a closed pipe."""

import argparse
import os
import sys
from collections.abc import Callable


class UsageError(Exception):
    """Bad input to a command line: the message names the flag or field, the value and what is
    allowed; the command prints it as one line and exits 2 (``hpo.errors.UsageError`` is one)."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit code 2 (both command lines')."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def default_blas_threads(environ) -> None:
    """One BLAS thread unless ``environ`` already says how many (``OPENBLAS_NUM_THREADS=2``
    uses two): a 100-wide net's matmuls gain nothing from a second thread and lose several
    times over when the other core is busy (the book's 6x100 search configuration: 0.14 s on one
    thread, 0.34 s on two with the other core busy). Call it before NumPy is imported."""
    if any(environ.get(name) for name in BLAS_THREAD_VARIABLES):
        return
    for name in BLAS_THREAD_VARIABLES:
        environ[name] = "1"


def int_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``, with the rule in its error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an integer (allowed: >= {minimum})"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} (allowed: >= {minimum})")
        return value

    return parse


def main_closing_quietly(main: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """``main(argv)``, ending quietly with exit 1 when the reader of stdout went away
    (``| head``): stdout then points at /dev/null, so the interpreter's last flush raises
    nothing either. The flush happens here, not at exit, where the error could not be caught."""
    try:
        code = main(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
