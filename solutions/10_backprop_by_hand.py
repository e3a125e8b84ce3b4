"""Worked answers to the exercises of chapter 10 (`tests/test_solutions.py` checks them).

    .venv/bin/python solutions/10_backprop_by_hand.py
"""

import math

import numpy as np

from gptlib import numpy_gpt as ng


def exercise_1(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The tanh approximation of GELU, 0.5 x (1 + tanh u), u = sqrt(2/pi) (x + 0.044715 x^3).

    Product rule: d/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx.
    """
    c = math.sqrt(2.0 / math.pi)
    u = c * (x + 0.044715 * x**3)
    t = np.tanh(u)
    du = c * (1.0 + 3 * 0.044715 * x**2)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


def exercise_2(dy: np.ndarray) -> np.ndarray:
    """The bias was added at every position of every row: sum dy over all but the last axis."""
    return dy.reshape(-1, dy.shape[-1]).sum(axis=0)


def exercise_3(s: np.ndarray, dp: np.ndarray, tau: float) -> np.ndarray:
    """softmax(s / tau): the softmax backward gives d(s / tau); the chain rule divides by tau."""
    p = ng.softmax(s / tau)
    return ng.softmax_backward(dp, p) / tau


def exercise_4(n_layer=2, batch=24, n_head=4, block=32) -> int:
    """The attention weights P kept for the backward pass: B x H x T x T per layer."""
    return n_layer * batch * n_head * block * block


def exercise_5(seed: int = 0) -> dict[str, float]:
    """Relative errors of LayerNorm's backward with and without its last mean term."""
    rng = np.random.default_rng(seed)
    x, gain, bias = rng.normal(size=(2, 3, 6)), rng.normal(size=6), rng.normal(size=6)
    out, cache = ng.layernorm_forward(x, gain, bias)
    dy = rng.normal(size=out.shape)
    x_hat, rstd, _ = cache
    g = dy * gain
    broken = rstd * (g - g.mean(axis=-1, keepdims=True))  # the last term dropped
    right = ng.layernorm_backward(dy, cache)[0]
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + 1e-6
        up = (ng.layernorm_forward(x, gain, bias)[0] * dy).sum()
        x[i] = old - 1e-6
        down = (ng.layernorm_forward(x, gain, bias)[0] * dy).sum()
        x[i] = old
        numeric[i] = (up - down) / 2e-6

    def error(a):
        return float(np.linalg.norm(a - numeric) / np.linalg.norm(numeric))

    return {"right": error(right), "broken": error(broken)}


if __name__ == "__main__":
    xs = np.linspace(-3, 3, 7)
    print("1.", exercise_1(np.ones_like(xs), xs).round(4))
    print("2.", exercise_2(np.ones((2, 3, 4))))
    print("3.", exercise_3(np.arange(3.0), np.array([1.0, 0.0, 0.0]), 2.0).round(4))
    print("4.", exercise_4())
    print("5.", exercise_5())
