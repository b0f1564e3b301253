"""Benchmark: the trial runner on each storage hpo supports, with SQLite side by side.

Every storage runs the study of ``bench_study.py``'s scaling part: the packaged default spec with
``--sampler random --pruner none`` (every trial trains all its epochs, and the random sampler,
seeded by the trial's number, draws the same configurations everywhere), with 1 and 2 worker
processes, each run as ``python -m hpo run`` to N_short and to N_long trials on a fresh storage
so that start-up cancels in the difference (``bench_study.Marginal``). For each storage and
worker count it reports:

- finished trials per minute, and the ratio to SQLite with as many workers;
- the time per trial the workers spent not training (waiting for a trial, passing it back);
- the orchestrator's CPU per trial: it is the only process that talks to the storage;
- for PostgreSQL, the server's CPU per trial (every postgres process's, its exited backends'
  included, from /proc before and after), from which the last table projects, on paper, where
  one server saturates.

Storages: ``sqlite:///``, ``journal:///`` and, when reachable, PostgreSQL from
``$HPO_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``), with a fresh
database for each run, dropped after. Each measurement waits for a quiet machine as
``bench_study.py``'s do.

Run: ``python tests/benchmarks/bench_storage.py [--trials 10,40] [--workers 1,2] [--repeats 1]``.
Not a pytest test: the default pytest run ignores ``tests/benchmarks``.
"""

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy

# Run as a script, this file's directory is on sys.path (bench_study), not the repository's root.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench_study import (  # noqa: E402
    BenchmarkError,
    Marginal,
    StudyRun,
    disturbance,
    log,
    measure_quietly,
    median_and_spread,
    ms,
    print_table,
    run_study,
)

from hpo.storage import POOL_SIZE  # noqa: E402

POSTGRES = os.environ.get("HPO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
OPTIONS = ("--sampler", "random", "--pruner", "none")
SERVER_CORES = (2, 8, 32)
"""Server sizes the PostgreSQL projection is drawn for."""


def postgres_cpu_seconds() -> float | None:
    """User + system CPU seconds of every postgres process on this machine, with those of the
    backends they reaped (a connection's backend exits with its client)."""
    total, tick, found = 0.0, os.sysconf("SC_CLK_TCK"), False
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
        except (OSError, ValueError):
            continue
        if head.split("(", 1)[1].startswith("postgres"):
            found = True
            total += sum(int(x) for x in tail.split()[11:15]) / tick  # utime stime cutime cstime
    return total if found else None


class PostgresDatabases:
    """Fresh databases on one PostgreSQL server, each dropped when the next is made (or at
    ``drop``)."""

    def __init__(self, base: str) -> None:
        self.admin_url = sqlalchemy.engine.make_url(base).set(drivername="postgresql+psycopg")
        self.admin = sqlalchemy.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self.name: str | None = None

    def reachable(self) -> bool:
        try:
            with self.admin.connect():
                return True
        except (sqlalchemy.exc.OperationalError, ImportError):
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


def measure_storage(
    kind: str, workers: int, trials: tuple[int, int], tmp: Path, postgres: PostgresDatabases
) -> tuple[Marginal, float | None]:
    """The marginal trials of ``kind`` with ``workers``, and the server's CPU seconds for them."""
    runs: list[StudyRun] = []
    server: list[float | None] = []
    for n in trials:
        if kind == "sqlite":
            url = None  # run_study's own fresh file
        elif kind == "journal":
            url = f"journal:///{tmp / f'{uuid.uuid4().hex}.log'}"
        else:
            url = postgres.fresh()
        before = postgres_cpu_seconds() if kind == "postgresql" else None
        options = (*OPTIONS, "--workers", str(workers))
        runs.append(run_study("default", trials=n, options=options, tmp=tmp, url=url))
        after = postgres_cpu_seconds() if before is not None else None
        server.append(None if after is None else after - before)
    postgres.drop()
    server_cpu = None if None in server else server[1] - server[0]
    return Marginal.between(*runs), server_cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="10,40", metavar="SHORT,LONG")
    parser.add_argument("--workers", default="1,2", metavar="N,N")
    parser.add_argument("--repeats", type=int, default=1, metavar="N")
    args = parser.parse_args(argv)
    short, long = (int(n) for n in args.trials.split(","))
    worker_counts = [int(w) for w in args.workers.split(",")]
    postgres = PostgresDatabases(POSTGRES)
    kinds = ["sqlite", "journal"]
    if postgres.reachable():
        kinds.append("postgresql")
    else:
        print(f"PostgreSQL at {POSTGRES} is unreachable: skipped", file=sys.stderr)
    results: dict[tuple[str, int], list[tuple[Marginal, float | None]]] = {}
    shares = []
    with tempfile.TemporaryDirectory(prefix="bench_storage-") as tmp:
        try:
            for repeat in range(args.repeats):
                for kind in kinds:
                    for workers in worker_counts:
                        log(f"{repeat + 1}/{args.repeats}: {kind}, {workers} worker(s)")
                        result, share = measure_quietly(
                            lambda k=kind, w=workers: measure_storage(
                                k, w, (short, long), Path(tmp), postgres
                            )
                        )
                        results.setdefault((kind, workers), []).append(result)
                        shares.append(share)
        except BenchmarkError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            postgres.drop()

    def rate(kind: str, workers: int) -> float:
        return statistics.median(m.trials_per_minute for m, _ in results[kind, workers])

    rows = []
    for (kind, workers), pairs in results.items():
        marginals = [m for m, _ in pairs]
        server = [c / m.trials for m, c in pairs if c is not None]
        rows.append(
            (
                kind,
                str(workers),
                median_and_spread([m.trials_per_minute for m in marginals], lambda v: f"{v:.0f}"),
                f"{rate(kind, workers) / rate('sqlite', workers):.2f}x",
                median_and_spread([m.idle_per_trial(workers) for m in marginals], ms),
                median_and_spread([m.orchestrator_cpu / m.trials for m in marginals], ms),
                median_and_spread(server, ms) if server else "-",
            )
        )
    print_table(
        f"Trials {short}-{long - 1} per minute by storage: default spec with {' '.join(OPTIONS)}, "
        f"{os.cpu_count()} CPUs (median [min, max] of {args.repeats});\n{disturbance(shares)}",
        (
            "storage",
            "workers",
            "trials/min",
            "vs sqlite",
            "workers not training ms/trial",
            "orchestrator CPU ms/trial",
            "server CPU ms/trial",
        ),
        rows,
    )
    print(
        f"  commands: python -m hpo run default --trials {short}|{long} --seed 0 "
        f"{' '.join(OPTIONS)} --workers N\n            --storage URL --study bench --no-report "
        "--quiet   (URL: a fresh sqlite:///, journal:/// or PostgreSQL database)"
    )

    if "postgresql" in kinds:
        pairs = [p for w in worker_counts for p in results["postgresql", w]]
        cpu = statistics.median(c / m.trials for m, c in pairs if c is not None)
        per_worker = rate("postgresql", worker_counts[0]) / 60 / worker_counts[0]
        print("\nProjection (on paper, not measured): one PostgreSQL server")
        print(f"  server CPU per trial (median over runs): {cpu * 1000:.1f} ms")
        print(f"  one worker finishes {per_worker:.2f} trials/s of this study")
        for cores in SERVER_CORES:
            limit = cores / (cpu * per_worker)
            print(
                f"  a {cores}-core server saturates near {limit:,.0f} workers "
                f"({limit * per_worker * 60:,.0f} trials/min), if CPU is its bottleneck"
            )
        print(
            f"  connections: each orchestrator (hpo run or hpo worker) holds at most {POOL_SIZE} "
            "pooled connections and one for the lock;\n  its trial worker processes hold none, "
            f"so max_connections = 100 allows about {100 // (POOL_SIZE + 1)} orchestrators"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
