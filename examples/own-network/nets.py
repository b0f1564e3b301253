"""A learner's own net, as cs231n's assignment 1 has it write one: ``loss(X)`` gives the scores,
``loss(X, y)`` the loss and the gradients of ``params``. hpo tunes it unchanged."""

import numpy as np


class TwoLayerNet:
    """affine - ReLU - affine - softmax, with L2 regularization ``reg``."""

    def __init__(self, input_dim=3072, hidden_dim=100, num_classes=10, weight_scale=1e-2, reg=0.0):
        self.reg = reg
        self.params = {
            "W1": weight_scale * np.random.randn(input_dim, hidden_dim),
            "b1": np.zeros(hidden_dim),
            "W2": weight_scale * np.random.randn(hidden_dim, num_classes),
            "b2": np.zeros(num_classes),
        }

    def loss(self, X, y=None):
        W1, b1, W2, b2 = (self.params[k] for k in ("W1", "b1", "W2", "b2"))
        h = np.maximum(0, X @ W1 + b1)  # (N, H)
        scores = h @ W2 + b2  # (N, C)
        if y is None:
            return scores
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        n = len(X)
        loss = -np.log(p[np.arange(n), y]).mean() + 0.5 * self.reg * ((W1**2).sum() + (W2**2).sum())
        dscores = p
        dscores[np.arange(n), y] -= 1
        dscores /= n
        dh = dscores @ W2.T
        dh[h <= 0] = 0
        grads = {"W1": X.T @ dh + self.reg * W1, "b1": dh.sum(axis=0)}
        grads |= {"W2": h.T @ dscores + self.reg * W2, "b2": dscores.sum(axis=0)}
        return loss, grads
