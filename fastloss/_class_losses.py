"""Class-axis losses (issue 13): the K-dimensional, sample-weighted, z-loss, soft-capped and
lse_out paths of softmax_cross_entropy and softmax_focal, multi_margin and
kl_divergence_with_logits.

fastloss._api's softmax_cross_entropy and softmax_focal hand a call here when it uses one of
the new options (or K-dim logits); their docstrings carry the maths of every option. The
argument checks of these paths live here once and are shared with fastloss.reference.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np

from . import _kernels
from . import _validation as check
from ._results import LossGradHess, LossResult


def _reduce(total, denominator, reduction, loss_out):
    if reduction == "none":
        return loss_out
    if reduction == "sum":
        return float(total)
    return total / denominator if denominator != 0 else math.nan


def _grad_scale(reduction: str, denominator: float) -> float:
    if reduction != "mean":
        return 1.0
    return 1.0 / denominator if denominator != 0 else math.nan


# ------------------------------------------------------------------------------ checks

class ClassAxisCall(NamedTuple):
    """A validated class-axis call: logits (N, C, d1..dK) as given, its sample shape
    (N, d1..dK), P = d1 * ... * dK, and the targets and weights in the kernels' forms."""

    logits: np.ndarray
    n_samples: int
    n_classes: int
    sample_shape: tuple
    inner: int
    indices: Optional[np.ndarray]        # (N * P,) int64, or None
    probabilities: Optional[np.ndarray]  # logits' shape and dtype, C-contiguous, or None
    sample_weight: Optional[np.ndarray]  # (N,) or sample_shape, logits' dtype, or None
    sample_weight_per_position: bool


def class_axis_logits(logits, name: str = "logits"):
    """Logits of a class-axis loss: float32/float64, (N, C) or (N, C, d1, ..., dK), C >= 1."""
    logits = check.float_input(logits, name)
    if logits.ndim < 2:
        raise ValueError(f"{name} must be 2-D (N, C) or (N, C, d1, ..., dK), got {logits.ndim}-D "
                         f"shape {logits.shape}")
    if logits.shape[1] < 1:
        raise ValueError(f"{name} must have at least one class (C >= 1), got shape "
                         f"{logits.shape}")
    return logits


def class_axis_target(logits: np.ndarray, target, ignore_index: int, *, allow_probabilities):
    """(indices (N*P,) int64 or None, probabilities or None, sample_shape) for a target of
    shape (N, d1..dK) (class indices) or the logits' shape (probabilities)."""
    sample_shape = (logits.shape[0],) + logits.shape[2:]
    array = np.asarray(target)
    if array.ndim == logits.ndim - 1:
        if array.dtype.kind not in "iu":
            raise TypeError("target holds class indices and must have an integer dtype, got "
                            f"dtype {array.dtype}")
        if array.shape != sample_shape:
            raise ValueError(f"target must have shape {sample_shape} (the logits' shape without "
                             f"the class axis) for class indices, got shape {array.shape}")
        flat = check.class_indices(array.reshape(-1), "target", array.size)
        return flat, None, sample_shape
    if array.ndim == logits.ndim and allow_probabilities:
        if array.dtype.kind in "iu" and logits.ndim == 2 and array.shape == (logits.shape[0], 1):
            raise ValueError(f"target of shape {array.shape} with 2-D logits: class indices "
                             "must be 1-D (N,); pass target.ravel()")
        if array.dtype.kind != "f":
            raise TypeError("a target of the logits' shape holds class probabilities and must "
                            f"have a floating dtype, got dtype {array.dtype} (class indices "
                            "have the logits' shape without the class axis)")
        if ignore_index != -100:
            raise ValueError("ignore_index applies only to class-index targets; leave it at "
                             f"its default (-100) with probability targets, got {ignore_index}")
        probabilities = check.float_target(array, "target", logits.dtype, logits.shape)
        return None, probabilities, sample_shape
    if array.ndim == logits.ndim and array.dtype.kind in "iu" and logits.ndim == 2 \
            and array.shape == (logits.shape[0], 1):
        raise ValueError(f"target of shape {array.shape} with 2-D logits: class indices must "
                         "be 1-D (N,); pass target.ravel()")
    kinds = f"class indices {sample_shape}" + (f" or probabilities {logits.shape}"
                                               if allow_probabilities else "")
    raise ValueError(f"target must be {kinds}, got shape {array.shape}")


def sample_weight_array(sample_weight, sample_shape: tuple, dtype):
    """(array or None, per_position): non-negative, shape (N,) or the sample shape."""
    if sample_weight is None:
        return None, False
    array = np.asarray(sample_weight)
    if array.dtype.kind not in "fiu" or array.dtype == np.bool_:
        raise TypeError(f"sample_weight must hold real numbers, got dtype {array.dtype}")
    if array.shape == sample_shape:
        per_position = len(sample_shape) > 1
    elif array.shape == sample_shape[:1]:
        per_position = False
    else:
        raise ValueError(f"sample_weight must have shape {sample_shape[:1]} or {sample_shape}, "
                         f"got shape {array.shape}")
    values = np.ascontiguousarray(array, dtype=dtype)
    bad = ~(values >= 0)
    if bad.any():
        position = np.unravel_index(int(np.argmax(bad)), values.shape)
        raise ValueError(f"sample_weight must be non-negative, got {values[position]!r} at "
                         f"position {tuple(int(i) for i in position)}")
    return values, per_position


def index_denominator(indices, n_classes, ignore_index, weight, sample_weight, per_position,
                      sample_shape, class_weighted=True):
    """Check the class indices; the mean's denominator sum_i s_i w_{y_i} over kept samples
    (w omitted when not class_weighted: softmax focal)."""
    w = weight if class_weighted else None
    bad, denominator = _kernels.check_class_indices(indices, n_classes, ignore_index, w)
    if bad >= 0:
        position = tuple(int(i) for i in np.unravel_index(bad, sample_shape))
        where = position if len(position) > 1 else position[0]
        raise ValueError(f"target contains class index {int(indices[bad])} at position "
                         f"{where}, outside [0, {n_classes}) and not "
                         f"ignore_index={ignore_index}")
    if sample_weight is None:
        return float(denominator)
    kept = indices != ignore_index
    s = np.broadcast_to(sample_weight.reshape(sample_shape[:1] + (1,) * (len(sample_shape) - 1)),
                        sample_shape).reshape(-1) if not per_position else sample_weight.reshape(-1)
    s = s.astype(np.float64)
    if w is not None:
        factors = np.where(kept, w.astype(np.float64)[np.where(kept, indices, 0)], 0.0)
    else:
        factors = kept.astype(np.float64)
    # not np.dot: OpenBLAS runs a dot of more than 10000 elements on its own threads, whose
    # wake-up on a loaded machine cost 1-30 ms per call here (a 65536-sample call measured
    # 0.6 ms at best, 32 ms median, with another process on the second core)
    return float(np.sum(s * factors))


# ---------------------------------------------------------------------------- the paths

def _hess_buffer(compute_hess: bool, hess_out, x: np.ndarray):
    """The array that receives the second derivatives (issue 15), or None."""
    if not compute_hess:
        return None
    return hess_out if hess_out is not None else _kernels.result_empty(x.shape, x.dtype)


def _result(loss, grad, hess):
    """LossResult, or LossGradHess where a hessian was computed (compute_hess, issue 15)."""
    return LossResult(loss, grad) if hess is None else LossGradHess(loss, grad, hess)


def softmax_cross_entropy(logits, target, *, weight, ignore_index, label_smoothing, reduction,
                          compute_grad, out, n_threads, sample_weight, z_loss, logit_softcap,
                          lse_out, compute_hess=False, hess_out=None):
    """fastloss.softmax_cross_entropy with the class-axis options or compute_hess (see its
    docstring)."""
    logits = class_axis_logits(logits)
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    compute_hess = check.hess_request(compute_hess, compute_grad, hess_out)   # issue 15
    threads = check.n_threads(n_threads)
    ignore_index = check.ignore_index(ignore_index)
    eps = check.real_scalar(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    zl = check.real_scalar(z_loss, "z_loss", low=0.0)
    cap = 0.0 if logit_softcap is None else check.real_scalar(logit_softcap, "logit_softcap",
                                                                low=0.0, low_open=True)
    dtype = logits.dtype
    n_samples, n_classes = logits.shape[0], logits.shape[1]
    indices, probabilities, sample_shape = class_axis_target(logits, target, ignore_index,
                                                             allow_probabilities=True)
    inner = math.prod(sample_shape[1:])
    weight_array = check.class_weight(weight, "weight", n_classes, dtype)
    sw, per_position = sample_weight_array(sample_weight, sample_shape, dtype)
    target_array = np.asarray(target)
    out = check.out_array(out, logits, {"target": target_array, "weight": weight,
                                        "sample_weight": sample_weight, "lse_out": lse_out})
    hess_out = check.out_array(hess_out, logits, {"target": target_array, "weight": weight,
                                                  "sample_weight": sample_weight,
                                                  "lse_out": lse_out, "out": out},
                               name="hess_out")
    lse_out = check.output_array(lse_out, sample_shape, dtype,
                                 {"logits": logits, "target": target_array, "weight": weight,
                                  "sample_weight": sample_weight}, "lse_out")
    if indices is not None:
        # the sample-weighted denominator only where "mean" divides by it (it costs a pass)
        denominator = index_denominator(indices, n_classes, ignore_index, weight_array,
                                        sw if reduction == "mean" else None, per_position,
                                        sample_shape)
    else:
        denominator = float(sw.sum(dtype=np.float64) * (inner if not per_position else 1)) \
            if sw is not None else float(n_samples * inner)
    weight_sum = float(weight_array.sum(dtype=np.float64)) if weight_array is not None \
        else float(n_classes)

    # -------- nothing has been written up to here; from here on the call cannot fail
    x = np.ascontiguousarray(logits)
    grad = (out if out is not None else _kernels.result_empty(x.shape, x.dtype)) if compute_grad else None
    hess = _hess_buffer(compute_hess, hess_out, x)
    loss_out = _kernels.result_empty(sample_shape, dtype) if reduction == "none" else None
    total = _kernels.class_axis(
        False, x, n_samples, n_classes, inner, indices, probabilities, weight_array, sw,
        per_position, ignore_index, eps, weight_sum, _grad_scale(reduction, denominator), zl,
        cap, 1.0, 0.0, grad, loss_out, lse_out, threads, hess)
    return _result(_reduce(total, denominator, reduction, loss_out), grad, hess)


def softmax_focal(logits, target, *, alpha, gamma, ignore_index, reduction, compute_grad, out,
                  n_threads, sample_weight, compute_hess=False, hess_out=None):
    """fastloss.softmax_focal with K-dim logits, sample weights or compute_hess (see its
    docstring)."""
    logits = class_axis_logits(logits)
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    compute_hess = check.hess_request(compute_hess, compute_grad, hess_out)   # issue 15
    threads = check.n_threads(n_threads)
    ignore_index = check.ignore_index(ignore_index)
    gamma = check.real_scalar(gamma, "gamma", low=0.0)
    dtype = logits.dtype
    n_samples, n_classes = logits.shape[0], logits.shape[1]
    indices, _, sample_shape = class_axis_target(logits, target, ignore_index,
                                                 allow_probabilities=False)
    inner = math.prod(sample_shape[1:])
    alpha_array, alpha_scalar = check.focal_alpha(alpha, n_classes, dtype)
    sw, per_position = sample_weight_array(sample_weight, sample_shape, dtype)
    out = check.out_array(out, logits, {"target": np.asarray(target), "alpha": alpha,
                                        "sample_weight": sample_weight})
    hess_out = check.out_array(hess_out, logits, {"target": np.asarray(target), "alpha": alpha,
                                                  "sample_weight": sample_weight, "out": out},
                               name="hess_out")
    denominator = index_denominator(indices, n_classes, ignore_index, None,
                                    sw if reduction == "mean" else None, per_position,
                                    sample_shape, class_weighted=False)

    # -------- nothing has been written up to here; from here on the call cannot fail
    x = np.ascontiguousarray(logits)
    grad = (out if out is not None else _kernels.result_empty(x.shape, x.dtype)) if compute_grad else None
    hess = _hess_buffer(compute_hess, hess_out, x)
    loss_out = _kernels.result_empty(sample_shape, dtype) if reduction == "none" else None
    total = _kernels.class_axis(
        True, x, n_samples, n_classes, inner, indices, None, alpha_array, sw, per_position,
        ignore_index, 0.0, 0.0, _grad_scale(reduction, denominator), 0.0, 0.0, alpha_scalar,
        gamma, grad, loss_out, None, threads, hess)
    return _result(_reduce(total, denominator, reduction, loss_out), grad, hess)


def multi_margin_args(input, target, p, margin, weight, reduction, compute_grad, out,
                      n_threads, compute_hess=False, hess_out=None):
    """The checks of multi_margin (shared with fastloss.reference)."""
    input, n_samples, n_classes = check.class_logits(input, "input")
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    compute_hess = check.hess_request(compute_hess, compute_grad, hess_out)
    threads = check.n_threads(n_threads)
    if isinstance(p, (bool, np.bool_)) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    if compute_hess and p == 1:
        raise ValueError("compute_hess=True needs p=2: with p=1 the loss is piecewise linear "
                         "in the input (its second derivative is 0 almost everywhere)")
    margin = check.real_scalar(margin, "margin")
    target_array = np.asarray(target)
    if target_array.dtype.kind in "iu" and target_array.shape == (n_samples, 1):
        raise ValueError(f"target of shape {target_array.shape}: class indices must be 1-D "
                         "(N,); pass target.ravel()")
    indices = check.class_indices(target_array, "target", n_samples)
    bad = (indices < 0) | (indices >= n_classes)
    if bad.any():
        position = int(np.argmax(bad))
        raise ValueError(f"target contains class index {int(indices[position])} at position "
                         f"{position}, outside [0, {n_classes})")
    weight_array = check.class_weight(weight, "weight", n_classes, input.dtype)
    out = check.out_array(out, input, {"target": target_array, "weight": weight})
    hess_out = check.out_array(hess_out, input, {"target": target_array, "weight": weight,
                                                 "out": out}, name="hess_out")
    return (input, indices, int(p), margin, weight_array, reduction, compute_grad, out, threads,
            compute_hess, hess_out)


def multi_margin(input, target, *, p=1, margin=1.0, weight=None, reduction="mean",
                 compute_grad=True, out=None, n_threads=None, compute_hess=False,
                 hess_out=None):
    r"""Multi-class margin loss and its gradient with respect to the input, one pass per row
    (and, for p = 2, the diagonal of its Hessian in the same pass).

    Semantics of ``torch.nn.functional.multi_margin_loss``.

    Parameters
    ----------
    input : ndarray (N, C), float32 or float64
    target : ndarray (N,) of integer class indices in [0, C)
    p : 1 or 2
    margin : float
    weight : array (C,), optional
        Per-class factor w_y of a sample's loss (all 1 when None).
    reduction : "mean" | "sum" | "none" ("mean" divides by N, as PyTorch, whatever weight)
    compute_grad, out, n_threads : see the README ("Arguments every loss takes").
    compute_hess : bool, default False
        True (p = 2 only; with p = 1, or with compute_grad=False: ValueError): return
        LossGradHess(loss, grad, hess), hess the diagonal of the Hessian of the returned loss
        with respect to the input, scaled like the gradient (1/N for "mean", times w_y).
    hess_out : ndarray, optional
        Receives hess; the rules of out (it may be the input itself when out is not).

    Returns
    -------
    LossResult(loss, grad) (LossGradHess(loss, grad, hess) with compute_hess=True)

    Maths
    -----
    With v_j = margin - x_y + x_j and A = {j != y : v_j > 0} (the active hinge terms),

        loss = (w_y / C) sum_{j in A} v_j^p
        dloss/dx_j = (w_y / C) p v_j^(p - 1) [j in A]   (j != y),
        dloss/dx_y = -sum_{j != y} dloss/dx_j

    w_y multiplies the powered hinge (PyTorch's kernels; its documentation writes it inside
    the power), and only the active terms carry it (a nan or infinite w_y of a row without
    an active term gives a zero loss and gradient, as torch's loops). The gradient at
    v_j = 0 is 0. No transcendental functions: x_y is read, then one vector pass over the
    row writes the gradient and adds the loss.

    Second derivatives (p = 2). v_j depends on x_j with slope 1 and on x_y with slope -1, so
    d/dx_j of (w_y / C) 2 v_j [j in A] is (w_y / C) 2 [j in A], and d/dx_y of
    dloss/dx_y = -(w_y / C) sum_{j in A} 2 v_j is (w_y / C) 2 |A|:

        d2loss/dx_j^2 = 2 w_y / C [j in A]   (j != y),
        d2loss/dx_y^2 = 2 w_y |A| / C

    (0 at v_j = 0, where the gradient's slope jumps: as torch's relu). Only the diagonal is
    returned; the Hessian also has the entries d2loss/dx_j dx_y = -2 w_y / C [j in A]. With
    p = 1 the loss is piecewise linear and its second derivative is 0 almost everywhere: not
    offered (ValueError).
    """
    (input, indices, p, margin, weight_array, reduction, compute_grad, out, threads,
     compute_hess, hess_out) = multi_margin_args(input, target, p, margin, weight, reduction,
                                                 compute_grad, out, n_threads, compute_hess,
                                                 hess_out)
    n_samples = input.shape[0]
    x = np.ascontiguousarray(input)
    empty = _kernels.result_empty
    grad = (out if out is not None else empty(x.shape, x.dtype)) if compute_grad else None
    hess = (hess_out if hess_out is not None else empty(x.shape, x.dtype)) if compute_hess \
        else None
    loss_out = empty(n_samples, x.dtype) if reduction == "none" else None
    total = _kernels.multi_margin(x, indices, weight_array, p, margin,
                                  _grad_scale(reduction, float(n_samples)), grad, hess,
                                  loss_out, threads)
    return _result(_reduce(total, float(n_samples), reduction, loss_out), grad, hess)


def distill_kl_args(logits, target_logits, temperature, reduction, compute_grad, out,
                    n_threads, compute_hess=False, hess_out=None):
    """The checks of kl_divergence_with_logits (shared with fastloss.reference)."""
    logits, _, _ = check.class_logits(logits)
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    compute_hess = check.hess_request(compute_hess, compute_grad, hess_out)
    threads = check.n_threads(n_threads)
    temperature = check.real_scalar(temperature, "temperature", low=0.0, low_open=True)
    if math.isinf(temperature):
        raise ValueError(f"temperature must be finite, got {temperature!r}")
    teacher = check.float_target(target_logits, "target_logits", logits.dtype, logits.shape)
    out = check.out_array(out, logits, {"target_logits": target_logits})
    hess_out = check.out_array(hess_out, logits, {"target_logits": target_logits, "out": out},
                               name="hess_out")
    return (logits, teacher, temperature, reduction, compute_grad, out, threads, compute_hess,
            hess_out)


def kl_divergence_with_logits(logits, target_logits, *, temperature=1.0, reduction="mean",
                              compute_grad=True, out=None, n_threads=None, compute_hess=False,
                              hess_out=None):
    r"""Distillation KL divergence between temperature-scaled softmaxes, and its gradient
    with respect to the student's logits (and the diagonal of its Hessian); both rows read
    once, the gradient (and the hessian) written once.

    Equal to ``T**2 * F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(target_logits / T,
    1), log_target=True, reduction="batchmean")`` for "mean".

    Parameters
    ----------
    logits : ndarray (N, C), float32 or float64 (the student; differentiated)
    target_logits : array (N, C) (the teacher; any real dtype, converted to logits' dtype)
    temperature : float > 0
    reduction : "mean" (over rows, torch's "batchmean") | "sum" | "none" (per row)
    compute_grad, out, n_threads : see the README ("Arguments every loss takes").
    compute_hess : bool, default False
        True (needs compute_grad=True: ValueError otherwise): return
        LossGradHess(loss, grad, hess), hess the diagonal of the Hessian of the returned loss
        with respect to logits, scaled like the gradient (1/N for "mean").
    hess_out : ndarray, optional
        Receives hess; the rules of out (it may be logits itself when out is not).

    Returns
    -------
    LossResult(loss, grad) (LossGradHess(loss, grad, hess) with compute_hess=True)

    Maths
    -----
    With u = x / T, v = t / T, q = softmax(u), p = softmax(v):

        loss = T^2 KL(p || q) = T^2 sum_c p_c (log p_c - log q_c),
        dloss/dx_j = T (q_j - p_j)

    Second derivatives: p does not depend on x, dq_j/du_j = q_j (1 - q_j) and du_j/dx_j = 1/T,
    so

        d2loss/dx_j^2 = T q_j (1 - q_j) / T = q_j (1 - q_j),

    whatever the temperature (the full Hessian is diag(q) - q q^T; only its diagonal is
    returned). Stable form: for every class but the row's largest q_j < 1/2 and 1 - q_j is
    well conditioned; for the largest (e = exp(0) = 1, and E_o the sum of the other exps of
    the shifted logits) 1 - q = E_o / (1 + E_o), so its hessian is E_o / (1 + E_o)^2, exact
    however close q is to 1. A teacher row holding nan makes the row's hessian nan (its
    loss and gradient are nan; torch's double backward gives q_j (1 - q_j) sum_c p_c).

    Stable form: with du = (x - max x) / T, dv = (t - max t) / T (u - max u, exactly 0 for
    the largest), E = sum exp(du), F = sum exp(dv),
    log p_c - log q_c = (dv_c - du_c) - log F + log E, so

        loss = T^2 [ sum_c exp(dv_c) (dv_c - du_c) / F - log F + log E ]

    from differences of shifted logits only; a teacher class whose exp underflows adds 0.
    float32 rows whose largest |x| / T + |t| / T exceeds FLT_MAX / 1024 take the exp pass in
    float64 (shifted logits and their differences would overflow float32 there), so that a
    loss below FLT_MAX never overflows on the way.
    """
    (logits, teacher, temperature, reduction, compute_grad, out, threads, compute_hess,
     hess_out) = distill_kl_args(logits, target_logits, temperature, reduction, compute_grad,
                                 out, n_threads, compute_hess, hess_out)
    n_samples = logits.shape[0]
    x = np.ascontiguousarray(logits)
    empty = _kernels.result_empty
    grad = (out if out is not None else empty(x.shape, x.dtype)) if compute_grad else None
    hess = (hess_out if hess_out is not None else empty(x.shape, x.dtype)) if compute_hess \
        else None
    loss_out = empty(n_samples, x.dtype) if reduction == "none" else None
    total = _kernels.distill_kl(x, teacher, temperature,
                                _grad_scale(reduction, float(n_samples)), grad, hess, loss_out,
                                threads)
    return _result(_reduce(total, float(n_samples), reduction, loss_out), grad, hess)
