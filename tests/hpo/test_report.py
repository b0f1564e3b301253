"""The report from a real study: the command, a real browser; and the dashboard."""

import json
import os
import re
import shutil
import subprocess
import threading
import urllib.request

import optuna
import pytest

from hpo.cli import main
from hpo.dashboard import make_dashboard_server
from hpo.service import run_study
from hpo.spec import load_spec
from hpo.storage import open_storage

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


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def serve(storage_url: str):
    storage = open_storage(storage_url, write=False)
    server = make_dashboard_server(storage, storage_url, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def test_dashboard_lists_the_study(study_url):
    server, thread = serve(study_url)
    try:
        studies = get_json(f"http://127.0.0.1:{server.server_port}/api/studies")
        names = [s["study_name"] for s in studies["study_summaries"]]
        assert names == ["tiny"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_dashboard_polled_while_workers_write_does_not_fail_the_study(tiny_spec, db_url):
    spec = load_spec(str(tiny_spec))
    run_study(spec, storage_url=db_url, trials=0)
    server, thread = serve(db_url)
    errors = []
    stop = threading.Event()

    def poll():
        base = f"http://127.0.0.1:{server.server_port}"
        while not stop.is_set():
            try:
                for s in get_json(f"{base}/api/studies")["study_summaries"]:
                    get_json(f"{base}/api/studies/{s['study_id']}?after=0")
            except Exception as e:  # the dashboard failing is not the point; the study is
                errors.append(e)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        summary = run_study(spec, storage_url=db_url, trials=10, workers=2)
    finally:
        stop.set()
        poller.join(timeout=30)
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert summary.counts.finished == 10 and summary.counts.failed == 0
    trials = optuna.load_study(study_name="tiny", storage=db_url).get_trials()
    assert all(t.state.is_finished() for t in trials)


def test_dashboard_refuses_a_public_host_without_the_flag(study_url, capsys):
    assert main(["dashboard", "--storage", study_url, "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "no authentication" in err and "--i-understand-there-is-no-authentication" in err
