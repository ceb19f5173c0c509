"""Plain NumPy implementations of every fastloss loss: the oracle for the tests and the
baseline for the benchmarks.

Same names, arguments, return values and errors as the public functions (the argument checks
are shared with them through fastloss._validation); the maths is written independently, in
the textbook stable forms, with array expressions in the input's dtype and the reductions
accumulated in float64. ``n_threads`` is accepted and ignored.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validation as check
from ._api import LossResult

__all__ = ["softmax_cross_entropy"]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """log p = (x - max) - log(sum(exp(x - max))), row-wise: stable for any finite x."""
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _finish(per_sample: np.ndarray, grad_per_sample: np.ndarray, denominator: float,
            reduction: str, compute_grad: bool, out, dtype):
    if reduction == "none":
        loss = per_sample.astype(dtype)
        scale = 1.0
    elif reduction == "sum":
        loss = float(per_sample.sum(dtype=np.float64))
        scale = 1.0
    else:
        total = float(per_sample.sum(dtype=np.float64))
        loss = total / denominator if denominator != 0 else math.nan
        scale = 1.0 / denominator if denominator != 0 else math.nan
    grad = None
    if compute_grad:
        with np.errstate(invalid="ignore"):
            scaled = (grad_per_sample * scale).astype(dtype)
        if out is not None:
            out[...] = scaled
            grad = out
        else:
            grad = scaled
    return LossResult(loss, grad)


def softmax_cross_entropy(logits, target, *, weight=None, ignore_index=-100,
                          label_smoothing=0.0, reduction="mean", compute_grad=True, out=None,
                          n_threads=None):
    """NumPy reference of fastloss.softmax_cross_entropy (torch's F.cross_entropy)."""
    logits = check.float_input(logits, "logits")
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (N, C), got {logits.ndim}-D shape {logits.shape}")
    n, n_classes = logits.shape
    if n_classes < 1:
        raise ValueError(f"logits must have at least one class (C >= 1), got shape {logits.shape}")
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    check.n_threads(n_threads)
    ignore_index = check.integer_scalar(ignore_index, "ignore_index")
    eps = check.real_scalar(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    dtype = logits.dtype
    target_array = np.asarray(target)
    w = check.class_weight(weight, "weight", n_classes, dtype)
    if target_array.ndim == 1:
        y = check.class_indices(target_array, "target", n)
    elif target_array.ndim == 2:
        if target_array.dtype.kind != "f":
            raise TypeError("a 2-D target holds class probabilities and must have a floating "
                            f"dtype, got dtype {target_array.dtype}")
        if ignore_index != -100:
            raise ValueError("ignore_index applies only to class-index targets; leave it at "
                             f"its default (-100) with probability targets, got {ignore_index}")
        y = None
        probabilities = check.float_target(target_array, "target", dtype, logits.shape)
    else:
        raise ValueError("target must be 1-D class indices (N,) or 2-D probabilities (N, C), "
                         f"got {target_array.ndim}-D shape {target_array.shape}")
    out = check.out_array(out, logits, {"target": target_array, "weight": weight})
    if y is not None:
        check.check_indices_in_range(y, "target", n_classes, ignore_index, w)

    x = np.asarray(logits)
    w_full = np.ones(n_classes, dtype=dtype) if w is None else w
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        logp = _log_softmax(x)
        p = np.exp(logp)
        if y is not None:
            kept = y != ignore_index
            y_safe = np.where(kept, y, 0)
            rows = np.arange(n)
            w_y = np.where(kept, w_full[y_safe], 0).astype(dtype)
            # nll part: -(1 - eps) w_y log p_y;  smoothing part: -(eps/C) sum_c w_c log p_c
            nll = -logp[rows, y_safe]
            per_sample = (1 - eps) * w_y * nll
            if eps > 0:  # (skipped at eps = 0: a -inf logit would make 0 * inf = nan)
                smooth = -(logp * w_full).sum(axis=1)
                per_sample = per_sample + np.where(kept, eps / n_classes * smooth, 0)
            onehot = np.zeros_like(x)
            onehot[rows, y_safe] = 1
            grad = ((1 - eps) * w_y[:, None] * (p - onehot)
                    + (eps / n_classes) * (w_full.sum(dtype=np.float64) * p - w_full))
            grad = np.where(kept[:, None], grad, 0)
            denominator = float(w_y.sum(dtype=np.float64)) if w is not None else float(kept.sum())
        else:
            q = (1 - eps) * probabilities + eps / n_classes
            wq = q * w_full
            per_sample = -(wq * logp).sum(axis=1)
            grad = wq.sum(axis=1, keepdims=True) * p - wq
            denominator = float(n)
    return _finish(per_sample, grad, denominator, reduction, compute_grad, out, dtype)
