"""fastloss inside JAX: the fused kernels over jax arrays, differentiable and jit-compatible.

::

    import fastloss.jax as flj
    loss = flj.softmax_cross_entropy(logits, labels, label_smoothing=0.1)
    value, grads = jax.jit(jax.value_and_grad(lambda w: flj.huber(x @ w, y, delta=2.0)))(w)

The names and arguments are fastloss's (without ``compute_grad``, ``out`` and ``n_threads``);
the semantics are those of the fastloss function (see its docstring for the maths). Every
function is derived from one table, ``LOSSES``: one row per loss naming the fastloss function,
its array-valued options and whether it has a class axis. A row whose fastloss function is not
in the installed fastloss is not exported.

How a call runs
---------------
Each function is a ``jax.custom_vjp`` whose forward calls the fastloss kernel on the host: the
forward pass of a differentiated call asks the kernel for the loss and the gradient in one pass
and keeps the gradient as the residual; the backward pass multiplies it by the cotangent (per
sample for ``reduction="none"``). A call that is not differentiated asks for the loss only. It
works under ``jax.jit``, ``jax.grad`` / ``jax.value_and_grad`` and ``jax.vmap``
(``vmap_method="sequential"``: one kernel call per batch element, in a loop).

The host call goes through ``jax.experimental.buffer_callback`` where JAX has it (0.7 and
later): the callback receives XLA's own CPU buffers, the kernel reads the inputs there and
writes the gradient straight into XLA's output buffer (``out=``), with no copy either way. It
is XLA's FFI custom call underneath, without a C++ handler of ours. Older JAX versions use
``jax.pure_callback``, which copies the arguments to the callback and its results back into
XLA buffers (two extra passes over the gradient's size; for large inputs it is several times
slower than the kernel itself).

XLA's CPU runtime allocates a fresh buffer for each output of each call and frees it when the
result dies: a large output is new memory every step, and the kernel's first write to each of
its 4 KiB pages is a page fault (16,000 faults for a 64 MB gradient, costing about as much as
the kernel itself). Before the kernel writes an output of 4 MiB or more, the callback asks
for transparent huge pages there (``madvise(MADV_HUGEPAGE)`` over the buffer's whole pages,
as NumPy does for its own large arrays; Linux only, and only advice: where the OS refuses it
nothing changes): 2 MiB pages, 512 times fewer faults.

Huge pages make the faults fewer, not the zeroing: each call the OS still clears the whole
fresh gradient buffer before the kernel's first write. A profile of
``jax.jit(jax.value_and_grad(softmax_cross_entropy))`` at (16384, 1000), float32, shows the
jitted computation as one custom call (no copy, no multiply by the cotangent: XLA folds the
1 that ``value_and_grad`` passes) and the page clearing (``clear_page_erms``) taking about as
long as the kernel's own work. The clearing is glibc's doing: it hands buffers this large
back to the OS when XLA frees them and asks for new ones the next step (NumPy calls do not
pay it: fastloss's buffer cache serves their gradients again). It cannot be avoided from
inside a callback; a process that keeps its freed memory instead can, e.g. glibc's
``MALLOC_MMAP_THRESHOLD_=2000000000 MALLOC_TRIM_THRESHOLD_=4000000000`` in the environment
(or jemalloc / tcmalloc preloaded). That is a choice for the whole process (its freed memory
is not returned to the OS), so fastloss does not make it; ``scripts/bench_adapters.py``
prints the timing both ways.

Why not an XLA FFI handler of our own (``jax.ffi``, C++ against jaxlib's headers): the kernels'
drivers (the fixed-block OpenMP loops with their deterministic double-precision reductions,
the fast paths and the validation) are Cython code in fastloss._kernels, callable from Python
only. A C++ handler would need a second, C-level driver per loss, and the package build would
depend on a C++17 compiler and jaxlib's headers. ``buffer_callback`` reaches the same
kernels with the same zero-copy buffers at the price of a Python call per kernel call (tens of
microseconds); the kernel releases the GIL while it runs.

Arrays and options
------------------
- The differentiated input must be float32 or float64 (``TypeError`` otherwise, raised while
  tracing); with JAX's default 32-bit mode that is float32.
- Gradients flow to the differentiated inputs only: the first argument, or each of the
  leading ones where fastloss returns a gradient tuple (``triplet_margin``: anchor, positive,
  negative; ``contrastive``, ``cosine_embedding``, ``margin_ranking``: input1, input2;
  ``gaussian_kl``: mean, log_var; ``linear_cross_entropy``: hidden, weight and the ``bias``
  option), all from one kernel pass. The target and the other array-valued options (weights)
  get a zero cotangent. Differentiate with respect to them with a JAX formula of the loss.
- ``reduction="none"`` of ``dice``, ``jaccard``, ``tversky`` and ``linear_cross_entropy`` is
  not differentiable (``NotImplementedError`` while tracing the gradient): their per-sample
  losses share inputs, so a per-sample cotangent cannot rescale the kernel's gradient of their
  sum. Differentiate ``reduction="sum"`` (or a JAX formula) instead; the values are fine.
- Class-axis inputs may be K-dimensional, (N, C, d1, ..., dK), wherever the fastloss function
  takes them (``softmax_cross_entropy``, ``softmax_focal``).
- Scalar options (``reduction``, ``delta``, ``label_smoothing``, ...) are Python values, static
  under ``jax.jit`` (a traced scalar raises ``TypeError``); array-valued options (``weight``,
  ``pos_weight``, ``alpha`` of ``softmax_focal``) may be traced arrays.
- The checks of dtypes, shapes and scalar options (fastloss's own, on an empty batch) run
  while tracing; the ones that need the values (class indices in range) run in the callback,
  and a bad value raises there with fastloss's message inside JAX's runtime error.
- The kernels use OpenMP's default thread count (``OMP_NUM_THREADS``, threadpoolctl).
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import mmap
import sys
from dataclasses import dataclass
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

import fastloss

__all__ = ["LOSSES", "LossRow", "EXPORTED"]

try:  # XLA's buffers in place, no copies (jax >= 0.7; an experimental API)
    from jax.experimental.buffer_callback import buffer_callback as _buffer_callback
except ImportError:  # pragma: no cover - older jax: jax.pure_callback
    _buffer_callback = None

_MACHINERY = frozenset({"compute_grad", "out", "n_threads", "compute_hess", "hess_out",
                        "lse_out"})
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class LossRow:
    """One loss: the fastloss function's name, its options that may be arrays (an option
    whose default is None may be one too, unless named in optional_scalars), and whether it
    has a class axis ((N, C, d1, ..., dK) input, per-sample losses (N, d1, ..., dK) under
    "none").

    inputs: how many leading arguments are differentiated (several: the kernel's gradient is
        a tuple in argument order); has_target: a target follows them; grad_options: array
        options that are differentiated too (linear_cross_entropy's bias); per: the shape of
        "none" ("element", "class", "row" (N,), "overlap" (N, C') or (C',)); same_shape_target:
        the target must have the input's shape; none_vjp: False where the per-sample losses of
        "none" share inputs (the overlap losses, linear_cross_entropy's weight), so that a
        per-sample cotangent cannot rescale the kernel's gradient: differentiating "none" then
        raises (differentiate the "sum"); static_check: fastloss's option checks run while
        tracing, on an empty batch.
    """

    fastloss: str
    array_options: Tuple[str, ...] = ()
    class_axis: bool = False
    optional_scalars: Tuple[str, ...] = ("logit_softcap",)
    inputs: int = 1
    has_target: bool = True
    grad_options: Tuple[str, ...] = ()
    per: str = ""
    same_shape_target: bool = True
    none_vjp: bool = True
    static_check: bool = True


_PAIRS = dict(per="row", same_shape_target=False)
_OVERLAP = dict(per="overlap", same_shape_target=False, none_vjp=False)

LOSSES: Tuple[LossRow, ...] = (
    LossRow("softmax_cross_entropy", ("weight", "sample_weight"), class_axis=True),
    LossRow("softmax_focal", ("alpha", "sample_weight"), class_axis=True),
    LossRow("binary_cross_entropy_with_logits", ("weight", "pos_weight")),
    LossRow("huber", ("weight",)),
    LossRow("smooth_l1", ("weight",)),
    LossRow("sigmoid_focal", ("weight",)),
    LossRow("mse", ("weight",)),
    LossRow("mae", ("weight",)),
    LossRow("pinball", ("weight", "quantile")),
    LossRow("log_cosh", ("weight",)),
    LossRow("poisson_nll", ("weight",)),
    LossRow("tweedie", ("weight",)),
    LossRow("hinge", ("weight",)),
    LossRow("squared_hinge", ("weight",)),
    LossRow("soft_margin", ("weight",)),
    LossRow("binary_cross_entropy", ("weight",)),
    LossRow("kl_div", ("weight",)),
    # issue 16, the rest: class-axis, pair, overlap and large-vocabulary losses
    LossRow("multi_margin", ("weight",), class_axis=True),
    LossRow("kl_divergence_with_logits", class_axis=True),
    LossRow("triplet_margin", inputs=3, has_target=False, **_PAIRS),
    LossRow("contrastive", inputs=2, **_PAIRS),
    LossRow("cosine_embedding", inputs=2, **_PAIRS),
    LossRow("margin_ranking", inputs=2, **_PAIRS),
    LossRow("gaussian_kl", inputs=2, has_target=False, **_PAIRS),
    LossRow("dice", ("weight",), **_OVERLAP),
    LossRow("jaccard", ("weight",), **_OVERLAP),
    LossRow("tversky", **_OVERLAP),
    LossRow("linear_cross_entropy", ("bias", "class_weight"), inputs=2, grad_options=("bias",),
            per="row", same_shape_target=False, none_vjp=False, static_check=False),
)


def _loss_shape(row: LossRow, shape, reduction, statics):
    if reduction != "none":
        return ()
    per = row.per or ("class" if row.class_axis else "element")
    if per == "class":
        return shape[:1] + shape[2:]
    if per == "row":
        return shape[:1]
    if per == "overlap":
        n_classes = shape[1]
        kept = n_classes - (0 if statics.get("include_background", True) or n_classes == 1
                            else 1)
        return (kept,) if statics.get("batch", False) else (shape[0], kept)
    return shape


def _make_function(row: LossRow):
    kernel = getattr(fastloss, row.fastloss)
    kernel_signature = inspect.signature(kernel)
    parameters = [p for p in kernel_signature.parameters.values() if p.name not in _MACHINERY]
    signature = kernel_signature.replace(parameters=parameters, return_annotation=jax.Array)
    n_inputs, n_positional = row.inputs, row.inputs + row.has_target
    positional_names = tuple(p.name for p in parameters[:n_positional])
    input_name = positional_names[0]
    options = parameters[n_positional:]
    array_names = tuple(p.name for p in options if p.name in row.array_options or (
        p.default is None and p.name not in row.optional_scalars))

    @functools.lru_cache(maxsize=None)
    def differentiable(static_options: tuple, given_arrays: tuple):
        """The custom_vjp function for one set of static options (and the array options
        given, in this order)."""
        statics = dict(static_options)
        reduction = statics.get("reduction", "mean")
        # the differentiated array options given (linear_cross_entropy's bias), by position
        grad_arrays = tuple(i for i, name in enumerate(given_arrays) if name in row.grad_options)
        n_grads = n_inputs + len(row.grad_options)

        def run(tensors, arrays, compute_grad, grad_out=None):
            return kernel(*map(np.asarray, tensors), **statics,
                          **dict(zip(given_arrays, map(np.asarray, arrays))),
                          compute_grad=compute_grad, out=grad_out)

        def split(args):
            return args[:n_positional], args[n_positional:]

        def grad_out_of(buffers):
            """The kernel's out= from XLA's gradient buffers (a tuple where the kernel
            returns several gradients; None for an option not given)."""
            arrays = [np.asarray(b) for b in buffers]
            for array in arrays:
                _advise_huge_pages(array)
            if n_grads == 1:
                return arrays[0]
            out = arrays[:n_inputs]
            extra = iter(arrays[n_inputs:])
            for name in row.grad_options:
                out.append(next(extra) if name in given_arrays else None)
            return tuple(out)

        def in_place(context, out, *args):
            """buffer_callback: the kernel reads XLA's buffers and writes the gradients into
            XLA's output buffers (out=); the loss is stored into the first one."""
            buffers = list(out) if isinstance(out, (tuple, list)) else [out]
            tensors, arrays = split(args)
            grad_out = grad_out_of(buffers[1:]) if len(buffers) > 1 else None
            losses = np.asarray(buffers[0])
            if losses.ndim:  # reduction="none": per-sample losses, copied in below
                _advise_huge_pages(losses)
            loss, _ = run(tensors, arrays, grad_out is not None, grad_out)
            losses[...] = loss

        def copied(compute_grad):
            def host(*args):
                """pure_callback: arrays in, arrays out (JAX copies them both ways)."""
                tensors, arrays = split(args)
                loss, grad = run(tensors, arrays, compute_grad)
                loss = np.asarray(loss, dtype=tensors[0].dtype)
                if not compute_grad:
                    return loss
                grads = grad if isinstance(grad, tuple) else (grad,)
                return (loss, *(g for g in grads if g is not None))
            return host

        def call_kernel(compute_grad, *args):
            tensors, arrays = split(args)
            x = tensors[0]
            loss_type = jax.ShapeDtypeStruct(_loss_shape(row, x.shape, reduction, statics),
                                             x.dtype)
            if compute_grad:
                grad_types = [jax.ShapeDtypeStruct(t.shape, t.dtype) for t in tensors[:n_inputs]]
                grad_types += [jax.ShapeDtypeStruct(arrays[i].shape, x.dtype)
                               for i in grad_arrays]
                result_type = (loss_type, *grad_types)
            else:
                result_type = loss_type
            if _buffer_callback is not None:
                return _buffer_callback(in_place, result_type, vmap_method="sequential")(*args)
            return jax.pure_callback(copied(compute_grad), result_type, *args,
                                     vmap_method="sequential")

        @jax.custom_vjp
        def loss_only(*args):
            return call_kernel(False, *args)

        def forward(*args):
            loss, *grads = call_kernel(True, *args)
            return loss, tuple(grads)

        def backward(grads, cotangent):
            if reduction == "none" and not row.none_vjp:
                raise NotImplementedError(
                    f"fastloss.jax.{row.fastloss}: reduction='none' is not differentiable "
                    "here (the per-sample losses share inputs, so a per-sample cotangent "
                    "cannot rescale the kernel's gradient); differentiate reduction='sum'")
            scaled = []
            for grad in grads:
                c = cotangent
                if reduction == "none" and grad.ndim > c.ndim:
                    c = c.reshape(c.shape[:1] + (1,) * (grad.ndim - c.ndim) + c.shape[1:])
                scaled.append(grad * c)
            array_cotangents = [None] * len(given_arrays)
            for index, grad in zip(grad_arrays, scaled[n_inputs:]):
                array_cotangents[index] = grad
            return (*scaled[:n_inputs], *(None,) * row.has_target, *array_cotangents)

        loss_only.defvjp(forward, backward)
        return loss_only

    def loss_function(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        tensors = [jnp.asarray(values.pop(name)) for name in positional_names]
        x = tensors[0]
        for name, tensor in zip(positional_names[:n_inputs], tensors[:n_inputs]):
            if tensor.dtype not in _KERNEL_DTYPES:
                raise TypeError(f"{name} must have dtype float32 or float64, got dtype "
                                f"{tensor.dtype}")
        if row.has_target and row.same_shape_target and not row.class_axis \
                and tensors[-1].shape != x.shape:
            raise ValueError(f"target must have {input_name}'s shape {x.shape}, got shape "
                             f"{tensors[-1].shape}")
        static_options, given, arrays = [], [], []
        for name, value in values.items():
            if name in array_names and value is not None and not _is_python_scalar(value):
                given.append(name)
                array = jnp.asarray(value)
                if name in row.grad_options:  # differentiated: the input's dtype
                    array = array.astype(x.dtype)
                arrays.append(array)
            else:
                if isinstance(value, (jax.Array, np.ndarray)):
                    raise TypeError(f"{name} must be a Python value (static under jax.jit), "
                                    f"got an array of shape {np.shape(value)}")
                static_options.append((name, value))
        try:
            function = differentiable(tuple(static_options), tuple(given))
        except TypeError:  # an unhashable option value
            raise TypeError(f"{row.fastloss}: scalar options must be Python numbers or "
                            f"strings, got {dict(static_options)!r}") from None
        if row.static_check:
            _check_static_options(kernel, tensors, dict(static_options))
        return function(*tensors, *arrays)

    loss_function.__name__ = loss_function.__qualname__ = row.fastloss
    loss_function.__signature__ = signature
    loss_function.__module__ = __name__
    inputs = ", ".join(positional_names[:n_inputs])
    loss_function.__doc__ = (
        f"fastloss.{row.fastloss} over jax arrays: the loss (a jax array in the input's dtype), "
        f"differentiable with respect to {inputs} by jax.grad and usable under jax.jit "
        f"and jax.vmap. Arguments and maths: fastloss.{row.fastloss}.__doc__; how the call "
        f"runs: fastloss.jax.__doc__.")
    return loss_function


def _check_static_options(kernel, tensors, statics):
    """fastloss's own checks of the scalar options (reduction, delta, gamma, ...), while
    tracing: the kernel called on an empty batch of the same trailing shapes, which raises
    fastloss's error for a bad option and costs a few microseconds otherwise."""
    empty = [np.empty((0,) + tuple(t.shape[1:]), dtype=t.dtype) for t in tensors]
    kernel(*empty, **statics, compute_grad=False)


def _load_madvise():
    """madvise(address, length) with MADV_HUGEPAGE, from libc (Linux), or None."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None or not sys.platform.startswith("linux"):  # pragma: no cover
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # pragma: no cover - no libc symbols in the process
        return None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    return lambda address, length: madvise(address, length, advice)


_MADVISE = _load_madvise()
_HUGE_PAGE_MIN_BYTES = 1 << 22  # NumPy's threshold for its own arrays (4 MiB)
_PAGE = mmap.PAGESIZE


def _advise_huge_pages(array: np.ndarray) -> None:
    """Ask for transparent huge pages over the whole pages of a large output buffer, before
    its first write (XLA's outputs are fresh memory each call: see the module docstring). A
    failure (THP off, an old kernel) is ignored: the advice is about speed only."""
    if _MADVISE is None or array.nbytes < _HUGE_PAGE_MIN_BYTES:
        return
    start = array.ctypes.data
    first = (start + _PAGE - 1) & -_PAGE
    last = (start + array.nbytes) & -_PAGE
    if last > first:
        _MADVISE(first, last - first)


def _is_python_scalar(value) -> bool:
    return isinstance(value, (bool, int, float))


#: the rows exported by this fastloss (a row whose fastloss function does not exist yet is
#: skipped)
EXPORTED: Tuple[LossRow, ...] = tuple(row for row in LOSSES if hasattr(fastloss, row.fastloss))
FUNCTIONS: Dict[str, object] = {}

for _row in EXPORTED:
    FUNCTIONS[_row.fastloss] = globals()[_row.fastloss] = _make_function(_row)
    __all__.append(_row.fastloss)
del _row
__all__.append("FUNCTIONS")
