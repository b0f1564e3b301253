"""Benchmark: trials on a Dask cluster against one local worker process, and pruning on it.

Every figure comes from ``python -m hpo run`` run as a subprocess on a fresh SQLite file, as
``tests/benchmarks/bench_study.py`` measures (its helpers are used here), beside a reference
measured in the same run:

1. throughput: finished trials per minute with ``--dask ADDRESS`` on a ``distributed.LocalCluster``
   of 2 single-threaded worker processes (started by this script; its scheduler runs in this
   process), against ``--workers 1`` (one local worker process), and beside ``--workers 2`` (two
   local worker processes: what this machine gives a 2-worker executor without Dask) and the
   bare-training ceiling (bench_study's: the default study's training in 2 processes against 1,
   with no orchestrator, storage or pipe), on the same work:
   ``--sampler random --pruner none``, so that both train the same configurations to all their
   epochs. As in bench_study, the same spec and seed run to N_short and to N_long trials and the
   difference is judged, so that start-up (the cluster's connection, the workers' first split)
   cancels. Two trial lengths: the packaged default study (~0.1-0.3 s a trial) and its variant
   with three 300-wide layers (~1 s a trial). Beside each: the orchestrator's CPU per trial (the
   ``hpo run`` process), the scheduler's (this process, measured with getrusage), and the time
   per trial the workers spent not training (the executor's overhead per trial: hand-out,
   result, storing). From the orchestrator's CPU per trial follows the projection of where one
   orchestrator saturates (printed, and marked as a projection).
2. pruning: the packaged default study (TPE, median pruner), the same seeds, with 2 local
   worker processes and with the 2-worker cluster: the share of epochs the pruner saved and the
   best value, per seed. The thresholds a Dask task sees are as fresh as a local one's: both
   are computed as the trial leaves the orchestrator's queue, from every result received by
   then.

3. long (``--part long``, not in ``all``): part 1's tables for trials of tens of seconds (the
   default study with three 1,000-wide layers, as Fashion-MNIST's trials last), 4 and 12
   trials, judged against the targets for real work: Dask's 2 workers over 1 local worker
   >= 1.85x, and over 2 local workers (Dask's own cost) >= 0.95x.

``--no-worker-profile`` starts the workers without Dask's statistical profiler (it samples
every worker thread's stack every 10 ms; the README recommends it off for hpo's clusters).

Run: ``python tests/benchmarks/bench_dask.py [--part throughput|pruning|long|all] [--repeats 3]
[--no-worker-profile]``
(about 8 minutes on 2 idle cores; ``long`` about 19 minutes a repeat). Needs the dask extra.
Not a pytest test: the default pytest run ignores ``tests/benchmarks``.
"""

import argparse
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import dask  # noqa: E402
import distributed  # noqa: E402
import optuna  # noqa: E402

from hpo.records import SPEC_ATTR, run_facts  # noqa: E402
from hpo.storage import close_storages, open_storage  # noqa: E402
from tests.benchmarks.bench_study import (  # noqa: E402
    OWN_PIDS,
    SEED,
    STUDY,
    Marginal,
    bare_training_ceiling,
    code_version,
    disturbance,
    judge,
    log,
    long_trial_spec,
    measure_quietly,
    median_and_spread,
    ms,
    percent,
    print_table,
    print_verdicts,
    run_parts,
    run_study,
    seconds,
)

TARGET_SPEEDUP = 1.8
"""Two single-threaded Dask workers should finish trials at least this many times as fast as
one local worker process, on the same work."""
SHORT, LONG = 10, 60
TENS_OF_SECONDS_HIDDEN = "[1000, 1000, 1000]"
TENS_OF_SECONDS_TRIALS = (4, 12)
"""The long part's short and long runs: 8 trials apart, 4 rounds of 2 workers."""
TENS_OF_SECONDS_TARGETS = (1.85, 0.95)
"""With trials of tens of seconds: Dask's 2 workers over 1 local worker, and over 2 local
workers (Dask's own cost)."""
PRUNING_TRIALS = 50
PRUNING_SEEDS = (0, 1, 2)


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ratios(these: list[Marginal], those: list[Marginal]) -> list[float]:
    """Trials per minute of ``these`` over ``those``, repeat by repeat."""
    return [a.trials_per_minute / b.trials_per_minute for a, b in zip(these, those, strict=True)]


def run_with_scheduler_cpu(spec: str, *, trials: int, options, tmp: Path):
    """``run_study`` and the CPU seconds this process (the cluster's scheduler) used meanwhile."""
    before = self_cpu()
    run = run_study(spec, trials=trials, options=options, tmp=tmp)
    return run, self_cpu() - before


def part_throughput(tmp: Path, repeats: int, cluster: distributed.LocalCluster) -> None:
    specs = {
        "default": ("default", SHORT, LONG),
        "~1 s trials": (str(long_trial_spec(tmp)), SHORT, LONG),
    }
    throughput(tmp, specs, repeats, cluster)


def part_long(tmp: Path, repeats: int, cluster: distributed.LocalCluster) -> None:
    specs = {
        f"trials of tens of seconds ({TENS_OF_SECONDS_HIDDEN})": (
            str(long_trial_spec(tmp, TENS_OF_SECONDS_HIDDEN, "default-long")),
            *TENS_OF_SECONDS_TRIALS,
        )
    }
    throughput(tmp, specs, repeats, cluster, targets=TENS_OF_SECONDS_TARGETS)


def throughput(
    tmp: Path,
    specs: dict[str, tuple[str, int, int]],
    repeats: int,
    cluster: distributed.LocalCluster,
    *,
    targets: tuple[float, float | None] = (TARGET_SPEEDUP, None),
) -> None:
    """Part 1's tables for each of ``specs`` (label: spec, the short and the long run's
    trials); ``targets``: Dask's 2 workers over 1 local worker, and over 2 local workers."""
    base = ("--sampler", "random", "--pruner", "none")
    executors = {
        "1 local worker": (*base, "--workers", "1"),
        "2 local workers": (*base, "--workers", "2"),
        "Dask, 2 workers": (*base, "--dask", cluster.scheduler_address),
    }
    log("the machine's ceiling: the default study's training in 1 and in 2 bare processes")
    ceiling, _ = measure_quietly(bare_training_ceiling)
    for label, (spec, short, long) in specs.items():
        results: dict[str, list[Marginal]] = {name: [] for name in executors}
        scheduler_cpu: list[float] = []
        shares = []
        params: dict[str, dict[int, dict]] = {}
        for repeat in range(repeats):
            for name, options in executors.items():
                log(f"throughput {label} {repeat + 1}/{repeats}: {name}, {short} and {long}")

                def pair(options=options, spec=spec, short=short, long=long):
                    first = run_with_scheduler_cpu(spec, trials=short, options=options, tmp=tmp)
                    second = run_with_scheduler_cpu(spec, trials=long, options=options, tmp=tmp)
                    return first, second

                ((first, cpu1), (second, cpu2)), share = measure_quietly(pair)
                results[name].append(Marginal.between(first, second))
                params[name] = second.params
                shares.append(share)
                if "Dask" in name:
                    scheduler_cpu.append((cpu2 - cpu1) / (long - short))
        rows = []
        for name, m in results.items():
            workers = 1 if name == "1 local worker" else 2
            rows.append(
                (
                    name,
                    median_and_spread([x.trials_per_minute for x in m], lambda v: f"{v:.0f}"),
                    median_and_spread([x.train_per_trial for x in m], seconds),
                    median_and_spread([x.orchestrator_cpu / x.trials for x in m], ms),
                    median_and_spread(scheduler_cpu, ms) if "Dask" in name else "-",
                    median_and_spread([x.idle_per_trial(workers) for x in m], ms),
                )
            )
        print_table(
            f"1. Throughput, {label}: finished trials per minute of trials {short}-{long - 1}, "
            f"--sampler random --pruner none, SQLite\n   (median [min, max] of {repeats}); "
            f"{disturbance(shares)}",
            (
                "executor",
                "trials/min",
                "train s/trial",
                "orchestrator CPU ms/trial",
                "scheduler CPU ms/trial",
                "workers not training, ms/trial",
            ),
            rows,
        )
        one, two = results["1 local worker"], results["2 local workers"]
        dask = results["Dask, 2 workers"]
        speedups = ratios(dask, one)
        speedup = statistics.median(speedups)
        own_costs = ratios(dask, two)
        own_cost = statistics.median(own_costs)
        same = sum(params["1 local worker"][n] == params["Dask, 2 workers"].get(n) for n in
                   params["1 local worker"])  # fmt: skip
        figure = f"Dask 2 workers over 1 local worker, {label}"
        target = f">= {targets[0]}x"
        own_figure = f"Dask 2 workers over 2 local workers, {label} (Dask's own cost)"
        own_target = "" if targets[1] is None else f">= {targets[1]}x"
        cpu = statistics.median(x.orchestrator_cpu / x.trials for x in dask)
        train = statistics.median(x.train_per_trial for x in one)
        print_table(
            "",
            ("figure", "value", "target", "result"),
            [
                (
                    figure,
                    median_and_spread(speedups, lambda v: f"{v:.2f}x"),
                    target,
                    judge(figure, f"{speedup:.2f}x", target, speedup >= targets[0]),
                ),
                (
                    "2 bare training processes over 1, no orchestrator (this machine's ceiling)",
                    f"{ceiling:.2f}x",
                    "",
                    "",
                ),
                (
                    f"2 local workers over 1 local worker, {label}",
                    median_and_spread(ratios(two, one), lambda v: f"{v:.2f}x"),
                    "",
                    "",
                ),
                (
                    own_figure,
                    median_and_spread(own_costs, lambda v: f"{v:.2f}x"),
                    own_target,
                    ""
                    if targets[1] is None
                    else judge(own_figure, f"{own_cost:.2f}x", own_target, own_cost >= targets[1]),
                ),
                ("same configurations", f"{same} of {len(params['1 local worker'])}", "all", ""),
                (
                    "projection: trials/s one orchestrator can store (1 / its CPU per trial)",
                    f"{1 / cpu:.0f}",
                    "(on paper)",
                    "",
                ),
                (
                    "projection: workers of this trial length that saturate it",
                    f"{train / cpu:.0f}",
                    "(on paper)",
                    "",
                ),
            ],
        )
    print(
        "  The projection assumes the orchestrator's CPU per trial stays as measured (SQLite, "
        "one process)\n  and that a trial lasts as long on a worker as here; past it, trials "
        "wait for the orchestrator.\n  commands: python -m hpo run SPEC --trials "
        f"{short}|{long} --seed {SEED} --sampler random --pruner none\n            "
        "--workers 1 | --dask ADDRESS, --storage sqlite:///TMP/X.db "
        f"--study {STUDY} --no-report --quiet"
    )


def pruning_figures(trials: list, epochs: int) -> tuple[float, float]:
    """(share of epochs saved, best value) of a run's finished trials of ``epochs`` each."""
    epochs_run = sum(int(run_facts(t)["epochs_run"]) for t in trials)
    best = max((t.value for t in trials if t.value is not None), default=float("nan"))
    return 1 - epochs_run / (len(trials) * epochs), best


def part_pruning(tmp: Path, repeats: int, cluster: distributed.LocalCluster) -> None:
    executors = {
        "2 local workers": ("--workers", "2"),
        "Dask, 2 workers": ("--dask", cluster.scheduler_address),
    }
    rows = []
    saved: dict[str, list[float]] = {name: [] for name in executors}
    best: dict[str, list[float]] = {name: [] for name in executors}
    for seed in PRUNING_SEEDS:
        for name, options in executors.items():
            log(f"pruning: seed {seed}, {name}, {PRUNING_TRIALS} trials")
            path = tmp / f"pruning-{seed}-{len(rows)}.db"
            url = f"sqlite:///{path}"
            run_study(
                "default", trials=PRUNING_TRIALS, options=(*options, "--seed", str(seed)),
                tmp=tmp, url=url,
            )  # fmt: skip
            try:
                study = optuna.load_study(study_name=STUDY, storage=open_storage(url, write=False))
                trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
                epochs = int(study.user_attrs[SPEC_ATTR]["training"]["epochs"])
                share, value = pruning_figures(trials, epochs)
            finally:
                close_storages()
            saved[name].append(share)
            best[name].append(value)
            rows.append((str(seed), name, percent(share), f"{value:.4f}"))
    print_table(
        f"2. Pruning: the default study (TPE, median pruner), {PRUNING_TRIALS} trials, per seed",
        ("seed", "executor", "epochs saved", "best value"),
        rows,
    )
    print_table(
        "",
        ("figure", "2 local workers", "Dask, 2 workers"),
        [
            (
                "epochs saved, median of seeds",
                percent(statistics.median(saved["2 local workers"])),
                percent(statistics.median(saved["Dask, 2 workers"])),
            ),
            (
                "best value, median of seeds",
                f"{statistics.median(best['2 local workers']):.4f}",
                f"{statistics.median(best['Dask, 2 workers']):.4f}",
            ),
        ],
    )
    print(
        "  The --seed flag sets the study seed; 2 trials train at once in both, so the order in "
        "which results\n  arrive (and so the thresholds) depends on timing in both alike."
    )


PARTS = {"throughput": part_throughput, "pruning": part_pruning, "long": part_long}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3, metavar="N")
    parser.add_argument(
        "--no-worker-profile",
        action="store_true",
        help="start the cluster's workers without Dask's statistical profiler (the setting the "
        "README recommends for hpo's clusters)",
    )
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = ["throughput", "pruning"] if args.part == "all" else [args.part]
    version = code_version()
    print(
        f"bench_dask: code {version}, python {sys.version.split()[0]}, distributed "
        f"{distributed.__version__}, {os.cpu_count()} CPUs, parts: {', '.join(names)}; "
        f"workers' profiler {'off' if args.no_worker_profile else 'on (Dask default)'}"
    )
    start = time.perf_counter()
    environment = dict(os.environ)
    with (
        dask.config.set({"distributed.worker.profile.enabled": not args.no_worker_profile}),
        tempfile.TemporaryDirectory(prefix="bench_dask-") as tmp,
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
    ):
        # Starting the cluster left its workers' variables (MALLOC_TRIM_THRESHOLD_, ...) in this
        # process's environment: the hpo commands, the reference's included, start without them.
        os.environ.clear()
        os.environ.update(environment)
        with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
            for nanny in (False, True):  # the cluster's CPU is the measurement's, not noise
                OWN_PIDS.update(client.run(os.getpid, nanny=nanny).values())
        if not run_parts(names, lambda name: PARTS[name](Path(tmp), args.repeats, cluster)):
            return 1
    print_verdicts(start=start, version=version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
