"""linear_cross_entropy's vocabulary-tile sweep (fastloss._kernels.lce_sweep): with tiles of
16 classes (TILE_BYTES shrunk), so that small problems have several tiles, a last partial
tile, fewer or more tiles than PARTS, and several chunks. Against PyTorch (every CE option),
against fastloss.softmax_cross_entropy of the full logits, bitwise the same at any thread
count, and the sweep itself against NumPy."""

import numpy as np
import pytest

import fastloss
from fastloss import _kernels, _linear_ce

from test_linear_cross_entropy import (DTYPES, OPTIONS, REDUCTIONS, assert_result_close,
                                       assert_same_bits, make_inputs, needs_torch, options_for,
                                       torch_linear_ce)

TILE = 16


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    """Tiles of 16 classes whatever D and the dtype (tile_size's floor)."""
    monkeypatch.setattr(_linear_ce, "TILE_BYTES", 1)
    assert _linear_ce.tile_size(1000, 8, 4) == TILE


# V = 203: 13 tiles (the last of 11 classes), more than PARTS = 8 (parts of 1 and 2 tiles)
N, D, V = 41, 6, 203


@needs_torch
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_tiled_matches_torch(dtype, option, reduction, with_bias):
    hidden, weight, bias, target = make_inputs(
        dtype, N, D, V, seed=1, probabilities=option == "probabilities",
        ignore_index=OPTIONS[option].get("ignore_index", -100))
    bias = bias if with_bias else None
    options = options_for(option, dtype, V)
    result = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=9,
                                           reduction=reduction, **options)
    expected = torch_linear_ce(hidden, weight, target, bias=bias, reduction=reduction, **options)
    assert_result_close(result, *expected, dtype, bias=with_bias)


# (V, chunk_size): one tile smaller than 16, exactly one tile, one class over a tile, fewer
# tiles than parts, as many, more with a partial last tile; chunks of 1 row, not dividing N,
# N - 1, N, larger than N
SHAPES = [(5, 7), (16, 41), (17, 1), (50, 13), (128, 40), (203, 41), (203, 100)]


@pytest.mark.parametrize("option", ["plain", "ignore_index", "label_smoothing", "class_weight",
                                    "z_loss", "logit_softcap", "everything", "probabilities"])
@pytest.mark.parametrize("v, chunk_size", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_tiled_equals_softmax_cross_entropy_of_full_logits(dtype, v, chunk_size, option):
    """Every tile/chunk edge case and CE option: the result is the full-logits
    softmax_cross_entropy and its chain rule, to float rounding."""
    hidden, weight, bias, target = make_inputs(
        dtype, N, D, v, seed=2, probabilities=option == "probabilities",
        ignore_index=OPTIONS[option].get("ignore_index", -100))
    options = options_for(option, dtype, v)
    logits = hidden @ weight.T + bias
    ce_options = {("weight" if k == "class_weight" else k): value for k, value in options.items()}
    rounding = ({"rtol": 2e-5, "atol": 2e-6} if dtype == np.float32
                else {"rtol": 1e-12, "atol": 1e-14})
    for reduction in REDUCTIONS:
        loss, g = fastloss.softmax_cross_entropy(logits, target, reduction=reduction, **ce_options)
        g = g.astype(np.float64)
        want = (g @ weight.astype(np.float64), g.T @ hidden.astype(np.float64), g.sum(axis=0))
        got = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias,
                                            reduction=reduction, chunk_size=chunk_size, **options)
        np.testing.assert_allclose(got.loss, loss, **rounding)
        for got_grad, want_grad in zip(got.grad, want):
            np.testing.assert_allclose(got_grad, want_grad, **rounding)
        without = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias,
                                                reduction=reduction, chunk_size=chunk_size,
                                                compute_grad=False, **options)
        np.testing.assert_array_equal(without.loss, got.loss)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_the_same_at_any_thread_count(dtype):
    """The parts and their order do not depend on the thread count: 1, 2, 3 threads and the
    default give the same bits (and so do repeated runs)."""
    hidden, weight, bias, target = make_inputs(dtype, 70, 12, 300, seed=3)
    options = options_for("everything", dtype, 300)
    assert_same_bits([fastloss.linear_cross_entropy(hidden, weight, target, bias=bias,
                                                    chunk_size=16, n_threads=threads, **options)
                      for threads in (1, 2, 3, None, 2)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_hidden_with_several_chunks_and_tiles(dtype):
    """grad_hidden written over hidden: each chunk's dH lands after its sweep has read H_c
    (and the next chunk's rows are still intact for their logits)."""
    hidden, weight, bias, target = make_inputs(dtype, 50, 10, 90, seed=4)
    expected = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=7)
    in_place = hidden.copy()
    result = fastloss.linear_cross_entropy(in_place, weight, target, bias=bias, chunk_size=7,
                                           out=(in_place, None, None))
    assert result.grad[0] is in_place
    for got, want in zip(result.grad, expected.grad):
        np.testing.assert_array_equal(got, want)


def _capsule(dtype):
    return _linear_ce._gemm_capsule(np.dtype(dtype))


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sweep_against_numpy(dtype, n_threads):
    """One sweep: dW = s g^T H_c (+ dW), the parts' dH sums adding up to s g W, the buffer
    becoming H_next W^T; tiles of 16 over V = 75 in 3 parts."""
    rng = np.random.default_rng(5)
    n, n_next, d, v, tile, n_parts = 9, 6, 7, 75, 16, 3
    h_cur = rng.standard_normal((n, d)).astype(dtype)
    h_next = rng.standard_normal((n_next, d)).astype(dtype)
    weight = rng.standard_normal((v, d)).astype(dtype)
    g = rng.standard_normal((n, v)).astype(dtype)
    dw_before = rng.standard_normal((v, d)).astype(dtype)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    for accumulate in (False, True):
        buffer = g.copy()
        dw = dw_before.copy()
        parts = np.full((n_parts, n, d), np.nan, dtype)
        used = _kernels.lce_sweep(_capsule(dtype), buffer, h_cur, h_next, weight, dw, parts,
                                  0.5, accumulate, tile, n_parts, n_threads)
        assert used == n_parts
        g64 = g.astype(np.float64)
        want_dw = 0.5 * g64.T @ h_cur + (dw_before if accumulate else 0)
        np.testing.assert_allclose(dw, want_dw, **tol)
        np.testing.assert_allclose(parts.sum(axis=0), 0.5 * g64 @ weight, **tol)
        # part p: the tiles [5 p / 3, 5 (p + 1) / 3) of the 5 tiles
        for p, (t0, t1) in enumerate([(0, 1), (1, 3), (3, 5)]):
            cols = slice(t0 * tile, min(v, t1 * tile))
            np.testing.assert_allclose(parts[p], 0.5 * g64[:, cols] @ weight[cols], **tol)
        np.testing.assert_allclose(buffer[:n_next], h_next @ weight.T.astype(np.float64), **tol)
        np.testing.assert_array_equal(buffer[n_next:], g[n_next:])  # rows past n_next untouched


@pytest.mark.parametrize("dtype", DTYPES)
def test_sweep_forward_only_and_part_count(dtype):
    """Without h_cur only the logits are written (dW, parts untouched); the parts are capped
    at the number of tiles."""
    rng = np.random.default_rng(6)
    h_next = rng.standard_normal((4, 5)).astype(dtype)
    weight = rng.standard_normal((20, 5)).astype(dtype)
    buffer = np.zeros((4, 20), dtype)
    used = _kernels.lce_sweep(_capsule(dtype), buffer, None, h_next, weight, None, None, 1.0,
                              False, 16, 8, 2)
    assert used == 2  # 20 classes: 2 tiles
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(buffer, h_next @ weight.T, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_features(dtype):
    """D = 0: the logits are the bias (the GEMMs have k = 0 and write zeros; their leading
    dimensions stay valid), dH and dW are empty, db is the column sum of the gradient."""
    rng = np.random.default_rng(7)
    bias = rng.standard_normal(40).astype(dtype)
    target = rng.integers(0, 40, 9)
    hidden, weight = np.zeros((9, 0), dtype), np.zeros((40, 0), dtype)
    garbage = np.full(4 * 40, np.nan, dtype)  # nan in the memory the chunk buffer may reuse
    del garbage
    loss, (dh, dw, db) = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias,
                                                       chunk_size=4)
    want_loss, g = fastloss.softmax_cross_entropy(np.tile(bias, (9, 1)), target)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    assert dh.shape == (9, 0) and dw.shape == (40, 0)
    np.testing.assert_allclose(db, g.sum(axis=0, dtype=np.float64), rtol=1e-5, atol=1e-7)
