"""softmax_cross_entropy's plain chunk layout for rows of several vectors (class indices, no
label smoothing, 32 <= C <= 100; issue 16): the row maxima in the ISA's own vectors and over
two accumulators, the exp lane sums fused into the exp pass, the lane partials of a chunk's
last rows (past the row tree's whole groups of rows) and the gradient write prefetch. Checked
at every SIMD level, for class counts on both sides of the vector widths, row counts that
leave partial chunks and partial groups of rows, against the reference, bitwise across
thread counts, and with nan / -inf rows confined to their rows."""

import numpy as np
import pytest

import fastloss
from fastloss import reference

CLASSES = [32, 33, 40, 47, 48, 63, 64, 65, 72, 80, 96, 99, 100]


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
    for n_classes in (33, 64, 100):
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
