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
- Gradients flow to the differentiated input (the first argument) only: the target and the
  array-valued options (weights) get a zero cotangent. Differentiate with respect to them with
  a JAX formula of the loss.
- Scalar options (``reduction``, ``delta``, ``label_smoothing``, ...) are Python values, static
  under ``jax.jit`` (a traced scalar raises ``TypeError``); array-valued options (``weight``,
  ``pos_weight``, ``alpha`` of ``softmax_focal``) may be traced arrays.
- The checks of dtypes, shapes and scalar options (fastloss's own, on an empty batch) run
  while tracing; the ones that need the values (class indices in range) run in the callback,
  and a bad value raises there with fastloss's message inside JAX's runtime error.
- The kernels use OpenMP's default thread count (``OMP_NUM_THREADS``, threadpoolctl).
"""

from __future__ import annotations

import functools
import inspect
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
    has a class axis ((N, C) input, per-sample losses (N,) under "none")."""

    fastloss: str
    array_options: Tuple[str, ...] = ()
    class_axis: bool = False
    optional_scalars: Tuple[str, ...] = ("logit_softcap",)


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
)


def _loss_shape(row: LossRow, shape, reduction):
    if reduction != "none":
        return ()
    return shape[:1] + shape[2:] if row.class_axis else shape


def _make_function(row: LossRow):
    kernel = getattr(fastloss, row.fastloss)
    kernel_signature = inspect.signature(kernel)
    parameters = [p for p in kernel_signature.parameters.values() if p.name not in _MACHINERY]
    signature = kernel_signature.replace(parameters=parameters)
    input_name = parameters[0].name
    options = parameters[2:]
    array_names = tuple(p.name for p in options if p.name in row.array_options or (
        p.default is None and p.name not in row.optional_scalars))

    @functools.lru_cache(maxsize=None)
    def differentiable(static_options: tuple, given_arrays: tuple):
        """The custom_vjp function for one set of static options (and the array options
        given, in this order)."""
        statics = dict(static_options)
        reduction = statics.get("reduction", "mean")

        def run(x, target, arrays, compute_grad, grad_out=None):
            return kernel(np.asarray(x), np.asarray(target), **statics,
                          **dict(zip(given_arrays, map(np.asarray, arrays))),
                          compute_grad=compute_grad, out=grad_out)

        def in_place(context, out, x, target, *arrays):
            """buffer_callback: the kernel reads XLA's buffers and writes the gradient into
            XLA's output buffer (out=); the loss is stored into the other one."""
            loss_buffer, grad_buffer = out if isinstance(out, (tuple, list)) else (out, None)
            grad_out = np.asarray(grad_buffer) if grad_buffer is not None else None
            loss, _ = run(x, target, arrays, grad_out is not None, grad_out)
            np.asarray(loss_buffer)[...] = loss

        def copied(compute_grad):
            def host(x, target, *arrays):
                """pure_callback: arrays in, arrays out (JAX copies them both ways)."""
                loss, grad = run(x, target, arrays, compute_grad)
                loss = np.asarray(loss, dtype=x.dtype)
                return (loss, grad) if compute_grad else loss
            return host

        def call_kernel(compute_grad, x, target, *arrays):
            loss_type = jax.ShapeDtypeStruct(_loss_shape(row, x.shape, reduction), x.dtype)
            result_type = (loss_type, jax.ShapeDtypeStruct(x.shape, x.dtype)) \
                if compute_grad else loss_type
            if _buffer_callback is not None:
                return _buffer_callback(in_place, result_type, vmap_method="sequential")(
                    x, target, *arrays)
            return jax.pure_callback(copied(compute_grad), result_type, x, target, *arrays,
                                     vmap_method="sequential")

        @jax.custom_vjp
        def loss_only(x, target, *arrays):
            return call_kernel(False, x, target, *arrays)

        def forward(x, target, *arrays):
            loss, grad = call_kernel(True, x, target, *arrays)
            return loss, grad

        def backward(grad, cotangent):
            if reduction == "none" and row.class_axis:
                cotangent = cotangent.reshape(cotangent.shape[:1] + (1,) + cotangent.shape[1:])
            return (grad * cotangent, None) + (None,) * len(given_arrays)

        loss_only.defvjp(forward, backward)
        return loss_only

    def loss_function(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        x = jnp.asarray(values.pop(input_name))
        target = jnp.asarray(values.pop(parameters[1].name))
        if x.dtype not in _KERNEL_DTYPES:
            raise TypeError(f"{input_name} must have dtype float32 or float64, got dtype "
                            f"{x.dtype}")
        if not row.class_axis and target.shape != x.shape:
            raise ValueError(f"target must have {input_name}'s shape {x.shape}, got shape "
                             f"{target.shape}")
        static_options, given, arrays = [], [], []
        for name, value in values.items():
            if name in array_names and value is not None and not _is_python_scalar(value):
                given.append(name)
                arrays.append(jnp.asarray(value))
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
        _check_static_options(kernel, x, target, dict(static_options))
        return function(x, target, *arrays)

    loss_function.__name__ = loss_function.__qualname__ = row.fastloss
    loss_function.__signature__ = signature
    loss_function.__module__ = __name__
    loss_function.__doc__ = (
        f"fastloss.{row.fastloss} over jax arrays: the loss (a jax array in the input's dtype), "
        f"differentiable with respect to {input_name} by jax.grad and usable under jax.jit "
        f"and jax.vmap. Arguments and maths: fastloss.{row.fastloss}.__doc__; how the call "
        f"runs: fastloss.jax.__doc__.")
    return loss_function


def _check_static_options(kernel, x, target, statics):
    """fastloss's own checks of the scalar options (reduction, delta, gamma, ...), while
    tracing: the kernel called on an empty batch of the same trailing shape, which raises
    fastloss's error for a bad option and costs a few microseconds otherwise."""
    empty_input = np.empty((0,) + tuple(x.shape[1:]), dtype=x.dtype)
    empty_target = np.empty((0,) + tuple(target.shape[1:]), dtype=target.dtype)
    kernel(empty_input, empty_target, **statics, compute_grad=False)


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
