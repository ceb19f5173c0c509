"""BCE-with-logits, Huber, smooth L1, sigmoid focal and softmax focal beyond the shared tests:
weight broadcasting, the numerically delicate regions, the kinks, and every argument error."""

import math

import numpy as np
import pytest

import fastloss
from fastloss import _kernels, _validation, reference

from cases import torch, torch_softmax_focal, torchvision_sigmoid_focal

if torch is not None:
    import torch.nn.functional as F

DTYPES = [np.float32, np.float64]
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def rtol_for(dtype):
    return 2e-6 if np.dtype(dtype) == np.float32 else 1e-13


# ------------------------------------------------------------------ BCE weight broadcasting

BCE_WEIGHT_SHAPES = [
    # (input shape, weight shape, pos_weight shape)
    ((40, 7), (7,), (7,)),
    ((40, 7), (1, 7), None),
    ((40, 7), (40, 7), (1, 7)),
    ((40, 7), (), ()),
    ((40, 7), (40, 1), (7,)),          # per-row weight: expanded once
    ((6, 5, 3), (5, 3), (3,)),         # trailing axes: periodic, no copy
    ((6, 5, 3), (6, 1, 3), (1, 1, 3)),  # a middle broadcast axis: expanded once
    ((6, 5, 3), (1,), None),
    ((1000,), (1000,), (1,)),
]


@needs_torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape, weight_shape, pos_weight_shape", BCE_WEIGHT_SHAPES)
def test_bce_weight_and_pos_weight_broadcast_as_torch(shape, weight_shape, pos_weight_shape,
                                                      reduction):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 3
    t = rng.random(shape)
    weight = rng.uniform(0.1, 2.0, weight_shape) if weight_shape is not None else None
    pos_weight = (rng.uniform(0.5, 4.0, pos_weight_shape)
                  if pos_weight_shape is not None else None)
    loss, grad = fastloss.binary_cross_entropy_with_logits(
        x, t, weight=weight, pos_weight=pos_weight, reduction=reduction)
    xt = torch.tensor(x, requires_grad=True)
    kwargs = {k: torch.tensor(v) for k, v in (("weight", weight), ("pos_weight", pos_weight))
              if v is not None}
    torch_loss = F.binary_cross_entropy_with_logits(xt, torch.tensor(t), reduction=reduction,
                                                    **kwargs)
    torch_loss.sum().backward()
    np.testing.assert_allclose(loss, torch_loss.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_weights_along_trailing_axes_are_not_copied_to_the_input_shape():
    shape = (64, 50, 9)
    for weight_shape, period in [((9,), 9), ((1, 9), 9), ((50, 9), 450), ((), 1), ((1, 1, 1), 1),
                                 (shape, math.prod(shape))]:
        values, got_period = _validation.broadcast_weight(np.ones(weight_shape), "weight", shape,
                                                          np.dtype(np.float64))
        assert got_period == period and values.size == period, weight_shape
    values, period = _validation.broadcast_weight(np.ones((64, 1, 9)), "weight", shape,
                                                  np.dtype(np.float64))
    assert period == values.size == math.prod(shape)  # the general path: expanded once


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("last", [1, 3, 7, 511, 512, 513, 1500])
def test_bce_periodic_weights_across_chunk_and_block_boundaries(dtype, last):
    """Periods that do and do not divide the kernel's chunk (512) and block (16384) sizes,
    with enough elements for several blocks on several threads."""
    rng = np.random.default_rng(1)
    n = (3 * _kernels.BLOCK_SIZE_ELEMENTS + 777) // last + 1
    x = (rng.standard_normal((n, last)) * 3).astype(dtype)
    t = rng.random((n, last)).astype(dtype)
    weight = rng.uniform(0.1, 2.0, last).astype(dtype)
    pos_weight = rng.uniform(0.5, 4.0, last).astype(dtype)
    for n_threads in (1, 2):
        loss, grad = fastloss.binary_cross_entropy_with_logits(
            x, t, weight=weight, pos_weight=pos_weight, reduction="none", n_threads=n_threads)
        ref_loss, ref_grad = reference.binary_cross_entropy_with_logits(
            *(a.astype(np.float64) for a in (x, t)), weight=weight.astype(np.float64),
            pos_weight=pos_weight.astype(np.float64), reduction="none")
        rtol = 5 * rtol_for(dtype)
        np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
        # the gradient w [(1 - t) sigmoid(x) - p t sigmoid(-x)] crosses 0: absolute error
        # there is relative to the terms' size
        np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=rtol * np.abs(ref_grad).max())


def test_bce_weight_errors_leave_out_untouched():
    x = np.zeros((4, 3))
    out = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match=r"weight must be broadcastable .*\(4, 3\).*\(4,\)"):
        fastloss.binary_cross_entropy_with_logits(x, x, weight=np.ones(4), out=out)
    with pytest.raises(ValueError, match="pos_weight must be broadcastable"):
        fastloss.binary_cross_entropy_with_logits(x, x, pos_weight=np.ones((2, 4, 3)), out=out)
    with pytest.raises(TypeError, match="weight must hold real numbers"):
        fastloss.binary_cross_entropy_with_logits(x, x, weight=np.ones(3, complex), out=out)
    with pytest.raises(ValueError, match="out overlaps pos_weight"):
        buffer = np.zeros((4, 3))
        fastloss.binary_cross_entropy_with_logits(x, x, pos_weight=buffer[0], out=buffer)
    np.testing.assert_array_equal(out, 7.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_subnormal_weight_multiplies_the_finished_loss(dtype):
    """Found by hypothesis: w (1 - t) with the smallest subnormal w underflowed to 0, where
    w [(1 - t) softplus(x) + t softplus(-x)] is a normal number (x = 2.9e17, float64) or the
    subnormal w log 2 (x = 0). The kernel multiplies the finished terms by w, as torch."""
    tiny = float(np.finfo(dtype).smallest_subnormal)
    x = np.array([0.0, 2.8823037615171546e17 if dtype == np.float64 else 1e30, -3.0],
                 dtype=dtype)
    t = np.full(3, 0.5, dtype=dtype)
    for pos_weight in (None, np.array(3.0, dtype=dtype)):
        got = fastloss.binary_cross_entropy_with_logits(
            x, t, weight=np.array(tiny, dtype=dtype), pos_weight=pos_weight, reduction="none")
        unweighted = fastloss.binary_cross_entropy_with_logits(
            x.astype(np.float64), t.astype(np.float64), pos_weight=pos_weight,
            reduction="none")
        expected = (tiny * unweighted.loss).astype(dtype)   # one rounding of w l
        np.testing.assert_array_equal(got.loss, expected)
        assert got.loss[1] > 0
        total = fastloss.binary_cross_entropy_with_logits(
            x, t, weight=np.array(tiny, dtype=dtype), pos_weight=pos_weight, reduction="sum")
        assert total.loss == pytest.approx(float(np.sum(expected, dtype=np.float64)), rel=1e-12)


# ------------------------------------------------------------ extreme logits and targets

def _bce_truth(x, t):
    """float64 truth of BCE's per-element loss and gradient, for t exactly 0 or 1."""
    x = np.asarray(x, dtype=np.float64)
    softplus = np.logaddexp(0, np.where(t == 1, -x, x))
    sigmoid_neg = np.exp(-np.logaddexp(0, x))  # sigmoid(-x)
    sigmoid_pos = np.exp(-np.logaddexp(0, -x))
    return softplus, np.where(t == 1, -sigmoid_neg, sigmoid_pos)


EXTREME_X = [-1e30, -1e4, -200.0, -89.0, -40.0, -17.5, -1e-30, 0.0, 1e-30, 17.5, 30.0, 40.0,
             89.0, 200.0, 1e4, 1e30]


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_extreme_logits_and_exact_targets(dtype):
    """Finite, and accurate to the dtype where sigmoid(x) rounds to 1 (gradient -sigmoid(-x),
    not sigmoid(x) - 1 = 0)."""
    x = np.array(EXTREME_X * 2, dtype=dtype)
    t = np.repeat([0.0, 1.0], len(EXTREME_X)).astype(dtype)
    loss, grad = fastloss.binary_cross_entropy_with_logits(x, t, reduction="none")
    true_loss, true_grad = _bce_truth(x, t)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(loss, true_loss, rtol=4 * rtol_for(dtype), atol=tiny)
    np.testing.assert_allclose(grad, true_grad, rtol=4 * rtol_for(dtype), atol=tiny)
    # the gradient of a confident correct prediction is tiny but not rounded away
    index = EXTREME_X.index(30.0) + len(EXTREME_X)   # x = 30, t = 1
    assert grad[index] < 0 and abs(grad[index] / true_grad[index] - 1) < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_name", ["huber", "smooth_l1"])
def test_regression_losses_with_huge_inputs(loss_name, dtype):
    x = np.array(EXTREME_X, dtype=dtype)
    t = np.array([0.0, 1.0] * (len(EXTREME_X) // 2), dtype=dtype)
    loss, grad = getattr(fastloss, loss_name)(x, t, reduction="none")
    ref_loss, ref_grad = getattr(reference, loss_name)(x.astype(np.float64),
                                                       t.astype(np.float64), reduction="none")
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    tiny = np.finfo(dtype).tiny   # (1e-30)^2 / 2 underflows in float32
    np.testing.assert_allclose(loss, ref_loss, rtol=4 * rtol_for(dtype), atol=tiny)
    np.testing.assert_allclose(grad, ref_grad, rtol=4 * rtol_for(dtype))


# ------------------------------------------------------------- Huber / smooth L1 kinks

@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threshold", [0.25, 1.0, 3.0])
@pytest.mark.parametrize("loss_name", ["huber", "smooth_l1"])
def test_huber_and_smooth_l1_at_the_threshold(loss_name, threshold, dtype):
    """|d| exactly at, just inside and just outside delta (beta): both pieces meet, and the
    gradient is +-delta (+-1) on the boundary, as torch."""
    inside = np.nextafter(dtype(threshold), dtype(0))
    outside = np.nextafter(dtype(threshold), dtype(np.inf))
    d = np.array([threshold, -threshold, inside, -inside, outside, -outside, 0.0], dtype=dtype)
    target = np.full_like(d, 0.5)
    x = d + target
    argument = {"huber": "delta", "smooth_l1": "beta"}[loss_name]
    loss, grad = getattr(fastloss, loss_name)(x, target, reduction="none",
                                              **{argument: threshold})
    xt = torch.tensor(x, requires_grad=True)
    torch_fn = {"huber": F.huber_loss, "smooth_l1": F.smooth_l1_loss}[loss_name]
    torch_loss = torch_fn(xt, torch.tensor(target), reduction="none", **{argument: threshold})
    torch_loss.sum().backward()
    np.testing.assert_allclose(loss, torch_loss.detach().numpy(), rtol=2 * rtol_for(dtype))
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=2 * rtol_for(dtype))
    d_exact = (x - target).astype(np.float64)
    on_boundary = np.abs(d_exact) >= threshold
    scale = 1.0 if loss_name == "huber" else 1.0 / threshold
    expected = np.where(on_boundary, threshold * np.sign(d_exact), d_exact) * scale
    np.testing.assert_allclose(grad, expected, rtol=2 * rtol_for(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beta", [0.1, 1.0, 7.0])
def test_smooth_l1_is_huber_over_beta(beta, dtype):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(500) * 5).astype(dtype)
    t = (rng.standard_normal(500) * 5).astype(dtype)
    smooth = fastloss.smooth_l1(x, t, beta=beta, reduction="none")
    hub = fastloss.huber(x, t, delta=beta, reduction="none")
    np.testing.assert_allclose(smooth.loss, hub.loss / beta, rtol=2 * rtol_for(dtype))
    np.testing.assert_allclose(smooth.grad, hub.grad / beta, rtol=2 * rtol_for(dtype))


# ------------------------------------------------------------------------ sigmoid focal

def _sigmoid_focal_truth(x, t, alpha, gamma):
    """float64 closed forms for t exactly 1 (q = sigmoid(-x)) or 0 (q = sigmoid(x)), written
    with math.log1p / math.exp so no term cancels:
    dloss/dx = alpha_t q^gamma [ (p - t) + gamma ce (1 - 2t) p (1 - p) / q ]."""
    losses, grads = [], []
    for xi, ti in zip(np.asarray(x, dtype=np.float64), t):
        z = -xi if ti == 1 else xi            # q = sigmoid(z), ce = softplus(-z)... see below
        # q = sigmoid(z) (the probability of the wrong class), ce = -log(1 - q) = softplus(z)
        q = math.exp(-math.log1p(math.exp(-z))) if z > -700 else 0.0
        one_minus_q = math.exp(-math.log1p(math.exp(z))) if z < 700 else 0.0
        ce = (z if z > 0 else 0.0) + math.log1p(math.exp(-abs(z)))
        alpha_t = (alpha if ti == 1 else 1 - alpha) if alpha >= 0 else 1.0
        focal = q ** gamma
        # d/dz of ce q^gamma = q^gamma [ q + gamma ce (1 - q) ]; dz/dx = -1 for t = 1
        d_dz = focal * (q + gamma * ce * one_minus_q)
        losses.append(alpha_t * ce * focal)
        grads.append(alpha_t * d_dz * (-1.0 if ti == 1 else 1.0))
    return np.array(losses), np.array(grads)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.9])
def test_sigmoid_focal_gamma_below_one_is_finite_where_torchvision_gives_nan(gamma, dtype):
    x = np.array([5.0, 17.5, 20.0, 40.0, 80.0, 200.0, 1e4, 1e30], dtype=dtype)
    x = np.concatenate([x, -x])
    t = np.concatenate([np.ones(8), np.zeros(8)]).astype(dtype)  # confident and right
    alpha = 0.25
    loss, grad = fastloss.sigmoid_focal(x, t, alpha=alpha, gamma=gamma, reduction="none")
    true_loss, true_grad = _sigmoid_focal_truth(x, t, alpha, gamma)
    assert np.all(np.isfinite(grad)) and np.all(np.isfinite(loss))
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(loss, true_loss, rtol=8 * rtol_for(dtype), atol=tiny)
    np.testing.assert_allclose(grad, true_grad, rtol=8 * rtol_for(dtype), atol=tiny)
    # the case is real: torchvision's formula evaluates to nan for some of these
    xt = torch.tensor(x, requires_grad=True)
    torchvision_sigmoid_focal(xt, torch.tensor(t), alpha, gamma).sum().backward()
    assert np.isnan(xt.grad.numpy()).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_focal_extreme_logits_both_ways(dtype):
    """Confidently wrong predictions too: finite, accurate losses and gradients."""
    x = np.array(EXTREME_X * 2, dtype=dtype)
    t = np.repeat([0.0, 1.0], len(EXTREME_X)).astype(dtype)
    for gamma in (0.0, 0.5, 1.0, 2.0, 2.5):
        loss, grad = fastloss.sigmoid_focal(x, t, gamma=gamma, reduction="none")
        true_loss, true_grad = _sigmoid_focal_truth(x, t, 0.25, gamma)
        tiny = np.finfo(dtype).tiny
        np.testing.assert_allclose(loss, true_loss, rtol=8 * rtol_for(dtype), atol=tiny)
        np.testing.assert_allclose(grad, true_grad, rtol=8 * rtol_for(dtype), atol=tiny)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_focal_integer_gamma_matches_the_general_power(dtype):
    """gamma 1 and 2 skip the power function; the general path at gamma (1 + 1e-13) agrees
    (in float32 that gamma rounds to the integer itself: the same function, other path)."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(3000) * 4).astype(dtype)
    t = rng.random(3000).astype(dtype)
    for gamma in (1.0, 2.0):
        exact = fastloss.sigmoid_focal(x, t, gamma=gamma, reduction="none")
        near = fastloss.sigmoid_focal(x, t, gamma=gamma * (1 + 1e-13), reduction="none")
        rtol = 2e-6 if dtype == np.float32 else 1e-11
        np.testing.assert_allclose(exact.loss, near.loss, rtol=rtol, atol=1e-30)
        np.testing.assert_allclose(exact.grad, near.grad, rtol=rtol,
                                   atol=rtol * np.abs(exact.grad).max())  # (crosses 0)


@pytest.mark.parametrize("gamma", [4e-293, 1e-40, 1e39, 1e300])
def test_sigmoid_focal_gamma_beyond_float32_range(gamma):
    """A gamma that rounds to 0 or to inf in float32 (found by hypothesis: q^gamma became
    0^0 = 1 and 0 * log(0) = nan where q = 0, and inf * log(1) = nan where q = 1). The float32
    kernel gives what the float64 kernel gives on the same values: q^gamma is 0 at q = 0 and
    1 at q = 1 (x = +-1e4 make q exactly 0 or 1 in both precisions)."""
    x = np.array([-1e4, 1e4, -1e4, 1e4, 0.5, -3.0])
    t = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    wide = fastloss.sigmoid_focal(x, t, gamma=gamma, reduction="none")
    narrow = fastloss.sigmoid_focal(x.astype(np.float32), t.astype(np.float32), gamma=gamma,
                                    reduction="none")
    ref = reference.sigmoid_focal(x, t, gamma=gamma, reduction="none")
    assert np.isfinite(narrow.loss).all() and np.isfinite(narrow.grad).all()
    np.testing.assert_allclose(wide.loss, ref.loss, rtol=1e-15)
    np.testing.assert_allclose(wide.grad, ref.grad, rtol=1e-15)
    np.testing.assert_allclose(narrow.loss, ref.loss, rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(narrow.grad, ref.grad, rtol=1e-6, atol=1e-30)
    total = fastloss.sigmoid_focal(x.astype(np.float32), t.astype(np.float32), gamma=gamma)
    assert total.loss == pytest.approx(float(np.mean(ref.loss)), rel=1e-6)


@needs_torch
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.5])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_focal_infinite_logits_as_torch(gamma, dtype):
    """+-inf logits give torchvision's formula's values under PyTorch's autograd, nan where
    it gives nan. Found by hypothesis: at gamma = 0, inf logit and target 0 the gradient is
    alpha_t dce = 0.75 (torch's pow backward drops the q^0 term), where the reference's
    ce * dfocal made inf * 0 = nan."""
    x = np.array([np.inf, np.inf, -np.inf, -np.inf, np.inf, -np.inf], dtype=dtype)
    t = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 0.5], dtype=dtype)
    got = fastloss.sigmoid_focal(x, t, gamma=gamma, reduction="none")
    ref = reference.sigmoid_focal(x, t, gamma=gamma, reduction="none")
    xt = torch.tensor(x, requires_grad=True)
    loss = torchvision_sigmoid_focal(xt, torch.tensor(t), 0.25, gamma)
    loss.sum().backward()
    for name, value in (("kernel", got), ("reference", ref)):
        np.testing.assert_array_equal(value.loss, loss.detach().numpy(), err_msg=name)
        np.testing.assert_array_equal(value.grad, xt.grad.numpy(), err_msg=name)


@pytest.mark.parametrize("gamma", [0.5, 1.5, 3.5])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_focal_binary_targets_match_the_general_path(gamma, dtype):
    """A chunk whose targets are all 0 or 1 takes log q = -log1p(e) (- |x|) without a log
    and no division for r; a chunk with any soft target takes the general pass. Both paths
    agree on the same hard-target elements (the soft element only switches the path): loss,
    gradient and hessian, extremes included, nan where the other gives nan; and infinite
    logits give torch's values on the binary path too."""
    rng = np.random.default_rng(11)
    x = np.concatenate([(rng.standard_normal(200) * 6),
                        [0.0, -0.0, 1e4, -1e4, 90.0, -90.0, 200.0, -200.0, np.inf, -np.inf,
                         np.nan]]).astype(dtype)
    t = np.concatenate([rng.random(200) < 0.4, [0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1]]).astype(dtype)
    binary = fastloss.sigmoid_focal(x, t, gamma=gamma, reduction="none", compute_hess=True)
    general = fastloss.sigmoid_focal(np.append(x, dtype(0.3)), np.append(t, dtype(0.5)),
                                     gamma=gamma, reduction="none", compute_hess=True)
    tiny = np.finfo(dtype).tiny
    for name in ("loss", "grad", "hess"):
        got, want = getattr(binary, name), getattr(general, name)[:-1]
        # the hessian's bracket cancels where p_t is near its sign change: both paths are
        # within ~7e-5 of the float64 value there in float32
        rtol = {np.float32: 2e-5, np.float64: 1e-12}[dtype] * (10 if name == "hess" else 1)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=tiny, err_msg=name)
    ref = reference.sigmoid_focal(x, t, gamma=gamma, reduction="none")
    np.testing.assert_allclose(binary.loss, ref.loss, rtol=8 * rtol_for(dtype), atol=tiny)
    np.testing.assert_allclose(binary.grad, ref.grad, rtol=8 * rtol_for(dtype), atol=tiny)
    if torch is not None:
        xi = np.array([np.inf, np.inf, -np.inf, -np.inf], dtype=dtype)
        ti = np.array([0.0, 1.0, 0.0, 1.0], dtype=dtype)
        got = fastloss.sigmoid_focal(xi, ti, gamma=gamma, reduction="none")
        xt = torch.tensor(xi, requires_grad=True)
        loss = torchvision_sigmoid_focal(xt, torch.tensor(ti), 0.25, gamma)
        loss.sum().backward()
        np.testing.assert_array_equal(got.loss, loss.detach().numpy())
        np.testing.assert_array_equal(got.grad, xt.grad.numpy())


def test_sigmoid_focal_gamma_zero_without_alpha_is_bce():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((30, 4)) * 3
    t = rng.random((30, 4))
    focal = fastloss.sigmoid_focal(x, t, alpha=-1, gamma=0.0)
    bce = fastloss.binary_cross_entropy_with_logits(x, t)
    assert focal.loss == pytest.approx(bce.loss, rel=1e-15)
    np.testing.assert_allclose(focal.grad, bce.grad, rtol=1e-15, atol=1e-18)


# ------------------------------------------------------------------------ softmax focal

@pytest.mark.parametrize("n_classes", [1, 2, 13, 129, 1000])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_focal_gamma_zero_is_softmax_cross_entropy(reduction, dtype, n_classes):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((300, n_classes)) * 3).astype(dtype)
    y = rng.integers(0, n_classes, 300)
    y[::7] = n_classes - 1
    for ignore_index in (-100, n_classes - 1):
        focal = fastloss.softmax_focal(x, y, gamma=0.0, ignore_index=ignore_index,
                                       reduction=reduction)
        ce = fastloss.softmax_cross_entropy(x, y, ignore_index=ignore_index,
                                            reduction=reduction)
        # (absolute tolerance for the loss: a confident row's small loss comes from
        # log s - (x_y - m) with s near 1 in cross-entropy, from log1p in focal)
        eps = np.finfo(dtype).eps
        np.testing.assert_allclose(focal.loss, ce.loss, rtol=4 * rtol_for(dtype), atol=4 * eps)
        np.testing.assert_allclose(focal.grad, ce.grad, rtol=4 * rtol_for(dtype),
                                   atol=eps * np.abs(ce.grad).max())


@needs_torch
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_softmax_focal_scalar_alpha_and_all_ignored(gamma):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((8, 5))
    y = np.full(8, 2)
    loss, grad = fastloss.softmax_focal(x, y, gamma=gamma, ignore_index=2)
    assert np.isnan(loss)
    np.testing.assert_array_equal(grad, np.zeros_like(x))
    assert fastloss.softmax_focal(x, y, ignore_index=2, reduction="sum").loss == 0.0
    y = rng.integers(0, 5, 8)
    scaled = fastloss.softmax_focal(x, y, alpha=0.3, gamma=gamma)
    plain = fastloss.softmax_focal(x, y, gamma=gamma)
    assert scaled.loss == pytest.approx(0.3 * plain.loss, rel=1e-14)
    np.testing.assert_allclose(scaled.grad, 0.3 * plain.grad, rtol=1e-14)
    xt = torch.tensor(x, requires_grad=True)
    torch_softmax_focal(xt, y, alpha=0.3, gamma=gamma).backward()
    np.testing.assert_allclose(scaled.grad, xt.grad.numpy(), rtol=1e-12)


# class counts that take the chunk layout (few classes) and the row layout of the kernel
LAYOUT_CLASSES = [4, 300]


@pytest.mark.parametrize("n_classes", LAYOUT_CLASSES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.25, 0.5, 1.0, 2.0, 3.0])
def test_softmax_focal_confident_rows_have_accurate_finite_gradients(gamma, dtype, n_classes):
    """p_y within 1e-13 of 1 (and beyond float64's reach): the gradient stays finite and
    keeps its digits, the value K = o^gamma (1 + gamma p_y (-log p_y) / o), o = 1 - p_y."""
    margins = np.array([5.0, 20.0, 30.0, 45.0, 80.0, 800.0])
    x = np.zeros((len(margins), n_classes), dtype=dtype)
    x[:, 1] = margins.astype(dtype)
    y = np.ones(len(margins), dtype=np.int64)
    loss, grad = fastloss.softmax_focal(x, y, gamma=gamma, reduction="none")
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    m = x.astype(np.float64)[:, 1]
    others = n_classes - 1
    o = others * np.exp(-m) / (1 + others * np.exp(-m))     # 1 - p_y
    neg_log_p = np.log1p(others * np.exp(-m))
    p_y = 1 / (1 + others * np.exp(-m))
    ratio = np.where(o > 0, neg_log_p / np.where(o > 0, o, 1), 1)
    K = o ** gamma * (1 + gamma * p_y * ratio)
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(loss, o ** gamma * neg_log_p, rtol=8 * rtol_for(dtype), atol=tiny)
    np.testing.assert_allclose(grad[:, 1], -K * o, rtol=8 * rtol_for(dtype), atol=tiny)
    p_other = np.exp(-m) / (1 + others * np.exp(-m))
    np.testing.assert_allclose(grad[:, 0], K * p_other, rtol=8 * rtol_for(dtype), atol=tiny)
    representable = np.abs(K * o) > 1e3 * tiny
    assert np.all(grad[representable, 1] < 0)  # tiny but not rounded away


@pytest.mark.parametrize("n_classes", LAYOUT_CLASSES)
@pytest.mark.parametrize("offset", [1e4, -1e4, 1e30, -1e30])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_focal_huge_logits(dtype, offset, n_classes):
    """Accuracy relative to the differences between logits: the float64 reference on the very
    same (rounded) values is the truth."""
    rng = np.random.default_rng(7)
    noise = rng.standard_normal((64, n_classes)) * 2
    x = ((offset + noise) if abs(offset) < 1e20 else offset * (1 + noise * 1e-6)).astype(dtype)
    y = rng.integers(0, n_classes, 64)
    for gamma in (0.5, 2.0):
        loss, grad = fastloss.softmax_focal(x, y, gamma=gamma, reduction="none")
        ref_loss, ref_grad = reference.softmax_focal(x.astype(np.float64), y, gamma=gamma,
                                                     reduction="none")
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        rtol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=rtol)


# ------------------------------------------------------------------------ argument errors

ELEMENTWISE = ["binary_cross_entropy_with_logits", "huber", "smooth_l1", "sigmoid_focal"]


def _call(name, x, target, **kwargs):
    return getattr(fastloss, name)(x, target, **kwargs)


def _inputs(name, dtype=np.float64):
    if name == "softmax_focal":
        return np.zeros((4, 3), dtype), np.array([0, 1, 2, 0])
    return np.zeros((4, 3), dtype), np.full((4, 3), 0.5)


ERROR_CASES = [
    # (loss names, kwargs or a transformation, error, message fragment)
    (ELEMENTWISE + ["softmax_focal"], {"reduction": "avg"}, ValueError, "reduction"),
    (ELEMENTWISE + ["softmax_focal"], {"n_threads": 0}, ValueError, "n_threads"),
    (ELEMENTWISE + ["softmax_focal"], {"n_threads": 1.5}, TypeError, "n_threads"),
    (ELEMENTWISE + ["softmax_focal"], {"compute_grad": False, "out": "like"}, ValueError,
     "compute_grad"),
    (ELEMENTWISE + ["softmax_focal"], {"out": "wrong_shape"}, ValueError, "out must have shape"),
    (ELEMENTWISE + ["softmax_focal"], {"out": "wrong_dtype"}, ValueError, "dtype"),
    (ELEMENTWISE + ["softmax_focal"], {"out": "fortran"}, ValueError, "C-contiguous"),
    (ELEMENTWISE + ["softmax_focal"], {"out": "read_only"}, ValueError, "writeable"),
    (ELEMENTWISE, {"out": "target"}, ValueError, "overlaps target"),
    (["huber"], {"delta": 0.0}, ValueError, "delta"),
    (["huber"], {"delta": -1.0}, ValueError, "delta"),
    (["smooth_l1"], {"beta": 0.0}, ValueError, "beta"),
    (["smooth_l1"], {"beta": -0.5}, ValueError, "beta"),
    (["sigmoid_focal", "softmax_focal"], {"gamma": -0.5}, ValueError, "gamma"),
    (["sigmoid_focal", "softmax_focal"], {"gamma": float("nan")}, ValueError, "gamma"),
    (["softmax_focal"], {"alpha": np.ones(4)}, ValueError, r"alpha must have shape \(3,\)"),
    (["binary_cross_entropy_with_logits"], {"weight": np.ones(5)}, ValueError, "weight"),
]


def _error_params():
    for names, kwargs, error, fragment in ERROR_CASES:
        for name in names:
            yield pytest.param(name, kwargs, error, fragment,
                               id=f"{name}-{'-'.join(map(str, kwargs))}-{fragment[:12]}")


@pytest.mark.parametrize("name, kwargs, error, fragment", list(_error_params()))
def test_argument_errors_leave_inputs_and_out_untouched(name, kwargs, error, fragment):
    x, target = _inputs(name)
    x[:] = 3.0
    kwargs = dict(kwargs)
    sentinel = None
    if "out" in kwargs:
        kind = kwargs["out"]
        sentinel = {
            "like": lambda: np.full_like(x, 7.0),
            "wrong_shape": lambda: np.full((3, 4), 7.0),
            "wrong_dtype": lambda: np.full(x.shape, 7.0, np.float32),
            "fortran": lambda: np.full((3, 4), 7.0).T,
            "read_only": lambda: np.full_like(x, 7.0),
            "target": lambda: target,
        }[kind]()
        if kind == "read_only":
            sentinel.flags.writeable = False
        kwargs["out"] = sentinel
    before_x, before_target = x.copy(), target.copy()
    before_out = None if sentinel is None else sentinel.copy()
    with pytest.raises(error, match=fragment):
        _call(name, x, target, **kwargs)
    np.testing.assert_array_equal(x, before_x)
    np.testing.assert_array_equal(target, before_target)
    if sentinel is not None:
        np.testing.assert_array_equal(sentinel, before_out)


@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax_focal"])
def test_input_dtype_and_shape_errors(name):
    x, target = _inputs(name)
    for bad in (x.astype(np.int64), x.astype(np.float16), x.astype(np.complex128)):
        with pytest.raises(TypeError, match="float32 or float64"):
            _call(name, bad, target)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        _call(name, x.tolist(), target)
    if name == "softmax_focal":
        with pytest.raises(ValueError, match=r"target must have shape \(4,\)"):
            _call(name, x, target[:3])
        with pytest.raises(TypeError, match="integer dtype"):
            _call(name, x, target.astype(np.float64))
        with pytest.raises(ValueError, match="2-D"):
            _call(name, x.reshape(-1), target)
    else:
        with pytest.raises(ValueError, match=r"target must have shape \(4, 3\)"):
            _call(name, x, target[:, :2])
        with pytest.raises(TypeError, match="target must hold real numbers"):
            _call(name, x, target.astype(complex))


def test_softmax_focal_class_index_out_of_range_names_index_and_position():
    x = np.zeros((5, 3), dtype=np.float32)
    out = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match=r"class index 3 at position 2"):
        fastloss.softmax_focal(x, np.array([0, 1, 3, 5, 2]), out=out)
    with pytest.raises(ValueError, match=r"class index -1 at position 0"):
        fastloss.softmax_focal(x, np.array([-1, 0, 0, 0, 0]), ignore_index=-100)
    np.testing.assert_array_equal(out, 7.0)


@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax_focal"])
def test_reference_raises_the_same_errors(name):
    x, target = _inputs(name)
    for kwargs in ({"reduction": "avg"}, {"n_threads": 0}, {"compute_grad": False, "out": x}):
        with pytest.raises(ValueError):
            _call(name, x, target, **kwargs)
        with pytest.raises(ValueError):
            getattr(reference, name)(x, target, **kwargs)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_targets_of_another_dtype_are_converted(name):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((9, 5)).astype(np.float32)
    t = (rng.random((9, 5)) < 0.5)
    expected = _call(name, x, t.astype(np.float32))
    for other in (t.astype(np.float64), t.astype(np.int64), t.astype(np.uint8)):
        got = _call(name, x, other)
        assert got.loss == expected.loss and got.grad.dtype == np.float32
        np.testing.assert_array_equal(got.grad, expected.grad)


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", [(), (17,), (3, 4, 5), (2, 3, 4, 5)])
def test_elementwise_losses_take_any_shape(name, shape):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape)
    t = rng.random(shape)
    loss, grad = _call(name, x, t, reduction="none")
    ref_loss, ref_grad = getattr(reference, name)(x, t, reduction="none")
    assert loss.shape == shape and grad.shape == shape
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("n_classes", [1, 3, 16, 17, 128, 129, 2047, 2048, 2049])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_focal_both_layouts_and_label_positions(dtype, n_classes):
    """Labels at the first and last class and in between, with vector tails of every length,
    for class counts on both sides of the layout switch, against the reference."""
    rng = np.random.default_rng(10)
    n = 40
    x = (rng.standard_normal((n, n_classes)) * 3).astype(dtype)
    y = rng.integers(0, n_classes, n)
    y[:3] = [0, n_classes - 1, n_classes // 2]
    y[5] = -100
    alpha = rng.uniform(0.2, 2.0, n_classes)
    for gamma in (0.0, 2.0, 0.7):
        loss, grad = fastloss.softmax_focal(x, y, alpha=alpha, gamma=gamma, reduction="none")
        ref_loss, ref_grad = reference.softmax_focal(x.astype(np.float64), y, alpha=alpha,
                                                     gamma=gamma, reduction="none")
        rtol = 4e-6 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=rtol * 1e-3)
        np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=rtol * 1e-3)
        x_in_place = x.copy()
        fastloss.softmax_focal(x_in_place, y, alpha=alpha, gamma=gamma, out=x_in_place)
        np.testing.assert_array_equal(
            x_in_place, fastloss.softmax_focal(x, y, alpha=alpha, gamma=gamma).grad)


FAST_PATH_CASES = [
    # (loss, plain keyword arguments, the same arguments in types the fast path passes on)
    ("binary_cross_entropy_with_logits", {}, {"n_threads": np.int64(2)}),
    ("huber", {"delta": 0.7}, {"delta": np.float64(0.7)}),
    ("huber", {"delta": 2}, {"delta": np.int64(2)}),
    ("smooth_l1", {"beta": 0.3}, {"beta": np.float64(0.3)}),
    ("sigmoid_focal", {"alpha": 0.25, "gamma": 2.0}, {"alpha": np.float64(0.25)}),
    ("sigmoid_focal", {"alpha": -1, "gamma": 0.5}, {"gamma": np.float64(0.5), "alpha": -1}),
    ("softmax_focal", {"gamma": 2.0}, {"gamma": np.float64(2.0)}),
    ("softmax_focal", {"alpha": 0.5, "gamma": 1}, {"alpha": np.float32(0.5), "gamma": 1}),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, plain, passed_on", FAST_PATH_CASES)
def test_fast_path_and_validated_path_agree(name, plain, passed_on, dtype, reduction):
    """Plain calls take a C-level fast path (fastloss/_kernels.pyx); the same call with a
    NumPy scalar option or a target of another dtype takes the validated path. Both give the
    same bits and the same types, with and without out= (in place too)."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((40, 9)) * 3).astype(dtype)
    if name == "softmax_focal":
        target = rng.integers(0, 9, 40)
        slow_target = target.astype(np.int32)   # not int64: the validated path
    else:
        target = rng.random((40, 9)).astype(dtype)
        slow_target = target   # the option types alone divert the call
    kwargs = dict(plain, reduction=reduction)
    fast = _call(name, x, target, **kwargs)
    validated = _call(name, x, slow_target, **dict(kwargs, **passed_on))
    np.testing.assert_array_equal(np.asarray(fast.loss), np.asarray(validated.loss))
    np.testing.assert_array_equal(fast.grad, validated.grad)
    assert type(fast) is type(validated) is fastloss.LossResult
    assert type(fast.loss) is type(validated.loss)
    x_in_place = x.copy()
    in_place = _call(name, x_in_place, target, out=x_in_place, **kwargs)
    assert in_place.grad is x_in_place
    np.testing.assert_array_equal(x_in_place, fast.grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_for_every_thread_count_beyond_the_registry_shapes(dtype):
    """The few-class layout of softmax focal and the periodic BCE weights, in parallel."""
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((9000, 13)) * 3).astype(dtype)
    y = rng.integers(0, 13, 9000)
    t = rng.random((9000, 13)).astype(dtype)
    w, p = rng.uniform(0.5, 2.0, 13), rng.uniform(0.5, 2.0, 13)
    calls = [
        lambda n: fastloss.softmax_focal(x, y, gamma=1.5, n_threads=n),
        lambda n: fastloss.binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=p,
                                                            n_threads=n),
        lambda n: fastloss.sigmoid_focal(x, t, gamma=0.7, n_threads=n),
    ]
    for call in calls:
        first = call(1)
        for n_threads in (2, 3):
            other = call(n_threads)
            assert other.loss == first.loss
            np.testing.assert_array_equal(other.grad, first.grad)
