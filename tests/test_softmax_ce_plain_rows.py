"""softmax_cross_entropy's plain chunk layout for rows of several vectors (class indices, no
label smoothing, 32 <= C <= 100, and on AVX2 / AVX-512 up to 256 float32 / 128 float64
classes for logits of at most 8 MiB; issue 16): the row maxima in the ISA's own vectors and over
two accumulators, the exp lane sums fused into the exp pass, the lane partials of a chunk's
last rows (past the row tree's whole groups of rows) and the gradient write prefetch. Checked
at every SIMD level, for class counts on both sides of the vector widths and of the layout's
bounds, row counts that leave partial chunks and partial groups of rows, against the
reference, bitwise across thread counts, and with nan / -inf rows confined to their rows."""

import numpy as np
import pytest

import fastloss
from fastloss import _kernels, reference

CLASSES = [32, 33, 40, 47, 48, 63, 64, 65, 72, 80, 96, 99, 100,
           # past 100: the chunk layout on AVX2 / AVX-512 up to FL_SUM_BLOCK (256 float32, 128
           # float64) for logits of at most 8 MiB, the row layout otherwise
           101, 127, 128, 129, 160, 200, 255, 256, 257]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_of_several_vectors_match_reference(dtype, simd_level):
    rng = np.random.default_rng(16)
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    for n_classes in CLASSES:
        # 403 rows: chunks of 2048 // C rows, the last chunk of each block partial; rows
        # of widely spread logits (exps down to underflow) among ordinary ones
        x = (rng.standard_normal((403, n_classes)) * 3).astype(dtype)
        x[::9] *= 30
        x[4, :: 3] = -np.inf
        y = rng.integers(0, n_classes, 403)
        y[::11] = -100
        w = (rng.random(n_classes) + 0.5).astype(dtype)
        for kwargs in ({}, {"weight": w}):
            loss, grad = fastloss.softmax_cross_entropy(x, y, reduction="none", **kwargs)
            ref_loss, ref_grad = reference.softmax_cross_entropy(
                x.astype(np.float64), y, reduction="none", **kwargs)
            where = f"C={n_classes} {simd_level} {dtype.__name__} {sorted(kwargs)}"
            np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=rtol, err_msg=where)
            np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=rtol * 1e-2,
                                       err_msg=where)
            one = fastloss.softmax_cross_entropy(x, y, n_threads=1, **kwargs)
            two = fastloss.softmax_cross_entropy(x, y, n_threads=2, **kwargs)
            assert one.loss == two.loss, where
            np.testing.assert_array_equal(one.grad, two.grad, err_msg=where)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_stays_in_its_row(dtype, simd_level):
    """A nan anywhere in a row (first vector, middle, the last partial vector) makes that
    row's loss and gradient nan and leaves the other rows as without it."""
    rng = np.random.default_rng(17)
    for n_classes in (33, 64, 100, 128, 200):
        x = (rng.standard_normal((150, n_classes)) * 3).astype(dtype)
        y = rng.integers(0, n_classes, 150)
        clean_loss, clean_grad = fastloss.softmax_cross_entropy(x, y, reduction="none")
        bad = {3: 0, 40: n_classes // 2, 77: n_classes - 1, 149: 17}
        for row, col in bad.items():
            x[row, col] = np.nan
        loss, grad = fastloss.softmax_cross_entropy(x, y, reduction="none")
        rows = np.array(sorted(bad))
        others = np.setdiff1d(np.arange(150), rows)
        assert np.isnan(loss[rows]).all(), n_classes
        assert np.isnan(grad[rows]).all(), n_classes
        np.testing.assert_array_equal(loss[others], clean_loss[others])
        np.testing.assert_array_equal(grad[others], clean_grad[others])


WIDE_BYTES = _kernels.SOFTMAX_PLAIN_WIDE_BYTES   # the bound the kernels were built with


@pytest.mark.parametrize("dtype, n_classes", [(np.float32, 101), (np.float32, 256),
                                              (np.float64, 128)])
def test_both_sides_of_the_size_bound(dtype, n_classes, simd_level):
    """The wide chunk layout's byte bound: the largest call that takes it (logits of at most
    SOFTMAX_PLAIN_WIDE_BYTES, 8 MiB) and one row more (the row layout) give the rows they
    share the same values to the rounding of the row sums' order, both match the reference,
    and each is bitwise the same on one and two threads."""
    rng = np.random.default_rng(18)
    n_rows = WIDE_BYTES // (n_classes * np.dtype(dtype).itemsize)
    x = (rng.standard_normal((n_rows + 1, n_classes)) * 3).astype(dtype)
    x[::7] *= 20
    y = rng.integers(0, n_classes, n_rows + 1)
    y[::13] = -100
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    close = 1e-6 if dtype == np.float32 else 1e-13   # another order of the row sums
    inside = fastloss.softmax_cross_entropy(x[:n_rows], y[:n_rows], reduction="none")
    outside = fastloss.softmax_cross_entropy(x, y, reduction="none")
    np.testing.assert_allclose(inside.loss, outside.loss[:n_rows], rtol=close, atol=close)
    np.testing.assert_allclose(inside.grad, outside.grad[:n_rows], rtol=close, atol=close)
    rows = np.arange(0, n_rows + 1, 97)   # every 97th row against the float64 reference
    ref_loss, ref_grad = reference.softmax_cross_entropy(x[rows].astype(np.float64), y[rows],
                                                         reduction="none")
    kept = rows < n_rows
    for result, where in ((inside, kept), (outside, slice(None))):
        np.testing.assert_allclose(result.loss[rows[where]], ref_loss[where], rtol=rtol,
                                   atol=rtol)
        np.testing.assert_allclose(result.grad[rows[where]], ref_grad[where], rtol=rtol,
                                   atol=rtol * 1e-2)
    for size in (n_rows, n_rows + 1):
        one = fastloss.softmax_cross_entropy(x[:size], y[:size], n_threads=1)
        two = fastloss.softmax_cross_entropy(x[:size], y[:size], n_threads=2)
        assert one.loss == two.loss
        np.testing.assert_array_equal(one.grad, two.grad)
