"""linear_cross_entropy: the softmax cross-entropy of a linear layer's output (a language
model's head) without ever holding the (N, V) logits.

The rows are processed in chunks. Per chunk of n rows, one reused (n, V) buffer receives the
logits ``H_c W^T + b``; fastloss.softmax_cross_entropy turns them into their gradient in place
(``out=`` the buffer); three BLAS GEMMs and a column sum then give ``dH_c``, add into ``dW``
and into ``db``. Memory beyond the inputs and the gradients: the chunk buffer (the CE kernel
applies z_loss and logit_softcap in the same in-place pass).

BLAS: SciPy's wrappers of the BLAS ``?gemm`` (scipy.linalg.blas, the library SciPy ships),
because ``dW += dlogits^T H_c`` needs ``beta = 1``, which ``numpy.matmul`` cannot do: through
NumPy it needs a (V, D) temporary (the weight's size, 1/8 of the logits at the benchmark
shapes) and an extra pass over it per chunk (measured 2.2x slower for that GEMM). The GEMMs
are written on the transposed, Fortran-ordered views of the C-ordered arrays, so nothing is
copied.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import numpy as np

from . import _validation as check
from ._api import LossResult, softmax_cross_entropy

# ------------------------------------------------------------------------- chunk size
# The chunk buffer is streamed through memory, not held in cache, at the vocabularies this is
# for (one float32 row of a 32k vocabulary is 128 KiB, a 2 MiB L2 holds 16 rows); its passes
# (GEMM write, CE in place, two GEMM reads) cost ~16 bytes per 6 D flops, negligible for
# D >= 64. What the row count decides is the GEMMs' efficiency on the weight: every chunk
# streams the (V, D) weight twice and dW once (read and write), ~16 V D bytes in float32 for
# 6 n V D flops. Measured on the 2-core dev VM (1 BLAS thread, load average ~10, so +-30 %):
# at (4096, 512, 32768) the chunked GEMMs ran at 1.1-1.4x the full GEMMs with 128-256 rows;
# at (2048, 1024, 131072) at 1.6-1.9x with 64-256 rows. With 2 BLAS threads on that loaded
# box small chunks were far worse: 4.5x the full GEMMs at 192 rows, 1.3x at 512, 0.7-0.8x at
# 1024. It is the dH GEMM (K = V, a thin output): 108 ms on one thread, 1628 ms on two for
# one 192-row chunk (OpenBLAS's threads wait for each other, per K panel we believe, and a
# descheduled partner costs a time slice). The byte budget bounds the buffer to a small
# fraction of the (N, V) logits: peak RSS above inputs and gradients 33-40 MiB (1/16-1/13,
# the 24 MiB buffer plus OpenBLAS's packing buffers) at (4096, 512, 32768), 32 MiB (1/32) at
# (2048, 1024, 131072) float32. Pass a larger chunk_size where memory allows.
CHUNK_BUFFER_BYTES = 24 * 2**20
MIN_CHUNK_ROWS = 64
CHUNK_ROW_MULTIPLE = 16


def default_chunk_size(n_samples: int, n_classes: int, itemsize: int) -> int:
    """Rows per chunk when ``chunk_size=None``: ``CHUNK_BUFFER_BYTES // (V * itemsize)`` rounded
    down to a multiple of 16, at least 64, at most N (at least 1). Depends on the sizes and the
    dtype only, never on the thread count."""
    rows = CHUNK_BUFFER_BYTES // max(1, n_classes * itemsize)
    rows = max(MIN_CHUNK_ROWS, rows // CHUNK_ROW_MULTIPLE * CHUNK_ROW_MULTIPLE)
    return max(1, min(rows, n_samples))


# ------------------------------------------------------------------------- BLAS and threads

def _gemm_for(dtype: np.dtype):
    try:
        from scipy.linalg import blas
    except ImportError as error:  # pragma: no cover - scipy is in the linear extra
        raise ImportError("fastloss.linear_cross_entropy needs SciPy for its BLAS GEMMs "
                          "(pip install 'fastloss[linear]')") from error
    return blas.sgemm if dtype == np.float32 else blas.dgemm


def _gemm_into(gemm, alpha: float, a: np.ndarray, b: np.ndarray, c: np.ndarray, **options) -> None:
    """c = alpha op(a) op(b) + beta c on Fortran-ordered views, written into c itself."""
    result = gemm(alpha, a, b, c=c, overwrite_c=1, **options)
    if result.__array_interface__["data"][0] != c.__array_interface__["data"][0]:
        c[...] = result  # f2py copied (it does not for the aligned F-ordered views we pass)


_THREADPOOL_CONTROLLER = None


def _threadpool_controller():
    """threadpoolctl's view of the loaded libraries, made once (after SciPy's BLAS is loaded)."""
    global _THREADPOOL_CONTROLLER
    if _THREADPOOL_CONTROLLER is None:
        from threadpoolctl import ThreadpoolController
        _THREADPOOL_CONTROLLER = ThreadpoolController()
    return _THREADPOOL_CONTROLLER


def _blas_threads(n_threads: Optional[int]):
    """Within the call, every BLAS library loaded (NumPy's and SciPy's OpenBLAS) runs on
    n_threads threads. The GEMMs and the OpenMP CE kernel run one after the other, never at
    once, so with the same count for both the cores are never oversubscribed. None leaves the
    BLAS settings alone (their defaults, OPENBLAS_NUM_THREADS, threadpoolctl limits)."""
    if n_threads is None:
        return contextlib.nullcontext()
    return _threadpool_controller().limit(limits=n_threads, user_api="blas")


# ------------------------------------------------------------------------- the CE step

def _ce_on_chunk(logits, target, ce_options, z_loss, softcap, reduction, compute_grad,
                 n_threads):
    """Loss of one chunk ("sum": a float, "none": per-sample losses) and, with compute_grad,
    the gradient of the chunk's summed loss written over `logits` (the chunk buffer): the
    CE kernel with every option, z_loss and logit_softcap included, in place."""
    extra = {}
    if z_loss != 0.0:
        extra["z_loss"] = z_loss
    if softcap is not None:
        extra["logit_softcap"] = softcap
    return softmax_cross_entropy(logits, target, **ce_options, **extra, reduction=reduction,
                                 compute_grad=compute_grad,
                                 out=logits if compute_grad else None,
                                 n_threads=n_threads).loss


# ------------------------------------------------------------------------- argument checks

def _linear_inputs(hidden, weight, bias):
    hidden = check.float_input(hidden, "hidden")
    if hidden.ndim != 2:
        raise ValueError(f"hidden must be 2-D (N, D), got {hidden.ndim}-D shape {hidden.shape}")
    weight = check.float_input(weight, "weight")
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D (V, D) as torch.nn.Linear.weight, got "
                         f"{weight.ndim}-D shape {weight.shape}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight must have the dtype of hidden ({hidden.dtype}), got dtype "
                        f"{weight.dtype}")
    n_samples, n_features = hidden.shape
    n_classes = weight.shape[0]
    if weight.shape[1] != n_features:
        raise ValueError(f"weight must have shape (V, {n_features}) to match hidden's "
                         f"{n_features} features, got shape {weight.shape}")
    if n_classes < 1:
        raise ValueError(f"weight must have at least one row (V >= 1 classes), got shape "
                         f"{weight.shape}")
    if bias is not None:
        bias = check.float_input(bias, "bias")
        if bias.dtype != hidden.dtype:
            raise TypeError(f"bias must have the dtype of hidden ({hidden.dtype}), got dtype "
                            f"{bias.dtype}")
        if bias.shape != (n_classes,):
            raise ValueError(f"bias must have shape ({n_classes},), one entry per row of "
                             f"weight, got shape {bias.shape}")
    return hidden, weight, bias, n_samples, n_features, n_classes


def _chunk_size(value, n_samples, n_classes, itemsize) -> int:
    if value is None:
        return default_chunk_size(n_samples, n_classes, itemsize)
    size = check.integer_scalar(value, "chunk_size")
    if size < 1:
        raise ValueError(f"chunk_size must be None or an int >= 1, got {size}")
    return size


def _targets(target_array, n_samples, n_classes, dtype, ignore_index):
    """(indices, None) for class indices (int64), (None, probabilities) for an (N, V) float
    target."""
    if target_array.ndim == 1:
        return check.class_indices(target_array, "target", n_samples), None
    if target_array.ndim == 2:
        if target_array.dtype.kind in "iu" and target_array.shape == (n_samples, 1):
            raise ValueError(f"target of shape {target_array.shape} holds class indices as a "
                             "column; pass target.ravel() (shape (N,))")
        if target_array.dtype.kind != "f":
            raise TypeError("a 2-D target holds class probabilities and must have a floating "
                            f"dtype, got dtype {target_array.dtype} (class indices are a 1-D "
                            "integer target)")
        if ignore_index != -100:
            raise ValueError("ignore_index applies only to class-index targets; leave it at "
                             f"its default (-100) with probability targets, got {ignore_index}")
        return None, check.float_target(target_array, "target", dtype, (n_samples, n_classes))
    raise ValueError("target must be 1-D class indices (N,) or 2-D probabilities (N, V), "
                     f"got {target_array.ndim}-D shape {target_array.shape}")


def _out_tuple(out, differentiated: dict, others: dict):
    """`out`: None or a sequence of one entry per differentiated input (None or an array that
    follows the rules of `out`). Only hidden's gradient may be written in place over hidden:
    every chunk reads all of weight and bias."""
    names = list(differentiated)
    if out is None:
        return [None] * len(names)
    if not isinstance(out, (tuple, list)) or len(out) != len(names):
        raise ValueError(f"out must be None or a tuple of {len(names)} entries (arrays or None) "
                         f"for the gradients of {', '.join(names)}, got {check._describe(out)}"
                         + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    checked = []
    for position, (name, entry) in enumerate(zip(names, out)):
        like = differentiated[name]
        if entry is None:
            checked.append(None)
            continue
        if like is None:
            raise ValueError(f"out[{position}] must be None: there is no {name} (it is None)")
        if position > 0 and isinstance(entry, np.ndarray) and np.may_share_memory(entry, like) \
                and np.shares_memory(entry, like):
            raise ValueError(f"out[{position}] overlaps {name}: its gradient cannot be written "
                             f"in place, every chunk reads all of {name}")
        inputs = {key: array for key, array in {**differentiated, **others}.items()
                  if key != name}
        inputs.update({f"out[{index}]": array for index, array in enumerate(checked)
                       if array is not None})
        try:
            checked.append(check.out_array(entry, like, inputs))
        except ValueError as error:
            raise ValueError(f"out[{position}] (the gradient of {name}): {error}") from None
    return checked


# ------------------------------------------------------------------------- the function

def linear_cross_entropy(
    hidden,
    weight,
    target,
    *,
    bias=None,
    class_weight=None,
    ignore_index=-100,
    label_smoothing=0.0,
    z_loss=0.0,
    logit_softcap=None,
    reduction="mean",
    compute_grad=True,
    out=None,
    chunk_size=None,
    n_threads=None,
) -> LossResult:
    r"""Softmax cross-entropy of ``hidden @ weight.T + bias`` and its gradients with respect
    to hidden, weight and bias, without ever holding the (N, V) logits.

    Semantics of ``torch.nn.functional.linear_cross_entropy(hidden, weight, target,
    linear_bias=bias, weight=class_weight, ...)``, i.e. of
    ``softmax_cross_entropy(hidden @ weight.T + bias, target, ...)``, plus z_loss and
    logit_softcap.

    Parameters
    ----------
    hidden : ndarray (N, D), float32 or float64
    weight : ndarray (V, D) of hidden's dtype, as ``torch.nn.Linear.weight``
    target : ndarray (N,) of integer class indices in [0, V) (or ``ignore_index``), or
        ndarray (N, V) of class probabilities (any real dtype)
    bias : ndarray (V,) of hidden's dtype, optional
    class_weight : array (V,), optional
        Per-class weights w (torch's ``weight`` argument; the name ``weight`` is the linear
        layer's here, as in the fastloss contract).
    ignore_index, label_smoothing : as softmax_cross_entropy
    z_loss : float >= 0
        z: each kept sample adds ``z lse_i^2`` (not multiplied by its class weight).
    logit_softcap : None or float > 0
        c: the logits become ``c tanh(x / c)`` before everything else.
    reduction : "mean" | "sum" | "none"
    compute_grad : bool
    out : None, or a tuple ``(grad_hidden, grad_weight, grad_bias)`` whose entries are None
        (allocated) or arrays that follow the rules of ``out`` (grad_bias None without bias).
        grad_hidden may be ``hidden`` itself (in place); weight and bias may not (every chunk
        reads them all).
    chunk_size : None or int >= 1
        Rows per chunk. None: ``CHUNK_BUFFER_BYTES // (V * itemsize)`` (24 MiB of logits per
        chunk) rounded down to a multiple of 16, at least 64, at most N -- 192 rows at
        V = 32768 float32, 64 at V = 131072. It depends on the sizes and the dtype, never on
        the thread count.
    n_threads : None or int >= 1
        Threads of the BLAS GEMMs (set through threadpoolctl for the call) and of the CE kernel,
        which run one after the other. None: each library's default.

    Returns
    -------
    LossResult(loss, grad) with ``grad = (grad_hidden, grad_weight, grad_bias)`` (grad_bias None
    without a bias), or ``grad = None`` with ``compute_grad=False``.

    Maths
    -----
    x = H W^T + b (row i: x_i), capped x'_i = c tanh(x_i / c) (x' = x without softcap),
    lse_i = log sum_j exp(x'_ij) (formed as m + log sum exp(x' - m)). With the coefficients a_ij
    of softmax_cross_entropy (class weight, label smoothing) and S_i = sum_j a_ij,

        loss_i = sum_j a_ij (lse_i - x'_ij) + z lse_i^2          (0 for ignored rows)
        g_ij = dloss_i/dx_ij = (S_i p_ij - a_ij + 2 z lse_i p_ij) (1 - tanh(x_ij / c)^2)

    with p_i = softmax(x'_i). "mean" divides the sum by M = sum of the kept rows' class
    weights (their count without class weight; N for probability targets), computed once for
    the whole batch; "sum" does not; "none" returns loss_i. With s = 1/M for "mean" and 1
    otherwise: dH = s g W, dW = s g^T H, db = s sum_i g_i. Per chunk c of rows, g_c is formed
    in the chunk buffer, dH_c = s g_c W, dW += s g_c^T H_c (BLAS, beta = 1, chunks in order),
    db += sum_i g_ci (double). The loss is summed in double in chunk order: for fixed inputs,
    chunk size and thread count, the results are bitwise the same every run.

    Edge cases as softmax_cross_entropy: an empty batch gives nan for "mean" (0.0 for "sum")
    and zero dW, db; every target ignored gives nan for "mean" and all-zero gradients.
    """
    hidden, weight, bias, n_samples, _, n_classes = _linear_inputs(hidden, weight, bias)
    dtype = hidden.dtype
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    threads = check.n_threads(n_threads)
    ignore_index = check.ignore_index(ignore_index)
    eps = check.real_scalar(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    z_loss = check.real_scalar(z_loss, "z_loss", low=0.0)
    softcap = (None if logit_softcap is None
               else check.real_scalar(logit_softcap, "logit_softcap", low=0.0, low_open=True))
    rows_per_chunk = _chunk_size(chunk_size, n_samples, n_classes, dtype.itemsize)

    target_array = np.asarray(target)
    indices, probabilities = _targets(target_array, n_samples, n_classes, dtype, ignore_index)
    weight_array = check.class_weight(class_weight, "class_weight", n_classes, dtype)
    grad_outs = _out_tuple(out, {"hidden": hidden, "weight": weight, "bias": bias},
                           {"target": target_array, "class_weight": class_weight})
    if indices is not None:
        denominator = check.check_indices_in_range(indices, "target", n_classes, ignore_index,
                                                   weight_array)
        kept = indices != ignore_index
    else:
        denominator = float(n_samples)
        kept = np.ones(n_samples, dtype=bool)
    gemm = _gemm_for(dtype)
    if n_threads is not None:
        _threadpool_controller()  # imported before anything is written

    # -------- nothing has been written up to here; from here on the call cannot fail
    hidden_c = np.ascontiguousarray(hidden)
    weight_c = np.ascontiguousarray(weight)
    grad_hidden = grad_weight = grad_bias = None
    if compute_grad:
        grad_hidden = grad_outs[0] if grad_outs[0] is not None else np.empty_like(hidden_c)
        grad_weight = grad_outs[1] if grad_outs[1] is not None else np.empty_like(weight_c)
        if bias is not None:
            grad_bias = grad_outs[2] if grad_outs[2] is not None else np.empty(n_classes, dtype)
    # "mean" scales the gradients by 1/M in the GEMMs (alpha), never on the (n, V) buffer. With
    # M = 0 the rows kept (class weights summing to 0) get nan gradients and the ignored rows
    # zeros, as softmax_cross_entropy on the full logits gives: the nan goes onto the kept rows
    # of the buffer, and alpha stays 1.
    scale = 1.0
    nan_rows = False
    if reduction == "mean":
        if denominator != 0:
            scale = 1.0 / denominator
        else:
            nan_rows = bool(kept.any())
    ce_options = {"weight": weight_array, "ignore_index": ignore_index, "label_smoothing": eps}
    chunk_reduction = "none" if reduction == "none" else "sum"

    rows = min(rows_per_chunk, n_samples)
    buffer = np.empty((rows, n_classes), dtype) if rows > 0 else None
    loss_out = np.empty(n_samples, dtype) if reduction == "none" else None
    bias_sum = np.zeros(n_classes, np.float64) if grad_bias is not None else None
    total = 0.0
    weight_t = weight_c.T  # (D, V) Fortran-ordered view
    with _blas_threads(None if n_threads is None else threads):
        for start in range(0, n_samples, rows_per_chunk):
            stop = min(start + rows_per_chunk, n_samples)
            hidden_t = hidden_c[start:stop].T           # (D, n) Fortran-ordered
            logits = buffer[: stop - start]             # (n, V) C-ordered
            # logits^T (V, n) = W (V, D) H_c^T (D, n)
            _gemm_into(gemm, 1.0, weight_t, hidden_t, logits.T, trans_a=1)
            if bias is not None:
                np.add(logits, bias, out=logits)
            target_chunk = indices[start:stop] if indices is not None else probabilities[start:stop]
            part = _ce_on_chunk(logits, target_chunk, ce_options, z_loss, softcap,
                                chunk_reduction, compute_grad, n_threads)
            if loss_out is not None:
                loss_out[start:stop] = part
            else:
                total += part
            if not compute_grad:
                continue
            if nan_rows:
                logits[kept[start:stop]] = np.nan
            if bias_sum is not None:
                bias_sum += logits.sum(axis=0, dtype=np.float64)
            # dW^T (D, V) = s H_c^T (D, n) g_c (n, V) (+ dW^T): before dH_c, which may
            # overwrite H_c (grad_hidden = hidden in place)
            _gemm_into(gemm, scale, hidden_t, logits.T, grad_weight.T, trans_b=1,
                       beta=0.0 if start == 0 else 1.0)
            # dH_c^T (D, n) = s W^T (D, V) g_c^T (V, n)
            _gemm_into(gemm, scale, weight_t, logits.T, grad_hidden[start:stop].T)
    if compute_grad and n_samples == 0:
        grad_weight.fill(0)
    if bias_sum is not None:
        np.multiply(bias_sum, scale, out=grad_bias, casting="same_kind")

    if reduction == "none":
        loss = loss_out
    elif reduction == "sum":
        loss = float(total)
    else:
        loss = total / denominator if denominator != 0 else math.nan
    return LossResult(loss, (grad_hidden, grad_weight, grad_bias) if compute_grad else None)
