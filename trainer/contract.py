"""The network contract: what the training loop needs of a net, and the two shapes learners write.

``train`` (``trainer.training``) trains anything that is a ``Trainable``. hpo's own
``MultiLayerNet`` is one. A learner's own net is one through ``adapt``, in either shape the
courses teach, unchanged:

- **the book's** ("Deep Learning from Scratch", ch. 5-6: ``TwoLayerNet``, ``MultiLayerNet``,
  ``MultiLayerNetExtend``) — ``BookNet``: ``params``, ``gradient(x, t)``, ``predict(x)``, and
  ``loss(x, t)`` when it has one;
- **cs231n's** (``TwoLayerNet``, ``FullyConnectedNet`` of assignments 1-2) — ``Cs231nNet``:
  ``params`` and ``loss(X, y=None)``.

Inputs are flat rows (N, D): conv nets that expect (N, C, H, W) are not supported.

``load_network`` reads a class from a file or a module (``"nets.py:TwoLayerNet"``,
``"package.module:Name"``), ``build_network`` constructs it with the data's sizes under the
names its constructor takes, and ``check_network`` tries the contract on one small batch, so
that a broken net is refused with one line before a study stores anything.

What hpo does with a learner's net, and what that net may rely on:

- Its optimizer updates ``params[key]`` **in place** (``p -= lr * g``, never ``params[key] =
  ...``), as the book's optimizers do, so layers that hold references to those arrays (the
  book's ``Affine(self.params['W1'], ...)``) see every step.
- Nets that draw from NumPy's global random state (``np.random.randn`` in a constructor,
  ``np.random.rand`` in a dropout layer) get it seeded from the trial's seed before the net is
  built, so a trial retrains bit for bit (``hpo best --verify``). A net whose constructor takes
  an ``rng`` keyword gets a seeded ``np.random.Generator`` there as well.
- The best epoch's weights are put back after training by copying ``params``; a net that
  keeps other state (BatchNorm's running averages) may define ``state()`` and
  ``load_state(state)`` to have that restored too.
"""

import hashlib
import importlib
import importlib.util
import inspect
import math
import sys
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from trainer.layers import cross_entropy


class NetworkError(ValueError):
    """A net that cannot be loaded, built or trained by the contract; the message is one
    line that names the net and what is wrong."""


@runtime_checkable
class Trainable(Protocol):
    """What ``trainer.training.train`` calls: hpo's ``MultiLayerNet`` and ``adapt``'s wrapper
    of a learner's net.

    - ``gradient(x, labels) -> float``: backpropagate the training batch ``x`` (N, D) with
      integer ``labels`` (N,) in training mode (dropout on, BatchNorm's batch statistics) and
      return its loss, the weight-decay term included;
    - ``step_arrays() -> (params, grads)``: the parameter arrays the optimizer updates in place
      and their gradients from the last ``gradient``, position by position;
    - ``predict(x, *, train=False) -> scores`` (N, C);
    - ``state() -> list[np.ndarray]`` copies of what training changes, and ``load_state``
      to put such copies back in place.
    """

    def gradient(self, x: np.ndarray, labels: np.ndarray) -> float: ...

    def step_arrays(self) -> tuple[list[np.ndarray], list[np.ndarray]]: ...

    def predict(self, x: np.ndarray, *, train: bool = False) -> np.ndarray: ...

    def state(self) -> list[np.ndarray]: ...

    def load_state(self, state: list[np.ndarray]) -> None: ...


class BookNet(Protocol):
    """The book's network ("Deep Learning from Scratch", ``ch05/two_layer_net.py``,
    ``common/multi_layer_net_extend.py``).

    - ``params``: a dict of parameter arrays, e.g. ``{"W1": (D, H), "b1": (H,), ...}``;
    - ``gradient(x, t)``: backpropagate the batch and return a dict of gradients with exactly
      the keys and shapes of ``params``; ``t`` holds integer labels (N,) (the book's one-hot
      labels are never passed);
    - ``predict(x)``: scores (N, C); a ``train_flg`` keyword, when it has one, is passed
      False;
    - ``loss(x, t)``, optional: the batch's loss; without it the loss is the cross-entropy of
      ``predict(x)``. hpo calls it once per step after ``gradient`` (as the book's own
      ``Trainer`` does) for the loss curve and the divergence check.
    """

    params: dict[str, np.ndarray]

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...


class Cs231nNet(Protocol):
    """cs231n's model (``classifiers/fc_net.py``, read by its ``Solver``).

    - ``params``: a dict of parameter arrays;
    - ``loss(X)``: scores (N, C), in test mode;
    - ``loss(X, y)``: ``(loss, grads)`` for the batch in training mode, ``grads`` with exactly
      the keys and shapes of ``params``.
    """

    params: dict[str, np.ndarray]

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any: ...


BOOK, CS231N = "book", "cs231n"


def shape_of(net: Any) -> str:
    """``BOOK`` or ``CS231N``: which contract ``net`` follows (raises ``NetworkError``)."""
    params = getattr(net, "params", None)
    if not isinstance(params, dict) or not params:
        raise NetworkError(
            f"has no params dict of arrays (got {type(params).__name__}; allowed: the book's "
            "params/gradient/predict or cs231n's params/loss)"
        )
    if callable(getattr(net, "gradient", None)) and callable(getattr(net, "predict", None)):
        return BOOK
    if callable(getattr(net, "loss", None)):
        return CS231N
    raise NetworkError(
        "has params but neither gradient(x, t) with predict(x) (the book's) nor loss(X, y) "
        "(cs231n's)"
    )


class AdaptedNet:
    """A learner's net as a ``Trainable``: its ``params`` are the arrays the optimizer
    updates, its own methods compute the gradients and scores.

    Args:
        net: an object of the book's or cs231n's shape (``shape_of``).
    """

    def __init__(self, net: Any) -> None:
        self.net = net
        self.shape = shape_of(net)
        self.keys = list(net.params)
        self.grads: list[np.ndarray] = []
        self._predict_takes_train = self.shape == BOOK and _takes(net.predict, "train_flg")
        self.has_loss = callable(getattr(net, "loss", None))
        self.own_state = callable(getattr(net, "state", None)) and callable(
            getattr(net, "load_state", None)
        )

    def loss_and_grads(self, x: np.ndarray, labels: np.ndarray) -> tuple[Any, dict]:
        """The net's own loss and gradients of one batch, in either shape (raises
        ``NetworkError`` when it returns something of another form)."""
        if self.shape == CS231N:
            out = self.net.loss(x, labels)
            if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
                raise NetworkError(
                    f"loss(X, y) returned {_describe(out)} (allowed: a tuple (loss, grads) with "
                    "grads a dict like params)"
                )
            return out
        grads = self.net.gradient(x, labels)
        if not isinstance(grads, dict):
            raise NetworkError(
                f"gradient(x, t) returned {_describe(grads)} (allowed: a dict of arrays with "
                "the keys of params)"
            )
        loss = self.net.loss(x, labels) if self.has_loss else cross_entropy(self.predict(x), labels)
        return loss, grads

    def gradient(self, x: np.ndarray, labels: np.ndarray) -> float:
        loss, grads = self.loss_and_grads(x, labels)
        self.grads = [grads[k] for k in self.keys]
        return float(loss)

    def step_arrays(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        # Read again every step: a net may rebind an entry between steps (the optimizer's
        # state stays aligned by position, as the keys never change).
        return [self.net.params[k] for k in self.keys], self.grads

    def predict(self, x: np.ndarray, *, train: bool = False) -> np.ndarray:
        if self.shape == CS231N:
            return self.net.loss(x)
        if self._predict_takes_train:
            return self.net.predict(x, train_flg=train)
        return self.net.predict(x)

    def state(self) -> list[np.ndarray]:
        if self.own_state:
            return list(self.net.state())
        return [np.array(self.net.params[k], copy=True) for k in self.keys]

    def load_state(self, state: list[np.ndarray]) -> None:
        if self.own_state:
            self.net.load_state(state)
            return
        for k, saved in zip(self.keys, state, strict=True):
            self.net.params[k][...] = saved

    def named_params(self) -> dict[str, np.ndarray]:
        """The parameters by the net's own keys (what ``hpo best --export`` saves)."""
        return {k: self.net.params[k] for k in self.keys}


def _takes(function: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(
        p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


# ---------------------------------------------------------------------------------------------
# Loading and building

INPUT_NAMES = ("input_dim", "input_size")
"""Constructor keywords that receive the number of input features (cs231n's, the book's)."""
OUTPUT_NAMES = ("num_classes", "output_size")
"""Constructor keywords that receive the number of classes."""

_LOADED: dict[str, tuple[tuple[int, int] | None, type, str | None]] = {}
"""Each reference's class as loaded in this process, with the file's (mtime, size) and digest
when it is a file: an edited file is loaded anew (a Dask worker lives longer than one run)."""


def split_reference(reference: str) -> tuple[str, str]:
    """``"nets.py:TwoLayerNet"`` as ``("nets.py", "TwoLayerNet")`` (raises ``NetworkError``)."""
    where, colon, name = reference.rpartition(":")
    if not colon or not where or not name.isidentifier():
        raise NetworkError(
            f"{reference!r} is not FILE.py:Class or package.module:Class (allowed: e.g. "
            '"nets.py:TwoLayerNet")'
        )
    return where, name


def is_file_reference(reference: str) -> bool:
    """Whether ``reference`` names a Python file (else a module on the import path)."""
    where, _ = split_reference(reference)
    return where.endswith(".py") or "/" in where or "\\" in where


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a network file, cut to 16 hex digits (a trial records it)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def load_network(reference: str) -> type:
    """The class named by ``reference``: ``/abs/or/relative/nets.py:Name`` or
    ``package.module:Name``. A file is run as a module of its own, its folder appended to
    ``sys.path`` for its own imports; a file inside a package (a folder with
    ``__init__.py``, as cs231n's ``classifiers/fc_net.py``) is imported by its dotted name,
    the package's parent folder appended, so that its relative imports work. Loaded once per
    process and version of the file. Raises ``NetworkError``."""
    where, name = split_reference(reference)
    stamp, digest = None, None
    if is_file_reference(reference):
        path = Path(where).resolve()
        if not path.is_file():
            raise NetworkError(f"{where}: no such file")
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _LOADED.get(reference)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    if stamp is not None:
        digest = file_digest(path)
        module = _import_file(path, where, digest)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:
            raise NetworkError(f"module {where} does not import: {_one_line(e)}") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        found = sorted(
            n
            for n, v in vars(module).items()
            if isinstance(v, type) and v.__module__ == module.__name__ and not n.startswith("_")
        )
        allowed = ", ".join(found[:10]) or "none found"
        raise NetworkError(f"{where} has no class {name} (classes there: {allowed})")
    _LOADED[reference] = (stamp, cls, digest)
    return cls


def loaded_digest(reference: str) -> str | None:
    """The digest of the file version this process trains ``reference`` from (loading it if
    it is not yet); None for a module on the import path."""
    load_network(reference)
    return _LOADED[reference][2]


def _import_file(path: Path, where: str, digest: str) -> Any:
    parts, root = [path.stem], path.parent
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    folder = str(root if len(parts) > 1 else path.parent)
    if folder not in sys.path:
        sys.path.append(folder)  # after the installed packages: never shadows them
    try:
        if len(parts) > 1:  # a module of a package: by its dotted name
            dotted = ".".join(parts)
            module = sys.modules.get(dotted)
            if module is not None and getattr(module, "__file__", None) == str(path):
                return importlib.reload(module)  # the file changed since
            return importlib.import_module(dotted)
        # A module of its own, named for the file and its content.
        module_name = f"hpo_network_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}_{digest}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # pickling and dataclasses look modules up here
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        return module
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a SystemExit of the file's own (a script's exit()) too
        raise NetworkError(f"{where} does not import: {_one_line(e)}") from None


def constructor_arguments(cls: type) -> tuple[list[str], bool]:
    """The keyword names ``cls(...)`` takes (``self`` left out) and whether it takes ``**``."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return [], True
    names = [
        n
        for n, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    return names, any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def check_arguments(cls: type, args: dict[str, Any]) -> str | None:
    """What is wrong with constructing ``cls`` with ``args`` (before the data's sizes are
    added), or None."""
    names, takes_any = constructor_arguments(cls)
    for key in args:
        if key in INPUT_NAMES + OUTPUT_NAMES and key in names:
            return f"{key} is set by the data (allowed: leave it out)"
        if not takes_any and key not in names:
            own = [n for n in names if n not in INPUT_NAMES + OUTPUT_NAMES + ("rng",)]
            return (
                f"{cls.__name__}() takes no argument {key!r} (allowed: {', '.join(own) or 'none'})"
            )
    return None


def build_network(
    cls: type,
    args: dict[str, Any],
    *,
    n_features: int,
    n_classes: int,
    rng: np.random.Generator,
) -> AdaptedNet:
    """Construct ``cls`` with ``args``, the data's sizes under the names its constructor takes
    (``INPUT_NAMES``, ``OUTPUT_NAMES``) and, if it takes one, ``rng``; NumPy's global random
    state is seeded from ``rng`` first. Raises ``NetworkError``."""
    problem = check_arguments(cls, args)
    if problem is not None:
        raise NetworkError(problem)
    names, _ = constructor_arguments(cls)
    keywords = dict(args)
    for candidates, size in ((INPUT_NAMES, n_features), (OUTPUT_NAMES, n_classes)):
        for name in candidates:
            if name in names:
                keywords[name] = size
                break
    if "rng" in names:
        keywords["rng"] = rng
    # The legacy global state takes a 32-bit seed; drawn from the trial's own generator.
    np.random.seed(int(rng.integers(0, 2**32)))  # noqa: NPY002 - the state learners draw from
    try:
        net = cls(**keywords)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # SystemExit too: a constructor's exit() is a broken net
        raise NetworkError(f"{cls.__name__}(...) raised {_one_line(e)}") from None
    return AdaptedNet(net)


def check_network(net: AdaptedNet, x: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
    """Try the contract on one small batch ``x`` (N, D): scores of shape (N, n_classes) and
    gradients with the keys and shapes of ``params``. A non-finite loss is allowed (that
    trial diverges, a result). It trains nothing but may change the net's state (BatchNorm's
    averages): check a net built for the purpose. Raises ``NetworkError``."""
    params = net.net.params
    for key, value in params.items():
        if not isinstance(key, str):
            raise NetworkError(f"params has the key {key!r} (allowed: string keys, as 'W1')")
        if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
            raise NetworkError(
                f"params[{key!r}] is {_describe(value)} (allowed: a floating-point ndarray)"
            )
    own = [m for m in ("state", "load_state") if callable(getattr(net.net, m, None))]
    if len(own) == 1:
        raise NetworkError(
            f"defines {own[0]}() without {({'state', 'load_state'} - set(own)).pop()}() "
            "(allowed: both, to restore the best epoch's state, or neither: params alone)"
        )
    try:
        if own:
            net.load_state(net.state())
        scores = net.predict(x)
        if not isinstance(scores, np.ndarray) or scores.shape != (len(x), n_classes):
            got = scores.shape if isinstance(scores, np.ndarray) else _describe(scores)
            raise NetworkError(
                f"its scores for {len(x)} inputs have shape {got} (allowed: ({len(x)}, "
                f"{n_classes}), one column per class)"
            )
        loss, grads = net.loss_and_grads(x, labels)
        if set(grads) != set(params):
            missing = sorted(set(params) - set(grads))
            extra = sorted(set(grads) - set(params))
            raise NetworkError(
                f"its gradients' keys differ from params' (missing {missing}, extra {extra}; "
                "allowed: exactly the keys of params)"
            )
        for key in params:
            g = np.asarray(grads[key])
            if g.shape != params[key].shape:
                raise NetworkError(
                    f"the gradient of {key!r} has shape {g.shape}, params[{key!r}] "
                    f"{params[key].shape} (allowed: the same shape)"
                )
        try:
            float(loss)
        except (TypeError, ValueError):
            raise NetworkError(f"its loss is {_describe(loss)} (allowed: a number)") from None
    except (NetworkError, KeyboardInterrupt):
        raise
    except BaseException as e:
        raise NetworkError(f"raised {_one_line(e)} on a batch of {len(x)}") from None


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype} {value.shape}"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return f"a {type(value).__name__}"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
