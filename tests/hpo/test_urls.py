"""Storage URLs: which storage a URL names, where its files lie, and how it is shown.

Pure functions of a string (and, for ``resolve_url``, of ``$HPO_STORAGE``): nothing is opened.
"""

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from hpo.errors import UsageError
from hpo.urls import (
    DEFAULT_STORAGE,
    artifact_dir,
    engine_url,
    journal_path,
    mask_password,
    resolve_dask,
    resolve_url,
    sqlite_path,
    storage_kind,
)

# ---------------------------------------------------------------------------------------------
# resolve_url


@pytest.fixture
def no_env_storage(monkeypatch):
    monkeypatch.delenv("HPO_STORAGE", raising=False)


@pytest.mark.usefixtures("no_env_storage")
def test_resolve_url_defaults_to_hpo_db_in_the_current_directory():
    assert resolve_url(None) == DEFAULT_STORAGE == "sqlite:///hpo.db"
    assert sqlite_path(resolve_url(None)) == Path("hpo.db")  # relative: the current directory


@pytest.mark.parametrize("given", ["", "  "])
def test_an_empty_storage_flag_is_refused_not_read_as_the_default(given):
    with pytest.raises(UsageError, match=r"^--storage: '\s*' \(allowed: sqlite:///PATH"):
        resolve_url(given)


def test_an_empty_hpo_storage_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv("HPO_STORAGE", "")
    assert resolve_url(None) == DEFAULT_STORAGE


def test_resolve_url_reads_hpo_storage_when_no_url_is_given(monkeypatch):
    monkeypatch.setenv("HPO_STORAGE", "journal:///shared/study.log")
    assert resolve_url(None) == "journal:///shared/study.log"


def test_resolve_url_prefers_the_given_url_over_hpo_storage(monkeypatch):
    monkeypatch.setenv("HPO_STORAGE", "journal:///shared/study.log")
    assert resolve_url("sqlite:///mine.db") == "sqlite:///mine.db"


def test_resolve_url_ignores_an_empty_hpo_storage(monkeypatch):
    monkeypatch.setenv("HPO_STORAGE", "")
    assert resolve_url(None) == DEFAULT_STORAGE


@pytest.mark.usefixtures("no_env_storage")
@pytest.mark.parametrize(
    "given",
    ["sqlite:///hpo.db", "sqlite:///runs/a.db", "sqlite:////abs/a.db", "journal:///abs/a.log"],
)
def test_resolve_url_leaves_other_urls_as_given(given):
    assert resolve_url(given) == given  # a relative path stays relative


@pytest.mark.parametrize("from_env", [False, True])
def test_resolve_url_renames_postgres_to_postgresql(monkeypatch, from_env):
    short = "postgres://ann:pw@db.example:5432/hpo"
    monkeypatch.setenv("HPO_STORAGE", short if from_env else "")
    resolved = resolve_url(None if from_env else short)
    assert resolved == "postgresql://ann:pw@db.example:5432/hpo"
    assert storage_kind(resolved) == "postgresql"


# ---------------------------------------------------------------------------------------------
# mask_password


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://ann:secret@db/hpo", "postgresql://ann:***@db/hpo"),
        ("postgresql://ann:secret@db:5432/hpo", "postgresql://ann:***@db:5432/hpo"),
        ("postgresql+psycopg://ann:secret@db/hpo", "postgresql+psycopg://ann:***@db/hpo"),
        ("postgres://ann:secret@db/hpo", "postgres://ann:***@db/hpo"),
        ("postgresql://:secret@db/hpo", "postgresql://:***@db/hpo"),
        # Characters that mean something in URLs, templates or config files.
        ("postgresql://ann:p{a}%s@db:5432/hpo", "postgresql://ann:***@db:5432/hpo"),
        ("postgresql://ann:p%40ss%3Aw@db/hpo", "postgresql://ann:***@db/hpo"),
        ("postgresql://ann:s3cr%t@db/hpo", "postgresql://ann:***@db/hpo"),
        ("postgresql://ann:pa/ss@db/hpo", "postgresql://ann:***@db/hpo"),
        ("postgresql://ann:pa:ss@db/hpo", "postgresql://ann:***@db/hpo"),
        ("postgresql://ann:p#w?x@db/hpo", "postgresql://ann:***@db/hpo"),
        ("postgresql://ann:p w@db/hpo", "postgresql://ann:***@db/hpo"),
        # A raw @ in the password: everything up to the last @ is hidden.
        ("postgresql://ann:p@ss@db/hpo", "postgresql://ann:***@db/hpo"),
        ("postgresql://ann:a@b@c@db/hpo", "postgresql://ann:***@db/hpo"),
        # Unparseable (a port that is no number): the regular expression still hides it.
        ("postgresql://ann:secret@db:port/hpo", "postgresql://ann:***@db:port/hpo"),
    ],
)
def test_mask_password_hides_the_password(url, masked):
    assert mask_password(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///hpo.db",
        "sqlite:////abs/dir/hpo.db",
        "sqlite:///:memory:",
        "postgresql://ann@db/hpo",
        "postgresql://db/hpo",
        "journal:///abs/study.log",
        "journal:///odd:name@dir/study.log",  # a journal URL has no password to parse
        "not a url",
    ],
)
def test_mask_password_leaves_a_url_without_password_unchanged(url):
    assert mask_password(url) == url


@pytest.mark.parametrize(
    "password", ["secret", "p{a}%s", "p@ss", "p%40ss", "ä-ö", "x" * 40, "a b", "p:w/d"]
)
def test_mask_password_never_shows_the_password(password):
    shown = mask_password(f"postgresql://ann:{password}@db.example/hpo")
    assert password not in shown
    assert "***" in shown
    assert shown.endswith("@db.example/hpo")


# ---------------------------------------------------------------------------------------------
# storage_kind


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("sqlite:///hpo.db", "sqlite"),
        ("sqlite:///:memory:", "sqlite"),
        ("sqlite+pysqlite:///hpo.db", "sqlite"),
        ("postgresql://ann:pw@db/hpo", "postgresql"),
        ("postgresql+psycopg://ann:pw@db/hpo", "postgresql"),
        ("journal:///abs/study.log", "journal"),
        ("journal:study.log", "journal"),
        ("mysql://ann:pw@db/hpo", "other"),
        ("postgres://ann:pw@db/hpo", "other"),  # resolve_url renames it first
        ("not a url", "other"),
        ("", "other"),
    ],
)
def test_storage_kind(url, kind):
    assert storage_kind(url) == kind


# ---------------------------------------------------------------------------------------------
# sqlite_path and journal_path


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///hpo.db", Path("hpo.db")),
        ("sqlite:///runs/a.db", Path("runs/a.db")),
        ("sqlite:///../a.db", Path("../a.db")),
        ("sqlite:////abs/dir/a.db", Path("/abs/dir/a.db")),
        ("sqlite:///:memory:", None),
        ("sqlite://", None),
        ("postgresql://ann:pw@db/hpo", None),
        ("journal:///abs/study.log", None),
    ],
)
def test_sqlite_path(url, path):
    assert sqlite_path(url) == path


def test_a_relative_sqlite_path_is_not_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = sqlite_path("sqlite:///runs/a.db")
    assert not path.is_absolute()
    assert path.resolve() == tmp_path / "runs" / "a.db"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("journal:///abs/dir/study.log", Path("/abs/dir/study.log")),
        ("journal:study.log", Path("study.log")),
        ("journal:runs/study.log", Path("runs/study.log")),
        ("journal://study.log", Path("study.log")),
        ("sqlite:///hpo.db", None),
        ("postgresql://ann:pw@db/hpo", None),
    ],
)
def test_journal_path(url, path):
    assert journal_path(url) == path


# ---------------------------------------------------------------------------------------------
# engine_url


@pytest.mark.parametrize(
    ("password", "encoded"),
    [
        ("secret", "secret"),
        ("p{a}%s", "p%7Ba%7D%25s"),  # survives Optuna's URL template and Alembic's config parser
        ("50%", "50%25"),
    ],
)
def test_engine_url_uses_psycopg_and_percent_encodes_the_password(password, encoded):
    url = f"postgresql://ann:{password}@db.example:5432/hpo"
    assert engine_url(url) == f"postgresql+psycopg://ann:{encoded}@db.example:5432/hpo"


def test_engine_url_keeps_an_already_encoded_password_as_sqlalchemy_reads_it():
    url = "postgresql://ann:p%40ss%3Aw%2Fd@db/hpo"
    rendered = engine_url(url)
    assert rendered == "postgresql+psycopg://ann:p%40ss%3Aw%2Fd@db/hpo"
    assert make_url(rendered).password == "p@ss:w/d"


@pytest.mark.parametrize("password", ["secret", "p{a}%s", "p%40ss", "100%"])
def test_engine_url_round_trips_the_password(password):
    url = f"postgresql://ann:{password}@db/hpo"
    assert make_url(engine_url(url)).password == make_url(url).password


def test_engine_url_keeps_an_explicit_postgresql_driver():
    url = "postgresql+psycopg2://ann:pw@db/hpo"
    assert engine_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///hpo.db",
        "sqlite:////abs/dir/hpo.db",
        # SQLAlchemy parses any scheme: a journal URL comes back unchanged (hpo never gives one
        # to SQLAlchemy, which has no such dialect).
        "journal:///abs/study.log",
    ],
)
def test_engine_url_leaves_other_urls_unchanged(url):
    assert engine_url(url) == url


@pytest.mark.parametrize(
    ("url", "rendered"),
    [
        ("sqlite:///:memory:", "sqlite:///%3Amemory%3A"),
        ("sqlite:////abs/100%/a.db", "sqlite:////abs/100%25/a.db"),
        ("sqlite:////abs/a:b@c#d.db", "sqlite:////abs/a%3Ab%40c%23d.db"),
    ],
)
def test_engine_url_percent_encodes_a_sqlite_path_that_sqlalchemy_reads_back(url, rendered):
    assert engine_url(url) == rendered
    assert make_url(rendered).database == make_url(url).database  # the same file


# ---------------------------------------------------------------------------------------------
# artifact_dir


@pytest.mark.parametrize(
    ("url", "directory"),
    [
        ("sqlite:////abs/runs/studies.db", Path("/abs/runs/studies-artifacts")),
        ("sqlite:///hpo.db", Path("hpo-artifacts")),
        ("sqlite:///runs/a.b.db", Path("runs/a.b-artifacts")),
        ("journal:///abs/runs/study.log", Path("/abs/runs/study-artifacts")),
        ("journal:///abs/runs/study", Path("/abs/runs/study-artifacts")),
        ("journal:study.log", Path("study-artifacts")),
        ("postgresql://ann:pw@db/hpo", Path("hpo-artifacts")),
        ("sqlite:///:memory:", Path("hpo-artifacts")),
    ],
)
def test_artifact_dir_lies_beside_the_file_else_in_the_current_directory(url, directory):
    assert artifact_dir(url) == directory


# ---------------------------------------------------------------------------------------------
# resolve_dask


@pytest.mark.parametrize(
    "address",
    ["tcp://10.0.0.5:8786", "tls://sched.example.org:8786", "sched:8786", "tcp://[::1]:8786"],
)
def test_resolve_dask_takes_a_scheduler_address_as_given(address, monkeypatch):
    monkeypatch.delenv("HPO_DASK", raising=False)
    assert resolve_dask(address) == address


def test_resolve_dask_reads_hpo_dask_and_none_means_no_cluster(monkeypatch):
    monkeypatch.delenv("HPO_DASK", raising=False)
    assert resolve_dask(None) is None
    monkeypatch.setenv("HPO_DASK", "")  # empty: unset, as for HPO_STORAGE
    assert resolve_dask(None) is None
    monkeypatch.setenv("HPO_DASK", "tcp://h:1")
    assert resolve_dask(None) == "tcp://h:1"
    assert resolve_dask("tcp://other:2") == "tcp://other:2"  # the flag wins


@pytest.mark.parametrize("address", ["", " ", "tcp://a b:1", "http://h:1", "tcp://h:1/x", "h:port"])
def test_resolve_dask_refuses_what_cannot_be_an_address(address, monkeypatch):
    monkeypatch.delenv("HPO_DASK", raising=False)
    with pytest.raises(UsageError, match=r"--dask: .* \(allowed: tcp://HOST:PORT"):
        resolve_dask(address)


def test_resolve_dask_names_the_variable_when_the_address_came_from_it(monkeypatch):
    monkeypatch.setenv("HPO_DASK", "not an address")
    with pytest.raises(UsageError, match=r"^\$HPO_DASK: 'not an address'"):
        resolve_dask(None)
