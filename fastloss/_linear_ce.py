"""linear_cross_entropy: the softmax cross-entropy of a linear layer's output (a language
model's head) without ever holding the (N, V) logits.

The rows are processed in chunks of n rows through one reused (n, V) buffer, and every chunk
sweeps the vocabulary in tiles of `t` classes (a (t, D) tile of the weight, ~2 MiB, stays in
the core's L2 or the L3 while it is used). Chunk c's buffer holds its logits; fastloss's CE
kernel turns them into their gradient g in place (every CE option, z_loss and logit_softcap in the same
pass); then one sweep over the tiles does, per tile j,

    dW_j  = s g_j^T H_c (+ dW_j from the chunks before)        (written once per chunk)
    dH_c += s g_j W_j                                          (per part, see below)
    buffer_j = H_{c+1} W_j^T (+ the bias later)                (chunk c+1's logits)

so the weight is read once per chunk for two GEMMs and dW read and written once: 3 V D
elements of memory traffic per chunk instead of the 4 (plus the BLAS's repacking of the
weight) of three separate chunk-sized GEMMs. The tiles are cut into PARTS = 8 contiguous runs
run by OpenMP threads (dynamic schedule), each GEMM on one BLAS thread: one thread
synchronisation per chunk instead of one per BLAS panel (a multi-threaded BLAS call on a tile
or on a thin chunk GEMM waits for its slowest thread at every panel: 3-20x slower on a loaded
2-core machine). Each part sums its tiles' dH terms in its own (n, D) array; the parts are
added in part order. Nothing depends on the thread count, so the results are bitwise the same
at any n_threads.

BLAS: the ?gemm of SciPy's cython_blas (the library SciPy ships), called from nogil code
(fastloss._kernels.lce_sweep) on strided tiles of the C-ordered arrays: nothing is copied.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validation as check
from . import _kernels
from ._api import LossResult, softmax_cross_entropy

# ------------------------------------------------------------------------- chunk size
# Memory: the chunk buffer (n V elements) and the parts' dH sums (PARTS n D) must stay within
# 15/16 of 1/16 of the (N, V) logits (the last sixteenth of that is left to the BLAS's packing
# buffers, n t + D n elements per thread), i.e. n <= (15/256) N V / (V + PARTS D).
# Time: every chunk streams the weight once and dW twice (3 V D elements for 6 n V D flops,
# n/2 flops per byte in float32) and each tile's GEMMs repack H_c, H_{c+1} and g's tile, so
# the larger n the better: the largest n the budget allows, at most MAX_CHUNK_ROWS (n/2 = 256
# flops per byte, far above what ~140 GFlop/s per core needs from ~20 GB/s). Below N ~ 600
# at the benchmark shapes the budget gives fewer than MIN_CHUNK_ROWS rows and the floor puts
# the buffer above 1/16 of the (then small) logits.
PARTS = 8
MIN_CHUNK_ROWS = 32
MAX_CHUNK_ROWS = 512
CHUNK_ROW_MULTIPLE = 16
TILE_BYTES = 2 * 2**20
# A chunk with fewer multiply-adds per GEMM (n V D) than this runs its sweep on one thread: the
# OpenMP fork and join would cost more than the work (a scheduler time slice on a loaded
# machine). The results do not depend on it (the parts are the same).
SERIAL_SWEEP_WORK = 2**22


def default_chunk_size(n_samples: int, n_classes: int, n_features: int, itemsize: int) -> int:
    """Rows per chunk when ``chunk_size=None``: the largest multiple of 16 rows n with
    ``n (V + 8 D) <= (15/256) N V`` (buffer and dH part sums within 15/16 of 1/16 of the
    logits), clipped to [32, 512], at most N (at least 1). Depends on the sizes only (the
    itemsize cancels), never on the thread count."""
    rows = 15 * n_samples * n_classes // (256 * (n_classes + PARTS * n_features))
    rows = rows // CHUNK_ROW_MULTIPLE * CHUNK_ROW_MULTIPLE
    rows = min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, rows))
    return max(1, min(rows, n_samples))


def tile_size(n_classes: int, n_features: int, itemsize: int) -> int:
    """Classes per vocabulary tile: a (t, D) weight tile of ~TILE_BYTES (2 MiB, a core's L2
    here; the dW tile of the same size goes through the L3), a multiple of 16, at least 16, at
    most V. Measured on one thread (loaded 2-core VM, CPU time of the GEMMs alone against the
    three full-size GEMMs): at (4096, 512, 32768) 1.05-1.2x for 0.25-4 MiB tiles (noise); at
    (1024, 1024, 131072) with 112-row chunks 1.37x for 512 KiB tiles, 1.25x for 2 MiB (the
    per-call packing of H_c and g's tile is amortised over more classes)."""
    tile = TILE_BYTES // max(1, n_features * itemsize) // 16 * 16
    return max(1, min(n_classes, max(16, tile)))


# ------------------------------------------------------------------------- BLAS and threads

def _gemm_capsule(dtype: np.dtype):
    """SciPy's cython_blas ?gemm (a PyCapsule holding the function pointer) for the dtype."""
    try:
        from scipy.linalg import cython_blas
    except ImportError as error:  # pragma: no cover - scipy is in the linear extra
        raise ImportError("fastloss.linear_cross_entropy needs SciPy for its BLAS GEMMs "
                          "(pip install 'fastloss[linear]')") from error
    return cython_blas.__pyx_capi__["sgemm" if dtype == np.float32 else "dgemm"]


_THREADPOOL_CONTROLLER = None


def _threadpool_controller():
    """threadpoolctl's view of the loaded libraries, made once (after SciPy's BLAS is loaded)."""
    global _THREADPOOL_CONTROLLER
    if _THREADPOOL_CONTROLLER is None:
        from threadpoolctl import ThreadpoolController
        _THREADPOOL_CONTROLLER = ThreadpoolController()
    return _THREADPOOL_CONTROLLER


def _one_blas_thread():
    """Within the call every BLAS library loaded (SciPy's and NumPy's OpenBLAS) runs on one
    thread: the GEMMs are called from the OpenMP threads of the tile sweep, so the cores are
    never oversubscribed."""
    return _threadpool_controller().limit(limits=1, user_api="blas")


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


def _chunk_size(value, n_samples, n_classes, itemsize, n_features=0) -> int:
    """The rows per chunk: chunk_size checked, or the default (the reference checks only)."""
    if value is None:
        return default_chunk_size(n_samples, n_classes, n_features, itemsize)
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
        Rows per chunk. None: the largest multiple of 16 rows n with
        ``n (V + 8 D) <= (15/256) N V``, so that the chunk buffer (n, V) and the eight (n, D)
        partial sums of dH take at most 15/16 of 1/16 of the (N, V) logits (the rest of that
        sixteenth is the BLAS's packing space), clipped to [32, 512] rows (below 32 the GEMMs
        are memory-bound; above 512 they gain nothing) and to N: 208 rows at
        (N, D, V) = (4096, 512, 32768), 112 at (2048, 1024, 131072). It depends on N, D and V
        only, never on the thread count or the dtype.
    n_threads : None or int >= 1
        OpenMP threads of the tile sweeps (each GEMM on one BLAS thread: every BLAS library
        loaded is limited to one thread for the call, through threadpoolctl) and of the CE
        kernel, which run one after the other. None: OpenMP's default (OMP_NUM_THREADS,
        threadpoolctl, the CPUs the process may use). The results are bitwise the same at any
        thread count.

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
    in the chunk buffer; per vocabulary tile j (t = tile_size(V, D) classes, the last one
    shorter), dW_j = s g_cj^T H_c (+ dW_j: BLAS beta = 1, chunks in order) and, per part p of
    the tiles (PARTS = 8 contiguous runs), P_p = sum over its tiles in order of s g_cj W_j;
    dH_c = P_0 + P_1 + ... (part order); db += sum_i g_ci (double). The loss is summed in
    double in chunk order. Nothing depends on the thread count: for fixed inputs and chunk
    size, the results are bitwise the same every run and at any n_threads.

    Edge cases as softmax_cross_entropy: an empty batch gives nan for "mean" (0.0 for "sum")
    and zero dW, db; every target ignored gives nan for "mean" and all-zero gradients.
    """
    hidden, weight, bias, n_samples, n_features, n_classes = _linear_inputs(hidden, weight, bias)
    dtype = hidden.dtype
    reduction = check.reduction(reduction)
    compute_grad = check.grad_request(compute_grad, out)
    threads = check.n_threads(n_threads)
    ignore_index = check.ignore_index(ignore_index)
    eps = check.real_scalar(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    z_loss = check.real_scalar(z_loss, "z_loss", low=0.0)
    softcap = (None if logit_softcap is None
               else check.real_scalar(logit_softcap, "logit_softcap", low=0.0, low_open=True))
    rows_per_chunk = _chunk_size(chunk_size, n_samples, n_classes, dtype.itemsize, n_features)

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
    capsule = _gemm_capsule(dtype)
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
    tile = tile_size(n_classes, n_features, dtype.itemsize)
    sweep_threads = threads if threads > 0 else _kernels.default_n_threads()
    if rows * n_classes * n_features < SERIAL_SWEEP_WORK:
        sweep_threads = 1
    buffer = np.empty((rows, n_classes), dtype) if rows > 0 else None
    parts = np.empty(PARTS * rows * n_features, dtype) if compute_grad else None
    loss_out = np.empty(n_samples, dtype) if reduction == "none" else None
    bias_sum = np.zeros(n_classes, np.float64) if grad_bias is not None else None
    total = 0.0
    with _one_blas_thread():
        if rows > 0:  # chunk 0's logits
            _kernels.lce_sweep(capsule, buffer, None, hidden_c[:rows], weight_c, None, None,
                               1.0, False, tile, PARTS, sweep_threads)
        for start in range(0, n_samples, rows_per_chunk):
            stop = min(start + rows_per_chunk, n_samples)
            logits = buffer[: stop - start]             # (n, V) C-ordered
            if bias is not None:
                np.add(logits, bias, out=logits)
            target_chunk = indices[start:stop] if indices is not None else probabilities[start:stop]
            part = _ce_on_chunk(logits, target_chunk, ce_options, z_loss, softcap,
                                chunk_reduction, compute_grad, n_threads)
            if loss_out is not None:
                loss_out[start:stop] = part
            else:
                total += part
            following = hidden_c[stop:stop + rows_per_chunk] if stop < n_samples else None
            if not compute_grad:
                if following is not None:
                    _kernels.lce_sweep(capsule, buffer, None, following, weight_c, None, None,
                                       1.0, False, tile, PARTS, sweep_threads)
                continue
            if nan_rows:
                logits[kept[start:stop]] = np.nan
            if bias_sum is not None:
                bias_sum += logits.sum(axis=0, dtype=np.float64)
            # dW[tile] (+)= s g^T H_c, the parts' dH_c, then the next chunk's logits
            dh_parts = parts[: PARTS * (stop - start) * n_features].reshape(
                PARTS, stop - start, n_features)
            used = _kernels.lce_sweep(capsule, buffer, hidden_c[start:stop], following,
                                      weight_c, grad_weight, dh_parts, scale, start > 0, tile,
                                      PARTS, sweep_threads)
            # after the sweep, which read H_c: grad_hidden may be hidden (in place)
            dh = grad_hidden[start:stop]
            if used == 1:
                np.copyto(dh, dh_parts[0])
            else:
                np.add(dh_parts[0], dh_parts[1], out=dh)
                for index in range(2, used):
                    dh += dh_parts[index]
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
