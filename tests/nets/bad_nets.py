"""Nets that break the contract, one way each (tests/trainer/test_contract.py and
tests/hpo/test_own_network.py)."""

import numpy as np


class _Base:
    def __init__(self, input_size, output_size, hidden_size=8):
        self.params = {
            "W1": 0.1 * np.random.randn(input_size, hidden_size),
            "W2": 0.1 * np.random.randn(hidden_size, output_size),
        }

    def predict(self, x):
        return np.maximum(0, x @ self.params["W1"]) @ self.params["W2"]

    def gradient(self, x, t):
        return {k: np.zeros_like(v) for k, v in self.params.items()}


class RaisesInConstructor(_Base):
    def __init__(self, input_size, output_size):
        raise RuntimeError("out of coffee")


class NoParams:
    def __init__(self, input_size, output_size):
        self.weights = np.zeros((input_size, output_size))

    def predict(self, x):
        return x @ self.weights


class NoGradient(_Base):
    gradient = None

    def __init__(self, input_size, output_size):
        super().__init__(input_size, output_size)


class WrongKeys(_Base):
    def gradient(self, x, t):
        return {"W1": np.zeros_like(self.params["W1"]), "W3": np.zeros(3)}


class WrongShape(_Base):
    def gradient(self, x, t):
        return {"W1": np.zeros(3), "W2": np.zeros_like(self.params["W2"])}


class WrongScores(_Base):
    def predict(self, x):
        return np.zeros((len(x), 3))


class RaisesInGradient(_Base):
    def gradient(self, x, t):
        raise IndexError("index 64 is out of bounds")


class ListParams(_Base):
    def __init__(self, input_size, output_size):
        super().__init__(input_size, output_size)
        self.params["W1"] = self.params["W1"].tolist()


class Diverges(_Base):
    """Meets the contract but blows up: a diverged trial, not an error."""

    def gradient(self, x, t):
        return {k: np.full_like(v, np.nan) for k, v in self.params.items()}
