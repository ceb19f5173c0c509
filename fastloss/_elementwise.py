"""The public element-wise loss functions, made from the loss table (fastloss/_table.py).

Each row becomes a function with the row's name and keyword arguments, its docstring (the
row's summary and maths, the argument section generated), a C-level fast path for plain calls
(exact arrays, no weight, no hessian; fastloss._kernels.elementwise_fast) and the full path
(``_call``): every check of fastloss/_validation.py before any kernel runs, then one call of
the row's block worker. The function is generated as Python source so that it has a real
signature, keyword-only arguments with their defaults, and no ``**kwargs`` parsing in the
hot path (a training loop calls a loss thousands of times on small arrays).
"""

from __future__ import annotations

import math
from typing import Dict

import numpy as np

from . import _kernels
from . import _validation as check
from ._api import _reduce   # the reductions of every loss, written once
from ._results import LossGradHess, LossResult
from ._table import ELEMENTWISE, KERNEL_INDEX, ElementwiseLoss, Param

# the fast-path call of a row whose kernel and scalars do not follow from its real options
# alone (a bool option picks the kernel or becomes a scalar); None: the call is not plain
_FAST_SCALARS = {
    "binary_cross_entropy_with_logits": ("{bce_logits} if pos_weight is None else -1",
                                         "(1.0,)", 0),
    "poisson_nll": ("{poisson_log} if log_input is True else "
                    "({poisson_linear} if log_input is False else -1)",
                    "(eps, 1.0 if full is True else (0.0 if full is False else None))", 1),
    "kl_div": ("{kl_div} if log_target is False else "
               "({kl_div_log_target} if log_target is True else -1)", "()", 0),
}


def _periodic(weight_and_period, n_elements: int):
    """A periodic buffer as the kernels read it (fl_kernels.h): the period repeated up to
    period + ELEMENTWISE_CHUNK entries when it is shorter than the input."""
    if weight_and_period is None:
        return None, 1
    values, period = weight_and_period
    if period < n_elements:
        values = np.resize(values, period + _kernels.ELEMENTWISE_CHUNK)
    return values, period


def _option(param: Param, value):
    if param.kind == "bool":
        return check.bool_option(value, param.name)
    return check.real_scalar(value, param.name, low=param.low, high=param.high,
                             low_open=param.low_open, high_open=param.high_open)


def _array_param(row: ElementwiseLoss, value, shape: tuple, dtype):
    """The per-element parameter as (values, period) for the kernel, or None (scalar)."""
    param = next((p for p in row.params if p.name == row.array_param), None)
    if param is not None:   # a scalar option that may also be a 1-D array along the last axis
        array = np.asarray(value)
        if array.dtype.kind not in "fiu" or array.dtype == np.bool_:
            raise TypeError(f"{param.name} must be a real number or a 1-D array of them, got "
                            f"dtype {array.dtype}")
        if array.ndim != 1 or not shape or array.shape[0] != shape[-1]:
            raise ValueError(f"{param.name} as an array must be 1-D with one entry per element "
                             f"of the input's last axis ({shape[-1] if shape else 'none'}), got "
                             f"shape {array.shape}")
        wide = array.astype(np.float64)
        inside = np.ones(wide.shape, dtype=bool) if param.low is None else (
            wide > param.low if param.low_open else wide >= param.low)
        if param.high is not None:
            inside &= wide < param.high if param.high_open else wide <= param.high
        if not inside.all():
            position = int(np.argmin(inside))
            raise ValueError(f"{param.name} must be in {param.interval()}, got {wide[position]!r} "
                             f"at position {position}")
    return check.broadcast_weight(value, row.array_param, shape, dtype)


def _call(row: ElementwiseLoss, input, target, options: dict, array_value, weight, reduction,
          compute_grad, out, n_threads, compute_hess, hess_out):
    """The full path: validate everything, then run the row's kernel once."""
    # the options first, as the references check them
    values = {}
    for param in row.params:
        if param.name == row.array_param and np.ndim(options[param.name]) != 0:
            values[param.name] = float(param.default)   # the array is read per element
            continue
        value = options[param.name]
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        values[param.name] = _option(param, value)
    input = check.float_input(input, row.input_name)
    reduction = check.reduction(reduction, row.reductions)
    compute_grad = check.grad_request(compute_grad, out)
    compute_hess = check.hess_request(compute_hess, compute_grad, hess_out)
    threads = check.n_threads(n_threads)
    dtype = input.dtype
    target_array = check.float_target(target, "target", dtype, input.shape).reshape(input.shape)
    weight_values = check.broadcast_weight(weight, "weight", input.shape, dtype)
    param_values = None
    if row.array_param is not None and array_value is not None:
        if row.array_param not in row.options:   # an array option (pos_weight)
            param_values = check.broadcast_weight(array_value, row.array_param, input.shape,
                                                  dtype)
        elif np.ndim(array_value) != 0:          # a scalar option given as levels (quantile)
            param_values = _array_param(row, array_value, input.shape, dtype)
    watched = {"target": target, "weight": weight}
    if row.array_param is not None:
        watched[row.array_param] = array_value
    out = check.out_array(out, input, watched)
    hess_out = check.out_array(hess_out, input, dict(watched, out=out), name="hess_out")
    x = input if input.flags.c_contiguous else np.ascontiguousarray(input)
    if row.input_domain is not None:
        low, high = row.input_domain
        if _kernels.count_outside(x.reshape(-1), low, high, threads):
            flat = x.reshape(-1)
            position = int(np.argmax(~((flat >= low) & (flat <= high))))
            raise ValueError(f"{row.input_name} must hold values in [{low:g}, {high:g}], got "
                             f"{flat[position]!r} at position {position} (in C order)")

    # -------- nothing has been written up to here; from here on the call cannot fail
    # the returned arrays come from the buffer cache (fastloss/_buffers.pxi, issue 18)
    empty = _kernels.result_empty
    grad = (out if out is not None else empty(x.shape, dtype)) if compute_grad else None
    hess = (hess_out if hess_out is not None else empty(x.shape, dtype)) if compute_hess else None
    loss_out = empty(x.shape, dtype) if reduction == "none" else None
    if reduction == "batchmean":
        denominator = float(x.shape[0]) if x.ndim else 1.0
    else:
        denominator = float(x.size)
    grad_scale = 1.0
    if reduction in ("mean", "batchmean"):
        grad_scale = 1.0 / denominator if denominator else math.nan
    weight_buffer, weight_period = _periodic(weight_values, x.size)
    param_buffer, param_period = _periodic(param_values, x.size)
    kernel, scalars = row.kernel(values)
    total = _kernels.elementwise(KERNEL_INDEX[kernel], x, target_array, weight_buffer,
                                 weight_period, param_buffer, param_period, scalars, grad_scale,
                                 grad, hess, loss_out, threads)
    loss = _reduce(total, denominator, reduction, loss_out)
    if compute_hess:
        return LossGradHess(loss, grad, hess)
    return LossResult(loss, grad)


# ------------------------------------------------------------------ the functions

def _docstring(row: ElementwiseLoss) -> str:
    lines = [row.summary, "", f"Semantics of {row.reference}.", "", "Parameters", "----------",
             f"{row.input_name} : ndarray of any shape, float32 or float64"]
    if row.input_domain is not None:
        lines.append(f"    Values in [{row.input_domain[0]:g}, {row.input_domain[1]:g}] "
                     "(outside, nan included: ValueError).")
    lines += ["target : array of the same shape",
              "    Any real dtype, converted to the input's dtype."]
    for param in row.params:
        if param.name == row.array_param and row.array_param_doc:
            lines += row.array_param_doc.splitlines()
            continue
        kind = "bool" if param.kind == "bool" else f"float in {param.interval()}"
        lines += [f"{param.name} : {kind}, default {param.default!r}", f"    {param.doc[0].upper()}{param.doc[1:]}."]
    lines += ["weight : array broadcastable to the input's shape, optional",
              "    Multiplies each element's loss, gradient and hessian; \"mean\" still divides",
              "    by the number of elements (as PyTorch's weight)."]
    if row.array_param is not None and row.array_param not in row.options:
        lines += row.array_param_doc.splitlines()
    reductions = " | ".join(f'"{r}"' for r in row.reductions)
    lines += [f"reduction : {reductions}",
              "    \"mean\" divides the sum by the number of elements"
              + (", \"batchmean\" by input.shape[0]." if "batchmean" in row.reductions else "."),
              "compute_grad, out, n_threads : see the README (\"Arguments every loss takes\")."]
    if row.hessian is not None:
        hess = ("the exact second derivative" if row.hessian == "exact" else
                "the weight times the gradient's scale, everywhere (the loss is piecewise "
                "linear: its second derivative is 0 almost everywhere)")
        lines += ["compute_hess, hess_out : with compute_hess=True the result is",
                  f"    LossGradHess(loss, grad, hess), hess holding {hess},",
                  "    scaled like the gradient; hess_out follows the rules of out."]
    lines += ["", "Returns", "-------",
              "LossResult(loss, grad) (LossGradHess(loss, grad, hess) with compute_hess=True)",
              "", "Maths", "-----"] + row.maths.splitlines()
    return "\n".join(lines)


def _source(row: ElementwiseLoss) -> str:
    """The Python source of the row's function."""
    options = [f"{p.name}={p.default!r}" for p in row.params]
    extra_array = row.array_param is not None and row.array_param not in row.options
    keywords = options + ["weight=None"] + ([f"{row.array_param}=None"] if extra_array else [])
    keywords += ["reduction='mean'", "compute_grad=True", "out=None", "n_threads=None"]
    if row.hessian is not None:
        keywords += ["compute_hess=False", "hess_out=None"]
    hess_args = "compute_hess, hess_out" if row.hessian is not None else "False, None"
    plain = "weight is None" + (" and compute_hess is False and hess_out is None"
                                if row.hessian is not None else "")
    if row.name in _FAST_SCALARS:   # (kernel indices written in as constants)
        kind, scalars, n_checked = _FAST_SCALARS[row.name]
        kind = kind.format(**KERNEL_INDEX)
    else:
        kernel, _ = row.kernel({p.name: p.default for p in row.params})
        kind = str(KERNEL_INDEX[kernel])
        reals = [p.name for p in row.params if p.kind == "real"]
        scalars = "(" + "".join(f"{name}, " for name in reals) + ")"
        n_checked = len(reals)
    option_dict = "{" + ", ".join(f"{p.name!r}: {p.name}" for p in row.params) + "}"
    array_value = row.array_param if row.array_param is not None else "None"
    return (f"def {row.name}({row.input_name}, target, *, {', '.join(keywords)}):\n"
            f"    if {plain}:\n"
            f"        result = _fast({kind}, {row.input_name}, target, {scalars}, {n_checked},\n"
            f"                       reduction, compute_grad, out, n_threads)\n"
            f"        if result is not None:\n"
            f"            return result\n"
            f"    return _call(_ROW, {row.input_name}, target, {option_dict}, {array_value},\n"
            f"                 weight, reduction, compute_grad, out, n_threads, {hess_args})\n")


def _make(row: ElementwiseLoss):
    namespace = {"_fast": _kernels.elementwise_fast, "_call": _call, "_ROW": row,
                 "_K": KERNEL_INDEX}
    exec(compile(_source(row), f"<fastloss table: {row.name}>", "exec"), namespace)
    function = namespace[row.name]
    function.__doc__ = _docstring(row)
    function.__module__ = "fastloss"
    function.__qualname__ = row.name
    return function


def _register_domains(row: ElementwiseLoss) -> None:
    """The fast path checks the row's real options against these (fastloss/_kernels.pyx)."""
    domains = [(p.low, p.high, p.low_open, p.high_open) for p in row.params if p.kind == "real"]
    kernels = {row.kernel({p.name: p.default for p in row.params})[0]}
    if row.name == "poisson_nll":
        kernels = {"poisson_log", "poisson_linear"}
    for kernel in kernels:
        _kernels._register_domains(KERNEL_INDEX[kernel], domains, row.input_domain)


FUNCTIONS: Dict[str, object] = {}
for _row in ELEMENTWISE:
    _register_domains(_row)
    FUNCTIONS[_row.name] = _make(_row)
del _row


# ------------------------------------------------------------------ penalties, gaussian_kl

def _penalty(params, strength, out, accumulate, n_threads, squared: bool):
    result = _kernels.penalty_fast(params, strength, out, accumulate, n_threads, squared)
    if result is not None:
        return result
    params = check.float_input(params, "params")
    strength = check.real_scalar(strength, "strength", low=0.0)
    accumulate = check.bool_option(accumulate, "accumulate")
    threads = check.n_threads(n_threads)
    if accumulate and out is None:
        raise ValueError("accumulate=True adds the gradient into out: pass out (the array to "
                         "add into)")
    out = check.out_array(out, params, {})
    x = params if params.flags.c_contiguous else np.ascontiguousarray(params)
    grad = out if out is not None else _kernels.result_empty(x.shape, x.dtype)
    total = _kernels.penalty(x, grad, strength, squared, accumulate, threads)
    return LossResult(strength * total, grad)


def l1_penalty(params, *, strength, out=None, accumulate=False, n_threads=None) -> LossResult:
    r"""L1 penalty strength * sum |w| and its gradient strength * sign(w) (0 at 0).

    Parameters
    ----------
    params : ndarray of any shape, float32 or float64
    strength : float >= 0
    out : ndarray like params, optional
        Receives the gradient (may be params itself); with accumulate=True the gradient is
        added to what out holds: ``l1_penalty(w, strength=1e-3, out=grad_w, accumulate=True)``
        after ``grad_w = X.T @ g`` is one pass.
    accumulate : bool
    n_threads : see the README ("Arguments every loss takes").

    Returns
    -------
    LossResult(float, grad): the penalty (summed in double; no reduction) and its gradient.
    """
    return _penalty(params, strength, out, accumulate, n_threads, False)


def l2_penalty(params, *, strength, out=None, accumulate=False, n_threads=None) -> LossResult:
    r"""L2 penalty strength * sum w^2 and its gradient 2 * strength * w.

    Parameters and return value as l1_penalty.
    """
    return _penalty(params, strength, out, accumulate, n_threads, True)


def gaussian_kl(mean, log_var, *, reduction="mean", compute_grad=True, out=None,
                n_threads=None, compute_hess=False, hess_out=None):
    r"""The VAE's KL term to N(0, I) and its gradients with respect to mean and log_var.

    Semantics: Kingma and Welling (2014), appendix B. Per sample i,

        loss_i = -1/2 sum_d (1 + v_id - m_id^2 - exp(v_id))
        dloss/dm = m,   dloss/dv = (exp(v) - 1) / 2
        d2loss/dm2 = 1, d2loss/dv2 = exp(v) / 2

    Parameters
    ----------
    mean, log_var : ndarray (N, D), float32 or float64, the same shape and dtype
    reduction : "mean" | "sum" | "none"
        "none" gives (N,) per-sample losses, "mean" divides their sum by N.
    compute_grad : bool
    out : None, or a 2-tuple whose entries are arrays like mean (or None: allocated)
    n_threads : see the README ("Arguments every loss takes").
    compute_hess, hess_out : with compute_hess=True the result is LossGradHess with hess a
        2-tuple (d2/dm2, d2/dv2), scaled like the gradient; hess_out as out.

    Returns
    -------
    LossResult(loss, (grad_mean, grad_log_var)); no weight.
    """
    mean = check.float_input(mean, "mean")
    if mean.ndim != 2:
        raise ValueError(f"mean must be 2-D (N, D), got {mean.ndim}-D shape {mean.shape}")
    log_var = check.float_input(log_var, "log_var")
    if log_var.shape != mean.shape or log_var.dtype != mean.dtype:
        raise ValueError(f"log_var must have mean's shape {mean.shape} and dtype {mean.dtype}, "
                         f"got shape {log_var.shape} and dtype {log_var.dtype}")
    reduction = check.reduction(reduction)
    outs = check.out_tuple(out, 2, compute_grad)
    compute_hess = check.hess_request(compute_hess, compute_grad, hess_out)
    hess_outs = check.out_tuple(hess_out, 2, compute_hess, name="hess_out")
    threads = check.n_threads(n_threads)
    arrays = []   # out[0], out[1], hess_out[0], hess_out[1]: none may overlap another
    for name, given in (("out", outs), ("hess_out", hess_outs)):
        for i, array in enumerate(given):
            like, other = ((mean, log_var), (log_var, mean))[i]
            watched = {("log_var", "mean")[i]: other}
            watched.update({f"another gradient or hessian buffer ({j})": a
                            for j, a in enumerate(arrays) if a is not None})
            arrays.append(check.out_array(array, like, watched, name=f"{name}[{i}]"))
    m = np.ascontiguousarray(mean)
    v = np.ascontiguousarray(log_var)
    n = m.shape[0]
    grads = hess = None
    empty = _kernels.result_empty
    if compute_grad:
        grads = tuple(arrays[i] if arrays[i] is not None else empty(m.shape, m.dtype)
                      for i in (0, 1))
    if compute_hess:
        hess = tuple(arrays[2 + i] if arrays[2 + i] is not None else empty(m.shape, m.dtype)
                     for i in (0, 1))
    loss_out = empty((n,), m.dtype) if reduction == "none" else None
    grad_scale = (1.0 / n if n else math.nan) if reduction == "mean" else 1.0
    total = _kernels.gaussian_kl(m, v, grad_scale, grads[0] if grads else None,
                                 grads[1] if grads else None, hess[0] if hess else None,
                                 hess[1] if hess else None, loss_out, threads)
    loss = _reduce(total, float(n), reduction, loss_out)
    if compute_hess:
        return LossGradHess(loss, grads, hess)
    return LossResult(loss, grads)
