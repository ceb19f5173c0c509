"""K-dim class-axis losses with buffers at any address (issue 13 speed: fl_class_axis.inc's
spans). The tile passes run over spans whose gradient stores start on a vector boundary (a
head span up to the first aligned position, then tiles' widths from there), while each
tile's loss is still summed as one reduction over its own positions. So the loss, the
per-position losses, the gradient and the second derivatives must be bitwise those of a call
with 64-byte aligned buffers, whatever the offset of out= (or hess_out, or of the logits
without a gradient, or in place), at 1 and 2 threads and at every SIMD level.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from fastloss import _kernels

from class_axis_options import CE_OPTIONS, FOCAL_OPTIONS, make

# bytes past a 64-byte boundary; float64 only at multiples of 8 (an array not aligned to
# its own item is left unaligned by the kernels: nothing to test there but C's tolerance)
OFFSETS = {np.float32: [0, 4, 8, 16, 60], np.float64: [0, 8, 16, 56]}
# (N, C, P), each of two blocks or more (_kernels.class_axis: 65536 elements of tiles a
# block), the second starting inside a sample, samples ending with a short tile: C = 21,
# W = 192, 3 tiles a sample, 16 a block; C = 10, W = 400, 8 a sample, 16 a block; C = 2,
# W = 512, 24 a sample, 64 a block
SHAPES = [(7, 21, 2 * 192 + 37), (3, 10, 2845), (3, 2, 12000)]
# every option set of the class-axis tests
CASES = [("ce", option) for option in CE_OPTIONS] + [("focal", o) for o in FOCAL_OPTIONS]


def at_offset(array, offset):
    """A copy of `array` whose data starts `offset` bytes past a 64-byte boundary."""
    buf = np.empty(array.nbytes + 128, np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    view = buf[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    view[...] = array
    assert view.ctypes.data % 64 == offset
    return view


def call(name, x, target, kwargs, **extra):
    fn = fastloss.softmax_cross_entropy if name == "ce" else fastloss.softmax_focal
    return fn(x, target, **kwargs, **extra)


@pytest.fixture
def parallel_small():
    """Small calls in parallel too (the serial threshold moves only speed, not results)."""
    previous = _kernels._set_serial_threshold(0)
    yield
    _kernels._set_serial_threshold(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_any_address_same_bits(dtype, simd_level, parallel_small):
    """Every option set (each on one of the shapes), out= at every offset at 1 thread and 16
    bytes off at 2 threads: the loss and gradient bitwise those of the aligned call; at two
    offsets also the per-position losses, and the loss from logits at the offset without a
    gradient."""
    rng = np.random.default_rng(140)
    for i, (name, option) in enumerate(CASES):
        shape = SHAPES[i % len(SHAPES)]
        if option.get("_target") == "prob" and shape[1] < 3:
            shape = SHAPES[0]
        x, target, kwargs = make(rng, dtype, shape, option)
        x = at_offset(x, 0)
        where = f"{name} {shape} {option} {simd_level}"
        base = call(name, x, target, kwargs, reduction="sum",
                    out=at_offset(np.zeros_like(x), 0), n_threads=1)
        per_pos = call(name, x, target, kwargs, reduction="none", n_threads=1)
        for offset in OFFSETS[dtype]:
            for threads in (1, 2) if offset == 16 else (1,):
                out = at_offset(np.zeros_like(x), offset)
                got = call(name, x, target, kwargs, reduction="sum", out=out,
                           n_threads=threads)
                assert got.loss == base.loss, f"{where} offset {offset} x{threads}"
                np.testing.assert_array_equal(out, base.grad, err_msg=where)
            if offset not in (8, 56, 60):
                continue
            got = call(name, x, target, kwargs, reduction="none",
                       out=at_offset(np.zeros_like(x), offset), n_threads=1)
            np.testing.assert_array_equal(got.loss, per_pos.loss, err_msg=where)
            np.testing.assert_array_equal(got.grad, per_pos.grad, err_msg=where)
            # without a gradient the spans align the logits
            no_grad = call(name, at_offset(x, offset), target, kwargs, reduction="sum",
                           compute_grad=False, n_threads=1)
            assert no_grad.loss == base.loss, f"{where} offset {offset} no gradient"


@pytest.mark.parametrize("name, option", [CASES[7], CASES[9], CASES[13]],
                         ids=lambda v: v if isinstance(v, str) else str(sorted(v)))
def test_in_place_and_hessians_at_any_address(name, option, parallel_small):
    """In place (the gradient over logits at an offset) and the second derivatives into
    hess_out at an offset, against the aligned calls, at 1 and 2 threads."""
    rng = np.random.default_rng(141)
    x, target, kwargs = make(rng, np.float32, SHAPES[0], option)
    x = at_offset(x, 0)
    copy = at_offset(x, 0)
    base = call(name, copy, target, kwargs, reduction="mean", out=copy, n_threads=1)
    base_h = call(name, x, target, kwargs, reduction="mean", compute_hess=True, n_threads=1,
                  out=at_offset(np.zeros_like(x), 0), hess_out=at_offset(np.zeros_like(x), 0))
    for offset in OFFSETS[np.float32]:
        for threads in (1, 2) if offset in (16, 60) else (1,):
            xo = at_offset(x, offset)
            got = call(name, xo, target, kwargs, reduction="mean", out=xo, n_threads=threads)
            assert got.loss == base.loss
            np.testing.assert_array_equal(xo, copy)
            got = call(name, x, target, kwargs, reduction="mean", compute_hess=True,
                       n_threads=threads, out=at_offset(np.zeros_like(x), offset),
                       hess_out=at_offset(np.zeros_like(x), (offset + 20) % 64))
            assert got.loss == base_h.loss
            np.testing.assert_array_equal(got.grad, base_h.grad)
            np.testing.assert_array_equal(got.hess, base_h.hess)
