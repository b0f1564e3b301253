""" "What the study found": short findings computed from a snapshot (pure functions)."""

import math
import statistics
from collections import defaultdict
from typing import Any

from reports.snapshot import StudySnapshot

OVERFIT_GAP = 0.05
"""A best epoch whose training accuracy exceeds validation accuracy by more than this overfits."""


def counts(snapshot: StudySnapshot) -> dict[str, int]:
    out = {
        state.lower(): len(snapshot.by_state(state))
        for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
    }
    out["diverged"] = sum(t.diverged for t in snapshot.trials)
    out["total"] = len(snapshot.trials)
    return out


def compute_time(snapshot: StudySnapshot) -> dict[str, Any]:
    """Training seconds in total and per finished trial, and the trials' date range."""
    seconds = [t.train_seconds for t in snapshot.trials if t.train_seconds is not None]
    starts = [t.started for t in snapshot.trials if t.started]
    ends = [t.completed for t in snapshot.trials if t.completed]
    return {
        "total_seconds": sum(seconds),
        "mean_seconds": statistics.fmean(seconds) if seconds else None,
        "median_seconds": statistics.median(seconds) if seconds else None,
        "first": min(starts) if starts else None,
        "last": max(ends) if ends else None,
    }


def best_region(snapshot: StudySnapshot) -> dict[str, dict]:
    """Per parameter, where the top decile (3 to 10 trials) of complete trials lies."""
    ranked = snapshot.ranked()
    top = ranked[: max(3, min(10, len(ranked) // 10))]
    regions = {}
    for p in snapshot.params:
        values = [t.params[p.name] for t in top if p.name in t.params]
        if not values:
            continue
        if p.kind == "categorical":
            tally: dict[str, int] = defaultdict(int)
            for v in values:
                tally[str(v)] += 1
            regions[p.name] = {
                "kind": "categorical",
                "counts": dict(sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))),
            }
        else:
            regions[p.name] = {
                "kind": "float",
                "low": min(values),
                "high": max(values),
                "log": p.log,
                "n": len(values),
            }
    return regions


def category_ranking(snapshot: StudySnapshot, name: str) -> list[dict]:
    """Choices of a categorical parameter by median validation accuracy, best first."""
    groups: dict[str, list[float]] = defaultdict(list)
    for t in snapshot.by_state("COMPLETE"):
        if name in t.params:
            groups[str(t.params[name])].append(t.value)
    rows = [
        {"choice": k, "n": len(v), "median": statistics.median(v), "best": max(v)}
        for k, v in groups.items()
    ]
    return sorted(rows, key=lambda r: (-r["median"], -r["best"], r["choice"]))


def pruning_by_choice(snapshot: StudySnapshot, name: str) -> list[dict]:
    """Per choice of a categorical parameter (the space's order, then any other seen): its
    finished trials, how many completed, how many the pruner stopped and at which epochs, and
    how many diverged."""
    p = snapshot.spec.param(name)
    order = [str(c) for c in p.choices] if p is not None and p.kind == "choice" else []
    rows: dict[str, dict] = {c: {"choice": c, "trials": 0, "complete": 0, "pruned_at": []}
                             for c in order}  # fmt: skip
    for t in snapshot.trials:
        if t.state not in ("COMPLETE", "PRUNED") or name not in t.params:
            continue
        row = rows.setdefault(
            str(t.params[name]),
            {"choice": str(t.params[name]), "trials": 0, "complete": 0, "pruned_at": []},
        )
        row["trials"] += 1
        if t.state == "COMPLETE":
            row["complete"] += 1
        elif not t.diverged:
            row["pruned_at"].append(t.epochs_run or 0)
    for row in rows.values():
        row["diverged"] = row["trials"] - row["complete"] - len(row["pruned_at"])
    return list(rows.values())


def unheard_choices(snapshot: StudySnapshot, name: str) -> str:
    """A sentence on the choices of ``name`` that no trial completed (never tried, or every
    trial pruned or diverged): the ranking of the others says nothing about them; "" when
    every choice completed a trial."""
    parts = []
    for row in pruning_by_choice(snapshot, name):
        if row["complete"]:
            continue
        if not row["trials"]:
            parts.append(f"{row['choice']} (never tried)")
            continue
        what = []
        if row["pruned_at"]:
            low, high = min(row["pruned_at"]), max(row["pruned_at"])
            at = f"epoch {low}" if low == high else f"epochs {low}-{high}"
            what.append(f"{len(row['pruned_at'])} pruned at {at}")
        if row["diverged"]:
            what.append(f"{row['diverged']} diverged")
        parts.append(f"{row['choice']} ({_plural(row['trials'], 'trial')}: {', '.join(what)})")
    if not parts:
        return ""
    text = f"Not ranked, as no trial of theirs completed: {'; '.join(parts)}."
    if any(row["pruned_at"] and not row["complete"] for row in pruning_by_choice(snapshot, name)):
        warmup = snapshot.spec.warmup_epochs
        text += (
            f" A pruned trial was judged on its first epochs (warm-up: "
            f"{_plural(warmup, 'epoch')}), which favours fast starters over slow ones: to give "
            f"these a fair hearing, fix {name} to one of them or raise [search] warmup_epochs."
        )
    return text


def sanity_lines(snapshot: StudySnapshot) -> list[str]:
    """cs231n's sanity checks of the best configuration, each with what it means."""
    s = snapshot.sanity
    if s is None:
        return []
    chance = math.log(s.classes)
    near = abs(s.initial_loss - chance) <= 0.1 * chance
    overfits = s.overfit_accuracy >= 1.0
    return [
        f"Initial loss {s.initial_loss:.3f} against ln({s.classes}) = {chance:.3f} (trial "
        f"#{s.trial}'s net untrained, weight decay off): "
        + (
            "as expected, the net starts with no preference among the classes."
            if near
            else "off: the initial weights are large enough that the untrained net is already "
            "confident (a smaller init scale starts it near chance)."
        ),
        (
            f"On {s.overfit_samples} training samples with weight decay and dropout off, the "
            f"training diverged after {s.overfit_epochs} epochs: without the regularization "
            "this learning rate is too large to fit them (not a verdict on the net)."
        )
        if s.overfit_diverged
        else f"On {s.overfit_samples} training samples with weight decay and dropout off, "
        f"{s.overfit_epochs} epochs reach training accuracy {s.overfit_accuracy:.0%}: "
        + (
            "the net and its training can fit data, as they must."
            if overfits
            else "a net that cannot fit 20 samples has a bug, too little capacity or too small "
            "a learning rate."
        ),
    ]


def overfitting(snapshot: StudySnapshot) -> dict | None:
    best = snapshot.best_trial()
    if best is None or best.train_accuracy is None:
        return None
    gap = best.train_accuracy - best.value
    return {
        "trial": best.number,
        "train": best.train_accuracy,
        "val": best.value,
        "gap": gap,
        "overfits": gap > OVERFIT_GAP + 1e-9,  # 0.55 - 0.5 is a hair above 0.05 in floats
    }


def pruning_savings(snapshot: StudySnapshot) -> dict | None:
    """Epochs trained against the epochs the finished trials would have run unpruned.

    A complete trial ran what it would have run anyway (early stopping is not pruning's
    saving); a pruned one (diverged ones aside: they stop by themselves) would have run every
    epoch of the spec.
    """
    finished = [t for t in snapshot.trials if t.state in ("COMPLETE", "PRUNED")]
    if not finished or not snapshot.epochs:
        return None
    trained = sum(t.epochs_run or 0 for t in finished)
    full = sum(
        snapshot.epochs if t.state == "PRUNED" and not t.diverged else (t.epochs_run or 0)
        for t in finished
    )
    return {
        "trained": trained,
        "full": full,
        "saved": 1 - trained / full if full else 0.0,
        "pruned": sum(t.state == "PRUNED" and not t.diverged for t in finished),
    }


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def fmt_value(value: Any, *, log: bool = False) -> str:
    if isinstance(value, float):
        if value != 0 and (log or abs(value) < 1e-3 or abs(value) >= 1e4):
            return f"{value:.2e}"
        return f"{value:.4g}"
    return str(value)


def findings(snapshot: StudySnapshot) -> list[str]:
    """Plain sentences for the report's "what the study found" section."""
    out = []
    ranked = snapshot.ranked()
    if not ranked:
        c = counts(snapshot)
        out.append(
            f"No trial has completed yet ({c['pruned']} pruned, {c['fail']} failed, "
            f"{c['running']} running)."
        )
        return out
    best = snapshot.best_trial()
    noise = uncertainty(snapshot, top_k=1)
    if snapshot.confirmed:
        c = snapshot.confirmed[0]
        interval = f" [{c.low:.4f}, {c.high:.4f}]" if c.low == c.low else ""
        out.append(
            f"The confirmed best configuration, trial #{c.trial}, has mean validation accuracy "
            f"{c.mean:.4f}{interval} over {_plural(len(c.values), 'fresh seed')} (hpo confirm); "
            f"its search run reached {best.value:.4f} at epoch {best.best_epoch}, "
            f'#{c.search_rank} in the search. The table, the curves marked "confirmed best", '
            "the activations and the generalization gap below are about it."
        )
    else:
        out.append(
            f"The best configuration, trial #{best.number}, reached validation accuracy "
            f"{best.value:.4f} at epoch {best.best_epoch}"
            + (
                f" (one run: about ±{noise['se']:.4f}, the standard error on {noise['n']} "
                "validation samples)."
                if noise
                else "."
            )
        )
    regions = best_region(snapshot)
    parts = []
    for name, r in regions.items():
        if r["kind"] == "float":
            if math.isclose(r["low"], r["high"]):
                parts.append(f"{name} {fmt_value(r['low'], log=r['log'])}")
            else:
                parts.append(
                    f"{name} {fmt_value(r['low'], log=r['log'])} to "
                    f"{fmt_value(r['high'], log=r['log'])}"
                )
        else:
            choice, n = next(iter(r["counts"].items()))
            parts.append(f"{name} mostly {choice} ({n} of {sum(r['counts'].values())})")
    if parts:
        n_top = max(3, min(10, len(ranked) // 10))
        n = min(n_top, len(ranked))
        noise = uncertainty(snapshot, top_k=n)
        within = (
            f" (one run each; {noise['within']} of the other {noise['shown']} within one "
            "standard error of the best)"
            if noise and noise["shown"]
            else ""
        )
        where = (
            "The best configuration lies at "
            if n == 1
            else f"The top {n} configurations{within} lie at "
        )
        out.append(where + "; ".join(parts) + ".")
    if any(p.name == "optimizer" for p in snapshot.params):
        ranking = category_ranking(snapshot, "optimizer")
        unheard = unheard_choices(snapshot, "optimizer")
        among = ", among those that completed a trial" if unheard else ""
        if ranking:
            top = ranking[0]
            out.append(
                f"Best optimizer by median validation accuracy{among}: {top['choice']} "
                f"(median {top['median']:.4f} over {_plural(top['n'], 'trial')}"
                + (
                    f"; next {ranking[1]['choice']} at {ranking[1]['median']:.4f}"
                    f"{_compared(snapshot, 'optimizer', top['choice'], ranking[1]['choice'])})."
                    if len(ranking) > 1
                    else ")."
                )
            )
        if unheard:
            out.append(unheard)
    fit = overfitting(snapshot)
    if fit is not None:
        if fit["overfits"]:
            out.append(
                f"The best configuration overfits: training accuracy {fit['train']:.4f} "
                f"against validation {fit['val']:.4f} at its best epoch (gap "
                f"{fit['gap']:.3f}); stronger weight decay or dropout may help."
            )
        else:
            out.append(
                f"The best configuration does not overfit noticeably: training accuracy "
                f"{fit['train']:.4f} against validation {fit['val']:.4f}."
            )
    saving = pruning_savings(snapshot)
    if saving is not None and saving["pruned"]:
        out.append(
            f"Pruning stopped {_plural(saving['pruned'], 'trial')} early and saved "
            f"{saving['saved']:.0%} of the epochs ({saving['trained']} trained of "
            f"{saving['full']})."
        )
    elif saving is not None:
        out.append("No trial was pruned.")
    return out


def _compared(snapshot: StudySnapshot, name: str, first: str, second: str) -> str:
    """How sure "``first`` beats ``second``" is: a two-sided Mann-Whitney U test between the
    two choices' complete trials (the trials of a search are not paired by seed)."""
    from scipy import stats

    values = {first: [], second: []}
    for t in snapshot.by_state("COMPLETE"):
        if str(t.params.get(name)) in values:
            values[str(t.params[name])].append(t.value)
    if min(len(v) for v in values.values()) < 2:
        return "; too few trials to tell them apart"
    p = float(stats.mannwhitneyu(values[first], values[second]).pvalue)
    verdict = "distinguishable" if p < 0.05 else "not distinguishable"
    return f"; {verdict} at 5% by a Mann-Whitney test, p = {p:.2g}"


def mean_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """The mean of ``values`` and its Student-t interval at ``level`` (NaN bounds for one value)."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def accuracy_interval(accuracies: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """``mean_interval`` of accuracies, its bounds kept within [0, 1]: Student's t knows no
    bound, and a top configuration's few runs near 0.98 gave [0.9588, 1.0030]."""
    mean, low, high = mean_interval(accuracies, level)
    if math.isnan(low):
        return mean, low, high
    return mean, max(0.0, low), min(1.0, high)


def accuracy_standard_error(p: float, n: int) -> float:
    """The binomial standard error of an accuracy ``p`` measured on ``n`` samples,
    sqrt(p (1 - p) / n); never 0 (at p = 1 the error is not nil: p (1 - p) is floored at
    0.25 / n)."""
    return math.sqrt(max(p * (1 - p), 0.25 / n) / n)


def uncertainty(snapshot: StudySnapshot, top_k: int) -> dict[str, Any] | None:
    """How sure one run's ranking can be: the validation split's size, the standard error of
    an accuracy at the winner's value (binomial: sqrt(p (1 - p) / n)), and how many of the top
    ``top_k`` lie within one standard error of the winner. None before a completed trial."""
    ranked = snapshot.ranked()[:top_k]
    n = snapshot.split_sizes.get("validation")
    if not ranked or not n:
        return None
    p = ranked[0].value
    se = accuracy_standard_error(p, n)
    return {
        "n": n,
        "value": p,
        "se": se,
        "within": sum(ranked[0].value - t.value <= se for t in ranked[1:]),
        "shown": len(ranked) - 1,
    }
