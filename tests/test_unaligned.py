"""Arrays a few bytes off their items' alignment, for every loss.

NumPy takes views that start inside an item (``buffer[1:].view(np.float32)``: the ``aligned``
flag is False) and so does fastloss: the kernels read and write such arrays with unaligned
loads and stores, and the paths that need aligned memory (the non-temporal stores of the
streamed gradients, fastloss/_src/fl_stream.inc) are not taken for them. A call with every
array argument and every output (``out=``, ``hess_out=``) misaligned must give the aligned
call's results bit for bit, at one and two threads, and write nothing around its outputs.
The streaming and serial thresholds are lowered (the ``streaming`` fixture), so the streamed
and parallel paths are the ones on trial; before the overlap losses' guard, their streamed
softmax gradient segfaulted here.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss

from reliability_cases import CASES

# byte offsets from a 64-byte line: inside a float32 / float64 item, and half a float64 item
OFFSETS = (1, 4)
GUARD_BYTE = 0xAB


def _misaligned(array, offset, guards):
    """A copy of `array` starting `offset` bytes past a 64-byte line of a bigger byte buffer
    filled with GUARD_BYTE; the buffer and the copy's span are appended to `guards`."""
    array = np.asarray(array)
    buffer = np.full(array.nbytes + 128, GUARD_BYTE, np.uint8)
    start = -buffer.ctypes.data % 64 + offset
    view = buffer[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    view[...] = array
    guards.append((buffer, start, start + array.nbytes))
    return view


def _moved(value, offset, guards):
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return _misaligned(value, offset, guards)
    return value


def _check(fn, args, kwargs, outputs, offset):
    """fn with every array and every output in `outputs` ("out", "hess_out") misaligned by
    `offset` bytes against fn on the arrays as they are: the same bits, guards untouched."""
    expected = fn(*args, **kwargs)
    for threads in (1, 2):
        guards = []
        moved_args = [_moved(a, offset, guards) for a in args]
        moved_kwargs = {k: _moved(v, offset, guards) for k, v in kwargs.items()}
        outs = []
        for name in outputs:
            want = expected.grad if name == "out" else expected.hess
            if isinstance(want, tuple):
                moved_kwargs[name] = tuple(_misaligned(np.zeros_like(w), offset, outs)
                                           for w in want)
            else:
                moved_kwargs[name] = _misaligned(np.zeros_like(want), offset, outs)
        first = moved_args[0]
        assert first.flags.aligned == (offset % first.dtype.itemsize == 0)
        result = fn(*moved_args, n_threads=threads, **moved_kwargs)
        what = f"offset {offset}, {threads} threads"
        for attr in ("loss", "grad", "hess"):
            want, got = getattr(expected, attr, None), getattr(result, attr, None)
            if want is None:
                continue
            wants = want if isinstance(want, tuple) else (want,)
            gots = got if isinstance(got, tuple) else (got,)
            for w, g in zip(wants, gots):
                # 1-d copies (aligned and contiguous) to compare the bytes
                w, g = np.array(w, ndmin=1), np.array(g, ndmin=1)
                assert w.dtype == g.dtype and w.shape == g.shape, f"{attr}, {what}"
                assert np.array_equal(w.view(np.uint8), g.view(np.uint8)), f"{attr}, {what}"
        for buffer, start, stop in guards + outs:
            assert (buffer[:start] == GUARD_BYTE).all() and (buffer[stop:] == GUARD_BYTE).all(), what


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES if c.available])
def test_registry_losses(case, dtype, offset, streaming):
    rng = np.random.default_rng(40)
    args, kwargs = case.valid_call(rng, dtype, n_elements=20000)
    _check(case.function(), args, kwargs, ("out",), offset)


HESSIAN_LOSSES = ["mse", "huber", "pinball", "log_cosh", "poisson_nll", "tweedie",
                  "binary_cross_entropy_with_logits", "sigmoid_focal", "softmax_cross_entropy",
                  "softmax_focal", "kl_divergence_with_logits", "squared_hinge", "soft_margin",
                  "kl_div", "binary_cross_entropy"]


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("name", HESSIAN_LOSSES)
def test_hessians(name, offset, streaming):
    case = {c.name: c for c in CASES}[name]
    rng = np.random.default_rng(41)
    args, kwargs = case.valid_call(rng, np.float32, n_elements=20000)
    _check(case.function(), args, dict(kwargs, compute_hess=True), ("out", "hess_out"), offset)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 21, 16, 16), (3, 10, 8, 9)])
def test_class_axis(shape, dtype, offset, streaming):
    rng = np.random.default_rng(42)
    x = rng.standard_normal(shape).astype(dtype)
    index = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    _check(fastloss.softmax_cross_entropy, (x, index), {"compute_hess": True},
           ("out", "hess_out"), offset)
    _check(fastloss.softmax_focal, (x, index), {}, ("out",), offset)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["sigmoid", "softmax", "none"])
@pytest.mark.parametrize("kind", ["dice", "jaccard", "tversky"])
def test_overlap(kind, activation, dtype, offset, streaming):
    # 21 classes: the softmax layout's streamed gradient (on AVX-512), rows of whole lines
    # (16 x 16 pixels) and not (7 x 9)
    rng = np.random.default_rng(43)
    fn = getattr(fastloss, kind)
    for shape in [(2, 21, 16, 16), (2, 21, 7, 9)]:
        x = rng.standard_normal(shape).astype(dtype)
        if activation == "none":
            x = 1 / (1 + np.exp(-x))
        index = rng.integers(0, shape[1], (shape[0],) + shape[2:])
        onehot = np.moveaxis(np.eye(shape[1], dtype=dtype)[index], -1, 1).copy()
        for target in (onehot, index):
            _check(fn, (x, target), {"activation": activation}, ("out",), offset)
        _check(fn, (x, onehot), {"activation": activation, "batch": True}, ("out",), offset)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pairs_and_the_rest(dtype, offset, streaming):
    rng = np.random.default_rng(44)
    n, d = 300, 64
    a, b, c = (rng.standard_normal((n, d)).astype(dtype) for _ in range(3))
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0).astype(dtype)
    _check(fastloss.triplet_margin, (a, b, c), {"swap": True}, ("out",), offset)
    _check(fastloss.contrastive, (a, b, (sign > 0).astype(dtype)), {}, ("out",), offset)
    _check(fastloss.cosine_embedding, (a, b, sign), {}, ("out",), offset)
    _check(fastloss.margin_ranking, (a[:, 0].copy(), b[:, 0].copy(), sign), {}, ("out",),
           offset)
    _check(fastloss.gaussian_kl, (a, 0.1 * b), {"compute_hess": True}, ("out", "hess_out"),
           offset)
    _check(fastloss.l1_penalty, (a,), {"strength": 0.1}, ("out",), offset)
    _check(fastloss.l2_penalty, (a,), {"strength": 0.1}, ("out",), offset)
    hidden = rng.standard_normal((64, 32)).astype(dtype)
    weight = (0.1 * rng.standard_normal((200, 32))).astype(dtype)
    _check(fastloss.linear_cross_entropy, (hidden, weight, rng.integers(0, 200, 64)),
           {"bias": rng.standard_normal(200).astype(dtype)}, ("out",), offset)
