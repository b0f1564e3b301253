"""Study names that look like others: a search study named like confirmation runs, and names
that a file name cannot spell."""

import pytest

from hpo.cli import main
from hpo.pages import default_report_path
from hpo.service import run_study
from hpo.spec import load_spec


@pytest.mark.slow
def test_a_search_study_named_like_confirmation_runs_is_a_study_of_its_own(
    tiny_spec, db_url, tmp_path, capsys
):
    spec = load_spec(str(tiny_spec))
    for name in ("one", "one:confirm"):
        run_study(spec, storage_url=db_url, study_name=name, trials=1, in_process=True)
    assert main(["studies", "--storage", db_url]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert sorted(rows) == ["one", "one:confirm"]
    out = tmp_path / "one.html"
    assert main(["report", "--study", "one", "--storage", db_url, "--out", str(out)]) == 0
    assert out.exists()


@pytest.mark.parametrize("names", [("ééé", "🔥模型"), ("a b", "a_b"), ("x" * 128, "x" * 127 + "y")])
def test_names_a_file_name_cannot_spell_get_files_of_their_own(names):
    first, second = (default_report_path(n) for n in names)
    assert first != second
    assert first.name.isascii() and len(first.name.encode()) < 255


def test_a_name_a_file_name_spells_is_kept_as_it_is():
    assert default_report_path("lr-sweep_2.v1").name == "hpo-report-lr-sweep_2.v1.html"
