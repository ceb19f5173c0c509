"""The losses of the report: one ``LossEntry`` per row of the loss table
(fastloss._table.ELEMENTWISE: its inputs from the row's input_kind and target_kind, its
parameters from the row's defaults), plus the class-axis losses (softmax_cross_entropy,
softmax_focal), gaussian_kl and the L1/L2 penalties; and their peers.

A new row of the loss table appears in the report with its fastloss function, its reference
and the floors at once; its torch peer too when the row names a ``torch_name``. A loss torch
lacks gets its torch and jax formulas below (``TORCH_FORMULAS``, ``JAX_FORMULAS``), and
numba a kernel in numba_kernels.py.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

from fastloss._table import ELEMENTWISE, ElementwiseLoss

from .cases import (LossEntry, class_inputs, gaussian_inputs, parameter_inputs,
                    table_inputs)
from .peers import jax_peer, numba_peer, sklearn_peer, torch_compiled, torch_eager

PENALTY_STRENGTH = 1e-3
LOG2 = math.log(2.0)


# --------------------------------------------------------------------------- torch

def _torch_functional(name: str) -> Callable:
    """torch.nn.functional.<name>(x, t, **params), the mean over elements."""
    def loss(x, t, **params):
        import torch.nn.functional as F
        return getattr(F, name)(x, t, **params)
    loss.__name__ = f"torch_{name}"
    return loss


def _torch_kl_div(x, t, log_target):
    # F.kl_div's reduction="mean" (the mean over elements, as fastloss's) warns on every
    # call that it is not the KL per sample: the sum over the element count is the same.
    import torch.nn.functional as F
    return F.kl_div(x, t, reduction="sum", log_target=log_target) / x.numel()


def _torch_softmax_ce(x, t):
    import torch.nn.functional as F
    return F.cross_entropy(x, t)


def _torch_softmax_focal(x, t, gamma):
    import torch
    log_pt = torch.log_softmax(x, dim=1).gather(1, t[:, None])[:, 0]
    return (-(1 - log_pt.exp()) ** gamma * log_pt).mean()


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


def _torch_pinball(x, t, quantile):
    import torch
    r = t - x
    return torch.where(r >= 0, quantile * r, (quantile - 1) * r).mean()


def _torch_log_cosh(x, t):
    import torch
    d = x - t
    return (torch.logaddexp(d, -d) - LOG2).mean()


def _torch_tweedie(x, t, power):
    import torch
    return (-t * torch.exp((1 - power) * x) / (1 - power)
            + torch.exp((2 - power) * x) / (2 - power)).mean()


def _torch_hinge(x, t, margin):
    import torch.nn.functional as F
    return F.relu(margin - t * x).mean()


def _torch_squared_hinge(x, t, margin):
    import torch.nn.functional as F
    return (F.relu(margin - t * x) ** 2).mean()


def _torch_gaussian_kl(m, v):
    return (-0.5 * (1 + v - m * m - v.exp())).sum() / m.shape[0]


def _torch_l1_penalty(w, strength):
    return strength * w.abs().sum()


def _torch_l2_penalty(w, strength):
    return strength * (w * w).sum()


# the losses whose torch form is not a torch.nn.functional function of the same name
TORCH_FORMULAS: Dict[str, Callable] = {
    "softmax_cross_entropy": _torch_softmax_ce,
    "softmax_focal": _torch_softmax_focal,
    "sigmoid_focal": _torch_sigmoid_focal,
    "pinball": _torch_pinball,
    "log_cosh": _torch_log_cosh,
    "tweedie": _torch_tweedie,
    "hinge": _torch_hinge,
    "squared_hinge": _torch_squared_hinge,
    "kl_div": _torch_kl_div,
    "gaussian_kl": _torch_gaussian_kl,
    "l1_penalty": _torch_l1_penalty,
    "l2_penalty": _torch_l2_penalty,
}


def torch_loss(name: str, torch_name=None):
    """The torch form of a loss: its formula above, else torch.nn.functional.<torch_name>;
    None when there is neither."""
    if name in TORCH_FORMULAS:
        return TORCH_FORMULAS[name]
    return _torch_functional(torch_name) if torch_name else None


# --------------------------------------------------------------------------- jax

def _jax_nn():
    import jax
    return jax.nn


def _jax_softmax_ce(jnp, x, t):
    log_p = _jax_nn().log_softmax(x, axis=1)
    return -jnp.take_along_axis(log_p, t[:, None], axis=1).mean()


def _jax_softmax_focal(jnp, x, t, gamma):
    log_pt = jnp.take_along_axis(_jax_nn().log_softmax(x, axis=1), t[:, None], axis=1)[:, 0]
    return (-(1 - jnp.exp(log_pt)) ** gamma * log_pt).mean()


def _jax_bce(jnp, x, t):
    nn = _jax_nn()
    return -(t * nn.log_sigmoid(x) + (1 - t) * nn.log_sigmoid(-x)).mean()


def _jax_sigmoid_focal(jnp, x, t, alpha, gamma):
    nn = _jax_nn()
    p = nn.sigmoid(x)
    ce = -(t * nn.log_sigmoid(x) + (1 - t) * nn.log_sigmoid(-x))
    loss = ce * (1 - (p * t + (1 - p) * (1 - t))) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean()


def _jax_huber(jnp, x, t, delta):
    d = jnp.abs(x - t)
    return jnp.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)).mean()


def _jax_smooth_l1(jnp, x, t, beta):
    d = jnp.abs(x - t)
    return jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta).mean()


def _jax_mse(jnp, x, t):
    return ((x - t) ** 2).mean()


def _jax_abs(jnp, d):
    """|d| whose jax gradient is sign(d), 0 at 0 as torch's and fastloss's (jax.grad of
    jnp.abs is 1 at 0): sign(d) d, sign having derivative 0."""
    return jnp.sign(d) * d


def _jax_mae(jnp, x, t):
    return _jax_abs(jnp, x - t).mean()


def _jax_pinball(jnp, x, t, quantile):
    r = t - x
    return jnp.where(r >= 0, quantile * r, (quantile - 1) * r).mean()


def _jax_log_cosh(jnp, x, t):
    d = x - t
    return (jnp.logaddexp(d, -d) - LOG2).mean()


def _jax_poisson_nll(jnp, x, t, log_input, full, eps):
    loss = jnp.exp(x) - t * x if log_input else x - t * jnp.log(x + eps)
    if full:
        safe = jnp.where(t > 1, t, 2.0)
        loss = loss + jnp.where(t > 1, safe * jnp.log(safe) - safe
                                + 0.5 * jnp.log(2 * math.pi * safe), 0.0)
    return loss.mean()


def _jax_tweedie(jnp, x, t, power):
    return (-t * jnp.exp((1 - power) * x) / (1 - power)
            + jnp.exp((2 - power) * x) / (2 - power)).mean()


def _jax_hinge(jnp, x, t, margin):
    return _jax_nn().relu(margin - t * x).mean()


def _jax_squared_hinge(jnp, x, t, margin):
    return (_jax_nn().relu(margin - t * x) ** 2).mean()


def _jax_soft_margin(jnp, x, t):
    return _jax_nn().softplus(-t * x).mean()


def _jax_bce_probability(jnp, x, t):
    return -(t * jnp.maximum(jnp.log(x), -100.0)
             + (1 - t) * jnp.maximum(jnp.log1p(-x), -100.0)).mean()


def _jax_kl_div(jnp, x, t, log_target):
    if log_target:
        return (jnp.exp(t) * (t - x)).mean()
    from jax.scipy.special import xlogy
    return (xlogy(t, t) - t * x).mean()


def _jax_gaussian_kl(jnp, m, v):
    return (-0.5 * (1 + v - m * m - jnp.exp(v))).sum() / m.shape[0]


def _jax_l1_penalty(jnp, w, strength):
    return strength * _jax_abs(jnp, w).sum()


def _jax_l2_penalty(jnp, w, strength):
    return strength * (w * w).sum()


JAX_FORMULAS: Dict[str, Callable] = {
    "softmax_cross_entropy": _jax_softmax_ce,
    "softmax_focal": _jax_softmax_focal,
    "binary_cross_entropy_with_logits": _jax_bce,
    "sigmoid_focal": _jax_sigmoid_focal,
    "huber": _jax_huber,
    "smooth_l1": _jax_smooth_l1,
    "mse": _jax_mse,
    "mae": _jax_mae,
    "pinball": _jax_pinball,
    "log_cosh": _jax_log_cosh,
    "poisson_nll": _jax_poisson_nll,
    "tweedie": _jax_tweedie,
    "hinge": _jax_hinge,
    "squared_hinge": _jax_squared_hinge,
    "soft_margin": _jax_soft_margin,
    "binary_cross_entropy": _jax_bce_probability,
    "kl_div": _jax_kl_div,
    "gaussian_kl": _jax_gaussian_kl,
    "l1_penalty": _jax_l1_penalty,
    "l2_penalty": _jax_l2_penalty,
}


# --------------------------------------------------------------------------- sklearn

def _sklearn_poisson(sk, case):
    # HalfPoissonLoss (log link): exp(raw) - y raw per sample, exactly poisson_nll with
    # log_input=True, full=False (no constant term, no factor: scale 1).
    if not case.params["log_input"] or case.params["full"]:
        from .cases import NotApplicable
        raise NotApplicable("sklearn's HalfPoissonLoss is poisson_nll(log_input=True, "
                            "full=False) only")
    return sk.HalfPoissonLoss()


# loss -> (make_loss(sklearn._loss.loss module, case), scale(params)). "Half" losses are
# half the deviance: HalfSquaredError is (y - raw)^2 / 2, hence mse's scale 2;
# HalfBinomialLoss is exactly BCE with logits, HalfMultinomialLoss softmax cross-entropy,
# HalfTweedieLoss (log link) exactly the tweedie row's loss (HalfTweedieLossIdentity has
# the identity link: another loss). smooth_l1(beta) = HuberLoss(delta=beta) / beta.
# AbsoluteError's gradient at input == target is -1 (fastloss's and torch's 0): another
# subgradient where |d| has no derivative, never hit by the report's continuous inputs.
SKLEARN: Dict[str, tuple] = {
    "softmax_cross_entropy": (lambda sk, case: sk.HalfMultinomialLoss(n_classes=case.shape[1]),
                              lambda params: 1.0),
    "binary_cross_entropy_with_logits": (lambda sk, case: sk.HalfBinomialLoss(),
                                         lambda params: 1.0),
    "huber": (lambda sk, case: sk.HuberLoss(delta=case.params["delta"]), lambda params: 1.0),
    "smooth_l1": (lambda sk, case: sk.HuberLoss(delta=case.params["beta"]),
                  lambda params: 1.0 / params["beta"]),
    "mse": (lambda sk, case: sk.HalfSquaredError(), lambda params: 2.0),
    "mae": (lambda sk, case: sk.AbsoluteError(), lambda params: 1.0),
    "pinball": (lambda sk, case: sk.PinballLoss(quantile=case.params["quantile"]),
                lambda params: 1.0),
    "poisson_nll": (_sklearn_poisson, lambda params: 1.0),
    "tweedie": (lambda sk, case: sk.HalfTweedieLoss(power=case.params["power"]),
                lambda params: 1.0),
}


# --------------------------------------------------------------------------- the entries

def _peers(name: str, param_names=(), torch_name=None) -> Dict[str, Callable]:
    peers = {}
    torch_fn = torch_loss(name, torch_name)
    if torch_fn is not None:
        peers["torch"] = torch_eager(torch_fn)
        peers["torch.compile"] = torch_compiled(torch_fn)
    if name in JAX_FORMULAS:
        peers["jax"] = jax_peer(JAX_FORMULAS[name])
    if name in SKLEARN:
        make_loss, scale = SKLEARN[name]
        peers["sklearn"] = sklearn_peer(make_loss, scale)
    peers["numba"] = numba_peer(name, param_names)
    return peers


def table_entry(row: ElementwiseLoss) -> LossEntry:
    """The report's entry of one loss-table row."""
    return LossEntry(row.name, "flat", table_inputs(row.input_kind, row.target_kind),
                     {p.name: p.default for p in row.params},
                     peers=_peers(row.name, row.options, row.torch_name))


def _entries():
    yield LossEntry("softmax_cross_entropy", "classes", class_inputs, {},
                    peers=_peers("softmax_cross_entropy"))
    yield LossEntry("softmax_focal", "classes", class_inputs, {"gamma": 2.0},
                    peers=_peers("softmax_focal", ("gamma",)))
    for row in ELEMENTWISE:
        yield table_entry(row)
    yield LossEntry("gaussian_kl", "rows", gaussian_inputs, {}, n_grads=2,
                    peers=_peers("gaussian_kl"))
    for name in ("l1_penalty", "l2_penalty"):
        yield LossEntry(name, "flat", parameter_inputs, {"strength": PENALTY_STRENGTH},
                        floor="copy", peers=_peers(name, ("strength",)))


LOSSES: Dict[str, LossEntry] = {entry.name: entry for entry in _entries()}
