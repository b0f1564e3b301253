"""The files a command is told to write (``--out``, ``--export``): checks before any work, and
writing them whole or not at all."""

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from hpo.errors import UsageError

NAME_MAX = 255
"""Bytes in a file name on the usual file systems (ext4, APFS, NTFS in UTF-16 units)."""


def check_out_path(path: Path, *, flag: str, example: str) -> None:
    """Refuse, in one line, a path that cannot be written as a new file: a NUL in it, a file
    name over ``NAME_MAX`` bytes, a directory, a missing or unreachable parent directory."""
    text = str(path)
    if "\x00" in text:
        raise UsageError(f"{flag}: {cut(repr(text))} contains a NUL (allowed: a file path)")
    if len(path.name.encode()) > NAME_MAX:
        raise UsageError(
            f"{flag}: {cut(text)} is a file name of {len(path.name.encode())} bytes "
            f"(allowed: up to {NAME_MAX})"
        )
    try:
        is_dir, parent_is_dir = path.is_dir(), path.parent.is_dir()
    except OSError as e:
        raise UsageError(f"{flag}: {cut(text)}: {e.strerror} (allowed: a file path)") from None
    if is_dir:
        raise UsageError(
            f"{flag}: {cut(text)} is a directory (allowed: a file path, e.g. {example})"
        )
    if not parent_is_dir:
        raise UsageError(f"{flag}: directory {cut(str(path.parent))} does not exist")


def cut(text: str, limit: int = 80) -> str:
    """``text`` for a message: at most about ``limit`` characters."""
    return text if len(text) <= limit else f"{text[: limit - 20]}...({len(text)} characters)"


@contextlib.contextmanager
def written_whole(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; renamed to ``path`` when the
    block ends, removed if it raises: a full disk, a crash or a Ctrl-C never leaves a truncated
    file at ``path`` (nor replaces a whole one with it). ``suffix`` ends the temporary name (a
    writer such as ``numpy.savez`` adds its own otherwise)."""
    path = Path(path)
    temporary = path.with_name(f".hpo-{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
