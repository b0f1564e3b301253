"""The report from a real study: the command, its file, a real browser."""

import json
import os
import re
import shutil
import subprocess

import pytest

from hpo.cli import main
from hpo.service import run_study
from hpo.spec import load_spec

IN_CI = os.environ.get("CI") == "true"


@pytest.fixture
def study_url(tiny_spec, db_url):
    run_study(load_spec(str(tiny_spec)), storage_url=db_url, trials=6)
    return db_url


def test_run_ends_with_the_report_path(tiny_spec, db_url, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(tiny_spec), "--storage", db_url, "--trials", "3", "--quiet"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"report: {tmp_path / 'hpo-report-tiny.html'}"
    assert "Study tiny" in (tmp_path / "hpo-report-tiny.html").read_text()


@pytest.mark.slow
def test_report_command_writes_where_told(study_url, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", "--storage", study_url, "--out", str(out), "--top", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert "Learning curves of the top 3" in out.read_text()


def test_report_into_a_missing_directory_exits_2(study_url, tmp_path, capsys):
    assert main(["report", "--storage", study_url, "--out", str(tmp_path / "no/r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_of_a_study_without_trials(tiny_spec, db_url, tmp_path):
    run_study(load_spec(str(tiny_spec)), storage_url=db_url, trials=0)
    out = tmp_path / "empty.html"
    assert main(["report", "--storage", db_url, "--out", str(out)]) == 0
    assert "No trial has completed yet" in out.read_text()


CHECK_SCRIPT = """
<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.setAttribute("data-check", JSON.stringify({
    images: images.length,
    loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    errors: window.__errors,
  }));
});
</script>
"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if IN_CI:
            pytest.fail("CI must have Chromium (.ci/run installs Debian's chromium)")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    return path


def headless(browser: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--enable-logging=stderr", "--v=0", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: off


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_report_renders_in_a_real_browser(study_url, tmp_path):
    browser = chromium()
    report = tmp_path / "report.html"
    assert main(["report", "--storage", study_url, "--out", str(report)]) == 0
    # A copy with a checking script: the report itself carries no script at all.
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    dom = headless(browser, tmp_path, "--dump-dom", probe.as_uri())
    match = re.search(r'data-check="([^"]*)"', dom.stdout)
    assert match, dom.stderr[-2000:]
    check = json.loads(match.group(1).replace("&quot;", '"'))
    assert check["images"] >= 8 and check["loaded"] == check["images"], check
    assert check["errors"] == []
    console_errors = [
        line
        for line in dom.stderr.splitlines()
        if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)
    ]
    assert console_errors == []

    screenshot = tmp_path / "report.png"
    shot = headless(
        browser, tmp_path, f"--screenshot={screenshot}", "--window-size=1200,3000", report.as_uri()
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_hostile_names_render_escaped(tmp_path):
    name = "<script>alert(1)</script>"
    spec_file = tmp_path / "xss.toml"
    spec_file.write_text(
        f'[study]\nname = "{name}"\ndescription = "<script>alert(2)</script>"\n'
        "[data]\ntrain_size = 100\n[model]\nhidden = [8]\n"
        '[training]\nepochs = 1\n[search]\nsampler = "random"\ntrials = 2\n'
        "[space]\nlearning_rate = { low = 0.001, high = 0.1, log = true }\n"
        'optimizer = { choices = ["sgd", "adam"] }\n'
    )
    url = f"sqlite:///{tmp_path / 'xss.db'}"
    run_study(load_spec(str(spec_file)), storage_url=url)
    out = tmp_path / "xss.html"
    assert main(["report", "--storage", url, "--out", str(out)]) == 0
    html = out.read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html  # the spec text, shown escaped
