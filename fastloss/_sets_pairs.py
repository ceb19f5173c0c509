"""The set and pair losses: Dice, Jaccard, Tversky (MONAI's semantics) and the triplet margin,
contrastive, cosine embedding and margin ranking losses (PyTorch's).

Each function validates everything before its kernel runs (fastloss/_src/fl_overlap.inc,
fl_pairs.inc: the maths and the passes are described there and in the docstrings below),
then returns ``LossResult(loss, grad)``. The pair losses differentiate several inputs: their
``grad`` is a tuple in argument order and their ``out`` is None or a tuple of the same length
whose entries are arrays or None (that gradient is then allocated).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from . import _kernels
from . import _validation as check
from ._api import LossResult

__all__ = [
    "dice",
    "jaccard",
    "tversky",
    "triplet_margin",
    "contrastive",
    "cosine_embedding",
    "margin_ranking",
]


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


# ===================================================================== overlap losses

def _overlap_setup(input, target, activation, smooth, batch, include_background, weight,
                   reduction, compute_grad, out, n_threads):
    """Every check of the overlap losses, before any kernel runs. Returns a dict of what the
    kernel call needs."""
    input = check.float_input(input, "input")
    if input.ndim < 2:
        raise ValueError("input must be (N, C, spatial...) with at least 2 dimensions, got "
                         f"{input.ndim}-D shape {input.shape}")
    n_samples, n_classes = input.shape[:2]
    if n_classes < 1:
        raise ValueError(f"input must have at least one class (C >= 1), got shape {input.shape}")
    if not isinstance(activation, str) or activation not in _kernels.ACTIVATIONS:
        raise ValueError("activation must be one of 'sigmoid', 'softmax', 'none', got "
                         f"{activation!r}")
    smooth = check.real_scalar(smooth, "smooth", low=0.0)
    batch = _flag(batch, "batch")
    include_background = _flag(include_background, "include_background")
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    threads = check.n_threads(n_threads)
    dtype = input.dtype

    target_array = np.asarray(target)
    sample_shape = (n_samples,) + input.shape[2:]
    if target_array.shape == input.shape:
        target_values = check.float_target(target_array, "target", dtype, input.shape)
        target_index = None
    elif target_array.shape == sample_shape:
        if target_array.dtype.kind not in "iu":
            raise TypeError("a target of shape (N, spatial...) holds class indices and must have "
                            f"an integer dtype, got dtype {target_array.dtype}")
        flat = target_array.reshape(-1)
        bad = (flat < 0) | (flat >= n_classes)
        if bad.any():
            position = int(np.argmax(bad))
            where = np.unravel_index(position, target_array.shape)
            raise ValueError(f"target contains class index {int(flat[position])} at position "
                             f"{tuple(int(k) for k in where)}, outside [0, {n_classes})")
        target_values = None
        target_index = np.ascontiguousarray(target_array, dtype=np.int64)
    else:
        raise ValueError(f"target must have the input's shape {input.shape} (one-hot or soft) "
                         f"or the shape {sample_shape} (class indices), got shape "
                         f"{target_array.shape}")

    # MONAI: one channel keeps its background and is not put through a softmax (both warn)
    first_class = 0
    if not include_background:
        if n_classes == 1:
            warnings.warn("single channel prediction, include_background=False ignored",
                          UserWarning, stacklevel=3)
        else:
            first_class = 1
    if activation == "softmax" and n_classes == 1:
        warnings.warn("single channel prediction, activation='softmax' ignored (the input is "
                      "used as probabilities, as MONAI does)", UserWarning, stacklevel=3)
        activation = "none"
    kept = n_classes - first_class
    class_weight = np.ones(n_classes, dtype=np.float64)
    if weight is not None:
        values = np.asarray(weight)
        if values.dtype.kind not in "fiu" or values.dtype == np.bool_:
            raise TypeError(f"weight must hold real numbers, got dtype {values.dtype}")
        if values.ndim == 0:
            values = np.full(kept, float(values))
        elif values.shape != (kept,):
            raise ValueError(f"weight must be a number or have shape ({kept},), one weight per "
                             "class kept (without the background when include_background="
                             f"False), got shape {values.shape}")
        values = values.astype(np.float64)
        if np.isnan(values).any() or (values < 0).any():
            raise ValueError(f"weight must be >= 0, got {values.tolist()}")
        if kept != 1:   # MONAI applies no weight to a single class
            class_weight[first_class:] = values
    out = check.out_array(out, input, {"target": target_array, "weight": weight})
    return dict(input=input, target=target_values, target_index=target_index,
                activation=_kernels.ACTIVATIONS[activation], smooth=smooth, batch=batch,
                first_class=first_class, weight=class_weight, reduction=reduction,
                compute_grad=compute_grad, out=out, threads=threads)


def _overlap_run(setup, kind, squared, alpha, beta) -> LossResult:
    # -------- nothing has been written up to here; from here on the call cannot fail
    input = setup["input"]
    n_samples, n_classes = input.shape[:2]
    spatial = math.prod(input.shape[2:])
    x = input if input.flags.c_contiguous else np.ascontiguousarray(input)
    grad = None
    if setup["compute_grad"]:
        grad = setup["out"] if setup["out"] is not None else _kernels.result_empty(x.shape, x.dtype)
    first_class, batch, reduction = setup["first_class"], setup["batch"], setup["reduction"]
    n_losses = (n_classes - first_class) * (1 if batch else n_samples)
    grad_scale = 1.0
    if reduction == "mean":
        grad_scale = 1.0 / n_losses if n_losses else math.nan
    target = setup["target"]
    index = setup["target_index"]
    total, items = _kernels.overlap(
        x.reshape(n_samples, n_classes, spatial),
        None if target is None else target.reshape(n_samples, n_classes, spatial),
        None if index is None else index.reshape(n_samples, spatial),
        setup["weight"], setup["activation"], kind, squared, batch, first_class,
        setup["smooth"], alpha, beta, grad_scale,
        None if grad is None else grad.reshape(n_samples, n_classes, spatial),
        setup["threads"])
    if reduction == "none":
        loss = (items[first_class:] if batch else items[:, first_class:]).astype(input.dtype)
    elif reduction == "sum":
        loss = float(total)
    else:
        loss = total / n_losses if n_losses else math.nan
    return LossResult(loss, grad)


_OVERLAP_DOC = r"""Parameters
    ----------
    input : ndarray (N, C, spatial...), float32 or float64
        Logits (activation "sigmoid" or "softmax") or probabilities (activation "none").
    target : array of the input's shape (one-hot or soft labels; any real dtype, converted to
        the input's), or an integer array (N, spatial...) of class indices in [0, C).
    activation : "sigmoid" | "softmax" | "none"
        The prediction p: sigmoid(input), softmax over the class axis C, or the input itself.
        As MONAI, a single channel (C = 1) is not put through a softmax (a UserWarning says so).
    smooth : float >= 0
        s, added to the numerator and the denominator (MONAI's smooth_nr = smooth_dr).
    batch : bool
        False: one loss per (sample, class), the sums taken over the spatial axes. True: one
        loss per class, the sums taken over the batch and the spatial axes.
    include_background : bool
        False drops channel 0 from the losses (its gradient is 0 through a sigmoid; through a
        softmax it still shares the other classes' gradient). Ignored with one channel, as
        MONAI (a UserWarning says so).
    reduction : "mean" | "sum" | "none"
        Over the (N, C') losses ((C',) with batch=True), C' = C without the dropped background.
        "none" returns them as an array of the input's dtype; "mean" averages them.
    compute_grad, out, n_threads : see the README ("Arguments every loss takes"); the
        gradient is with respect to ``input`` (through the activation).
"""


def dice(input, target, *, activation="sigmoid", smooth=1e-5, squared=False, batch=False,
         include_background=True, weight=None, reduction="mean", compute_grad=True, out=None,
         n_threads=None) -> LossResult:
    r"""Dice loss and its gradient with respect to the input (logits), in one call.

    Semantics of MONAI's ``DiceLoss(sigmoid=..., softmax=..., squared_pred=squared,
    smooth_nr=smooth, smooth_dr=smooth, batch=batch, include_background=...,
    weight=weight)``.

    {overlap_parameters}
    squared : bool
        q = 2: squared predictions and targets in the denominator (MONAI's squared_pred).
    weight : None, a number, or array (C',) of numbers >= 0
        Multiplies each class's loss (MONAI's weight; as MONAI, not applied when only one
        class is left).

    Maths
    -----
    Per (sample, class) slice, with I = sum p t, P = sum p^q, T = sum t^q (q = 1 or 2),

        f = 1 - (2 I + s) / (P + T + s),
        df/dp_i = -2 t_i / den + q p_i^(q - 1) (2 I + s) / den^2,    den = P + T + s,

    then through the activation: sigmoid'(x) = e / (1 + e)^2 with e = exp(-|x|) (stable where
    sigmoid rounds to 1), softmax: dx_c = p_c (dp_c - sum_k p_k dp_k). Two empty masks give
    f = 0 (1 - s / s); with smooth = 0 they give nan, as MONAI. The sums add chunks of 512
    elements (summed in the input's precision) in double. A (sample, class) slice (a sample's C slices with softmax) that fits in L2 is read
    from memory once: a sums pass, then the gradient pass from cache; batch=True reads the
    input and the target twice (the class sums span every sample).
    """
    setup = _overlap_setup(input, target, activation, smooth, batch, include_background, weight,
                           reduction, compute_grad, out, n_threads)
    return _overlap_run(setup, _kernels.OVERLAP_DICE, _flag(squared, "squared"), 0.0, 0.0)


def jaccard(input, target, *, activation="sigmoid", smooth=1e-5, squared=False, batch=False,
            include_background=True, weight=None, reduction="mean", compute_grad=True, out=None,
            n_threads=None) -> LossResult:
    r"""Jaccard (soft IoU) loss and its gradient with respect to the input (logits).

    Semantics of MONAI's ``DiceLoss(jaccard=True, ...)``; the arguments are those of
    :func:`dice`.

    {overlap_parameters}
    squared : bool
        q = 2: squared predictions and targets in the denominator.
    weight : None, a number, or array (C',) of numbers >= 0 (as :func:`dice`)

    Maths
    -----
    With I, P, T as in :func:`dice` (MONAI's tp = I, fp = P - I, fn = T - I),

        f = 1 - (2 I + s) / (2 (P + T - I) + s),
        df/dp_i = -2 t_i / den + (2 I + s) (2 q p_i^(q - 1) - 2 t_i) / den^2,

    den = 2 (P + T - I) + s, then through the activation as in :func:`dice`.
    """
    setup = _overlap_setup(input, target, activation, smooth, batch, include_background, weight,
                           reduction, compute_grad, out, n_threads)
    return _overlap_run(setup, _kernels.OVERLAP_JACCARD, _flag(squared, "squared"), 0.0, 0.0)


def tversky(input, target, *, alpha=0.5, beta=0.5, activation="sigmoid", smooth=1e-5,
            batch=False, include_background=True, reduction="mean", compute_grad=True,
            out=None, n_threads=None) -> LossResult:
    r"""Tversky loss and its gradient with respect to the input (logits).

    Semantics of MONAI's ``TverskyLoss(alpha=alpha, beta=beta, sigmoid=..., softmax=...,
    smooth_nr=smooth, smooth_dr=smooth, batch=batch, include_background=...)``.

    {overlap_parameters}
    alpha, beta : floats >= 0
        The weights of the false positives and the false negatives (alpha = beta = 0.5 is the
        Dice loss).

    Maths
    -----
    Per slice, with I = sum p t, P = sum p, T = sum t (fp = P - I, fn = T - I),

        f = 1 - (I + s) / (I + alpha (P - I) + beta (T - I) + s),
        df/dp_i = -t_i / den + (I + s) (alpha + (1 - alpha - beta) t_i) / den^2,

    then through the activation as in :func:`dice`.
    """
    alpha = check.real_scalar(alpha, "alpha", low=0.0)
    beta = check.real_scalar(beta, "beta", low=0.0)
    setup = _overlap_setup(input, target, activation, smooth, batch, include_background, None,
                           reduction, compute_grad, out, n_threads)
    return _overlap_run(setup, _kernels.OVERLAP_TVERSKY, False, alpha, beta)


for _function in (dice, jaccard, tversky):
    _function.__doc__ = _function.__doc__.replace("{overlap_parameters}", _OVERLAP_DOC.strip())


# ===================================================================== pair losses

def _pair_inputs(inputs: dict, rows: bool):
    """The differentiated inputs: float32/float64 ndarrays of one dtype and one shape, (N, D)
    when `rows`. Returns them as a list."""
    arrays = [check.float_input(array, name) for name, array in inputs.items()]
    names = list(inputs)
    first = arrays[0]
    for name, array in zip(names[1:], arrays[1:]):
        if array.dtype != first.dtype:
            raise TypeError(f"{name} must have the dtype of {names[0]} ({first.dtype}), got "
                            f"dtype {array.dtype}")
    if rows and first.ndim != 2:
        raise ValueError(f"{names[0]} must be 2-D (N, D), got {first.ndim}-D shape {first.shape}")
    for name, array in zip(names[1:], arrays[1:]):
        if array.shape != first.shape:
            raise ValueError(f"{name} must have the shape of {names[0]} {first.shape}, got shape "
                             f"{array.shape}")
    return arrays


def _pair_outs(out, arrays, names, others: dict):
    """`out`: None or a tuple (or list) of len(arrays) entries, each None or a valid gradient
    buffer for its input (it may be that input itself) that overlaps no other input, no
    other entry and none of `others`."""
    if out is None:
        return [None] * len(arrays)
    if not isinstance(out, (tuple, list)) or len(out) != len(arrays):
        raise ValueError(f"out must be None or a tuple of {len(arrays)} entries (arrays or None) "
                         f"for the gradients of {', '.join(names)}, got "
                         f"{check._describe(out) if not isinstance(out, (tuple, list)) else f'{len(out)} entries'}")
    checked = []
    for k, (buffer, array) in enumerate(zip(out, arrays)):
        if buffer is None:
            checked.append(None)
            continue
        avoid = dict(others)
        avoid.update({names[j]: arrays[j] for j in range(len(arrays)) if j != k})
        avoid.update({f"out[{j}]": out[j] for j in range(len(arrays)) if j != k})
        try:
            checked.append(check.out_array(buffer, array, avoid))
        except ValueError as error:
            raise ValueError(f"out[{k}] (the gradient of {names[k]}): {error}") from None
    return checked


def _pair_run(kind, arrays, names, target, out, reduction, compute_grad, threads, *, norm=0,
              swap=False, p=2.0, eps=0.0, margin=0.0) -> LossResult:
    # -------- nothing has been written up to here; from here on the call cannot fail
    xs = [a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in arrays]
    grads = None
    if compute_grad:
        grads = tuple(o if o is not None else _kernels.result_empty(x.shape, x.dtype) for o, x in zip(out, xs))
    first = xs[0]
    per_sample_shape = first.shape if kind == _kernels.PAIR_RANKING else first.shape[:1]
    count = math.prod(per_sample_shape)
    loss_out = _kernels.result_empty(per_sample_shape, first.dtype) if reduction == "none" else None
    grad_scale = 1.0
    if reduction == "mean":
        grad_scale = 1.0 / count if count else math.nan
    padded = list(xs) + [None] * (3 - len(xs))
    padded_grads = list(grads) + [None] * (3 - len(grads)) if grads else [None] * 3
    total = _kernels.pairs(kind, padded[0], padded[1], padded[2], target, padded_grads[0],
                           padded_grads[1], padded_grads[2], loss_out, norm, swap, p, eps,
                           margin, grad_scale, threads)
    if reduction == "none":
        loss = loss_out
    elif reduction == "sum":
        loss = float(total)
    else:
        loss = total / count if count else math.nan
    return LossResult(loss, grads)


def _common(reduction, compute_grad, out, n_threads):
    return check.reduction(reduction), check.grad_request(compute_grad, out), check.n_threads(n_threads)


def triplet_margin(anchor, positive, negative, *, margin=1.0, p=2.0, eps=1e-6, swap=False,
                   reduction="mean", compute_grad=True, out=None, n_threads=None) -> LossResult:
    r"""Triplet margin loss and its gradients with respect to the anchor, the positive and the
    negative. Semantics of ``torch.nn.functional.triplet_margin_loss``.

    Parameters
    ----------
    anchor, positive, negative : ndarrays (N, D) of one dtype, float32 or float64
    margin : float
    p : float > 0, or inf
        The norm of the distances.
    eps : float > 0
        Added to every difference, as torch's pairwise_distance: d(x, y) = ||x - y + eps||_p.
    swap : bool
        Use min(d(a, n), d(p, n)) as the negative distance (Balntas et al. 2016).
    reduction : "mean" | "sum" | "none" ("none": (N,); "mean" divides by N)
    compute_grad, n_threads : see the README.
    out : None or a 3-tuple of arrays or None
        Buffers for the three gradients (each may be its own input, for in place).

    Maths
    -----
        loss_i = max(0, margin + d(a_i, p_i) - d_neg,i),   u = x - y + eps,
        dd/du_k = u_k / ||u||_2 (p = 2), sign(u_k) (p = 1),
                  sign(u_k) (|u_k| / ||u||)^(p - 1) (other p), split among the maximal
                  entries (p = inf); 0 where the norm is 0, as torch.
    da = G_ap - w_an G_an, dp = -G_ap - w_pn G_pn, dn = w_an G_an + w_pn G_pn where the hinge
    is >= 0 (torch's clamp_min passes the gradient at 0); w_an, w_pn: which distance the swap
    chose (1/2 each at a tie, as torch's minimum). The norms are summed in double; one pass
    per row reads the three rows once and writes the three gradient rows once.
    """
    names = ["anchor", "positive", "negative"]
    reduction, compute_grad, threads = _common(reduction, compute_grad, out, n_threads)
    margin = check.real_scalar(margin, "margin")
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"p must be a real number, got {check._describe(p)}")
    p = float(p)
    if not p > 0:
        raise ValueError(f"p must be > 0 (or inf), got {p!r}")
    eps = check.real_scalar(eps, "eps", low=0.0, low_open=True)
    swap = _flag(swap, "swap")
    arrays = _pair_inputs(dict(zip(names, (anchor, positive, negative))), rows=True)
    outs = _pair_outs(out, arrays, names, {})
    norm = (_kernels.NORM_2 if p == 2.0 else _kernels.NORM_1 if p == 1.0
            else _kernels.NORM_INF if math.isinf(p) else _kernels.NORM_GENERAL)
    return _pair_run(_kernels.PAIR_TRIPLET, arrays, names, None, outs, reduction, compute_grad,
                     threads, norm=norm, swap=swap, p=p, eps=eps, margin=margin)


def _pair_target(target, array, shape):
    return check.float_target(target, "target", array.dtype, shape)


def contrastive(input1, input2, target, *, margin=1.0, reduction="mean", compute_grad=True,
                out=None, n_threads=None) -> LossResult:
    r"""Contrastive loss (Hadsell, Chopra and LeCun, 2006) and its gradients with respect to
    both inputs.

    Parameters
    ----------
    input1, input2 : ndarrays (N, D) of one dtype, float32 or float64
    target : array (N,) in [0, 1] (1: similar pair), any real or integer dtype
    margin : float
    reduction : "mean" | "sum" | "none" ("none": (N,); "mean" divides by N)
    out : None or a 2-tuple of arrays or None

    Maths
    -----
    d_i = ||x1_i - x2_i + 1e-6||_2 (torch's pairwise_distance), h_i = max(0, margin - d_i):

        loss_i = t_i d_i^2 + (1 - t_i) h_i^2
        dloss_i/dx1_i = -dloss_i/dx2_i = (2 t_i - 2 (1 - t_i) h_i / d_i) u_i   (0 at d_i = 0)
    """
    names = ["input1", "input2"]
    reduction, compute_grad, threads = _common(reduction, compute_grad, out, n_threads)
    margin = check.real_scalar(margin, "margin")
    arrays = _pair_inputs(dict(zip(names, (input1, input2))), rows=True)
    t = _pair_target(target, arrays[0], arrays[0].shape[:1])
    outs = _pair_outs(out, arrays, names, {"target": target})
    return _pair_run(_kernels.PAIR_CONTRASTIVE, arrays, names, t, outs, reduction, compute_grad,
                     threads, eps=1e-6, margin=margin)


def cosine_embedding(input1, input2, target, *, margin=0.0, reduction="mean", compute_grad=True,
                     out=None, n_threads=None) -> LossResult:
    r"""Cosine embedding loss and its gradients with respect to both inputs. Semantics of
    ``torch.nn.functional.cosine_embedding_loss``.

    Parameters
    ----------
    input1, input2 : ndarrays (N, D) of one dtype, float32 or float64
    target : array (N,) of +1 / -1 (any real or integer dtype); a row whose target is
        neither contributes 0 with a zero gradient, as torch.
    margin : float
    reduction : "mean" | "sum" | "none" ("none": (N,); "mean" divides by N)
    out : None or a 2-tuple of arrays or None

    Maths
    -----
    With m1 = |x1|^2 + 1e-12, m2 = |x2|^2 + 1e-12 (torch's EPSILON: an all-zero row has
    cosine 0) and c = x1.x2 / sqrt(m1 m2), summed in double:

        loss = 1 - c (y = 1),   max(0, c - margin) (y = -1)
        dc/dx1 = x2 / sqrt(m1 m2) - c x1 / m1,   dc/dx2 = x1 / sqrt(m1 m2) - c x2 / m2
    """
    names = ["input1", "input2"]
    reduction, compute_grad, threads = _common(reduction, compute_grad, out, n_threads)
    margin = check.real_scalar(margin, "margin")
    arrays = _pair_inputs(dict(zip(names, (input1, input2))), rows=True)
    t = _pair_target(target, arrays[0], arrays[0].shape[:1])
    outs = _pair_outs(out, arrays, names, {"target": target})
    return _pair_run(_kernels.PAIR_COSINE, arrays, names, t, outs, reduction, compute_grad,
                     threads, margin=margin)


def margin_ranking(input1, input2, target, *, margin=0.0, reduction="mean", compute_grad=True,
                   out=None, n_threads=None) -> LossResult:
    r"""Margin ranking loss and its gradients with respect to both inputs. Semantics of
    ``torch.nn.functional.margin_ranking_loss``.

    Parameters
    ----------
    input1, input2 : ndarrays of one shape and dtype, float32 or float64 (usually (N,))
    target : array of the same shape, +1 / -1 (any real or integer dtype)
    margin : float
    reduction : "mean" | "sum" | "none" ("none": the input's shape; "mean" divides by the
        number of elements)
    out : None or a 2-tuple of arrays or None

    Maths
    -----
        loss = max(0, -y (x1 - x2) + margin),   dloss/dx1 = -y = -dloss/dx2
    where the hinge is >= 0 (torch's clamp_min passes the gradient at 0), else 0.
    """
    names = ["input1", "input2"]
    reduction, compute_grad, threads = _common(reduction, compute_grad, out, n_threads)
    margin = check.real_scalar(margin, "margin")
    arrays = _pair_inputs(dict(zip(names, (input1, input2))), rows=False)
    t = _pair_target(target, arrays[0], arrays[0].shape)
    outs = _pair_outs(out, arrays, names, {"target": target})
    return _pair_run(_kernels.PAIR_RANKING, arrays, names, t, outs, reduction, compute_grad,
                     threads, margin=margin)
