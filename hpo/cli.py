"""``python -m hpo``: the command line of the study service.

``main(argv)`` parses, dispatches to a plain function, and turns the ``HPOError`` family into one
line on stderr and an exit code: 0 success, 2 bad usage or input, 1 runtime failure, 130
interrupted (143 SIGTERM, 129 SIGHUP). It installs the one handler of those signals
(``hpo.interrupts``) and, however the command
ends, closes every storage it opened (``hpo.storage.close_storages``: the SQLite file then holds
every trial on its own).

Each command imports what it uses when it runs: ``--help``, ``specs``, ``studies`` and ``best``
start without matplotlib, scikit-learn or optuna-dashboard.
"""

import argparse
import json
import math
import signal
import sys
import textwrap
import time
from pathlib import Path

from hpo.allowed import (
    DEFAULT_CONFIRM_SEEDS,
    MAX_CONFIRM_SEEDS,
    MAX_CONFIRM_TOP,
    MAX_SEED,
    MAX_TRIALS,
    MAX_WORKERS,
    PRUNERS,
    SAMPLERS,
    study_name_problem,
)
from hpo.closing import close_all
from hpo.errors import HPOError, RunError, SpecError, UsageError, lasting_reason
from hpo.interrupts import INTERRUPTS
from hpo.urls import command_line, mask_password, resolve_dask, resolve_url
from trainer.console import OneLineParser, int_at_least, main_closing_quietly
from trainer.sources import DATASETS, IDX_SOURCES, DatasetError, check_dataset_name


def _port(text: str) -> int:
    value = int_at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} (allowed: 0 to 65535)")
    return value


def _int_between(minimum: int, maximum: int):
    """An argparse type: a whole number from ``minimum`` to ``maximum``."""
    rule = f"allowed: {minimum} to {maximum:,}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer ({rule})") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{value} ({rule})")
        return value

    return parse


def _study_name(text: str) -> str:
    problem = study_name_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _directory(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} (allowed: a directory path)")
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} (allowed: > 0 seconds)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m hpo",
        description="Hyperparameter optimization of from-scratch NumPy networks, on Optuna.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            examples:
              python -m hpo run                      # the packaged default study on digits
              python -m hpo run default --trials 100 --workers 2
              python -m hpo best --json
              python -m hpo compare book-random book-tpe   # two studies side by side
            storage: --storage URL, else $HPO_STORAGE, else sqlite:///hpo.db here."""),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True

    def command(name: str, help_: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_,  # argparse %-formats a help, not a description
            description=help_.replace("%%", "%"),
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def study_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--study",
            type=_study_name,
            metavar="NAME",
            help="default: the storage's only study, else its most recently updated (named)",
        )
        storage_flag(p)

    def storage_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--storage", metavar="URL", help="default: $HPO_STORAGE or sqlite:///hpo.db")

    def workers_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--workers",
            type=_int_between(1, MAX_WORKERS),
            metavar="N",
            help="trials in flight, each in its own worker process (default 1; one per core); "
            "with --dask, on the cluster (default: its worker threads)",
        )
        p.add_argument(
            "--in-process",
            action="store_true",
            help="train in this process, one trial at a time (for a debugger or a profiler)",
        )
        p.add_argument(
            "--dask",
            metavar="ADDRESS",
            help="train on the Dask cluster whose scheduler is at ADDRESS (tcp://HOST:8786; "
            "default: $HPO_DASK); the storage stays here",
        )

    p = command(
        "run",
        "Create or resume a study and run trials until it has the target of finished trials.",
        "python -m hpo run default --trials 60 --workers 2",
    )
    p.add_argument("spec", nargs="?", default="default", help="a .toml path or a packaged spec")
    p.add_argument(
        "--study", type=_study_name, metavar="NAME", help="study name (default: the spec's name)"
    )
    storage_flag(p)
    p.add_argument(
        "--trials",
        type=_int_between(1, MAX_TRIALS),
        metavar="N",
        help="finished trials (complete + pruned) the study should reach in total",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SEC",
        help="claim no trial after SEC (those already queued still run)",
    )
    workers_flags(p)
    p.add_argument(
        "--seed", type=_int_between(0, MAX_SEED), help="the sampler's and the trials' seed"
    )
    p.add_argument(
        "--sampler", choices=SAMPLERS, help="instead of the spec's [search] sampler (default tpe)"
    )
    p.add_argument(
        "--pruner", choices=PRUNERS, help="instead of the spec's [search] pruner (default median)"
    )
    p.add_argument(
        "--dataset",
        type=_dataset,
        help=f"instead of the spec's: {', '.join(DATASETS)} (the study is then named "
        "SPEC-DATASET unless --study says otherwise)",
    )
    p.add_argument(
        "--data-dir",
        type=_directory,
        metavar="DIR",
        help="where the MNIST/Fashion-MNIST files are",
    )
    p.add_argument(
        "--create-only",
        action="store_true",
        help="create the study (schema, spec, target) for hpo worker processes; run no trial",
    )
    p.add_argument(
        "--orchestrators",
        type=_int_between(1, MAX_WORKERS),
        metavar="N",
        help="processes that claim and store the local workers' trials (default: one per 8 "
        "--workers, at most one per core; one for long trials)",
    )
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = command(
        "worker",
        "Join an existing study (spec and target read from the storage) until its target.",
        "python -m hpo worker --study default --storage postgresql://hpo@db-host/hpo",
    )
    p.add_argument(
        "--study",
        type=_study_name,
        metavar="NAME",
        required=True,
        help="the study to join (it holds its spec and target: hpo run --create-only makes one)",
    )
    storage_flag(p)
    workers_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # Set by hpo run for the orchestrator processes it starts (hpo.orchestrator_processes).
    p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--seconds-left", type=float, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_worker)

    p = command(
        "specs",
        "List the packaged study specs, or print one to start your own from.",
        "python -m hpo specs default > my_study.toml",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="print this packaged spec's file")
    p.set_defaults(func=cmd_specs)

    p = command(
        "studies",
        "List the studies in a storage with their trial counts.",
        "python -m hpo studies --storage sqlite:///hpo.db",
    )
    storage_flag(p)
    p.set_defaults(func=cmd_studies)

    p = command(
        "best",
        "Show a study's best trial; optionally retrain it and export its weights, verify it, "
        "or print the python -m trainer line that retrains it.",
        "python -m hpo best --study default --retrain --export best.npz\n"
        "  python -m hpo best --command --trial 7",
    )
    study_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="retrain on train+validation and measure test accuracy",
    )
    p.add_argument("--export", metavar="PATH.npz", help="write weights and configuration")
    p.add_argument(
        "--verify",
        action="store_true",
        help="retrain the trial from its stored configuration and seed and check every stored "
        "epoch value bit for bit (exit 1 naming the first that differs)",
    )
    p.add_argument(
        "--trial",
        type=int_at_least(0),
        metavar="N",
        help="with --verify, --command or --retrain: that trial instead of the best",
    )
    p.add_argument(
        "--seeds",
        type=_int_between(1, MAX_CONFIRM_SEEDS),
        metavar="S",
        help="with --retrain: retrain with S fresh seeds (hpo confirm's) and give the mean "
        "test accuracy with its 95%% interval (default: the trial's own seed)",
    )
    p.add_argument(
        "--command",
        dest="trainer_command",  # "command" is the subcommand's name
        action="store_true",
        help="print the 'python -m trainer' line that retrains the trial from its "
        "configuration and seed (its best validation accuracy is the trial's)",
    )
    p.set_defaults(func=cmd_best)

    p = command(
        "confirm",
        "Retrain the top configurations with fresh seeds (the same seeds for each): their mean "
        "validation accuracy, a 95%% interval, and whether the best is distinguishable from the "
        "rest. Runs are stored with the study; running it again adds seeds.",
        "python -m hpo confirm --study default --top 5 --seeds 5 --workers 2",
    )
    study_flags(p)
    p.add_argument(
        "--top",
        type=_int_between(1, MAX_CONFIRM_TOP),
        default=5,
        metavar="K",
        help="configurations to confirm, best first (default 5)",
    )
    p.add_argument(
        "--seeds",
        type=_int_between(1, MAX_CONFIRM_SEEDS),
        default=None,
        metavar="S",
        help=f"seeds to add to each (default {DEFAULT_CONFIRM_SEEDS}; with --json, none: it "
        "prints the stored runs); an interrupted command resumes instead",
    )
    workers_flags(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print the stored confirmation, one JSON object per configuration and line "
        "(trial, params, mean, low, high, runs, values, rank, p_vs_best, tied_with_best, ...); "
        "trains nothing unless --seeds is given",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-report",
        action="store_true",
        help="do not write the HTML report again (default: hpo-report-STUDY.html here)",
    )
    p.set_defaults(func=cmd_confirm)

    p = command(
        "report",
        "Write a study's self-contained HTML report (figures inline; opens from disk).",
        "python -m hpo report --study default --out report.html --top 10",
    )
    study_flags(p)
    p.add_argument("--out", metavar="PATH", help="default: hpo-report-STUDY.html here")
    p.add_argument(
        "--top",
        type=int_at_least(1),
        default=10,
        metavar="K",
        help="configurations in the table and the learning curves (default 10)",
    )
    p.set_defaults(func=cmd_report)

    p = command(
        "compare",
        "Write an HTML page that puts studies side by side: the best value so far against "
        "finished trials and against compute time.",
        "python -m hpo compare book-random book-tpe --out compare.html",
    )
    p.add_argument(
        "studies", type=_study_name, nargs="+", metavar="STUDY", help="two or more study names"
    )
    storage_flag(p)
    p.add_argument("--out", metavar="PATH", help="default: hpo-compare-A-vs-B.html here")
    p.set_defaults(func=cmd_compare)

    p = command(
        "dashboard",
        "Serve optuna-dashboard on the storage (no authentication: loopback by default).",
        "python -m hpo dashboard --storage sqlite:///hpo.db --port 8080",
    )
    storage_flag(p)
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=_port, default=8080, help="0 to 65535 (0: any free port)")
    p.add_argument(
        "--i-understand-there-is-no-authentication",
        dest="allow_remote",
        action="store_true",
        help="allow a host other than loopback: anyone who reaches it can read and change studies",
    )
    p.set_defaults(func=cmd_dashboard)
    return parser


# ---------------------------------------------------------------------------------------------
# Commands


class Bar:
    """A tqdm bar on stderr, made at the first ``show`` (quiet: none): things done against a
    total, with an optional postfix."""

    def __init__(
        self,
        *,
        quiet: bool,
        label: str,
        unit: str,
        bar_format: str | None = None,
        delay: float = 0.0,
    ) -> None:
        self.quiet, self.label, self.unit, self.bar = quiet, label, unit, None
        self.bar_format, self.delay = bar_format, delay
        self.started = 0.0  # monotonic time of the first show

    def show(self, done: float, total: int, postfix: str | None = None) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.started = time.monotonic()
            # What was done before this command is the bar's start, not part of its rate.
            self.bar = tqdm(
                total=total,
                initial=done,
                desc=self.label,
                unit=self.unit,
                file=sys.stderr,
                dynamic_ncols=True,
                smoothing=0.1,
                bar_format=self.bar_format,
                delay=self.delay,  # shown only if the work lasts longer
            )
        if postfix is not None:  # before update(), which may draw the line
            self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.update(done - self.bar.n)
        if time.monotonic() - self.started >= self.delay:  # before it: tqdm stays hidden
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


FRACTION_BAR = "{l_bar}{bar}| {n:.2f}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
"""A bar whose count may be fractional (epochs of the trials or runs in flight)."""


class ProgressBar(Bar):
    """Finished trials against the target, with pruned/failed/best; the epochs of the trials
    in flight count as fractions of a trial (the bar moves per epoch) and are listed."""

    def __init__(self, *, quiet: bool, label: str) -> None:
        super().__init__(
            quiet=quiet,
            label=label,
            unit="trial",
            bar_format=FRACTION_BAR,
        )

    def __call__(self, counts, target: int) -> None:
        best = "-" if counts.best_value is None else f"{counts.best_value:.4f}"
        training = sum(done / epochs for _, done, epochs in counts.epochs)
        flight = ", ".join(f"#{n} {done}/{epochs}" for n, done, epochs in counts.epochs)
        self.show(
            min(counts.finished + training, target),
            target,
            f"pruned {counts.pruned} (diverged {counts.diverged}), failed {counts.failed}, "
            f"running {max(0, counts.running - counts.queued)}"
            f"{f' (epochs: {flight})' if flight else ''}"
            f"{f', queued {counts.queued}' if counts.queued else ''}, best {best}",
        )


def _dataset(text: str) -> str:
    try:
        check_dataset_name(text)
    except DatasetError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _spec_with_overrides(args: argparse.Namespace):
    """The spec with the command line's [search] and [data] values in place of its own; another
    dataset also renames the study (its trials are not comparable with the spec's own)."""
    from hpo.spec import load_spec, spec_from_dict

    spec = load_spec(args.spec)
    search = {k: getattr(args, k) for k in ("sampler", "pruner", "seed")}
    search = {k: v for k, v in search.items() if v is not None}
    data = {"dataset": args.dataset, "data_dir": args.data_dir}
    data = {k: v for k, v in data.items() if v is not None}
    if not search and not data:
        return spec
    raw = spec.to_dict()
    raw["search"].update(search)
    raw["data"].update(data)
    if raw["data"]["dataset"] not in IDX_SOURCES and args.data_dir is None:
        raw["data"].pop("data_dir", None)  # the spec's MNIST folder means nothing to another set
    if args.dataset is not None and args.dataset != spec.data.dataset:
        label = Path(args.dataset[4:]).stem if args.dataset.startswith("npz:") else args.dataset
        raw["study"]["name"] = f"{spec.name}-{label}"
        # The spec's description is of its own dataset (the default's says "Digits").
        raw["study"]["description"] = (
            f"The {spec.name} spec's net, training and search space on {args.dataset} "
            f"(--dataset {args.dataset}; the spec itself trains on {spec.data.dataset})."
        )
    return spec_from_dict(raw, source=spec.source, default_name=spec.name)


def _blamed_on_flags(error: SpecError, args: argparse.Namespace) -> UsageError:
    """A data error of a dataset the command line chose names the flag, not the spec file."""
    if error.field == "data.dataset" and args.dataset is not None:
        return UsageError(f"argument --dataset {args.dataset}: {error.problem}")
    if error.field == "data.dataset" and args.data_dir is not None:
        return UsageError(f"argument --data-dir {args.data_dir}: {error.problem}")
    return error


def cmd_run(args: argparse.Namespace) -> int:
    from hpo.finite_space import space_size
    from hpo.records import load_hpo_study
    from hpo.service import run_study

    spec = _spec_with_overrides(args)
    url = resolve_url(args.storage)
    wanted, size = args.trials or spec.search.trials, space_size(spec)
    if size is not None and size < wanted:
        print(
            f"{args.study or spec.name}: the space holds {size} configuration"
            f"{'s' * (size != 1)}, so the target is {size} trials, not {wanted}",
            file=sys.stderr,
        )
    bar = ProgressBar(quiet=args.quiet or args.create_only, label=args.study or spec.name)
    try:
        summary = run_study(
            spec,
            storage_url=url,
            study_name=args.study,
            trials=args.trials,
            timeout=args.timeout,
            workers=args.workers,
            in_process=args.in_process,
            dask=None if args.create_only else resolve_dask(args.dask),
            orchestrators=args.orchestrators,
            create_only=args.create_only,
            progress=None if args.quiet else bar,
        )
    except SpecError as e:
        raise _blamed_on_flags(e, args) from None
    finally:
        bar.close()
    study, stored_spec = load_hpo_study(storage_url=url, study_name=summary.study_name)
    INTERRUPTS.check()
    if args.create_only:
        print(
            f"study {summary.study_name!r} is ready in {mask_password(url)}: start workers "
            f"with {command_line('worker', summary.study_name, url)}"
        )
        return 0
    _print_summary(study, summary.counts, url)
    if not args.no_report:
        print(f"report: {_write_report(study, stored_spec, url, quiet=args.quiet)}")
    return 0


def _write_report(study, spec, url: str, *, quiet: bool, **options) -> Path:
    """``hpo.pages.make_report``, with a bar (after a second) while the best trains again for
    its activations: minutes on Fashion-MNIST."""
    from hpo.pages import make_report

    bar = Bar(
        quiet=quiet,
        label=f"{study.study_name} report: retraining the best",
        unit="epoch",
        delay=1.0,
    )
    try:
        with INTERRUPTS.raising():
            return make_report(study, spec, url, progress=bar.show, **options)
    finally:
        bar.close()


def cmd_report(args: argparse.Namespace) -> int:
    from hpo.records import load_hpo_study

    url = resolve_url(args.storage)
    name = _study_name_or_only(url, args.study)
    study, spec = load_hpo_study(storage_url=url, study_name=name, write=False)
    print(_write_report(study, spec, url, quiet=False, out=args.out, top_k=args.top))
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    from hpo.confirm import confirm_study, stored_confirmations
    from hpo.records import load_hpo_study

    url = resolve_url(args.storage)
    name = _study_name_or_only(url, args.study)
    study, spec = load_hpo_study(storage_url=url, study_name=name)
    if args.json and args.seeds is None:  # --json reads; training takes an explicit --seeds
        for item in stored_confirmations(study, url, args.top):
            print(json.dumps(item.as_dict()))
        return 0
    start = time.monotonic()
    bar = Bar(
        quiet=args.quiet or args.json,
        label=f"{name} confirm",
        unit="run",
        bar_format=FRACTION_BAR,  # runs in flight count their epochs: the bar moves within them
    )
    try:
        done = confirm_study(
            study,
            spec,
            storage_url=url,
            top=args.top,
            seeds=args.seeds or DEFAULT_CONFIRM_SEEDS,
            workers=args.workers,
            in_process=args.in_process,
            dask=resolve_dask(args.dask),
            progress=bar.show,
        )
    finally:
        bar.close()
    if args.json:
        for item in done.items:
            print(json.dumps(item.as_dict()))
        return 0
    _print_confirmation(
        study, done.items, done.work, done.validation_rows, time.monotonic() - start
    )
    if not args.no_report:  # the report's banner, ranking and best follow the confirmation
        print(f"report: {_write_report(study, spec, url, quiet=args.quiet)}")
    return 0


def _print_confirmation(study, items, work, n_val: int, seconds: float) -> None:
    from hpo.confirm import verdict
    from reports.summary import accuracy_standard_error

    runs = sum(len(c.values) for c in items)
    new = len(work.missing)
    what = f"{work.added} seeds added" if work.added else "resumed: missing runs done"
    print(
        f"study {study.study_name!r}: the top {len(items)} configurations over {work.seeds} "
        f"seeds each ({what}; {runs} runs stored, {new} run now in {seconds:.0f} s)"
    )
    table = [["rank", "trial", "mean", "95% interval", "runs", "search value (rank)", "vs first"]]
    for c in items:
        mean, low, high = c.interval if c.values else (math.nan,) * 3
        vs = "-" if c.p_vs_best is None else f"p = {c.p_vs_best:.3g}{', tied' if c.tied else ''}"
        table.append(
            [
                str(c.rank),
                f"#{c.trial}",
                "-" if math.isnan(mean) else f"{mean:.4f}",
                "-" if math.isnan(low) else f"[{low:.4f}, {high:.4f}]",
                str(len(c.values)) + (f" ({c.diverged} diverged)" if c.diverged else ""),
                f"{c.search_value:.4f} ({c.search_rank})",
                vs,
            ]
        )
    _print_table(table)
    p = items[0].interval[0] if items[0].values else items[0].search_value
    print(
        f"validation split: {n_val} samples; one run's accuracy near {p:.4f} has a standard "
        f"error of {accuracy_standard_error(p, n_val):.4f} (the spread over seeds adds to it)"
    )
    print(f"verdict: {verdict(items)}")


def cmd_compare(args: argparse.Namespace) -> int:
    if len(args.studies) < 2 or len(set(args.studies)) != len(args.studies):
        raise UsageError(
            f"STUDY: {' '.join(args.studies)} (allowed: two or more different study names)"
        )
    from hpo.pages import make_comparison
    from hpo.records import load_hpo_study

    url = resolve_url(args.storage)
    studies = [
        load_hpo_study(storage_url=url, study_name=name, write=False) for name in args.studies
    ]
    with INTERRUPTS.raising():
        print(f"report: {make_comparison(studies, url, out=args.out)}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from hpo.dashboard import serve_dashboard
    from hpo.storage import open_storage

    url = resolve_url(args.storage)
    storage = open_storage(url, write=False)
    try:
        with INTERRUPTS.raising():
            serve_dashboard(
                storage, url, host=args.host, port=args.port, allow_remote=args.allow_remote
            )
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)  # Ctrl-C is how a server is stopped
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from hpo.service import run_worker

    url = resolve_url(args.storage)
    if args.parent_pid is not None:  # a helper of hpo run: it stops when that run ends
        from hpo.executors import die_with_parent

        die_with_parent(args.parent_pid, signum=signal.SIGTERM)
    bar = ProgressBar(quiet=args.quiet, label=args.study)
    try:
        summary = run_worker(
            storage_url=url,
            study_name=args.study,
            workers=args.workers,
            in_process=args.in_process,
            dask=resolve_dask(args.dask),
            seconds_left=args.seconds_left,
            progress=None if args.quiet else bar,
        )
    finally:
        bar.close()
    print(
        f"worker done: {summary.finished_here} trials finished here; study "
        f"{summary.study_name!r} has {summary.counts.finished} finished"
    )
    return 0


def cmd_specs(args: argparse.Namespace) -> int:
    from hpo.spec import packaged_spec_text, packaged_specs

    if args.name is not None:
        sys.stdout.write(packaged_spec_text(args.name))
        return 0
    specs = packaged_specs()
    width = max(map(len, specs), default=0)
    for name, description in specs.items():
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    import optuna

    from hpo.records import SPEC_ATTR, companions, current_counts, search_studies
    from hpo.storage import open_storage

    url = resolve_url(args.storage)
    storage = open_storage(url, write=False)
    header = ("STUDY", "DATASET", "COMPLETE", "PRUNED", "FAILED", "RUNNING", "BEST", "UPDATED")
    rows = [(*header, "CONFIRM RUNS")]
    all_names = optuna.get_all_study_names(storage)  # summaries would read every trial
    held = companions(storage, all_names)
    for name in search_studies(storage, all_names):  # confirmation runs: a column of its row
        study = optuna.load_study(study_name=name, storage=storage)
        confirm_runs = "-"
        if name in held:
            companion = optuna.load_study(study_name=held[name], storage=storage)
            confirm_runs = str(len(companion.get_trials(deepcopy=False)))
        counts, updated = current_counts(study, storage)  # the tally and the trials since
        dataset = study.user_attrs.get(SPEC_ATTR, {}).get("data", {}).get("dataset", "?")
        rows.append(
            (
                name,
                dataset,
                str(counts.complete),
                str(counts.pruned),
                str(counts.failed),
                str(counts.running),
                "-" if counts.best_value is None else f"{counts.best_value:.4f}",
                updated.strftime("%Y-%m-%d %H:%M") if updated else "-",
                confirm_runs,
            )
        )
    if len(rows) == 1:
        print(f"no studies in {mask_password(url)}")
        return 0
    _print_table(rows, indent="", right=False)
    return 0


def _study_name_or_only(url: str, name: str | None) -> str:
    """``--study``, else the storage's default study (``hpo.records.default_study``), named
    on stderr when the storage holds others."""
    if name:
        return name
    from hpo.records import default_study

    chosen, others = default_study(url)
    if others:
        print(
            f"study {chosen!r}: the most recently updated of {len(others) + 1} in "
            f"{mask_password(url)} (--study NAME for another: {', '.join(others)})",
            file=sys.stderr,
        )
    return chosen


def cmd_best(args: argparse.Namespace) -> int:
    from hpo.best_trial import best_trial_summary, retrain_best
    from hpo.records import load_hpo_study

    if args.export is not None and not args.export.endswith(".npz"):
        raise UsageError(f"--export: {args.export!r} (allowed: a path ending in .npz)")
    retraining = bool(args.retrain or args.export)  # writes the test accuracy, the artifact
    if args.trial is not None and not (args.verify or args.trainer_command or retraining):
        raise UsageError(
            f"--trial {args.trial}: needs --verify, --command or --retrain (allowed: --verify "
            "--trial N, --command --trial N, --retrain --trial N)"
        )
    if args.seeds is not None and not retraining:
        raise UsageError(f"--seeds {args.seeds}: needs --retrain (allowed: --retrain --seeds S)")
    chosen = [f for f, on in (("verify", args.verify), ("command", args.trainer_command)) if on]
    chosen += ["retrain/--export"] if args.retrain or args.export else []
    if len(chosen) > 1:
        raise UsageError(
            f"--{' and --'.join(chosen)}: one at a time (allowed: --verify, --command or "
            "--retrain/--export)"
        )
    url = resolve_url(args.storage)  # the flags are checked first: no study is read for them
    name = _study_name_or_only(url, args.study)
    study, spec = load_hpo_study(storage_url=url, study_name=name, write=retraining)
    if args.verify:
        return _verify(study, spec, args)
    if args.trainer_command:
        return _command(study, spec, args)
    if retraining:
        bar = Bar(
            quiet=args.json,
            label=f"{name} retrain",
            unit="seed",
            bar_format=FRACTION_BAR,  # per epoch: one seed of Fashion-MNIST takes minutes
        )
        try:
            summary = retrain_best(
                study,
                spec,
                url,
                export=args.export,
                trial=args.trial,
                seeds=args.seeds,
                progress=bar.show,
            )
        finally:
            bar.close()
    else:
        summary = best_trial_summary(study)
    if args.json:
        print(json.dumps(summary))
        return 0
    which = "trial" if args.trial is not None else "best trial"
    print(
        f"study {summary['study']!r}: {which} #{summary['trial']}, validation accuracy "
        f"{summary['value']:.4f} at epoch {summary.get('best_epoch')}"
    )
    for key, value in summary["params"].items():
        print(f"  {key:<14} {value}")
    if args.trial is None:
        _print_confirmed_first(study, url, summary["trial"])
    if summary.get("test_accuracies"):
        each = ", ".join(f"{a:.4f}" for a in summary["test_accuracies"])
        interval = ""
        if summary["test_interval"] is not None:
            low, high = summary["test_interval"]
            interval = f", 95% interval {low:.4f} to {high:.4f}"
        seeds = len(summary["test_accuracies"])
        print(
            f"test accuracy (retrained on train+validation, {seeds} seed{'s' * (seeds != 1)}): "
            f"mean {summary['test_accuracy']:.4f}{interval} ({each})"
        )
    elif summary.get("test_accuracy") is not None:
        print(f"test accuracy (retrained on train+validation): {summary['test_accuracy']:.4f}")
    if args.export:
        print(f"exported: {args.export}")
    return 0


def _print_confirmed_first(study, url: str, best: int) -> None:
    """Name the confirmed first when ``hpo confirm`` ranked another configuration above the
    search's best (the report is about that one)."""
    import optuna

    from hpo.records import companion_name
    from hpo.storage import open_storage

    storage = open_storage(url, write=False)
    if companion_name(study.study_name) not in optuna.get_all_study_names(storage):
        return  # never confirmed: nothing more to import or read
    from hpo.confirm import confirmed_first

    first = confirmed_first(study, storage)
    if first is not None and first.trial != best:
        mean, low, high = first.interval
        seeds = len(first.values)
        interval = "" if math.isnan(low) else f" [{low:.4f}, {high:.4f}]"
        print(
            f"hpo confirm ranks trial #{first.trial} first: mean {mean:.4f}{interval} over "
            f"{seeds} seed{'s' * (seeds != 1)} (--trial {first.trial} with --retrain, --verify "
            "or --command for it)"
        )


def _command(study, spec, args: argparse.Namespace) -> int:
    import shlex

    from hpo.best_trial import trainer_command

    command = trainer_command(study, spec, args.trial)
    if args.json:
        print(json.dumps(command))
    else:
        print(shlex.join(command["argv"]))
    return 0


def _verify(study, spec, args: argparse.Namespace) -> int:
    from hpo.best_trial import verify_trial

    with INTERRUPTS.raising():
        verification = verify_trial(study, spec, args.trial)
    if args.json:
        print(json.dumps(verification.as_dict()))
    elif verification.reproduced:
        print(verification.message())
    if not verification.reproduced:
        raise RunError(verification.message())
    return 0


def _print_summary(study, counts, url: str) -> None:
    from hpo.best_trial import top_trials

    print(
        f"\nstudy {study.study_name!r}: {counts.finished} finished ({counts.complete} complete, "
        f"{counts.pruned} pruned of which {counts.diverged} diverged), {counts.failed} failed"
    )
    rows = top_trials(study, 5)
    if rows:
        names = sorted({k for r in rows for k in r["params"]})
        header = ["#", "val acc", "epoch", *names]
        table = [header] + [
            [
                str(r["trial"]),
                f"{r['value']:.4f}",
                str(r["best_epoch"]),
                *(_fmt(r["params"].get(n)) for n in names),
            ]
            for r in rows
        ]
        print("top configurations:")
        _print_table(table)
    print(f"storage: {mask_password(url)}")
    print(
        f"more: {command_line('best', study.study_name, url)}; "
        f"{command_line('dashboard', None, url, always_storage=True)}"
    )


def _print_table(rows, *, indent: str = "  ", right: bool = True) -> None:
    """Print ``rows`` (the header first) in columns two spaces apart, right-aligned or left."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (c.rjust(w) if right else c.ljust(w) for c, w in zip(row, widths, strict=True))
        print((indent + "  ".join(cells)).rstrip())


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    return main_closing_quietly(_main, argv)


def _main(argv: list[str] | None) -> int:
    INTERRUPTS.install()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # --help, or a bad flag: nothing ran
        INTERRUPTS.uninstall()
        raise
    try:
        code = args.func(args)
        INTERRUPTS.check()  # a Ctrl-C during the last storage write
        return code
    except HPOError as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # a database that a full disk or damage left unwritable
        reason = lasting_reason(e)
        if reason is None:
            raise
        print(
            f"{parser.prog} {args.command}: error: the database cannot be used ({reason})",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        how = "interrupted" if INTERRUPTS.exit_code == 130 else "stopped by "
        how += "" if INTERRUPTS.exit_code == 130 else INTERRUPTS.signal_name
        print(
            f"\n{parser.prog} {args.command}: {how}; finished trials are kept, run the "
            "same command to resume",
            file=sys.stderr,
        )
        return INTERRUPTS.exit_code
    finally:
        close_all()  # what the command opened: --help opened nothing
        INTERRUPTS.uninstall()
