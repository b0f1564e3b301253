"""The training loop: shuffled minibatch epochs with per-epoch metrics and a callback.

``train`` runs epochs in which every training sample is seen exactly once, in an order drawn from
the generator passed in. After each epoch it measures loss and accuracy on the training and
validation splits (in inference mode: no dropout, BatchNorm's running statistics), calls
``on_epoch_end``, which may stop training (the study prunes through it), and applies early
stopping and learning-rate decay. A non-finite loss, or one ten thousand times the first batch's,
stops training at once as ``diverged``.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from trainer.config import RULES
from trainer.contract import Trainable
from trainer.layers import sample_cross_entropy
from trainer.optimizers import Optimizer

EVAL_BATCH = 4096
"""Rows per forward pass when measuring a whole split; bounds memory on large datasets."""
FLUSH_BELOW = {np.dtype(np.float32): 2.0**-50, np.dtype(np.float64): 2.0**-400}
"""Parameters below this magnitude (by dtype) are set to zero with their optimizer state
(``NegligibleFlush``); parameters of other dtypes are left alone."""
FLUSH_STEPS = 8
"""Steps between two flushes (``NegligibleFlush``): a weight decaying by 5% a step (the fastest
seen) falls at most a third below ``FLUSH_BELOW`` before it is zeroed, far above float32's
subnormal range."""


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch measured. ``epoch`` counts from 1."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float


@dataclass
class History:
    """Per-epoch curves; entry ``i`` is epoch ``i + 1``."""

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)

    def append(self, m: EpochMetrics) -> None:
        self.train_loss.append(m.train_loss)
        self.train_accuracy.append(m.train_accuracy)
        self.val_loss.append(m.val_loss)
        self.val_accuracy.append(m.val_accuracy)

    def as_dict(self) -> dict[str, list[float]]:
        return {
            "train_loss": list(self.train_loss),
            "train_accuracy": list(self.train_accuracy),
            "val_loss": list(self.val_loss),
            "val_accuracy": list(self.val_accuracy),
        }


STOP_REASONS = ("completed", "early_stopping", "callback", "diverged", "interrupted")


@dataclass
class TrainResult:
    """The outcome of ``train``.

    ``best_epoch`` (from 1) is the epoch of the highest validation accuracy, 0 when no epoch
    finished; ``stop_reason`` is one of ``STOP_REASONS``; ``train_seconds`` counts the training
    loop alone, not data loading; ``batch_loss`` has one entry per optimizer step.
    """

    history: History
    best_epoch: int
    best_val_accuracy: float
    epochs_run: int
    diverged: bool
    stop_reason: str
    train_seconds: float
    batch_loss: list[float] = field(default_factory=list)
    """The training loss (with the weight-decay term) of every step, in order; a diverged run
    ends with the loss that stopped it."""


def _flush_bits(dtype: np.dtype) -> tuple[np.dtype, np.ndarray, np.ndarray]:
    """The unsigned integer of ``dtype``'s size, the threshold's bits minus 1 and the mask that
    clears the sign bit: |x| is below the threshold and not zero where (x's bits & mask) - 1 <
    the threshold's bits - 1 (for 0, 0 - 1 wraps around to the largest unsigned integer)."""
    unsigned = np.dtype(f"u{dtype.itemsize}")
    limit = np.array(FLUSH_BELOW[dtype], dtype=dtype).view(unsigned) - 1
    return unsigned, limit, ~(np.array(1, dtype=unsigned) << (8 * dtype.itemsize - 1))


_FLUSH_BITS = {dtype: _flush_bits(dtype) for dtype in FLUSH_BELOW}


class NegligibleFlush:
    """Sets the parameters whose magnitude is below ``FLUSH_BELOW`` (and not zero) to zero, and
    the optimizer's state at their positions, in place.

    Why: L2 (or L1) weight decay with Adam, RMSprop or AdaGrad sends the weights of a dead ReLU
    unit into float32's subnormal range. Such a weight gets no gradient but the decay's,
    ``weight_decay * W``, which these rules normalize into a step that shrinks ``W``
    geometrically: with Adam at learning rate 0.001 and decay 0.003, from 0.05 to below float32's
    smallest normal number (1.2e-38) in about 1,600 steps, where it stays (its steps round away).
    On the way every step computes subnormal numbers: the decay's gradient, its square in Adam's
    second moment, the first moment, the step itself; and a subnormal operand or result sends
    the CPU to its slow microcode path (on this machine ``x @ W`` took 140 times as long with a
    quarter of ``W`` subnormal, ``g * g`` 15 times as long when the squares are subnormal); on
    Fashion-MNIST the sixth epoch took 3.9 times the first. Flushing only the subnormal weights
    is not enough: the state still passes through the subnormal range, and the twelfth epoch
    still took 2.8 times the first (tests/benchmarks/bench_subnormal.py).

    What: a weight below ``FLUSH_BELOW`` (float32: 2**-50, 8.9e-16; float64: 2**-400) changes
    no sum of the net's terms (float32's resolution near 1e-3 is 1e-10); zero, with a zero
    state, it is a fixed
    point of every update rule as long as its data gradient is zero (a dead unit stays zero),
    and it moves at once when the gradient is not. The flush is deterministic, so a seed gives
    the same history bit for bit; a run with no weight below the threshold is unchanged.

    When: every ``FLUSH_STEPS`` steps (``__call__``: three passes over the parameters, 0.3 to
    0.5 ms for the 535,818 of a 784-512-256-10 net; 1% to 3% of a run's time,
    ``bench_subnormal.py --part cost``). Some products of a decaying weight's update become
    subnormal a little above the threshold (Adam's ``(1 - beta2) * g * g`` below ``W`` =
    1.1e-15 at decay 0.003, higher at weaker decay), for the few steps until it is zeroed: on
    the benchmark no epoch took more than 1.14 times the first.

    Args:
        optimizer: the rule that updates the parameters; ``state_arrays()`` gives its state,
            each kind a list parallel to the parameters.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # by position: scratch, mask

    def __call__(self, params: list[np.ndarray]) -> None:
        """Flush ``params`` (the arrays the optimizer updates, in its order) and its state."""
        for i, p in enumerate(params):
            negligible = self._negligible(i, p)
            if negligible is None:
                continue
            for a in (p, *(kind[i] for kind in self.optimizer.state_arrays())):
                np.copyto(a, 0, where=negligible)

    def _negligible(self, i: int, p: np.ndarray) -> np.ndarray | None:
        """Where ``p`` is below the threshold and not zero, or None if nowhere (or not a
        float32/float64 array in one piece)."""
        if p.dtype not in FLUSH_BELOW or not p.flags.c_contiguous:
            return None
        unsigned, limit, sign_off = _FLUSH_BITS[p.dtype]
        bits = p.reshape(-1).view(unsigned)  # (P,)
        scratch, negligible = self.buffers.get(i, (None, None))
        if scratch is None or scratch.shape != bits.shape or scratch.dtype != unsigned:
            scratch, negligible = np.empty_like(bits), np.empty(bits.shape, dtype=bool)
            self.buffers[i] = scratch, negligible
        np.bitwise_and(bits, sign_off, out=scratch)
        np.subtract(scratch, 1, out=scratch)
        np.less(scratch, limit, out=negligible)
        return negligible.reshape(p.shape) if negligible.any() else None


def evaluate(net: Trainable, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy (without the weight-decay term) and accuracy on ``x`` (N, D)."""
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), EVAL_BATCH):
        xb, yb = x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
        scores = net.predict(xb)
        loss_sum += float(sample_cross_entropy(scores, yb).sum())
        correct += int(np.count_nonzero(np.argmax(scores, axis=1) == yb))
    return loss_sum / len(x), correct / len(x)


def evaluation(
    net: Trainable,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    eval_train: np.ndarray | None,
) -> Callable[[], tuple[tuple[float, float], tuple[float, float]]]:
    """What ``train`` calls after each epoch: the loss and accuracy of the training rows (all,
    or ``eval_train``'s) and of the validation split. Rows that fit in one ``EVAL_BATCH`` are
    copied once into one array for one forward pass; more are measured on the arrays
    themselves, so that a large split (MNIST's, mapped from a file a worker shares) is never
    copied, only ``eval_train``'s subset."""
    x_rows, y_rows = (
        (x_train, y_train) if eval_train is None else (x_train[eval_train], y_train[eval_train])
    )
    n_rows = len(y_rows)
    if n_rows + len(y_val) > EVAL_BATCH:
        return lambda: (evaluate(net, x_rows, y_rows), evaluate(net, x_val, y_val))
    both = (np.concatenate([x_rows, x_val]), np.concatenate([y_rows, y_val]))
    return lambda: evaluate_splits(net, both, n_rows)


def evaluate_splits(
    net: Trainable, both: tuple[np.ndarray, np.ndarray], n_first: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``evaluate`` of rows ``[:n_first]`` and ``[n_first:]`` of ``both`` = (x, y); one forward
    pass when all rows fit in ``EVAL_BATCH``, else one per split."""
    x, y = both
    if len(x) > EVAL_BATCH:
        return evaluate(net, x[:n_first], y[:n_first]), evaluate(net, x[n_first:], y[n_first:])
    scores = net.predict(x)
    losses = sample_cross_entropy(scores, y)  # (N,)
    correct = np.argmax(scores, axis=1) == y  # (N,)
    n_second = len(y) - n_first
    # Sums and a division: ndarray.mean's Python wrapper costs more than the sum at N = 500.
    return (
        (float(losses[:n_first].sum()) / n_first, int(correct[:n_first].sum()) / n_first),
        (float(losses[n_first:].sum()) / n_second, int(correct[n_first:].sum()) / n_second),
    )


def train(
    net: Trainable,
    optimizer: Optimizer,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    on_epoch_end: Callable[[EpochMetrics], bool | None] | None = None,
    patience: int | None = None,
    restore_best: bool = True,
    lr_decay: float = 1.0,
    divergence_factor: float | None = 1e4,
    should_stop: Callable[[], bool] | None = None,
    eval_train: np.ndarray | None = None,
    flush_negligible: bool = True,
) -> TrainResult:
    """Train ``net`` in place.

    Args:
        net: the network.
        optimizer: its update rule.
        x_train, y_train: training inputs (N, D) and labels (N,).
        x_val, y_val: validation inputs (M, D) and labels (M,).
        epochs: the most epochs to run, >= 1.
        batch_size: samples per step, >= 1; the last batch of an epoch may be smaller.
        rng: the generator for the shuffling (and nothing else).
        on_epoch_end: called with each epoch's metrics; a truthy return stops training.
        patience: stop once validation accuracy has not improved for this many epochs; None
            never stops early.
        restore_best: at the end, put back the weights of the best validation epoch.
        lr_decay: multiply the optimizer's learning rate by this after every epoch (1 = none).
        divergence_factor: also call the run diverged once a batch's loss exceeds this multiple
            of the first batch's loss (a run whose loss grows ten-thousandfold only overflows
            later, after wasting its epochs); None keeps only the non-finite check.
        should_stop: polled before every minibatch step; a truthy return stops training at
            once with ``stop_reason = "interrupted"`` (how a Ctrl-C reaches the loop).
        eval_train: indices of the training rows whose loss and accuracy each epoch reports
            (a fixed subset: the epoch's evaluation then costs less on a large split); None
            measures every training row. Training and validation are unchanged.
        flush_negligible: set the parameters that fall below ``FLUSH_BELOW`` to zero, with
            their optimizer state, every ``FLUSH_STEPS`` steps (``NegligibleFlush``: what keeps
            weight decay from sending them into the slow subnormal range); False only to
            measure what that costs.

    Returns:
        The history and the outcome; a diverged run is a result, not an error.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("lr_decay", lr_decay)):
        RULES[f"training.{name}"].check(name, value)
    if patience is not None:
        RULES["training.patience"].check("patience", patience)

    history = History()
    best_epoch, best_val, best_state = 0, -1.0, None
    stop_reason, diverged = "completed", False
    n = len(x_train)
    flush = NegligibleFlush(optimizer) if flush_negligible else None
    step = 0
    measure = evaluation(net, x_train, y_train, x_val, y_val, eval_train)
    loss_limit = math.inf
    batch_loss: list[float] = []
    start = time.perf_counter()
    # A diverging net overflows; the loss check below reports it once, instead of a warning
    # per array operation.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for epoch in range(1, epochs + 1):
            order = rng.permutation(n)
            for first in range(0, n, batch_size):
                if should_stop is not None and should_stop():
                    stop_reason = "interrupted"
                    break
                idx = order[first : first + batch_size]
                loss = net.gradient(x_train[idx], y_train[idx])
                batch_loss.append(loss)
                if not (math.isfinite(loss) and loss <= loss_limit):
                    diverged = True
                    break
                if loss_limit == math.inf and divergence_factor is not None:
                    loss_limit = divergence_factor * max(loss, 1.0)
                params, grads = net.step_arrays()  # a learner's net's own arrays, read each step
                optimizer.update(params, grads)
                step += 1
                if flush is not None and step % FLUSH_STEPS == 0:
                    flush(params)
            if diverged:
                stop_reason = "diverged"
                break
            if stop_reason == "interrupted":
                break
            (train_loss, train_acc), (val_loss, val_acc) = measure()
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                diverged, stop_reason = True, "diverged"
                break
            metrics = EpochMetrics(epoch, train_loss, train_acc, val_loss, val_acc)
            history.append(metrics)
            if val_acc > best_val:
                best_epoch, best_val = epoch, val_acc
                if restore_best:
                    best_state = net.state()
            if on_epoch_end is not None and on_epoch_end(metrics):
                stop_reason = "callback"
                break
            if patience is not None and epoch - best_epoch >= patience:
                stop_reason = "early_stopping"
                break
            optimizer.learning_rate *= lr_decay
    if best_state is not None and (diverged or best_epoch != len(history.val_accuracy)):
        net.load_state(best_state)
    train_seconds = time.perf_counter() - start
    return TrainResult(
        history=history,
        best_epoch=best_epoch,
        best_val_accuracy=max(best_val, 0.0),
        epochs_run=len(history.val_accuracy),
        diverged=diverged,
        stop_reason=stop_reason,
        train_seconds=train_seconds,
        batch_loss=batch_loss,
    )
