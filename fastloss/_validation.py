"""Argument checks shared by every loss function (and by fastloss.reference).

Every check runs before any kernel does and writes nothing, so a call that raises leaves its
inputs and ``out`` untouched. Messages name the argument, what was expected and what was
given. The kernels trust what passes here: C-contiguous arrays of the input's dtype, class
indices in range, ``out`` of the right shape and dtype and not overlapping an input.
"""

from __future__ import annotations

import math
import operator
from typing import Optional, Tuple

import numpy as np

from . import _kernels

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
REDUCTIONS = ("mean", "sum", "none")
_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min
# An explicit n_threads is honoured up to this many threads (never more than the call has
# blocks); a request beyond it is capped rather than handed to OpenMP.
MAX_THREADS = 256


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    return f"{type(value).__name__} {value!r}" if np.isscalar(value) else type(value).__name__


def float_input(array, name: str) -> np.ndarray:
    """The differentiated input: a float32/float64 ndarray, returned as given."""
    if not isinstance(array, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy.ndarray of dtype float32 or float64, got {_describe(array)}"
        )
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have dtype float32 or float64 (the supported dtypes), "
            f"got dtype {array.dtype}"
        )
    return array


def class_logits(array, name: str = "logits"):
    """Logits of the class losses: a float32/float64 ndarray (N, C) with C >= 1.
    Returns (array, N, C)."""
    array = float_input(array, name)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, C), got {array.ndim}-D shape {array.shape}")
    n_samples, n_classes = array.shape
    if n_classes < 1:
        raise ValueError(f"{name} must have at least one class (C >= 1), got shape {array.shape}")
    return array, n_samples, n_classes


def reduction(value, allowed=REDUCTIONS) -> str:
    """One of `allowed` ("batchmean" only for kl_div, whose row allows it)."""
    if not isinstance(value, str) or value not in allowed:
        if value == "batchmean":
            raise ValueError("reduction 'batchmean' is only for kl_div; use 'mean', 'sum' or "
                             "'none'")
        names = ", ".join(repr(name) for name in allowed)
        raise ValueError(f"reduction must be one of {names}, got {value!r}")
    return value


def bool_option(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def hess_request(compute_hess, compute_grad: bool, hess_out) -> bool:
    """compute_hess needs the gradient; hess_out needs compute_hess."""
    if not isinstance(compute_hess, (bool, np.bool_)):
        raise TypeError(f"compute_hess must be True or False, got {compute_hess!r}")
    if compute_hess and not compute_grad:
        raise ValueError("compute_hess=True needs the gradient: it cannot be combined with "
                         "compute_grad=False")
    if hess_out is not None and not compute_hess:
        raise ValueError("hess_out was given without compute_hess=True")
    return bool(compute_hess)


def out_tuple(value, length: int, enabled: bool, name: str = "out") -> tuple:
    """`out` of a loss with several differentiated inputs: None, or a tuple of `length`
    entries, each an array or None. Returns the entries (None for each when not given)."""
    if value is None:
        return (None,) * length
    if not enabled:
        what = "compute_grad=False" if name == "out" else "compute_hess=False"
        raise ValueError(f"{name} was given together with {what}")
    if not isinstance(value, (tuple, list)) or len(value) != length:
        raise ValueError(f"{name} must be None or a tuple of {length} entries (arrays or None), "
                         f"one per differentiated input, got {_describe(value)}")
    return tuple(value)


def n_threads(value) -> int:
    """n_threads for the kernels: an int >= 1, or 0 for None, which the kernel driver
    resolves only when a call is large enough to run in parallel (OpenMP's default --
    OMP_NUM_THREADS, threadpoolctl limits -- capped by the CPUs the process may use)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise TypeError(f"n_threads must be None or an int >= 1, got {value!r}")
    try:
        count = operator.index(value)
    except TypeError:
        raise TypeError(f"n_threads must be None or an int >= 1, got {_describe(value)}") from None
    if count < 1:
        raise ValueError(f"n_threads must be None or an int >= 1, got {count}")
    return min(count, MAX_THREADS)


def real_scalar(value, name: str, *, low=None, high=None, low_open=False,
                high_open=False) -> float:
    """A finite real number in [low, high] ("(" / ")" where low_open / high_open)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    number = float(value)
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if math.isnan(number) or below or above:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        interval = (("(" if low_open or low is None else "[") + f"{lo}, {hi}"
                    + ("]" if high is not None and not high_open else ")"))
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return number


def integer_scalar(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {_describe(value)}") from None


def ignore_index(value) -> int:
    """An int64 (class indices are int64 in the kernels; no index can equal a larger one)."""
    index = integer_scalar(value, "ignore_index")
    if not _INT64_MIN <= index <= _INT64_MAX:
        raise ValueError(f"ignore_index must fit in a 64-bit signed integer, got {index}")
    return index


def grad_request(compute_grad, out) -> bool:
    if not isinstance(compute_grad, (bool, np.bool_)):
        raise TypeError(f"compute_grad must be True or False, got {compute_grad!r}")
    if out is not None and not compute_grad:
        raise ValueError("out was given together with compute_grad=False; "
                         "pass out only when the gradient is computed")
    return bool(compute_grad)


def float_target(target, name: str, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """Real-valued targets (probabilities, regression targets): any real dtype, converted to
    the input's dtype; the shape must equal `shape`."""
    array = np.asarray(target)
    if array.dtype.kind not in "fiu" or array.dtype == np.bool_:
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=dtype)


def reject_index_column(array: np.ndarray, name: str, n_samples: int) -> None:
    """An integer (N, 1) target next to 2-D logits is a column of class indices (as a
    scikit-learn user may pass y[:, None]): say how to pass it, rather than a shape or dtype
    error about probabilities."""
    if array.ndim == 2 and array.shape == (n_samples, 1) and array.dtype.kind in "iu":
        raise ValueError(f"{name} has shape {array.shape}, a column of class indices; class "
                         f"indices are 1-D: pass {name}.ravel() (shape ({n_samples},))")


def class_indices(target, name: str, n_samples: int) -> np.ndarray:
    """Integer class indices of shape (n_samples,), as a C-contiguous int64 array."""
    array = np.asarray(target)
    reject_index_column(array, name, n_samples)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} holds class indices and must have an integer dtype, "
                        f"got dtype {array.dtype}")
    if array.shape != (n_samples,):
        raise ValueError(f"{name} must have shape ({n_samples},) to match the input's "
                         f"{n_samples} samples, got shape {array.shape}")
    if array.dtype == np.uint64 and array.size and array.max() > _INT64_MAX:
        position = int(np.argmax(array > _INT64_MAX))
        raise ValueError(f"{name} contains class index {int(array[position])} at position "
                         f"{position}, which is out of range")
    return np.ascontiguousarray(array, dtype=np.int64)


def check_indices_in_range(indices: np.ndarray, name: str, n_classes: int, ignore_index: int,
                           weight: Optional[np.ndarray]) -> float:
    """Every index in [0, n_classes) or == ignore_index; returns the mean's denominator
    (count of kept targets, or the sum of their class weights)."""
    bad, denominator = _kernels.check_class_indices(indices, n_classes, ignore_index, weight)
    if bad >= 0:
        raise ValueError(
            f"{name} contains class index {int(indices[bad])} at position {bad}, outside "
            f"[0, {n_classes}) and not ignore_index={ignore_index}"
        )
    return denominator


def class_weight(weight, name: str, n_classes: int, dtype: np.dtype) -> Optional[np.ndarray]:
    if weight is None:
        return None
    array = np.asarray(weight)
    if array.dtype.kind not in "fiu" or array.dtype == np.bool_:
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.shape != (n_classes,):
        raise ValueError(f"{name} must have shape ({n_classes},), one weight per class, "
                         f"got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=dtype)


def focal_alpha(alpha, n_classes: int, dtype) -> Tuple[Optional[np.ndarray], float]:
    """softmax_focal's alpha: (None, the number) for a real scalar (or a 0-d array), else
    (the per-class array, 1.0) checked as a class weight (None: no alpha)."""
    if alpha is not None and np.ndim(alpha) == 0:
        return None, real_scalar(alpha.item() if isinstance(alpha, np.ndarray) else alpha,
                                 "alpha")
    return class_weight(alpha, "alpha", n_classes, dtype), 1.0


def output_array(array, shape: tuple, dtype, inputs: dict, name: str,
                 whose: str = "") -> Optional[np.ndarray]:
    """An output array (`out`, `hess_out`, `lse_out`, ...): None, or a C-contiguous writeable
    ndarray of `shape` and `dtype` that overlaps none of `inputs` (name -> array). `whose`
    says in the shape message where shape and dtype come from."""
    if array is None:
        return None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray or None, got {_describe(array)}")
    shape = tuple(shape)
    if array.shape != shape or array.dtype != dtype:
        raise ValueError(f"{name} must have shape {shape} and dtype {np.dtype(dtype)}{whose}, "
                         f"got shape {array.shape} and dtype {array.dtype}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not array.flags.writeable:
        raise ValueError(f"{name} must be writeable, got a read-only array")
    _no_overlap(array, inputs, name)
    return array


def _no_overlap(array: np.ndarray, inputs: dict, name: str) -> None:
    for other, value in inputs.items():
        if (isinstance(value, np.ndarray) and np.may_share_memory(array, value)
                and np.shares_memory(array, value)):
            raise ValueError(f"{name} overlaps {other}; the result would overwrite it")


def out_array(out, like: np.ndarray, inputs: dict, name: str = "out") -> Optional[np.ndarray]:
    """`out` receives the gradient: same shape and dtype as `like` (the differentiated input),
    C-contiguous, writeable; it may be `like` itself (in place) but must not overlap any of
    `inputs` (name -> array), nor overlap `like` other than being exactly it. `name`: how
    the messages call it (hess_out follows the same rules)."""
    out = output_array(out, like.shape, like.dtype, {}, name, " (those of the input)")
    if out is None:
        return None
    if out is not like and np.may_share_memory(out, like):
        # in place through another view of the same buffer is fine; any other overlap is not
        same_view = (like.flags.c_contiguous and out.strides == like.strides
                     and out.__array_interface__["data"][0] == like.__array_interface__["data"][0])
        if not same_view and np.shares_memory(out, like):
            raise ValueError(f"{name} overlaps the input without being the input itself; pass "
                             "the input itself for an in-place result, or a separate array")
    _no_overlap(out, inputs, name)
    return out


# ------------------------------------------------------------- element-wise loss arguments

def broadcast_weight(weight, name: str, shape: tuple, dtype: np.dtype):
    """A weight broadcastable to `shape`, as ``(values, period)`` for the kernels, or None.

    Element i (in C order) of the broadcast weight is ``values[i % period]``:
    - a weight that varies only along trailing axes it shares with the input (a scalar, a
      (C,) weight along the last axis, an (H, W) weight of an (N, H, W) input, or the
      input's full shape) is kept as is: ``values`` is its flattened data and ``period`` its
      size, so no broadcast copy is made;
    - any other broadcastable shape (e.g. a per-row (N, 1) weight) is expanded once into a
      C-contiguous array of the input's shape (period = its size).
    """
    if weight is None:
        return None
    array = np.asarray(weight)
    if array.dtype.kind not in "fiu" or array.dtype == np.bool_:
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    try:
        broadcastable = np.broadcast_shapes(array.shape, shape) == tuple(shape)
    except ValueError:
        broadcastable = False
    if not broadcastable:
        raise ValueError(f"{name} must be broadcastable to the input's shape {shape}, "
                         f"got shape {array.shape}")
    padded = (1,) * (len(shape) - array.ndim) + array.shape
    first = next((axis for axis, size in enumerate(padded) if size != 1), len(shape))
    if padded[first:] == tuple(shape[first:]):
        return np.ascontiguousarray(array, dtype=dtype).reshape(-1), max(1, math.prod(shape[first:]))
    full = np.ascontiguousarray(np.broadcast_to(array.astype(dtype, copy=False), shape))
    return full.reshape(-1), max(1, full.size)
