"""The registry of loss functions that the shared tests (tests/test_losses.py) run over.

One ``LossCase`` per public loss: how to make valid inputs, which option combinations to
try, and the PyTorch expression with the same semantics. Adding a loss here enrols it in every
shared test: reference, finite differences, PyTorch values and autograd gradients, float32 and
float64, out= and in place, compute_grad=False, thread-count determinism, non-contiguous
inputs, every SIMD level, and the edge cases of API.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

try:  # PyTorch is in the test extra; the torch tests are skipped only where it is absent
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None
    F = None

Inputs = Tuple[np.ndarray, np.ndarray, dict]  # (differentiated input, target, keyword args)


@dataclass(frozen=True)
class LossCase:
    name: str
    # make(rng, dtype, shape, option) -> (input, target, kwargs); `option` is one entry of
    # `options` (keys starting with "_" steer the maker and are not passed to the loss)
    make: Callable[[np.random.Generator, np.dtype, tuple, dict], Inputs]
    options: List[Dict] = field(default_factory=lambda: [{}])
    # torch_loss(input_tensor, target, kwargs, reduction) -> torch loss tensor
    torch_loss: Optional[Callable] = None
    # shapes: "small" for option grids, "threads" large enough to run in parallel
    shapes: Dict[str, tuple] = field(default_factory=dict)
    # True when rows (axis 0) are samples with a class axis (nan confined to a row)
    class_axis: bool = False

    def call_kwargs(self, kwargs: dict) -> dict:
        return {k: v for k, v in kwargs.items() if not k.startswith("_")}


# --------------------------------------------------------------------------- softmax CE

def _make_softmax_ce(rng, dtype, shape, option):
    n, c = shape
    logits = (rng.standard_normal((n, c)) * 3).astype(dtype)
    kwargs = {k: v for k, v in option.items() if not k.startswith("_")}
    if "weight" in kwargs:
        kwargs["weight"] = rng.uniform(0.2, 2.0, c).astype(dtype)
    if option.get("_target") == "prob":
        target = rng.dirichlet(np.ones(c), n).astype(dtype) if n else np.zeros((0, c), dtype)
    else:
        target = rng.integers(0, c, n)
        if "ignore_index" in kwargs and n:
            target[rng.random(n) < 0.3] = kwargs["ignore_index"]
    return logits, target, kwargs


def _torch_softmax_ce(x, target, kwargs, reduction):
    kw = dict(kwargs)
    if kw.get("weight") is not None:
        kw["weight"] = torch.as_tensor(kw["weight"], dtype=x.dtype)
    t = torch.as_tensor(target)
    if t.is_floating_point():
        t = t.to(x.dtype)
    return F.cross_entropy(x, t, reduction=reduction, **kw)


SOFTMAX_CE = LossCase(
    name="softmax_cross_entropy",
    make=_make_softmax_ce,
    options=[
        {},
        {"weight": True},
        {"label_smoothing": 0.1},
        {"ignore_index": 1},
        {"weight": True, "label_smoothing": 0.25, "ignore_index": 2},
        {"_target": "prob"},
        {"_target": "prob", "weight": True, "label_smoothing": 0.2},
    ],
    torch_loss=_torch_softmax_ce,
    shapes={"small": (37, 11), "threads": (700, 257)},
    class_axis=True,
)

CASES: List[LossCase] = [SOFTMAX_CE]


def option_id(option: dict) -> str:
    if not option:
        return "default"
    return "-".join(f"{k.lstrip('_')}={v}" if v is not True else k for k, v in option.items())
