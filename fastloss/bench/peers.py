"""The peers: other libraries computing the same (loss, gradient) as a fastloss function.

How each peer family computes the same quantity (all are checked against the reference
before they are timed): every implementation returns the loss as fastloss's default
reduction gives it (the mean over elements; over rows for the class-axis losses,
gaussian_kl, the pair and triplet losses and linear_cross_entropy; over (sample, class)
for the overlap losses; the plain sum for the penalties) and its gradient with respect to
each differentiated input.

* ``torch``: the loss written with ``torch.nn.functional`` (the function of the table row's
  ``torch_name`` where torch has the loss, else the formula of the row's docstring in torch
  operations), and ``torch.autograd.grad`` (eager forward + backward). ``torch.compile``:
  the same function compiled (``dynamic=False``, recompiled for every case and thread count,
  because inductor bakes the thread count into its code).
  ``torch.chunked`` (linear_cross_entropy only): ``F.linear_cross_entropy`` with
  ``options=torch.nn.LinearCrossEntropyOptions()``, torch's batch-chunked path (the
  ``torch`` row is its reference path, ``options=None``: the full logits).
* ``monai`` (the overlap losses): MONAI's ``DiceLoss`` / ``DiceLoss(jaccard=True)`` /
  ``TverskyLoss`` module, made once per case, forward and ``torch.autograd.grad``.
* ``jax``: ``jax.jit(jax.value_and_grad(loss))``, float64 enabled. XLA sizes its CPU
  thread pool when jax starts, so jax runs only in the all-threads rows.
* ``sklearn``: the Cython loss objects of ``sklearn._loss`` compute per-sample losses and
  gradients; the mean, and any constant factor between sklearn's loss and fastloss's, come
  from ``sample_weight = scale / n`` (one extra input stream, cheaper than a pass over the
  gradient) and summing ``loss_out``. See ``losses.SKLEARN`` for which object is which loss.
* ``numba``: a ``parallel=True`` kernel per loss (``numba_kernels``), writing into a
  preallocated gradient.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from typing import Callable, Dict, Mapping, Sequence, Tuple

import numpy as np

from .cases import Builder, Case, NotApplicable
from .numba_kernels import numba_kernels
from .timing import _all_threads


@dataclasses.dataclass(frozen=True)
class PeerFamily:
    name: str
    module: str                    # the module whose presence makes the family available
    implementations: Tuple[str, ...]
    install: str                   # how to install it


PEER_FAMILIES: Dict[str, PeerFamily] = {
    "torch": PeerFamily("torch", "torch", ("torch", "torch.compile", "torch.chunked"),
                        "pip install torch"),
    "monai": PeerFamily("monai", "monai", ("monai",), "pip install monai"),
    "jax": PeerFamily("jax", "jax", ("jax",), "pip install jax"),
    "sklearn": PeerFamily("sklearn", "sklearn", ("sklearn",), "pip install scikit-learn"),
    "numba": PeerFamily("numba", "numba", ("numba",), "pip install numba"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _one_or_tuple(grads):
    return grads[0] if len(grads) == 1 else tuple(grads)


def _torch_tensors(case: Case):
    import torch
    tensors = [torch.from_numpy(a) for a in case.args]
    for t in tensors[:case.entry.n_grads]:
        t.requires_grad_()
    return tensors


def torch_eager(loss_fn: Callable) -> Builder:
    """loss_fn(*tensors, **params) -> a scalar tensor."""
    def build(case: Case, n_threads: int):
        import torch
        tensors = _torch_tensors(case)
        wrt = tensors[:case.entry.n_grads]
        params = dict(case.params)

        def call():
            loss = loss_fn(*tensors, **params)
            return loss.detach(), _one_or_tuple(torch.autograd.grad(loss, wrt))
        return call
    return build


def module_eager(make_module: Callable) -> Builder:
    """make_module(**params) -> a torch.nn.Module computing the loss from the case's tensors
    (a MONAI loss), made once per case; forward and backward as ``torch_eager``."""
    def build(case: Case, n_threads: int):
        module = make_module(**case.params)
        return torch_eager(lambda *tensors, **params: module(*tensors))(case, n_threads)
    return build


def torch_compiled(loss_fn: Callable) -> Builder:
    def build(case: Case, n_threads: int):
        import torch
        # Inductor bakes torch.get_num_threads() into the generated code and dynamo does not
        # guard on it: start from a clean cache so this row compiles for its thread count.
        torch._dynamo.reset()
        params = dict(case.params)
        compiled = torch.compile(lambda *tensors: loss_fn(*tensors, **params), dynamic=False)
        tensors = _torch_tensors(case)
        wrt = tensors[:case.entry.n_grads]

        def call():
            loss = compiled(*tensors)
            return loss.detach(), _one_or_tuple(torch.autograd.grad(loss, wrt))
        return call
    return build


@functools.lru_cache(maxsize=None)
def _jax_module():
    import jax
    return jax


def jax_peer(loss_fn: Callable) -> Builder:
    """loss_fn(jnp, *arrays, **params) -> scalar."""
    def build(case: Case, n_threads: int):
        if n_threads < _all_threads():
            raise NotApplicable("jax runs only in the all-threads rows (XLA's CPU thread "
                                "pool is sized when jax starts)")
        jax = _jax_module()
        import jax.numpy as jnp
        params = dict(case.params)
        n_grads = case.entry.n_grads
        argnums = 0 if n_grads == 1 else tuple(range(n_grads))
        # float64 needs JAX's x64 mode: switched on for this peer's tracing and calls only
        # (a global jax_enable_x64 would change every other JAX user in the process)
        x64 = case.dtype == np.float64
        with jax.enable_x64(x64):
            value_and_grad = jax.jit(jax.value_and_grad(
                lambda *arrays: loss_fn(jnp, *arrays, **params), argnums=argnums))
            arrays = [jax.device_put(a) for a in case.args]

        def call():
            with jax.enable_x64(x64):
                loss, grad = value_and_grad(*arrays)
                jax.block_until_ready(grad)
            return loss, grad
        return call
    return build


def sklearn_peer(make_loss: Callable,
                 scale: Callable[[Mapping], float] = lambda params: 1.0) -> Builder:
    """make_loss(sklearn._loss.loss module, case) -> a loss object; ``scale(params)``
    multiplies the per-sample loss and gradient (through sample_weight, with the 1/n of
    "mean")."""
    def build(case: Case, n_threads: int):
        from sklearn._loss import loss as sklearn_loss
        loss_object = make_loss(sklearn_loss, case)
        dtype = case.dtype
        if case.entry.layout == "flat":
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


def numba_peer(kernel_name: str, param_names: Sequence[str] = ()) -> Builder:
    def build(case: Case, n_threads: int):
        import numba
        kernel = numba_kernels()[kernel_name]
        numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
        grads = [np.empty_like(a) for a in case.differentiated]
        params = [case.params[name] for name in param_names]
        if case.entry.layout == "flat":   # the kernels of element-wise losses are 1-D
            arrays = [a.reshape(-1) for a in case.args + tuple(grads)]
        else:
            arrays = list(case.args) + grads
        result = _one_or_tuple(grads)

        def call():
            return kernel(*arrays, *params), result
        return call
    return build
