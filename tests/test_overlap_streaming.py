"""dice, jaccard, tversky with activation="softmax": the streamed gradient.

Above a size threshold (the gradient's bytes, fastloss._kernels._set_stream_threshold), when
the gradient is not the input and is aligned to its items, the fused softmax layout
(batch=False, AVX-512) stashes each sample's p in its thread's slot of a stash from the buffer
cache instead of the gradient array, and writes the gradient rows with non-temporal stores
through an L1 stage (fastloss/_src/fl_overlap.inc, "Streamed softmax gradients";
fl_stream.inc). The threshold is lowered here so small inputs take that path; the results
must be bitwise those of the ordinary path for every target form and option, at any thread
count, SIMD level and alignment of the out= buffer, and nothing outside the gradient may be
written. A sample larger than the stash bound and a gradient written over
its input take the ordinary path and must be right too.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from fastloss import _kernels, reference

# the pair losses' streaming tests' helpers: nan-guarded out= views at a chosen offset from a
# 64-byte line, and a bitwise comparison
from test_pairs_streaming import _assert_same_bits, _views
# the (kind, option) grid of the one-hot labels' tests; a copy off its items' alignment
from test_overlap_onehot import kind_option_params
from test_unaligned import GUARD_BYTE, _misaligned

DTYPES = [np.float32, np.float64]
TARGETS = ["onehot", "index", "soft"]
# C = 21: chunks of 256 pixels, the last one of 20 (too short to stream in float32: 80 bytes;
# float64: 160); C = 70: chunks of 64 pixels (117 = 64 + 53); C = 300: chunks of 16 pixels
# (64 / 128 bytes: float32's never streamed, float64's exactly two lines). Rows a whole number
# of 64-byte lines apart (S = 640 and 128 elements) take the gradient pass's grid on the
# gradient's lines: a head chunk up to the first line bound, then whole chunks
SHAPES = [pytest.param((3, 21, 12, 23), id="C21"), pytest.param((2, 70, 9, 13), id="C70"),
          pytest.param((2, 300, 5, 7), id="C300"),
          pytest.param((2, 21, 16, 40), id="C21-rows-of-whole-lines"),
          pytest.param((2, 70, 8, 16), id="C70-rows-of-whole-lines")]
# out= offsets from a 64-byte line, in elements: on a line, 3 and 12 elements past one (the
# head chunks of the whole-line grid: 13 and 4 float32 pixels, 5 and 4 float64 ones)
OFFSETS = (0, 3, 12)
OPTIONS = [
    {},
    {"squared": True},
    {"include_background": False, "smooth": 0.5, "weight": True},
]


def _allocations():
    stats = _kernels._buffer_cache_stats()
    return stats["hits"] + stats["misses"]


def _ordinary(fn, x, t, kwargs):
    previous = _kernels._set_stream_threshold(2 ** 62)
    try:
        return fn(x, t, n_threads=1, **kwargs)
    finally:
        _kernels._set_stream_threshold(previous)


def make(rng, dtype, shape, kind, target, option):
    n, c = shape[:2]
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    index = rng.integers(0, c, (n,) + shape[2:])
    if target == "index":
        t = index
    elif target == "onehot":
        t = np.moveaxis(np.eye(c, dtype=dtype)[index], -1, 1).copy()
    else:
        t = rng.random(shape).astype(dtype)
    kwargs = {"activation": "softmax", "reduction": "none"}
    if kind == "tversky":
        kwargs.update(alpha=0.3, beta=0.8)
    elif option.get("squared"):
        kwargs["squared"] = True
    if "include_background" in option:
        kwargs.update(include_background=False, smooth=option["smooth"])
    if option.get("weight") and kind != "tversky":   # one weight per kept class (MONAI's
        # TverskyLoss has none)
        kwargs["weight"] = rng.uniform(0.5, 2.0, c - 1 if "include_background" in option else c)
    return x, t, kwargs


@pytest.mark.parametrize("kind, option", kind_option_params(OPTIONS))
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_streamed_gradient_bitwise_equals_the_ordinary_one(kind, option, target, shape, dtype,
                                                           streaming):
    rng = np.random.default_rng(30)
    x, t, kwargs = make(rng, dtype, shape, kind, target, option)
    fn = getattr(fastloss, kind)
    expected = _ordinary(fn, x, t, kwargs)
    for offset in OFFSETS:
        (out,), ((buffer, start, stop),) = _views(shape, dtype, offset, 1)
        for threads in (1, 3):
            out[...] = np.nan
            result = fn(x, t, out=out, n_threads=threads, **kwargs)
            what = f"offset={offset} n_threads={threads}"
            assert result.grad is out
            _assert_same_bits(result.loss, expected.loss, "loss " + what)
            _assert_same_bits(out, expected.grad, "grad " + what)
            # nothing written around the view
            assert np.isnan(buffer[:start]).all() and np.isnan(buffer[stop:]).all(), what
    # an allocated gradient (wherever the buffer cache puts it)
    _assert_same_bits(fn(x, t, n_threads=2, **kwargs).grad, expected.grad, "allocated")
    # and the reference
    rtol = 2e-5 if dtype == np.float32 else 1e-10
    ref_loss, ref_grad = getattr(reference, kind)(x, t, **kwargs)
    np.testing.assert_allclose(expected.loss, ref_loss, rtol=rtol)
    np.testing.assert_allclose(expected.grad, ref_grad, rtol=rtol * 10, atol=rtol * 1e-3)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_streamed_at_every_simd_level(target, dtype, simd_level, streaming):
    assert fastloss.simd_level() == simd_level
    rng = np.random.default_rng(31)
    x, t, kwargs = make(rng, dtype, (3, 21, 12, 23), "dice", target, {})
    expected = _ordinary(fastloss.dice, x, t, kwargs)
    (out,), _ = _views(x.shape, dtype, 1, 1)
    result = fastloss.dice(x, t, out=out, n_threads=2, **kwargs)
    _assert_same_bits(result.loss, expected.loss, f"loss at {simd_level}")
    _assert_same_bits(out, expected.grad, f"grad at {simd_level}")


@pytest.mark.parametrize("shape", [(3, 21, 12, 23), (2, 21, 16, 40)])
@pytest.mark.parametrize("dtype, byte_offset", [(np.float32, 1), (np.float32, 2),
                                                (np.float64, 4), (np.float64, 3)])
def test_out_off_its_items_alignment_keeps_p_in_the_gradient(shape, dtype, byte_offset,
                                                             streaming):
    # an out= view a few bytes off its items' alignment (NumPy takes it; the streamed lines
    # are found from the gradient's address, and a non-temporal store to a misaligned line
    # faults): p goes into the gradient, the results are the ordinary ones, nothing is
    # written around the view, and no stash is taken
    rng = np.random.default_rng(36)
    x, t, kwargs = make(rng, dtype, shape, "dice", "onehot", {})
    expected = _ordinary(fastloss.dice, x, t, kwargs)
    guards = []
    out = _misaligned(np.zeros_like(x), byte_offset, guards)
    ((buffer, start, stop),) = guards
    assert not out.flags.aligned
    before = _allocations()
    for threads in (1, 2):
        result = fastloss.dice(x, t, out=out, n_threads=threads, **kwargs)
        assert result.grad is out
        _assert_same_bits(result.loss, expected.loss, f"loss, {threads} threads")
        _assert_same_bits(out.copy(), expected.grad, f"grad, {threads} threads")
    assert _allocations() == before
    assert (buffer[:start] == GUARD_BYTE).all() and (buffer[stop:] == GUARD_BYTE).all()


def test_in_place_gradient_is_not_streamed_and_stays_correct(streaming):
    # the gradient written over the input: p goes into the gradient as before
    rng = np.random.default_rng(32)
    x, t, kwargs = make(rng, np.float32, (3, 21, 12, 23), "dice", "onehot", {})
    expected = _ordinary(fastloss.dice, x, t, kwargs)
    xc = x.copy()
    result = fastloss.dice(xc, t, out=xc, n_threads=2, **kwargs)
    assert result.grad is xc
    _assert_same_bits(xc, expected.grad, "in place")


def test_batch_and_loss_only_calls_are_unchanged(streaming):
    # batch=True (the sums of all samples before any gradient) and compute_grad=False keep
    # their own paths; the streamed call's loss is theirs where they compute the same thing
    rng = np.random.default_rng(33)
    x, t, kwargs = make(rng, np.float32, (3, 21, 12, 23), "dice", "onehot", {})
    streamed = fastloss.dice(x, t, n_threads=2, **kwargs)
    loss_only = fastloss.dice(x, t, compute_grad=False, n_threads=2, **kwargs)
    _assert_same_bits(loss_only.loss, streamed.loss, "loss only")
    batch = fastloss.dice(x, t, batch=True, n_threads=2, **kwargs)
    ref_loss, ref_grad = reference.dice(x, t, batch=True, **kwargs)
    np.testing.assert_allclose(batch.loss, ref_loss, rtol=2e-5)
    np.testing.assert_allclose(batch.grad, ref_grad, rtol=2e-4, atol=2e-8)


def test_a_sample_above_the_stash_bound_takes_the_ordinary_path(streaming):
    # 21 x 224 x 224 float32 entries (4.2 MB) per sample: more than the worker's stash
    # (FL_OVERLAP_STASH_BYTES, 4 MiB), so p goes into the gradient; the same bits either way
    rng = np.random.default_rng(34)
    x, t, kwargs = make(rng, np.float32, (2, 21, 224, 224), "dice", "onehot", {})
    expected = _ordinary(fastloss.dice, x, t, kwargs)
    result = fastloss.dice(x, t, n_threads=2, **kwargs)
    _assert_same_bits(result.loss, expected.loss, "loss")
    _assert_same_bits(result.grad, expected.grad, "grad")
    small = fastloss.dice(x[:, :, :112, :112].copy(), t[:, :, :112, :112].copy(), **kwargs)
    ref_loss, ref_grad = reference.dice(x[:, :, :112, :112], t[:, :, :112, :112], **kwargs)
    np.testing.assert_allclose(small.loss, ref_loss, rtol=2e-5)
    np.testing.assert_allclose(small.grad, ref_grad, rtol=2e-4, atol=2e-8)


@pytest.mark.parametrize("classes, streamed", [(21, True), (_kernels.OVERLAP_STREAM_MIN_CLASSES - 1, False)])
def test_the_stash_comes_from_the_buffer_cache(classes, streamed, streaming):
    # the streamed call takes one stash (a slot per thread) from the buffer cache, the
    # ordinary one none; out= given, so the gradient is not allocated. On AVX-512 only (the
    # other levels keep p in the gradient), and from C = OVERLAP_STREAM_MIN_CLASSES classes
    if fastloss.simd_level() != "avx512" or _kernels._buffer_cache_stats()["max_bytes"] == 0:
        pytest.skip("the streamed layout runs on AVX-512 with the buffer cache on")
    rng = np.random.default_rng(35)
    x, t, kwargs = make(rng, np.float32, (4, classes, 48, 48), "dice", "index", {})
    out = np.empty_like(x)   # each sample's C S entries: at least 147 KiB, cached sizes
    before = _allocations()
    fastloss.dice(x, t, out=out, n_threads=2, **kwargs)
    assert _allocations() - before == (1 if streamed else 0)
    before = _allocations()
    fastloss.dice(x, t, out=x.copy(), n_threads=2, **kwargs)   # not in place: streamed too
    assert _allocations() - before == (1 if streamed else 0)
    xc = x.copy()
    before = _allocations()
    fastloss.dice(xc, t, out=xc, n_threads=2, **kwargs)   # in place: never
    assert _allocations() - before == 0
