"""Benchmark: ``hpo confirm`` and ``hpo best --verify`` on the packaged default study.

1. confirm: the default study (50 trials, ``--workers 2``), then ``hpo confirm --top 5 --seeds 5
   --workers 2 --json``: its wall time beside the reference measured in the same run, ``hpo run
   default --sampler random --pruner none --trials 25 --workers 2`` (as many full trainings of
   the same net, orchestrated by the search's runner). Printed: the confirmed top 5 with their
   intervals, the verdict, and whether the search's single-seed ranking agreed (its first, and
   Spearman's rank correlation between the two rankings).
2. verify: every finished trial of that study retrained in this process
   (``hpo.best_trial.verify_trial``, as ``hpo best --verify --trial N`` does): how many
   reproduce bit for bit (the target: all), and the seconds a verification takes against the
   trial's own.

Run: ``python tests/benchmarks/bench_confirm.py [--seed 0]`` (about 3 minutes on 2 cores). Not a
pytest test: the default pytest run ignores ``tests/benchmarks``.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import optuna  # noqa: E402
from scipy import stats  # noqa: E402

from hpo.best_trial import verify_trial  # noqa: E402
from hpo.records import load_hpo_study, run_facts  # noqa: E402
from hpo.storage import close_storages  # noqa: E402
from tests.benchmarks.bench_study import (  # noqa: E402
    STUDY,
    code_version,
    hpo,
    judge,
    log,
    print_table,
    run_command,
    run_study,
)

TRIALS, TOP, SEEDS, WORKERS = 50, 5, 5, 2


def part_confirm(tmp: Path, seed: int) -> tuple[str, list]:
    url = f"sqlite:///{tmp / 'default.db'}"
    log(f"the default study: {TRIALS} trials, seed {seed}, {WORKERS} workers")
    run_study("default", trials=TRIALS, options=("--workers", str(WORKERS), "--seed", str(seed)),
              tmp=tmp, url=url)  # fmt: skip
    log(f"hpo confirm --top {TOP} --seeds {SEEDS} --workers {WORKERS}")
    confirm = run_command(
        hpo(
            "confirm",
            "--study",
            STUDY,
            "--storage",
            url,
            "--top",
            str(TOP),
            "--seeds",
            str(SEEDS),
            "--workers",
            str(WORKERS),
            "--json",
        )
    )
    rows = [json.loads(line) for line in confirm.output.splitlines() if line.startswith("{")]
    log(f"reference: hpo run --trials {TOP * SEEDS} --sampler random --pruner none")
    reference = run_study("default", trials=TOP * SEEDS, tmp=tmp, options=(
        "--workers", str(WORKERS), "--sampler", "random", "--pruner", "none"))  # fmt: skip
    table = [
        (
            str(r["rank"]),
            f"#{r['trial']}",
            f"{r['mean']:.4f}",
            f"[{r['low']:.4f}, {r['high']:.4f}]",
            " ".join(f"{v:.4f}" for v in r["values"]),
            f"{r['search_value']:.4f} ({r['search_rank']})",
            "-" if r["p_vs_best"] is None else f"{r['p_vs_best']:.3g}",
            "tied" if r["tied_with_best"] else ("first" if r["rank"] == 1 else "apart"),
        )
        for r in rows
    ]
    print_table(
        f"1. hpo confirm --top {TOP} --seeds {SEEDS} on the default study (seed {seed}, "
        f"{TRIALS} trials)",
        (
            "rank",
            "trial",
            "mean",
            "95% interval",
            "values by seed",
            "search value (rank)",
            "p vs first",
            "",
        ),
        table,
    )
    rho = stats.spearmanr([r["search_rank"] for r in rows], [r["rank"] for r in rows]).statistic
    first = rows[0]
    ties = [f"#{r['trial']}" for r in rows if r["tied_with_best"]]
    print_table(
        "",
        ("figure", "value"),
        [
            ("search's first is the confirmed first", str(first["search_rank"] == 1)),
            ("Spearman's rho, search rank vs confirmed rank", f"{rho:.2f}"),
            ("tied with the confirmed first (paired t-test, 5%)", ", ".join(ties) or "none"),
            (f"hpo confirm wall time, {TOP * SEEDS} runs", f"{confirm.wall:.1f} s"),
            (f"reference: hpo run, {TOP * SEEDS} full trials", f"{reference.wall:.1f} s"),
            ("ratio confirm / reference", f"{confirm.wall / reference.wall:.2f}x"),
        ],
    )
    return url, rows


def part_verify(url: str) -> str:
    study, spec = load_hpo_study(storage_url=url, study_name=STUDY, write=False)
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()
                and t.state.name in ("COMPLETE", "PRUNED")]  # fmt: skip
    log(f"verifying {len(finished)} trials")
    reproduced, ratios, failures = 0, [], []
    for t in finished:
        start = time.perf_counter()
        v = verify_trial(study, spec, t.number)
        ratios.append((time.perf_counter() - start) / max(run_facts(t)["train_seconds"], 1e-9))
        reproduced += v.reproduced
        if not v.reproduced:
            failures.append(v.message())
    close_storages()
    print_table(
        "2. hpo best --verify on every finished trial of that study",
        ("figure", "value", "target", "result"),
        [
            (
                "trials reproduced bit for bit",
                f"{reproduced} of {len(finished)}",
                "all",
                judge("verify", str(reproduced), "all", reproduced == len(finished)),
            ),
            (
                "verify time / the trial's own training time, median",
                f"{statistics.median(ratios):.2f}x",
                "",
                "",
            ),
        ],
    )
    for message in failures[:5]:
        print(f"  {message}")
    return f"{reproduced} of {len(finished)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"bench_confirm: code {code_version()}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench_confirm-") as tmp:
        url, _ = part_confirm(Path(tmp), args.seed)
        part_verify(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
