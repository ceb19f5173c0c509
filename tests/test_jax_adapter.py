"""fastloss.jax: the kernels over jax arrays, against optax / jax.numpy formulas under jit.

Parametrized from the adapter's table (fastloss.jax.EXPORTED), the test registry
(tests/cases.py: inputs and options) and REFERENCES below (the JAX formula of each loss).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

import fastloss  # noqa: E402
import fastloss.jax as flj  # noqa: E402
from cases import merged_cases, option_id  # noqa: E402

# every registry entry of each loss, merged into one case
CASE_BY_NAME = merged_cases()
DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


# ------------------------------------------------------------ the JAX formulas (references)

def _reduce(per, reduction, denominator):
    return {"none": per, "sum": per.sum(), "mean": per.sum() / denominator}[reduction]


def ref_softmax_cross_entropy(x, target, reduction, weight=None, ignore_index=-100,
                              label_smoothing=0.0, sample_weight=None, z_loss=0.0,
                              logit_softcap=None):
    n_classes = x.shape[1]
    if logit_softcap is not None:
        x = logit_softcap * jnp.tanh(x / logit_softcap)
    log_p = jax.nn.log_softmax(x, axis=1)
    lse = jax.nn.logsumexp(x, axis=1)
    w = jnp.ones(n_classes, x.dtype) if weight is None else weight
    s = jnp.ones(x.shape[0], x.dtype) if sample_weight is None else sample_weight
    if target.ndim == 1:
        kept = target != ignore_index
        labels = optax.smooth_labels(jax.nn.one_hot(jnp.where(kept, target, 0), n_classes,
                                                    dtype=x.dtype), label_smoothing)
        per = jnp.where(kept, -(labels * w * log_p).sum(1) + z_loss * lse ** 2, 0.0)
        denominator = jnp.where(kept, s * w[jnp.where(kept, target, 0)], 0.0).sum()
    else:
        labels = (1 - label_smoothing) * target + label_smoothing / n_classes
        per = -(labels * w * log_p).sum(1) + z_loss * lse ** 2
        denominator = s.sum()
    return _reduce(per * s, reduction, denominator)


def ref_binary_cross_entropy_with_logits(x, target, reduction, weight=None, pos_weight=None):
    if pos_weight is None:
        per = optax.sigmoid_binary_cross_entropy(x, target)
    else:
        per = -(pos_weight * target * jax.nn.log_sigmoid(x)
                + (1 - target) * jax.nn.log_sigmoid(-x))
    if weight is not None:
        per = per * weight
    return _reduce(per, reduction, x.size)


def ref_huber(x, target, reduction, delta=1.0, weight=None):
    return _reduce(_weighted(optax.huber_loss(x, target, delta=delta), weight), reduction,
                   x.size)


def ref_smooth_l1(x, target, reduction, beta=1.0, weight=None):
    return _reduce(_weighted(optax.huber_loss(x, target, delta=beta) / beta, weight), reduction,
                   x.size)


def ref_sigmoid_focal(x, target, reduction, alpha=0.25, gamma=2.0, weight=None):
    per = optax.sigmoid_focal_loss(x, target, alpha=None if alpha < 0 else alpha, gamma=gamma)
    return _reduce(_weighted(per, weight), reduction, x.size)


def ref_softmax_focal(x, target, reduction, alpha=None, gamma=2.0, ignore_index=-100,
                      sample_weight=None):
    kept = target != ignore_index
    label = jnp.where(kept, target, 0)
    log_p = jnp.take_along_axis(jax.nn.log_softmax(x, axis=1), label[:, None], axis=1)[:, 0]
    per = -((1 - jnp.exp(log_p)) ** gamma) * log_p
    if alpha is not None:
        alpha = jnp.asarray(alpha, x.dtype)
        per = per * (alpha[label] if alpha.ndim else alpha)
    s = jnp.ones(x.shape[0], x.dtype) if sample_weight is None else sample_weight
    return _reduce(jnp.where(kept, per * s, 0.0), reduction, jnp.where(kept, s, 0.0).sum())


def ref_multi_margin(x, target, reduction, p=1, margin=1.0, weight=None):
    """torch's multi_margin_loss: sum_{j != y} w_y max(0, margin - x_y + x_j)^p / C."""
    x_y = jnp.take_along_axis(x, target[:, None], axis=1)
    terms = jax.nn.relu(margin - x_y + x) ** p
    if weight is not None:
        terms = terms * weight[target][:, None]
    not_y = jnp.arange(x.shape[1])[None, :] != target[:, None]
    per = jnp.where(not_y, terms, 0.0).sum(1) / x.shape[1]
    return _reduce(per, reduction, x.shape[0])


def ref_kl_divergence_with_logits(x, target, reduction, temperature=1.0):
    """T^2 KL(softmax(t / T) || softmax(x / T)) per row (optax.losses.kl_divergence_with_log_targets)."""
    log_q = jax.nn.log_softmax(x / temperature, axis=1)
    log_p = jax.nn.log_softmax(target / temperature, axis=1)
    per = temperature ** 2 * optax.losses.kl_divergence_with_log_targets(log_q, log_p)
    return _reduce(per, reduction, x.shape[0])


# the second wave of element-wise losses (shared/API.md), enrolled as soon as fastloss and
# tests/cases.py have them; "mean" divides the weighted sum by the number of elements

def _weighted(per, weight):
    return per if weight is None else per * weight


def ref_mse(x, target, reduction, weight=None):
    return _reduce(_weighted((x - target) ** 2, weight), reduction, x.size)


def ref_mae(x, target, reduction, weight=None):
    return _reduce(_weighted(jnp.abs(x - target), weight), reduction, x.size)


def ref_pinball(x, target, reduction, quantile=0.5, weight=None):
    r = target - x
    per = jnp.where(r >= 0, quantile * r, (quantile - 1) * r)
    return _reduce(_weighted(per, weight), reduction, x.size)


def ref_log_cosh(x, target, reduction, weight=None):
    return _reduce(_weighted(optax.log_cosh(x, target), weight), reduction, x.size)


def ref_poisson_nll(x, target, reduction, log_input=True, full=False, eps=1e-8, weight=None):
    per = jnp.exp(x) - target * x if log_input else x - target * jnp.log(x + eps)
    if full:
        safe = jnp.where(target > 1, target, 2.0)
        stirling = safe * jnp.log(safe) - safe + 0.5 * jnp.log(2 * jnp.pi * safe)
        per = per + jnp.where(target > 1, stirling, 0.0)
    return _reduce(_weighted(per, weight), reduction, x.size)


def ref_tweedie(x, target, reduction, power=1.5, weight=None):
    per = (-target * jnp.exp((1 - power) * x) / (1 - power)
           + jnp.exp((2 - power) * x) / (2 - power))
    return _reduce(_weighted(per, weight), reduction, x.size)


def ref_hinge(x, target, reduction, margin=1.0, weight=None):
    return _reduce(_weighted(jax.nn.relu(margin - target * x), weight), reduction, x.size)


def ref_squared_hinge(x, target, reduction, margin=1.0, weight=None):
    per = jax.nn.relu(margin - target * x) ** 2
    return _reduce(_weighted(per, weight), reduction, x.size)


def ref_soft_margin(x, target, reduction, weight=None):
    return _reduce(_weighted(jnp.logaddexp(0.0, -target * x), weight), reduction, x.size)


def ref_binary_cross_entropy(x, target, reduction, weight=None):
    per = -(target * jnp.maximum(jnp.log(x), -100.0)
            + (1 - target) * jnp.maximum(jnp.log1p(-x), -100.0))
    return _reduce(_weighted(per, weight), reduction, x.size)


def ref_kl_div(x, target, reduction, log_target=False, weight=None):
    if log_target:
        per = jnp.exp(target) * (target - x)
    else:
        per = jax.scipy.special.xlogy(target, target) - target * x
    per = _weighted(per, weight)
    if reduction == "batchmean":
        return per.sum() / x.shape[0]
    return _reduce(per, reduction, x.size)


REFERENCES = {name[len("ref_"):]: function for name, function in globals().items()
              if name.startswith("ref_")}
ROWS = [row for row in flj.EXPORTED if row.fastloss in CASE_BY_NAME]
ROW_OPTIONS = [pytest.param(row, option, id=f"{row.fastloss}-{option_id(option)}")
               for row in ROWS for option in CASE_BY_NAME[row.fastloss].options]
ROW_IDS = [row.fastloss for row in ROWS]


def precision(dtype):
    """float64 needs JAX's 64-bit mode, for the duration of the test only."""
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


def tolerance(dtype):
    return dict(rtol=2e-5, atol=2e-6) if np.dtype(dtype) == np.float32 else \
        dict(rtol=1e-10, atol=1e-12)


def make(row, option, dtype, shape=(13, 5), seed=0):
    case = CASE_BY_NAME[row.fastloss]
    x, target, kwargs = case.make(np.random.default_rng(seed), np.dtype(dtype), shape, option)
    # array options in the input's dtype (the registry draws pinball's levels in float64):
    # jnp.asarray alone would make them float64 or float32 by the global x64 flag, which
    # fastloss.bench turns on for the rest of the process
    kwargs = {k: (jnp.asarray(v, dtype=x.dtype) if isinstance(v, np.ndarray) else v)
              for k, v in case.call_kwargs(kwargs).items()}
    return jnp.asarray(x), jnp.asarray(target), kwargs


# ------------------------------------------------------------------------------ the tests

def test_every_fastloss_loss_of_the_table_is_exported():
    for row in flj.LOSSES:
        exported = hasattr(fastloss, row.fastloss)
        assert (row in flj.EXPORTED) == exported
        assert hasattr(flj, row.fastloss) == exported
    # the rows of several inputs, without a target or of overlap losses: their formulas are
    # in tests/test_jax_adapter_multi.py
    single = [row for row in flj.EXPORTED
              if row.inputs == 1 and row.has_target and row.per != "overlap"]
    missing = [row.fastloss for row in single if row.fastloss not in REFERENCES]
    assert not missing, f"add a JAX formula for {missing} to tests/test_jax_adapter.py"


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row, option", ROW_OPTIONS)
def test_matches_jax_formula_under_jit(row, option, dtype, reduction):
    with precision(dtype):
        x, target, kwargs = make(row, option, dtype)
        assert x.dtype == dtype
        function = getattr(flj, row.fastloss)
        ours = lambda a: function(a, target, reduction=reduction, **kwargs)  # noqa: E731
        # (the formula runs op by op: jitting it too would double the compilation time)
        theirs = lambda a: REFERENCES[row.fastloss](a, target, reduction, **kwargs)  # noqa: E731
        expected, vjp_ref = jax.vjp(theirs, x)
        cotangent = jnp.linspace(0.5, 2.0, expected.size,
                                 dtype=expected.dtype).reshape(expected.shape)

        @jax.jit
        def under_jit(a, c):
            """The differentiated call, its vjp and the loss-only call (not differentiated):
            one compilation for the three."""
            loss, vjp = jax.vjp(ours, a)
            return loss, vjp(c)[0], ours(a)

        loss, grad, loss_only = under_jit(x, cotangent)
        assert loss.dtype == expected.dtype == dtype and loss.shape == expected.shape
        np.testing.assert_allclose(loss, expected, **tolerance(dtype))
        np.testing.assert_allclose(grad, vjp_ref(cotangent)[0], **tolerance(dtype))
        # the loss-only path gives the same value
        np.testing.assert_array_equal(loss_only, loss)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_value_and_grad_jit_of_grad_and_grad_of_jit(row):
    x, target, kwargs = make(row, {}, np.float32)
    function = getattr(flj, row.fastloss)
    value, grad = jax.jit(jax.value_and_grad(lambda a: function(a, target, **kwargs)))(x)
    grad_of_jit = jax.grad(jax.jit(lambda a: function(a, target, **kwargs)))(x)
    reference = jax.grad(lambda a: REFERENCES[row.fastloss](a, target, "mean", **kwargs))(x)
    np.testing.assert_array_equal(grad, grad_of_jit)
    np.testing.assert_allclose(grad, reference, rtol=2e-5, atol=2e-7)
    numpy_kwargs = {k: (np.asarray(v) if isinstance(v, jax.Array) else v)
                    for k, v in kwargs.items()}
    expected = getattr(fastloss, row.fastloss)(np.asarray(x), np.asarray(target), **numpy_kwargs)
    assert value == np.float32(expected.loss)  # the kernel's loss, rounded to the input dtype
    np.testing.assert_array_equal(grad, expected.grad)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_vmap(row):
    """jax.vmap over a batch of problems: one kernel call per problem, sequentially."""
    batch = [make(row, {}, np.float32, seed=seed) for seed in range(3)]
    xs = jnp.stack([b[0] for b in batch])
    targets = jnp.stack([b[1] for b in batch])
    kwargs = batch[0][2]
    function = getattr(flj, row.fastloss)
    losses = jax.jit(jax.vmap(lambda a, t: function(a, t, **kwargs)))(xs, targets)
    grads = jax.vmap(jax.grad(lambda a, t: function(a, t, **kwargs)))(xs, targets)
    for i in range(3):
        np.testing.assert_allclose(losses[i], function(xs[i], targets[i], **kwargs), rtol=1e-6)
        np.testing.assert_allclose(grads[i], jax.grad(lambda a: function(a, targets[i],
                                                                         **kwargs))(xs[i]),
                                   rtol=1e-6)


def test_traced_array_options():
    """Array-valued options (class weights) may be traced: one compilation, any values."""
    x, target, _ = make(flj.EXPORTED[0], {}, np.float32)
    weighted = jax.jit(lambda a, w: flj.softmax_cross_entropy(a, target, weight=w))
    for seed in range(2):
        w = jnp.asarray(np.random.default_rng(seed).uniform(0.5, 2.0, x.shape[1]), jnp.float32)
        np.testing.assert_allclose(weighted(x, w),
                                   ref_softmax_cross_entropy(x, target, "mean", weight=w),
                                   rtol=2e-5)


def test_errors():
    x = jnp.ones((4, 3), jnp.float32)
    labels = jnp.array([0, 1, 2, 1])
    with pytest.raises(TypeError, match="float32 or float64"):
        flj.softmax_cross_entropy(x.astype(jnp.float16), labels)
    with pytest.raises(TypeError, match="float32 or float64"):
        flj.huber(jnp.ones(3, jnp.int32), jnp.ones(3, jnp.int32))
    with pytest.raises(ValueError, match="reduction"):
        flj.huber(x, x, reduction="avg")
    with pytest.raises(ValueError, match="delta"):  # fastloss's checks, while tracing
        jax.jit(lambda a: flj.huber(a, a, delta=-1.0))(x)
    with pytest.raises(ValueError, match="label_smoothing"):
        jax.jit(lambda a: flj.softmax_cross_entropy(a, labels, label_smoothing=2.0))(x)
    with pytest.raises(ValueError, match="shape"):
        flj.huber(x, x[:2])
    with pytest.raises(TypeError, match="static"):
        jax.jit(lambda a, d: flj.huber(a, a, delta=d))(x, jnp.float32(2.0))
    with pytest.raises(TypeError):
        flj.huber(x, x, delta=1.0, smoothing=2)
    with pytest.raises(Exception, match="target"):  # a value check: raised in the callback
        jax.block_until_ready(flj.softmax_cross_entropy(x, jnp.array([0, 1, 7, 1])))


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_pure_callback_route(row, reduction, monkeypatch):
    """The route of a jax without jax.experimental.buffer_callback: jax.pure_callback."""
    monkeypatch.setattr(flj, "_buffer_callback", None)
    x, target, kwargs = make(row, {}, np.float32, seed=5)
    ours = jax.jit(lambda a: getattr(flj, row.fastloss)(a, target, reduction=reduction, **kwargs))
    loss, vjp = jax.vjp(ours, x)
    expected, vjp_ref = jax.vjp(
        lambda a: REFERENCES[row.fastloss](a, target, reduction, **kwargs), x)
    np.testing.assert_allclose(loss, expected, **tolerance(np.float32))
    cotangent = jnp.linspace(0.5, 2.0, loss.size, dtype=loss.dtype).reshape(loss.shape)
    np.testing.assert_allclose(vjp(cotangent)[0], vjp_ref(cotangent)[0], **tolerance(np.float32))
