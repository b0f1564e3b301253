"""Benchmark: the sampler's cost per trial as a study grows, against a trial's training.

For each of TPE (hpo's settings: constant liar, the spec's startup trials), random search and
CMA-ES, a study of the packaged default spec is filled with N finished trials (100, 1,000 and
10,000; parameters drawn at random in the spec's space, values from a smooth function of them
plus noise, a third of them pruned with their epochs), then asked for new trials as hpo's
orchestrator asks: ``study.ask()`` with the sampler ``hpo.service.samplers_for`` builds for the
next number (TPE's search space calculator kept across the asks, as in a run; a last row shows
TPE with a sampler made afresh per ask, as before), then ``hpo.trial.suggest``. Each ask is
told FAIL, so the study keeps N finished trials. Then TPE as a run asks it: through the
orchestrator's in-memory view of the study (``hpo.sampler_view``, at most ``WINDOW`` recent and
the best trials), its first read of the study timed apart; and the view's effect on the search
(``--quality-asks``): TPE adds trials one at a time to the 10,000, on the whole study and
through the view, with the same seeds, and the mean noise-free value of what each drew is
compared. The studies live in Optuna's in-memory
storage: the figure is the sampler's cost, not SQLite's (a long-running orchestrator reads
finished trials from Optuna's cache, once).

The reference, measured in the same run: the median training time of the default study's
trials (``hpo.trial.run_task`` in this process, one BLAS thread, random configurations of the
space, no pruning). Reported: milliseconds per ask and its share of the median trial.

Run: ``python tests/benchmarks/bench_sampler.py [--asks 5]`` (a few minutes: TPE's asks at
10,000 trials dominate). Not a pytest test: the default pytest run ignores ``tests/benchmarks``.
"""

import argparse
import dataclasses
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from hpo.pruning import NoPruning  # noqa: E402
from hpo.service import make_sampler, sampler_view, samplers_for  # noqa: E402
from hpo.spec import load_spec  # noqa: E402
from hpo.trial import (  # noqa: E402
    TrialTask,
    configuration,
    load_study_split,
    run_task,
    suggest,
    trial_seed,
)

SIZES = (100, 1_000, 10_000)
SAMPLERS = ("tpe", "random", "cmaes")
TARGET_SHARE = 0.10
"""TPE's ask should cost below this share of a median trial's training at 10,000 trials."""


def quality(params: dict) -> float:
    """The synthetic validation accuracy: best at a learning rate of 10^-2.5."""
    return 0.98 - 0.05 * (math.log10(params["learning_rate"]) + 2.5) ** 2


def template_trials(spec, n: int, rng: np.random.Generator) -> list[optuna.trial.FrozenTrial]:
    """``n`` finished trials of ``spec``'s space: random parameters, a smooth value with noise."""
    sampler_study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=int(rng.integers(2**31)))
    )
    epochs = spec.training.epochs
    out = []
    for _ in range(n):
        trial = sampler_study.ask()
        suggest(trial, spec)
        p = trial.params
        value = float(np.clip(quality(p) + rng.normal(0, 0.01), 0.05, 1.0))
        pruned = rng.random() < 1 / 3
        last = int(rng.integers(1, epochs)) if pruned else epochs
        curve = {e: value * (1 - math.exp(-e / 3)) for e in range(1, last + 1)}
        out.append(
            optuna.trial.create_trial(
                params=dict(p),
                distributions=dict(trial.distributions),
                value=None if pruned else value,
                state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
                intermediate_values=curve,
            )
        )
        sampler_study.tell(trial, state=TrialState.FAIL)
    return out


def ask_ms(spec, trials: list, asks: int, *, kept: bool = True) -> float:
    """Median milliseconds of ``asks`` asks (sampler built, ask, suggest) on a study of
    ``trials``; each ask is told FAIL. ``kept=False``: each sampler made afresh
    (``make_sampler`` alone, as hpo asked before ``samplers_for``), for comparison."""
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    sampler_of = samplers_for(spec)  # one run's: the first ask reads every trial's space
    if not kept:
        sampler_of = lambda number: make_sampler(spec, number=number)  # noqa: E731
    times = []
    for i in range(asks):
        start = time.perf_counter()
        study.sampler = sampler_of(len(trials) + i)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = study.ask()
            suggest(trial, spec)
        times.append(time.perf_counter() - start)
        study.tell(trial, state=TrialState.FAIL)
    return 1000 * statistics.median(times)


def view_ask_ms(spec, trials: list, asks: int) -> tuple[float, float]:
    """Median milliseconds of ``asks`` asks through the orchestrator's view of the study
    (``hpo.sampler_view``: it observes the new trials, TPE draws in the view, the stored
    study's trial takes the draw), and the seconds the view took to read the ``trials`` once,
    as at a run's start."""
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    view = sampler_view(spec, study)
    start = time.perf_counter()
    view.observe(study.get_trials(deepcopy=False))
    first = time.perf_counter() - start
    times = []
    for i in range(asks):
        start = time.perf_counter()
        view.observe(study.get_trials(deepcopy=False)[len(trials) :])
        study.sampler = view.propose(len(trials) + i, lambda t: suggest(t, spec))
        trial = study.ask()
        suggest(trial, spec)
        times.append(time.perf_counter() - start)
        study.tell(trial, state=TrialState.FAIL)
    return 1000 * statistics.median(times), first


def search_quality(spec, trials: list, asks: int, seed: int, *, through_view: bool) -> float:
    """The mean synthetic accuracy (``quality``, no noise) of ``asks`` trials that TPE adds,
    one at a time, to a study of ``trials``: on the study itself or through the view."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    view = sampler_view(spec, study) if through_view else None
    sampler_of = samplers_for(spec)
    drawn = []
    for i in range(asks):
        number = len(trials) + i
        if view is None:
            study.sampler = sampler_of(number + 1_000_000 * seed)
        else:
            view.observe(study.get_trials(deepcopy=False)[0 if i == 0 else len(trials) :])
            study.sampler = view.propose(number + 1_000_000 * seed, lambda t: suggest(t, spec))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = study.ask()
            suggest(trial, spec)
        q = quality(trial.params)
        drawn.append(q)
        study.tell(trial, float(np.clip(q + rng.normal(0, 0.01), 0.05, 1.0)))
    return statistics.mean(drawn)


def median_trial_seconds(spec, n: int = 8) -> float:
    """The median training time of ``n`` random configurations of the default study."""
    split = load_study_split(spec)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seconds = []
    with threadpool_limits(limits=1, user_api="blas"):
        for number in range(n):
            trial = study.ask()
            suggest(trial, spec)
            task = TrialTask(
                number,
                configuration(spec, trial.params),
                tuple(trial_seed(0, number).entropy),
                NoPruning().thresholds(trial_number=number, finished=()),
            )
            seconds.append(run_task(task, spec, split).seconds)
            study.tell(trial, state=TrialState.FAIL)
    return statistics.median(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--asks", type=int, default=5, metavar="N", help="asks timed per cell")
    parser.add_argument(
        "--quality-asks",
        type=int,
        default=100,
        metavar="N",
        help="trials TPE adds to the 10,000 for the quality comparison (0: none)",
    )
    parser.add_argument("--quality-seeds", type=int, default=3, metavar="N")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    base = load_spec("default")
    reference = median_trial_seconds(base)
    rng = np.random.default_rng(0)
    pools = {n: template_trials(base, n, rng) for n in SIZES}
    print(
        f"bench_sampler: the default study's space; median trial training {reference:.3f} s "
        f"(run_task, 1 BLAS thread); median of {args.asks} asks per cell"
    )
    print(f"  {'sampler':24}" + "".join(f"  {f'{n:,} trials':>22}" for n in SIZES))
    verdict = None
    for name in SAMPLERS:
        spec = dataclasses.replace(base, search=dataclasses.replace(base.search, sampler=name))
        cells = []
        for n in SIZES:
            ms = ask_ms(spec, pools[n], args.asks)
            cells.append(f"{ms:9.1f} ms ({ms / 1000 / reference:6.1%})")
            if name == "tpe" and n == SIZES[-1]:
                verdict = ms / 1000 / reference
        print(f"  {name:24}" + "".join(f"  {c:>22}" for c in cells))
    tpe = dataclasses.replace(base, search=dataclasses.replace(base.search, sampler="tpe"))
    cells = []
    for n in SIZES:
        ms = ask_ms(tpe, pools[n], args.asks, kept=False)
        cells.append(f"{ms:9.1f} ms ({ms / 1000 / reference:6.1%})")
    print(f"  {'tpe, a new space per ask':24}" + "".join(f"  {c:>22}" for c in cells))
    cells, firsts = [], []
    for n in SIZES:
        ms, first = view_ask_ms(tpe, pools[n], args.asks)
        cells.append(f"{ms:9.1f} ms ({ms / 1000 / reference:6.1%})")
        firsts.append(first)
        if n == SIZES[-1]:
            verdict = ms / 1000 / reference
    print(f"  {'tpe through the view':24}" + "".join(f"  {c:>22}" for c in cells))
    print(
        "  the view's first read of the study (once per run): "
        + ", ".join(f"{f:.2f} s at {n:,}" for f, n in zip(firsts, SIZES, strict=True))
    )
    if args.quality_asks:
        print(
            f"  search quality at {SIZES[-1]:,} trials: mean synthetic accuracy of "
            f"{args.quality_asks} more TPE trials (noise-free; the pool's mean "
            f"{statistics.mean(quality(t.params) for t in pools[SIZES[-1]]):.4f})"
        )
        for seed in range(args.quality_seeds):
            whole = search_quality(
                tpe, pools[SIZES[-1]], args.quality_asks, seed, through_view=False
            )
            viewed = search_quality(
                tpe, pools[SIZES[-1]], args.quality_asks, seed, through_view=True
            )
            print(
                f"    seed {seed}: on the whole study {whole:.4f}, through the view "
                f"{viewed:.4f} ({viewed - whole:+.4f})"
            )
    ok = verdict is not None and verdict < TARGET_SHARE
    print(
        f"  TPE through the view at {SIZES[-1]:,} trials: {verdict:.1%} of a median trial "
        f"(target < {TARGET_SHARE:.0%}): {'PASS' if ok else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
