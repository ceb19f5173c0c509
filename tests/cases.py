"""The registry of loss functions that the shared tests (tests/test_losses.py) run over.

One ``LossCase`` per public loss: how to make valid inputs, which option combinations to
try, and the PyTorch expression with the same semantics. Adding a loss here enrols it in every
shared test: reference, finite differences, PyTorch values and autograd gradients, float32 and
float64, out= and in place, compute_grad=False, thread-count determinism, non-contiguous
inputs, every SIMD level, and the edge cases of API.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

try:  # PyTorch is in the test extra; the torch tests are skipped only where it is absent
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None
    F = None

Inputs = Tuple[np.ndarray, np.ndarray, dict]  # (differentiated input, target, keyword args)


@dataclass(frozen=True)
class LossCase:
    name: str
    # make(rng, dtype, shape, option) -> (input, target, kwargs); `option` is one entry of
    # `options` (keys starting with "_" steer the maker and are not passed to the loss)
    make: Callable[[np.random.Generator, np.dtype, tuple, dict], Inputs]
    options: List[Dict] = field(default_factory=lambda: [{}])
    # torch_loss(input_tensor, target, kwargs, reduction) -> torch loss tensor
    torch_loss: Optional[Callable] = None
    # shapes: "small" for option grids, "threads" large enough to run in parallel
    shapes: Dict[str, tuple] = field(default_factory=dict)
    # True when rows (axis 0) are samples with a class axis (nan confined to a row)
    class_axis: bool = False
    # the input must lie in this interval (binary_cross_entropy's probabilities): nan and
    # inf are a ValueError there, not a value to propagate (tests/test_table.py)
    input_domain: Optional[tuple] = None
    # torch's own formula overflows at infinite inputs where fastloss's stable form does not
    # (soft_margin's log1p(exp(z)) gives nan at x = -inf): not compared with torch there
    torch_nonfinite_differs: bool = False

    def call_kwargs(self, kwargs: dict) -> dict:
        return {k: v for k, v in kwargs.items() if not k.startswith("_")}


# --------------------------------------------------------------------------- softmax CE

def _make_softmax_ce(rng, dtype, shape, option):
    n, c = shape
    logits = (rng.standard_normal((n, c)) * 3).astype(dtype)
    kwargs = {k: v for k, v in option.items() if not k.startswith("_")}
    if "weight" in kwargs:
        kwargs["weight"] = rng.uniform(0.2, 2.0, c).astype(dtype)
    if option.get("_target") == "prob":
        target = rng.dirichlet(np.ones(c), n).astype(dtype) if n else np.zeros((0, c), dtype)
    else:
        target = rng.integers(0, c, n)
        if "ignore_index" in kwargs and n:
            target[rng.random(n) < 0.3] = kwargs["ignore_index"]
    return logits, target, kwargs


def _torch_softmax_ce(x, target, kwargs, reduction):
    kw = dict(kwargs)
    if kw.get("weight") is not None:
        kw["weight"] = torch.as_tensor(kw["weight"], dtype=x.dtype)
    t = torch.as_tensor(target)
    if t.is_floating_point():
        t = t.to(x.dtype)
    return F.cross_entropy(x, t, reduction=reduction, **kw)


SOFTMAX_CE = LossCase(
    name="softmax_cross_entropy",
    make=_make_softmax_ce,
    options=[
        {},
        {"weight": True},
        {"label_smoothing": 0.1},
        {"ignore_index": 1},
        {"weight": True, "label_smoothing": 0.25, "ignore_index": 2},
        {"_target": "prob"},
        {"_target": "prob", "weight": True, "label_smoothing": 0.2},
    ],
    torch_loss=_torch_softmax_ce,
    shapes={"small": (37, 11), "threads": (700, 257)},
    class_axis=True,
)

CASES: List[LossCase] = [SOFTMAX_CE]


def assert_close(actual, expected, dtype, what="", float32=(2e-5, 2e-6),
                 float64=(1e-10, 1e-12)):
    """allclose in float64 with (rtol, atol) by dtype, atol scaled by the largest finite
    expected magnitude (at least 1); nan where expected is nan."""
    rtol, atol = float32 if np.dtype(dtype) == np.float32 else float64
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.abs(expected[finite]).max())) if finite.any() else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, equal_nan=True,
                               err_msg=what)


def option_id(option: dict) -> str:
    if not option:
        return "default"
    return "-".join(f"{k.lstrip('_')}={v}" if v is not True else k for k, v in option.items())


# ------------------------------------------------------------------- element-wise losses

def _make_elementwise(rng, dtype, shape, option, target_kind):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    if target_kind == "hard":
        target = (rng.random(shape) < 0.3).astype(dtype)
    elif target_kind == "soft":
        target = rng.random(shape).astype(dtype)
    else:  # regression targets
        target = (rng.standard_normal(shape) * 2).astype(dtype)
    return x, target, {k: v for k, v in option.items() if not k.startswith("_")}


# weight shapes the BCE maker can give: along the last axis (periodic, no copy), the
# input's full shape, a scalar, per row (N, 1) (a broadcast the kernel expands once)
def _bce_weight(rng, dtype, shape, kind):
    weight_shape = {"last": shape[-1:], "full": shape, "scalar": (), "row": shape[:-1] + (1,)}[kind]
    return rng.uniform(0.2, 2.0, weight_shape).astype(dtype)


def _make_bce(rng, dtype, shape, option):
    x, target, kwargs = _make_elementwise(rng, dtype, shape, option,
                                          option.get("_target", "soft"))
    if "_weight" in option:
        kwargs["weight"] = _bce_weight(rng, dtype, shape, option["_weight"])
    if option.get("_pos_weight"):
        kwargs["pos_weight"] = rng.uniform(0.5, 4.0, shape[-1:]).astype(dtype)
    return x, target, kwargs


def _torch_bce(x, target, kwargs, reduction):
    kw = {k: torch.as_tensor(v, dtype=x.dtype) for k, v in kwargs.items()}
    return F.binary_cross_entropy_with_logits(x, torch.as_tensor(target, dtype=x.dtype),
                                              reduction=reduction, **kw)


BCE_WITH_LOGITS = LossCase(
    name="binary_cross_entropy_with_logits",
    make=_make_bce,
    options=[
        {},
        {"_target": "hard"},
        {"_weight": "last"},
        {"_weight": "full"},
        {"_weight": "scalar"},
        {"_pos_weight": True},
        {"_weight": "row", "_pos_weight": True, "_target": "hard"},
    ],
    torch_loss=_torch_bce,
    shapes={"small": (37, 11), "threads": (300, 257)},
)


def _make_regression(rng, dtype, shape, option):
    return _make_elementwise(rng, dtype, shape, option, "regression")


def _torch_huber(x, target, kwargs, reduction):
    return F.huber_loss(x, torch.as_tensor(target, dtype=x.dtype), reduction=reduction, **kwargs)


def _torch_smooth_l1(x, target, kwargs, reduction):
    return F.smooth_l1_loss(x, torch.as_tensor(target, dtype=x.dtype), reduction=reduction,
                            **kwargs)


HUBER = LossCase(
    name="huber",
    make=_make_regression,
    options=[{}, {"delta": 0.5}, {"delta": 3.0}],
    torch_loss=_torch_huber,
    shapes={"small": (37, 11), "threads": (300, 257)},
)

SMOOTH_L1 = LossCase(
    name="smooth_l1",
    make=_make_regression,
    options=[{}, {"beta": 0.5}, {"beta": 3.0}],
    torch_loss=_torch_smooth_l1,
    shapes={"small": (37, 11), "threads": (300, 257)},
)


def torchvision_sigmoid_focal(x, t, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss's formula, written in torch (torchvision is not a
    test dependency)."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * t + (1 - alpha) * (1 - t)
        loss = alpha_t * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def _make_sigmoid_focal(rng, dtype, shape, option):
    return _make_elementwise(rng, dtype, shape, option, option.get("_target", "hard"))


def _torch_sigmoid_focal(x, target, kwargs, reduction):
    return torchvision_sigmoid_focal(x, torch.as_tensor(target, dtype=x.dtype),
                                     reduction=reduction, **kwargs)


SIGMOID_FOCAL = LossCase(
    name="sigmoid_focal",
    make=_make_sigmoid_focal,
    options=[
        {},
        {"_target": "soft"},
        {"alpha": -1.0},
        {"gamma": 0.0},
        {"gamma": 1.0, "alpha": 0.75},
        {"gamma": 0.5},
        {"gamma": 1.7, "alpha": -1.0, "_target": "soft"},
    ],
    torch_loss=_torch_sigmoid_focal,
    shapes={"small": (37, 11), "threads": (300, 257)},
)


# ------------------------------------------------------------------------- softmax focal

def _make_softmax_focal(rng, dtype, shape, option):
    n, c = shape
    logits = (rng.standard_normal((n, c)) * 3).astype(dtype)
    kwargs = {k: v for k, v in option.items() if not k.startswith("_")}
    if option.get("_alpha") == "per_class":
        kwargs["alpha"] = rng.uniform(0.2, 2.0, c).astype(dtype)
    target = rng.integers(0, c, n)
    if "ignore_index" in kwargs and n:
        target[rng.random(n) < 0.3] = kwargs["ignore_index"]
    return logits, target, kwargs


def torch_softmax_focal(x, target, alpha=None, gamma=2.0, ignore_index=-100,
                        reduction="mean"):
    """-alpha_y (1 - p_y)^gamma log p_y per row, in torch; "mean" over the rows kept."""
    y = torch.as_tensor(target)
    kept = y != ignore_index
    y_safe = torch.where(kept, y, torch.zeros_like(y))
    log_p = F.log_softmax(x, dim=1).gather(1, y_safe[:, None])[:, 0]
    if alpha is None:
        factor = 1.0
    elif np.ndim(alpha) == 0:
        factor = float(alpha)
    else:
        factor = torch.as_tensor(alpha, dtype=x.dtype)[y_safe]
    loss = -factor * (1 - log_p.exp()) ** gamma * log_p
    loss = torch.where(kept, loss, torch.zeros_like(loss))
    return {"none": loss, "sum": loss.sum(), "mean": loss.sum() / kept.sum()}[reduction]


def _torch_softmax_focal(x, target, kwargs, reduction):
    return torch_softmax_focal(x, target, reduction=reduction, **kwargs)


SOFTMAX_FOCAL = LossCase(
    name="softmax_focal",
    make=_make_softmax_focal,
    options=[
        {},
        {"gamma": 0.0},
        {"alpha": 0.25, "gamma": 1.0},
        {"_alpha": "per_class"},
        {"gamma": 0.5, "ignore_index": 1},
        {"_alpha": "per_class", "gamma": 3.5, "ignore_index": 2},
    ],
    torch_loss=_torch_softmax_focal,
    shapes={"small": (37, 11), "threads": (700, 257)},
    class_axis=True,
)

CASES.extend([BCE_WITH_LOGITS, HUBER, SMOOTH_L1, SIGMOID_FOCAL, SOFTMAX_FOCAL])


# ------------------------------------------------------------- the loss table's new rows
#
# The element-wise losses added with the loss table (fastloss/_table.py): inputs drawn by
# the row's input and target kinds, each row's options, `weight` (last axis, full, scalar,
# per row), and the torch expression of the same loss (torch's own function where it has
# the loss; the formula of the named reference written in torch where it does not).

def draw_input(rng, dtype, shape, kind):
    if kind == "probability":
        return rng.uniform(0.02, 0.98, shape).astype(dtype)
    if kind == "log_probability":
        return np.log(rng.uniform(0.02, 1.0, shape)).astype(dtype)
    if kind == "positive":
        return rng.uniform(0.1, 3.0, shape).astype(dtype)
    return (rng.standard_normal(shape) * 2).astype(dtype)


def draw_target(rng, dtype, shape, kind):
    if kind == "binary":
        return (rng.random(shape) < 0.3).astype(dtype)
    if kind == "soft":
        return rng.random(shape).astype(dtype)
    if kind == "sign":
        return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(dtype)
    if kind == "count":
        return rng.poisson(1.5, shape).astype(dtype)
    if kind == "probability":
        return rng.uniform(0.0, 1.0, shape).astype(dtype) * (rng.random(shape) > 0.1)
    return (rng.standard_normal(shape) * 2).astype(dtype)


def _table_maker(row):
    def make(rng, dtype, shape, option):
        kind = "positive" if option.get("log_input") is False else row.input_kind
        x = draw_input(rng, dtype, shape, kind)
        target = draw_target(rng, dtype, shape, row.target_kind)
        kwargs = {k: v for k, v in option.items() if not k.startswith("_")}
        if "_weight" in option and len(shape):
            kwargs["weight"] = _bce_weight(rng, dtype, shape, option["_weight"])
        if option.get("_quantiles") and len(shape):
            kwargs["quantile"] = rng.uniform(0.05, 0.95, shape[-1])
        if option.get("_log_target"):
            target = np.log(np.maximum(target, 1e-3)).astype(dtype)
        return x, target, kwargs
    return make


def _weighted(loss, kwargs, x, reduction):
    """torch: per-element loss times weight, then the reduction (mean over elements)."""
    if kwargs.get("weight") is not None:
        loss = loss * torch.as_tensor(kwargs["weight"], dtype=x.dtype)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "batchmean":
        return loss.sum() / x.shape[0]
    return loss


def _torch_table(name):
    def torch_loss(x, target, kwargs, reduction):
        t = torch.as_tensor(target, dtype=x.dtype)
        kw = {k: v for k, v in kwargs.items() if k != "weight"}
        if name == "mse":
            loss = F.mse_loss(x, t, reduction="none")
        elif name == "mae":
            loss = F.l1_loss(x, t, reduction="none")
        elif name == "pinball":   # scikit-learn's PinballLoss, nan kept
            q = torch.as_tensor(kw.get("quantile", 0.5), dtype=x.dtype)
            r = t - x
            loss = torch.where(r >= 0, q * r, (q - 1) * r)
        elif name == "log_cosh":  # optax.log_cosh: logaddexp(d, -d) - log 2
            d = x - t
            loss = torch.logaddexp(d, -d) - np.log(2.0)
        elif name == "poisson_nll":
            loss = F.poisson_nll_loss(x, t, reduction="none", **kw)
        elif name == "tweedie":   # LightGBM's tweedie objective (log link)
            p = kw.get("power", 1.5)
            loss = -t * torch.exp((1 - p) * x) / (1 - p) + torch.exp((2 - p) * x) / (2 - p)
        elif name == "hinge":     # max(0, m - t x), relu's 0 at the kink
            z = kw.get("margin", 1.0) - t * x
            loss = F.relu(z)
        elif name == "squared_hinge":   # Keras SquaredHinge per element, t as given
            z = kw.get("margin", 1.0) - t * x
            loss = F.relu(z) ** 2
        elif name == "soft_margin":
            loss = F.soft_margin_loss(x, t, reduction="none")
        elif name == "binary_cross_entropy":
            loss = F.binary_cross_entropy(x, t, reduction="none")
        elif name == "kl_div":
            loss = F.kl_div(x, t, reduction="none", log_target=kw.get("log_target", False))
        else:
            raise KeyError(name)
        return _weighted(loss, kwargs, x, reduction)
    return torch_loss


TABLE_OPTIONS = {
    "mse": [{}, {"_weight": "last"}, {"_weight": "full"}],
    "mae": [{}, {"_weight": "row"}],
    "pinball": [{}, {"quantile": 0.1}, {"quantile": 0.9, "_weight": "scalar"},
                {"_quantiles": True}],
    "log_cosh": [{}, {"_weight": "last"}],
    "poisson_nll": [{}, {"full": True}, {"log_input": False, "_weight": "full"},
                    {"log_input": False, "full": True, "eps": 1e-3}],
    "tweedie": [{}, {"power": 1.2}, {"power": 1.8, "_weight": "last"}],
    "hinge": [{}, {"margin": 0.5}, {"margin": 2.0, "_weight": "row"}],
    "squared_hinge": [{}, {"margin": 0.5, "_weight": "full"}],
    "soft_margin": [{}, {"_weight": "last"}],
    "binary_cross_entropy": [{}, {"_weight": "last"}],
    "kl_div": [{}, {"log_target": True, "_log_target": True}, {"_weight": "full"}],
}
# and weight on the four losses that had none before the table
BCE_WITH_LOGITS.options.append({"_weight": "last", "_target": "hard"})
HUBER.options.append({"delta": 0.7, "_weight": "full"})
SMOOTH_L1.options.append({"beta": 0.4, "_weight": "row"})


def _with_weight(make):
    def wrapped(rng, dtype, shape, option):
        x, target, kwargs = make(rng, dtype, shape, option)
        if "_weight" in option and len(shape) and "weight" not in kwargs:
            kwargs["weight"] = _bce_weight(rng, dtype, shape, option["_weight"])
        return x, target, kwargs
    return wrapped


for _case in (HUBER, SMOOTH_L1):
    object.__setattr__(_case, "make", _with_weight(_case.make))


def _torch_weighted(torch_loss):
    def wrapped(x, target, kwargs, reduction):
        if kwargs.get("weight") is None:
            return torch_loss(x, target, kwargs, reduction)
        kw = {k: v for k, v in kwargs.items() if k != "weight"}
        return _weighted(torch_loss(x, target, kw, "none"), kwargs, x, reduction)
    return wrapped


for _case in (HUBER, SMOOTH_L1):
    object.__setattr__(_case, "torch_loss", _torch_weighted(_case.torch_loss))


def _table_cases():
    from fastloss._table import ELEMENTWISE_BY_NAME

    cases = []
    for name, options in TABLE_OPTIONS.items():
        row = ELEMENTWISE_BY_NAME[name]
        cases.append(LossCase(name=name, make=_table_maker(row), options=options,
                              torch_loss=_torch_table(name),
                              shapes={"small": (37, 11), "threads": (300, 257)},
                              input_domain=row.input_domain,
                              torch_nonfinite_differs=name == "soft_margin"))
    return cases


TABLE_CASES = _table_cases()
CASES.extend(TABLE_CASES)
# losses whose second derivative the kernels return (fastloss/_table.py, "hessian")
# ------------------------------------------ class-axis options and losses (issue 13)
# softmax_cross_entropy with sample weights, z-loss, soft-capping (and both probability and
# class-index targets), softmax_focal with sample weights, multi_margin and
# kl_divergence_with_logits. K-dim inputs have their own tests (tests/test_class_axis.py):
# the shared tests here are written for (N, C) arrays.

def torch_class_axis_ce(x, target, kwargs, reduction):
    """F.cross_entropy with the class-axis options written out in torch: logits soft-capped
    (c tanh(x / c)), per-sample loss s_i [CE + zl lse^2] (zl term for kept samples), "mean"
    over sum_i s_i w_{y_i} (sum_i s_i for probabilities). Any layout (N, C, d1, ...)."""
    kw = dict(kwargs)
    sample_weight = kw.pop("sample_weight", None)
    z_loss = kw.pop("z_loss", 0.0)
    cap = kw.pop("logit_softcap", None)
    weight = kw.pop("weight", None)
    ignore_index = kw.get("ignore_index", -100)
    z = cap * torch.tanh(x / cap) if cap is not None else x
    w = torch.as_tensor(weight, dtype=x.dtype) if weight is not None else None
    t = torch.as_tensor(target)
    probabilities = t.is_floating_point()
    if probabilities:
        t = t.to(x.dtype)
    ce = F.cross_entropy(z, t, weight=w, reduction="none", **kw)
    lse = torch.logsumexp(z, dim=1)
    kept = torch.ones_like(lse, dtype=torch.bool) if probabilities else t != ignore_index
    per = ce + z_loss * torch.where(kept, lse ** 2, torch.zeros_like(lse))
    s = torch.ones_like(lse)
    if sample_weight is not None:
        s_t = torch.as_tensor(sample_weight, dtype=x.dtype)
        s = s_t.reshape(s_t.shape + (1,) * (lse.ndim - s_t.ndim)) * s
    per = per * s
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    if probabilities:
        return per.sum() / s.sum()
    w_y = w[torch.where(kept, t, 0)] if w is not None else torch.ones_like(lse)
    return per.sum() / (s * w_y * kept).sum()


def torch_focal_kdim(xt, target, kwargs, reduction):
    """softmax_focal in torch for any layout (N, C, d1, ..., dK): torch_softmax_focal on the
    (N * d1 * ... * dK, C) rows, times the sample weights; "mean" over their kept sum."""
    kw = dict(kwargs)
    s = kw.pop("sample_weight", None)
    c = xt.shape[1]
    rows = torch.movedim(xt, 1, -1).reshape(-1, c)
    flat = np.asarray(target).reshape(-1)
    per = torch_softmax_focal(rows, flat, reduction="none", **kw)
    weights = torch.ones_like(per)
    if s is not None:
        s = np.broadcast_to(np.asarray(s).reshape(s.shape + (1,) * (np.ndim(target) - s.ndim)),
                            np.shape(target))
        weights = torch.as_tensor(np.array(s).reshape(-1), dtype=xt.dtype)
    per = per * weights
    if reduction == "none":
        return per.reshape(np.shape(target))
    if reduction == "sum":
        return per.sum()
    kept = torch.as_tensor(flat != kw.get("ignore_index", -100))
    return per.sum() / (weights * kept).sum()


def _make_class_axis_ce(rng, dtype, shape, option):
    x, target, kwargs = _make_softmax_ce(rng, dtype, shape, option)
    if option.get("_sample_weight"):
        kwargs["sample_weight"] = rng.uniform(0.0, 2.0, shape[0]).astype(dtype)
    return x, target, kwargs


SOFTMAX_CE_CLASS_AXIS = LossCase(
    name="softmax_cross_entropy",
    make=_make_class_axis_ce,
    options=[
        {"_sample_weight": True},
        {"z_loss": 1e-2},
        {"logit_softcap": 4.0},
        {"_sample_weight": True, "z_loss": 0.05, "logit_softcap": 2.5, "weight": True,
         "label_smoothing": 0.1, "ignore_index": 1},
        {"_target": "prob", "_sample_weight": True, "z_loss": 1e-3, "logit_softcap": 6.0},
    ],
    torch_loss=torch_class_axis_ce,
    shapes={"small": (37, 11), "threads": (700, 257)},
    class_axis=True,
)


def _make_focal_weighted(rng, dtype, shape, option):
    x, target, kwargs = _make_softmax_focal(rng, dtype, shape, option)
    kwargs["sample_weight"] = rng.uniform(0.0, 2.0, shape[0]).astype(dtype)
    return x, target, kwargs


SOFTMAX_FOCAL_WEIGHTED = LossCase(
    name="softmax_focal",
    make=_make_focal_weighted,
    options=[{"_sample_weight": True},
             {"_sample_weight": True, "_alpha": "per_class", "gamma": 1.5, "ignore_index": 2}],
    torch_loss=torch_focal_kdim,
    shapes={"small": (37, 11), "threads": (700, 257)},
    class_axis=True,
)


def _make_multi_margin(rng, dtype, shape, option):
    n, c = shape
    x = (rng.standard_normal((n, c)) * 0.7).astype(dtype)
    kwargs = {k: v for k, v in option.items() if not k.startswith("_")}
    if option.get("_weight"):
        kwargs["weight"] = rng.uniform(0.2, 2.0, c).astype(dtype)
    return x, rng.integers(0, c, n), kwargs


def _torch_multi_margin(x, target, kwargs, reduction):
    kw = dict(kwargs)
    if "weight" in kw:
        kw["weight"] = torch.as_tensor(kw["weight"], dtype=x.dtype)
    return F.multi_margin_loss(x, torch.as_tensor(target), reduction=reduction, **kw)


MULTI_MARGIN = LossCase(
    name="multi_margin",
    make=_make_multi_margin,
    options=[{}, {"p": 2}, {"margin": 0.3, "_weight": True}, {"p": 2, "margin": 2.0,
                                                              "_weight": True}],
    torch_loss=_torch_multi_margin,
    shapes={"small": (37, 11), "threads": (700, 257)},
    class_axis=True,
)


def _make_distill_kl(rng, dtype, shape, option):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    teacher = (rng.standard_normal(shape) * 3).astype(dtype)
    return x, teacher, {k: v for k, v in option.items() if not k.startswith("_")}


def _torch_distill_kl(x, target, kwargs, reduction):
    temperature = kwargs.get("temperature", 1.0)
    log_q = F.log_softmax(x / temperature, dim=1)
    log_p = F.log_softmax(torch.as_tensor(target, dtype=x.dtype) / temperature, dim=1)
    if reduction == "none":
        per = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(dim=1)
        return temperature ** 2 * per
    red = "batchmean" if reduction == "mean" else "sum"
    return temperature ** 2 * F.kl_div(log_q, log_p, log_target=True, reduction=red)


DISTILL_KL = LossCase(
    name="kl_divergence_with_logits",
    make=_make_distill_kl,
    options=[{}, {"temperature": 3.0}, {"temperature": 0.5}],
    torch_loss=_torch_distill_kl,
    shapes={"small": (37, 11), "threads": (700, 257)},
    class_axis=True,
)

CASES.extend([SOFTMAX_CE_CLASS_AXIS, SOFTMAX_FOCAL_WEIGHTED, MULTI_MARGIN, DISTILL_KL])


# ------------------------------------------- every registry entry of a loss, as one case

def entries_by_name() -> Dict[str, List[LossCase]]:
    """The registry's cases of each loss name, in registry order (the later entries hold
    the class-axis options of issue 13: sample_weight, z_loss, logit_softcap)."""
    entries: Dict[str, List[LossCase]] = {}
    for case in CASES:
        entries.setdefault(case.name, []).append(case)
    return entries


def merged_cases() -> Dict[str, LossCase]:
    """One case per loss name whose options carry their entry's index ("_entry"), made by
    that entry's maker: the adapters' tests run every entry of a loss as one case."""
    import dataclasses

    def merged(cases):
        def make(rng, dtype, shape, option):
            return cases[option.get("_entry", 0)].make(rng, dtype, shape, option)
        return dataclasses.replace(cases[0], make=make, options=[
            dict(option, _entry=index) if index else option
            for index, case in enumerate(cases) for option in case.options])
    return {name: merged(cases) for name, cases in entries_by_name().items()}
