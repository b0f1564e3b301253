"""Benchmark: trials per minute with 1, 2 and 4 workers on SQLite, PostgreSQL and the journal file.

Every configuration runs the same study: the packaged default spec with random sampling and no
pruner, so that every trial trains all its epochs and the work per trial is alike, in a fresh
storage, through ``run_study`` with N worker processes. For each it reports:

- trials per minute (finished trials over the wall time of ``run_study``), and the ratio to one
  worker on the same storage;
- the share of a trial's wall time that is not training (``1 - train_seconds / trial wall``,
  from the trial's own start and end stamps): storage and sampler time inside the trial;
- for PostgreSQL, the CPU seconds the server's processes spent per trial (read from /proc
  before and after), from which the last table projects, on paper, where one server saturates.

Run: ``python tests/benchmarks/bench_storage.py [--trials N] [--workers 1,2,4] [--json PATH]``.
PostgreSQL comes from ``$HPO_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each run gets a fresh database, dropped after.
Not a pytest test: the default pytest run ignores ``tests/benchmarks``.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState

from hpo.service import run_study
from hpo.spec import load_spec, spec_from_dict
from hpo.storage import open_storage

POSTGRES = os.environ.get("HPO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def bench_spec():
    spec = load_spec("default")
    raw = spec.to_dict()
    raw["search"].update(sampler="random", pruner="none")
    return spec_from_dict(raw, source="default (random, no pruner)", default_name="default")


def postgres_cpu_seconds() -> float | None:
    """utime + stime of every postgres process on this machine, in seconds."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    found = False
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)
            name = fields[0].split("(", 1)[1]
            values = fields[1].split()
        except (OSError, IndexError):
            continue
        if name.startswith("postgres"):
            found = True
            total += (int(values[11]) + int(values[12])) / ticks
    return total if found else None


class PostgresDatabase:
    def __init__(self, base: str) -> None:
        self.admin_url = sqlalchemy.engine.make_url(base).set(drivername="postgresql+psycopg")
        self.admin = sqlalchemy.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self.name = None

    def reachable(self) -> bool:
        try:
            with self.admin.connect():
                return True
        except sqlalchemy.exc.OperationalError:
            return False

    def fresh(self) -> str:
        self.drop()
        self.name = f"hpo_bench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as c:
            c.execute(sqlalchemy.text(f'CREATE DATABASE "{self.name}"'))
        url = self.admin_url.set(database=self.name, drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def drop(self) -> None:
        if self.name:
            with self.admin.connect() as c:
                c.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self.name = None


def measure(spec, url: str, trials: int, workers: int) -> dict:
    run_study(spec, storage_url=url, trials=0)  # schema and study first, as a cluster would
    cpu_before = postgres_cpu_seconds() if url.startswith("postgresql") else None
    start = time.perf_counter()
    run_study(spec, storage_url=url, trials=trials, workers=workers)
    wall = time.perf_counter() - start
    cpu_after = postgres_cpu_seconds() if cpu_before is not None else None
    study = optuna.load_study(study_name="default", storage=open_storage(url, write=False))
    done = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    shares = [
        1 - t.user_attrs["train_seconds"] / (t.datetime_complete - t.datetime_start).total_seconds()
        for t in done
        if t.datetime_complete and t.datetime_start
    ]
    result = {
        "workers": workers,
        "trials": len(done),
        "wall_seconds": wall,
        "trials_per_minute": 60 * len(done) / wall,
        "median_train_seconds": statistics.median(t.user_attrs["train_seconds"] for t in done),
        "non_training_share_in_trial": statistics.median(shares),
    }
    if cpu_before is not None and cpu_after is not None:
        result["server_cpu_seconds_per_trial"] = (cpu_after - cpu_before) / len(done)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    worker_counts = [int(w) for w in args.workers.split(",")]
    spec = bench_spec()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    postgres = PostgresDatabase(POSTGRES)
    kinds = ["sqlite", "journal"] + (["postgresql"] if postgres.reachable() else [])
    if "postgresql" not in kinds:
        print(f"PostgreSQL at {POSTGRES} is unreachable: skipped", file=sys.stderr)
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for workers in worker_counts:
                if kind == "sqlite":
                    url = f"sqlite:///{Path(tmp) / f'{uuid.uuid4().hex}.db'}"
                elif kind == "journal":
                    url = f"journal:///{Path(tmp) / f'{uuid.uuid4().hex}.log'}"
                else:
                    url = postgres.fresh()
                print(f"[{time.strftime('%H:%M:%S')}] {kind}, {workers} worker(s)", flush=True)
                results[kind].append(measure(spec, url, args.trials, workers))
    postgres.drop()

    print(
        f"\nTrials per minute: default spec (random, no pruner), {args.trials} trials, "
        f"{os.cpu_count()} CPUs"
    )
    header = (
        "storage",
        "workers",
        "trials/min",
        "vs 1 worker",
        "median train s",
        "not training, in trial",
        "server CPU s/trial",
    )
    print("  ".join(f"{h:>{max(len(h), 10)}}" for h in header))
    for kind, rows in results.items():
        base = rows[0]["trials_per_minute"]
        for r in rows:
            cpu = r.get("server_cpu_seconds_per_trial")
            cells = (
                kind,
                r["workers"],
                f"{r['trials_per_minute']:.1f}",
                f"{r['trials_per_minute'] / base:.2f}x",
                f"{r['median_train_seconds']:.3f}",
                f"{r['non_training_share_in_trial']:.1%}",
                "-" if cpu is None else f"{cpu:.4f}",
            )
            widths = [max(len(h), 10) for h in header]
            print("  ".join(f"{c!s:>{w}}" for c, w in zip(cells, widths, strict=True)))

    if "postgresql" in results:
        rows = results["postgresql"]
        cpu = statistics.median(r["server_cpu_seconds_per_trial"] for r in rows)
        per_worker = rows[0]["trials_per_minute"] / 60  # one worker's trials per second
        print("\nProjection (on paper, not measured): one PostgreSQL server")
        print(f"  server CPU per trial (median over runs): {cpu * 1000:.1f} ms")
        print(f"  one worker finishes {per_worker:.2f} trials/s of this study")
        for cores in (2, 8, 32):
            limit = cores / (cpu * per_worker)
            print(
                f"  a {cores}-core server saturates near {limit:,.0f} workers "
                f"({limit * per_worker * 60:,.0f} trials/min), if CPU is its bottleneck"
            )
        print("  connections: at most 3 per worker, so max_connections = 100 allows about 30")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
