"""Writing a study's report and a comparison of studies to HTML files: where they go (a
safe file name, never the storage itself), from a snapshot (``hpo.study_snapshot``) drawn
and rendered by ``reports``."""

import hashlib
from collections.abc import Callable
from pathlib import Path

import optuna

from hpo.errors import RunError, UsageError
from hpo.paths import check_out_path, written_whole
from hpo.spec import StudySpec
from hpo.study_snapshot import build_snapshot, trials_snapshot
from hpo.urls import journal_path, sqlite_path
from reports.comparison import write_comparison
from reports.html import write_report
from trainer.datasets import Split

SAFE_NAME_MAX = 120
"""Characters of a study name kept in a file name (a file name has at most 255 bytes)."""


def _safe(name: str) -> str:
    """``name`` as part of a file name: ASCII letters, digits, ``-_.`` (others become ``_``),
    and no longer than ``SAFE_NAME_MAX``. A name that had to change (cut, or a character
    replaced) ends in a hash of the whole, so that two names never share a file (``ééé`` and
    ``🔥模型`` would both be ``___``)."""
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in name)
    if safe == name and len(safe) <= SAFE_NAME_MAX:
        return safe
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{safe[: SAFE_NAME_MAX - 11]}-{digest}"


def default_report_path(study_name: str) -> Path:
    return Path(f"hpo-report-{_safe(study_name)}.html")


def _check_out(path: Path, storage_url: str) -> None:
    check_out_path(path, flag="--out", example="report.html")
    stored = sqlite_path(storage_url) or journal_path(storage_url)
    if stored is not None and path.resolve() == stored.resolve():
        raise UsageError(f"--out: {path} is the study's storage (allowed: another file path)")


def _written(path: Path, what: str, write: Callable[[Path], Path]) -> Path:
    """``write(temporary)`` the page, then rename it to ``path`` (whole or not at all); an OS
    error (a full disk) becomes a one-line RunError."""
    try:
        with written_whole(path, suffix=path.suffix) as temporary:
            write(temporary)
        return path.resolve()
    except OSError as e:
        raise RunError(f"cannot write the {what} to {path} ({e.strerror or e})") from None


def make_comparison(
    studies: list[tuple[optuna.Study, StudySpec]],
    storage_url: str,
    *,
    out: str | Path | None = None,
) -> Path:
    """Write the side-by-side comparison of ``studies``; return its path."""
    names = [study.study_name for study, _ in studies]
    path = Path(out) if out is not None else Path(f"hpo-compare-{_safe('-vs-'.join(names))}.html")
    _check_out(path, storage_url)
    snapshots = [trials_snapshot(study, spec, storage_url) for study, spec in studies]
    return _written(path, "comparison", lambda to: write_comparison(snapshots, to))


def make_report(
    study: optuna.Study,
    spec: StudySpec,
    storage_url: str,
    *,
    out: str | Path | None = None,
    top_k: int = 10,
    split: Split | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the study's HTML report; return its path. ``progress(epoch, epochs)`` follows the
    retraining of the best for its activations."""
    path = Path(out) if out is not None else default_report_path(study.study_name)
    _check_out(path, storage_url)
    snapshot = build_snapshot(study, spec, storage_url, split=split, progress=progress)
    return _written(path, "report", lambda to: write_report(snapshot, to, top_k=top_k))
