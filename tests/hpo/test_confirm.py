"""``hpo confirm``: the interval and the paired test on values with known answers; runs stored
with the study, resumable, unseen by the sampler, and added seeds that never repeat."""

import concurrent.futures
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import optuna
import pytest
from scipy import stats

from hpo.cli import main
from hpo.confirm import (
    SEED_ATTR,
    SOURCE_ATTR,
    Confirmed,
    confirmations,
    load_companion,
    paired_p,
    plan,
    run_confirmation,
    stored_runs,
    top_configurations,
    verdict,
)
from hpo.executors import InlineExecutor, TrialExecutor
from hpo.locks import Busy, only_one
from hpo.records import companion_name, load_hpo_study
from hpo.storage import open_storage
from hpo.trial import load_study_split
from reports.summary import accuracy_interval, mean_interval
from tests.hpo.conftest import write_spec


def test_mean_interval_is_students_t():
    mean, low, high = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # sd = sqrt(2.5); t(0.975, 4) = 2.7764451; half = 2.7764451 * sqrt(2.5) / sqrt(5)
    assert mean == 3.0
    assert high - mean == pytest.approx(2.7764451 * math.sqrt(0.5), rel=1e-6)
    assert mean - low == pytest.approx(high - mean)
    one = mean_interval([0.5])
    assert one[0] == 0.5 and math.isnan(one[1]) and math.isnan(one[2])


def test_an_accuracy_interval_stays_within_0_and_1():
    mean, low, high = accuracy_interval([0.9826, 0.9792])  # two runs: t(0.975, 1) = 12.7
    assert mean == pytest.approx(0.9809) and high == 1.0
    assert low == pytest.approx(mean_interval([0.9826, 0.9792])[1])
    assert accuracy_interval([0.02, 0.0])[1] == 0.0
    inside = [0.5, 0.6, 0.55, 0.52, 0.58]
    assert accuracy_interval(inside) == mean_interval(inside)  # unchanged
    assert math.isnan(accuracy_interval([0.5])[2])


def test_paired_p_matches_the_textbook_and_scipy():
    a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]
    # d = 1..4: mean 2.5, sd 1.2910, t = 3.8730 with 3 degrees of freedom: p = 0.03047
    assert paired_p(a, b) == pytest.approx(0.030466, abs=1e-5)
    x, y = [0.98, 0.97, 0.99, 0.975, 0.985], [0.97, 0.975, 0.98, 0.96, 0.985]
    assert paired_p(x, y) == pytest.approx(stats.ttest_rel(x, y).pvalue, rel=1e-12)
    assert paired_p([0.9, 0.8], [0.9, 0.8]) == 1.0  # no difference at all
    assert paired_p([0.75, 0.5], [0.5, 0.25]) == 0.0  # always the same nonzero difference
    assert math.isnan(paired_p([0.9], [0.8]))


def item(trial, values, **kw):
    return Confirmed(trial, {}, 0.9, trial, dict(enumerate(values)), 0, **kw)


def test_verdict_says_distinguishable_or_names_the_ties():
    first = item(1, [0.99, 0.98, 0.99], rank=1)
    apart = [first, item(2, [0.9, 0.9, 0.9], rank=2, p_vs_best=0.001, tied=False)]
    assert verdict(apart).startswith("trial #1 is the best, distinguishable from every other")
    assert "#2, at p = 0.001" in verdict(apart)
    tied = [first, item(3, [0.99, 0.97, 0.99], rank=2, p_vs_best=0.42, tied=True)]
    assert verdict(tied).startswith("trial #1 ranks first but is tied with #3")
    assert verdict([]) == "no confirmation runs yet"


@pytest.fixture
def searched(tmp_path):
    spec = write_spec(tmp_path / "tiny.toml", trials=6, epochs=3)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert main(["run", str(spec), "--storage", url, "--quiet", "--no-report"]) == 0
    return spec, url


def runs_of(url):
    companion = optuna.load_study(
        study_name=companion_name("tiny"), storage=open_storage(url, write=False)
    )
    return companion.get_trials(deepcopy=False)


@pytest.mark.slow
def test_confirm_stores_runs_apart_from_the_search_and_adds_seeds(searched, capsys):
    _, url = searched
    capsys.readouterr()
    assert main(["confirm", "--storage", url, "--top", "3", "--seeds", "2", "--in-process"]) == 0
    out = capsys.readouterr().out
    assert "the top 3 configurations over 2 seeds each" in out and "verdict: " in out
    study, _ = load_hpo_study(storage_url=url, study_name="tiny")
    assert len(study.get_trials(deepcopy=False)) == 6  # no search trial added
    runs = runs_of(url)
    assert len(runs) == 6 and all(r.state.name == "COMPLETE" for r in runs)
    top = [t.number for t in sorted(study.trials, key=lambda t: (-(t.value or -1), t.number))]
    assert {r.user_attrs[SOURCE_ATTR] for r in runs} <= set(top)
    by_source = {}
    for r in runs:
        source = study.trials[r.user_attrs[SOURCE_ATTR]]
        assert r.params == source.params  # the configuration itself
        assert len(r.intermediate_values) == 3  # every epoch, never pruned
        by_source.setdefault(r.user_attrs[SOURCE_ATTR], {})[r.user_attrs[SEED_ATTR]] = r
    assert all(sorted(v) == [0, 1] for v in by_source.values())
    # Seed i is the same for every configuration (a paired comparison), and new to the study.
    seeds = {i: {tuple(r.user_attrs["run"]["seed"]) for r in runs if r.user_attrs[SEED_ATTR] == i}
             for i in (0, 1)}  # fmt: skip
    assert all(len(s) == 1 for s in seeds.values()) and seeds[0] != seeds[1]
    trial_seeds = {tuple(t.user_attrs["run"]["seed"]) for t in study.trials}
    assert not trial_seeds & (seeds[0] | seeds[1])

    # Again: two more seeds each, none repeated.
    assert main(["confirm", "--storage", url, "--top", "3", "--seeds", "2", "--json",
                 "--in-process"]) == 0  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and [c["rank"] for c in lines] == [1, 2, 3]
    for c in lines:
        assert {"trial", "params", "mean", "low", "high", "runs", "values"} <= set(c)
        assert c["runs"] == 4 and c["low"] <= c["mean"] <= c["high"]
    pairs = [(r.user_attrs[SOURCE_ATTR], r.user_attrs[SEED_ATTR]) for r in runs_of(url)]
    assert len(pairs) == 12 and len(set(pairs)) == 12


def test_an_unknown_study_names_the_search_studies_not_their_confirmations(searched, capsys):
    _, url = searched
    assert main(["confirm", "--storage", url, "--seeds", "1", "--in-process", "--quiet",
                 "--no-report"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["confirm", "--storage", url, "--study", "nope", "--json"]) == 2
    assert "no study named 'nope' (allowed: tiny)\n" in capsys.readouterr().err


def test_an_interrupted_confirm_resumes_instead_of_adding(searched):
    _, url = searched
    study, spec = load_hpo_study(storage_url=url, study_name="tiny")
    companion = load_companion(open_storage(url), "tiny", create=True)
    work = plan(study, companion, top=2, seeds=3)
    assert work.seeds == 3 and len(work.missing) == 6
    part = type(work)(work.seeds, work.added, work.missing[:4])  # as if Ctrl-C after four
    split = load_study_split(spec)
    run_confirmation(spec, companion, part, executor=InlineExecutor(spec, split))
    again = plan(study, companion, top=2, seeds=3)
    assert again.seeds == 3 and again.added == 0 and again.missing == work.missing[4:]
    run_confirmation(spec, companion, again, executor=InlineExecutor(spec, split))
    assert all(len(c.values) == 3 for c in confirmations(study, stored_runs(companion), 2))
    assert plan(study, companion, top=2, seeds=3).seeds == 6  # now complete: adds


class EpochByEpoch(TrialExecutor):
    """Trains each run on a thread of its own, through ``inner``, after showing its epochs one
    by one (0.3 s each) through ``epochs()``, as worker processes do."""

    def __init__(self, inner: TrialExecutor) -> None:
        self.inner, self.training, self.lock = inner, {}, threading.Lock()

    def submit(self, task, *, before_start=None) -> concurrent.futures.Future:
        future = concurrent.futures.Future()

        def train() -> None:
            for epoch in range(1, task.config.training.epochs + 1):
                time.sleep(0.3)
                with self.lock:
                    self.training[task.number] = epoch
            result = self.inner.submit(task).result()
            with self.lock:
                del self.training[task.number]
            future.set_result(result)

        threading.Thread(target=train, daemon=True).start()
        return future

    def shutdown(self, *, cancel: bool = False) -> None:
        pass

    def epochs(self) -> dict[int, int]:
        with self.lock:
            return dict(self.training)


def test_confirm_progress_moves_with_the_epochs_of_the_runs_in_flight(searched):
    """Runs of minutes (Fashion-MNIST) move the bar per epoch, not only per finished run."""
    _, url = searched
    study, spec = load_hpo_study(storage_url=url, study_name="tiny")
    companion = load_companion(open_storage(url), "tiny", create=True)
    work = plan(study, companion, top=1, seeds=2)
    seen = []
    executor = EpochByEpoch(InlineExecutor(spec, load_study_split(spec)))
    ran = run_confirmation(
        spec, companion, work, executor=executor, progress=lambda d, t: seen.append((d, t))
    )
    assert ran == 2 and seen[0] == (0, 2) and seen[-1] == (2, 2)
    done = [d for d, _ in seen]
    assert done == sorted(done)  # never backwards
    # Thirds of a run while one trains its 3 epochs (a loaded machine may miss some of them).
    fractions = {round(d % 1, 3) for d in done if d % 1}
    assert fractions and fractions <= {0.333, 0.667}


@pytest.mark.slow
def test_confirmation_runs_are_not_seen_by_the_sampler(tmp_path):
    """The same spec and seed give the same search trials whether or not confirm ran between."""
    spec = write_spec(tmp_path / "tiny.toml", trials=4, epochs=2)
    params = []
    for name in ("with", "without"):
        url = f"sqlite:///{tmp_path / name}.db"
        main(["run", str(spec), "--storage", url, "--quiet", "--no-report"])
        if name == "with":
            main(["confirm", "--storage", url, "--top", "2", "--seeds", "2", "--in-process",
                  "--quiet"])  # fmt: skip
        main(["run", str(spec), "--storage", url, "--trials", "8", "--quiet", "--no-report"])
        study, _ = load_hpo_study(storage_url=url, study_name="tiny")
        params.append([t.params for t in study.trials])
    assert len(params[0]) == 8 and params[0] == params[1]


@pytest.mark.slow
def test_the_companion_study_is_not_a_study_to_pick(searched, capsys):
    _, url = searched
    main(["confirm", "--storage", url, "--top", "1", "--seeds", "1", "--in-process", "--quiet"])
    capsys.readouterr()
    assert main(["best", "--storage", url, "--json"]) == 0  # still the storage's only study
    assert json.loads(capsys.readouterr().out)["study"] == "tiny"
    assert main(["confirm", "--storage", url, "--study", "tiny:confirm"]) == 2
    assert "holds the confirmation runs of 'tiny' (allowed: --study tiny)" in (
        capsys.readouterr().err
    )
    assert main(["studies", "--storage", url]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 2 and rows[0].split()[-2:] == ["CONFIRM", "RUNS"]
    assert rows[1].split()[0] == "tiny" and rows[1].split()[-1] == "1"


def test_confirm_without_a_completed_trial_exits_1(tmp_path, capsys):
    spec = write_spec(tmp_path / "tiny.toml")
    url = f"sqlite:///{tmp_path / 'e.db'}"
    main(["run", str(spec), "--storage", url, "--create-only"])
    capsys.readouterr()
    assert main(["confirm", "--storage", url]) == 1
    assert "no completed trial to confirm" in capsys.readouterr().err


@pytest.mark.slow
def test_the_report_names_the_confirmed_best_once_confirm_ran(searched, tmp_path, capsys):
    _, url = searched  # the page before confirm: tests/reports/test_html.py
    out = tmp_path / "r.html"
    main(["confirm", "--storage", url, "--top", "2", "--seeds", "3", "--in-process", "--quiet"])
    capsys.readouterr()
    assert main(["report", "--storage", url, "--out", str(out)]) == 0
    page = out.read_text()
    assert "Confirmed best: trial #" in page and "over 3 fresh seeds" in page
    assert "This ranking is unconfirmed" not in page
    assert '<h2 id="confirmed">Confirmed ranking</h2>' in page


@pytest.mark.slow  # 7 s: a confirmation interrupted, then resumed, in subprocesses
def test_ctrl_c_keeps_the_stored_runs_exits_130_and_the_same_command_resumes(tmp_path):
    spec = write_spec(tmp_path / "slow.toml", trials=2, epochs=150)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["run", str(spec), "--storage", url, "--quiet", "--no-report"]) == 0
    argv = [sys.executable, "-m", "hpo", "confirm", "--storage", url, "--top", "1", "--seeds",
            "20", "--workers", "1", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    stored = []
    while time.monotonic() < deadline and not stored:  # interrupt once a run is stored
        time.sleep(0.1)
        with contextlib.suppress(KeyError):
            stored = runs_of(url)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().count("\n") == 0 and "interrupted" in err
    kept = len(runs_of(url))
    assert 1 <= kept < 20
    assert main(["confirm", "--storage", url, "--top", "1", "--seeds", "20", "--in-process",
                 "--quiet", "--json"]) == 0  # fmt: skip
    runs = runs_of(url)
    assert len(runs) == 20  # resumed to 20 seeds, none added, none twice
    assert sorted(r.user_attrs[SEED_ATTR] for r in runs) == list(range(20))


def test_a_bad_cluster_address_stores_nothing(searched, capsys):
    _, url = searched  # the executor is made before the companion study: a refusal stores nothing
    assert main(["confirm", "--storage", url, "--dask", "udp://127.0.0.1:1"]) == 2
    assert "udp://127.0.0.1:1" in capsys.readouterr().err
    assert companion_name("tiny") not in optuna.get_all_study_names(open_storage(url))


def test_a_second_confirm_of_a_study_refuses_in_one_line(searched, capsys):
    _, url = searched
    capsys.readouterr()
    with only_one(url, "confirm tiny"):  # as a confirm in another process holds it
        code = main(["confirm", "--storage", url, "--top", "1", "--seeds", "2", "--in-process"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"python -m hpo confirm: error: another hpo confirm of study 'tiny' is running "
        f"(process {os.getpid()}); run this one when it ends"
    ]
    assert companion_name("tiny") not in optuna.get_all_study_names(open_storage(url))
    assert main(["confirm", "--storage", url, "--top", "1", "--seeds", "2", "--in-process",
                 "--quiet", "--json"]) == 0  # fmt: skip


def test_the_confirm_lock_on_postgresql_refuses_a_second_holder(postgres_url):
    with only_one(postgres_url, "confirm tiny"):
        with pytest.raises(Busy), only_one(postgres_url, "confirm tiny"):
            pytest.fail("a second holder must not enter")
        with only_one(postgres_url, "confirm other"):
            pass  # another study's confirm goes on
    with only_one(postgres_url, "confirm tiny"):
        pass  # free again


def test_best_names_the_confirmed_first_when_it_is_not_the_search_best(searched, capsys):
    _, url = searched
    study = optuna.load_study(study_name="tiny", storage=open_storage(url))
    best, second = top_configurations(study, 2)
    companion = load_companion(open_storage(url), "tiny", create=True)
    for source, value in ((best, 0.5), (second, 0.9)):  # seeds say the second is better
        for index in range(2):
            companion.add_trial(
                optuna.trial.create_trial(
                    params=dict(source.params),
                    distributions=dict(source.distributions),
                    value=value + index / 100,
                    user_attrs={SOURCE_ATTR: source.number, SEED_ATTR: index},
                )
            )
    capsys.readouterr()
    assert main(["best", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert f"best trial #{best.number}," in out
    assert f"hpo confirm ranks trial #{second.number} first: mean 0.9050 [" in out
    assert f"over 2 seeds (--trial {second.number} with --retrain" in out
    assert main(["best", "--storage", url, "--trial", str(second.number), "--command"]) == 0
    assert "hpo confirm ranks" not in capsys.readouterr().out  # a trial was named
