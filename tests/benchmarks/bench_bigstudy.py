"""Benchmark: the read commands on a real 10,000-trial study.

``python -m hpo run`` fills a SQLite study with 10,000 trials of the tests' tiny spec (one
epoch of an 8-unit net, random search, median pruner, 2 workers); then each read command runs
on it as a user types it, three times after one warm-up run: ``hpo report`` (with the
activation histograms' retraining), ``hpo studies``, ``hpo best --json`` and ``hpo compare``
(the study against a 100-trial one in the same file). Per command: the median wall seconds
and the peak resident memory of its process (``ru_maxrss`` from ``wait4``), against the same
command on the 100-trial study and against ``python -c pass``.

Targets (issue 13): report <= 30 s and <= 1 GiB; studies and best <= 1 s each.

Run: ``python tests/benchmarks/bench_bigstudy.py [--trials 10000] [--keep DIR]``; with
``--keep`` the storage is built once into DIR and reused by later runs (and the report is
left there to look at). Not a pytest test.
"""

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.hpo.conftest import write_spec  # noqa: E402

STUDY, SMALL = "big", "small"
RUNS = 3
TARGETS = {"report": (30.0, 1024.0), "studies": (1.0, None), "best": (1.0, None)}
"""Per command: the wall seconds and the peak resident MiB it may take on the big study."""


@dataclass(frozen=True)
class Measured:
    wall: float
    max_rss_mib: float
    output: str


def measure(argv: list[str], cwd: Path) -> Measured:
    """Run ``argv`` to its end; its wall time and its process's peak resident memory."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read().decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} exited {process.returncode}:\n{output[-2000:]}")
    return Measured(wall, usage.ru_maxrss / 1024, output)  # Linux: KiB


def hpo(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo", *args]


def build(directory: Path, trials: int) -> tuple[str, float | None]:
    """The storage with both studies (built unless it is there already), and the seconds the
    big study's ``hpo run`` took (None when reused)."""
    db = directory / f"big-{trials}.db"
    url = f"sqlite:///{db}"
    if db.exists():
        return url, None
    spec = write_spec(directory / "tiny.toml", epochs=1, sampler="random", trials=trials)
    spec.write_text(spec.read_text().replace("hidden = [16]", "hidden = [8]"))
    common = ["--workers", "2", "--storage", url, "--no-report", "--quiet"]
    measure(hpo("run", str(spec), "--trials", "100", "--study", SMALL, *common), directory)
    print(f"building {trials:,} trials (hpo run --workers 2) ...", file=sys.stderr, flush=True)
    took = measure(hpo("run", str(spec), "--trials", str(trials), "--study", STUDY, *common),
                   directory).wall  # fmt: skip
    return url, took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="build the storage here once, and reuse it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        url, took = build(directory, args.trials)
        report = directory / "report-big.html"
        commands = {
            "pass": [sys.executable, "-c", "pass"],
            "report": hpo("report", "--storage", url, "--study", STUDY, "--out", str(report)),
            "report small": hpo(
                "report", "--storage", url, "--study", SMALL, "--out", str(directory / "s.html")
            ),
            "studies": hpo("studies", "--storage", url),
            "best": hpo("best", "--json", "--storage", url, "--study", STUDY),
            "best small": hpo("best", "--json", "--storage", url, "--study", SMALL),
            "compare": hpo(
                "compare", STUDY, SMALL, "--storage", url, "--out", str(directory / "c.html")
            ),
        }
        results: dict[str, list[Measured]] = {k: [] for k in commands}
        for argv_ in commands.values():  # warm-up: the page cache, the bytecode
            measure(argv_, directory)
        for _ in range(RUNS):
            for name, argv_ in commands.items():
                results[name].append(measure(argv_, directory))
        print(
            f"bench_bigstudy: {args.trials:,} trials of the tiny spec in one SQLite study"
            + (f", built by hpo run --workers 2 in {took:.0f} s" if took else " (reused)")
            + f"; median of {RUNS} runs after one warm-up"
        )
        print(f"  {'command':14} {'wall s':>8} {'peak MiB':>9}  target")
        verdicts = []
        for name, runs in results.items():
            wall = statistics.median(r.wall for r in runs)
            rss = max(r.max_rss_mib for r in runs)
            target = TARGETS.get(name)
            text = "-"
            if target:
                seconds, mib = target
                ok = wall <= seconds and (mib is None or rss <= mib)
                text = f"<= {seconds:g} s" + (f", <= {mib:g} MiB" if mib else "")
                verdicts.append(f"{name}: {wall:.2f} s, {rss:.0f} MiB ({text}): "
                                f"{'met' if ok else 'NOT met'}")  # fmt: skip
            print(f"  {name:14} {wall:8.2f} {rss:9.0f}  {text}")
        print(f"  report: {report.stat().st_size / 1e6:.1f} MB" + (
            f" at {report}" if args.keep else ""))  # fmt: skip
        for v in verdicts:
            print(f"verdict: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
