"""Storage URLs: which storage a URL names, where its files are, and how it is shown.

``sqlite:///PATH`` (the default), ``postgresql://USER:PASSWORD@HOST/DB`` (``postgres://`` too)
and ``journal:///PATH``. Passwords never reach a message: ``mask_password`` renders them as
``***``. Also the address of a Dask scheduler (``resolve_dask``). Nothing here opens a storage
or connects to anything.
"""

import functools
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from hpo.errors import UsageError

DEFAULT_STORAGE = "sqlite:///hpo.db"


def make_url(url: str):
    """SQLAlchemy's URL parser, imported when first needed (``--help`` needs none)."""
    from sqlalchemy.engine import make_url as parse

    return parse(url)


URL_FORMS = "sqlite:///PATH, postgresql://USER:PASSWORD@HOST/DB, journal:///PATH"


def resolve_url(url: str | None) -> str:
    """``--storage``, else ``$HPO_STORAGE``, else ``sqlite:///hpo.db`` in the current directory.

    An empty ``--storage`` is refused rather than read as "the default"; an empty
    ``$HPO_STORAGE`` is unset, as the shell convention has it (``HPO_STORAGE= cmd``)."""
    if url is not None and not url.strip():
        raise UsageError(f"--storage: {url!r} (allowed: {URL_FORMS})")
    url = url or os.environ.get("HPO_STORAGE") or DEFAULT_STORAGE
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]  # SQLAlchemy only knows the long name
    return url


DASK_FORMS = "tcp://HOST:PORT, tls://HOST:PORT or HOST:PORT, as `dask scheduler` prints it"
DASK_ADDRESS = re.compile(
    r"((tcp|tls|ws|wss|ucx)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?"
)


def resolve_dask(address: str | None) -> str | None:
    """``--dask``, else ``$HPO_DASK`` (empty: unset), else None: no cluster. Refuses what cannot
    be a scheduler's address (a typo fails here, not after a connect timeout)."""
    source = "--dask"
    if address is None:
        address, source = os.environ.get("HPO_DASK") or None, "$HPO_DASK"
        if address is None:
            return None
    if not DASK_ADDRESS.fullmatch(address):
        raise UsageError(f"{source}: {address!r} (allowed: {DASK_FORMS})")
    return address


@dataclass(frozen=True)
class StorageLocation:
    """A storage URL read once: what kind of storage it names (``"sqlite"``, ``"postgresql"``,
    ``"journal"`` or ``"other"``, another SQLAlchemy URL), its file (a SQLite database or a
    journal; None for a server or in-memory SQLite) and how it is shown (password masked).
    ``location`` makes one per URL and process; the storage, the lock and the checks read it."""

    url: str
    kind: str
    path: Path | None
    shown: str

    @property
    def sqlite_path(self) -> Path | None:
        return self.path if self.kind == "sqlite" else None

    @property
    def journal_path(self) -> Path | None:
        return self.path if self.kind == "journal" else None


@functools.cache
def location(url: str) -> StorageLocation:
    """The one parse of ``url`` (cached: every later reader gets the same value)."""
    kind = _kind(url)
    path = None
    if kind == "sqlite":
        database = make_url(url).database
        path = Path(database) if database and database != ":memory:" else None
    elif kind == "journal":
        rest = url[len("journal:") :]
        path = Path(
            rest[2:]
            if rest.startswith("///")
            else rest.lstrip("/")
            if rest.startswith("//")
            else rest
        )
    return StorageLocation(url, kind, path, _masked_url(url))


def _masked_url(url: str) -> str:
    if url.startswith("journal:"):
        return url
    if url.count("@") > 1:  # a raw @ in the password: hide everything up to the last one
        return re.sub(r"(//[^:/@]*:).*@", r"\1***@", url)
    try:
        parsed = make_url(url)
    except Exception:
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)  # renders the password as ***


def _kind(url: str) -> str:
    if url.startswith("journal:"):
        return "journal"
    try:
        backend = make_url(url).get_backend_name()
    except Exception:
        return "other"
    return backend if backend in ("sqlite", "postgresql") else "other"


def mask_password(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and reports."""
    return location(url).shown


def storage_kind(url: str) -> str:
    """``"sqlite"``, ``"postgresql"``, ``"journal"`` or ``"other"`` (another SQLAlchemy URL)."""
    return location(url).kind


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for other URLs or in-memory SQLite."""
    return location(url).sqlite_path


def journal_path(url: str) -> Path | None:
    """The file of a ``journal:///PATH`` URL (``journal:PATH`` for a relative path)."""
    return location(url).journal_path


def engine_url(url: str) -> str:
    """The URL SQLAlchemy gets: PostgreSQL through psycopg 3, the password percent-encoded."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def artifact_dir(url: str) -> Path:
    """Where the study's artifacts (exported weights) live: beside a SQLite database or journal,
    else ``./hpo-artifacts``. The dashboard serves them from there."""
    path = location(url).path
    if path is None:
        return Path("hpo-artifacts")
    return path.with_name(path.stem + "-artifacts")


def command_line(
    command: str,
    study_name: str | None,
    url: str,
    *,
    always_storage: bool = False,
    options: tuple[str, ...] = (),
) -> str:
    """A ``python -m hpo`` line to paste into a shell: every value quoted as the shell needs
    (``shlex.quote``), ``--storage`` whenever the storage is not the default (password masked),
    then ``options``."""
    words = ["python", "-m", "hpo", command]
    if study_name is not None:
        words += ["--study", study_name]
    if always_storage or url != DEFAULT_STORAGE:
        words += ["--storage", mask_password(url)]
    return shlex.join([*words, *options])
