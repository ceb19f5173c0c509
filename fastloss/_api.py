"""The public loss functions: validate, allocate, call the kernel, reduce.

The class-axis losses (softmax cross-entropy, softmax focal); the element-wise ones are made
from the loss table (fastloss/_table.py, fastloss/_elementwise.py).

Each function returns ``LossResult(loss, grad)``. The maths of each loss is in its C kernel
(fastloss/_src/fl_*.inc) and in its docstring here; fastloss.reference holds independent
NumPy implementations with the same signatures.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np

from . import _kernels
from . import _validation as check
from ._results import LossGradHess, LossResult  # noqa: F401 (re-exported)
from . import _class_losses  # issue 13: the class-axis options

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
    compute_hess=False,
    hess_out=None,
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
    compute_hess, hess_out : with compute_hess=True the result is LossGradHess(loss, grad,
        hess), hess the diagonal of the Hessian of the returned loss with respect to the
        logits (below), scaled like the gradient; hess_out follows the rules of out.

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

    Second derivatives (compute_hess=True). With S' = S + 2 zl lse and p = softmax(z), the
    Hessian's diagonal is, per sample,

        d2loss_i/dz_j^2 = s_i [ S' p_j (1 - p_j) + 2 zl p_j^2 ]
        d2loss_i/dx_j^2 = d2loss_i/dz_j^2 (1 - t_j^2)^2 - (2 / c) t_j (1 - t_j^2) dloss_i/dz_j

    (S p_j (1 - p_j) without z-loss and cap: the coefficients a_j drop out; the second line
    is the chain rule through c tanh(x / c), whose second derivative is -(2 / c) t (1 - t^2)),
    scaled like the gradient (1 / the denominator for "mean"); ignored samples get zeros.
    It is the exact diagonal: LightGBM's multiclass objective multiplies p (1 - p) by
    C / (C - 1) instead (as its own scaling of the Newton step). 1 - p_j of a row's max is
    taken from the double sum of exps, (s - 1) / s, so p_j near 1 keeps its digits. The
    hessian is written in the same pass as the gradient, from the exps, by a compile-time
    variant of the class-axis kernels (the calls without compute_hess run the kernels
    as before).
    """
    if (sample_weight is not None or lse_out is not None or logit_softcap is not None
            or not (isinstance(z_loss, (int, float)) and z_loss == 0)
            or (isinstance(logits, np.ndarray) and logits.ndim != 2)
            or compute_hess is not False or hess_out is not None):
        return _class_losses.softmax_cross_entropy(
            logits, target, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing, reduction=reduction, compute_grad=compute_grad,
            out=out, n_threads=n_threads, sample_weight=sample_weight, z_loss=z_loss,
            logit_softcap=logit_softcap, lse_out=lse_out, compute_hess=compute_hess,
            hess_out=hess_out)
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
        check.reject_index_column(target_array, "target", n_samples)
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
        grad = out if out is not None else _kernels.result_empty(x.shape, dtype)
    loss_out = _kernels.result_empty(n_samples, dtype) if reduction == "none" else None
    grad_scale = 1.0
    if reduction == "mean":
        grad_scale = 1.0 / denominator if denominator != 0 else math.nan
    total = _kernels.softmax_cross_entropy(
        x, indices, probabilities, weight_array, ignore_index, eps, weight_sum, grad_scale,
        grad, loss_out, threads)
    return LossResult(_reduce(total, denominator, reduction, loss_out), grad)


# The element-wise losses are made from the loss table: fastloss/_elementwise.py.


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
    compute_hess=False,
    hess_out=None,
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
    compute_hess, hess_out : with compute_hess=True the result is LossGradHess(loss, grad,
        hess), hess the diagonal of the Hessian of the returned loss with respect to the
        logits (below), scaled like the gradient; hess_out follows the rules of out.

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

    Second derivatives (compute_hess=True). With q = p_y, o = 1 - q, f = o^gamma and
    v_j = [j == y] - p_j, dq/dx_j = q v_j and the gradient is -alpha_y K(q) v_j, so

        d2loss/dx_j^2 = alpha_y [ K p_j (1 - p_j) - K'(q) q v_j^2 ],
        -K'(q) q = gamma q o^(gamma - 1) B,   B = 2 - rho o + (gamma - 1) q rho

    (K = o^gamma + gamma q o^(gamma - 1) (-log q) differentiated in q). With v_y = o and
    v_j^2 = o p_j r_j, r_j = p_j / o in [0, 1] for j != y:

        h_y = alpha_y f o q [1 + 2 gamma + gamma rho (gamma q - o)]
        h_j = alpha_y p_j [K (1 - p_j) + gamma q f B r_j]        (j != y)

    finite for every gamma >= 0 (no negative power of o is formed); at gamma = 0 both are
    the cross-entropy's p_j (1 - p_j). h_y is negative where p_y is small (the loss is not
    convex in x_y there): the exact value is returned. Scaled like the gradient (times s_i,
    1 / the denominator for "mean"); ignored samples get zeros.
    """
    if (sample_weight is not None or (isinstance(logits, np.ndarray) and logits.ndim != 2)
            or compute_hess is not False or hess_out is not None):
        return _class_losses.softmax_focal(
            logits, target, alpha=alpha, gamma=gamma, ignore_index=ignore_index,
            reduction=reduction, compute_grad=compute_grad, out=out, n_threads=n_threads,
            sample_weight=sample_weight, compute_hess=compute_hess, hess_out=hess_out)
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
    alpha_array, alpha_scalar = check.focal_alpha(alpha, n_classes, dtype)
    out = check.out_array(out, logits, {"target": target, "alpha": alpha})
    denominator = check.check_indices_in_range(indices, "target", n_classes, ignore_index, None)

    # -------- nothing has been written up to here; from here on the call cannot fail
    x = np.ascontiguousarray(logits)
    grad = None
    if compute_grad:
        grad = out if out is not None else _kernels.result_empty(x.shape, dtype)
    loss_out = _kernels.result_empty(n_samples, dtype) if reduction == "none" else None
    grad_scale = 1.0
    if reduction == "mean":
        grad_scale = 1.0 / denominator if denominator != 0 else math.nan
    total = _kernels.softmax_focal(x, indices, alpha_array, alpha_scalar, gamma, ignore_index,
                                   grad_scale, grad, loss_out, threads)
    return LossResult(_reduce(total, denominator, reduction, loss_out), grad)
