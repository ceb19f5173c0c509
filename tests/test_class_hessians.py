"""Second derivatives of the softmax class-axis losses (issue 15): compute_hess / hess_out of
softmax_cross_entropy and softmax_focal, for (N, C) and K-dim logits and every option (class
weight, ignore_index, label smoothing, probability targets, sample weights, z-loss, logit
soft-capping; focal's alpha and gamma). Against the diagonal of torch.func.hessian (float64),
central finite differences of the gradient, and the NumPy reference in float32 and float64;
hess_out and in place, n_threads determinism, every SIMD level, empty inputs, nan/inf
confinement, the errors with nothing written, and how the hessian differs from LightGBM's
multiclass objective.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from fastloss import _kernels, reference

from cases import torch, torch_class_axis_ce, torch_focal_kdim

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
# (N, C): chunks of rows (C <= 40: 5; 32 <= C <= 40 takes each row's own max: 36) and rows
# (45, 130); K-dim with one tile per sample; a trailing 1; K = 2
SHAPES = [(6, 5), (2, 36), (2, 45), (1, 130), (3, 4, 5), (4, 3, 1), (2, 3, 2, 3)]

from class_axis_options import (CE_OPTIONS, FOCAL_OPTIONS, assert_close, make,  # noqa: E402
                                option_id)

CALLS = ([("ce", option) for option in CE_OPTIONS]
         + [("focal", option) for option in FOCAL_OPTIONS])


def function(module, name):
    return module.softmax_cross_entropy if name == "ce" else module.softmax_focal


def torch_hessian_diagonal(name, x, target, kwargs, reduction):
    """The diagonal of torch.func.hessian of the loss (float64), in x's shape."""
    loss_of = torch_class_axis_ce if name == "ce" else torch_focal_kdim

    def scalar(xt):
        value = loss_of(xt, target, kwargs, reduction)
        return value.sum() if reduction == "none" else value

    full = torch.func.hessian(scalar)(torch.tensor(x))
    return full.reshape(x.size, x.size).diagonal().reshape(x.shape).numpy()


# ------------------------------------------------------------------ exact values

@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name, option", CALLS, ids=option_id)
def test_matches_the_diagonal_of_torch_hessian(name, option, shape):
    rng = np.random.default_rng(1)
    x, target, kwargs = make(rng, np.float64, shape, option)
    for reduction in ("mean", "none"):
        got = function(fastloss, name)(x, target, reduction=reduction, compute_hess=True,
                                       **kwargs)
        assert type(got).__name__ == "LossGradHess"
        assert got.hess.shape == x.shape and got.hess.dtype == x.dtype
        expected = torch_hessian_diagonal(name, x, target, kwargs, reduction)
        assert_close(got.hess, expected, np.float64, f"{name} {reduction}")


@pytest.mark.parametrize("shape", [(5, 7), (3, 45), (3, 6, 4)], ids=str)
@pytest.mark.parametrize("name, option", CALLS, ids=option_id)
def test_matches_central_differences_of_the_gradient(name, option, shape):
    """The Hessian is block-diagonal over samples, so moving class c of every sample at
    once gives the diagonal entries of class c of all samples from two gradient calls."""
    rng = np.random.default_rng(2)
    x, target, kwargs = make(rng, np.float64, shape, option)
    fn = function(fastloss, name)
    got = fn(x, target, reduction="sum", compute_hess=True, **kwargs)
    numeric = np.empty_like(x)
    step = 1e-6
    for c in range(x.shape[1]):
        up, down = x.copy(), x.copy()
        up[:, c] += step
        down[:, c] -= step
        numeric[:, c] = ((fn(up, target, reduction="sum", **kwargs).grad[:, c]
                          - fn(down, target, reduction="sum", **kwargs).grad[:, c]) / (2 * step))
    np.testing.assert_allclose(got.hess, numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, option", CALLS, ids=option_id)
def test_matches_reference(name, option, dtype, reduction):
    """Kernel against fastloss.reference: the (N, C) layouts (chunks of rows at C = 9 and 36,
    rows at C = 100 and 300) and tiles of every width (C = 3: 512 positions, a partial last
    tile; C = 40)."""
    rng = np.random.default_rng(3)
    for shape in [(40, 9), (30, 36), (9, 100), (7, 300), (2, 3, 3, 201), (2, 40, 37)]:
        x, target, kwargs = make(rng, dtype, shape, option)
        got = function(fastloss, name)(x, target, reduction=reduction, compute_hess=True,
                                       **kwargs)
        ref = function(reference, name)(x, target, reduction=reduction, compute_hess=True,
                                        **kwargs)
        where = f"{name} {shape} {option_id(option)} {reduction}"
        assert type(ref).__name__ == "LossGradHess"
        assert_close(got.loss, ref.loss, dtype, where)
        assert_close(got.grad, ref.grad, dtype, where)
        assert_close(got.hess, ref.hess, dtype, where)
        plain = function(fastloss, name)(x, target, reduction=reduction, **kwargs)
        assert type(plain).__name__ == "LossResult" and len(plain) == 2
        # (not bitwise: the with_hess variant is another compilation of the loops, and the
        # compiler may contract a * b - c into an fma in one and not the other)
        assert_close(got.grad, plain.grad, dtype, where)
        assert_close(got.loss, plain.loss, dtype, where)


def test_cross_entropy_hessian_is_s_p_one_minus_p():
    """Coefficients summing to S: S p (1 - p), whatever the label (class weights, smoothing)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 6))
    y = rng.integers(0, 6, 50)
    w = rng.uniform(0.5, 2.0, 6)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    got = fastloss.softmax_cross_entropy(x, y, weight=w, label_smoothing=0.3, reduction="sum",
                                         compute_hess=True)
    S = 0.7 * w[y] + 0.3 / 6 * w.sum()
    np.testing.assert_allclose(got.hess, S[:, None] * p * (1 - p), rtol=1e-12)


def test_focal_hessian_at_gamma_zero_is_cross_entropy():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, 7)) * 4
    y = rng.integers(0, 7, 30)
    focal = fastloss.softmax_focal(x, y, gamma=0.0, compute_hess=True)
    ce = fastloss.softmax_cross_entropy(x, y, compute_hess=True)
    np.testing.assert_allclose(focal.hess, ce.hess, rtol=1e-12, atol=1e-15)


def test_focal_label_entry_is_negative_where_p_y_is_small():
    """The exact value, not a floor (the boosting adapters decide what to do with it)."""
    x = np.array([[0.0, 8.0, 8.0]])
    got = fastloss.softmax_focal(x, np.array([0]), gamma=2.0, reduction="sum",
                                 compute_hess=True)
    assert got.hess[0, 0] < 0
    ref = reference.softmax_focal(x, np.array([0]), gamma=2.0, reduction="sum",
                                  compute_hess=True)
    np.testing.assert_allclose(got.hess, ref.hess, rtol=1e-12)


@pytest.mark.parametrize("name", ["ce", "focal"])
def test_float32_keeps_its_digits_where_p_rounds_to_one(name):
    """p(1 - p) of the row max from (s - 1) / s in double: relative accuracy where p rounds
    to 1 in float32 (logits 18 apart: 1 - p ~ 2e-8; 1 - p in float32 would give 0)."""
    x = np.array([[18.0, 0.0, -1.0, 0.5], [0.0, 18.0, 1.0, -2.0]])
    y = np.array([0, 2])
    got = function(fastloss, name)(x.astype(np.float32), y, reduction="sum",
                                   compute_hess=True)
    ref = function(reference, name)(x, y, reduction="sum", compute_hess=True)
    np.testing.assert_allclose(got.hess, ref.hess, rtol=2e-5, atol=0)


@pytest.mark.parametrize("name", ["ce", "focal"])
def test_logits_of_any_finite_magnitude(name):
    rng = np.random.default_rng(6)
    for dtype in DTYPES:
        base = rng.standard_normal((20, 8)).astype(dtype)
        for shift in (1e4, -1e30):
            x = base + dtype(shift)
            y = rng.integers(0, 8, 20)
            got = function(fastloss, name)(x, y, compute_hess=True)
            assert np.isfinite(got.hess).all()
            ref = function(reference, name)(x, y, compute_hess=True)
            assert_close(got.hess, ref.hess, dtype, f"{name} {dtype} {shift}")


def test_lightgbm_multiclass_hessian_differs_by_k_over_k_minus_1():
    """LightGBM's multiclass objective (src/objective/multiclass_objective.hpp) returns, per
    sample and class, grad = p_k - [k == y] and hess = factor * p_k * (1 - p_k) with
    factor = K / (K - 1): a scaled Newton step, not the second derivative. Ours is the exact
    diagonal, p_k (1 - p_k) (central differences of the gradient agree with it), so a
    LightGBM objective built on it takes Newton steps (K - 1) / K times as long as the
    built-in one would for the same gradient (the boosting adapters document the choice)."""
    rng = np.random.default_rng(7)
    for k in (2, 3, 10):
        x = rng.standard_normal((25, k))
        y = rng.integers(0, k, 25)
        got = fastloss.softmax_cross_entropy(x, y, reduction="sum", compute_hess=True)
        p = np.exp(x - x.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        lightgbm_grad = p - np.eye(k)[y]
        lightgbm_hess = k / (k - 1.0) * p * (1.0 - p)
        np.testing.assert_allclose(got.grad, lightgbm_grad, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got.hess * k / (k - 1.0), lightgbm_hess, rtol=1e-12)
        assert not np.allclose(got.hess, lightgbm_hess)
        step = 1e-6
        for c in range(k):
            up, down = x.copy(), x.copy()
            up[:, c] += step
            down[:, c] -= step
            numeric = (fastloss.softmax_cross_entropy(up, y, reduction="sum").grad[:, c]
                       - fastloss.softmax_cross_entropy(down, y, reduction="sum").grad[:, c])
            np.testing.assert_allclose(got.hess[:, c], numeric / (2 * step), rtol=1e-6)


# ------------------------------------------------------------------ calling conventions

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, option", [CALLS[0], CALLS[7], CALLS[9], CALLS[10], CALLS[13]],
                         ids=option_id)
def test_hess_out_in_place_and_threads(name, option, dtype):
    rng = np.random.default_rng(8)
    fn = function(fastloss, name)
    for shape in [(300, 257), (4, 7, 50, 60)]:   # above the serial threshold: in parallel
        x, target, kwargs = make(rng, dtype, shape, option)
        assert x.size > _kernels.SERIAL_THRESHOLD_ELEMENTS
        expected = fn(x, target, compute_hess=True, n_threads=1, **kwargs)
        for n_threads in (2, 3, None):
            again = fn(x, target, compute_hess=True, n_threads=n_threads, **kwargs)
            assert again.loss == expected.loss
            np.testing.assert_array_equal(again.grad, expected.grad)
            np.testing.assert_array_equal(again.hess, expected.hess)
        hess_out = np.full_like(x, np.nan)
        got = fn(x, target, compute_hess=True, hess_out=hess_out, **kwargs)
        assert got.hess is hess_out
        np.testing.assert_array_equal(hess_out, expected.hess)
        # the hessian over the logits, the gradient into out
        x_in_place, out = x.copy(), np.empty_like(x)
        got = fn(x_in_place, target, compute_hess=True, hess_out=x_in_place, out=out, **kwargs)
        assert got.hess is x_in_place and got.grad is out
        np.testing.assert_array_equal(x_in_place, expected.hess)
        np.testing.assert_array_equal(out, expected.grad)
        # the gradient over the logits, the hessian into hess_out
        x_in_place, hess_out = x.copy(), np.empty_like(x)
        got = fn(x_in_place, target, compute_hess=True, out=x_in_place, hess_out=hess_out,
                 **kwargs)
        assert got.grad is x_in_place and got.hess is hess_out
        np.testing.assert_array_equal(x_in_place, expected.grad)
        np.testing.assert_array_equal(hess_out, expected.hess)
        # non-contiguous logits
        wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=dtype)
        wide[..., ::2] = x
        got = fn(wide[..., ::2], target, compute_hess=True, **kwargs)
        np.testing.assert_array_equal(got.hess, expected.hess)


@pytest.mark.parametrize("name", ["ce", "focal"])
def test_compute_hess_false_is_the_two_tuple(name):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((64, 10)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    fn = function(fastloss, name)
    plain = fn(x, y)
    explicit = fn(x, y, compute_hess=False)
    assert type(explicit).__name__ == "LossResult" and len(explicit) == 2
    assert explicit.loss == plain.loss
    np.testing.assert_array_equal(explicit.grad, plain.grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_simd_level_matches_reference(dtype, simd_level):
    rng = np.random.default_rng(10)
    calls = [("ce", (2, 3, 3, 201), CE_OPTIONS[7]), ("ce", (2, 40, 197), CE_OPTIONS[9]),
             ("ce", (2, 700, 37), CE_OPTIONS[4]), ("focal", (2, 3, 700), FOCAL_OPTIONS[3]),
             ("focal", (2, 40, 197), FOCAL_OPTIONS[4]), ("ce", (50, 300), CE_OPTIONS[7]),
             ("ce", (50, 9), CE_OPTIONS[9]), ("focal", (50, 300), FOCAL_OPTIONS[3]),
             ("focal", (50, 20), FOCAL_OPTIONS[0]), ("focal", (30, 100), FOCAL_OPTIONS[2])]
    for name, shape, option in calls:
        x, target, kwargs = make(rng, dtype, shape, option)
        got = function(fastloss, name)(x, target, reduction="none", compute_hess=True,
                                       **kwargs)
        ref = function(reference, name)(x, target, reduction="none", compute_hess=True,
                                        **kwargs)
        where = f"{name} {shape} {option_id(option)} at {simd_level}"
        assert_close(got.hess, ref.hess, dtype, where)
        assert_close(got.grad, ref.grad, dtype, where)


# ------------------------------------------------------------------ edge cases

@pytest.mark.parametrize("name", ["ce", "focal"])
@pytest.mark.parametrize("shape", [(0, 5), (3, 5, 0), (0, 4, 2)], ids=str)
def test_empty_inputs(name, shape):
    x = np.zeros(shape, dtype=np.float32)
    target = np.zeros((shape[0],) + shape[2:], dtype=np.int64)
    fn = function(fastloss, name)
    got = fn(x, target, compute_hess=True)
    assert np.isnan(got.loss)
    assert got.grad.shape == shape and got.hess.shape == shape
    assert got.hess.dtype == np.float32
    assert fn(x, target, reduction="sum", compute_hess=True).loss == 0.0


@pytest.mark.parametrize("name", ["ce", "focal"])
@pytest.mark.parametrize("shape", [(30, 12), (3, 12, 40)], ids=str)
def test_nan_and_inf_stay_in_their_sample(name, shape):
    rng = np.random.default_rng(11)
    fn = function(fastloss, name)
    x = rng.standard_normal(shape).astype(np.float32)
    target = rng.integers(0, 12, (shape[0],) + shape[2:])
    clean = fn(x, target, reduction="none", compute_hess=True)
    for bad in (np.nan, np.inf, -np.inf):
        x_bad = x.copy()
        where = (1, 3) if x.ndim == 2 else (1, 3, 17)
        x_bad[where] = bad
        got = fn(x_bad, target, reduction="none", compute_hess=True)
        sample = (1,) if x.ndim == 2 else (1, 17)
        hess_of = (lambda h: h[1]) if x.ndim == 2 else (lambda h: h[1, :, 17])
        others = np.ones(got.loss.shape, dtype=bool)
        others[sample] = False
        moved = (lambda a: a) if x.ndim == 2 else (lambda a: np.moveaxis(a, 1, -1))
        np.testing.assert_array_equal(moved(got.hess)[others], moved(clean.hess)[others])
        np.testing.assert_array_equal(moved(got.grad)[others], moved(clean.grad)[others])
        if bad != bad:   # nan: the sample's hessian is nan, as torch's would be
            assert np.isnan(hess_of(got.hess)).any()


def test_ignored_samples_get_zeros_even_with_nan_logits():
    x = np.ones((4, 5), dtype=np.float32)
    x[2] = np.nan
    y = np.array([0, 1, -100, 3])
    for name in ("ce", "focal"):
        got = function(fastloss, name)(x, y, compute_hess=True)
        np.testing.assert_array_equal(got.hess[2], 0)
        assert np.isfinite(got.hess).all()


# ------------------------------------------------------------------ errors

ERRORS = [
    ({"compute_grad": False, "compute_hess": True}, ValueError, "compute_grad=False"),
    ({"hess_out": "same-shape"}, ValueError, "hess_out was given without compute_hess"),
    ({"compute_hess": 1}, TypeError, "compute_hess must be True or False"),
    ({"compute_hess": True, "hess_out": "wrong-shape"}, ValueError, "hess_out must have shape"),
    ({"compute_hess": True, "hess_out": "wrong-dtype"}, ValueError, "hess_out must have shape"),
    ({"compute_hess": True, "hess_out": "strided"}, ValueError, "hess_out must be C-contiguous"),
    ({"compute_hess": True, "hess_out": "read-only"}, ValueError, "writeable"),
    ({"compute_hess": True, "hess_out": "out", "out": "out"}, ValueError, "overlaps out"),
    ({"compute_hess": True, "hess_out": "sample_weight"}, ValueError, "overlaps sample_weight"),
    ({"compute_hess": True, "hess_out": "same-shape", "target": "bad"}, ValueError,
     "class index"),
]


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 2)], ids=str)
@pytest.mark.parametrize("name", ["ce", "focal"])
@pytest.mark.parametrize("extra, error, match", ERRORS, ids=lambda v: str(v)[:40])
def test_errors_write_nothing(extra, error, match, name, shape):
    rng = np.random.default_rng(12)
    x = rng.standard_normal(shape)
    sample_shape = (shape[0],) + shape[2:]
    target = rng.integers(0, 4, sample_shape)
    x_before = x.copy()
    buffers = {
        "same-shape": np.full(shape, 7.0),
        "wrong-shape": np.full(shape[:-1] + (shape[-1] + 1,), 7.0),
        "wrong-dtype": np.full(shape, 7.0, dtype=np.float32),
        "strided": np.full(shape[:-1] + (2 * shape[-1],), 7.0)[..., ::2],
        "read-only": np.full(shape, 7.0),
        "out": np.full(shape, 7.0),
    }
    buffers["read-only"].flags.writeable = False
    sample_weight = np.full(x.size // shape[1] if x.size else 0, 7.0)
    full_weight = np.full(shape, 7.0)   # hess_out overlapping the sample weights
    kwargs = {}
    for key, value in extra.items():
        if key == "target":
            target = target.copy()
            target.reshape(-1)[1] = 9
        elif key == "hess_out" and value == "sample_weight":
            kwargs["sample_weight"] = full_weight.reshape(-1)[:len(sample_weight)].reshape(
                sample_shape)
            kwargs["hess_out"] = full_weight
        elif isinstance(value, str):
            kwargs[key] = buffers[value]
        else:
            kwargs[key] = value
    before = {key: value.copy() for key, value in buffers.items()}
    weight_before = full_weight.copy()
    for module in (fastloss, reference):
        with pytest.raises(error, match=match):
            function(module, name)(x, target, **kwargs)
        np.testing.assert_array_equal(x, x_before)
        for key, value in buffers.items():
            np.testing.assert_array_equal(value, before[key], err_msg=key)
        np.testing.assert_array_equal(full_weight, weight_before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, option", CALLS, ids=option_id)
def test_chunks_of_many_rows(name, option, dtype):
    """(N, C) chunks of rows with few classes hold up to 512 (cross-entropy) / 256 (focal)
    rows: several full chunks and a partial one, with and without compute_hess, the
    losses per row, and lse_out for the cross-entropy, against the reference."""
    rng = np.random.default_rng(21)
    for shape in [(1100, 2), (777, 3), (600, 5), (530, 11)]:
        x, target, kwargs = make(rng, dtype, shape, option)
        where = f"{name} {shape} {option_id(option)}"
        ref = function(reference, name)(x, target, reduction="none", compute_hess=True,
                                        **kwargs)
        for hess in (True, False):
            extra = {}
            if name == "ce" and option.get("_target") != "prob":
                extra["lse_out"] = np.full(shape[0], np.nan, dtype)
            got = function(fastloss, name)(x, target, reduction="none", compute_hess=hess,
                                           **kwargs, **extra)
            assert_close(got.loss, ref.loss, dtype, where)
            assert_close(got.grad, ref.grad, dtype, where)
            if hess:
                assert_close(got.hess, ref.hess, dtype, where)
            if extra:
                z = x if "logit_softcap" not in kwargs else \
                    kwargs["logit_softcap"] * np.tanh(x / kwargs["logit_softcap"])
                z = z.astype(np.float64)
                top = z.max(axis=1, keepdims=True)
                lse = (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]
                assert_close(extra["lse_out"], lse, dtype, where)
        total = function(fastloss, name)(x, target, reduction="sum", compute_grad=False,
                                         **kwargs).loss
        assert_close(total, float(np.sum(ref.loss, dtype=np.float64)), dtype, where)
