"""The K-dim tile layout of the softmax class-axis losses (issue 13 speed work,
fl_class_axis.inc): the label's logit and exp picked up by selects inside the max and exp
passes, the label's gradient and second derivative put in place by a select in the scale
pass, the next tile's lines prefetched during a tile's passes, and the tile width
(_kernels.class_axis_tile). Each branch at every SIMD level against the NumPy reference:
tiles that end inside a sample and at its end, a last tile shorter than the rest, tiles of
one position, labels in the first and the last class, every position ignored, no
gradient (compute_grad=False: the exps are not stored), second derivatives, and the same
bits at any thread count (the next tile of a block's last tile is not prefetched).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from fastloss import _kernels, reference

from class_axis_options import CE_OPTIONS, FOCAL_OPTIONS, assert_close, make

DTYPES = [np.float32, np.float64]


def tile_of(shape):
    return _kernels.class_axis_tile(shape[1], int(np.prod(shape[2:])))


# (N, C, d1, ...): P a multiple of the tile, one more, one less, a single position per
# sample, a tile of 16 positions at many classes, C = 1 and C = 2
def tile_shapes():
    shapes = []
    for c in (2, 10, 21):
        w = _kernels.class_axis_tile(c, 10**6)
        shapes += [(2, c, 2 * w), (3, c, w + 1), (2, c, w - 1)]
    shapes += [(5, 4, 1, 1, 2), (3, 300, 20), (4, 1, 33), (3, 33, 7, 3)]
    return shapes


SHAPES = tile_shapes()
# a subset of the option sets: plain, weights + ignore_index + smoothing, sample weights,
# every option with a cap, probability targets with every option
CE_PICK = [CE_OPTIONS[i] for i in (0, 2, 4, 7, 9)]
FOCAL_PICK = [FOCAL_OPTIONS[i] for i in (0, 2, 3)]


def run(name, x, target, kwargs, **extra):
    fn = fastloss.softmax_cross_entropy if name == "ce" else fastloss.softmax_focal
    return fn(x, target, **kwargs, **extra)


def ref(name, x, target, kwargs, **extra):
    fn = reference.softmax_cross_entropy if name == "ce" else reference.softmax_focal
    return fn(x, target, **kwargs, **extra)


def calls():
    for shape in SHAPES:
        for option in CE_PICK:
            if option.get("_target") == "prob" and shape[1] == 1:
                continue
            yield "ce", shape, option
        for option in FOCAL_PICK:
            yield "focal", shape, option


def test_tile_width_depends_on_the_classes_only():
    for c in (1, 2, 10, 21, 300, 10**4):
        w = _kernels.class_axis_tile(c, 10**6)
        assert 16 <= w <= _kernels.CLASS_TILE_MAX and w % 16 == 0
        assert _kernels.class_axis_tile(c, 5) == 5   # at most P


@pytest.mark.parametrize("hess", [False, True], ids=["values", "hessians"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_tiles_match_reference_at_every_simd_level(dtype, hess, simd_level):
    """Values (reduction "none", and the same losses without the gradient, bitwise) or the
    hessian variant (reduction "sum", and its gradient close to the plain variant's)."""
    rng = np.random.default_rng(131 if hess else 130)
    extra = {"reduction": "sum", "compute_hess": True} if hess else {"reduction": "none"}
    for name, shape, option in calls():
        x, target, kwargs = make(rng, dtype, shape, option)
        where = f"{name} {shape} {option} at {simd_level}"
        got = run(name, x, target, kwargs, **extra)
        expected = ref(name, x, target, kwargs, **extra)
        assert_close(got.loss, expected.loss, dtype, where)
        assert_close(got.grad, expected.grad, dtype, where)
        if hess:
            assert_close(got.hess, expected.hess, dtype, where)
            # (close, not bitwise: the with_hess variant is another compilation of the
            # loops, whose FMA contractions may differ)
            plain = run(name, x, target, kwargs, reduction="sum")
            assert_close(got.grad, plain.grad, dtype, where)
        else:
            no_grad = run(name, x, target, kwargs, reduction="none", compute_grad=False)
            np.testing.assert_array_equal(no_grad.loss, got.loss, err_msg=where)


@pytest.mark.parametrize("name", ["ce", "focal"])
def test_labels_in_the_first_and_last_class_and_all_ignored(name):
    """The selects that pick the label's logit, exp and gradient entry, at the ends of the
    class loop, and lanes whose every label is ignored (zeros, even from nan logits)."""
    rng = np.random.default_rng(132)
    shape = (3, 7, 45)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    for label in (0, 6):
        target = np.full((3, 45), label)
        target[1, ::3] = -100
        got = run(name, x, target, {}, reduction="none", compute_hess=True)
        expected = ref(name, x, target, {}, reduction="none", compute_hess=True)
        for what in ("loss", "grad", "hess"):
            assert_close(getattr(got, what), getattr(expected, what), np.float32,
                         f"{name} label {label} {what}")
    x[1] = np.nan
    target = np.full((3, 45), 3)
    target[1] = -100
    got = run(name, x, target, {}, reduction="none", compute_hess=True)
    assert np.all(got.grad[1] == 0) and np.all(got.hess[1] == 0) and np.all(got.loss[1] == 0)
    assert np.all(np.isfinite(got.grad[[0, 2]]))


@pytest.mark.parametrize("name, option", [("ce", CE_OPTIONS[0]), ("ce", CE_OPTIONS[7]),
                                          ("ce", CE_OPTIONS[9]), ("focal", FOCAL_OPTIONS[3])],
                         ids=lambda v: v if isinstance(v, str) else str(sorted(v)))
def test_many_tiles_same_bits_at_any_thread_count(name, option):
    """Blocks of many tiles (a block's last tile prefetches nothing, the others the next
    tile, also across samples): the same loss, gradient and hessian bits at 1, 2 and 3
    threads."""
    rng = np.random.default_rng(133)
    shape = (3, 21, 131, 67)   # above the serial threshold; tiles cross no sample
    x, target, kwargs = make(rng, np.float32, shape, option)
    assert x.size > _kernels.SERIAL_THRESHOLD_ELEMENTS
    results = [run(name, x, target, kwargs, reduction="mean", compute_hess=True, n_threads=k)
               for k in (1, 2, 3)]
    for other in results[1:]:
        assert other.loss == results[0].loss
        np.testing.assert_array_equal(other.grad, results[0].grad)
        np.testing.assert_array_equal(other.hess, results[0].hess)
    expected = ref(name, x, target, kwargs, reduction="mean", compute_hess=True)
    assert_close(results[0].grad, expected.grad, np.float32)
    assert_close(results[0].hess, expected.hess, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, kwargs", [
    ("ce", {}), ("ce", {"_w": True}), ("focal", {"gamma": 0.0}), ("focal", {"gamma": 1.0}),
    ("focal", {"gamma": 2.0}), ("focal", {"gamma": 2.0, "_w": True}), ("focal", {"gamma": 0.7})],
    ids=str)
def test_label_scale_pass_without_hessians(name, kwargs, dtype, simd_level):
    """The scale pass of the tiles without other gradient terms (CE with labels and no
    smoothing, focal; no second derivatives): tiles where every lane is kept and tiles with
    ignored lanes (zeros, even from nan logits) or zero sample weights, and the focal
    scalars' division-free forms at gamma 0, 1, 2 (and the general one), also where p_y
    rounds to 1, against the reference."""
    rng = np.random.default_rng(134)
    c = 21
    w = _kernels.class_axis_tile(c, 10**6)
    shape = (2, c, 3 * w + 5)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    target = rng.integers(0, c, (2, shape[2]))
    target[0, w:w + 7] = -100            # a tile with ignored lanes
    x[0, :, w + 2] = np.nan              # an ignored position with nan logits
    x[1, target[1, :9], np.arange(9)] = 60.0   # p_y rounds to 1 (o = s_other / s tiny)
    opts = {k: v for k, v in kwargs.items() if not k.startswith("_")}
    opts["ignore_index"] = -100
    if kwargs.get("_w"):
        sw = rng.uniform(0.5, 2.0, (2, shape[2])).astype(dtype)
        sw[1, 2 * w:2 * w + 3] = 0.0     # zero weights in a tile with every label kept
        opts["sample_weight"] = sw
    got = run(name, x, target, opts, reduction="none", n_threads=1)
    ref_x = np.where(np.isnan(x), 0, x).astype(dtype)
    expected = ref(name, ref_x, target, opts, reduction="none")
    where = f"{name} {kwargs} {dtype.__name__} at {simd_level}"
    assert np.all(got.grad[0, :, w + 2] == 0) and got.loss[0, w + 2] == 0, where
    assert_close(got.loss, expected.loss, dtype, where)
    assert_close(got.grad, expected.grad, dtype, where)
    if kwargs.get("_w"):
        assert np.all(got.grad[1, :, 2 * w:2 * w + 3] == 0), where
