"""What a command closes when it ends: each module that opens something lasting (``hpo.storage``:
engines, SQLite's WAL) registers, when first imported, how to close it, so a command closes what
it used and one that used nothing (``--help``, a bad flag) imports nothing to close."""

from collections.abc import Callable

_CLOSERS: list[Callable[[], None]] = []


def on_close(close: Callable[[], None]) -> None:
    """Call ``close()`` when the command ends (``close_all``), once however often registered."""
    if close not in _CLOSERS:
        _CLOSERS.append(close)


def close_all() -> None:
    """Close what the command opened, the last registered first."""
    for close in reversed(_CLOSERS):
        close()
