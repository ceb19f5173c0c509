"""fastloss's own losses (and cross_entropy's fastloss-only options) as torch operations.

fastloss.torch computes with these what its kernels do not take: tensors on another device or
of another dtype (float16, bfloat16), a target that requires grad, a double backward
(``create_graph=True``), and the ``reduction="none"`` of the losses whose per-sample losses
share inputs (the overlap losses' softmax and ``batch=True``). Each is the formula of the
fastloss function of the same name (the maths is in that function's docstring), written once
here; the tests hold them against independent references.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

_LOG2 = 0.6931471805599453


def reduce(loss, reduction, count):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / count
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _per_position(values, like):
    """(N,) or (N, d1, ..., dK) sample values, broadcast against like (N, d1, ..., dK)."""
    return values.reshape(values.shape + (1,) * (like.dim() - values.dim()))


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, sample_weight=None, z_loss=0.0, logit_softcap=None):
    """fastloss.softmax_cross_entropy with sample_weight, z_loss and logit_softcap: logits
    capped to c tanh(x / c); per sample s_i [CE_i + z lse_i^2] (the z term on kept samples);
    "mean" over sum_i s_i w_{y_i} of the kept samples (sum_i s_i for probabilities). Any
    layout torch's cross_entropy takes ((C,), (N, C), (N, C, d1, ..., dK))."""
    if input.dim() == 1:  # one sample: (1, C)
        loss = cross_entropy(input[None], target[None], weight, ignore_index, reduction,
                             label_smoothing,
                             None if sample_weight is None else sample_weight.reshape(1),
                             z_loss, logit_softcap)
        return loss[0] if reduction == "none" else loss
    z = input if logit_softcap is None else logit_softcap * torch.tanh(input / logit_softcap)
    probabilities = target.is_floating_point()
    ce = F.cross_entropy(z, target, weight=weight, reduction="none",
                         ignore_index=ignore_index, label_smoothing=label_smoothing)
    lse = torch.logsumexp(z, dim=1)
    kept = torch.ones_like(lse, dtype=torch.bool) if probabilities else target != ignore_index
    per = ce
    if z_loss:
        per = per + z_loss * torch.where(kept, lse * lse, torch.zeros_like(lse))
    s = torch.ones_like(lse) if sample_weight is None else \
        _per_position(sample_weight.to(lse.dtype), lse).expand_as(lse)
    per = per * s
    if reduction != "mean":
        return reduce(per, reduction, None)
    if probabilities:
        return per.sum() / s.sum()
    w_y = torch.ones_like(lse) if weight is None else \
        weight.to(lse.dtype)[torch.where(kept, target, torch.zeros_like(target))]
    return per.sum() / torch.where(kept, s * w_y, torch.zeros_like(lse)).sum()


def linear_cross_entropy(input, linear_weight, target, bias=None, class_weight=None,
                         reduction="mean", ignore_index=-100, label_smoothing=0.0, z_loss=0.0,
                         logit_softcap=None, options=None):
    """cross_entropy (above) of input @ linear_weight.T + bias (a torch Linear's layout)."""
    return cross_entropy(F.linear(input, linear_weight, bias), target, class_weight,
                         -100 if ignore_index is None else ignore_index, reduction,
                         label_smoothing, None, z_loss, logit_softcap)


def softmax_focal(logits, target, alpha=None, gamma=2.0, ignore_index=-100, reduction="mean",
                  sample_weight=None):
    """-s_i alpha_y (1 - p_y)^gamma log p_y per sample ((N,) or (N, d1, ..., dK)); "mean"
    divides by the sum of s_i over the samples kept (their count without sample weights)."""
    kept = target != ignore_index
    label = torch.where(kept, target, torch.zeros_like(target))
    log_p = F.log_softmax(logits, dim=1).gather(1, label.unsqueeze(1)).squeeze(1)
    loss = -((1 - log_p.exp()) ** gamma) * log_p
    if alpha is not None:
        alpha = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
        loss = loss * (alpha[label] if alpha.ndim else alpha)
    if sample_weight is not None:
        s = _per_position(sample_weight, loss).expand_as(loss)
        loss = loss * s
        count = torch.where(kept, s, torch.zeros_like(s)).sum()
    else:
        count = kept.sum()
    loss = torch.where(kept, loss, torch.zeros_like(loss))
    return reduce(loss, reduction, count)


def kl_divergence_with_logits(logits, target_logits, temperature=1.0, reduction="mean"):
    """T^2 KL(softmax(t / T) || softmax(x / T)) per row; "mean" over rows."""
    log_q = F.log_softmax(logits / temperature, dim=1)
    log_p = F.log_softmax(target_logits / temperature, dim=1)
    per = temperature ** 2 * (log_p.exp() * (log_p - log_q)).sum(dim=1)
    return reduce(per, reduction, per.shape[0])


def gaussian_kl(mean, log_var, reduction="mean"):
    """-1/2 sum_d (1 + v - m^2 - exp(v)) per row; "mean" over rows."""
    per = -0.5 * (1 + log_var - mean * mean - log_var.exp()).sum(dim=1)
    return reduce(per, reduction, per.shape[0])


def contrastive(input1, input2, target, margin=1.0, reduction="mean"):
    """t d^2 + (1 - t) max(0, margin - d)^2, d = pairwise_distance(x1, x2) (eps 1e-6)."""
    d = F.pairwise_distance(input1, input2)
    t = target.to(d.dtype)
    per = t * d * d + (1 - t) * torch.clamp(margin - d, min=0) ** 2
    return reduce(per, reduction, per.shape[0])


def _overlap_terms(input, target, activation, batch, include_background):
    """(p, t, the sum axes) of the overlap losses, MONAI's conventions: one channel is not
    softmaxed and keeps its background (with a warning each)."""
    if activation not in ("sigmoid", "softmax", "none"):
        raise ValueError(f"activation must be 'sigmoid', 'softmax' or 'none', got "
                         f"{activation!r}")
    n_classes = input.shape[1]
    if activation == "sigmoid":
        p = torch.sigmoid(input)
    elif activation == "softmax" and n_classes > 1:
        p = torch.softmax(input, dim=1)
    else:
        if activation == "softmax":
            warnings.warn("single channel prediction, softmax=True ignored.", stacklevel=3)
        p = input
    t = target
    if t.shape != input.shape:  # class indices (N, spatial...)
        t = F.one_hot(t.long(), n_classes).movedim(-1, 1)
    t = t.to(p.dtype)
    if not include_background:
        if n_classes == 1:
            warnings.warn("single channel prediction, include_background=False ignored.",
                          stacklevel=3)
        else:
            p, t = p[:, 1:], t[:, 1:]
    axes = list(range(2, input.dim()))
    if batch:
        axes = [0] + axes
    return p, t, axes


def _overlap_weight(f, weight):
    if weight is None or f.shape[-1] == 1:  # MONAI: no class weight for one class
        return f
    weight = torch.as_tensor(weight, dtype=f.dtype, device=f.device)
    return f * weight


def dice(input, target, activation="sigmoid", smooth=1e-5, squared=False, batch=False,
         include_background=True, weight=None, reduction="mean", _jaccard=False):
    """1 - (2 I + s) / (P + T + s) per (sample, class) slice (per class with batch=True);
    jaccard: 1 - (2 I + s) / (2 (P + T - I) + s)."""
    p, t, axes = _overlap_terms(input, target, activation, batch, include_background)
    q = 2 if squared else 1
    overlap = (p * t).sum(axes)
    pred, truth = (p ** q).sum(axes), (t ** q).sum(axes)
    if _jaccard:
        f = 1 - (2 * overlap + smooth) / (2 * (pred + truth - overlap) + smooth)
    else:
        f = 1 - (2 * overlap + smooth) / (pred + truth + smooth)
    f = _overlap_weight(f, weight)
    return reduce(f, reduction, f.numel())


def jaccard(input, target, activation="sigmoid", smooth=1e-5, squared=False, batch=False,
            include_background=True, weight=None, reduction="mean"):
    return dice(input, target, activation, smooth, squared, batch, include_background, weight,
                reduction, _jaccard=True)


def tversky(input, target, alpha=0.5, beta=0.5, activation="sigmoid", smooth=1e-5,
            batch=False, include_background=True, reduction="mean"):
    """1 - (I + s) / (I + alpha fp + beta fn + s) per slice."""
    p, t, axes = _overlap_terms(input, target, activation, batch, include_background)
    overlap = (p * t).sum(axes)
    fp = (p * (1 - t)).sum(axes)
    fn = ((1 - p) * t).sum(axes)
    f = 1 - (overlap + smooth) / (overlap + alpha * fp + beta * fn + smooth)
    return reduce(f, reduction, f.numel())
