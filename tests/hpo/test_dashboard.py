"""optuna-dashboard on a real study's storage (``python -m hpo dashboard``)."""

import json
import threading
import urllib.request

import optuna
import pytest

from hpo.cli import main
from hpo.dashboard import make_dashboard_server
from hpo.service import run_study
from hpo.spec import load_spec
from hpo.storage import open_storage


@pytest.fixture
def study_url(tiny_spec, db_url):
    run_study(load_spec(str(tiny_spec)), storage_url=db_url, trials=6)
    return db_url


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
