"""A plain-NumPy training loop with fastloss computing the loss and its gradient.

Mini-batch gradient descent (with momentum) of two models on scikit-learn's digits (8x8
images of the ten digits; a generated ten-class data set of the same shape when scikit-learn
is not installed):

1. softmax regression: logits = X W + b;
2. a one-hidden-layer MLP: logits = relu(X W1 + b1) W2 + b2.

Each model is trained twice from the same initial weights and batches: with
``fastloss.softmax_cross_entropy`` and with ``fastloss.reference.softmax_cross_entropy``
(the plain NumPy implementation of the same loss). The script prints the mean training loss
and the time of every epoch for both, and the test accuracy at the end. The two loss columns
agree to float rounding; the time columns show what the fused kernel saves inside a real loop
(for these small batches most of an epoch is the matrix products, not the loss).

    python scripts/train_digits.py                 # 30 epochs of each model
    python scripts/train_digits.py --epochs 5 --hidden 256 --batch-size 64

The gradient of the mean loss with respect to the logits is written over the logits buffer
(``out=logits``): the step needs no gradient array of its own.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

import fastloss
import fastloss.reference


def load_data(seed: int = 0) -> Tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(name, X_train, y_train, X_test, y_test), features standardized, float32."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        name = "generated (scikit-learn is not installed)"
        rng = np.random.default_rng(seed)
        centers = rng.normal(0.0, 1.0, (10, 64))
        y = rng.integers(0, 10, 1797)
        X = centers[y] + rng.normal(0.0, 1.5, (y.size, 64))
    else:
        name = "scikit-learn digits"
        digits = load_digits()
        X, y = digits.data.astype(np.float64), digits.target
    order = np.random.default_rng(seed).permutation(y.size)
    X, y = X[order], y[order].astype(np.int64)
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-6)
    n_train = int(0.8 * y.size)
    X = X.astype(np.float32)
    return name, X[:n_train], y[:n_train], X[n_train:], y[n_train:]


# ------------------------------------------------------------------------------ models

class SoftmaxRegression:
    """logits = X W + b."""

    name = "softmax regression"

    def __init__(self, n_features: int, n_classes: int, rng: np.random.Generator):
        self.params = {"W": (rng.standard_normal((n_features, n_classes)) * 0.01).astype(np.float32),
                       "b": np.zeros(n_classes, np.float32)}

    def forward(self, X: np.ndarray) -> np.ndarray:
        return X @ self.params["W"] + self.params["b"]

    def backward(self, X: np.ndarray, dlogits: np.ndarray) -> Dict[str, np.ndarray]:
        return {"W": X.T @ dlogits, "b": dlogits.sum(axis=0)}


class MLP:
    """logits = relu(X W1 + b1) W2 + b2 (He initialisation)."""

    name = "MLP, one hidden layer"

    def __init__(self, n_features: int, n_classes: int, rng: np.random.Generator,
                 hidden: int = 128):
        scale1, scale2 = np.sqrt(2.0 / n_features), np.sqrt(2.0 / hidden)
        self.params = {
            "W1": (rng.standard_normal((n_features, hidden)) * scale1).astype(np.float32),
            "b1": np.zeros(hidden, np.float32),
            "W2": (rng.standard_normal((hidden, n_classes)) * scale2).astype(np.float32),
            "b2": np.zeros(n_classes, np.float32),
        }
        self._hidden: Optional[np.ndarray] = None

    def forward(self, X: np.ndarray) -> np.ndarray:
        self._hidden = np.maximum(X @ self.params["W1"] + self.params["b1"], 0)
        return self._hidden @ self.params["W2"] + self.params["b2"]

    def backward(self, X: np.ndarray, dlogits: np.ndarray) -> Dict[str, np.ndarray]:
        h = self._hidden
        dh = dlogits @ self.params["W2"].T
        dh *= h > 0
        return {"W2": h.T @ dlogits, "b2": dlogits.sum(axis=0),
                "W1": X.T @ dh, "b1": dh.sum(axis=0)}


MODELS: Dict[str, Callable[..., object]] = {"softmax": SoftmaxRegression, "mlp": MLP}


# ------------------------------------------------------------------------------ training

@dataclass
class History:
    losses: List[float] = field(default_factory=list)    # mean training loss per epoch
    seconds: List[float] = field(default_factory=list)   # wall time per epoch
    accuracy: float = float("nan")                       # on the test set, after training


def train(loss_module, model_kind: str, data, *, epochs: int = 30, batch_size: int = 128,
          learning_rate: float = 0.1, momentum: float = 0.9, hidden: int = 128,
          max_steps: Optional[int] = None, seed: int = 0) -> History:
    """Train one model with `loss_module.softmax_cross_entropy` (fastloss or
    fastloss.reference); the same seed gives the same initial weights and batches."""
    _, X, y, X_test, y_test = data
    rng = np.random.default_rng(seed)
    kwargs = {"hidden": hidden} if model_kind == "mlp" else {}
    model = MODELS[model_kind](X.shape[1], 10, rng, **kwargs)
    velocity = {key: np.zeros_like(value) for key, value in model.params.items()}
    history = History()
    steps = 0
    for _ in range(epochs):
        order = rng.permutation(y.size)
        start = time.perf_counter()
        total, batches = 0.0, 0
        for begin in range(0, y.size, batch_size):
            rows = order[begin:begin + batch_size]
            Xb = X[rows]
            logits = model.forward(Xb)
            # the mean loss, and its gradient written over the logits
            loss, dlogits = loss_module.softmax_cross_entropy(logits, y[rows], out=logits)
            grads = model.backward(Xb, dlogits)
            for key, grad in grads.items():
                velocity[key] *= momentum
                velocity[key] -= learning_rate * grad
                model.params[key] += velocity[key]
            total += loss
            batches += 1
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        history.seconds.append(time.perf_counter() - start)
        history.losses.append(total / batches)
        if max_steps is not None and steps >= max_steps:
            break
    history.accuracy = float((model.forward(X_test).argmax(axis=1) == y_test).mean())
    return history


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--hidden", type=int, default=128, help="hidden units of the MLP")
    parser.add_argument("--models", default="softmax,mlp", help="comma-separated: softmax, mlp")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = load_data(args.seed)
    print(f"data: {data[0]}, {data[1].shape[0]} training and {data[3].shape[0]} test samples, "
          f"{data[1].shape[1]} features; batch {args.batch_size}; fastloss "
          f"{fastloss.__version__} ({fastloss.simd_level()})")
    for kind in args.models.split(","):
        runs = {}
        for label, module in (("fastloss", fastloss), ("reference", fastloss.reference)):
            runs[label] = train(module, kind, data, epochs=args.epochs,
                                batch_size=args.batch_size, learning_rate=args.learning_rate,
                                hidden=args.hidden, seed=args.seed)
        fast, ref = runs["fastloss"], runs["reference"]
        print(f"\n{MODELS[kind].name}")
        print(f"{'epoch':>5}  {'loss (fastloss)':>16}  {'loss (reference)':>16}  "
              f"{'ms (fastloss)':>13}  {'ms (reference)':>14}")
        for epoch, (lf, lr, tf, tr) in enumerate(zip(fast.losses, ref.losses, fast.seconds,
                                                     ref.seconds), 1):
            print(f"{epoch:>5}  {lf:>16.6f}  {lr:>16.6f}  {tf * 1e3:>13.2f}  {tr * 1e3:>14.2f}")
        median = lambda values: float(np.median(values)) * 1e3  # noqa: E731
        print(f"median epoch: {median(fast.seconds):.2f} ms with fastloss, "
              f"{median(ref.seconds):.2f} ms with the reference; test accuracy "
              f"{fast.accuracy:.3f} (fastloss), {ref.accuracy:.3f} (reference)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
