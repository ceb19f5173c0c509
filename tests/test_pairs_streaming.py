"""The pair losses' streamed gradients (issue 14, speed): above a size threshold the row kernels
(triplet_margin, contrastive, cosine_embedding) write the gradients with non-temporal stores
through an L1 stage (fastloss/_src/fl_pairs.inc, "Streaming stores"). The threshold is lowered
here so small inputs take that path; the results must be bitwise those of the ordinary path,
at any thread count, SIMD level and alignment of the out= buffers, and nothing outside the
gradients may be written."""

from __future__ import annotations

import numpy as np
import pytest

from fastloss import _kernels

from test_pairs import BY_NAME, CASES, DTYPES
from test_unaligned import GUARD_BYTE, _misaligned

ROW_CASES = [case for case in CASES if case.values[0].rows]
# rows of 128 bytes (float32: the fewest lines streamed), not a whole number of lines, and
# the stage's size (float32 at 1024: 4 KiB; float64: 8 KiB, written the ordinary way)
WIDTHS = [32, 131, 1024]


def _ordinary(pair, inputs, target, option):
    previous = _kernels._set_stream_threshold(2 ** 62)
    try:
        return pair.call(inputs, target, option, n_threads=1, reduction="none")
    finally:
        _kernels._set_stream_threshold(previous)


def _views(shape, dtype, offset, count):
    """`count` C-contiguous views of `shape` starting `offset` elements past a 64-byte boundary
    of bigger nan-filled buffers; returns the views and their buffers (for the guard)."""
    size = int(np.prod(shape))
    buffers, views = [], []
    itemsize = np.dtype(dtype).itemsize
    for _ in range(count):
        buffer = np.full(size + 256 // itemsize, np.nan, dtype)
        start = (-buffer.ctypes.data % 64) // itemsize + offset
        buffers.append((buffer, start, start + size))
        views.append(buffer[start:start + size].reshape(shape))
    return views, buffers


def _assert_same_bits(actual, expected, what):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    assert np.array_equal(actual.view(np.uint8), expected.view(np.uint8)), what


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pair, option", ROW_CASES)
def test_streamed_gradients_bitwise_equal_the_ordinary_ones(pair, option, dtype, streaming):
    rng = np.random.default_rng(20)
    for d in WIDTHS:
        n = 2 * (16384 // d) + 3   # three blocks (of 16384 // d rows), the last short
        inputs, target = pair.make(rng, dtype, n=n, d=d)
        expected = _ordinary(pair, inputs, target, option)
        for offset in (0, 3):
            outs, buffers = _views((n, d), dtype, offset, len(inputs))
            for threads in (1, 3):
                for view in outs:
                    view[...] = np.nan
                result = pair.call(inputs, target, option, n_threads=threads, reduction="none",
                                   out=tuple(outs))
                what = f"d={d} offset={offset} n_threads={threads}"
                _assert_same_bits(result.loss, expected.loss, "loss " + what)
                for k, (grad, want) in enumerate(zip(result.grad, expected.grad)):
                    assert grad is outs[k]
                    _assert_same_bits(grad, want, f"grad[{k}] " + what)
                for buffer, start, stop in buffers:   # nothing written around the views
                    assert np.isnan(buffer[:start]).all() and np.isnan(buffer[stop:]).all(), what
        # allocated gradients (wherever the buffer cache puts them)
        result = pair.call(inputs, target, option, n_threads=2, reduction="none")
        for k, (grad, want) in enumerate(zip(result.grad, expected.grad)):
            _assert_same_bits(grad, want, f"allocated grad[{k}] d={d}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["triplet_margin", "contrastive", "cosine_embedding"])
def test_streamed_at_every_simd_level(name, dtype, simd_level, streaming):
    pair = BY_NAME[name]
    rng = np.random.default_rng(21)
    inputs, target = pair.make(rng, dtype, n=300, d=131)
    expected = _ordinary(pair, inputs, target, {})
    outs, _ = _views((300, 131), dtype, 1, len(inputs))
    result = pair.call(inputs, target, {}, n_threads=2, reduction="none", out=tuple(outs))
    _assert_same_bits(result.loss, expected.loss, f"loss at {simd_level}")
    for grad, want in zip(result.grad, expected.grad):
        _assert_same_bits(grad, want, f"grad at {simd_level}")


@pytest.mark.parametrize("dtype, byte_offset", [(np.float32, 1), (np.float32, 2),
                                                (np.float64, 4)])
@pytest.mark.parametrize("name", ["triplet_margin", "contrastive", "cosine_embedding"])
def test_out_off_its_items_alignment_is_written_the_ordinary_way(name, dtype, byte_offset,
                                                                 streaming):
    # out= views a few bytes off their items' alignment (NumPy takes them; a non-temporal
    # store to a misaligned line faults): the kernel writes them with ordinary stores
    pair = BY_NAME[name]
    rng = np.random.default_rng(23)
    inputs, target = pair.make(rng, dtype, n=300, d=128)
    expected = _ordinary(pair, inputs, target, {})
    buffers = []
    outs = [_misaligned(np.zeros_like(x), byte_offset, buffers) for x in inputs]
    assert not outs[0].flags.aligned
    result = pair.call(inputs, target, {}, n_threads=2, reduction="none", out=tuple(outs))
    _assert_same_bits(result.loss, expected.loss, "loss")
    for grad, want in zip(result.grad, expected.grad):
        _assert_same_bits(grad.copy(), want, "grad")
    for buffer, start, stop in buffers:
        assert (buffer[:start] == GUARD_BYTE).all() and (buffer[stop:] == GUARD_BYTE).all()


def test_in_place_gradients_are_not_streamed_and_stay_correct(streaming):
    # a gradient written over its input: the kernel reads each row before writing it
    pair = BY_NAME["triplet_margin"]
    rng = np.random.default_rng(22)
    inputs, target = pair.make(rng, np.float32, n=500, d=128)
    expected = _ordinary(pair, inputs, target, {})
    copies = [x.copy() for x in inputs]
    result = pair.call(copies, target, {}, n_threads=2, reduction="none", out=(copies[0], None, copies[2]))
    for grad, want in zip(result.grad, expected.grad):
        _assert_same_bits(grad, want, "in place")


def test_stream_threshold_setter():
    previous = _kernels._set_stream_threshold(123)
    try:
        assert _kernels._set_stream_threshold(456) == 123
        with pytest.raises(ValueError):
            _kernels._set_stream_threshold(-1)
    finally:
        _kernels._set_stream_threshold(previous)
