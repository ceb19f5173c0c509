"""The fastloss benchmark report: ``python -m fastloss.bench`` (or ``fastloss-bench``).

Times every fused kernel of the installed fastloss against its NumPy reference
(``fastloss.reference``) and the memory floors, on synthetic data, and optionally against
other libraries (``--compare torch,jax,sklearn,numba``). Every result is checked against the
reference before it is timed: a wrong result is reported as a failure and makes the command
exit with status 1.

How the table is built
----------------------
* **One row of ``LOSSES`` per loss**: the input maker, the loss parameters, and the peer
  implementations. The fastloss kernel and the reference are ``fastloss.<name>`` and
  ``fastloss.reference.<name>``; a loss that the installed fastloss does not have yet is
  skipped with a message, so a new kernel appears in the report as soon as it lands.
* **Rows**: ``fastloss`` writes the gradient into a preallocated ``out=`` array (the main
  row), ``fastloss-alloc`` allocates it on every call; ``reference`` is the NumPy oracle;
  ``copy-floor`` and ``add-floor`` are the memory floors below; then the peers.
* **Sizes** are counts of elements of the differentiated input: ``tiny`` (4096: per-call
  overhead), ``cache`` (131072: input + gradient are 1 MiB in float32, within a per-core
  L2 cache, and 2 MiB in float64, within any last-level cache) and ``large`` (at least
  2**24, and at least twice the last-level cache in float32), or any number, or an explicit
  shape ``NxC``. The class-index losses use C = 1000 classes from 64000 elements on
  (C = max(2, isqrt(elements)) below that) and N = max(1, elements // C) rows, so 1
  element becomes 1x2; the header lists the shape each size became.
* **Time**: median of repeats (``time.perf_counter``, garbage collector off, calls batched
  so that one sample lasts at least 0.2 ms), with half the interquartile range as spread.
  Repeats fill a time budget per measurement (0.15 s; ``--quick`` 0.03 s), at least 5
  (``--quick`` 3), but a measurement stops after 2.5 s (``--quick`` 0.4 s): a slower call,
  such as a NumPy reference at the large size, is timed fewer times, down to once. The
  ``repeats`` column gives samples × calls per sample, and a note counts the measurements
  timed fewer than the minimum.
* **GB/s**: bytes that any implementation must move (input read + gradient written +
  targets read) divided by the median time; the same numerator for every row.
* **vs ref**: the reference's median time divided by the row's (>1: faster than NumPy).
* **/copy**: the row's time over the copy floor, ``np.copyto(dst, input)`` into a
  preallocated array (one read and one write stream); **/a+b**, for element-wise losses,
  over the three-stream floor ``np.add(input, target, out=dst)``. 1.0 is at the floor. Both
  floors run on one thread (one core draws most of the memory bandwidth).
* **Plot** (``--plot``): per loss and dtype, against the number of elements (log-log),
  either the speedup over the reference (``--plot-y speedup``, the default) or the time per
  element in nanoseconds (``--plot-y time``, the scaling plot: flat where a kernel is
  memory- or compute-bound, rising to the left where the per-call cost dominates).
* **Threads**: each loss runs at 1 thread and at all threads (``--threads``). fastloss
  gets ``n_threads``; threadpoolctl limits the OpenMP/BLAS pools of other libraries,
  ``torch.set_num_threads`` and ``numba.set_num_threads`` are set too. The reference and
  the floors are single-threaded NumPy and are timed once per case. The header gives the
  load average: other processes on the machine make the timings, multi-thread ones most of
  all, unreliable, and the report says so when it sees them.

How the peers compute the same quantity (all of them are checked against the reference)
---------------------------------------------------------------------------------------
Every implementation returns the *mean* loss and its gradient with respect to the first
argument (that is, the per-element gradient divided by the number of samples).

* ``torch``: the functional loss and ``torch.autograd.grad`` (eager forward + backward).
  ``torch.compile``: the same function compiled (``dynamic=False``, recompiled for every
  case and thread count, because inductor bakes the thread count into its code).
* ``jax``: ``jax.jit(jax.value_and_grad(loss))``, float64 enabled. XLA sizes its CPU
  thread pool when jax starts, so jax runs only in the all-threads rows.
* ``sklearn``: the Cython loss kernels of ``sklearn._loss`` compute per-sample losses and
  gradients. ``HalfMultinomialLoss`` is exactly softmax cross-entropy and
  ``HalfBinomialLoss`` exactly binary cross-entropy with logits ("half" refers to half the
  deviance, so no factor 2 is involved); ``HuberLoss(delta)`` is PyTorch's huber, and
  ``smooth_l1`` with ``beta`` is ``HuberLoss(delta=beta) / beta``. The mean, and the 1/beta
  of smooth L1, are obtained by passing ``sample_weight = scale / n`` (one extra input
  stream, cheaper than a pass over the gradient) and summing ``loss_out``. Class labels are
  converted to the input's float dtype once, outside the timing (sklearn's convention).
  scikit-learn has no focal losses.
* ``numba``: a ``parallel=True`` kernel per loss, writing into a preallocated gradient.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import importlib.util
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["LOSSES", "PEER_FAMILIES", "LossEntry", "Case", "Implementation", "main",
           "make_case", "implementations", "check_result", "measure", "parse_size",
           "write_plot", "plot_value"]

# A zero-argument call that computes (loss, grad) or, for floors, None.
Call = Callable[[], Any]
# Builds a Call for one case and thread count. May raise NotApplicable.
Builder = Callable[["Case", int], Call]


class NotApplicable(Exception):
    """An implementation that cannot run this row (e.g. jax at a thread limit)."""


# --------------------------------------------------------------------------- inputs

@dataclasses.dataclass(frozen=True)
class Inputs:
    x: np.ndarray        # the differentiated input (logits or predictions)
    target: np.ndarray   # class indices (int64) or a float array of x's shape


def _class_inputs(shape, dtype, rng) -> Inputs:
    n, c = shape
    x = rng.standard_normal(shape, dtype=np.float64 if dtype == np.float64 else np.float32)
    return Inputs(x.astype(dtype, copy=False), rng.integers(0, c, n, dtype=np.int64))


def _binary_inputs(shape, dtype, rng) -> Inputs:
    x = rng.standard_normal(shape, dtype=np.float64 if dtype == np.float64 else np.float32)
    x *= 2
    return Inputs(x.astype(dtype, copy=False), (rng.random(shape) < 0.5).astype(dtype))


def _regression_inputs(shape, dtype, rng) -> Inputs:
    kind = np.float64 if dtype == np.float64 else np.float32
    return Inputs(rng.standard_normal(shape, dtype=kind).astype(dtype, copy=False),
                  rng.standard_normal(shape, dtype=kind).astype(dtype, copy=False))


# --------------------------------------------------------------------------- the table

@dataclasses.dataclass(frozen=True)
class LossEntry:
    """One loss of the report: everything else (rows, checks, suite) is derived from it."""

    name: str
    elementwise: bool                         # False: (N, C) logits with class indices
    make_inputs: Callable[[tuple, Any, np.random.Generator], Inputs]
    params: Mapping[str, Any]                 # keyword arguments given to every implementation
    peers: Mapping[str, Builder]              # "torch", "torch.compile", "jax", "sklearn", "numba"
    kernel: Optional[Callable] = None         # None: fastloss.<name>
    reference: Optional[Callable] = None      # None: fastloss.reference.<name>

    def resolve_kernel(self) -> Optional[Callable]:
        if self.kernel is not None:
            return self.kernel
        import fastloss
        return getattr(fastloss, self.name, None)

    def resolve_reference(self) -> Optional[Callable]:
        if self.reference is not None:
            return self.reference
        from fastloss import reference
        return getattr(reference, self.name, None)

    def shape_for(self, size: "Size") -> tuple:
        if size.shape is not None:
            if not self.elementwise and len(size.shape) != 2:
                raise ValueError(f"{self.name} needs a 2-D size NxC, got {size.label!r}")
            return size.shape
        n = size.n_elements
        if self.elementwise:
            return (n,)
        classes = 1000 if n >= 64000 else max(2, math.isqrt(n))
        return (max(1, n // classes), classes)


@dataclasses.dataclass
class Case:
    """One loss at one dtype and shape, with its inputs and the reference's result."""

    entry: LossEntry
    dtype: np.dtype
    shape: tuple
    size_label: str
    inputs: Inputs
    expected: Optional[Tuple[float, np.ndarray]] = None   # the reference's (loss, grad)
    expected_grad_max: Optional[float] = None             # max |grad| of the reference

    @property
    def x(self) -> np.ndarray:
        return self.inputs.x

    @property
    def target(self) -> np.ndarray:
        return self.inputs.target

    @property
    def params(self) -> Mapping[str, Any]:
        return self.entry.params

    @property
    def bytes_moved(self) -> int:
        """Input read + gradient written + targets read."""
        return 2 * self.x.nbytes + self.target.nbytes

    @property
    def n_mean(self) -> int:
        """The denominator of "mean": samples for class losses, elements otherwise."""
        return self.x.size if self.entry.elementwise else self.x.shape[0]


def make_case(entry: LossEntry, size: "Size", dtype, seed: int = 0,
              inputs: Optional[Inputs] = None) -> Case:
    dtype = np.dtype(dtype)
    shape = entry.shape_for(size)
    if inputs is None:
        inputs = entry.make_inputs(shape, dtype, np.random.default_rng(seed))
    return Case(entry, dtype, shape, size.label, inputs)


# --------------------------------------------------------------------------- implementations

@dataclasses.dataclass(frozen=True)
class Implementation:
    name: str
    family: str          # "fastloss", "reference", "floor", or a peer family
    build: Builder
    threaded: bool       # False: single-threaded whatever is asked, timed once per case
    # (case, result) -> None if right, else what is wrong; None: nothing to check
    check: Optional[Callable[["Case", Any], Optional[str]]] = None


def _fastloss_out(case: Case, n_threads: int) -> Call:
    kernel = case.entry.resolve_kernel()
    grad = np.empty_like(case.x)
    x, target, params = case.x, case.target, dict(case.params)
    return lambda: kernel(x, target, out=grad, n_threads=n_threads, **params)


def _fastloss_alloc(case: Case, n_threads: int) -> Call:
    kernel = case.entry.resolve_kernel()
    x, target, params = case.x, case.target, dict(case.params)
    return lambda: kernel(x, target, n_threads=n_threads, **params)


def _reference(case: Case, n_threads: int) -> Call:
    ref = case.entry.resolve_reference()
    x, target, params = case.x, case.target, dict(case.params)
    return lambda: ref(x, target, **params)


def _copy_floor(case: Case, n_threads: int) -> Call:
    x, dst = case.x, np.empty_like(case.x)

    def call():
        np.copyto(dst, x)
        return dst
    return call


def _add_floor(case: Case, n_threads: int) -> Call:
    x, target, dst = case.x, case.target, np.empty_like(case.x)
    return lambda: np.add(x, target, out=dst)


def _check_copy(case: Case, result) -> Optional[str]:
    return None if np.array_equal(result, case.x) else "the copy differs from the input"


def _check_add(case: Case, result) -> Optional[str]:
    return None if np.array_equal(result, case.x + case.target) else "wrong sum"


# --------------------------------------------------------------------------- checking

def _tolerances(dtype) -> Tuple[float, float]:
    """(rtol, atol relative to the largest gradient entry) for comparing with the reference."""
    return (1e-4, 1e-5) if np.dtype(dtype) == np.float32 else (1e-9, 1e-12)


def _as_result(result) -> Tuple[float, np.ndarray]:
    loss, grad = result
    return float(loss), np.asarray(grad)


_CHECK_CHUNK = 1 << 18  # elements compared at a time: the temporaries stay in cache


def check_result(case: Case, result) -> Optional[str]:
    """None when ``result`` = (loss, grad) matches the reference's ``case.expected``, else
    what is wrong: |grad - expected| <= atol + rtol |expected| everywhere (nan never
    matches), with atol scaled by the largest reference gradient entry."""
    expected_loss, expected_grad = case.expected
    try:
        loss, grad = _as_result(result)
    except Exception as exc:  # noqa: BLE001 - any malformed result is a failure
        return f"result is not (loss, grad): {type(exc).__name__}: {exc}"
    rtol, atol_scale = _tolerances(case.dtype)
    if grad.shape != expected_grad.shape:
        return f"gradient shape {grad.shape}, expected {expected_grad.shape}"
    if not math.isclose(loss, expected_loss, rel_tol=rtol, abs_tol=0.0):
        return f"loss {loss!r}, reference {expected_loss!r} (rtol {rtol:g})"
    if case.expected_grad_max is None:
        case.expected_grad_max = float(np.max(np.abs(expected_grad))) if expected_grad.size else 0.0
    atol = atol_scale * case.expected_grad_max
    flat_grad, flat_expected = grad.reshape(-1), expected_grad.reshape(-1)

    def mismatches(start):
        # in the arrays' own dtype: its rounding is far below the tolerances
        g = flat_grad[start:start + _CHECK_CHUNK]
        e = flat_expected[start:start + _CHECK_CHUNK]
        return ~(np.abs(g - e) <= atol + rtol * np.abs(e))

    for start in range(0, flat_grad.size, _CHECK_CHUNK):
        bad = mismatches(start)
        if bad.any():
            n_bad = int(bad.sum()) + sum(int(mismatches(rest).sum()) for rest in
                                         range(start + _CHECK_CHUNK, flat_grad.size, _CHECK_CHUNK))
            first = start + int(np.flatnonzero(bad)[0])
            index = tuple(int(i) for i in np.unravel_index(first, grad.shape))
            return (f"gradient differs at {n_bad} of {grad.size} entries; first at {index}: "
                    f"{flat_grad[first]!r}, reference {flat_expected[first]!r} "
                    f"(rtol {rtol:g}, atol {atol:.3g})")
    return None


FASTLOSS_IMPLS = (
    Implementation("fastloss", "fastloss", _fastloss_out, threaded=True, check=check_result),
    Implementation("fastloss-alloc", "fastloss", _fastloss_alloc, threaded=True,
                   check=check_result),
)
REFERENCE_IMPL = Implementation("reference", "reference", _reference, threaded=False)
COPY_FLOOR = Implementation("copy-floor", "floor", _copy_floor, threaded=False, check=_check_copy)
ADD_FLOOR = Implementation("add-floor", "floor", _add_floor, threaded=False, check=_check_add)


def implementations(entry: LossEntry, peers: Sequence[str] = ()) -> List[Implementation]:
    """The rows of one loss: reference, floors, fastloss, then the requested peers that
    the table has for this loss (peers are implementation names such as "torch.compile")."""
    rows = [REFERENCE_IMPL, COPY_FLOOR] + ([ADD_FLOOR] if entry.elementwise else [])
    rows += list(FASTLOSS_IMPLS)
    for name in peers:
        if name in entry.peers:
            rows.append(Implementation(name, name.split(".")[0], entry.peers[name],
                                       threaded=True, check=check_result))
    return rows


# --------------------------------------------------------------------------- timing

@dataclasses.dataclass
class Timing:
    samples: List[float]       # seconds per call, one entry per repeat
    calls_per_sample: int

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def quartiles(self) -> Tuple[float, float]:
        if len(self.samples) < 2:
            return self.samples[0], self.samples[0]
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[0], q[2]


def measure(call: Call, *, budget: float, min_repeats: int, max_repeats: int = 200,
            max_total: float = math.inf, min_sample: float = 2e-4,
            first: Optional[float] = None) -> Timing:
    """Median-able timings of ``call`` (which has been called at least once already, so
    caches, JITs and allocators are warm). Calls are batched so a sample lasts at least
    ``min_sample`` seconds; repeats fill ``budget`` seconds within [min_repeats, max_repeats],
    but take no more than ``max_total`` seconds (at least one sample: a call that slow is
    timed once). ``first``: the duration of a call just made that is representative (no
    warm-up effects), used as the first sample instead of making one more call."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if first is None:
            start = time.perf_counter()
            call()
            single = time.perf_counter() - start
        else:
            single = first
        samples = []
        calls = 1
        if single >= min_sample:
            samples.append(single)
        else:
            calls = max(2, math.ceil(min_sample / max(single, 1e-8)))
        per_sample = max(single * calls, 1e-9)
        repeats = int(min(max_repeats, max(min_repeats, budget / per_sample)))
        if max_total < math.inf:
            repeats = max(1, min(repeats, int(max_total / per_sample)))
        perf_counter = time.perf_counter
        while len(samples) < repeats:
            start = perf_counter()
            for _ in range(calls):
                call()
            samples.append((perf_counter() - start) / calls)
        return Timing(samples, calls)
    finally:
        if gc_was_enabled:
            gc.enable()


# --------------------------------------------------------------------------- sizes

@dataclasses.dataclass(frozen=True)
class Size:
    label: str
    n_elements: Optional[int] = None
    shape: Optional[tuple] = None


def _cache_sizes() -> Dict[str, int]:
    """{"L1d": bytes, "L2": bytes, "L3": bytes} from Linux sysfs (per instance), else {}."""
    sizes: Dict[str, int] = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(base)):
            path = os.path.join(base, index)
            with open(os.path.join(path, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(path, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(path, "size")) as f:
                text = f.read().strip()
            if kind == "Instruction":
                continue
            factor = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:], 1)
            value = int(text.rstrip("KMG")) * factor
            sizes["L1d" if level == "1" else f"L{level}"] = value
    except (OSError, ValueError):
        pass
    return sizes


def named_sizes() -> Dict[str, int]:
    """tiny, cache and large as counts of elements of the differentiated input."""
    llc = max(_cache_sizes().values(), default=32 * 1024 ** 2)
    large = 1 << 24
    while large * 4 < 2 * llc and large < (1 << 27):  # twice the LLC in float32
        large <<= 1
    return {"tiny": 4096, "cache": 1 << 17, "large": large}


def parse_size(text: str) -> Size:
    """"tiny" | "cache" | "large" | an element count ("100000", "1e6") | a shape "NxC"."""
    text = text.strip().lower()
    names = named_sizes()
    if text in names:
        return Size(text, n_elements=names[text])
    if "x" in text:
        parts = text.split("x")
        if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
            shape = tuple(int(p) for p in parts)
            return Size(f"{shape[0]}x{shape[1]}", shape=shape)
        raise ValueError(f"size {text!r}: a shape is two positive integers NxC, e.g. 4096x1000")
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise ValueError(f"unknown size {text!r}: use {', '.join(names)}, an element count "
                         "or a shape NxC") from None
    if not value.is_integer() or value < 1:
        raise ValueError(f"size {text!r}: an element count must be a positive integer")
    return Size(str(int(value)), n_elements=int(value))


# --------------------------------------------------------------------------- peers

@dataclasses.dataclass(frozen=True)
class PeerFamily:
    name: str
    module: str                    # the module whose presence makes the family available
    implementations: Tuple[str, ...]
    install: str                   # how to install it


PEER_FAMILIES: Dict[str, PeerFamily] = {
    "torch": PeerFamily("torch", "torch", ("torch", "torch.compile"), "pip install torch"),
    "jax": PeerFamily("jax", "jax", ("jax",), "pip install jax"),
    "sklearn": PeerFamily("sklearn", "sklearn", ("sklearn",), "pip install scikit-learn"),
    "numba": PeerFamily("numba", "numba", ("numba",), "pip install numba"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _torch_eager(loss_fn: Callable) -> Builder:
    def build(case: Case, n_threads: int) -> Call:
        import torch
        x = torch.from_numpy(case.x).requires_grad_()
        target = torch.from_numpy(case.target)
        params = dict(case.params)

        def call():
            loss = loss_fn(x, target, **params)
            (grad,) = torch.autograd.grad(loss, x)
            return loss.detach(), grad
        return call
    return build


def _torch_compiled(loss_fn: Callable) -> Builder:
    def build(case: Case, n_threads: int) -> Call:
        import torch
        # Inductor bakes torch.get_num_threads() into the generated code and dynamo does not
        # guard on it: start from a clean cache so this row compiles for its thread count.
        torch._dynamo.reset()
        params = dict(case.params)
        compiled = torch.compile(lambda x, t: loss_fn(x, t, **params), dynamic=False)
        x = torch.from_numpy(case.x).requires_grad_()
        target = torch.from_numpy(case.target)

        def call():
            loss = compiled(x, target)
            (grad,) = torch.autograd.grad(loss, x)
            return loss.detach(), grad
        return call
    return build


@functools.lru_cache(maxsize=None)
def _jax_module():
    import jax
    jax.config.update("jax_enable_x64", True)
    return jax


def _jax(loss_fn: Callable) -> Builder:
    """loss_fn(jnp, x, target, **params) -> scalar."""
    def build(case: Case, n_threads: int) -> Call:
        if n_threads < _all_threads():
            raise NotApplicable("jax runs only in the all-threads rows (XLA's CPU thread "
                                "pool is sized when jax starts)")
        jax = _jax_module()
        import jax.numpy as jnp
        params = dict(case.params)
        value_and_grad = jax.jit(jax.value_and_grad(lambda x, t: loss_fn(jnp, x, t, **params)))
        x, target = jax.device_put(case.x), jax.device_put(case.target)

        def call():
            loss, grad = value_and_grad(x, target)
            grad.block_until_ready()
            return loss, grad
        return call
    return build


def _sklearn(make_loss: Callable,
             scale: Callable[[Mapping], float] = lambda params: 1.0) -> Builder:
    """make_loss(sklearn._loss.loss module, case) -> a loss object; ``scale(params)``
    multiplies the per-sample loss and gradient (through sample_weight, with the 1/n of
    "mean")."""
    def build(case: Case, n_threads: int) -> Call:
        from sklearn._loss import loss as sklearn_loss
        loss_object = make_loss(sklearn_loss, case)
        dtype = case.dtype
        if case.entry.elementwise:
            raw = case.x.reshape(-1)
            y_true = case.target.reshape(-1)
        else:
            raw = case.x
            y_true = case.target.astype(dtype)  # sklearn takes labels as floats
        n_samples = raw.shape[0]
        sample_weight = np.full(n_samples, scale(case.params) / case.n_mean, dtype=dtype)
        loss_out = np.empty(n_samples, dtype=dtype)
        grad = np.empty_like(raw)
        shape = case.x.shape

        def call():
            loss_object.loss_gradient(y_true, raw, sample_weight=sample_weight,
                                      loss_out=loss_out, gradient_out=grad, n_threads=n_threads)
            return float(loss_out.sum(dtype=np.float64)), grad.reshape(shape)
        return call
    return build


def _numba(kernel_name: str, param_names: Sequence[str] = ()) -> Builder:
    def build(case: Case, n_threads: int) -> Call:
        import numba
        kernel = _numba_kernels()[kernel_name]
        numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
        grad = np.empty_like(case.x)
        args = [case.params[name] for name in param_names]
        if case.entry.elementwise:
            x, target, grad_view = case.x.reshape(-1), case.target.reshape(-1), grad.reshape(-1)
        else:
            x, target, grad_view = case.x, case.target, grad

        def call():
            return kernel(x, target, grad_view, *args), grad
        return call
    return build


@functools.lru_cache(maxsize=None)
def _numba_kernels() -> Dict[str, Callable]:
    """Plain numba kernels: mean loss returned (summed in float64), gradient of the mean
    written into ``grad``. Compiled on first use per dtype."""
    import numba
    from numba import prange

    @numba.njit(parallel=True)
    def softmax_cross_entropy(x, y, grad):
        n, c = x.shape
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            m = x[i, 0]
            for j in range(c):
                m = max(m, x[i, j])
            s = 0.0
            for j in range(c):
                e = math.exp(x[i, j] - m)
                grad[i, j] = e
                s += e
            inv = 1.0 / s
            for j in range(c):
                grad[i, j] = grad[i, j] * inv * scale
            grad[i, y[i]] -= scale
            total += math.log(s) - (x[i, y[i]] - m)
        return total * scale

    @numba.njit(parallel=True)
    def softmax_focal(x, y, grad, gamma):
        n, c = x.shape
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            m = x[i, 0]
            for j in range(c):
                m = max(m, x[i, j])
            s = 0.0
            for j in range(c):
                e = math.exp(x[i, j] - m)
                grad[i, j] = e
                s += e
            log_pt = (x[i, y[i]] - m) - math.log(s)
            pt = math.exp(log_pt)
            q = 1.0 - pt
            # d/dx_j [-(1-pt)^g log pt] = coef * ([j==y] - p_j)
            coef = gamma * q ** (gamma - 1.0) * pt * log_pt - q ** gamma if q > 0 else 0.0
            total += -(q ** gamma) * log_pt
            inv = 1.0 / s
            for j in range(c):
                grad[i, j] = -coef * grad[i, j] * inv * scale
            grad[i, y[i]] += coef * scale
        return total * scale

    @numba.njit(parallel=True)
    def binary_cross_entropy_with_logits(z, t, grad):
        n = z.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            e = math.exp(-abs(z[i]))
            total += max(z[i], 0.0) - z[i] * t[i] + math.log1p(e)
            p = 1.0 / (1.0 + e) if z[i] >= 0 else e / (1.0 + e)
            grad[i] = (p - t[i]) * scale
        return total * scale

    @numba.njit(parallel=True)
    def sigmoid_focal(z, t, grad, alpha, gamma):
        n = z.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            e = math.exp(-abs(z[i]))
            ce = max(z[i], 0.0) - z[i] * t[i] + math.log1p(e)
            p = 1.0 / (1.0 + e) if z[i] >= 0 else e / (1.0 + e)
            q = 1.0 - (p * t[i] + (1.0 - p) * (1.0 - t[i]))      # 1 - p_t
            w = alpha * t[i] + (1.0 - alpha) * (1.0 - t[i]) if alpha >= 0 else 1.0
            total += w * ce * q ** gamma
            dq = -(2.0 * t[i] - 1.0) * p * (1.0 - p)            # d(1 - p_t)/dz
            dmod = gamma * q ** (gamma - 1.0) * dq if q > 0 else 0.0
            grad[i] = w * ((p - t[i]) * q ** gamma + ce * dmod) * scale
        return total * scale

    @numba.njit(parallel=True)
    def huber(x, t, grad, delta):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            d = x[i] - t[i]
            if abs(d) < delta:
                total += 0.5 * d * d
                grad[i] = d * scale
            else:
                total += delta * (abs(d) - 0.5 * delta)
                grad[i] = (delta if d > 0 else -delta) * scale
        return total * scale

    @numba.njit(parallel=True)
    def smooth_l1(x, t, grad, beta):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            d = x[i] - t[i]
            if abs(d) < beta:
                total += 0.5 * d * d / beta
                grad[i] = d / beta * scale
            else:
                total += abs(d) - 0.5 * beta
                grad[i] = (1.0 if d > 0 else -1.0) * scale
        return total * scale

    return {f.__name__: f for f in (softmax_cross_entropy, softmax_focal,
                                    binary_cross_entropy_with_logits, sigmoid_focal,
                                    huber, smooth_l1)}


# torch and jax formulations (the torch ones use torch's own functional losses where it
# has them; focal losses are written from their definitions in docs/API).

def _torch_softmax_ce(x, t):
    import torch.nn.functional as F
    return F.cross_entropy(x, t)


def _torch_bce(x, t):
    import torch.nn.functional as F
    return F.binary_cross_entropy_with_logits(x, t)


def _torch_huber(x, t, delta):
    import torch.nn.functional as F
    return F.huber_loss(x, t, delta=delta)


def _torch_smooth_l1(x, t, beta):
    import torch.nn.functional as F
    return F.smooth_l1_loss(x, t, beta=beta)


def _torch_sigmoid_focal(x, t, alpha, gamma):
    """torchvision.ops.sigmoid_focal_loss with reduction "mean"."""
    import torch
    import torch.nn.functional as F
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean()


def _torch_softmax_focal(x, t, gamma):
    import torch
    log_pt = torch.log_softmax(x, dim=1).gather(1, t[:, None])[:, 0]
    return (-(1 - log_pt.exp()) ** gamma * log_pt).mean()


def _jax_softmax_ce(jnp, x, t):
    import jax
    log_p = jax.nn.log_softmax(x, axis=1)
    return -jnp.take_along_axis(log_p, t[:, None], axis=1).mean()


def _jax_bce(jnp, x, t):
    import jax
    return -(t * jax.nn.log_sigmoid(x) + (1 - t) * jax.nn.log_sigmoid(-x)).mean()


def _jax_huber(jnp, x, t, delta):
    d = jnp.abs(x - t)
    return jnp.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)).mean()


def _jax_smooth_l1(jnp, x, t, beta):
    d = jnp.abs(x - t)
    return jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta).mean()


def _jax_sigmoid_focal(jnp, x, t, alpha, gamma):
    import jax
    p = jax.nn.sigmoid(x)
    ce = -(t * jax.nn.log_sigmoid(x) + (1 - t) * jax.nn.log_sigmoid(-x))
    loss = ce * (1 - (p * t + (1 - p) * (1 - t))) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean()


def _jax_softmax_focal(jnp, x, t, gamma):
    import jax
    log_pt = jnp.take_along_axis(jax.nn.log_softmax(x, axis=1), t[:, None], axis=1)[:, 0]
    return (-(1 - jnp.exp(log_pt)) ** gamma * log_pt).mean()


LOSSES: Dict[str, LossEntry] = {entry.name: entry for entry in [
    LossEntry(
        "softmax_cross_entropy", False, _class_inputs, {},
        peers={
            "torch": _torch_eager(_torch_softmax_ce),
            "torch.compile": _torch_compiled(_torch_softmax_ce),
            "jax": _jax(_jax_softmax_ce),
            "sklearn": _sklearn(lambda sk, case: sk.HalfMultinomialLoss(n_classes=case.shape[1])),
            "numba": _numba("softmax_cross_entropy"),
        }),
    LossEntry(
        "binary_cross_entropy_with_logits", True, _binary_inputs, {},
        peers={
            "torch": _torch_eager(_torch_bce),
            "torch.compile": _torch_compiled(_torch_bce),
            "jax": _jax(_jax_bce),
            "sklearn": _sklearn(lambda sk, case: sk.HalfBinomialLoss()),
            "numba": _numba("binary_cross_entropy_with_logits"),
        }),
    LossEntry(
        "huber", True, _regression_inputs, {"delta": 1.0},
        peers={
            "torch": _torch_eager(_torch_huber),
            "torch.compile": _torch_compiled(_torch_huber),
            "jax": _jax(_jax_huber),
            "sklearn": _sklearn(lambda sk, case: sk.HuberLoss(delta=case.params["delta"])),
            "numba": _numba("huber", ("delta",)),
        }),
    LossEntry(
        "smooth_l1", True, _regression_inputs, {"beta": 1.0},
        peers={
            "torch": _torch_eager(_torch_smooth_l1),
            "torch.compile": _torch_compiled(_torch_smooth_l1),
            "jax": _jax(_jax_smooth_l1),
            # smooth_l1(beta) = huber(delta=beta) / beta
            "sklearn": _sklearn(lambda sk, case: sk.HuberLoss(delta=case.params["beta"]),
                                scale=lambda params: 1.0 / params["beta"]),
            "numba": _numba("smooth_l1", ("beta",)),
        }),
    LossEntry(
        "sigmoid_focal", True, _binary_inputs, {"alpha": 0.25, "gamma": 2.0},
        peers={
            "torch": _torch_eager(_torch_sigmoid_focal),
            "torch.compile": _torch_compiled(_torch_sigmoid_focal),
            "jax": _jax(_jax_sigmoid_focal),
            "numba": _numba("sigmoid_focal", ("alpha", "gamma")),
        }),
    LossEntry(
        "softmax_focal", False, _class_inputs, {"gamma": 2.0},
        peers={
            "torch": _torch_eager(_torch_softmax_focal),
            "torch.compile": _torch_compiled(_torch_softmax_focal),
            "jax": _jax(_jax_softmax_focal),
            "numba": _numba("softmax_focal", ("gamma",)),
        }),
]}


# --------------------------------------------------------------------------- threads

def _all_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def thread_limit(n_threads: int):
    """Limit the thread pools of numpy's BLAS, OpenMP runtimes (threadpoolctl), torch and
    numba to ``n_threads`` (fastloss gets n_threads explicitly)."""
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
            stack.enter_context(threadpool_limits(limits=n_threads))
        except ImportError:
            pass
        if "torch" in sys.modules:
            torch = sys.modules["torch"]
            before = torch.get_num_threads()
            torch.set_num_threads(n_threads)
            stack.callback(torch.set_num_threads, before)
        if "numba" in sys.modules:
            numba = sys.modules["numba"]
            before = numba.get_num_threads()
            numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
            stack.callback(numba.set_num_threads, before)
        yield


# --------------------------------------------------------------------------- the run

@dataclasses.dataclass
class Settings:
    losses: List[str]
    sizes: List[Size]
    dtypes: List[str]
    threads: List[int]
    peers: List[str]               # implementation names
    budget: float                  # seconds of repeats per measurement
    min_repeats: int
    max_total: float               # seconds at most per measurement (a slower call: once)
    seed: int = 0


@dataclasses.dataclass
class Report:
    machine: Dict[str, Any]
    settings: Dict[str, Any]
    results: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    failures: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped: List[str] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> Dict[str, Any]:
        return {"schema": "fastloss-bench/1", "machine": self.machine,
                "settings": self.settings, "results": self.results,
                "failures": self.failures, "skipped": self.skipped, "notes": self.notes,
                "seconds": self.seconds}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> Dict[str, Any]:
    import fastloss
    config = fastloss.show_config(file=io.StringIO())
    caches = _cache_sizes()
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": _all_threads(),
        "caches": {k: f"{v // 1024} KiB" if v < 1024 ** 2 else f"{v // 1024 ** 2} MiB"
                   for k, v in caches.items()},
        "os": f"{platform.system()} {platform.release()}",
        "python": config.get("python"),
        "numpy": config.get("numpy"),
        "fastloss": config.get("fastloss"),
        "simd_level": fastloss.simd_level(),
        "openmp": config.get("openmp"),
        "default_n_threads": config.get("default_n_threads"),
        "compiler": config.get("compiler"),
        "compile_flags": config.get("compile_flags"),
        "load_average": _load_average(),
    }


def _load_average() -> Optional[float]:
    """The 1-minute load average: runnable processes, including other users' (a busy
    machine makes timings, multi-thread ones most of all, unreliable)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_impl(case: Case, impl: Implementation, n_threads: int, settings: Settings,
              report: Report) -> Optional[Timing]:
    where = f"{case.entry.name} {case.dtype} {'x'.join(map(str, case.shape))} " \
            f"{n_threads} thread{'s' if n_threads > 1 else ''} {impl.name}"
    try:
        call = impl.build(case, n_threads)
        result = call()
    except NotApplicable as exc:
        note = f"{impl.name}: {exc}"
        if note not in report.notes:
            report.notes.append(note)
        return None
    except Exception as exc:  # noqa: BLE001 - reported as a failure, the run goes on
        message = f"raised {type(exc).__name__}: {exc}".strip()
        report.failures.append({"case": where, "implementation": impl.name, "message": message})
        _progress(f"  FAILED {where}: {message}")
        return None
    if impl.check is not None:
        problem = impl.check(case, result)
        if problem is not None:
            report.failures.append({"case": where, "implementation": impl.name,
                                    "message": problem})
            _progress(f"  FAILED {where}: wrong result: {problem}")
            return None
    del result
    return measure(call, budget=settings.budget, min_repeats=settings.min_repeats,
                   max_total=settings.max_total)


def _record(report: Report, case: Case, impl: Implementation, threads: int,
            timing: Timing) -> Dict[str, Any]:
    q1, q3 = timing.quartiles
    median = timing.median
    row = {
        "loss": case.entry.name, "dtype": str(case.dtype), "size": case.size_label,
        "shape": list(case.shape), "n_elements": int(case.x.size), "threads": threads,
        "implementation": impl.name, "family": impl.family,
        "median_s": median, "q1_s": q1, "q3_s": q3, "min_s": min(timing.samples),
        "repeats": len(timing.samples), "calls_per_repeat": timing.calls_per_sample,
        "bytes": case.bytes_moved, "gb_per_s": case.bytes_moved / median / 1e9,
    }
    report.results.append(row)
    return row


def run(settings: Settings) -> Report:
    started = time.perf_counter()
    report = Report(machine=machine_description(), settings={
        "losses": settings.losses, "sizes": [s.label for s in settings.sizes],
        "dtypes": settings.dtypes, "threads": settings.threads, "compare": settings.peers,
        "budget_s": settings.budget, "min_repeats": settings.min_repeats,
        "max_total_s": settings.max_total,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    })
    entries = []
    for name in settings.losses:
        entry = LOSSES[name]
        if entry.resolve_kernel() is None or entry.resolve_reference() is None:
            import fastloss
            missing = "fastloss" if entry.resolve_kernel() is None else "fastloss.reference"
            message = (f"{name}: not in the installed {missing} {fastloss.__version__} "
                       "(skipped)")
            report.skipped.append(message)
            _progress(message)
        else:
            entries.append(entry)
    if "threadpoolctl" not in sys.modules and not _installed("threadpoolctl"):
        report.notes.append("threadpoolctl is not installed: other libraries' BLAS/OpenMP "
                            "pools are not limited in the 1-thread rows")

    total = len(entries) * len(settings.dtypes) * len(settings.sizes)
    done = 0
    for dtype in settings.dtypes:
        for size in settings.sizes:
            shared_inputs: Dict[tuple, Inputs] = {}
            for entry in entries:
                shape = entry.shape_for(size)
                key = (entry.make_inputs, shape)
                case = make_case(entry, size, dtype, settings.seed, shared_inputs.get(key))
                shared_inputs[key] = case.inputs
                done += 1
                _progress(f"[{done}/{total}] {entry.name} {dtype} {size.label} "
                          f"({'x'.join(map(str, shape))}) t={time.perf_counter() - started:.1f}s")
                _run_case(case, settings, report)
            del shared_inputs
    report.seconds = time.perf_counter() - started
    few = [r for r in report.results if r["repeats"] < settings.min_repeats]
    if few:
        report.notes.append(
            f"{len(few)} measurement(s) timed fewer than {settings.min_repeats} times: at "
            f"most {settings.max_total:g} s is spent on one measurement, and their calls are "
            "too slow for more (down to a single call; see the repeats column)")
    load_end = _load_average()
    report.machine["load_average_end"] = load_end
    load_start = report.machine["load_average"]
    # During the run this process itself keeps about one CPU busy.
    if (load_start or 0) > 0.5 or (load_end or 0) > 1.5:
        report.notes.append(
            f"the machine was busy with other processes (load average {load_start} at the "
            f"start, {load_end} at the end, on {_all_threads()} CPUs): timings, "
            "multi-thread ones most of all, are unreliable")
    return report


def _run_case(case: Case, settings: Settings, report: Report) -> None:
    impls = implementations(case.entry, settings.peers)
    reference = impls[0]
    assert reference is REFERENCE_IMPL
    # The reference's result is the oracle. Its first call is timed too: NumPy has nothing
    # to warm up, and at large sizes the reference dominates the run time.
    try:
        call = reference.build(case, 1)
        with thread_limit(1):
            start = time.perf_counter()
            loss, grad = call()
            first = time.perf_counter() - start
        case.expected = (float(loss), np.asarray(grad))
        del loss, grad
    except Exception as exc:  # noqa: BLE001
        report.failures.append({"case": f"{case.entry.name} {case.dtype} {case.size_label}",
                                "implementation": "reference",
                                "message": f"raised {type(exc).__name__}: {exc}"})
        return
    rows = {}
    with thread_limit(1):
        ref_timing = measure(call, budget=settings.budget, min_repeats=settings.min_repeats,
                             max_total=settings.max_total, first=first)
        rows["reference"] = _record(report, case, reference, 1, ref_timing)
        for impl in impls[1:]:
            if impl.threaded:
                continue
            # Floors are cheap: measured again for every loss, close in time to the rows
            # they normalise (a busy moment on a shared machine spoils one measurement).
            timing = _run_impl(case, impl, 1, settings, report)
            if timing is not None:
                rows[impl.name] = _record(report, case, impl, 1, timing)
    threaded_rows = []
    for n_threads in settings.threads:
        with thread_limit(n_threads):
            for impl in impls:
                if not impl.threaded:
                    continue
                timing = _run_impl(case, impl, n_threads, settings, report)
                if timing is not None:
                    threaded_rows.append(_record(report, case, impl, n_threads, timing))
    for row in [*rows.values(), *threaded_rows]:
        row["speedup_vs_reference"] = rows["reference"]["median_s"] / row["median_s"]
        for floor in ("copy-floor", "add-floor"):
            if floor in rows:
                row[f"ratio_to_{floor.replace('-', '_')}"] = (
                    row["median_s"] / rows[floor]["median_s"])


# --------------------------------------------------------------------------- output

def _format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


COLUMNS = ("loss", "dtype", "shape", "threads", "implementation", "median", "±IQR/2", "repeats",
           "GB/s", "vs ref", "/copy", "/a+b")


def _table_rows(report: Report) -> List[List[str]]:
    order = {name: i for i, name in enumerate(LOSSES)}
    impl_order = ["reference", "copy-floor", "add-floor", "fastloss", "fastloss-alloc"]
    rows = sorted(report.results, key=lambda r: (
        order.get(r["loss"], 99), r["dtype"], r["n_elements"],
        0 if r["family"] in ("reference", "floor") else r["threads"],
        impl_order.index(r["implementation"]) if r["implementation"] in impl_order else 9,
        r["implementation"]))
    table = []
    for r in rows:
        spread = (r["q3_s"] - r["q1_s"]) / 2 / r["median_s"] * 100
        table.append([
            r["loss"], r["dtype"], "x".join(map(str, r["shape"])), str(r["threads"]),
            r["implementation"], _format_time(r["median_s"]), f"{spread:.1f}%",
            f"{r['repeats']}×{r['calls_per_repeat']}",
            f"{r['gb_per_s']:.2f}", f"{r.get('speedup_vs_reference', float('nan')):.2f}",
            f"{r['ratio_to_copy_floor']:.2f}" if "ratio_to_copy_floor" in r else "",
            f"{r['ratio_to_add_floor']:.2f}" if "ratio_to_add_floor" in r else "",
        ])
    return table


def _header_lines(report: Report) -> List[str]:
    m = report.machine
    caches = ", ".join(f"{k} {v}" for k, v in m["caches"].items()) or "unknown"
    lines = [
        f"fastloss {m['fastloss']} benchmark: SIMD level {m['simd_level']}, OpenMP "
        f"{'on' if m['openmp'] else 'off'} (default {m['default_n_threads']} threads)",
        f"CPU: {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs; "
        f"caches (per instance): {caches}",
        f"{m['os']}, Python {m['python']}, NumPy {m['numpy']}, compiler {m['compiler']} "
        f"{m['compile_flags']}".rstrip() + f"; load average at start {m['load_average']}",
        f"run {report.settings['date']}: sizes {','.join(report.settings['sizes'])}; dtypes "
        f"{','.join(report.settings['dtypes'])}; threads "
        f"{','.join(map(str, report.settings['threads']))}; compared: "
        f"{', '.join(report.settings['compare']) or 'none'}",
        "median of repeats ± half the interquartile range; repeats = timed samples × calls "
        "per sample; GB/s = (input + gradient + target bytes) / time; vs ref = reference "
        "time / time; /copy, /a+b = time / floor time (np.copyto, np.add out=; 1 thread)",
    ]
    shapes = _class_shapes(report)
    if shapes:
        lines.append("class-index losses take an element count as N x C, C = 1000 from 64000 "
                     "elements on, else max(2, isqrt(count)), N = max(1, count // C): "
                     + ", ".join(f"{label} -> {shape}" for label, shape in shapes))
    return lines


def _class_shapes(report: Report) -> List[Tuple[str, str]]:
    """(size label, "NxC") for each size that a class-index loss turned into a shape
    (explicit shapes NxC left out), in increasing size."""
    shapes = {}
    for r in report.results:
        entry = LOSSES.get(r["loss"])
        shape = "x".join(map(str, r["shape"]))
        if entry is not None and not entry.elementwise and r["size"] != shape:
            shapes[r["size"]] = (r["n_elements"], shape)
    return [(label, shape) for label, (_, shape) in
            sorted(shapes.items(), key=lambda item: item[1][0])]


def _summary(report: Report) -> Tuple[str, List[str], List[List[str]]]:
    """At each loss and dtype's largest size and most threads: fastloss's time, its ratio
    to the floor, and how many times faster it is than the reference and each peer."""
    fastloss_rows = [r for r in report.results if r["implementation"] == "fastloss"]
    if not fastloss_rows:
        return "", [], []
    peers = sorted({r["implementation"] for r in report.results
                    if r["family"] not in ("fastloss", "reference", "floor")})
    order = {name: i for i, name in enumerate(LOSSES)}
    columns = ["loss", "dtype", "shape", "threads", "fastloss", "/floor", "x reference"]
    columns += [f"x {peer}" for peer in peers]
    table = []
    groups = sorted({(r["loss"], r["dtype"]) for r in fastloss_rows},
                    key=lambda key: (order.get(key[0], 99), key[1]))
    for loss, dtype in groups:
        mine = [r for r in fastloss_rows if r["loss"] == loss and r["dtype"] == dtype]
        best = max(mine, key=lambda r: (r["n_elements"], r["threads"]))
        same = [r for r in report.results if r["loss"] == loss and r["dtype"] == dtype
                and r["size"] == best["size"]]
        floor = best.get("ratio_to_add_floor", best.get("ratio_to_copy_floor"))
        row = [loss, dtype, "x".join(map(str, best["shape"])), str(best["threads"]),
               _format_time(best["median_s"]), f"{floor:.2f}" if floor is not None else "",
               f"{best['speedup_vs_reference']:.1f}"]
        for peer in peers:
            # the peer at the same thread count (jax: all threads only)
            match = [r for r in same if r["implementation"] == peer
                     and r["threads"] == best["threads"]]
            row.append(f"{match[0]['median_s'] / best['median_s']:.1f}" if match else "")
        table.append(row)
    title = ("Summary: fastloss (out=) at the largest size and most threads; /floor = time "
             "over the memory floor (a+b for element-wise losses, copy otherwise); x NAME = "
             "how many times faster than NAME")
    return title, columns, table


def _aligned(columns: Sequence[str], table: List[List[str]], right_from: int,
             group_width: int = 0) -> List[str]:
    widths = [max([len(h)] + [len(row[i]) for row in table]) for i, h in enumerate(columns)]

    def fmt(cells):
        return "  ".join(c.rjust(w) if i >= right_from or c[:1].isdigit() and i == 3
                         else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [fmt(columns), fmt(["-" * w for w in widths])]
    previous = None
    for row in table:
        group = tuple(row[:group_width])
        if group_width and previous is not None and group != previous:
            out.append("")
        previous = group
        out.append(fmt(row))
    return out


def render_text(report: Report) -> str:
    out = list(_header_lines(report)) + [""]
    out += _aligned(COLUMNS, _table_rows(report), right_from=5, group_width=3)
    title, columns, summary = _summary(report)
    if summary:
        out += ["", title] + _aligned(columns, summary, right_from=4)
    out += _trailer_lines(report)
    return "\n".join(out) + "\n"


def _markdown_table(columns: Sequence[str], table: List[List[str]], right_from: int) -> List[str]:
    out = ["| " + " | ".join(columns) + " |",
           "|" + "|".join("---" if i < right_from else "---:" for i in range(len(columns))) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table]
    return out


def _trailer_lines(report: Report) -> List[str]:
    out = []
    for message in report.skipped:
        out.append(f"skipped: {message}")
    for note in report.notes:
        out.append(f"note: {note}")
    for failure in report.failures:
        out.append(f"FAILED: {failure['case']}: {failure['message']}")
    if report.failures:
        out.append(f"{len(report.failures)} implementation(s) FAILED the check against "
                   "the reference (not timed)")
    out.append(f"total time {report.seconds:.1f} s")
    return [""] + out if out else out


def render_markdown(report: Report) -> str:
    out = ["# fastloss benchmark", ""]
    out += [f"- {line}" for line in _header_lines(report)]
    title, columns, summary = _summary(report)
    if summary:
        out += ["", f"## {title.split(':')[0]}", "", title.split(": ", 1)[1] + ".", ""]
        out += _markdown_table(columns, summary, right_from=3)
        out += ["", "## All measurements", ""]
    else:
        out += [""]
    out += _markdown_table(COLUMNS, _table_rows(report), right_from=5)
    trailer = [line for line in _trailer_lines(report) if line]
    if trailer:
        out += [""] + [f"- {line}" for line in trailer]
    return "\n".join(out) + "\n"


PLOT_METRICS = {
    # metric: (y-axis label, what the title says about it)
    "speedup": ("speedup over NumPy reference",
                "speedup over the NumPy reference (higher is faster)"),
    "time": ("ns per element of the input",
             "time per element of the differentiated input (lower is faster)"),
}


def plot_value(row: Mapping[str, Any], metric: str) -> float:
    """The y of one result row: its speedup over the reference, or its median time in
    nanoseconds per element of the differentiated input."""
    if metric == "speedup":
        return row["speedup_vs_reference"]
    if metric == "time":
        return row["median_s"] / row["n_elements"] * 1e9
    raise ValueError(f"unknown plot metric {metric!r}; choose from {', '.join(PLOT_METRICS)}")


def write_plot(report: Report, path: str, metric: str = "speedup") -> None:
    """``metric`` (speedup over the NumPy reference, or time per element) against input
    size, log-log: one panel per loss and dtype, one line per implementation and thread
    count (solid: the most threads measured, dashed: fewer; the floors, dotted grey, bound
    what a memory-bound kernel can reach). The reference is the line y = 1 of a speedup
    plot and a line of its own in a time plot."""
    if metric not in PLOT_METRICS:
        raise ValueError(f"unknown plot metric {metric!r}; choose from {', '.join(PLOT_METRICS)}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [name for name in LOSSES if any(r["loss"] == name for r in report.results)]
    losses += sorted({r["loss"] for r in report.results} - set(losses))
    dtypes = sorted({r["dtype"] for r in report.results})
    panels = [(loss, dtype) for dtype in dtypes for loss in losses]
    if not panels:
        raise ValueError("no results to plot")
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, sharey=True,
                             figsize=(4.4 * n_cols, 3.3 * n_rows + 1.2))
    impls = sorted({r["implementation"] for r in report.results if r["family"] == "fastloss"})
    impls += sorted({r["implementation"] for r in report.results
                     if r["family"] not in ("fastloss", "reference", "floor")})
    colors = {name: plt.cm.tab10(i % 10) for i, name in enumerate(impls)}
    if metric != "speedup":
        impls.append("reference")
        colors["reference"] = "black"
    floor_styles = {"copy-floor": ":", "add-floor": (0, (1, 3))}
    max_threads = max(report.settings["threads"])
    for ax, (loss, dtype) in zip(axes.flat, panels):
        rows = [r for r in report.results if r["loss"] == loss and r["dtype"] == dtype]
        lines = [(impl, threads) for impl in impls + list(floor_styles)
                 for threads in sorted({r["threads"] for r in rows
                                        if r["implementation"] == impl}, reverse=True)]
        for impl, threads in lines:
            points = sorted((r["n_elements"], plot_value(r, metric)) for r in rows
                            if r["implementation"] == impl and r["threads"] == threads)
            xs, ys = zip(*points)
            if impl in floor_styles:
                ax.plot(xs, ys, color="grey", linestyle=floor_styles[impl],
                        label=f"{impl} (1 thread)")
            else:
                # the reference is single-threaded NumPy: solid, like the most threads
                solid = threads == max_threads or impl == "reference"
                ax.plot(xs, ys, marker="o", markersize=4, color=colors[impl],
                        linestyle="-" if solid else "--",
                        label=f"{impl} ({threads} thread{'s' if threads > 1 else ''})")
        if metric == "speedup":
            ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{loss}, {dtype}", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    y_label, title = PLOT_METRICS[metric]
    for ax in axes[:, 0]:
        ax.set_ylabel(y_label, fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("elements of the input", fontsize=8)
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    legend_rows = math.ceil(len(handles) / 4)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=8)
    m = report.machine
    fig.suptitle(f"fastloss {m['fastloss']}, {m['cpu']} ({m['usable_cpus']} CPUs, SIMD "
                 f"{m['simd_level']}), {report.settings['date']}:\n{title}", fontsize=10)
    bottom = (0.25 * legend_rows + 0.3) / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.6 / fig.get_figheight()))
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- command line

QUICK = dict(sizes="tiny,cache,large", dtypes="float32", threads="1,all", budget=0.03,
             min_repeats=3, max_total=0.4)
DEFAULT = dict(sizes="tiny,cache,large", dtypes="float32,float64", threads="1,all",
               budget=0.15, min_repeats=5, max_total=2.5)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastloss-bench",
        description="Time fastloss's fused kernels against the NumPy reference, the memory "
                    "floor and (with --compare) other libraries. Every result is checked "
                    "against the reference first; a wrong result makes the command exit 1.",
        epilog="Sizes: tiny (4096 elements), cache (131072), large (>= 2**24, twice the "
               "last-level cache), an element count, or a shape NxC. Losses: "
               + ", ".join(LOSSES) + ".")
    parser.add_argument("--quick", action="store_true",
                        help="a short run (float32, fewer repeats; under 20 s on 2 cores)")
    parser.add_argument("--losses", help="comma-separated losses (default: all)")
    parser.add_argument("--sizes", help=f"comma-separated sizes (default: {DEFAULT['sizes']})")
    parser.add_argument("--dtypes", help="float32,float64 (default: both; --quick: float32)")
    parser.add_argument("--threads", help="comma-separated thread counts or 'all' "
                                          "(default: 1,all)")
    parser.add_argument("--compare", default="",
                        help="peers: " + ", ".join(PEER_FAMILIES) + ", torch.compile, or all")
    parser.add_argument("--budget", type=float,
                        help="seconds of repeats per measurement (default 0.15; --quick 0.03)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the table as markdown")
    parser.add_argument("--plot", metavar="PATH.png",
                        help="plot speedup (or --plot-y) against size per loss (needs "
                             "matplotlib)")
    parser.add_argument("--plot-y", choices=tuple(PLOT_METRICS),
                        help="the plot's y axis: speedup over the NumPy reference (default) "
                             "or time per element of the input, in ns")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def _split(text: str) -> List[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_settings(argv: Optional[Sequence[str]]) -> Tuple[argparse.Namespace, Settings, List[str]]:
    """Parse the command line; argparse exits with status 2 on bad arguments. Returns the
    namespace, the settings, and the messages about requested peers that are missing."""
    parser = _parser()
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else DEFAULT

    losses = _split(args.losses) if args.losses else list(LOSSES)
    unknown = [name for name in losses if name not in LOSSES]
    if unknown or not losses:
        parser.error(f"unknown loss {', '.join(map(repr, unknown)) or '(none given)'}; "
                     f"choose from {', '.join(LOSSES)}")
    try:
        sizes = [parse_size(s) for s in _split(args.sizes or defaults["sizes"])]
    except ValueError as exc:
        parser.error(str(exc))
    if not sizes:
        parser.error("--sizes: no size given")
    for size in sizes:
        for name in losses:
            if size.shape is not None and not LOSSES[name].elementwise and len(size.shape) != 2:
                parser.error(f"size {size.label!r} is not a shape NxC")
    dtypes = _split(args.dtypes or defaults["dtypes"])
    bad = [d for d in dtypes if d not in ("float32", "float64")]
    if bad or not dtypes:
        parser.error(f"unknown dtype {', '.join(map(repr, bad)) or '(none given)'}; "
                     "choose from float32, float64")
    threads = []
    for text in _split(args.threads or defaults["threads"]):
        if text == "all":
            value = _all_threads()
        elif text.isdigit() and int(text) >= 1:
            value = int(text)
        else:
            parser.error(f"--threads: {text!r} is not a positive integer or 'all'")
        if value not in threads:
            threads.append(value)
    if not threads:
        parser.error("--threads: no thread count given")

    peers, missing = [], []
    requested = _split(args.compare)
    if "all" in requested:
        requested = list(PEER_FAMILIES)
    known_impls = {impl: family for family in PEER_FAMILIES.values()
                   for impl in family.implementations}
    for name in requested:
        if name in PEER_FAMILIES:
            family, names = PEER_FAMILIES[name], PEER_FAMILIES[name].implementations
        elif name in known_impls:
            family, names = known_impls[name], (name,)
        else:
            parser.error(f"--compare: unknown implementation {name!r}; choose from "
                         f"{', '.join(PEER_FAMILIES)}, torch.compile, all")
        if not _installed(family.module):
            message = f"{name} is not installed ({family.install}): not compared"
            if message not in missing:
                missing.append(message)
            continue
        peers += [n for n in names if n not in peers]

    budget = args.budget if args.budget is not None else defaults["budget"]
    if not budget > 0:
        parser.error("--budget must be positive")
    if args.plot_y and not args.plot:
        parser.error("--plot-y needs --plot PATH.png")
    if args.plot and not _installed("matplotlib"):
        parser.error("--plot needs matplotlib, which is not installed "
                     "(pip install matplotlib, or pip install 'fastloss[bench]')")
    return args, Settings(losses, sizes, dtypes, threads, peers, budget,
                          defaults["min_repeats"], defaults["max_total"], args.seed), missing


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the report; returns the exit status (0 ok, 1 a result was wrong, 2 bad arguments)."""
    args, settings, missing = parse_settings(argv)
    for message in missing:
        _progress(message)
    report = run(settings)
    report.notes[:0] = missing
    sys.stdout.write(render_text(report))
    sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_json(), f, indent=1)
        _progress(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render_markdown(report))
        _progress(f"wrote {args.markdown}")
    if args.plot:
        if report.results:
            write_plot(report, args.plot, args.plot_y or "speedup")
            _progress(f"wrote {args.plot}")
        else:
            _progress(f"no results: {args.plot} not written")
    if report.failures:
        _progress(f"{len(report.failures)} FAILURE(S): a result did not match the reference")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
