"""The public loss functions: validate, allocate, call the kernel, reduce.

Each function returns ``LossResult(loss, grad)``. The maths of each loss is in its C kernel
(fastloss/_src/fl_*.inc) and in its docstring here; fastloss.reference holds independent
NumPy implementations with the same signatures.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import numpy as np

from . import _kernels
from . import _validation as check
from . import _class_losses  # issue 13: the class-axis options


class LossResult(NamedTuple):
    """``(loss, grad)``: loss is a float for "mean"/"sum" and an ndarray for "none"; grad is
    the derivative of the returned loss (of ``loss.sum()`` for "none"), or None."""

    loss: Union[float, np.ndarray]
    grad: Optional[np.ndarray]


_kernels._set_result_type(LossResult)


def _reduce(total: float, denominator: float, reduction: str, loss_out) -> Union[float, np.ndarray]:
    if reduction == "none":
        return loss_out
    if reduction == "sum":
        return float(total)
    return total / denominator if denominator != 0 else math.nan


def softmax_cross_entropy(
    logits,
    target,
    *,
    weight=None,
    ignore_index=-100,
    label_smoothing=0.0,
    reduction="mean",
    compute_grad=True,
    out=None,
    n_threads=None,
    sample_weight=None,
    z_loss=0.0,
    logit_softcap=None,
    lse_out=None,
) -> LossResult:
    r"""Softmax cross-entropy and its gradient with respect to the logits, in one pass.

    Semantics of ``torch.nn.functional.cross_entropy``, plus sample weights, a z-loss
    (PaLM), logit soft-capping (Gemma 2) and the log-sum-exp out.

    Parameters
    ----------
    logits : ndarray (N, C) or (N, C, d1, ..., dK), float32 or float64
    target : ndarray (N,) (or (N, d1, ..., dK)) of integer class indices in [0, C) (or
        ``ignore_index``), or ndarray of the logits' shape of class probabilities (any real
        dtype, converted to logits' dtype). "none" returns (N,) (or (N, d1, ..., dK)).
    weight : array (C,), optional
        Per-class weights w (all 1 when None).
    sample_weight : array (N,) or of the target's sample shape (N, d1, ..., dK), optional
        Non-negative factors s_i of each sample's loss (and gradient).
    z_loss : float >= 0
        zl: each kept sample adds zl s_i lse_i^2 (lse_i the log-sum-exp of its logits after
        the cap; not multiplied by the class weight).
    logit_softcap : None or float > 0
        c: the logits become c tanh(x / c) before everything else.
    lse_out : None or ndarray of the sample shape and the logits' dtype
        Receives every sample's log-sum-exp (ignored samples too), under the rules of out.
    ignore_index : int
        Class-index targets equal to it contribute no loss and a zero gradient row. Must stay
        at its default with probability targets.
    label_smoothing : float in [0, 1]
        eps: the target is mixed with the uniform distribution, (1 - eps) target + eps / C.
    reduction : "mean" | "sum" | "none"
    compute_grad, out, n_threads : see the README ("Arguments every loss takes").

    Maths
    -----
    With m = max_c x_c and s = sum_c exp(x_c - m), the negative log-probability of class c
    is ``-log p_c = log s - (x_c - m)`` (the stable form: never ``lse - x_c`` with a rounded
    ``lse``). Per sample i, with coefficients a_c,

        loss_i = sum_c a_c (-log p_c),        dloss_i/dx_j = S p_j - a_j,   S = sum_c a_c,

        class index y:   a_c = (1 - eps) w_y [c == y] + (eps / C) w_c
        probabilities t: a_c = w_c ((1 - eps) t_c + eps / C)

    "mean" divides the sum by sum_i w_{y_i} over the samples not ignored (by their count
    without weight) for class indices, and by N for probabilities; the gradient is that of
    the returned loss. An empty batch or a zero denominator gives nan for "mean".

    The class-axis options. With z_c = c tanh(x_c / c) (z = x without a cap),
    lse = log sum_c exp(z_c) = m + log sum_c exp(z_c - m), sample weight s_i and z-loss zl:

        loss_i = s_i [ sum_c a_c (lse - z_c) + zl lse^2 ]       (zl term for kept samples)
        dloss_i/dx_j = s_i [ (S + 2 zl lse) p_j - a_j ] (1 - t_j)(1 + t_j),  t_j = z_j / c

    (no last factor without a cap): the z-loss only changes the softmax factor S and comes
    from the lse the loss needs anyway, and the cap's derivative 1 - tanh^2 is taken as
    (1 - t)(1 + t), exactly 0 where tanh saturates (fl_math.h's tanh: accurate near 0,
    exactly +-1 from |x / c| > 9.01 in float32). "mean" divides the whole sum by
    sum_i s_i w_{y_i} over the kept samples (sum_i s_i for probability targets). K-dim
    logits are taken as N * d1 * ... * dK samples, as torch does, without a transpose: the
    kernel runs over tiles of consecutive positions as vector lanes, looping over the
    strided class axis.
    """
    if (sample_weight is not None or lse_out is not None or logit_softcap is not None
            or not (isinstance(z_loss, (int, float)) and z_loss == 0)
            or (isinstance(logits, np.ndarray) and logits.ndim != 2)):
        return _class_losses.softmax_cross_entropy(
            logits, target, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing, reduction=reduction, compute_grad=compute_grad,
            out=out, n_threads=n_threads, sample_weight=sample_weight, z_loss=z_loss,
            logit_softcap=logit_softcap, lse_out=lse_out)
    # the common case (plain arrays, class indices, no weight) without Python-level checks
    result = _kernels.softmax_cross_entropy_fast(logits, target, weight, ignore_index,
                                                 label_smoothing, reduction, compute_grad, out,
                                                 n_threads)
    if result is not None:
        return result
    logits, n_samples, n_classes = check.class_logits(logits)
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    threads = check.n_threads(n_threads)
    ignore_index = check.ignore_index(ignore_index)
    eps = check.real_scalar(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    dtype = logits.dtype

    target_array = np.asarray(target)
    if target_array.ndim == 1:
        indices = check.class_indices(target_array, "target", n_samples)
        probabilities = None
    elif target_array.ndim == 2:
        if target_array.dtype.kind not in "f":
            raise TypeError(
                "a 2-D target holds class probabilities and must have a floating dtype, got "
                f"dtype {target_array.dtype} (class indices are a 1-D integer target)")
        if ignore_index != -100:
            raise ValueError("ignore_index applies only to class-index targets; leave it at "
                             f"its default (-100) with probability targets, got {ignore_index}")
        probabilities = check.float_target(target_array, "target", dtype, logits.shape)
        indices = None
    else:
        raise ValueError("target must be 1-D class indices (N,) or 2-D probabilities (N, C), "
                         f"got {target_array.ndim}-D shape {target_array.shape}")
    weight_array = check.class_weight(weight, "weight", n_classes, dtype)
    out = check.out_array(out, logits, {"target": target_array, "weight": weight})

    if indices is not None:
        denominator = check.check_indices_in_range(indices, "target", n_classes, ignore_index,
                                                   weight_array)
    else:
        denominator = float(n_samples)
    weight_sum = float(weight_array.sum(dtype=np.float64)) if weight_array is not None else float(n_classes)

    # -------- nothing has been written up to here; from here on the call cannot fail
    x = np.ascontiguousarray(logits)
    grad = None
    if compute_grad:
        grad = out if out is not None else np.empty_like(x)
    loss_out = np.empty(n_samples, dtype=dtype) if reduction == "none" else None
    grad_scale = 1.0
    if reduction == "mean":
        grad_scale = 1.0 / denominator if denominator != 0 else math.nan
    total = _kernels.softmax_cross_entropy(
        x, indices, probabilities, weight_array, ignore_index, eps, weight_sum, grad_scale,
        grad, loss_out, threads)
    return LossResult(_reduce(total, denominator, reduction, loss_out), grad)


# ===================================================================== element-wise losses

def _elementwise_setup(input, target, name, reduction, compute_grad, out, n_threads):
    """The checks every element-wise loss shares: (input, target converted to its dtype,
    reduction, compute_grad, threads). `out` is checked by the caller, which knows what
    else it must not overlap."""
    input = check.float_input(input, name)
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    threads = check.n_threads(n_threads)
    target_array = check.float_target(target, "target", input.dtype, input.shape)
    return input, target_array, reduction, compute_grad, threads


def _elementwise_buffers(input, out, compute_grad, reduction):
    """(contiguous input, gradient buffer or None, per-element loss buffer or None, grad_scale)."""
    # (np.ascontiguousarray would turn a 0-d input into shape (1,))
    x = input if input.flags.c_contiguous else np.ascontiguousarray(input)
    grad = (out if out is not None else np.empty_like(x)) if compute_grad else None
    loss_out = np.empty(x.shape, dtype=x.dtype) if reduction == "none" else None
    grad_scale = 1.0
    if reduction == "mean":
        grad_scale = 1.0 / x.size if x.size else math.nan
    return x, grad, loss_out, grad_scale


def _periodic(weight_and_period, n_elements: int):
    """A periodic weight buffer as the kernels read it (fl_kernels.h): the period repeated
    up to period + ELEMENTWISE_CHUNK entries when it is shorter than the input."""
    if weight_and_period is None:
        return None, 1
    values, period = weight_and_period
    if period < n_elements:
        values = np.resize(values, period + _kernels.ELEMENTWISE_CHUNK)
    return values, period


def binary_cross_entropy_with_logits(
    logits,
    target,
    *,
    weight=None,
    pos_weight=None,
    reduction="mean",
    compute_grad=True,
    out=None,
    n_threads=None,
) -> LossResult:
    r"""Binary cross-entropy on logits and its gradient with respect to the logits.

    Semantics of ``torch.nn.functional.binary_cross_entropy_with_logits``.

    Parameters
    ----------
    logits : ndarray of any shape, float32 or float64
    target : array of the same shape, values in [0, 1] (soft targets allowed; any real
        dtype, converted to logits' dtype; values are not checked)
    weight : array broadcastable to logits' shape, optional
        Per-element factor w (all 1 when None).
    pos_weight : array broadcastable to logits' shape, optional
        Factor p of the positive term, usually one per class along the last axis (all 1
        when None).
    reduction : "mean" | "sum" | "none"
        "mean" divides the sum of the weighted element losses by the number of elements.
    compute_grad, out, n_threads : see the README ("Arguments every loss takes").

    Maths
    -----
    Per element, with sigma the logistic function and softplus(z) = log(1 + exp(z)),

        loss = w [ p t softplus(-x) + (1 - t) softplus(x) ]
             = -w [ p t log sigma(x) + (1 - t) log(1 - sigma(x)) ]
        dloss/dx = w [ (1 - t) sigma(x) - p t sigma(-x) ]     (= w (sigma(x) - t) for p = 1)

    Stable form: with e = exp(-|x|), which never overflows, and a = w (1 - t), b = w p t,

        loss = a max(x, 0) + b max(-x, 0) + (a + b) log1p(e)
        dloss/dx = (P - M) / (1 + e),  P = a (x >= 0 ? 1 : e),  M = b (x >= 0 ? e : 1)

    so the gradient keeps its digits where sigma(x) rounds to 1 (no sigma(x) - t
    cancellation), and logits of any finite magnitude give finite results.

    Weights are not copied to the input's shape when they vary only along trailing axes of
    the input (a scalar, a last-axis (C,) vector, the full shape): the kernel indexes them
    periodically. Other broadcasts (e.g. a per-row (N, 1) weight) are expanded once.
    """
    result = _kernels.elementwise_fast(_kernels.ELEMENTWISE_BCE, logits, target, weight,
                                       pos_weight, reduction, compute_grad, out, n_threads)
    if result is not None:  # plain arrays without weights: the checks done in C
        return result
    logits, target_array, reduction, compute_grad, threads = _elementwise_setup(
        logits, target, "logits", reduction, compute_grad, out, n_threads)
    weight_values = check.broadcast_weight(weight, "weight", logits.shape, logits.dtype)
    pos_values = check.broadcast_weight(pos_weight, "pos_weight", logits.shape, logits.dtype)
    out = check.out_array(out, logits, {"target": target, "weight": weight,
                                        "pos_weight": pos_weight})

    # -------- nothing has been written up to here; from here on the call cannot fail
    x, grad, loss_out, grad_scale = _elementwise_buffers(logits, out, compute_grad, reduction)
    weight_buffer, weight_period = _periodic(weight_values, x.size)
    pos_buffer, pos_period = _periodic(pos_values, x.size)
    total = _kernels.binary_cross_entropy_with_logits(
        x, target_array, weight_buffer, weight_period, pos_buffer, pos_period, grad_scale,
        grad, loss_out, threads)
    return LossResult(_reduce(total, x.size, reduction, loss_out), grad)


def _huber_family(input, target, threshold, loss_scale, reduction, compute_grad, out,
                  n_threads) -> LossResult:
    input, target_array, reduction, compute_grad, threads = _elementwise_setup(
        input, target, "input", reduction, compute_grad, out, n_threads)
    out = check.out_array(out, input, {"target": target})
    x, grad, loss_out, grad_scale = _elementwise_buffers(input, out, compute_grad, reduction)
    total = _kernels.huber(x, target_array, threshold, loss_scale, grad_scale, grad, loss_out,
                           threads)
    return LossResult(_reduce(total, x.size, reduction, loss_out), grad)


def huber(
    input,
    target,
    *,
    delta=1.0,
    reduction="mean",
    compute_grad=True,
    out=None,
    n_threads=None,
) -> LossResult:
    r"""Huber loss and its gradient with respect to the input.

    Semantics of ``torch.nn.functional.huber_loss``.

    Parameters
    ----------
    input : ndarray of any shape, float32 or float64
    target : array of the same shape (any real dtype, converted to input's dtype)
    delta : float > 0
        Where the loss turns from quadratic to linear.
    reduction : "mean" | "sum" | "none" ("mean" divides by the number of elements)
    compute_grad, out, n_threads : see the README ("Arguments every loss takes").

    Maths
    -----
    With d = input - target and c = min(|d|, delta),

        loss = c (|d| - c / 2)      = d^2 / 2                  for |d| < delta
                                    = delta (|d| - delta / 2)  for |d| >= delta
        dloss/d input = clamp(d, -delta, delta)

    Both pieces and their derivatives agree at |d| = delta. No transcendental functions;
    the kernel runs at memory speed.
    """
    result = _kernels.elementwise_fast(_kernels.ELEMENTWISE_HUBER, input, target, delta, None,
                                       reduction, compute_grad, out, n_threads)
    if result is not None:  # plain arrays and options: the checks done in C
        return result
    delta = check.real_scalar(delta, "delta", low=0.0, low_open=True)
    return _huber_family(input, target, delta, 1.0, reduction, compute_grad, out, n_threads)


def smooth_l1(
    input,
    target,
    *,
    beta=1.0,
    reduction="mean",
    compute_grad=True,
    out=None,
    n_threads=None,
) -> LossResult:
    r"""Smooth L1 loss and its gradient with respect to the input.

    Semantics of ``torch.nn.functional.smooth_l1_loss`` (beta > 0).

    Parameters
    ----------
    input : ndarray of any shape, float32 or float64
    target : array of the same shape (any real dtype, converted to input's dtype)
    beta : float > 0
    reduction : "mean" | "sum" | "none" ("mean" divides by the number of elements)
    compute_grad, out, n_threads : see the README ("Arguments every loss takes").

    Maths
    -----
    Smooth L1 is the Huber loss with delta = beta, divided by beta. With d = input - target,

        loss = d^2 / (2 beta)   for |d| < beta,     |d| - beta / 2   for |d| >= beta
        dloss/d input = clamp(d, -beta, beta) / beta  (= d / beta inside, sign(d) outside)

    It is computed by the Huber kernel with delta = beta and a factor 1 / beta.
    """
    result = _kernels.elementwise_fast(_kernels.ELEMENTWISE_SMOOTH_L1, input, target, beta,
                                       None, reduction, compute_grad, out, n_threads)
    if result is not None:  # plain arrays and options: the checks done in C
        return result
    beta = check.real_scalar(beta, "beta", low=0.0, low_open=True)
    return _huber_family(input, target, beta, 1.0 / beta, reduction, compute_grad, out,
                         n_threads)


def sigmoid_focal(
    logits,
    target,
    *,
    alpha=0.25,
    gamma=2.0,
    reduction="mean",
    compute_grad=True,
    out=None,
    n_threads=None,
) -> LossResult:
    r"""Sigmoid focal loss (Lin et al., 2017) and its gradient with respect to the logits.

    Semantics of ``torchvision.ops.sigmoid_focal_loss``, whose default reduction is "none";
    here it is "mean" (over all elements).

    Parameters
    ----------
    logits : ndarray of any shape, float32 or float64
    target : array of the same shape, values in [0, 1] (any real dtype, converted)
    alpha : float
        Weight of the positive class; alpha < 0 turns the alpha factor off.
    gamma : float >= 0
        Focusing exponent; 0, 1 and 2 are evaluated without a power function.
    reduction : "mean" | "sum" | "none"
    compute_grad, out, n_threads : see the README ("Arguments every loss takes").

    Maths
    -----
    With p = sigma(x), ce = -t log p - (1 - t) log(1 - p) (BCE with logits),
    q = 1 - p_t = p (1 - t) + (1 - p) t and alpha_t = alpha t + (1 - alpha)(1 - t)
    (alpha_t = 1 when alpha < 0):

        loss = alpha_t ce q^gamma
        dloss/dx = alpha_t q^gamma [ (p - t) + gamma ce (1 - 2t) p (1 - p) / q ]

    using dq/dx = (1 - 2t) p (1 - p). The ratio r = p (1 - p) / q lies in [0, 1] and tends
    to max(p, 1 - p) where q -> 0, so the gradient is finite for every gamma >= 0, including
    gamma < 1 where torchvision's q^(gamma - 1) p (1 - p) evaluates to 0 * inf = nan once q
    rounds to 0: this function returns the true (finite) value there.

    Stable form: with e = exp(-|x|), P = (1 - t) (x >= 0 ? 1 : e), M = t (x >= 0 ? e : 1):
    p - t = (P - M) / (1 + e), q = (P + M) / (1 + e), r = e / ((1 + e)(P + M)) and
    ce = (1 - t) max(x, 0) + t max(-x, 0) + log1p(e): no cancellation for any finite x.
    """
    result = _kernels.elementwise_fast(_kernels.ELEMENTWISE_SIGMOID_FOCAL, logits, target,
                                       alpha, gamma, reduction, compute_grad, out, n_threads)
    if result is not None:  # plain arrays and options: the checks done in C
        return result
    alpha = check.real_scalar(alpha, "alpha")
    gamma = check.real_scalar(gamma, "gamma", low=0.0)
    logits, target_array, reduction, compute_grad, threads = _elementwise_setup(
        logits, target, "logits", reduction, compute_grad, out, n_threads)
    out = check.out_array(out, logits, {"target": target})
    x, grad, loss_out, grad_scale = _elementwise_buffers(logits, out, compute_grad, reduction)
    total = _kernels.sigmoid_focal(x, target_array, alpha, gamma, grad_scale, grad, loss_out,
                                   threads)
    return LossResult(_reduce(total, x.size, reduction, loss_out), grad)


# ========================================================================= softmax focal

def softmax_focal(
    logits,
    target,
    *,
    alpha=None,
    gamma=2.0,
    ignore_index=-100,
    reduction="mean",
    compute_grad=True,
    out=None,
    n_threads=None,
    sample_weight=None,
) -> LossResult:
    r"""Softmax focal loss and its gradient with respect to the logits, in one pass.

    Parameters
    ----------
    logits : ndarray (N, C) or (N, C, d1, ..., dK), float32 or float64
    target : ndarray (N,) (or (N, d1, ..., dK)) of integer class indices in [0, C) (or
        ``ignore_index``); "none" returns that shape
    sample_weight : array (N,) or of the target's shape, optional
        Non-negative factors s_i of each sample's loss and gradient; "mean" then divides by
        sum_i s_i over the kept samples (no class factor in the denominator).
    alpha : None, float, or array (C,)
        Class factor alpha_y: 1 for None, the same float for every class, or per class.
    gamma : float >= 0
        Focusing exponent; 0, 1 and 2 are evaluated without a power function.
    ignore_index : int
        Samples with this target contribute no loss and a zero gradient row.
    reduction : "mean" | "sum" | "none"
        "mean" divides the sum by the number of samples not ignored (nan if there are none).
    compute_grad, out, n_threads : see the README ("Arguments every loss takes").

    Maths
    -----
    With p = softmax(x) of a row and y its class:

        loss = -alpha_y (1 - p_y)^gamma log p_y
        dloss/dx_j = alpha_y K (p_j - [j == y]),
        K = (1 - p_y)^gamma - gamma p_y (1 - p_y)^(gamma - 1) log p_y
          = (1 - p_y)^gamma (1 + gamma p_y rho),   rho = -log(p_y) / (1 - p_y)

    rho lies in [1, inf) and tends to 1 as p_y -> 1, so the gradient is finite for every
    gamma >= 0. With gamma = 0 and alpha = None this is softmax_cross_entropy.

    Stable form: with m = max_c x_c and e_c = exp(x_c - m), 1 - p_y = sum_{c != y} e_c / s
    (summed directly, not as 1 - p_y) and -log p_y = log1p(sum_{c != y} e_c / e_y) where
    p_y >= 1/2, log s - (x_y - m) elsewhere: accurate for logits of any finite magnitude,
    judged relative to their differences. K-dim logits are N * d1 * ... * dK samples,
    processed as softmax_cross_entropy's (tiles of positions as vector lanes).
    """
    if sample_weight is not None or (isinstance(logits, np.ndarray) and logits.ndim != 2):
        return _class_losses.softmax_focal(
            logits, target, alpha=alpha, gamma=gamma, ignore_index=ignore_index,
            reduction=reduction, compute_grad=compute_grad, out=out, n_threads=n_threads,
            sample_weight=sample_weight)
    result = _kernels.softmax_focal_fast(logits, target, alpha, gamma, ignore_index, reduction,
                                         compute_grad, out, n_threads)
    if result is not None:  # plain arrays, class indices, scalar alpha: the checks done in C
        return result
    logits, n_samples, n_classes = check.class_logits(logits)
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    threads = check.n_threads(n_threads)
    ignore_index = check.ignore_index(ignore_index)
    gamma = check.real_scalar(gamma, "gamma", low=0.0)
    dtype = logits.dtype
    indices = check.class_indices(target, "target", n_samples)
    alpha_array, alpha_scalar = None, 1.0
    if alpha is not None and np.ndim(alpha) == 0:
        alpha_scalar = check.real_scalar(alpha.item() if isinstance(alpha, np.ndarray) else alpha,
                                         "alpha")
    else:
        alpha_array = check.class_weight(alpha, "alpha", n_classes, dtype)
    out = check.out_array(out, logits, {"target": target, "alpha": alpha})
    denominator = check.check_indices_in_range(indices, "target", n_classes, ignore_index, None)

    # -------- nothing has been written up to here; from here on the call cannot fail
    x = np.ascontiguousarray(logits)
    grad = None
    if compute_grad:
        grad = out if out is not None else np.empty_like(x)
    loss_out = np.empty(n_samples, dtype=dtype) if reduction == "none" else None
    grad_scale = 1.0
    if reduction == "mean":
        grad_scale = 1.0 / denominator if denominator != 0 else math.nan
    total = _kernels.softmax_focal(x, indices, alpha_array, alpha_scalar, gamma, ignore_index,
                                   grad_scale, grad, loss_out, threads)
    return LossResult(_reduce(total, denominator, reduction, loss_out), grad)
