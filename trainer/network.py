"""MultiLayerNet: a fully connected classifier built from the layers in ``trainer.layers``.

The stack is ``[Affine, (BatchNorm), activation, (Dropout)] * len(hidden_sizes)``, then a last
Affine whose scores go to softmax with cross-entropy. The network collects the layers'
parameters and gradients by position, once, into two parallel lists (``params``, ``grads``) whose
arrays are views into two flat buffers (``flat_params``, ``flat_grads``): an optimizer may update
either form in place, and the training loop hands it the flat one.
"""

import itertools
from collections.abc import Sequence

import numpy as np

from trainer.layers import (
    Affine,
    BatchNorm,
    Dropout,
    Layer,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
    cross_entropy,
)

ACTIVATIONS: dict[str, type[Layer]] = {
    "relu": ReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "leaky_relu": LeakyReLU,
}
"""Hidden-layer activations by name."""

INITS = ("he", "xavier", "std")
"""Weight-init rules: He et al. (2015) ``sqrt(2 / fan_in)``, Xavier (Glorot & Bengio, 2010) in
the book's form ``sqrt(1 / fan_in)``, or a fixed std; the std is then multiplied by
``init_scale``."""

WEIGHT_DECAY_TYPES = ("l2", "l1")


def parameter_count(input_size: int, hidden_sizes: Sequence[int], output_size: int) -> int:
    """Weights and biases of the Affine layers (BatchNorm adds 4 per hidden unit, see
    ``training_memory``)."""
    widths = [input_size, *hidden_sizes, output_size]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def training_memory(
    input_size: int,
    hidden_sizes: Sequence[int],
    output_size: int,
    *,
    batch_rows: int,
    itemsize: int = 4,
) -> int:
    """An upper estimate, in bytes, of what training such a net allocates beyond its data.

    Parameters count 9 times: the flat parameters and gradients, Adam's two moments, the best
    epoch's copy and the update's temporaries (measured with tracemalloc: 8.2x with Adam, 5.0x
    with SGD, on 3000x3000 hidden layers). Activations count 6 arrays of ``batch_rows`` rows per
    layer (forward caches, masks, backward temporaries; measured 1.8x to 2.6x); ``batch_rows`` is
    the larger of a training batch and an evaluation batch.
    """
    params = parameter_count(input_size, hidden_sizes, output_size) + 4 * sum(hidden_sizes)
    units = input_size + sum(hidden_sizes) + output_size
    return itemsize * (9 * params + 6 * batch_rows * units)


def init_std(init: str, fan_in: int, init_scale: float) -> float:
    """The standard deviation of a weight matrix with ``fan_in`` inputs under rule ``init``."""
    if init == "he":
        return init_scale * np.sqrt(2.0 / fan_in)
    if init == "xavier":
        return init_scale * np.sqrt(1.0 / fan_in)
    if init == "std":
        return init_scale
    raise ValueError(f"The 'init' parameter must be one of {', '.join(INITS)}. Got {init!r}.")


class MultiLayerNet:
    """A fully connected network for classification.

    Args:
        input_size: D, the number of input features.
        hidden_sizes: the width of each hidden layer, e.g. ``(100, 100, 100)``.
        output_size: C, the number of classes.
        activation: one of ``ACTIVATIONS``.
        batchnorm: insert BatchNorm between each hidden Affine and its activation.
        dropout_ratio: drop probability after each hidden activation; 0 disables dropout.
        weight_decay: the regularization strength lambda, >= 0. It applies to the Affine weights
            only, never to biases or BatchNorm's gamma and beta.
        weight_decay_type: ``"l2"`` adds ``lambda / 2 * sum(W**2)`` to the loss, ``"l1"`` adds
            ``lambda * sum(|W|)``.
        init: the weight-init rule, one of ``INITS``.
        init_scale: a multiplier on the rule's std (1.0 = the rule as is; with ``init="std"``
            it is the std itself).
        dtype: ``np.float32`` (fast, the default) or ``np.float64`` (gradient checks).
        rng: the generator for the initial weights and the dropout masks.
    """

    def __init__(
        self,
        *,
        input_size: int,
        hidden_sizes: Sequence[int],
        output_size: int,
        activation: str = "relu",
        batchnorm: bool = False,
        dropout_ratio: float = 0.0,
        weight_decay: float = 0.0,
        weight_decay_type: str = "l2",
        init: str = "he",
        init_scale: float = 1.0,
        dtype=np.float32,
        rng: np.random.Generator,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"The 'activation' parameter must be one of {', '.join(ACTIVATIONS)}. "
                f"Got {activation!r}."
            )
        if weight_decay_type not in WEIGHT_DECAY_TYPES:
            raise ValueError(
                "The 'weight_decay_type' parameter must be one of "
                f"{', '.join(WEIGHT_DECAY_TYPES)}. Got {weight_decay_type!r}."
            )
        if not weight_decay >= 0:
            raise ValueError(f"The 'weight_decay' parameter must be >= 0. Got {weight_decay}.")
        if not init_scale > 0:
            raise ValueError(f"The 'init_scale' parameter must be > 0. Got {init_scale}.")
        sizes = [input_size, *hidden_sizes, output_size]
        if any(int(s) != s or s < 1 for s in sizes):
            raise ValueError(f"Layer sizes must be positive integers. Got {sizes}.")
        self.dtype = np.dtype(dtype)
        # What it takes to build this net again (a checkpoint stores it beside the weights).
        self.architecture = {
            "input_size": int(input_size),
            "hidden_sizes": [int(h) for h in hidden_sizes],
            "output_size": int(output_size),
            "activation": activation,
            "batchnorm": bool(batchnorm),
            "dropout_ratio": float(dropout_ratio),
            "weight_decay": float(weight_decay),
            "weight_decay_type": weight_decay_type,
            "init": init,
            "init_scale": float(init_scale),
            "dtype": self.dtype.name,
        }
        self.weight_decay = float(weight_decay)
        self.weight_decay_type = weight_decay_type

        self.layers: list[Layer] = []
        self.affines: list[Affine] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            std = init_std(init, fan_in, init_scale)
            # Drawn in float64 so that float32 and float64 nets of one seed start alike.
            W = (std * rng.standard_normal((fan_in, fan_out))).astype(self.dtype)
            affine = Affine(W, np.zeros(fan_out, dtype=self.dtype), input_grad=i > 0)
            self.layers.append(affine)
            self.affines.append(affine)
            if i == len(sizes) - 2:
                break
            if batchnorm:
                self.layers.append(BatchNorm(fan_out, dtype=self.dtype))
            self.layers.append(ACTIVATIONS[activation]())
            if dropout_ratio > 0:
                self.layers.append(Dropout(dropout_ratio, rng=rng))
        self.loss_layer = SoftmaxWithLoss()

        # Every parameter, and every gradient, is a view into one flat buffer, so an optimizer
        # steps the whole net in one vectorized pass instead of one small pass per array (the
        # SGD step takes half the time). Layers keep writing their gradients in place.
        keyed = [(layer, key) for layer in self.layers for key in layer.params]
        total = sum(layer.params[key].size for layer, key in keyed)
        self.flat_params = np.empty(total, dtype=self.dtype)  # (P,)
        self.flat_grads = np.zeros(total, dtype=self.dtype)  # (P,)
        self.params: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []
        offset = 0
        for layer, key in keyed:
            shape, size = layer.params[key].shape, layer.params[key].size
            param = self.flat_params[offset : offset + size].reshape(shape)
            param[...] = layer.params[key]
            layer.params[key] = param
            layer.grads[key] = self.flat_grads[offset : offset + size].reshape(shape)
            self.params.append(param)
            self.grads.append(layer.grads[key])
            offset += size
        # The flat buffers hold every parameter and gradient: one array op per optimizer step.
        self._step_arrays = ([self.flat_params], [self.flat_grads])

    def step_arrays(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """What the optimizer updates in place: the flat parameters and their gradients."""
        return self._step_arrays

    def predict(self, x: np.ndarray, *, train: bool = False) -> np.ndarray:
        """Class scores (N, C) for inputs ``x`` (N, D)."""
        for layer in self.layers:
            x = layer.forward(x, train=train)
        return x

    def hidden_activations(self, x: np.ndarray) -> list[np.ndarray]:
        """The output of each hidden activation layer for ``x`` (N, D), in inference mode."""
        outputs = []
        activation_types = tuple(ACTIVATIONS.values())
        for layer in self.layers:
            x = layer.forward(x, train=False)
            if isinstance(layer, activation_types):
                outputs.append(x)
        return outputs

    def penalty(self) -> float:
        """The weight-decay term of the loss."""
        if self.weight_decay == 0.0:
            return 0.0
        if self.weight_decay_type == "l2":
            total = sum(float(np.vdot(a.params["W"], a.params["W"])) for a in self.affines)
            return 0.5 * self.weight_decay * total
        return self.weight_decay * sum(float(np.abs(a.params["W"]).sum()) for a in self.affines)

    def loss(self, x: np.ndarray, labels: np.ndarray, *, train: bool = False) -> float:
        """Cross-entropy of the predictions for ``x`` (N, D) plus the weight-decay term."""
        return cross_entropy(self.predict(x, train=train), labels) + self.penalty()

    def accuracy(self, x: np.ndarray, labels: np.ndarray) -> float:
        """Fraction of ``x`` (N, D) classified as ``labels`` (N,), in inference mode."""
        return float(np.mean(np.argmax(self.predict(x), axis=1) == labels))

    def gradient(self, x: np.ndarray, labels: np.ndarray) -> float:
        """Backpropagate one training batch; fills ``self.grads`` and returns the loss."""
        loss = self.loss_layer.forward(self.predict(x, train=True), labels)
        dout = self.loss_layer.backward()
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        if self.weight_decay > 0.0:
            lam = self.weight_decay
            for a in self.affines:
                W, dW = a.params["W"], a.grads["W"]
                dW += lam * W if self.weight_decay_type == "l2" else lam * np.sign(W)
        return loss + self.penalty()

    def _state_arrays(self) -> list[np.ndarray]:
        arrays = list(self.params)
        for layer in self.layers:
            if isinstance(layer, BatchNorm):
                arrays += [layer.running_mean, layer.running_var]
        return arrays

    def state(self) -> list[np.ndarray]:
        """Copies of everything training changes: parameters and BatchNorm's running stats."""
        return [a.copy() for a in self._state_arrays()]

    def load_state(self, state: list[np.ndarray]) -> None:
        """Restore what ``state()`` returned, in place."""
        arrays = self._state_arrays()
        if len(arrays) != len(state):
            raise ValueError(f"The state has {len(state)} arrays; this net has {len(arrays)}.")
        for target, source in zip(arrays, state, strict=True):
            target[...] = source
