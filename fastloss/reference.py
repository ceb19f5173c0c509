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

__all__ = [
    "softmax_cross_entropy",
    "binary_cross_entropy_with_logits",
    "huber",
    "smooth_l1",
    "sigmoid_focal",
    "softmax_focal",
    "multi_margin",
    "kl_divergence_with_logits",
]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """log p = (x - max) - log(sum(exp(x - max))), row-wise: stable for any finite x."""
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _finish(per_sample: np.ndarray, grad_per_sample: np.ndarray, denominator: float,
            reduction: str, compute_grad: bool, out, dtype, kept=None):
    """Reduce, scale the gradient to that of the returned loss, write `out`. Rows outside
    `kept` (ignored targets) get a zero gradient whatever the scale (a mean over nothing
    is nan, but an ignored row's gradient stays 0, as PyTorch's autograd gives)."""
    if reduction == "none":
        loss = np.asarray(per_sample, dtype=dtype)   # an array even for 0-d inputs
        scale = 1.0
    elif reduction == "sum":
        loss = float(np.sum(per_sample, dtype=np.float64))
        scale = 1.0
    else:
        total = float(np.sum(per_sample, dtype=np.float64))
        loss = total / denominator if denominator != 0 else math.nan
        scale = 1.0 / denominator if denominator != 0 else math.nan
    grad = None
    if compute_grad:
        with np.errstate(invalid="ignore"):
            scaled = np.asarray(grad_per_sample * scale, dtype=dtype)
            if kept is not None:
                scaled = np.where(kept[:, None], scaled, 0).astype(dtype)
        if out is not None:
            out[...] = scaled
            grad = out
        else:
            grad = scaled
    return LossResult(loss, grad)


def softmax_cross_entropy(logits, target, *, weight=None, ignore_index=-100,
                          label_smoothing=0.0, reduction="mean", compute_grad=True, out=None,
                          n_threads=None, sample_weight=None, z_loss=0.0, logit_softcap=None,
                          lse_out=None):
    """NumPy reference of fastloss.softmax_cross_entropy (torch's F.cross_entropy)."""
    if (sample_weight is not None or lse_out is not None or logit_softcap is not None
            or not (isinstance(z_loss, (int, float)) and z_loss == 0)
            or (isinstance(logits, np.ndarray) and logits.ndim != 2)):
        return _class_axis_cross_entropy(
            logits, target, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing, reduction=reduction, compute_grad=compute_grad,
            out=out, n_threads=n_threads, sample_weight=sample_weight, z_loss=z_loss,
            logit_softcap=logit_softcap, lse_out=lse_out)
    logits, n, n_classes = check.class_logits(logits)
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    check.n_threads(n_threads)
    ignore_index = check.ignore_index(ignore_index)
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
            # nll part: -(1 - eps) w_y log p_y;  smoothing part: -(eps/C) sum_c w_c log p_c.
            # Ignored rows are selected out, never multiplied by 0 (their logits may be nan),
            # and at eps = 0 the smoothing terms are not formed at all (0 * inf, 0 * nan
            # weights of classes that no target names).
            nll = -logp[rows, y_safe]
            onehot = np.zeros_like(x)
            onehot[rows, y_safe] = 1
            per_sample = (1 - eps) * w_y * nll
            grad = (1 - eps) * w_y[:, None] * (p - onehot)
            if eps > 0:
                smooth = -(logp * w_full).sum(axis=1)
                per_sample = per_sample + eps / n_classes * smooth
                grad = grad + (eps / n_classes) * (w_full.sum(dtype=np.float64) * p - w_full)
            per_sample = np.where(kept, per_sample, 0)
            grad = np.where(kept[:, None], grad, 0)
            denominator = float(w_y.sum(dtype=np.float64)) if w is not None else float(kept.sum())
        else:
            q = (1 - eps) * probabilities + eps / n_classes
            wq = q * w_full
            per_sample = -(wq * logp).sum(axis=1)
            grad = wq.sum(axis=1, keepdims=True) * p - wq
            denominator = float(n)
            kept = None
    return _finish(per_sample, grad, denominator, reduction, compute_grad, out, dtype, kept)


# ===================================================================== element-wise losses

def _elementwise_args(input, target, name, reduction, compute_grad, out, n_threads, inputs):
    x = check.float_input(input, name)
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    check.n_threads(n_threads)
    # (float_target's np.ascontiguousarray makes a 0-d target 1-d)
    t = check.float_target(target, "target", x.dtype, x.shape).reshape(x.shape)
    out = check.out_array(out, x, dict(inputs, target=target))
    return np.asarray(x), t, reduction, compute_grad, out


def _softplus(z):
    """log(1 + exp(z)) without overflow."""
    return np.logaddexp(0, z)


def _log_sigmoid(z):
    return -np.logaddexp(0, -z)


def _logistic_loss(x, t, pos_weight=1):
    """(1 - t) softplus(x) + p t softplus(-x) = -[p t log sigmoid(x) + (1 - t) log sigmoid(-x)].

    At x = -inf this is nan, as PyTorch's form (1 - t) x + (1 + (p - 1) t) softplus(-x)
    evaluates it (-inf + inf); the fastloss contract follows PyTorch on infinite inputs."""
    loss = (1 - t) * _softplus(x) + pos_weight * t * _softplus(-x)
    return np.where(x == -np.inf, np.nan, loss)


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     reduction="mean", compute_grad=True, out=None,
                                     n_threads=None):
    """NumPy reference of fastloss.binary_cross_entropy_with_logits (torch's
    F.binary_cross_entropy_with_logits): w [(1 - t) softplus(x) + p t softplus(-x)] with
    softplus = logaddexp(0, .), gradient w [(1 - t) sigmoid(x) - p t sigmoid(-x)]."""
    x, t, reduction, compute_grad, out = _elementwise_args(
        logits, target, "logits", reduction, compute_grad, out, n_threads,
        {"weight": weight, "pos_weight": pos_weight})
    dtype = x.dtype
    check.broadcast_weight(weight, "weight", x.shape, dtype)
    check.broadcast_weight(pos_weight, "pos_weight", x.shape, dtype)
    w = 1 if weight is None else np.asarray(weight).astype(dtype)
    p = 1 if pos_weight is None else np.asarray(pos_weight).astype(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        per_element = w * _logistic_loss(x, t, p)
        # d/dx: (1 - t) sigmoid(x) - p t sigmoid(-x), each sigmoid from its own log form
        grad = w * ((1 - t) * np.exp(_log_sigmoid(x)) - p * t * np.exp(_log_sigmoid(-x)))
    per_element = np.broadcast_to(per_element, x.shape)
    grad = np.broadcast_to(grad, x.shape)
    return _finish(per_element, grad, float(x.size), reduction, compute_grad, out, dtype)


def huber(input, target, *, delta=1.0, reduction="mean", compute_grad=True, out=None,
          n_threads=None):
    """NumPy reference of fastloss.huber (torch's F.huber_loss)."""
    delta = check.real_scalar(delta, "delta", low=0.0, low_open=True)
    x, t, reduction, compute_grad, out = _elementwise_args(
        input, target, "input", reduction, compute_grad, out, n_threads, {})
    d = x - t
    inside = np.abs(d) < delta
    with np.errstate(invalid="ignore", over="ignore"):
        per_element = np.where(inside, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta))
        grad = np.where(inside, d, delta * np.sign(d))
    return _finish(per_element, grad, float(x.size), reduction, compute_grad, out, x.dtype)


def smooth_l1(input, target, *, beta=1.0, reduction="mean", compute_grad=True, out=None,
              n_threads=None):
    """NumPy reference of fastloss.smooth_l1 (torch's F.smooth_l1_loss, beta > 0)."""
    beta = check.real_scalar(beta, "beta", low=0.0, low_open=True)
    x, t, reduction, compute_grad, out = _elementwise_args(
        input, target, "input", reduction, compute_grad, out, n_threads, {})
    d = x - t
    inside = np.abs(d) < beta
    with np.errstate(invalid="ignore", over="ignore"):
        per_element = np.where(inside, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta)
        grad = np.where(inside, d / beta, np.sign(d))
    return _finish(per_element, grad, float(x.size), reduction, compute_grad, out, x.dtype)


def sigmoid_focal(logits, target, *, alpha=0.25, gamma=2.0, reduction="mean",
                  compute_grad=True, out=None, n_threads=None):
    """NumPy reference of fastloss.sigmoid_focal (torchvision.ops.sigmoid_focal_loss).

    The focal factor's derivative gamma q^(gamma - 1) p (1 - p) is evaluated in log space,
    exp((gamma - 1) log q + log p + log(1 - p)) with log q = logaddexp(log(1 - t) + log p,
    log t + log(1 - p)), so it is finite where q rounds to 0."""
    alpha = check.real_scalar(alpha, "alpha")
    gamma = check.real_scalar(gamma, "gamma", low=0.0)
    x, t, reduction, compute_grad, out = _elementwise_args(
        logits, target, "logits", reduction, compute_grad, out, n_threads, {})
    dtype = x.dtype
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        log_p = _log_sigmoid(x)
        log_not_p = _log_sigmoid(-x)
        p, not_p = np.exp(log_p), np.exp(log_not_p)
        ce = _logistic_loss(x, t)
        log_q = np.logaddexp(np.log1p(-t) + log_p, np.log(t) + log_not_p)
        q = np.exp(log_q)
        alpha_t = alpha * t + (1 - alpha) * (1 - t) if alpha >= 0 else np.ones_like(x)
        focal = q ** gamma
        per_element = alpha_t * ce * focal
        dce = (1 - t) * p - t * not_p
        if gamma == 0:
            # q^0 is a constant: no ce * dfocal term at all (at an infinite logit, ce = inf
            # would make inf * 0 = nan where PyTorch's autograd gives alpha_t dce)
            grad = alpha_t * dce * focal
        else:
            dfocal = gamma * (1 - 2 * t) * np.exp((gamma - 1) * log_q + log_p + log_not_p)
            grad = alpha_t * (dce * focal + ce * dfocal)
    return _finish(per_element, grad, float(x.size), reduction, compute_grad, out, dtype)


def softmax_focal(logits, target, *, alpha=None, gamma=2.0, ignore_index=-100,
                  reduction="mean", compute_grad=True, out=None, n_threads=None,
                  sample_weight=None):
    """NumPy reference of fastloss.softmax_focal: -alpha_y (1 - p_y)^gamma log p_y per row,
    with 1 - p_y = -expm1(log p_y)."""
    if sample_weight is not None or (isinstance(logits, np.ndarray) and logits.ndim != 2):
        return _class_axis_focal(logits, target, alpha=alpha, gamma=gamma,
                                 ignore_index=ignore_index, reduction=reduction,
                                 compute_grad=compute_grad, out=out, n_threads=n_threads,
                                 sample_weight=sample_weight)
    logits, n, n_classes = check.class_logits(logits)
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    check.n_threads(n_threads)
    ignore_index = check.ignore_index(ignore_index)
    gamma = check.real_scalar(gamma, "gamma", low=0.0)
    dtype = logits.dtype
    y = check.class_indices(target, "target", n)
    if alpha is None:
        alpha_full = np.ones(n_classes, dtype=dtype)
    elif np.ndim(alpha) == 0:
        value = alpha.item() if isinstance(alpha, np.ndarray) else alpha
        alpha_full = np.full(n_classes, check.real_scalar(value, "alpha"), dtype=dtype)
    else:
        alpha_full = check.class_weight(alpha, "alpha", n_classes, dtype)
    out = check.out_array(out, logits, {"target": target, "alpha": alpha})
    check.check_indices_in_range(y, "target", n_classes, ignore_index, None)

    x = np.asarray(logits)
    kept = y != ignore_index
    y_safe = np.where(kept, y, 0)
    rows = np.arange(n)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        logp = _log_softmax(x)
        p = np.exp(logp)
        logp_y = logp[rows, y_safe]
        p_y = np.exp(logp_y)
        not_p_y = -np.expm1(logp_y)
        a = alpha_full[y_safe]
        focal = not_p_y ** gamma
        per_sample = np.where(kept, -a * focal * logp_y, 0)
        # K = o^gamma - gamma p_y o^(gamma - 1) log p_y, with -log(p_y) / o -> 1 as o -> 0
        ratio = np.where(not_p_y > 0, -logp_y / not_p_y, 1)
        K = focal * (1 + gamma * p_y * ratio) if gamma != 0 else np.ones_like(focal)
        grad = (a * K)[:, None] * p
        grad[rows, y_safe] = -(a * K) * not_p_y
        grad = np.where(kept[:, None], grad, 0)
    return _finish(per_sample, grad, float(kept.sum()), reduction, compute_grad, out, dtype)


# ================================================ class-axis losses (issue 13)
# K-dim inputs, sample weights, z-loss, soft-capping, lse_out; multi_margin; distillation KL.
# The K-dim logits are moved to rows (N * d1 * ... * dK, C) (a transpose: fine for an oracle)
# and handed to the (N, C) references above with reduction="none", whose per-sample losses
# and gradients are then weighted and reduced here.

from . import _class_losses as _class  # noqa: E402  (the shared argument checks)


def _to_rows(array: np.ndarray) -> np.ndarray:
    """(N, C, d1..dK) -> (N * d1 * ... * dK, C)."""
    return np.moveaxis(array, 1, -1).reshape(-1, array.shape[1])


def _from_rows(rows: np.ndarray, shape: tuple) -> np.ndarray:
    moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
    return np.ascontiguousarray(np.moveaxis(rows.reshape(moved), -1, 1))


def _class_axis_finish(per_sample, grad_rows, denominator, reduction, compute_grad, out,
                       logits, sample_shape):
    dtype = logits.dtype
    if reduction == "none":
        loss = np.asarray(per_sample, dtype=dtype).reshape(sample_shape)
        scale = 1.0
    else:
        total = float(np.sum(per_sample, dtype=np.float64))
        if reduction == "sum":
            loss, scale = total, 1.0
        else:
            loss = total / denominator if denominator != 0 else math.nan
            scale = 1.0 / denominator if denominator != 0 else math.nan
    grad = None
    if compute_grad:
        with np.errstate(invalid="ignore"):
            scaled = _from_rows(np.asarray(grad_rows * scale, dtype=dtype), logits.shape)
        if out is not None:
            out[...] = scaled
            grad = out
        else:
            grad = scaled
    return LossResult(loss, grad)


def _per_row_weight(sample_weight, per_position, sample_shape):
    """Sample weights as one factor per row of _to_rows (float64), or None."""
    if sample_weight is None:
        return None
    if not per_position:
        sample_weight = np.broadcast_to(
            sample_weight.reshape(sample_shape[:1] + (1,) * (len(sample_shape) - 1)), sample_shape)
    return np.asarray(sample_weight, dtype=np.float64).reshape(-1)


def _class_axis_cross_entropy(logits, target, *, weight, ignore_index, label_smoothing,
                              reduction, compute_grad, out, n_threads, sample_weight, z_loss,
                              logit_softcap, lse_out):
    """Reference of the class-axis options of softmax_cross_entropy: per sample
    s_i [CE(z) + zl lse(z)^2], z = c tanh(x / c), gradient through np.tanh."""
    logits = _class.class_axis_logits(logits)
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    check.n_threads(n_threads)
    ignore_index = check.ignore_index(ignore_index)
    check.real_scalar(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    zl = check.real_scalar(z_loss, "z_loss", low=0.0)
    cap = None if logit_softcap is None else check.real_scalar(
        logit_softcap, "logit_softcap", low=0.0, low_open=True)
    dtype = logits.dtype
    n_classes = logits.shape[1]
    indices, probabilities, sample_shape = _class.class_axis_target(
        logits, target, ignore_index, allow_probabilities=True)
    w = check.class_weight(weight, "weight", n_classes, dtype)
    sw, per_position = _class.sample_weight_array(sample_weight, sample_shape, dtype)
    target_array = np.asarray(target)
    out = check.out_array(out, logits, {"target": target_array, "weight": weight,
                                        "sample_weight": sample_weight, "lse_out": lse_out})
    lse_out = _class.extra_out(lse_out, "lse_out", sample_shape, dtype,
                               {"logits": logits, "target": target_array, "weight": weight,
                                "sample_weight": sample_weight})
    if indices is not None:
        _class.index_denominator(indices, n_classes, ignore_index, w, sw, per_position,
                                 sample_shape)

    x = _to_rows(np.asarray(logits))
    rows = x.shape[0]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        z = (cap * np.tanh(x / cap)).astype(dtype) if cap is not None else x
        row_target = indices if indices is not None else _to_rows(probabilities)
        per_sample, dz = softmax_cross_entropy(
            np.ascontiguousarray(z), row_target, weight=w, ignore_index=ignore_index,
            label_smoothing=label_smoothing, reduction="none")
        per_sample = per_sample.astype(np.float64)
        dz = dz.astype(np.float64)
        zz = z.astype(np.float64)
        top = zz.max(axis=1, keepdims=True)
        lse = (top + np.log(np.exp(zz - top).sum(axis=1, keepdims=True)))[:, 0]
        kept = indices != ignore_index if indices is not None else np.ones(rows, dtype=bool)
        if zl > 0:
            p = np.exp(zz - lse[:, None])
            per_sample = per_sample + np.where(kept, zl * lse ** 2, 0.0)
            dz = dz + np.where(kept[:, None], 2 * zl * lse[:, None] * p, 0.0)
        s = _per_row_weight(sw, per_position, sample_shape)
        if s is not None:
            per_sample = per_sample * s
            dz = dz * s[:, None]
        dx = dz * (1 - np.tanh(x.astype(np.float64) / cap) ** 2) if cap is not None else dz
        dx = np.where(kept[:, None], dx, 0.0)
        if indices is not None:
            factors = (w.astype(np.float64)[np.where(kept, indices, 0)] if w is not None
                       else np.ones(rows))
            denominator = float(np.sum(np.where(kept, factors * (s if s is not None else 1.0),
                                                0.0)))
        else:
            denominator = float(np.sum(s)) if s is not None else float(rows)
    if lse_out is not None:
        lse_out[...] = lse.reshape(sample_shape)
    return _class_axis_finish(per_sample, dx, denominator, reduction, compute_grad, out,
                              logits, sample_shape)


def _class_axis_focal(logits, target, *, alpha, gamma, ignore_index, reduction, compute_grad,
                      out, n_threads, sample_weight):
    """Reference of softmax_focal with K-dim logits or sample weights."""
    logits = _class.class_axis_logits(logits)
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    check.n_threads(n_threads)
    ignore_index = check.ignore_index(ignore_index)
    check.real_scalar(gamma, "gamma", low=0.0)
    dtype = logits.dtype
    n_classes = logits.shape[1]
    indices, _, sample_shape = _class.class_axis_target(logits, target, ignore_index,
                                                        allow_probabilities=False)
    if alpha is not None and np.ndim(alpha) != 0:
        check.class_weight(alpha, "alpha", n_classes, dtype)
    elif alpha is not None:
        check.real_scalar(alpha.item() if isinstance(alpha, np.ndarray) else alpha, "alpha")
    sw, per_position = _class.sample_weight_array(sample_weight, sample_shape, dtype)
    out = check.out_array(out, logits, {"target": np.asarray(target), "alpha": alpha,
                                        "sample_weight": sample_weight})
    _class.index_denominator(indices, n_classes, ignore_index, None, sw, per_position,
                             sample_shape, class_weighted=False)
    x = _to_rows(np.asarray(logits))
    per_sample, grad = softmax_focal(np.ascontiguousarray(x), indices, alpha=alpha, gamma=gamma,
                                     ignore_index=ignore_index, reduction="none")
    per_sample = per_sample.astype(np.float64)
    grad = grad.astype(np.float64)
    kept = indices != ignore_index
    s = _per_row_weight(sw, per_position, sample_shape)
    if s is not None:
        per_sample = per_sample * s
        grad = grad * s[:, None]
    denominator = float(np.sum(np.where(kept, s if s is not None else 1.0, 0.0)))
    return _class_axis_finish(per_sample, grad, denominator, reduction, compute_grad, out,
                              logits, sample_shape)


def multi_margin(input, target, *, p=1, margin=1.0, weight=None, reduction="mean",
                 compute_grad=True, out=None, n_threads=None):
    """NumPy reference of fastloss.multi_margin (torch's F.multi_margin_loss): hinge terms
    max(0, margin - x_y + x_j)^p over j != y, times w_y, over C."""
    (x, y, p, margin, w, reduction, compute_grad, out, _) = _class.multi_margin_args(
        input, target, p, margin, weight, reduction, compute_grad, out, n_threads)
    dtype = x.dtype
    n, n_classes = x.shape
    rows = np.arange(n)
    w_y = (w.astype(np.float64)[y] if w is not None else np.ones(n))
    xx = np.asarray(x)
    with np.errstate(invalid="ignore", over="ignore"):
        # hinges in the input's dtype, sums in float64
        v = (dtype.type(margin) - xx[rows, y][:, None]) + xx
        active = v > 0                      # nan compares false: no term (as torch)
        active[rows, y] = False
        hinge = np.where(active, v * v if p == 2 else v, 0).astype(np.float64)
        per_sample = w_y * hinge.sum(axis=1) / n_classes
        slope = np.where(active, 2 * v.astype(np.float64) if p == 2 else 1.0, 0.0)
        grad = slope * (w_y / n_classes)[:, None]
        grad[rows, y] = -grad.sum(axis=1)
    return _finish(per_sample, grad, float(n), reduction, compute_grad, out, dtype)


def kl_divergence_with_logits(logits, target_logits, *, temperature=1.0, reduction="mean",
                              compute_grad=True, out=None, n_threads=None):
    """NumPy reference of fastloss.kl_divergence_with_logits: T^2 sum p (log p - log q),
    p = softmax(t / T), q = softmax(x / T), log-softmaxes from _log_softmax."""
    x, t, temperature, reduction, compute_grad, out, _ = _class.distill_kl_args(
        logits, target_logits, temperature, reduction, compute_grad, out, n_threads)
    dtype = x.dtype
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        log_q = _log_softmax(x.astype(np.float64) / temperature)
        log_p = _log_softmax(t.astype(np.float64) / temperature)
        p = np.exp(log_p)
        terms = np.where(p == 0, 0.0, p * (log_p - log_q))   # 0 log 0 = 0; nan stays nan
        per_sample = temperature ** 2 * terms.sum(axis=1)
        grad = temperature * (np.exp(log_q) - p)
    return _finish(per_sample, grad, float(x.shape[0]), reduction, compute_grad, out, dtype)
