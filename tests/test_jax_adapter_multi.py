"""fastloss.jax: the losses of several differentiated inputs, without a target, or of (N, C')
overlap losses, and the K-dimensional class-axis inputs, against jax.numpy / optax formulas
under jit (values and the gradient of every differentiated input)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

import fastloss.jax as flj  # noqa: E402

REDUCTIONS = ["mean", "sum", "none"]


def _reduce(per, reduction):
    return {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]


# ------------------------------------------------------------------ the JAX formulas

def ref_triplet_margin(a, p, n, reduction, margin=1.0, p_norm=2.0, eps=1e-6, swap=False):
    def distance(x, y):
        return (jnp.abs(x - y + eps) ** p_norm).sum(1) ** (1 / p_norm)
    d_neg = distance(a, n)
    if swap:
        d_neg = jnp.minimum(d_neg, distance(p, n))
    return _reduce(jax.nn.relu(distance(a, p) - d_neg + margin), reduction)


def ref_contrastive(x1, x2, t, reduction, margin=1.0):
    d = jnp.sqrt(((x1 - x2 + 1e-6) ** 2).sum(1))
    return _reduce(t * d ** 2 + (1 - t) * jax.nn.relu(margin - d) ** 2, reduction)


def ref_cosine_embedding(x1, x2, t, reduction, margin=0.0):
    cosine = optax.losses.cosine_similarity(x1, x2, epsilon=1e-8)
    return _reduce(jnp.where(t > 0, 1 - cosine, jax.nn.relu(cosine - margin)), reduction)


def ref_margin_ranking(x1, x2, t, reduction, margin=0.0):
    return _reduce(jax.nn.relu(-t * (x1 - x2) + margin), reduction)


def ref_gaussian_kl(mean, log_var, reduction):
    return _reduce(-0.5 * (1 + log_var - mean ** 2 - jnp.exp(log_var)).sum(1), reduction)


def ref_dice(x, target, reduction, activation="sigmoid", smooth=1e-5, batch=False,
             include_background=True, kind="dice", alpha=0.5, beta=0.5):
    p = {"sigmoid": jax.nn.sigmoid, "softmax": lambda z: jax.nn.softmax(z, axis=1),
         "none": lambda z: z}[activation](x)
    t = target if target.shape == x.shape else \
        jnp.moveaxis(jax.nn.one_hot(target, x.shape[1], dtype=x.dtype), -1, 1)
    if not include_background:
        p, t = p[:, 1:], t[:, 1:]
    axes = tuple(range(2, x.ndim))
    if batch:
        axes = (0,) + axes
    overlap, pred, truth = (p * t).sum(axes), p.sum(axes), t.sum(axes)
    if kind == "tversky":
        f = 1 - (overlap + smooth) / (overlap + alpha * (pred - overlap)
                                      + beta * (truth - overlap) + smooth)
    elif kind == "jaccard":
        f = 1 - (2 * overlap + smooth) / (2 * (pred + truth - overlap) + smooth)
    else:
        f = 1 - (2 * overlap + smooth) / (pred + truth + smooth)
    return _reduce(f, reduction)


def ref_linear_cross_entropy(h, w, target, reduction, bias=None, label_smoothing=0.0):
    logits = h @ w.T + (0 if bias is None else bias)
    labels = optax.smooth_labels(jax.nn.one_hot(target, w.shape[0], dtype=h.dtype),
                                 label_smoothing)
    return _reduce(optax.softmax_cross_entropy(logits, labels), reduction)


def _rows(rng, dtype, count, n=7, d=5):
    return [rng.standard_normal((n, d)).astype(dtype) for _ in range(count)]


def _signs(rng, n=7):
    return rng.choice([-1.0, 1.0], n)


def _overlap_inputs(rng, dtype, target="index"):
    x = (2 * rng.standard_normal((3, 4, 5, 2))).astype(dtype)
    index = rng.integers(0, 4, (3, 5, 2))
    return [x], index if target == "index" else np.moveaxis(np.eye(4, dtype=dtype)[index], -1, 1)


# (fastloss name, make(rng, dtype) -> (differentiated, target or None), options, the
# reference(*differentiated, [target,] reduction, **options), the reference's option names)
MULTIS = [
    ("triplet_margin", lambda rng, dtype: (_rows(rng, dtype, 3), None),
     [{}, {"p": 1.0, "swap": True, "margin": 0.5}],
     lambda a, pos, neg, r, **o: ref_triplet_margin(a, pos, neg, r, p_norm=o.pop("p", 2.0),
                                                    **o)),
    ("contrastive", lambda rng, dtype: (_rows(rng, dtype, 2), rng.uniform(0, 1, 7)),
     [{}, {"margin": 3.0}], ref_contrastive),
    ("cosine_embedding", lambda rng, dtype: (_rows(rng, dtype, 2), _signs(rng)),
     [{}, {"margin": 0.2}], ref_cosine_embedding),
    ("margin_ranking", lambda rng, dtype: ([r[:, 0] for r in _rows(rng, dtype, 2)], _signs(rng)),
     [{"margin": 0.5}], ref_margin_ranking),
    ("gaussian_kl", lambda rng, dtype: (_rows(rng, dtype, 2), None), [{}], ref_gaussian_kl),
    ("dice", _overlap_inputs, [{"activation": "softmax"},
                               {"batch": True, "include_background": False}], ref_dice),
    ("jaccard", lambda rng, dtype: _overlap_inputs(rng, dtype, "onehot"), [{}],
     lambda x, t, r, **o: ref_dice(x, t, r, kind="jaccard", **o)),
    ("tversky", _overlap_inputs, [{"alpha": 0.3, "beta": 0.8, "activation": "softmax"}],
     lambda x, t, r, **o: ref_dice(x, t, r, kind="tversky", **o)),
    ("linear_cross_entropy",
     lambda rng, dtype: ([rng.standard_normal((9, 6)).astype(dtype),
                          rng.standard_normal((11, 6)).astype(dtype),
                          rng.standard_normal(11).astype(dtype)], rng.integers(0, 11, 9)),
     [{}, {"label_smoothing": 0.1}],
     lambda h, w, b, t, r, **o: ref_linear_cross_entropy(h, w, t, r, bias=b, **o)),
]
CASES = [pytest.param(name, make, option, reference, id=f"{name}-{j}")
         for name, make, options, reference in MULTIS for j, option in enumerate(options)]


def precision(dtype):
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


def tolerance(dtype):
    return dict(rtol=2e-5, atol=2e-6) if np.dtype(dtype) == np.float32 else \
        dict(rtol=1e-10, atol=1e-12)


def test_every_row_of_several_inputs_is_tested_here():
    names = {name for name, *_ in MULTIS}
    for row in flj.EXPORTED:
        if row.inputs > 1 or not row.has_target or row.per == "overlap":
            assert row.fastloss in names


def _split(name, tensors, target):
    """(the adapter's call, the reference's call) of the differentiated arrays."""
    function = getattr(flj, name)
    extra = () if target is None else (target,)
    if name == "linear_cross_entropy":  # the bias is an option (differentiated)
        def ours(h, w, b, reduction, **o):
            return function(h, w, target, bias=b, reduction=reduction, **o)
    else:
        def ours(*args, reduction, **o):
            return function(*args, *extra, reduction=reduction, **o)
    return ours, extra


# float32 and float64, each reduction in one of them ("none" in both): one jit compilation
# per test, the suite's time
PRECISIONS = [pytest.param(np.float32, "mean", id="float32-mean"),
              pytest.param(np.float32, "none", id="float32-none"),
              pytest.param(np.float64, "sum", id="float64-sum"),
              pytest.param(np.float64, "none", id="float64-none")]


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize("name, make, option, reference", CASES)
def test_matches_jax_formula_under_jit(name, make, option, reference, dtype, reduction):
    with precision(dtype):
        tensors, target = make(np.random.default_rng(0), dtype)
        tensors = [jnp.asarray(t) for t in tensors]
        if target is not None:
            target = jnp.asarray(target, dtype=dtype if np.asarray(target).dtype.kind == "f"
                                 else None)
        ours, extra = _split(name, tensors, target)
        f = jax.jit(lambda *a: ours(*a, reduction=reduction, **option))
        row = next(r for r in flj.EXPORTED if r.fastloss == name)
        if reduction == "none" and not row.none_vjp:
            loss = f(*tensors)
            with pytest.raises(NotImplementedError, match="reduction='sum'"):
                jax.grad(lambda *a: f(*a).sum(), argnums=tuple(range(len(tensors))))(*tensors)
        else:
            loss, vjp = jax.vjp(f, *tensors)
        expected, vjp_ref = jax.vjp(lambda *a: reference(*a, *extra, reduction, **option),
                                    *tensors)
        assert loss.dtype == dtype and loss.shape == expected.shape
        np.testing.assert_allclose(loss, expected, **tolerance(dtype))
        if reduction == "none" and not row.none_vjp:
            return
        cotangent = jnp.linspace(0.5, 2.0, loss.size, dtype=dtype).reshape(loss.shape)
        for g, e in zip(vjp(cotangent), vjp_ref(cotangent)):
            assert g.dtype == dtype
            np.testing.assert_allclose(g, e, **tolerance(dtype))


def test_pure_callback_route_and_linear_cross_entropy_without_bias(monkeypatch):
    rng = np.random.default_rng(1)
    h, w = jnp.asarray(rng.standard_normal((9, 6)), jnp.float32), \
        jnp.asarray(rng.standard_normal((11, 6)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 11, 9))
    expected = jax.grad(lambda h, w: ref_linear_cross_entropy(h, w, t, "mean"),
                        argnums=(0, 1))(h, w)
    for route in ("buffer", "pure"):
        if route == "pure":
            monkeypatch.setattr(flj, "_buffer_callback", None)
        grads = jax.jit(jax.grad(lambda h, w: flj.linear_cross_entropy(h, w, t),
                                 argnums=(0, 1)))(h, w)
        for g, e in zip(grads, expected):
            np.testing.assert_allclose(g, e, rtol=2e-5, atol=2e-6)
        a, p, n = [jnp.asarray(x) for x in _rows(rng, np.float32, 3)]
        grads = jax.grad(lambda a, p, n: flj.triplet_margin(a, p, n, reduction="sum"),
                         argnums=(0, 1, 2))(a, p, n)
        expected_t = jax.grad(lambda a, p, n: ref_triplet_margin(a, p, n, "sum"),
                              argnums=(0, 1, 2))(a, p, n)
        for g, e in zip(grads, expected_t):
            np.testing.assert_allclose(g, e, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_k_dim_cross_entropy_with_sample_weight_z_loss_and_softcap(reduction):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((3, 5, 4, 2)) * 3, jnp.float32)
    y = jnp.asarray(rng.integers(0, 5, (3, 4, 2)))
    s = jnp.asarray(rng.uniform(0, 2, (3, 4, 2)), jnp.float32)
    options = dict(label_smoothing=0.1, z_loss=0.01, logit_softcap=4.0)

    def reference(a):
        z = 4.0 * jnp.tanh(a / 4.0)
        log_p = jax.nn.log_softmax(z, axis=1)
        labels = jnp.moveaxis(optax.smooth_labels(jax.nn.one_hot(y, 5, dtype=a.dtype), 0.1),
                              -1, 1)
        per = (-(labels * log_p).sum(1) + 0.01 * jax.nn.logsumexp(z, axis=1) ** 2) * s
        return {"none": per, "sum": per.sum(), "mean": per.sum() / s.sum()}[reduction]

    f = jax.jit(lambda a: flj.softmax_cross_entropy(a, y, sample_weight=s, reduction=reduction,
                                                    **options))
    loss, vjp = jax.vjp(f, x)
    expected, vjp_ref = jax.vjp(reference, x)
    np.testing.assert_allclose(loss, expected, rtol=2e-5, atol=2e-6)
    cotangent = jnp.linspace(0.5, 2.0, loss.size, dtype=loss.dtype).reshape(loss.shape)
    np.testing.assert_allclose(vjp(cotangent)[0], vjp_ref(cotangent)[0], rtol=2e-5, atol=2e-6)
