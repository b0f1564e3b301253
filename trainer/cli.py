"""``python -m trainer``: train one configuration and print its per-epoch progress.

``main(argv)`` parses the flags, trains, and returns the exit code: 0 (a diverged run is a
result, not a failure), 2 for bad input (one line naming the flag, the value and what is
allowed), 130 when interrupted.
"""

import argparse
import json
import sys

import numpy as np

from trainer.config import (
    RULES,
    DataConfig,
    NetConfig,
    Rule,
    RunConfig,
    TrainConfig,
    hyperparameter_flag,
)
from trainer.console import OneLineParser, UsageError, int_at_least, main_closing_quietly
from trainer.contract import NetworkError
from trainer.network import ACTIVATIONS, INITS
from trainer.optimizers import OPTIMIZERS, keywords
from trainer.sources import DATASETS, DatasetError, check_dataset_name
from trainer.training import EpochMetrics, evaluate

EXAMPLE = """example:
  python -m trainer --optimizer adam --lr 0.001 --hidden 100,100 --epochs 20
  python -m trainer --dataset npz:my_data.npz --dropout 0.2 --json > result.json
  python -m hpo best --command    # the line that retrains a study's best trial"""


RULES_ANY = Rule("any")  # what a --net-arg value may be: finite numbers, strings, lists of them


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """The example kept as written, and every flag's default in its help (unless the help
    states it, or there is none to state)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default is argparse.SUPPRESS
        if "default" in text or unset or default == []:
            return text
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        return f"{text} (default: {shown})" if text else f"default: {shown}"


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} (allowed: a finite number)")
    return value


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} (allowed: comma-separated positive widths, e.g. 100,100,100)"
        )
    return sizes


def _entropy(text: str) -> tuple[int, ...]:
    try:
        words = tuple(int(s) for s in text.split(","))
    except ValueError:
        words = ()
    if not words or min(words) < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} (allowed: a whole number >= 0, or several separated by commas: "
            "a trial's seed, e.g. 0,17)"
        )
    return words


def _net_arg(text: str) -> tuple[str, object]:
    name, equals, value = text.partition("=")
    if not equals or not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(
            f"{text!r} (allowed: NAME=VALUE, e.g. hidden_dim=100 or hidden_size_list=[100,100])"
        )
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value  # a bare word: a string
    if not RULES_ANY.admits(parsed):
        raise argparse.ArgumentTypeError(f"{text!r} (allowed: NAME={RULES_ANY.allowed()})")
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return name.strip(), parsed


def _optimizer_keywords() -> list[str]:
    """Every keyword any registered optimizer takes, in registry then signature order."""
    return list(dict.fromkeys(name for cls in OPTIMIZERS.values() for name in keywords(cls)))


def _optimizers_taking(name: str) -> list[str]:
    return [o for o, cls in OPTIMIZERS.items() if name in keywords(cls)]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m trainer",
        description="Train one configuration of the built-in MultiLayerNet (NumPy, from "
        "scratch), or of your own net (--network), and report its per-epoch training and "
        "validation curves.",
        epilog=EXAMPLE,
        formatter_class=_Formatter,
    )
    net, training, data = NetConfig(), TrainConfig(), DataConfig()
    g = p.add_argument_group("hyperparameters")
    g.add_argument(
        "--optimizer", default=training.optimizer, choices=list(OPTIMIZERS), help="update rule"
    )
    for name in _optimizer_keywords():
        flags = [hyperparameter_flag(name)] + (["--lr"] if name == "learning_rate" else [])
        takers = _optimizers_taking(name)
        g.add_argument(
            *flags,
            type=_float,
            default=None,
            help=f"{'step size' if name == 'learning_rate' else name} "
            f"(default: the optimizer's own; for {', '.join(takers)})",
        )
    g.add_argument(
        "--weight-decay",
        type=_float,
        default=net.weight_decay,
        help="weight-decay strength lambda (default 0)",
    )
    g.add_argument(
        "--weight-decay-type",
        choices=["l2", "l1"],
        default=net.weight_decay_type,
        help="l2: lambda/2 * sum(W**2); l1: lambda * sum(|W|)",
    )
    g.add_argument("--dropout", type=_float, default=net.dropout_ratio, help="drop ratio in [0, 1)")
    g.add_argument("--init", choices=list(INITS), default=net.init, help="weight-init rule")
    g.add_argument(
        "--init-scale",
        type=_float,
        default=net.init_scale,
        help="multiplier on the init rule's std; with --init std, the std itself",
    )
    g = p.add_argument_group("model")
    g.add_argument("--hidden", type=_hidden, default=net.hidden_sizes, help="e.g. 100,100,100")
    g.add_argument(
        "--activation", choices=list(ACTIVATIONS), default=net.activation, help="hidden layers'"
    )
    g.add_argument("--batchnorm", action="store_true", help="BatchNorm before each activation")
    g.add_argument("--float64", action="store_true", help="compute in float64 (slower)")
    g.add_argument(
        "--network",
        default=None,
        metavar="FILE.py:CLASS",
        help="your own net instead of the built-in one: FILE.py:Class or package.module:Class "
        "(the book's params/gradient/predict or cs231n's params/loss; runs that file's code)",
    )
    g.add_argument(
        "--net-arg",
        type=_net_arg,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a keyword of --network's constructor, VALUE in JSON (repeat for each)",
    )
    g = p.add_argument_group("data and training")
    g.add_argument("--dataset", default=data.dataset, help=f"one of {', '.join(DATASETS)}")
    g.add_argument("--data-dir", default=None, help="where the IDX files are (MNIST)")
    g.add_argument(
        "--train-size",
        type=int_at_least(1),
        default=None,
        help="samples drawn for training + validation (default: all)",
    )
    g.add_argument(
        "--validation-fraction",
        type=_float,
        default=data.validation_fraction,
        help="share of the training samples that validate",
    )
    g.add_argument(
        "--test-fraction",
        type=_float,
        default=data.test_fraction,
        help="share held out for testing when the set has no test set of its own",
    )
    g.add_argument(
        "--data-seed",
        type=int_at_least(0),
        default=data.seed,
        help="seed of the split (default 0)",
    )
    g.add_argument("--epochs", type=int_at_least(1), default=training.epochs, help="most epochs")
    g.add_argument(
        "--batch-size", type=int_at_least(1), default=training.batch_size, help="samples per step"
    )
    g.add_argument("--patience", type=int_at_least(1), default=None, help="early stopping")
    g.add_argument(
        "--lr-decay", type=_float, default=training.lr_decay, help="per-epoch LR factor in (0, 1]"
    )
    g.add_argument(
        "--eval-train-samples",
        type=int_at_least(1),
        default=None,
        help="training rows each epoch's training accuracy counts (default: all)",
    )
    g.add_argument(
        "--seed",
        type=_entropy,
        default=(0,),
        help="seed of the initial weights, dropout and batch order (default 0)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    g.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    return p


BUILT_IN_NET_FLAGS = (
    ("--hidden", "hidden", NetConfig.hidden_sizes),
    ("--activation", "activation", NetConfig.activation),
    ("--batchnorm", "batchnorm", NetConfig.batchnorm),
    ("--dropout", "dropout", NetConfig.dropout_ratio),
    ("--weight-decay", "weight_decay", NetConfig.weight_decay),
    ("--weight-decay-type", "weight_decay_type", NetConfig.weight_decay_type),
    ("--init", "init", NetConfig.init),
    ("--init-scale", "init_scale", NetConfig.init_scale),
)
"""The flags of the built-in net (flag, its name in the arguments, its default: the
``NetConfig`` field's), which a --network run does not use."""


def check_ranges(args: argparse.Namespace) -> None:
    """Check the flags whose ranges argparse's types cannot express; raise UsageError."""
    names = [name for name, _ in args.net_arg]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise UsageError(f"argument --net-arg: {twice} is given twice (allowed: once each)")
    if args.network is None and args.net_arg:
        raise UsageError(
            f"argument --net-arg: {args.net_arg[0][0]} is set but --network is not (allowed: "
            "--net-arg with --network)"
        )
    if args.network is not None:
        for flag, name, default in BUILT_IN_NET_FLAGS:
            if getattr(args, name) != default:
                raise UsageError(
                    f"argument {flag}: applies to the built-in net, not to --network "
                    f"{args.network} (allowed: --net-arg NAME=VALUE for your net's keywords)"
                )
    checks = [
        ("--learning-rate", "training.learning_rate", args.learning_rate),
        ("--weight-decay", "model.weight_decay", args.weight_decay),
        ("--dropout", "model.dropout_ratio", args.dropout),
        ("--init-scale", "model.init_scale", args.init_scale),
        ("--validation-fraction", "data.validation_fraction", args.validation_fraction),
        ("--test-fraction", "data.test_fraction", args.test_fraction),
        ("--lr-decay", "training.lr_decay", args.lr_decay),
    ]
    for flag, place, value in checks:
        if value is not None and not RULES[place].admits(value):
            raise UsageError(f"argument {flag}: {value} (allowed: {RULES[place].allowed()})")
    for name, value in hyperparameters(args):
        flag = hyperparameter_flag(name)
        if name not in keywords(OPTIMIZERS[args.optimizer]):
            raise UsageError(
                f"argument {flag}: --optimizer {args.optimizer} has no {name} "
                f"(allowed with: {', '.join(_optimizers_taking(name))})"
            )
        try:
            OPTIMIZERS[args.optimizer](**{name: value})
        except ValueError as e:
            raise UsageError(f"argument {flag}: {value} ({e})") from None
    try:
        check_dataset_name(args.dataset)
    except DatasetError as e:
        raise UsageError(f"argument --dataset: {e}") from None


def hyperparameters(args: argparse.Namespace) -> tuple[tuple[str, float], ...]:
    """The optimizer keywords given on the command line, in the registry's order."""
    return tuple(
        (n, getattr(args, n)) for n in _optimizer_keywords() if getattr(args, n) is not None
    )


def run_config(args: argparse.Namespace) -> RunConfig:
    """The run the flags describe."""
    return RunConfig(
        data=DataConfig(
            dataset=args.dataset,
            data_dir=args.data_dir,
            train_size=args.train_size,
            validation_fraction=args.validation_fraction,
            test_fraction=args.test_fraction,
            seed=args.data_seed,
        ),
        net=NetConfig(
            hidden_sizes=args.hidden,
            activation=args.activation,
            batchnorm=args.batchnorm,
            dropout_ratio=args.dropout,
            weight_decay=args.weight_decay,
            weight_decay_type=args.weight_decay_type,
            init=args.init,
            init_scale=args.init_scale,
            network=args.network,
            args=tuple(args.net_arg),
        ),
        training=TrainConfig(
            optimizer=args.optimizer,
            hyperparameters=hyperparameters(args),
            epochs=args.epochs,
            batch_size=args.batch_size,
            patience=args.patience,
            lr_decay=args.lr_decay,
            eval_train_samples=args.eval_train_samples,
        ),
    )


def run(args: argparse.Namespace) -> dict:
    """Train the configuration ``args`` describes; return the JSON-ready result."""
    dtype = np.float64 if args.float64 else np.float32
    config = run_config(args)
    split = config.data.load(dtype)
    config.net.check(split)

    def progress(m: EpochMetrics) -> None:
        if not args.quiet:
            print(
                f"epoch {m.epoch:3d}/{args.epochs}  train loss {m.train_loss:.4f} "
                f"acc {m.train_accuracy:.4f}  val loss {m.val_loss:.4f} acc {m.val_accuracy:.4f}",
                file=sys.stderr if args.json else sys.stdout,
                flush=True,
            )

    net, result = config.train(
        split, np.random.SeedSequence(args.seed), dtype, on_epoch_end=progress
    )
    history = result.history
    test_accuracy = None
    if result.epochs_run:  # weights of the best epoch; none when the first epoch diverged
        with np.errstate(all="ignore"):
            test_accuracy = evaluate(net, split.x_test, split.y_test)[1]
    return {
        "best_val_accuracy": result.best_val_accuracy,
        "best_epoch": result.best_epoch,
        "val_accuracy": history.val_accuracy[-1] if history.val_accuracy else None,
        "train_accuracy": history.train_accuracy[-1] if history.train_accuracy else None,
        "test_accuracy": test_accuracy,
        "epochs_run": result.epochs_run,
        "diverged": result.diverged,
        "stop_reason": result.stop_reason,
        "train_seconds": result.train_seconds,
        "history": history.as_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    return main_closing_quietly(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_ranges(args)
        result = run(args)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except DatasetError as e:
        flag = "--" + e.field.replace("_", "-")
        print(f"{parser.prog}: error: argument {flag}: {e}", file=sys.stderr)
        return 2
    except NetworkError as e:
        print(f"{parser.prog}: error: argument --network: {args.network}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result))
    else:
        status = "diverged" if result["diverged"] else result["stop_reason"]
        test = result["test_accuracy"]
        print(
            f"best val acc {result['best_val_accuracy']:.4f} at epoch {result['best_epoch']}, "
            f"test acc {'n/a' if test is None else f'{test:.4f}'} "
            f"({status}, {result['epochs_run']} epochs, {result['train_seconds']:.2f} s)"
        )
    return 0
