"""dice, jaccard, tversky with activation="softmax" and a float target: the one-hot labels.

The fused softmax layout (batch=False, with the gradient, squared=False, AVX-512) checks in
its sums pass whether each pixel's C target entries are exactly one 1 and C - 1 times +0
(bit patterns), records the 1's class, and then reads those labels instead of the target
rows (fl_overlap.inc, "One-hot float targets"): in the sums pass for the chunks up to the
first that is not all one-hot, in the gradient pass for a sample that is. Any other pixel
(a soft value, two ones, no one, -0, nan, inf) sends its chunk, the chunks after it and its
sample back to the target rows.

Checked here at every SIMD level (the labels are used on AVX-512; the other levels read the
target rows, and must give the same results), float32 and float64: a one-hot float target
gives the same bits as the same target with a -0 among the zeros of one pixel in every
chunk (the same values, read from the target rows throughout), and the same loss as the
call without the gradient (which reads the target rows); it matches the class indices and
the reference; targets that are one-hot except for one pixel (in the first chunk, a middle
one or the partial last one) match the NumPy reference, at that pixel tightly, and leave
the other sample's bits alone.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from fastloss import reference

from test_overlap import option_id

DTYPES = [np.float32, np.float64]
KINDS = ["dice", "jaccard", "tversky"]
# C = 21: chunks of 256 pixels (589 = 256 + 256 + 77); C = 70: more classes than the sums'
# lanes (64), chunks of 64 pixels (117 = 64 + 53)
SHAPES = [pytest.param((2, 21, 19, 31), id="C21"), pytest.param((2, 70, 9, 13), id="C70")]
OPTIONS = [
    {},
    {"squared": True},
    {"include_background": False, "smooth": 0.5},
    {"weight": True, "reduction": "sum"},
]


def kind_option_params(options):
    """The (kind, option) parameters over KINDS and `options`, named kind-option (tversky has
    no squared)"""
    return [pytest.param(kind, option, id=f"{kind}-{option_id(option)}")
            for kind in KINDS for option in options
            if not (kind == "tversky" and option.get("squared"))]


def make(rng, dtype, shape, kind, option):
    n, c = shape[:2]
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    index = rng.integers(0, c, (n,) + shape[2:])
    onehot = np.moveaxis(np.eye(c, dtype=dtype)[index], -1, 1).copy()
    kwargs = {"activation": "softmax", "reduction": option.get("reduction", "none")}
    for key in ("include_background", "smooth"):
        if key in option:
            kwargs[key] = option[key]
    if kind == "tversky":
        kwargs.update(alpha=0.3, beta=0.8)
    else:
        kwargs["squared"] = option.get("squared", False)
        if option.get("weight"):
            kwargs["weight"] = rng.uniform(0.5, 2.0, c)
    return x, onehot, index, kwargs


def negative_zero_in_every_chunk(onehot, shape):
    """onehot with one entry of one pixel per 64 set to -0: no chunk is one-hot, the values
    are the same"""
    n, c = shape[:2]
    t = onehot.reshape(n, c, -1).copy()
    for k in range(0, t.shape[2], 64):
        for i in range(n):
            other = (int(np.argmax(t[i, :, k])) + 1) % c
            t[i, other, k] = -0.0
    return t.reshape(shape)


@pytest.mark.parametrize("kind, option", kind_option_params(OPTIONS))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_onehot_labels_give_the_target_rows_bits(kind, option, shape, dtype, simd_level):
    assert fastloss.simd_level() == simd_level
    rng = np.random.default_rng(21)
    x, onehot, index, kwargs = make(rng, dtype, shape, kind, option)
    fn = getattr(fastloss, kind)
    by_labels = fn(x, onehot, **kwargs)
    by_rows = fn(x, negative_zero_in_every_chunk(onehot, shape), **kwargs)
    np.testing.assert_array_equal(by_labels.loss, by_rows.loss)
    np.testing.assert_array_equal(by_labels.grad, by_rows.grad)
    # the loss alone (the sums pass without labels) is the same loss
    np.testing.assert_array_equal(fn(x, onehot, compute_grad=False, **kwargs).loss,
                                  by_labels.loss)
    # out= gets the same gradient
    out = np.full_like(x, np.nan)
    again = fn(x, onehot, out=out, **kwargs)
    assert again.grad is out
    np.testing.assert_array_equal(out, by_labels.grad)
    # the class indices and the reference agree (the sums may round differently)
    rtol = 2e-5 if dtype == np.float32 else 1e-10
    by_index = fn(x, index, **kwargs)
    if simd_level != "baseline" and not option.get("squared"):
        # with FMA both target forms give t the same values in the same operations, and on
        # AVX-512 both reach the labels path (the indices copied as labels): the same bits
        np.testing.assert_array_equal(by_index.loss, by_labels.loss)
        np.testing.assert_array_equal(by_index.grad, by_labels.grad)
    np.testing.assert_allclose(by_labels.loss, by_index.loss, rtol=rtol)
    np.testing.assert_allclose(by_labels.grad, by_index.grad, rtol=rtol, atol=rtol * 1e-3)
    ref_loss, ref_grad = getattr(reference, kind)(x, onehot, **kwargs)
    np.testing.assert_allclose(by_labels.loss, ref_loss, rtol=rtol)
    np.testing.assert_allclose(by_labels.grad, ref_grad, rtol=rtol * 10, atol=rtol * 1e-3)


def _perturb(target, how, sample, pixel):
    """target with one pixel of one sample no longer one-hot (or, for "negative zero", the
    same values with another bit pattern)"""
    t = target.copy()
    col = t[sample, :, pixel]
    hot = int(np.argmax(col))
    other = (hot + 1) % col.size
    if how == "soft":
        col[hot], col[other] = 0.75, 0.25
    elif how == "two ones":
        col[other] = 1.0
    elif how == "no one":
        col[hot] = 0.0
    elif how == "almost one":
        col[hot] = np.nextafter(col.dtype.type(1), col.dtype.type(0))
    elif how == "tiny":
        col[other] = np.finfo(col.dtype).smallest_subnormal
    elif how == "negative zero":
        col[other] = -0.0
    elif how == "nan":
        col[other] = np.nan
    elif how == "inf":
        col[other] = np.inf
    t[sample, :, pixel] = col
    return t


PERTURBATIONS = ["soft", "two ones", "no one", "almost one", "tiny", "negative zero", "nan",
                 "inf"]


@pytest.mark.parametrize("how", PERTURBATIONS)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_pixel_not_onehot(how, where, shape, dtype, simd_level):
    assert fastloss.simd_level() == simd_level
    rng = np.random.default_rng(22)
    n, c = shape[:2]
    x, onehot, index, kwargs = make(rng, dtype, shape, "dice", {})
    flat = (n, c, -1)
    pixels = int(np.prod(shape[2:]))
    pixel = {"first": 3, "middle": pixels // 2, "last": pixels - 2}[where]
    target = _perturb(onehot.reshape(flat), how, 1, pixel).reshape(shape)
    loss, grad = fastloss.dice(x, target, **kwargs)
    ref_loss, ref_grad = reference.dice(x, target, **kwargs)
    rtol = 2e-5 if dtype == np.float32 else 1e-10
    if how in ("nan", "inf"):
        # nan stays in sample 1 (as in the reference); sample 0 keeps its labels and values
        assert np.isnan(grad[1]).any()
        np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=rtol * 1e-3, equal_nan=True)
        np.testing.assert_allclose(grad, ref_grad, rtol=rtol * 10, atol=rtol * 1e-3,
                                   equal_nan=True)
        np.testing.assert_array_equal(grad[0], fastloss.dice(x, onehot, **kwargs).grad[0])
        return
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=rtol * 1e-3)
    np.testing.assert_allclose(grad, ref_grad, rtol=rtol * 10, atol=rtol * 1e-3)
    # the perturbed pixel's gradient, relative to its own size
    at = (1, slice(None)) + np.unravel_index(pixel, shape[2:])
    np.testing.assert_allclose(grad[at], ref_grad[at], rtol=rtol * 10,
                               atol=rtol * 1e-2 * np.abs(ref_grad[at]).max())
    # the untouched sample keeps the one-hot target's bits
    by_labels = fastloss.dice(x, onehot, **kwargs)
    np.testing.assert_array_equal(grad[0], by_labels.grad[0])
    np.testing.assert_array_equal(loss[0], by_labels.loss[0])
    if how == "negative zero":   # the same values: the same bits through the target rows
        np.testing.assert_array_equal(grad, by_labels.grad)
        np.testing.assert_array_equal(loss, by_labels.loss)


@pytest.mark.parametrize("dtype", DTYPES)
def test_onehot_labels_in_place_and_threads(dtype):
    """The gradient written over the input, and 1, 2, 3 threads: the same bits."""
    rng = np.random.default_rng(23)
    x, onehot, index, kwargs = make(rng, dtype, (5, 21, 17, 23), "dice", {})
    expected = fastloss.dice(x, negative_zero_in_every_chunk(onehot, x.shape), **kwargs)
    for threads in (1, 2, 3):
        got = fastloss.dice(x, onehot, n_threads=threads, **kwargs)
        np.testing.assert_array_equal(got.grad, expected.grad)
        np.testing.assert_array_equal(got.loss, expected.loss)
    y = x.copy()
    got = fastloss.dice(y, onehot, out=y, **kwargs)
    np.testing.assert_array_equal(y, expected.grad)
    np.testing.assert_array_equal(got.loss, expected.loss)
