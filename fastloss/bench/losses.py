"""The losses of the report: one ``LossEntry`` per row of the loss table
(fastloss._table.ELEMENTWISE: its inputs from the row's input_kind and target_kind, its
parameters from the row's defaults), plus the class-axis losses (softmax_cross_entropy,
softmax_focal, multi_margin, kl_divergence_with_logits), gaussian_kl, the L1/L2 penalties,
the overlap losses (dice, jaccard, tversky with sigmoid; dice_softmax, fastloss.dice with
activation="softmax"), the pair and triplet losses (triplet_margin, contrastive,
cosine_embedding, margin_ranking) and linear_cross_entropy; and their peers
(``_extra_entries`` below makes the entries outside the loss table of the second wave,
with their torch, jax and MONAI forms).

A new row of the loss table appears in the report with its fastloss function, its reference
and the floors at once; its torch peer too when the row names a ``torch_name``. A loss torch
lacks gets its torch and jax formulas below (``TORCH_FORMULAS``, ``JAX_FORMULAS``), and
numba a kernel in numba_kernels.py.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

from fastloss._table import ELEMENTWISE, ElementwiseLoss

from .cases import (LossEntry, class_inputs, gaussian_inputs, linear_inputs,
                    logit_pair_inputs, mask_inputs, one_hot_inputs, pair_inputs,
                    parameter_inputs, table_inputs, triplet_inputs)
from .peers import (jax_peer, module_eager, numba_peer, sklearn_peer, torch_compiled,
                    torch_eager)

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


# --------------------------------------------------------------------------- second wave
# multi_margin, kl_divergence_with_logits, the overlap losses, the pair and triplet losses
# and linear_cross_entropy: their torch and jax forms (torch.nn.functional where torch has
# the loss, else the formula of the fastloss docstring), MONAI's modules for the overlap
# losses. Every one returns the loss of fastloss's default reduction ("mean").

def _torch_multi_margin(x, t, p, margin):
    import torch.nn.functional as F
    return F.multi_margin_loss(x, t, p=p, margin=margin)


def _jax_multi_margin(jnp, x, t, p, margin):
    n_classes = x.shape[1]
    x_y = jnp.take_along_axis(x, t[:, None], axis=1)
    hinge = _jax_nn().relu(margin - x_y + x) ** p
    own = jnp.arange(n_classes)[None, :] == t[:, None]
    return jnp.where(own, 0.0, hinge).sum(axis=1).mean() / n_classes


def _torch_distill_kl(x, t, temperature):
    import torch
    import torch.nn.functional as F
    log_q = torch.log_softmax(x / temperature, dim=1)
    log_p = torch.log_softmax(t / temperature, dim=1)
    return temperature ** 2 * F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def _jax_distill_kl(jnp, x, t, temperature):
    nn = _jax_nn()
    log_q = nn.log_softmax(x / temperature, axis=1)
    log_p = nn.log_softmax(t / temperature, axis=1)
    return temperature ** 2 * (jnp.exp(log_p) * (log_p - log_q)).sum(axis=1).mean()


def _overlap_terms(kind, p, t, sum_spatial, smooth, squared, alpha, beta):
    """1 - numerator / denominator per (sample, class), from probabilities p (MONAI's
    DiceLoss / DiceLoss(jaccard=True) / TverskyLoss with smooth_nr = smooth_dr = smooth)."""
    inter = sum_spatial(p * t)
    if kind == "tversky":
        fp, fn = sum_spatial(p) - inter, sum_spatial(t) - inter
        return 1 - (inter + smooth) / (inter + alpha * fp + beta * fn + smooth)
    pred = sum_spatial(p * p if squared else p)
    truth = sum_spatial(t * t if squared else t)
    if kind == "jaccard":
        return 1 - (2 * inter + smooth) / (2 * (pred + truth - inter) + smooth)
    return 1 - (2 * inter + smooth) / (pred + truth + smooth)


def _torch_overlap(kind):
    def loss(x, t, activation="sigmoid", smooth=1e-5, squared=False, alpha=0.5, beta=0.5):
        import torch
        p = torch.sigmoid(x) if activation == "sigmoid" else torch.softmax(x, dim=1)
        dims = tuple(range(2, x.ndim))
        return _overlap_terms(kind, p, t, lambda a: a.sum(dim=dims), smooth, squared, alpha,
                              beta).mean()
    loss.__name__ = f"torch_{kind}"
    return loss


def _jax_overlap(kind):
    def loss(jnp, x, t, activation="sigmoid", smooth=1e-5, squared=False, alpha=0.5,
             beta=0.5):
        nn = _jax_nn()
        p = nn.sigmoid(x) if activation == "sigmoid" else nn.softmax(x, axis=1)
        axes = tuple(range(2, x.ndim))
        return _overlap_terms(kind, p, t, lambda a: a.sum(axis=axes), smooth, squared, alpha,
                              beta).mean()
    loss.__name__ = f"jax_{kind}"
    return loss


def _monai_overlap(kind):
    """MONAI's module for fastloss's options (no batch, background included, no weight:
    the report's defaults)."""
    def make(activation="sigmoid", smooth=1e-5, squared=False, alpha=0.5, beta=0.5):
        from monai.losses import DiceLoss, TverskyLoss
        options = dict(sigmoid=activation == "sigmoid", softmax=activation == "softmax",
                       smooth_nr=smooth, smooth_dr=smooth)
        if kind == "tversky":
            return TverskyLoss(alpha=alpha, beta=beta, **options)
        return DiceLoss(squared_pred=squared, jaccard=kind == "jaccard", **options)
    make.__name__ = f"monai_{kind}"
    return make


def _torch_triplet(anchor, positive, negative, **params):
    import torch.nn.functional as F
    return F.triplet_margin_loss(anchor, positive, negative, **params)


def _jax_triplet(jnp, anchor, positive, negative, margin, p, eps, swap):
    def distance(u, v):   # torch's pairwise_distance: ||u - v + eps||_p
        return (jnp.abs(u - v + eps) ** p).sum(axis=1) ** (1 / p)
    d_ap, d_an = distance(anchor, positive), distance(anchor, negative)
    if swap:
        d_an = jnp.minimum(d_an, distance(positive, negative))
    return _jax_clamp_min0(jnp, margin + d_ap - d_an).mean()


def _torch_contrastive(x1, x2, t, margin):
    import torch.nn.functional as F
    d = F.pairwise_distance(x1, x2)          # eps 1e-6, as fastloss's
    return (t * d ** 2 + (1 - t) * F.relu(margin - d) ** 2).mean()


def _jax_contrastive(jnp, x1, x2, t, margin):
    d = jnp.sqrt(((x1 - x2 + 1e-6) ** 2).sum(axis=1))
    return (t * d ** 2 + (1 - t) * _jax_nn().relu(margin - d) ** 2).mean()


def _torch_cosine_embedding(x1, x2, y, margin):
    import torch.nn.functional as F
    return F.cosine_embedding_loss(x1, x2, y, margin=margin)


def _jax_cosine_embedding(jnp, x1, x2, y, margin):
    # torch's: the squared norms each get 1e-12 before the square root of their product
    cos = (x1 * x2).sum(axis=1) / jnp.sqrt(((x1 * x1).sum(axis=1) + 1e-12)
                                           * ((x2 * x2).sum(axis=1) + 1e-12))
    per_row = jnp.where(y == 1, 1 - cos,
                        jnp.where(y == -1, _jax_clamp_min0(jnp, cos - margin), 0.0))
    return per_row.mean()


def _torch_margin_ranking(x1, x2, y, margin):
    import torch.nn.functional as F
    return F.margin_ranking_loss(x1, x2, y, margin=margin)


def _jax_clamp_min0(jnp, h):
    """max(h, 0) whose jax gradient is 1 at h = 0, as torch's clamp_min and the reference
    (jax.nn.relu's is 0 there): margin_ranking's hinge is exactly 0 wherever x1 == x2, which
    millions of random float32 draws do hit."""
    return jnp.where(h >= 0, h, 0.0)


def _jax_margin_ranking(jnp, x1, x2, y, margin):
    return _jax_clamp_min0(jnp, -y * (x1 - x2) + margin).mean()


def _torch_linear_ce(hidden, weight, target):
    """torch's reference path (options=None): the full logits, then cross_entropy."""
    import torch.nn.functional as F
    return F.linear_cross_entropy(hidden, weight, target)


def _torch_linear_ce_chunked(hidden, weight, target):
    import torch
    import torch.nn.functional as F
    return F.linear_cross_entropy(hidden, weight, target,
                                  options=torch.nn.LinearCrossEntropyOptions())


def _jax_linear_ce(jnp, hidden, weight, target):
    return _jax_softmax_ce(jnp, hidden @ weight.T, target)


PAIR_WIDTH = 128          # the embedding width of the pair and triplet losses' rows
# The named sizes of these entries count at most 2**22 elements (16 MiB per float32 array,
# 8 L2 caches): their NumPy references take seconds per 2**24 elements, and --quick runs
# the large size. An explicit size (--sizes 16777216, 8x4x256x256) is not capped.
MAX_NAMED = 1 << 22
SOFTMAX_CHANNELS = 21     # dice_softmax's classes (PASCAL VOC's 20 + background)


def _formula_peers(torch_fn=None, jax_fn=None, monai=None, chunked=None) -> Dict[str, Callable]:
    peers = {}
    if torch_fn is not None:
        peers["torch"] = torch_eager(torch_fn)
        peers["torch.compile"] = torch_compiled(torch_fn)
    if chunked is not None:
        peers["torch.chunked"] = torch_eager(chunked)
    if jax_fn is not None:
        peers["jax"] = jax_peer(jax_fn)
    if monai is not None:
        peers["monai"] = module_eager(monai)
    return peers


def _overlap_entry(name, kind, make_inputs, params, width=None):
    return LossEntry(name, "image", make_inputs, params, floor="add", width=width,
                     function=kind, max_named=MAX_NAMED,
                     peers=_formula_peers(_torch_overlap(kind), _jax_overlap(kind),
                                          _monai_overlap(kind)))


def _pair_entry(name, layout, make_inputs, params, n_grads, torch_fn, jax_fn):
    return LossEntry(name, layout, make_inputs, params, n_grads=n_grads, floor="io",
                     width=PAIR_WIDTH if layout == "rows" else None, max_named=MAX_NAMED,
                     peers=_formula_peers(torch_fn, jax_fn))


def _extra_entries():
    """The entries outside the loss table added with the second wave of losses."""
    yield LossEntry("multi_margin", "classes", class_inputs, {"p": 1, "margin": 1.0},
                    max_named=MAX_NAMED,
                    peers=_formula_peers(_torch_multi_margin, _jax_multi_margin))
    yield LossEntry("kl_divergence_with_logits", "classes", logit_pair_inputs,
                    {"temperature": 1.0}, floor="add", max_named=MAX_NAMED,
                    peers=_formula_peers(_torch_distill_kl, _jax_distill_kl))
    yield _overlap_entry("dice", "dice", mask_inputs, {"activation": "sigmoid"})
    yield _overlap_entry("jaccard", "jaccard", mask_inputs, {"activation": "sigmoid"})
    yield _overlap_entry("tversky", "tversky", mask_inputs,
                         {"alpha": 0.5, "beta": 0.5, "activation": "sigmoid"})
    yield _overlap_entry("dice_softmax", "dice", one_hot_inputs, {"activation": "softmax"},
                         width=SOFTMAX_CHANNELS)
    yield _pair_entry("triplet_margin", "rows", triplet_inputs,
                      {"margin": 1.0, "p": 2.0, "eps": 1e-6, "swap": False}, 3,
                      _torch_triplet, _jax_triplet)
    yield _pair_entry("contrastive", "rows", pair_inputs("binary"), {"margin": 1.0}, 2,
                      _torch_contrastive, _jax_contrastive)
    yield _pair_entry("cosine_embedding", "rows", pair_inputs("sign"), {"margin": 0.0}, 2,
                      _torch_cosine_embedding, _jax_cosine_embedding)
    yield _pair_entry("margin_ranking", "flat", pair_inputs("sign", per_row=False),
                      {"margin": 0.0}, 2, _torch_margin_ranking, _jax_margin_ranking)
    yield LossEntry("linear_cross_entropy", "linear", linear_inputs, {}, n_grads=2,
                    grad_slots=3, floor="gemm", max_named=MAX_NAMED,
                    needs=(("scipy", "pip install 'fastloss[linear]'"),),
                    peers=_formula_peers(_torch_linear_ce, _jax_linear_ce,
                                         chunked=_torch_linear_ce_chunked))


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
    yield from _extra_entries()


LOSSES: Dict[str, LossEntry] = {entry.name: entry for entry in _entries()}
