"""Class-axis losses (issue 13): K-dimensional inputs of softmax_cross_entropy and
softmax_focal with every option (class weight, ignore_index, label smoothing, probability
targets, sample weights, z-loss, logit soft-capping, lse_out), against PyTorch (the options
written out in torch, tests/cases.py), the NumPy reference and finite differences; the calling
conventions (out=, in place, compute_grad=False, n_threads), nan/inf confinement, every SIMD
level, and every error of API.md with nothing written. multi_margin and
kl_divergence_with_logits run through the shared tests (tests/cases.py); their own errors
are here.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from fastloss import _kernels, reference

from cases import torch, torch_class_axis_ce, torch_focal_kdim

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
# small K-dim shapes: one tile per sample, several tiles (P > tile at C = 600), a trailing
# dimension of 1, K = 3
SHAPES = [(3, 5, 4, 7), (2, 6, 33), (4, 3, 1), (2, 4, 3, 2, 5), (2, 600, 21)]

# option combinations: class weight x ignore_index x label_smoothing x sample_weight x
# z_loss x softcap, probability targets too ("_sw": "sample" (N,) or "full" (N, d1..dK))
from class_axis_options import (CE_OPTIONS, FOCAL_OPTIONS, assert_close, make,  # noqa: E402
                                option_id)


# ---------------------------------------------------------------------------- values

@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("option", CE_OPTIONS, ids=option_id)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cross_entropy_kdim_matches_torch(shape, option, dtype, reduction):
    rng = np.random.default_rng(len(shape) * 10 + shape[1])
    x, target, kwargs = make(rng, dtype, shape, option)
    lse = np.full(x[:, 0].shape, np.nan, dtype) if kwargs.get("logit_softcap") else None
    loss, grad = fastloss.softmax_cross_entropy(x, target, reduction=reduction, lse_out=lse,
                                                **kwargs)
    xt = torch.tensor(x, requires_grad=True)
    expected = torch_class_axis_ce(xt, target, kwargs, reduction)
    expected.sum().backward()
    if reduction == "none":
        assert loss.shape == x[:, 0].shape and loss.dtype == x.dtype
    assert grad.shape == x.shape and grad.dtype == x.dtype
    assert_close(loss, expected.detach().numpy(), dtype, "loss")
    assert_close(grad, xt.grad.numpy(), dtype, "grad")
    if lse is not None:   # the log-sum-exp of the capped logits, ignored samples too
        cap = kwargs["logit_softcap"]
        want = torch.logsumexp(cap * torch.tanh(torch.tensor(x) / cap), dim=1).numpy()
        assert_close(lse, want, dtype, "lse_out")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("option", CE_OPTIONS, ids=option_id)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cross_entropy_kdim_matches_reference(shape, option, dtype):
    rng = np.random.default_rng(7)
    x, target, kwargs = make(rng, dtype, shape, option)
    for reduction in REDUCTIONS:
        lse = np.empty(x[:, 0].shape, dtype)
        lse_ref = np.empty_like(lse)
        got = fastloss.softmax_cross_entropy(x, target, reduction=reduction, lse_out=lse,
                                             **kwargs)
        want = reference.softmax_cross_entropy(x, target, reduction=reduction, lse_out=lse_ref,
                                               **kwargs)
        assert_close(got.loss, want.loss, dtype, f"loss {reduction}")
        assert_close(got.grad, want.grad, dtype, f"grad {reduction}")
        assert_close(lse, lse_ref, dtype, "lse_out")


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("option", FOCAL_OPTIONS, ids=option_id)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_focal_kdim_matches_torch_and_reference(shape, option, dtype, reduction):
    rng = np.random.default_rng(11)
    x, target, kwargs = make(rng, dtype, shape, option)
    loss, grad = fastloss.softmax_focal(x, target, reduction=reduction, **kwargs)
    xt = torch.tensor(x, requires_grad=True)
    expected = torch_focal_kdim(xt, target, kwargs, reduction)
    expected.sum().backward()
    assert_close(loss, expected.detach().numpy(), dtype, "loss vs torch")
    assert_close(grad, xt.grad.numpy(), dtype, "grad vs torch")
    ref = reference.softmax_focal(x, target, reduction=reduction, **kwargs)
    assert_close(loss, ref.loss, dtype, "loss vs reference")
    assert_close(grad, ref.grad, dtype, "grad vs reference")


def test_kdim_is_the_rows_of_the_moved_axis():
    """K-dim logits are N * d1 * ... * dK samples: the same numbers as the (N, C) kernel on
    the moved axis, sample weights as the (N,) ones repeated."""
    rng = np.random.default_rng(3)
    x, target, kwargs = make(rng, np.float64, (3, 7, 5, 4), {"weight": True,
                                                             "label_smoothing": 0.1})
    rows = np.moveaxis(x, 1, -1).reshape(-1, 7)
    kdim = fastloss.softmax_cross_entropy(x, target, reduction="none", **kwargs)
    flat = fastloss.softmax_cross_entropy(rows, target.reshape(-1), reduction="none", **kwargs)
    np.testing.assert_allclose(kdim.loss.reshape(-1), flat.loss, rtol=1e-14, atol=1e-15)
    # (the two layouts add a row's exps in different orders: a few ulp of 1 where the
    # label's entry S p_y - a_y cancels)
    np.testing.assert_allclose(np.moveaxis(kdim.grad, 1, -1).reshape(-1, 7), flat.grad,
                               rtol=1e-14, atol=1e-15)
    # gamma = 0 focal is the cross-entropy
    focal = fastloss.softmax_focal(x, target, gamma=0.0)
    np.testing.assert_allclose(focal.loss, fastloss.softmax_cross_entropy(x, target).loss,
                               rtol=1e-14)


@pytest.mark.parametrize("name, option", [("ce", o) for o in CE_OPTIONS[1:]]
                         + [("focal", o) for o in FOCAL_OPTIONS[2:]],
                         ids=lambda v: v if isinstance(v, str) else option_id(v))
def test_kdim_gradient_matches_finite_differences(name, option):
    rng = np.random.default_rng(5)
    x, target, kwargs = make(rng, np.float64, (2, 3, 2, 3), option, scale=1.5)
    fn = fastloss.softmax_cross_entropy if name == "ce" else fastloss.softmax_focal
    for reduction in ("mean", "none"):
        _, grad = fn(x, target, reduction=reduction, **kwargs)
        numeric = np.empty_like(x)
        h = 1e-6
        for index in np.ndindex(x.shape):
            up, down = x.copy(), x.copy()
            up[index] += h
            down[index] -= h
            numeric[index] = (np.sum(fn(up, target, reduction=reduction, compute_grad=False,
                                        **kwargs).loss)
                              - np.sum(fn(down, target, reduction=reduction,
                                          compute_grad=False, **kwargs).loss)) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_huge_logits_keep_their_digits():
    """float32 logits like 1e4 + noise: judged against the float64 answer, relative to the
    differences between logits (API.md, edge cases). (Not with a cap: c tanh(x / c) is
    rounded to the logits' dtype, as PyTorch's is, which costs an ulp of 1e4 by itself.)"""
    rng = np.random.default_rng(8)
    x64 = 1e4 + rng.standard_normal((3, 6, 5, 7)) * 2
    x = x64.astype(np.float32)
    target = rng.integers(0, 6, (3, 5, 7))
    for kwargs in ({}, {"label_smoothing": 0.1, "z_loss": 1e-9, "_sw": "sample"}):
        if kwargs.pop("_sw", None):
            kwargs["sample_weight"] = rng.uniform(0, 2, 3)
        got = fastloss.softmax_cross_entropy(x, target, reduction="none", **kwargs)
        want = fastloss.softmax_cross_entropy(x.astype(np.float64), target, reduction="none",
                                              **kwargs)
        np.testing.assert_allclose(got.loss, want.loss, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got.grad, want.grad, rtol=1e-4, atol=1e-6)
    got = fastloss.softmax_focal(x, target, reduction="none")
    want = fastloss.softmax_focal(x.astype(np.float64), target, reduction="none")
    np.testing.assert_allclose(got.loss, want.loss, rtol=1e-4, atol=1e-5)


def test_softcap_saturates_and_zloss_uses_the_capped_lse():
    """Logits far beyond the cap: z = +-c exactly, the cap's derivative is 0 there (no
    gradient reaches them), and the z-loss is that of the capped lse."""
    x = np.array([[1e6, -1e6, 0.5, 0.0]], dtype=np.float32)
    cap = 2.0
    lse = np.empty(1, np.float32)
    loss, grad = fastloss.softmax_cross_entropy(x, np.array([2]), logit_softcap=cap,
                                                z_loss=0.1, lse_out=lse)
    z = np.array([2.0, -2.0, 2.0 * np.tanh(0.25), 0.0])
    want_lse = np.log(np.exp(z).sum())
    np.testing.assert_allclose(lse[0], want_lse, rtol=1e-6)
    np.testing.assert_allclose(loss, want_lse - z[2] + 0.1 * want_lse ** 2, rtol=1e-6)
    assert grad[0, 0] == 0 and grad[0, 1] == 0 and grad[0, 2] != 0


# ------------------------------------------------------------------------ conventions

CONVENTION_CALLS = [
    ("ce", {"weight": True, "ignore_index": 1, "label_smoothing": 0.1, "_sw": "full",
            "z_loss": 0.01, "logit_softcap": 3.0}),
    ("ce", {"_target": "prob", "_sw": "sample"}),
    ("ce", {}),
    ("focal", {"_alpha": True, "ignore_index": 1, "_sw": "full"}),
]


def call(name, x, target, kwargs, **extra):
    fn = fastloss.softmax_cross_entropy if name == "ce" else fastloss.softmax_focal
    return fn(x, target, **kwargs, **extra)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, option", CONVENTION_CALLS,
                         ids=lambda v: v if isinstance(v, str) else option_id(v))
def test_out_in_place_compute_grad_and_threads(name, option, dtype):
    rng = np.random.default_rng(12)
    shape = (4, 7, 50, 60)   # above the serial threshold: runs in parallel
    x, target, kwargs = make(rng, dtype, shape, option)
    assert x.size > _kernels.SERIAL_THRESHOLD_ELEMENTS
    results = {}
    for n_threads in (1, 2, 3):
        for reduction in REDUCTIONS:
            results[n_threads, reduction] = call(name, x, target, kwargs, reduction=reduction,
                                                 n_threads=n_threads)
    for reduction in REDUCTIONS:
        first = results[1, reduction]
        for n_threads in (2, 3):
            other = results[n_threads, reduction]
            assert np.array_equal(np.asarray(other.loss), np.asarray(first.loss))
            np.testing.assert_array_equal(other.grad, first.grad)
        loss_only = call(name, x, target, kwargs, reduction=reduction, compute_grad=False)
        assert loss_only.grad is None
        np.testing.assert_array_equal(loss_only.loss, first.loss)
    expected = results[2, "mean"]
    out = np.full_like(x, np.nan)
    loss, grad = call(name, x, target, kwargs, out=out)
    assert grad is out and loss == expected.loss
    np.testing.assert_array_equal(out, expected.grad)
    in_place = x.copy()
    loss, grad = call(name, in_place, target, kwargs, out=in_place)
    assert grad is in_place and loss == expected.loss
    np.testing.assert_array_equal(in_place, expected.grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_kdim_inputs(dtype):
    rng = np.random.default_rng(13)
    x, target, kwargs = make(rng, dtype, (3, 5, 6, 4), CE_OPTIONS[7])
    expected = fastloss.softmax_cross_entropy(x, target, reduction="none", **kwargs)
    views = [np.asfortranarray(x), np.moveaxis(np.moveaxis(x, 1, -1).copy(), -1, 1)]
    wide = np.zeros(x.shape[:-1] + (8,), dtype)
    wide[..., ::2] = x
    views.append(wide[..., ::2])
    for view in views:
        assert not view.flags.c_contiguous
        got = fastloss.softmax_cross_entropy(view, np.asfortranarray(target), reduction="none",
                                             **kwargs)
        np.testing.assert_array_equal(got.loss, expected.loss)
        np.testing.assert_array_equal(got.grad, expected.grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_kdim_inputs(dtype):
    for shape in [(0, 4, 3, 5), (2, 4, 0, 5)]:
        x = np.zeros(shape, dtype)
        target = np.zeros((shape[0],) + shape[2:], np.int64)
        for fn in (fastloss.softmax_cross_entropy, fastloss.softmax_focal):
            mean = fn(x, target)
            assert np.isnan(mean.loss) and mean.grad.shape == shape
            assert fn(x, target, reduction="sum").loss == 0.0
            assert fn(x, target, reduction="none").loss.shape == target.shape


def test_every_target_ignored_and_zero_weights():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    target = np.full((2, 4, 5), -100)
    for fn in (fastloss.softmax_cross_entropy, fastloss.softmax_focal):
        loss, grad = fn(x, target)
        assert np.isnan(loss) and not grad.any()
    target = np.zeros((2, 4, 5), np.int64)
    loss, grad = fastloss.softmax_cross_entropy(x, target, sample_weight=np.zeros(2))
    assert np.isnan(loss)   # a zero denominator, as PyTorch's zero class weights


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name, option", CONVENTION_CALLS,
                         ids=lambda v: v if isinstance(v, str) else option_id(v))
def test_nan_and_inf_stay_in_their_sample(name, option, bad_value):
    rng = np.random.default_rng(14)
    x, target, kwargs = make(rng, np.float32, (3, 6, 5, 40), option)
    clean = call(name, x, target, kwargs, reduction="none")
    x_bad = x.copy()
    x_bad[1, 2, 3, 17] = bad_value
    loss, grad = call(name, x_bad, target, kwargs, reduction="none")
    others = np.ones(loss.shape, dtype=bool)
    others[1, 3, 17] = False
    np.testing.assert_array_equal(loss[others], clean.loss[others])
    np.testing.assert_array_equal(np.moveaxis(grad, 1, -1)[others],
                                  np.moveaxis(clean.grad, 1, -1)[others])
    ref = (reference.softmax_cross_entropy if name == "ce" else reference.softmax_focal)(
        x_bad, target, reduction="none", **kwargs)
    assert_close(loss[1, 3, 17], ref.loss[1, 3, 17], np.float32)
    assert_close(grad[1, :, 3, 17], ref.grad[1, :, 3, 17], np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_simd_level_matches_reference(dtype, simd_level):
    """Tiles of every width (C = 3: 512 positions; C = 40: 96; C = 700: 16) with a partial
    last tile, and the (N, C) row path with the new options, at each level."""
    rng = np.random.default_rng(15)
    calls = [("ce", (2, 3, 3, 201), CE_OPTIONS[7]), ("ce", (2, 40, 197), CE_OPTIONS[9]),
             ("ce", (2, 700, 37), CE_OPTIONS[4]), ("focal", (2, 3, 700), FOCAL_OPTIONS[3]),
             ("focal", (2, 40, 197), FOCAL_OPTIONS[4]), ("ce", (50, 300), CE_OPTIONS[7]),
             ("ce", (50, 9), CE_OPTIONS[9]), ("focal", (50, 300), FOCAL_OPTIONS[3])]
    for name, shape, option in calls:
        x, target, kwargs = make(rng, dtype, shape, option)
        got = call(name, x, target, kwargs, reduction="none")
        ref = (reference.softmax_cross_entropy if name == "ce" else reference.softmax_focal)(
            x, target, reduction="none", **kwargs)
        where = f"{name} {shape} {option_id(option)} at {simd_level}"
        assert_close(got.loss, ref.loss, dtype, where)
        assert_close(got.grad, ref.grad, dtype, where)
        in_place = x.copy()
        call(name, in_place, target, kwargs, reduction="none", out=in_place)
        np.testing.assert_array_equal(in_place, got.grad, err_msg=where)


def test_multi_margin_and_distill_kl_at_every_simd_level(simd_level):
    rng = np.random.default_rng(16)
    for dtype in DTYPES:
        x = rng.standard_normal((40, 37)).astype(dtype)
        y = rng.integers(0, 37, 40)
        for p in (1, 2):
            got = fastloss.multi_margin(x, y, p=p, margin=0.8, reduction="none")
            ref = reference.multi_margin(x, y, p=p, margin=0.8, reduction="none")
            assert_close(got.loss, ref.loss, dtype)
            assert_close(got.grad, ref.grad, dtype)
        t = rng.standard_normal((40, 37)).astype(dtype) * 2
        got = fastloss.kl_divergence_with_logits(x, t, temperature=2.0, reduction="none")
        ref = reference.kl_divergence_with_logits(x, t, temperature=2.0, reduction="none")
        assert_close(got.loss, ref.loss, dtype)
        assert_close(got.grad, ref.grad, dtype)


def test_distill_kl_of_equal_rows_is_zero():
    x = np.random.default_rng(1).standard_normal((5, 9)).astype(np.float32) * 10
    loss, grad = fastloss.kl_divergence_with_logits(x, x.copy(), temperature=3.0)
    assert loss == 0.0 and np.abs(grad).max() < 1e-7


# ----------------------------------------------------------------------------- errors

def error_calls():
    """(description, function, args, kwargs, error, message pattern) of API.md's errors."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    y = rng.integers(0, 4, (3, 5))
    x2 = rng.standard_normal((3, 4)).astype(np.float32)
    y2 = rng.integers(0, 4, 3)
    ce, focal = fastloss.softmax_cross_entropy, fastloss.softmax_focal
    mm, kl = fastloss.multi_margin, fastloss.kl_divergence_with_logits
    bad_index = y.copy()
    bad_index[1, 3] = 4
    return [
        ("target sample shape", ce, (x, y[:, :4]), {}, ValueError, "target must have shape"),
        ("target class index", ce, (x, bad_index), {}, ValueError,
         r"class index 4 at position \(1, 3\)"),
        ("focal target class index", focal, (x, bad_index), {}, ValueError,
         r"class index 4 at position \(1, 3\)"),
        ("float index target", ce, (x, y.astype(np.float32)), {}, TypeError, "integer"),
        ("prob target dtype", ce, (x, np.ones(x.shape, np.int64)), {}, TypeError,
         "floating"),
        ("(N, 1) target of 2-D logits", ce, (x2, y2[:, None]), {"z_loss": 0.1}, ValueError,
         r"target.ravel\(\)"),
        ("sample_weight negative", ce, (x, y), {"sample_weight": np.array([1.0, -1.0, 1.0])},
         ValueError, "non-negative"),
        ("sample_weight nan", focal, (x, y), {"sample_weight": np.array([1.0, np.nan, 1.0])},
         ValueError, "non-negative"),
        ("sample_weight shape", ce, (x, y), {"sample_weight": np.ones(5)}, ValueError,
         "sample_weight must have shape"),
        ("z_loss < 0", ce, (x, y), {"z_loss": -0.1}, ValueError, "z_loss"),
        ("logit_softcap 0", ce, (x, y), {"logit_softcap": 0.0}, ValueError, "logit_softcap"),
        ("logit_softcap < 0", ce, (x2, y2), {"logit_softcap": -1.0}, ValueError,
         "logit_softcap"),
        ("lse_out shape", ce, (x, y), {"lse_out": np.empty((3, 4), np.float32)}, ValueError,
         "lse_out must have shape"),
        ("lse_out dtype", ce, (x, y), {"lse_out": np.empty((3, 5))}, ValueError,
         "lse_out must have shape"),
        ("lse_out read-only", ce, (x, y), {"lse_out": np.empty((3, 5), np.float32)},
         ValueError, "read-only"),
        ("lse_out not contiguous", ce, (x, y), {"lse_out": np.empty((3, 10), np.float32)[:, ::2]},
         ValueError, "C-contiguous"),
        ("lse_out over the logits", ce, (x, y), {"lse_out": x[:, 0]}, ValueError, None),
        ("out wrong shape", ce, (x, y), {"out": np.empty((3, 4), np.float32)}, ValueError,
         "out must have shape"),
        ("out and compute_grad", ce, (x, y), {"out": np.empty_like(x), "compute_grad": False},
         ValueError, "compute_grad"),
        ("1-D logits", ce, (x[0, 0], y[0]), {"z_loss": 0.1}, ValueError, "logits must be"),
        ("int logits", ce, (x.astype(np.int32), y), {}, TypeError, "float32 or float64"),
        ("ignore_index with probabilities", ce, (x, np.ones_like(x)), {"ignore_index": 1},
         ValueError, "ignore_index"),
        ("multi_margin p", mm, (x2, y2), {"p": 3}, ValueError, "p must be 1 or 2"),
        ("multi_margin index", mm, (x2, np.array([0, 4, 1])), {}, ValueError,
         "class index 4 at position 1"),
        ("multi_margin (N, 1)", mm, (x2, y2[:, None]), {}, ValueError, r"target.ravel\(\)"),
        ("multi_margin weight", mm, (x2, y2), {"weight": np.ones(3)}, ValueError,
         "weight must have shape"),
        ("multi_margin batchmean", mm, (x2, y2), {"reduction": "batchmean"}, ValueError,
         "reduction"),
        ("kl temperature 0", kl, (x2, x2.copy()), {"temperature": 0.0}, ValueError,
         "temperature"),
        ("kl temperature < 0", kl, (x2, x2.copy()), {"temperature": -2.0}, ValueError,
         "temperature"),
        ("kl shapes", kl, (x2, x2[:2].copy()), {}, ValueError, "target_logits must have shape"),
        ("kl batchmean", kl, (x2, x2.copy()), {"reduction": "batchmean"}, ValueError,
         "reduction"),
        ("kl out overlapping the teacher", kl, (x2, x2.copy()), {}, ValueError, "overlaps"),
    ]


@pytest.mark.parametrize("case", error_calls(), ids=lambda c: c[0])
def test_errors_write_nothing(case):
    description, fn, args, kwargs, error, pattern = case
    args = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
    kwargs = dict(kwargs)
    if description == "lse_out read-only":
        kwargs["lse_out"].flags.writeable = False
    if description == "lse_out over the logits":
        kwargs["lse_out"] = args[0][:, 0]
    if description == "kl out overlapping the teacher":
        kwargs["out"] = args[1]
    sentinel = {}
    for key in ("out", "lse_out"):
        if isinstance(kwargs.get(key), np.ndarray) and kwargs[key].flags.writeable:
            kwargs[key][...] = 7
            sentinel[key] = kwargs[key].copy()
    before = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    with pytest.raises(error, match=pattern):
        fn(*args, **kwargs)
    for a, b in zip(args, before):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
    for key, value in sentinel.items():
        np.testing.assert_array_equal(kwargs[key], value)


def test_n_c_1_logits_with_an_n_1_target_are_kdim():
    """(N, C, 1) logits with an (N, 1) target: a valid K-dim input (K = 1, d1 = 1)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4, 1))
    y = rng.integers(0, 4, (6, 1))
    loss, grad = fastloss.softmax_cross_entropy(x, y, reduction="none")
    flat = fastloss.softmax_cross_entropy(x[:, :, 0], y[:, 0], reduction="none")
    assert loss.shape == (6, 1)
    np.testing.assert_allclose(loss[:, 0], flat.loss, rtol=1e-14)
    np.testing.assert_allclose(grad[:, :, 0], flat.grad, rtol=1e-14, atol=1e-17)
