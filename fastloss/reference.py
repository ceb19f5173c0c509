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
from ._results import LossGradHess, LossResult

__all__ = [
    "softmax_cross_entropy",
    "binary_cross_entropy_with_logits",
    "huber",
    "smooth_l1",
    "sigmoid_focal",
    "softmax_focal",
    "mse",
    "mae",
    "pinball",
    "log_cosh",
    "poisson_nll",
    "tweedie",
    "hinge",
    "squared_hinge",
    "soft_margin",
    "binary_cross_entropy",
    "kl_div",
    "gaussian_kl",
    "l1_penalty",
    "l2_penalty",
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
        check.reject_index_column(target_array, "target", n)
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

def _elementwise_args(input, target, name, reduction, compute_grad, out, n_threads, inputs,
                      reductions=check.REDUCTIONS):
    x = check.float_input(input, name)
    reduction = check.reduction(reduction, reductions)
    compute_grad = check.grad_request(compute_grad, out)
    check.n_threads(n_threads)
    # (float_target's np.ascontiguousarray makes a 0-d target 1-d)
    t = check.float_target(target, "target", x.dtype, x.shape).reshape(x.shape)
    out = check.out_array(out, x, dict(inputs, target=target))
    return np.asarray(x), t, reduction, compute_grad, out


class _Elementwise:
    """The arguments every element-wise reference shares, checked; `finish` reduces and
    scales per-element losses, gradients and second derivatives like the kernels do."""

    def __init__(self, input, target, name, weight, reduction, compute_grad, out, n_threads,
                 compute_hess=False, hess_out=None, inputs=None, reductions=check.REDUCTIONS):
        inputs = dict(inputs or {}, weight=weight)
        self.x, self.t, self.reduction, self.compute_grad, self.out = _elementwise_args(
            input, target, name, reduction, compute_grad, out, n_threads, inputs, reductions)
        self.compute_hess = check.hess_request(compute_hess, self.compute_grad, hess_out)
        self.hess_out = check.out_array(hess_out, self.x, dict(inputs, target=target, out=self.out),
                                        name="hess_out")
        self.dtype = self.x.dtype
        check.broadcast_weight(weight, "weight", self.x.shape, self.dtype)
        self.w = None if weight is None else np.asarray(weight).astype(self.dtype)

    def finish(self, per_element, grad, hess=None):
        x, dtype = self.x, self.dtype
        with np.errstate(invalid="ignore", over="ignore"):
            if self.w is not None:
                per_element = self.w * per_element
                grad = self.w * grad
                hess = None if hess is None else self.w * hess
        per_element = np.broadcast_to(per_element, x.shape)
        grad = np.broadcast_to(grad, x.shape)
        denominator = float(x.size)
        reduction = self.reduction
        if reduction == "batchmean":
            denominator = float(x.shape[0]) if x.ndim else 1.0
            reduction = "mean"
        result = _finish(per_element, grad, denominator, reduction, self.compute_grad, self.out,
                         dtype)
        if not self.compute_hess:
            return result
        scale = 1.0 if reduction != "mean" else (1.0 / denominator if denominator else math.nan)
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = np.asarray(np.broadcast_to(hess, x.shape) * scale, dtype=dtype)
        if self.hess_out is not None:
            self.hess_out[...] = scaled
            scaled = self.hess_out
        return LossGradHess(result.loss, result.grad, scaled)


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
                                     n_threads=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.binary_cross_entropy_with_logits (torch's
    F.binary_cross_entropy_with_logits): w [(1 - t) softplus(x) + p t softplus(-x)] with
    softplus = logaddexp(0, .), gradient w [(1 - t) sigmoid(x) - p t sigmoid(-x)], second
    derivative w ((1 - t) + p t) sigmoid(x) sigmoid(-x)."""
    a = _Elementwise(logits, target, "logits", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out, {"pos_weight": pos_weight})
    x, t, dtype = a.x, a.t, a.dtype
    check.broadcast_weight(pos_weight, "pos_weight", x.shape, dtype)
    p = 1 if pos_weight is None else np.asarray(pos_weight).astype(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        per_element = _logistic_loss(x, t, p)
        # d/dx: (1 - t) sigmoid(x) - p t sigmoid(-x), each sigmoid from its own log form
        sig, sig_neg = np.exp(_log_sigmoid(x)), np.exp(_log_sigmoid(-x))
        grad = (1 - t) * sig - p * t * sig_neg
        hess = ((1 - t) + p * t) * sig * sig_neg
    return a.finish(per_element, grad, hess)


def huber(input, target, *, delta=1.0, weight=None, reduction="mean", compute_grad=True,
          out=None, n_threads=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.huber (torch's F.huber_loss)."""
    delta = check.real_scalar(delta, "delta", low=0.0, low_open=True)
    a = _Elementwise(input, target, "input", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out)
    d = a.x - a.t
    inside = np.abs(d) < delta
    with np.errstate(invalid="ignore", over="ignore"):
        per_element = np.where(inside, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta))
        grad = np.where(inside, d, delta * np.sign(d))
        hess = np.where(np.isnan(d), np.nan, inside.astype(a.dtype))
    return a.finish(per_element, grad, hess)


def smooth_l1(input, target, *, beta=1.0, weight=None, reduction="mean", compute_grad=True,
              out=None, n_threads=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.smooth_l1 (torch's F.smooth_l1_loss, beta > 0)."""
    beta = check.real_scalar(beta, "beta", low=0.0, low_open=True)
    a = _Elementwise(input, target, "input", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out)
    d = a.x - a.t
    inside = np.abs(d) < beta
    with np.errstate(invalid="ignore", over="ignore"):
        per_element = np.where(inside, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta)
        grad = np.where(inside, d / beta, np.sign(d))
        hess = np.where(np.isnan(d), np.nan, np.where(inside, 1.0 / beta, 0.0))
    return a.finish(per_element, grad, hess)


def sigmoid_focal(logits, target, *, alpha=0.25, gamma=2.0, weight=None, reduction="mean",
                  compute_grad=True, out=None, n_threads=None, compute_hess=False,
                  hess_out=None):
    """NumPy reference of fastloss.sigmoid_focal (torchvision.ops.sigmoid_focal_loss).

    The focal factor F = q^gamma's derivatives, gamma q^(gamma - 1) (1 - 2t) s and
    gamma (gamma - 1) q^(gamma - 2) (1 - 2t)^2 s^2 + gamma q^(gamma - 1) (1 - 2t) s (1 - 2p)
    with s = p (1 - p), are evaluated in log space (exp((gamma - 1) log q + log s), ...) with
    log q = logaddexp(log(1 - t) + log p, log t + log(1 - p)), so they are finite where q
    rounds to 0. The hessian is the product rule's F s + 2 dce F' + ce F''."""
    alpha = check.real_scalar(alpha, "alpha")
    gamma = check.real_scalar(gamma, "gamma", low=0.0)
    a = _Elementwise(logits, target, "logits", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out)
    x, t = a.x, a.t
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
        log_s = log_p + log_not_p
        s = np.exp(log_s)
        if gamma == 0:
            # q^0 is a constant: no ce * dfocal term at all (at an infinite logit, ce = inf
            # would make inf * 0 = nan where PyTorch's autograd gives alpha_t dce)
            grad = alpha_t * dce * focal
            hess = alpha_t * s
        else:
            u = 1 - 2 * t
            dfocal = gamma * u * np.exp((gamma - 1) * log_q + log_s)
            grad = alpha_t * (dce * focal + ce * dfocal)
            d2focal = dfocal * (not_p - p)
            if gamma != 1:
                d2focal = d2focal + gamma * (gamma - 1) * u * u * np.exp(
                    (gamma - 2) * log_q + 2 * log_s)
            hess = alpha_t * (focal * s + 2 * dce * dfocal + ce * d2focal)
    return a.finish(per_element, grad, hess)


def _nan_where(value, where_nan):
    return np.where(np.isnan(where_nan), np.nan, value)


def mse(input, target, *, weight=None, reduction="mean", compute_grad=True, out=None,
        n_threads=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.mse (torch's F.mse_loss): d^2, 2 d, 2."""
    a = _Elementwise(input, target, "input", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out)
    d = a.x - a.t
    with np.errstate(invalid="ignore", over="ignore"):
        return a.finish(d * d, 2 * d, np.full_like(d, 2))


def mae(input, target, *, weight=None, reduction="mean", compute_grad=True, out=None,
        n_threads=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.mae (torch's F.l1_loss): |d|, sign(d); hessian 1 (the
    weight x scale convention of piecewise-linear losses)."""
    a = _Elementwise(input, target, "input", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out)
    d = a.x - a.t
    with np.errstate(invalid="ignore", over="ignore"):
        # sign(d), 0 at nan as torch's sign (l1_loss's backward) gives
        return a.finish(np.abs(d), np.where(d > 0, 1, np.where(d < 0, -1, 0)).astype(a.dtype),
                        np.ones_like(d))


def pinball(input, target, *, quantile=0.5, weight=None, reduction="mean", compute_grad=True,
            out=None, n_threads=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.pinball (scikit-learn's PinballLoss): with r = t - x,
    q r (r >= 0) or (q - 1) r; gradient -q (r >= 0) or 1 - q; hessian 1."""
    if np.ndim(quantile) == 0:
        q = check.real_scalar(np.asarray(quantile).item() if isinstance(quantile, np.ndarray)
                              else quantile, "quantile", low=0.0, high=1.0, low_open=True,
                              high_open=True)
    else:
        q = np.asarray(quantile, dtype=np.float64)
        x_shape = np.shape(input)
        if q.ndim != 1 or not x_shape or q.shape[0] != x_shape[-1]:
            raise ValueError(f"quantile as an array must be 1-D with one entry per element of "
                             f"the input's last axis, got shape {q.shape}")
        if not ((q > 0) & (q < 1)).all():
            raise ValueError("quantile must be in (0, 1)")
    a = _Elementwise(input, target, "input", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out, {"quantile": quantile})
    q = np.asarray(q).astype(a.dtype)
    r = a.t - a.x
    with np.errstate(invalid="ignore", over="ignore"):
        per_element = np.where(r >= 0, q * r, (q - 1) * r)
        grad = np.where(r >= 0, -q, 1 - q)   # (1 - q at nan, torch.where's false branch)
    return a.finish(per_element, grad, np.ones_like(r))


def log_cosh(input, target, *, weight=None, reduction="mean", compute_grad=True, out=None,
             n_threads=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.log_cosh: log cosh d = log1p(expm1(a)^2 / (2 exp(a)))
    (cosh a - 1 without cancellation) for a = |d| < 20, a - log 2 + log1p(exp(-2a)) beyond;
    gradient tanh(d), second derivative 1 / cosh(d)^2."""
    a = _Elementwise(input, target, "input", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out)
    d = a.x - a.t
    ad = np.abs(d)
    with np.errstate(invalid="ignore", over="ignore"):
        small = np.minimum(ad, 20)
        near = np.log1p(np.expm1(small) ** 2 / (2 * np.exp(small)))
        far = ad - math.log(2) + np.log1p(np.exp(-2 * ad))
        per_element = np.where(ad < 20, near, far)
        hess = 1 / np.cosh(d) ** 2
    return a.finish(per_element, np.tanh(d), hess)


def _stirling(t):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(t > 1, t * np.log(t) - t + 0.5 * np.log(2 * math.pi * t), 0)


def poisson_nll(input, target, *, log_input=True, full=False, eps=1e-8, weight=None,
                reduction="mean", compute_grad=True, out=None, n_threads=None,
                compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.poisson_nll (torch's F.poisson_nll_loss)."""
    log_input = check.bool_option(log_input, "log_input")
    full = check.bool_option(full, "full")
    eps = check.real_scalar(eps, "eps", low=0.0, low_open=True)
    a = _Elementwise(input, target, "input", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out)
    x, t = a.x, a.t
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if log_input:
            rate = np.exp(x)
            per_element, grad, hess = rate - t * x, rate - t, rate
        else:
            per_element = x - t * np.log(x + eps)
            grad = 1 - t / (x + eps)
            hess = t / (x + eps) ** 2
        if full:
            per_element = per_element + _stirling(t)
    return a.finish(per_element, grad, hess)


def tweedie(input, target, *, power=1.5, weight=None, reduction="mean", compute_grad=True,
            out=None, n_threads=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.tweedie (LightGBM's tweedie objective, log link)."""
    p = check.real_scalar(power, "power", low=1.0, high=2.0, low_open=True, high_open=True)
    a = _Elementwise(input, target, "input", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out)
    x, t = a.x, a.t
    with np.errstate(invalid="ignore", over="ignore"):
        e1, e2 = np.exp((1 - p) * x), np.exp((2 - p) * x)
        per_element = -t * e1 / (1 - p) + e2 / (2 - p)
        grad = -t * e1 + e2
        hess = -t * (1 - p) * e1 + (2 - p) * e2
    return a.finish(per_element, grad, hess)


def hinge(input, target, *, margin=1.0, weight=None, reduction="mean", compute_grad=True,
          out=None, n_threads=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.hinge: max(0, m - t x), gradient -t where m - t x > 0."""
    margin = check.real_scalar(margin, "margin")
    a = _Elementwise(input, target, "input", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out)
    with np.errstate(invalid="ignore", over="ignore"):
        z = margin - a.t * a.x
        grad = np.where(z <= 0, 0, -a.t)   # relu's backward: -t at nan
        return a.finish(np.maximum(z, 0), grad, np.ones_like(z))


def squared_hinge(input, target, *, margin=1.0, weight=None, reduction="mean",
                  compute_grad=True, out=None, n_threads=None, compute_hess=False,
                  hess_out=None):
    """NumPy reference of fastloss.squared_hinge: max(0, m - t x)^2."""
    margin = check.real_scalar(margin, "margin")
    a = _Elementwise(input, target, "input", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out)
    with np.errstate(invalid="ignore", over="ignore"):
        z = margin - a.t * a.x
        c = np.maximum(z, 0)
        hess = _nan_where(np.where(z > 0, 2 * a.t * a.t, 0), z)
        return a.finish(c * c, -2 * a.t * c, hess)


def soft_margin(input, target, *, weight=None, reduction="mean", compute_grad=True, out=None,
                n_threads=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.soft_margin (torch's F.soft_margin_loss, without its
    overflow): softplus(-t x), gradient -t sigmoid(-t x)."""
    a = _Elementwise(input, target, "input", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out)
    with np.errstate(invalid="ignore", over="ignore"):
        z = -a.t * a.x
        sig, sig_neg = np.exp(_log_sigmoid(z)), np.exp(_log_sigmoid(-z))
        return a.finish(_softplus(z), -a.t * sig, a.t * a.t * sig * sig_neg)


def binary_cross_entropy(input, target, *, weight=None, reduction="mean", compute_grad=True,
                         out=None, n_threads=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.binary_cross_entropy (torch's F.binary_cross_entropy)."""
    a = _Elementwise(input, target, "input", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out)
    x, t = a.x, a.t
    inside = (x >= 0) & (x <= 1)
    if not inside.all():
        position = int(np.argmin(inside.reshape(-1)))
        raise ValueError(f"input must hold values in [0, 1], got {x.reshape(-1)[position]!r} at "
                         f"position {position} (in C order)")
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        log_x = np.maximum(np.log(x), -100)
        log_not_x = np.maximum(np.log1p(-x), -100)
        per_element = -(t * log_x + (1 - t) * log_not_x)
        v = x * (1 - x)
        grad = (x - t) / np.maximum(v, 1e-12)
        hess = np.where(v > 1e-12, t / x**2 + (1 - t) / (1 - x) ** 2, 1e12)
    return a.finish(per_element, grad, hess)


def kl_div(input, target, *, log_target=False, weight=None, reduction="mean",
           compute_grad=True, out=None, n_threads=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.kl_div (torch's F.kl_div): xlogy(t, t) - t x, or
    exp(t) (t - x) for log targets; "batchmean" divides the sum by input.shape[0]."""
    log_target = check.bool_option(log_target, "log_target")
    a = _Elementwise(input, target, "input", weight, reduction, compute_grad, out, n_threads,
                     compute_hess, hess_out, reductions=check.REDUCTIONS + ("batchmean",))
    x, t = a.x, a.t
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if log_target:
            per_element, grad = np.exp(t) * (t - x), -np.exp(t)
        else:
            xlogy = np.where(t == 0, 0, t * np.log(np.where(t == 0, 1, t)))
            per_element, grad = xlogy - t * x, -t
    return a.finish(per_element, grad, np.zeros_like(x))


def gaussian_kl(mean, log_var, *, reduction="mean", compute_grad=True, out=None,
                n_threads=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.gaussian_kl: -1/2 sum_d (1 + v - m^2 - exp(v)) per row."""
    m = check.float_input(mean, "mean")
    if m.ndim != 2:
        raise ValueError(f"mean must be 2-D (N, D), got {m.ndim}-D shape {m.shape}")
    v = check.float_input(log_var, "log_var")
    if v.shape != m.shape or v.dtype != m.dtype:
        raise ValueError(f"log_var must have mean's shape {m.shape} and dtype {m.dtype}")
    reduction = check.reduction(reduction)
    outs = check.out_tuple(out, 2, check.grad_request(compute_grad, None))
    compute_hess = check.hess_request(compute_hess, compute_grad, hess_out)
    hess_outs = check.out_tuple(hess_out, 2, compute_hess, name="hess_out")
    check.n_threads(n_threads)
    n = m.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        ev = np.exp(v)
        per_sample = (-0.5 * (1 + v - m * m - ev)).sum(axis=1, dtype=np.float64)
        scale = (1.0 / n if n else math.nan) if reduction == "mean" else 1.0
        grads = (np.asarray(m * scale, m.dtype), np.asarray(0.5 * (ev - 1) * scale, m.dtype))
        hess = (np.full_like(m, scale), np.asarray(0.5 * ev * scale, m.dtype))
    loss = (per_sample.astype(m.dtype) if reduction == "none" else
            float(per_sample.sum()) / (n if reduction == "mean" else 1) if n or reduction == "sum"
            else math.nan)

    def place(values, buffers):
        placed = []
        for value, buffer in zip(values, buffers):
            if buffer is not None:
                buffer[...] = value
                value = buffer
            placed.append(value)
        return tuple(placed)

    grads = place(grads, outs) if compute_grad else None
    if compute_hess:
        return LossGradHess(loss, grads, place(hess, hess_outs))
    return LossResult(loss, grads)


def _penalty(params, strength, out, accumulate, n_threads, squared):
    w = check.float_input(params, "params")
    strength = check.real_scalar(strength, "strength", low=0.0)
    accumulate = check.bool_option(accumulate, "accumulate")
    check.n_threads(n_threads)
    if accumulate and out is None:
        raise ValueError("accumulate=True adds the gradient into out: pass out")
    out = check.out_array(out, w, {})
    wide = w.astype(np.float64)
    loss = strength * float((wide * wide).sum() if squared else np.abs(wide).sum())
    grad = (2 * strength * w if squared else strength * np.sign(w)).astype(w.dtype)
    if out is not None:
        if accumulate:
            out += grad
        else:
            out[...] = grad
        grad = out
    return LossResult(loss, grad)


def l1_penalty(params, *, strength, out=None, accumulate=False, n_threads=None):
    """NumPy reference of fastloss.l1_penalty: strength sum |w|, strength sign(w)."""
    return _penalty(params, strength, out, accumulate, n_threads, False)


def l2_penalty(params, *, strength, out=None, accumulate=False, n_threads=None):
    """NumPy reference of fastloss.l2_penalty: strength sum w^2, 2 strength w."""
    return _penalty(params, strength, out, accumulate, n_threads, True)


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
    alpha_array, alpha_scalar = check.focal_alpha(alpha, n_classes, dtype)
    alpha_full = (np.full(n_classes, alpha_scalar, dtype=dtype) if alpha_array is None
                  else alpha_array)
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


# ===================================================================== sets and pairs (issue 14)
# The overlap losses (MONAI's DiceLoss / TverskyLoss) and the pair and triplet losses (torch's).
# The argument checks are fastloss._sets_pairs' own (shared, like fastloss._validation); the
# maths below is array code: the activation, the sums over the reduced axes, the partial
# derivatives of the fraction with respect to the three sums, the chain rule back.

from . import _sets_pairs as _checks  # noqa: E402

__all__ += ["dice", "jaccard", "tversky", "triplet_margin", "contrastive", "cosine_embedding",
            "margin_ranking"]


def _overlap(kind, input, target, activation, smooth, squared, batch, include_background,
             weight, alpha, beta, reduction, compute_grad, out, n_threads):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the single-channel warnings come from the kernels' path
        setup = _checks._overlap_setup(input, target, activation, smooth, batch,
                                       include_background, weight, reduction, compute_grad,
                                       out, n_threads)
    x = np.asarray(setup["input"])
    dtype = x.dtype
    n_samples, n_classes = x.shape[:2]
    if setup["target_index"] is not None:
        classes = np.arange(n_classes).reshape((1, n_classes) + (1,) * (x.ndim - 2))
        t = (np.expand_dims(setup["target_index"], 1) == classes).astype(dtype)
    else:
        t = setup["target"].reshape(x.shape)
    act = {0: "none", 1: "sigmoid", 2: "softmax"}[setup["activation"]]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if act == "sigmoid":
            log_p, log_not_p = _log_sigmoid(x), _log_sigmoid(-x)
            p = np.exp(log_p)
            dp_dx = np.exp(log_p + log_not_p)          # sigmoid(x) sigmoid(-x)
        elif act == "softmax":
            shifted = x - x.max(axis=1, keepdims=True)
            p = np.exp(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))
        else:
            p = x
        q = 2 if squared else 1
        axes = tuple(range(2, x.ndim))
        if setup["batch"]:
            axes = (0,) + axes
        inter = np.sum(p.astype(np.float64) * t, axis=axes)
        pred = np.sum(p.astype(np.float64) ** q, axis=axes)
        truth = np.sum(t.astype(np.float64) ** q, axis=axes)
        s = setup["smooth"]
        if kind == "tversky":
            fp, fn = pred - inter, truth - inter
            num = inter + s
            den = inter + alpha * fp + beta * fn + s
            # f = 1 - num / den; d/dI, d/dP (T is not a function of p)
            d_inter = -(den - num * (1 - alpha - beta)) / den ** 2
            d_pred = num * alpha / den ** 2
        elif kind == "jaccard":
            num = 2 * inter + s
            den = 2 * (pred + truth - inter) + s
            d_inter = -(2 * den + 2 * num) / den ** 2
            d_pred = 2 * num / den ** 2
        else:
            num = 2 * inter + s
            den = pred + truth + s
            d_inter = -2 / den
            d_pred = num / den ** 2
        f = 1 - num / den
        first = setup["first_class"]
        w = setup["weight"]
        losses = (f * w)[..., first:]
        n_losses = losses.size
        if reduction == "none":
            loss = losses.astype(dtype)
            scale = 1.0
        elif reduction == "sum":
            loss = float(losses.sum())
            scale = 1.0
        else:
            loss = float(losses.sum()) / n_losses if n_losses else math.nan
            scale = 1.0 / n_losses if n_losses else math.nan
        grad = None
        if setup["compute_grad"]:
            keep = (np.arange(n_classes) >= first).astype(np.float64)
            factor_i = np.where(keep > 0, d_inter * w * scale, 0.0)
            factor_p = np.where(keep > 0, d_pred * w * scale, 0.0)
            shape = ((1,) if setup["batch"] else (n_samples,)) + (n_classes,) + (1,) * (x.ndim - 2)
            factor_i, factor_p = factor_i.reshape(shape), factor_p.reshape(shape)
            dp = factor_i * t + factor_p * q * p.astype(np.float64) ** (q - 1)
            if act == "sigmoid":
                g = dp * dp_dx
            elif act == "softmax":
                g = p * (dp - np.sum(p * dp, axis=1, keepdims=True))
            else:
                g = dp
            g = np.asarray(g, dtype=dtype)
            if setup["out"] is not None:
                setup["out"][...] = g
                grad = setup["out"]
            else:
                grad = g
    return LossResult(loss, grad)


def dice(input, target, *, activation="sigmoid", smooth=1e-5, squared=False, batch=False,
         include_background=True, weight=None, reduction="mean", compute_grad=True, out=None,
         n_threads=None):
    """NumPy reference of fastloss.dice (MONAI's DiceLoss)."""
    return _overlap("dice", input, target, activation, smooth, _checks._flag(squared, "squared"),
                    batch, include_background, weight, 0.0, 0.0, reduction, compute_grad, out,
                    n_threads)


def jaccard(input, target, *, activation="sigmoid", smooth=1e-5, squared=False, batch=False,
            include_background=True, weight=None, reduction="mean", compute_grad=True,
            out=None, n_threads=None):
    """NumPy reference of fastloss.jaccard (MONAI's DiceLoss(jaccard=True))."""
    return _overlap("jaccard", input, target, activation, smooth,
                    _checks._flag(squared, "squared"), batch, include_background, weight, 0.0,
                    0.0, reduction, compute_grad, out, n_threads)


def tversky(input, target, *, alpha=0.5, beta=0.5, activation="sigmoid", smooth=1e-5,
            batch=False, include_background=True, reduction="mean", compute_grad=True, out=None,
            n_threads=None):
    """NumPy reference of fastloss.tversky (MONAI's TverskyLoss)."""
    alpha = check.real_scalar(alpha, "alpha", low=0.0)
    beta = check.real_scalar(beta, "beta", low=0.0)
    return _overlap("tversky", input, target, activation, smooth, False, batch,
                    include_background, None, alpha, beta, reduction, compute_grad, out,
                    n_threads)


def _pair_finish(per_row, grads, reduction, compute_grad, outs, dtype):
    """Reduce the per-row losses; scale each gradient to the returned loss; fill `outs`."""
    count = per_row.size
    if reduction == "none":
        loss, scale = np.asarray(per_row, dtype=dtype), 1.0
    elif reduction == "sum":
        loss, scale = float(np.sum(per_row, dtype=np.float64)), 1.0
    else:
        total = float(np.sum(per_row, dtype=np.float64))
        loss = total / count if count else math.nan
        scale = 1.0 / count if count else math.nan
    if not compute_grad:
        return LossResult(loss, None)
    result = []
    for g, o in zip(grads, outs):
        g = np.asarray(g * scale, dtype=dtype)
        if o is not None:
            o[...] = g
            g = o
        result.append(g)
    return LossResult(loss, tuple(result))


def _norm_and_grad(u, p):
    """||u||_p per row (float64) and its gradient with respect to u (0 where the norm is 0;
    p = inf: split among the entries of maximal |u|)."""
    a = np.abs(u)
    if math.isinf(p):
        n = a.max(axis=1) if u.shape[1] else np.zeros(u.shape[0])
        top = (a == n[:, None]).astype(np.float64)
        g = np.sign(u) * top / np.maximum(top.sum(axis=1, keepdims=True), 1)
        return n, g
    n = np.sum(a ** p, axis=1) ** (1 / p)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(n[:, None] > 0, a / np.where(n > 0, n, 1)[:, None], 0.0)
        g = np.sign(u) * np.where(a > 0, ratio ** (p - 1), 0.0)
    return n, g


def _pair_arrays(names, arrays, rows, out, others):
    arrays = _checks._pair_inputs(dict(zip(names, arrays)), rows=rows)
    outs = _checks._pair_outs(out, arrays, names, others)
    return arrays, outs


def triplet_margin(anchor, positive, negative, *, margin=1.0, p=2.0, eps=1e-6, swap=False,
                   reduction="mean", compute_grad=True, out=None, n_threads=None):
    """NumPy reference of fastloss.triplet_margin (torch's F.triplet_margin_loss)."""
    reduction, compute_grad, _ = _checks._common(reduction, compute_grad, out, n_threads)
    margin = check.real_scalar(margin, "margin")
    p = float(p)
    if not p > 0:
        raise ValueError(f"p must be > 0 (or inf), got {p!r}")
    eps = check.real_scalar(eps, "eps", low=0.0, low_open=True)
    swap = _checks._flag(swap, "swap")
    (a, pos, neg), outs = _pair_arrays(["anchor", "positive", "negative"],
                                       (anchor, positive, negative), True, out, {})
    dtype = a.dtype
    with np.errstate(invalid="ignore", over="ignore"):
        u_ap, u_an, u_pn = a - pos + dtype.type(eps), a - neg + dtype.type(eps), pos - neg + dtype.type(eps)
        d_ap, g_ap = _norm_and_grad(u_ap.astype(np.float64), p)
        d_an, g_an = _norm_and_grad(u_an.astype(np.float64), p)
        d_pn, g_pn = _norm_and_grad(u_pn.astype(np.float64), p)
        if swap:
            w_an = np.where(d_an < d_pn, 1.0, np.where(d_an > d_pn, 0.0, 0.5))[:, None]
            d_neg = np.minimum(d_an, d_pn)
        else:
            w_an = np.ones((a.shape[0], 1))
            d_neg = d_an
        w_pn = 1.0 - w_an
        hinge = margin + d_ap - d_neg
        per_row = np.maximum(hinge, 0.0)
        on = (hinge >= 0)[:, None]
        grads = (on * (g_ap - w_an * g_an), on * (-g_ap - w_pn * g_pn), on * (w_an * g_an + w_pn * g_pn))
    return _pair_finish(per_row, grads, reduction, compute_grad, outs, dtype)


def contrastive(input1, input2, target, *, margin=1.0, reduction="mean", compute_grad=True,
                out=None, n_threads=None):
    """NumPy reference of fastloss.contrastive: t d^2 + (1 - t) max(0, margin - d)^2 with
    d = ||x1 - x2 + 1e-6||_2."""
    reduction, compute_grad, _ = _checks._common(reduction, compute_grad, out, n_threads)
    margin = check.real_scalar(margin, "margin")
    (x1, x2), outs = _pair_arrays(["input1", "input2"], (input1, input2), True, out,
                                  {"target": target})
    t = check.float_target(target, "target", x1.dtype, x1.shape[:1]).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        u = (x1 - x2 + x1.dtype.type(1e-6)).astype(np.float64)
        d = np.sqrt(np.sum(u * u, axis=1))
        h = np.maximum(margin - d, 0.0)
        per_row = t * d ** 2 + (1 - t) * h ** 2
        dd = 2 * t * d - 2 * (1 - t) * h                       # dloss/dd
        g1 = np.where(d[:, None] > 0, (dd / np.where(d > 0, d, 1))[:, None] * u, 0.0)
    return _pair_finish(per_row, (g1, -g1), reduction, compute_grad, outs, x1.dtype)


def cosine_embedding(input1, input2, target, *, margin=0.0, reduction="mean", compute_grad=True,
                     out=None, n_threads=None):
    """NumPy reference of fastloss.cosine_embedding (torch's F.cosine_embedding_loss)."""
    reduction, compute_grad, _ = _checks._common(reduction, compute_grad, out, n_threads)
    margin = check.real_scalar(margin, "margin")
    (x1, x2), outs = _pair_arrays(["input1", "input2"], (input1, input2), True, out,
                                  {"target": target})
    y = check.float_target(target, "target", x1.dtype, x1.shape[:1]).astype(np.float64)
    a, b = x1.astype(np.float64), x2.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m1 = np.einsum("ij,ij->i", a, a) + 1e-12
        m2 = np.einsum("ij,ij->i", b, b) + 1e-12
        root = np.sqrt(m1 * m2)
        cos = np.einsum("ij,ij->i", a, b) / root
        per_row = np.where(y == 1, 1 - cos, np.where(y == -1, np.maximum(cos - margin, 0), 0))
        sign = np.where(y == 1, -1.0, np.where((y == -1) & (cos - margin >= 0), 1.0, 0.0))
        dcos1 = b / root[:, None] - (cos / m1)[:, None] * a
        dcos2 = a / root[:, None] - (cos / m2)[:, None] * b
    return _pair_finish(per_row, (sign[:, None] * dcos1, sign[:, None] * dcos2), reduction,
                        compute_grad, outs, x1.dtype)


def margin_ranking(input1, input2, target, *, margin=0.0, reduction="mean", compute_grad=True,
                   out=None, n_threads=None):
    """NumPy reference of fastloss.margin_ranking (torch's F.margin_ranking_loss)."""
    reduction, compute_grad, _ = _checks._common(reduction, compute_grad, out, n_threads)
    margin = check.real_scalar(margin, "margin")
    (x1, x2), outs = _pair_arrays(["input1", "input2"], (input1, input2), False, out,
                                  {"target": target})
    y = check.float_target(target, "target", x1.dtype, x1.shape).reshape(x1.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        hinge = -y * (x1 - x2) + x1.dtype.type(margin)
        per_element = np.maximum(hinge, 0)
        on = hinge >= 0
        g1 = np.where(on, -y, 0).astype(np.float64)
    return _pair_finish(per_element, (g1, -g1), reduction, compute_grad, outs, x1.dtype)

# ----------------------------------------------------------------- issue 17, large vocabularies

def linear_cross_entropy(hidden, weight, target, *, bias=None, class_weight=None,
                         ignore_index=-100, label_smoothing=0.0, z_loss=0.0, logit_softcap=None,
                         reduction="mean", compute_grad=True, out=None, chunk_size=None,
                         n_threads=None):
    """NumPy reference of fastloss.linear_cross_entropy: the full (N, V) logits, then the
    cross-entropy of softmax_cross_entropy above, the z-loss and the softcap chain rule written
    out. ``chunk_size`` and ``n_threads`` are checked and ignored."""
    from ._linear_ce import _chunk_size, _linear_inputs, _out_tuple, _targets

    hidden, weight, bias, n, _, n_classes = _linear_inputs(hidden, weight, bias)
    dtype = hidden.dtype
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    check.n_threads(n_threads)
    ignore_index = check.ignore_index(ignore_index)
    check.real_scalar(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    z = check.real_scalar(z_loss, "z_loss", low=0.0)
    cap = (None if logit_softcap is None
           else check.real_scalar(logit_softcap, "logit_softcap", low=0.0, low_open=True))
    _chunk_size(chunk_size, n, n_classes, dtype.itemsize)
    target_array = np.asarray(target)
    _targets(target_array, n, n_classes, dtype, ignore_index)
    w = check.class_weight(class_weight, "class_weight", n_classes, dtype)
    outs = _out_tuple(out, {"hidden": hidden, "weight": weight, "bias": bias},
                      {"target": target_array, "class_weight": class_weight})

    logits = np.asarray(hidden) @ np.asarray(weight).T
    if bias is not None:
        logits = logits + bias
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if cap is not None:
            tanh = np.tanh(logits / cap)
            logits = cap * tanh
        # the CE part (per-sample losses and their gradients); it checks target and weight
        ce_loss, ce_grad = softmax_cross_entropy(logits, target_array, weight=w,
                                                 ignore_index=ignore_index,
                                                 label_smoothing=label_smoothing,
                                                 reduction="none")
        if target_array.ndim == 1:
            kept = check.class_indices(target_array, "target", n) != ignore_index
            w_full = np.ones(n_classes) if w is None else w.astype(np.float64)
            y = np.where(kept, target_array, 0).astype(np.int64)
            denominator = float(np.where(kept, w_full[y], 0).sum()) if w is not None else float(kept.sum())
        else:
            kept = np.ones(n, dtype=bool)
            denominator = float(n)
        # z-loss: z lse^2 per kept row, gradient 2 z lse softmax(x)
        x64 = logits.astype(np.float64)
        row_max = x64.max(axis=1, keepdims=True) if n_classes else np.zeros((n, 1))
        lse = (row_max + np.log(np.exp(x64 - row_max).sum(axis=1, keepdims=True)))[:, 0]
        per_sample = ce_loss.astype(np.float64) + np.where(kept, z * lse**2, 0.0)
        grad = ce_grad.astype(np.float64)
        if z > 0:
            softmax = np.exp(x64 - lse[:, None])
            grad = grad + np.where(kept[:, None], 2 * z * lse[:, None] * softmax, 0.0)
        if cap is not None:
            grad = grad * (1 - tanh.astype(np.float64) ** 2)
        result = _finish(per_sample, grad, denominator, reduction, True, None, np.float64,
                         kept=kept)
    loss = result.loss.astype(dtype) if reduction == "none" else result.loss
    if not compute_grad:
        return LossResult(loss, None)
    g = result.grad
    grads = [g @ np.asarray(weight, np.float64), g.T @ np.asarray(hidden, np.float64),
             g.sum(axis=0) if bias is not None else None]
    for index, value in enumerate(grads):
        if value is None:
            continue
        value = value.astype(dtype)
        if outs[index] is not None:
            outs[index][...] = value
            value = outs[index]
        grads[index] = value
    return LossResult(loss, tuple(grads))

__all__.append("linear_cross_entropy")  # issue 17


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
    lse_out = check.output_array(lse_out, sample_shape, dtype,
                               {"logits": logits, "target": target_array, "weight": weight,
                                "sample_weight": sample_weight}, "lse_out")
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
    check.focal_alpha(alpha, n_classes, dtype)
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
                 compute_grad=True, out=None, n_threads=None, compute_hess=False,
                 hess_out=None):
    """NumPy reference of fastloss.multi_margin (torch's F.multi_margin_loss): hinge terms
    max(0, margin - x_y + x_j)^p over j != y, times w_y, over C. Hessian (p = 2): each active
    term (w_y / C) v_j^2 has second derivative 2 w_y / C in x_j and in x_y."""
    (x, y, p, margin, w, reduction, compute_grad, out, _, compute_hess,
     hess_out) = _class.multi_margin_args(input, target, p, margin, weight, reduction,
                                          compute_grad, out, n_threads, compute_hess, hess_out)
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
        # only active terms carry the class weight (as torch's loops: a nan weight of a row
        # with no active hinge gives 0, not nan)
        per_sample = np.where(active, w_y[:, None] * hinge, 0.0).sum(axis=1) / n_classes
        slope = np.where(active, 2 * v.astype(np.float64) if p == 2 else 1.0, 0.0)
        grad = np.where(active, slope * (w_y / n_classes)[:, None], 0.0)
        grad[rows, y] = -grad.sum(axis=1)
        # issue 15: second derivatives, one per active term in x_j and in x_y
        hess = np.where(active, (2.0 * w_y / n_classes)[:, None], 0.0)
        hess[rows, y] = hess.sum(axis=1)
    result = _finish(per_sample, grad, float(n), reduction, compute_grad, out, dtype)
    return _with_hess(result, hess, float(n), reduction, compute_hess, hess_out, dtype)


def _with_hess(result, hess, denominator, reduction, compute_hess, hess_out, dtype):
    """LossGradHess with the hessian scaled like the gradient (issue 15), or the result."""
    if not compute_hess:
        return result
    scale = 1.0 if reduction != "mean" else (1.0 / denominator if denominator else math.nan)
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.asarray(hess * scale, dtype=dtype)
    if hess_out is not None:
        hess_out[...] = scaled
        scaled = hess_out
    return LossGradHess(result.loss, result.grad, scaled)


def kl_divergence_with_logits(logits, target_logits, *, temperature=1.0, reduction="mean",
                              compute_grad=True, out=None, n_threads=None, compute_hess=False,
                              hess_out=None):
    """NumPy reference of fastloss.kl_divergence_with_logits: T^2 sum p (log p - log q),
    p = softmax(t / T), q = softmax(x / T), log-softmaxes from _log_softmax. Hessian's
    diagonal q (1 - q), 1 - q of the row's largest class summed from the others' exps."""
    (x, t, temperature, reduction, compute_grad, out, _, compute_hess,
     hess_out) = _class.distill_kl_args(logits, target_logits, temperature, reduction,
                                        compute_grad, out, n_threads, compute_hess, hess_out)
    dtype = x.dtype
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        # shifted before they are scaled: (x - max x) / T, not x / T - max, which overflows
        # for finite logits beyond T * DBL_MAX
        u = _shifted(x.astype(np.float64)) / temperature
        log_q = _log_softmax(u)
        log_p = _log_softmax(_shifted(t.astype(np.float64)) / temperature)
        p = np.exp(log_p)
        terms = np.where(p == 0, 0.0, p * (log_p - log_q))   # 0 log 0 = 0; nan stays nan
        per_sample = temperature ** 2 * terms.sum(axis=1)
        grad = temperature * (np.exp(log_q) - p)
        hess = _softmax_variance(u)
        hess[np.isnan(p).any(axis=1)] = np.nan   # the row's loss and gradient are nan too
    result = _finish(per_sample, grad, float(x.shape[0]), reduction, compute_grad, out, dtype)
    return _with_hess(result, hess, float(x.shape[0]), reduction, compute_hess, hess_out,
                      dtype)


def _shifted(x):
    """x - max x row-wise (nan anywhere, or +inf, makes the row nan)."""
    return x - x.max(axis=1, keepdims=True)


def _softmax_variance(u):
    """q (1 - q), q = softmax(u) row-wise; for the largest entry of a row 1 - q is the sum of
    the other entries of q (no cancellation however close q is to 1)."""
    n = u.shape[0]
    rows = np.arange(n)
    e = np.exp(u - u.max(axis=1, keepdims=True))
    total = e.sum(axis=1)
    q = e / total[:, None]
    one_minus = 1.0 - q
    if u.shape[1]:
        top = np.argmax(np.where(np.isnan(e), -np.inf, e), axis=1)
        others = e.copy()
        others[rows, top] = 0.0
        one_minus[rows, top] = others.sum(axis=1) / total
    return q * one_minus


# ================================ second derivatives of the softmax class-axis losses (issue 15)
# compute_hess / hess_out of softmax_cross_entropy and softmax_focal: the functions above give
# the loss and the gradient; the Hessian's diagonal is computed here on the rows of
# _to_rows in float64, from the textbook second derivatives (docstrings below).

_softmax_cross_entropy_first_order = softmax_cross_entropy
_softmax_focal_first_order = softmax_focal


def _hess_checks(logits, reduction, compute_grad, out, compute_hess, hess_out, inputs):
    """The hessian's own checks, before the first-order reference runs (which checks the
    rest and writes nothing when it raises)."""
    logits = _class.class_axis_logits(logits)
    check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    compute_hess = check.hess_request(compute_hess, compute_grad, hess_out)
    hess_out = check.out_array(hess_out, logits, dict(inputs, out=out), name="hess_out")
    return logits, hess_out


def _place_hess(rows, logits, hess_out, scale):
    with np.errstate(invalid="ignore", over="ignore"):
        hess = _from_rows(np.asarray(rows * scale, dtype=logits.dtype), logits.shape)
    if hess_out is None:
        return hess
    hess_out[...] = hess
    return hess_out


def _mean_scale(reduction, denominator):
    if reduction != "mean":
        return 1.0
    return 1.0 / denominator if denominator != 0 else math.nan


def softmax_cross_entropy(logits, target, *, weight=None, ignore_index=-100,
                          label_smoothing=0.0, reduction="mean", compute_grad=True, out=None,
                          n_threads=None, sample_weight=None, z_loss=0.0, logit_softcap=None,
                          lse_out=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.softmax_cross_entropy (torch's F.cross_entropy).

    compute_hess: with z = c tanh(x / c) (z = x without a cap), p = softmax(z), coefficients
    a (fastloss.softmax_cross_entropy's docstring), S = sum_c a_c, lse = log sum exp z,
    S' = S + 2 zl lse, per sample the Hessian's diagonal is
    s_i [(S' p_j (1 - p_j) + 2 zl p_j^2) z'_j^2 + (S' p_j - a_j) z''_j],
    z' = 1 - tanh^2(x / c), z'' = -(2 / c) tanh(x / c) z'; 1 - p_j = -expm1(log p_j).
    """
    first = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                 reduction=reduction, compute_grad=compute_grad, out=out, n_threads=n_threads,
                 sample_weight=sample_weight, z_loss=z_loss, logit_softcap=logit_softcap,
                 lse_out=lse_out)
    if compute_hess is False and hess_out is None:
        return _softmax_cross_entropy_first_order(logits, target, **first)
    logits, hess_out = _hess_checks(logits, reduction, compute_grad, out, compute_hess,
                                    hess_out, {"target": np.asarray(target), "weight": weight,
                                               "sample_weight": sample_weight,
                                               "lse_out": lse_out})
    result = _softmax_cross_entropy_first_order(logits, target, **first)   # checks the rest
    dtype, n_classes = logits.dtype, logits.shape[1]
    eps = float(label_smoothing)
    zl = float(z_loss)
    indices, probabilities, sample_shape = _class.class_axis_target(
        logits, target, ignore_index, allow_probabilities=True)
    w = np.ones(n_classes) if weight is None else np.asarray(weight, dtype=dtype).astype(np.float64)
    sw, per_position = _class.sample_weight_array(sample_weight, sample_shape, dtype)
    s = _per_row_weight(sw, per_position, sample_shape)
    x = _to_rows(np.asarray(logits)).astype(np.float64)
    rows = x.shape[0]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        z = logit_softcap * np.tanh(x / logit_softcap) if logit_softcap is not None else x
        top = z.max(axis=1, keepdims=True) if rows else np.zeros((0, 1))
        log_sum = np.log(np.exp(z - top).sum(axis=1, keepdims=True))
        lse = top + log_sum
        logp = (z - top) - log_sum   # from the shifted logits: lse may round away log_sum
        p = np.exp(logp)
        if indices is not None:
            kept = indices != ignore_index
            y = np.where(kept, indices, 0)
            a = np.zeros((rows, n_classes))
            a[np.arange(rows), y] = (1 - eps) * w[y]
            if eps > 0:
                a = a + eps / n_classes * w
            a[~kept] = 0
            denominator = float(np.sum(np.where(kept, w[y] * (s if s is not None else 1.0), 0)))
        else:
            kept = np.ones(rows, dtype=bool)
            a = w * ((1 - eps) * _to_rows(probabilities).astype(np.float64) + eps / n_classes)
            denominator = float(np.sum(s)) if s is not None else float(rows)
        softmax_factor = a.sum(axis=1, keepdims=True) + np.where(kept[:, None], 2 * zl * lse, 0)
        hz = softmax_factor * p * -np.expm1(logp) + np.where(kept[:, None], 2 * zl * p * p, 0)
        if logit_softcap is not None:
            th = np.tanh(x / logit_softcap)
            dz = 1 - th * th
            gz = softmax_factor * p - a
            hz = hz * dz * dz - (2 / logit_softcap) * th * dz * gz
        if s is not None:
            hz = hz * s[:, None]
        hz = np.where(kept[:, None], hz, 0.0)
    hess = _place_hess(hz, logits, hess_out, _mean_scale(reduction, denominator))
    return LossGradHess(result.loss, result.grad, hess)


def softmax_focal(logits, target, *, alpha=None, gamma=2.0, ignore_index=-100,
                  reduction="mean", compute_grad=True, out=None, n_threads=None,
                  sample_weight=None, compute_hess=False, hess_out=None):
    """NumPy reference of fastloss.softmax_focal.

    compute_hess: with q = p_y, o = 1 - q (-expm1(log q)), l = -log q, K = o^gamma +
    gamma q o^(gamma - 1) l (the gradient is -alpha K v, v_j = [j == y] - p_j), the diagonal
    is alpha [K p_j (1 - p_j) - K'(q) q v_j^2] with
    -K'(q) q v_j^2 = gamma q o^(gamma - 2) (2 o - o l + (gamma - 1) q l) v_j^2, formed as
    gamma q o^gamma (2 o - o l + (gamma - 1) q l) (v_j / o)^2 (v_j / o in [-1, 1]: no
    negative power of o; 0 where o = 0).
    """
    first = dict(alpha=alpha, gamma=gamma, ignore_index=ignore_index, reduction=reduction,
                 compute_grad=compute_grad, out=out, n_threads=n_threads,
                 sample_weight=sample_weight)
    if compute_hess is False and hess_out is None:
        return _softmax_focal_first_order(logits, target, **first)
    logits, hess_out = _hess_checks(logits, reduction, compute_grad, out, compute_hess,
                                    hess_out, {"target": np.asarray(target), "alpha": alpha,
                                               "sample_weight": sample_weight})
    result = _softmax_focal_first_order(logits, target, **first)   # checks the rest
    dtype, n_classes = logits.dtype, logits.shape[1]
    g = float(gamma)
    indices, _, sample_shape = _class.class_axis_target(logits, target, ignore_index,
                                                        allow_probabilities=False)
    if alpha is None or np.ndim(alpha) == 0:
        value = 1.0 if alpha is None else float(np.asarray(alpha))
        alpha_full = np.full(n_classes, value)
    else:
        alpha_full = np.asarray(alpha, dtype=dtype).astype(np.float64)
    sw, per_position = _class.sample_weight_array(sample_weight, sample_shape, dtype)
    s = _per_row_weight(sw, per_position, sample_shape)
    x = _to_rows(np.asarray(logits)).astype(np.float64)
    rows = x.shape[0]
    kept = indices != ignore_index
    y = np.where(kept, indices, 0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        top = x.max(axis=1, keepdims=True) if rows else np.zeros((0, 1))
        logp = x - top - np.log(np.exp(x - top).sum(axis=1, keepdims=True))
        p = np.exp(logp)
        logq = logp[np.arange(rows), y][:, None]
        q = np.exp(logq)
        o = -np.expm1(logq)
        ell = -logq
        f = o ** g
        K = o ** g + (g * q * o ** (g - 1) * ell if g != 0 else 0.0)
        K = np.where(o > 0, K, 1.0 if g == 0 else 0.0)
        onehot = np.zeros_like(p)
        onehot[np.arange(rows), y] = 1
        v_over_o = np.where(o > 0, (onehot - p) / o, 0.0)
        curvature = g * q * f * (2 * o - o * ell + (g - 1) * q * ell) * v_over_o ** 2
        h = alpha_full[y][:, None] * (K * p * -np.expm1(logp) + curvature)
        if s is not None:
            h = h * s[:, None]
        h = np.where(kept[:, None], h, 0.0)
    denominator = float(np.sum(np.where(kept, s if s is not None else 1.0, 0.0)))
    hess = _place_hess(h, logits, hess_out, _mean_scale(reduction, denominator))
    return LossGradHess(result.loss, result.grad, hess)
