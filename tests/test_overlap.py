"""dice, jaccard, tversky: against the NumPy reference, central finite differences, MONAI
(when installed) and MONAI's formulas written out in torch (always, with torch), in float32
and float64, over every option; degenerate masks, nan/inf confinement, out= and in place,
compute_grad=False, non-contiguous inputs, thread counts (bitwise), every SIMD level, and
every error with nothing written."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastloss
from fastloss import _kernels, reference

try:
    import torch
except ImportError:  # pragma: no cover - torch is in the test extra
    torch = None
try:
    from monai.losses import DiceLoss, TverskyLoss
except ImportError:  # monai is optional: the torch formulas below still run
    DiceLoss = TverskyLoss = None

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
KINDS = ["dice", "jaccard", "tversky"]
ACTIVATIONS = ["sigmoid", "softmax", "none"]
# one option changed at a time from the defaults (plus a few combinations)
OPTIONS = [
    {},
    {"target": "index"},
    {"target": "soft"},
    {"batch": True},
    {"include_background": False},
    {"squared": True},
    {"weight": True},
    {"smooth": 0.0},
    {"smooth": 0.5, "batch": True, "include_background": False, "weight": True},
    {"target": "index", "batch": True, "squared": True, "include_background": False},
]


def option_id(option):
    return "-".join(f"{k}={v}" for k, v in option.items()) or "default"


def make(rng, dtype, shape, activation, option, kind="dice"):
    """(input, target, kwargs) for one option."""
    n, c = shape[:2]
    if activation == "none":
        x = rng.uniform(0.0, 1.0, shape).astype(dtype)
    else:
        x = (2 * rng.standard_normal(shape)).astype(dtype)
    index = rng.integers(0, c, (n,) + shape[2:])
    form = option.get("target", "onehot")
    if form == "index":
        target = index
    elif form == "soft":
        target = rng.uniform(0, 1, shape).astype(dtype)
    else:
        target = np.moveaxis(np.eye(c, dtype=dtype)[index], -1, 1).copy()
    kwargs = {"activation": activation}
    for key in ("batch", "include_background", "smooth"):
        if key in option:
            kwargs[key] = option[key]
    if kind == "tversky":
        kwargs.update(alpha=0.3, beta=0.8)
    else:
        if option.get("squared"):
            kwargs["squared"] = True
        if option.get("weight"):
            kept = c - (0 if option.get("include_background", True) else 1)
            kwargs["weight"] = rng.uniform(0.5, 2.0, kept)
    return x, target, kwargs


def assert_close(actual, expected, dtype, what="", rtol=None):
    if rtol is None:
        rtol = 2e-5 if np.dtype(dtype) == np.float32 else 1e-10
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.abs(expected[finite]).max())) if finite.any() else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 0.1 * scale,
                               equal_nan=True, err_msg=what)


CASES = [pytest.param(kind, activation, option, id=f"{kind}-{activation}-{option_id(option)}")
         for kind in KINDS for activation in ACTIVATIONS for option in OPTIONS
         if not (kind == "tversky" and (option.get("squared") or option.get("weight")))]


# ----------------------------------------------------------------------------- values

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, activation, option", CASES)
def test_matches_reference(kind, activation, option, dtype):
    rng = np.random.default_rng(1)
    x, target, kwargs = make(rng, dtype, (3, 4, 5, 6), activation, option, kind)
    for reduction in REDUCTIONS:
        loss, grad = getattr(fastloss, kind)(x, target, reduction=reduction, **kwargs)
        ref_loss, ref_grad = getattr(reference, kind)(x, target, reduction=reduction, **kwargs)
        if reduction == "none":
            kept = 4 - (0 if kwargs.get("include_background", True) else 1)
            assert loss.dtype == x.dtype
            assert loss.shape == ((kept,) if kwargs.get("batch") else (3, kept))
        else:
            assert type(loss) is float
        assert grad.dtype == x.dtype and grad.shape == x.shape
        assert_close(loss, ref_loss, dtype, f"loss {reduction}")
        assert_close(grad, ref_grad, dtype, f"grad {reduction}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(2, 3, 37, 41), (1, 21, 20, 30)], ids=["S1517", "C21"])
def test_long_slices_match_reference(kind, activation, shape, dtype):
    """Slices longer than a sums chunk (512 elements: two whole chunks and a tail that is not
    a multiple of the 16 lanes) and softmax pixel chunks (C = 3: 512 pixels, C = 21: 256)
    with a ragged last chunk, for each target form."""
    rng = np.random.default_rng(21)
    for option in ({}, {"target": "index", "squared": kind != "tversky"}, {"target": "soft"},
                   {"batch": True}):
        x, target, kwargs = make(rng, dtype, shape, activation, option, kind)
        loss, grad = getattr(fastloss, kind)(x, target, reduction="none", **kwargs)
        ref_loss, ref_grad = getattr(reference, kind)(x, target, reduction="none", **kwargs)
        assert_close(loss, ref_loss, dtype, f"loss {option}")
        assert_close(grad, ref_grad, dtype, f"grad {option}")


def torch_formula(kind, x, target, kwargs, reduction):
    """MONAI's DiceLoss / TverskyLoss (soft_label=False) written out in torch: the check that
    runs without MONAI installed."""
    activation = kwargs["activation"]
    p = torch.sigmoid(x) if activation == "sigmoid" else (
        torch.softmax(x, 1) if activation == "softmax" else x)
    t = torch.as_tensor(target)
    if t.shape != x.shape:
        t = torch.nn.functional.one_hot(t, x.shape[1]).movedim(-1, 1).to(x.dtype)
    if not kwargs.get("include_background", True):
        p, t = p[:, 1:], t[:, 1:]
    axes = list(range(2, x.dim()))
    if kwargs.get("batch"):
        axes = [0] + axes
    smooth = kwargs.get("smooth", 1e-5)
    if kind == "tversky":
        tp = (p * t).sum(axes)
        fp = (p * (1 - t)).sum(axes)
        fn = ((1 - p) * t).sum(axes)
        f = 1 - (tp + smooth) / (tp + kwargs["alpha"] * fp + kwargs["beta"] * fn + smooth)
    else:
        q = 2 if kwargs.get("squared") else 1
        tp = (p * t).sum(axes)
        pred, truth = (p ** q).sum(axes), (t ** q).sum(axes)
        if kind == "jaccard":
            f = 1 - (2 * tp + smooth) / (2 * (pred + truth - tp) + smooth)
        else:
            f = 1 - (2 * tp + smooth) / (pred + truth + smooth)
        if kwargs.get("weight") is not None and f.shape[-1] != 1:
            f = f * torch.as_tensor(kwargs["weight"], dtype=f.dtype)
    return {"mean": f.mean(), "sum": f.sum(), "none": f}[reduction]


def monai_loss(kind, x, target, kwargs, reduction):
    t = torch.as_tensor(target)
    one_hot = t.shape != x.shape
    if one_hot:
        t = t.unsqueeze(1)
    common = dict(sigmoid=kwargs["activation"] == "sigmoid",
                  softmax=kwargs["activation"] == "softmax",
                  include_background=kwargs.get("include_background", True),
                  batch=kwargs.get("batch", False), to_onehot_y=one_hot,
                  smooth_nr=kwargs.get("smooth", 1e-5), smooth_dr=kwargs.get("smooth", 1e-5),
                  reduction=reduction)
    if kind == "tversky":
        module = TverskyLoss(alpha=kwargs["alpha"], beta=kwargs["beta"], **common)
    else:
        weight = kwargs.get("weight")
        module = DiceLoss(jaccard=kind == "jaccard", squared_pred=kwargs.get("squared", False),
                          weight=None if weight is None else torch.as_tensor(weight), **common)
    loss = module(x, t)
    if reduction == "none":   # DiceLoss keeps trailing singleton axes
        return loss.reshape(-1) if kwargs.get("batch") else loss.reshape(loss.shape[:2])
    return loss


def compare_with_torch(kind, activation, option, dtype, loss_fn):
    rng = np.random.default_rng(2)
    x, target, kwargs = make(rng, dtype, (2, 3, 4, 5), activation, option, kind)
    for reduction in REDUCTIONS:
        loss, grad = getattr(fastloss, kind)(x, target, reduction=reduction, **kwargs)
        xt = torch.tensor(x, requires_grad=True)
        torch_loss = loss_fn(kind, xt, target, kwargs, reduction)
        torch_loss.sum().backward()
        rtol = 1e-4 if dtype == np.float32 else 1e-9   # torch sums in float32
        if loss_fn is monai_loss and option.get("target") == "index" and option.get("squared"):
            # MONAI's one_hot is float32, and its squared form takes the target's norm, so
            # sum t^2 = k comes back as float32(sqrt(k))^2, off by ~1e-7 relative
            rtol = max(rtol, 1e-6)
        assert_close(loss, torch_loss.detach().numpy(), dtype, f"loss {reduction}", rtol)
        assert_close(grad, xt.grad.numpy(), dtype, f"grad {reduction}", rtol)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, activation, option", CASES)
def test_matches_monai_formulas_in_torch(kind, activation, option, dtype):
    compare_with_torch(kind, activation, option, dtype, torch_formula)


@pytest.mark.skipif(DiceLoss is None, reason="MONAI is not installed")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, activation, option", CASES)
def test_matches_monai(kind, activation, option, dtype):
    compare_with_torch(kind, activation, option, dtype, monai_loss)


@pytest.mark.parametrize("kind, activation, option", CASES)
def test_gradient_matches_finite_differences(kind, activation, option):
    rng = np.random.default_rng(3)
    x, target, kwargs = make(rng, np.float64, (2, 3, 2, 3), activation, option, kind)
    if activation == "none":
        x = np.clip(x, 0.05, 0.95)
    function = getattr(fastloss, kind)
    for reduction in ("mean", "none"):
        _, grad = function(x, target, reduction=reduction, **kwargs)

        def total(values):
            loss = function(values, target, reduction=reduction, compute_grad=False, **kwargs)
            return float(np.sum(loss.loss))

        h = 1e-6
        numeric = np.empty_like(x)
        for index in np.ndindex(x.shape):
            up, down = x.copy(), x.copy()
            up[index] += h
            down[index] -= h
            numeric[index] = (total(up) - total(down)) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_class_weight_multiplies_each_class_loss():
    rng = np.random.default_rng(4)
    x, target, kwargs = make(rng, np.float64, (2, 3, 4, 4), "softmax", {})
    plain = fastloss.dice(x, target, reduction="none", **kwargs).loss
    weight = np.array([0.0, 1.0, 3.0])
    weighted = fastloss.dice(x, target, reduction="none", weight=weight, **kwargs).loss
    np.testing.assert_allclose(weighted, plain * weight)
    scalar = fastloss.dice(x, target, reduction="none", weight=2, **kwargs).loss
    np.testing.assert_allclose(scalar, 2 * plain)


# ----------------------------------------------------------------------------- degenerate

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_two_empty_masks_give_zero_with_smoothing_and_nan_without(kind, dtype):
    x = np.zeros((2, 3, 4, 4), dtype=dtype)
    target = np.zeros_like(x)
    loss, grad = getattr(fastloss, kind)(x, target, activation="none")
    assert loss == 0.0
    assert np.isfinite(grad).all()
    loss, grad = getattr(fastloss, kind)(x, target, activation="none", smooth=0.0)
    assert np.isnan(loss)


@pytest.mark.parametrize("kind", KINDS)
def test_perfect_prediction_gives_zero_loss(kind):
    target = np.zeros((2, 3, 8), dtype=np.float64)
    target[:, 1, :3] = 1
    target[:, 2, 3:] = 1
    target[:, 0, 0] = 1
    loss, _ = getattr(fastloss, kind)(target.copy(), target, activation="none", smooth=0.0)
    assert abs(loss) < 1e-15


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits_give_finite_results(kind, dtype):
    rng = np.random.default_rng(5)
    for activation in ("sigmoid", "softmax"):
        x, target, kwargs = make(rng, dtype, (2, 3, 4, 4), activation, {}, kind)
        x = (x * 1e4).astype(dtype)
        loss, grad = getattr(fastloss, kind)(x, target, **kwargs)
        ref_loss, ref_grad = getattr(reference, kind)(x, target, **kwargs)
        assert np.isfinite(loss) and np.isfinite(grad).all()
        assert_close(loss, ref_loss, dtype)
        assert_close(grad, ref_grad, dtype)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_nan_and_inf_stay_in_their_slice(activation, value):
    rng = np.random.default_rng(6)
    x, target, kwargs = make(rng, np.float64, (3, 3, 4, 4), activation, {})
    x[1, 2, 1, 1] = value
    loss, grad = fastloss.dice(x, target, reduction="none", **kwargs)
    ref_loss, ref_grad = reference.dice(x, target, reduction="none", **kwargs)
    assert_close(loss, ref_loss, np.float64)
    assert_close(grad, ref_grad, np.float64)
    # the other samples are untouched by it
    clean = np.delete(x, 1, axis=0)
    other = fastloss.dice(clean, np.delete(target, 1, axis=0), reduction="none", **kwargs)
    np.testing.assert_array_equal(np.delete(loss, 1, axis=0), other.loss)
    np.testing.assert_array_equal(np.delete(grad, 1, axis=0), other.grad)


def test_single_channel_follows_monai_with_a_warning():
    rng = np.random.default_rng(7)
    x = rng.uniform(0.1, 0.9, (2, 1, 5))
    target = (rng.uniform(size=(2, 1, 5)) > 0.5).astype(np.float64)
    with pytest.warns(UserWarning, match="softmax"):
        as_softmax = fastloss.dice(x, target, activation="softmax")
    plain = fastloss.dice(x, target, activation="none")
    assert as_softmax.loss == plain.loss
    with pytest.warns(UserWarning, match="include_background"):
        kept = fastloss.dice(x, target, activation="none", include_background=False)
    assert kept.loss == plain.loss
    # a weight is not applied to a single class (MONAI)
    assert fastloss.dice(x, target, activation="none", weight=[3.0]).loss == plain.loss


def test_empty_batch():
    x = np.zeros((0, 3, 4), dtype=np.float32)
    loss, grad = fastloss.dice(x, np.zeros((0, 4), dtype=np.int64))
    assert np.isnan(loss) and grad.shape == x.shape
    assert fastloss.dice(x, np.zeros_like(x), reduction="sum").loss == 0.0


def test_two_dimensional_input_has_one_element_slices():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 3))
    index = rng.integers(0, 3, 6)
    loss, grad = fastloss.dice(x, index, activation="softmax")
    ref_loss, ref_grad = reference.dice(x, index, activation="softmax")
    assert_close(loss, ref_loss, np.float64)
    assert_close(grad, ref_grad, np.float64)


# ----------------------------------------------------------------------------- conventions

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_out_in_place_and_compute_grad_false(kind, activation, batch, dtype):
    rng = np.random.default_rng(9)
    x, target, kwargs = make(rng, dtype, (2, 3, 6, 7), activation, {"batch": batch}, kind)
    function = getattr(fastloss, kind)
    expected_loss, expected_grad = function(x, target, **kwargs)
    out = np.full_like(x, np.nan)
    loss, grad = function(x, target, out=out, **kwargs)
    assert grad is out and loss == expected_loss
    np.testing.assert_array_equal(out, expected_grad)
    in_place = x.copy()
    loss, grad = function(in_place, target, out=in_place, **kwargs)
    assert grad is in_place and loss == expected_loss
    np.testing.assert_array_equal(in_place, expected_grad)
    for reduction in REDUCTIONS:
        full = function(x, target, reduction=reduction, **kwargs)
        loss_only = function(x, target, reduction=reduction, compute_grad=False, **kwargs)
        assert loss_only.grad is None
        np.testing.assert_array_equal(loss_only.loss, full.loss)



@pytest.mark.parametrize("kind", KINDS)
def test_loss_only_softmax_with_more_classes_than_the_chunk_scratch(kind):
    """compute_grad=False over softmax needs one pixel's C probabilities in a scratch of 8192
    entries; with more classes the driver stashes into a full-size buffer instead (a stack
    overflow before): same loss as with the gradient, and as the reference."""
    rng = np.random.default_rng(23)
    x, target, kwargs = make(rng, np.float32, (2, 9000, 3), "softmax", {"target": "index"},
                             kind)
    function = getattr(fastloss, kind)
    loss_only = function(x, target, reduction="none", compute_grad=False, **kwargs)
    full = function(x, target, reduction="none", **kwargs)
    assert loss_only.grad is None
    np.testing.assert_array_equal(loss_only.loss, full.loss)
    assert_close(loss_only.loss, getattr(reference, kind)(x, target, reduction="none",
                                                          **kwargs).loss, np.float32)

@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_non_contiguous_inputs(activation):
    rng = np.random.default_rng(10)
    x, target, kwargs = make(rng, np.float32, (2, 3, 6, 7), activation, {"target": "soft"})
    expected = fastloss.dice(x, target, reduction="none", **kwargs)
    for x_view, t_view in ((np.asfortranarray(x), np.asfortranarray(target)),
                           (x[::-1].copy()[::-1], target[:, ::-1].copy()[:, ::-1])):
        loss, grad = fastloss.dice(x_view, t_view, reduction="none", **kwargs)
        np.testing.assert_array_equal(loss, expected.loss)
        np.testing.assert_array_equal(grad, expected.grad)


@pytest.fixture
def parallel_always():
    previous = _kernels._set_serial_threshold(0)
    yield
    _kernels._set_serial_threshold(previous)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("option", [{}, {"batch": True, "target": "index"}], ids=option_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_for_every_thread_count(kind, activation, option, dtype,
                                                  parallel_always):
    rng = np.random.default_rng(11)
    # many small blocks (slices of 1000 elements; 16 samples of 3 classes)
    x, target, kwargs = make(rng, dtype, (16, 3, 40, 25), activation, option, kind)
    results = {n: getattr(fastloss, kind)(x, target, reduction="none", n_threads=n, **kwargs)
               for n in (1, 2, 3)}
    sums = {n: getattr(fastloss, kind)(x, target, n_threads=n, **kwargs).loss for n in (1, 2, 3)}
    for n in (2, 3):
        np.testing.assert_array_equal(results[n].loss, results[1].loss)
        np.testing.assert_array_equal(results[n].grad, results[1].grad)
        assert sums[n] == sums[1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_simd_level_matches_reference(kind, activation, dtype, simd_level):
    assert fastloss.simd_level() == simd_level
    rng = np.random.default_rng(12)
    for option in ({}, {"target": "index", "squared": kind != "tversky"},
                   {"batch": True, "include_background": False}):
        # 37 pixels: vector bodies and remainders
        x, target, kwargs = make(rng, dtype, (2, 3, 37), activation, option, kind)
        loss, grad = getattr(fastloss, kind)(x, target, reduction="none", **kwargs)
        ref_loss, ref_grad = getattr(reference, kind)(x, target, reduction="none", **kwargs)
        assert_close(loss, ref_loss, dtype, f"loss at {simd_level}")
        assert_close(grad, ref_grad, dtype, f"grad at {simd_level}")


@pytest.mark.parametrize("shape", [(2, 21, 19, 31), (1, 70, 9, 13)], ids=["C21", "C70"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_chunks_at_every_simd_level_match_reference(shape, dtype, simd_level):
    """The softmax sums pass's register groups of pixels and its per-class lanes (AVX-512,
    up to FL_OVERLAP_LANE_CLASSES = 64 classes) and the plain loops (other levels, or more
    classes): whole groups, a partial group and a chunk that is not a multiple of the lanes
    (C = 21: chunks of 256 pixels and a tail of 77; C = 70: 64 and a tail of 53). The
    gradient pass walks the chunks last first (the tail first)."""
    assert fastloss.simd_level() == simd_level
    rng = np.random.default_rng(14)
    for option in ({}, {"target": "soft", "squared": True}, {"target": "index", "batch": True}):
        x, target, kwargs = make(rng, dtype, shape, "softmax", option)
        loss, grad = fastloss.dice(x, target, reduction="none", **kwargs)
        ref_loss, ref_grad = reference.dice(x, target, reduction="none", **kwargs)
        assert_close(loss, ref_loss, dtype, f"loss {option} at {simd_level}")
        assert_close(grad, ref_grad, dtype, f"grad {option} at {simd_level}")


# ----------------------------------------------------------------------------- errors

def _bad_calls(x, onehot, index):
    """(description, call kwargs, expected error)."""
    return [
        ("int input", dict(input=x.astype(np.int32)), TypeError),
        ("1-D input", dict(input=x[0, 0, 0]), ValueError),
        ("wrong target shape", dict(target=onehot[:, :2]), ValueError),
        ("float index target", dict(target=index.astype(np.float64)), TypeError),
        ("index out of range", dict(target=np.where(index == 0, 3, index)), ValueError),
        ("negative index", dict(target=np.where(index == 0, -1, index)), ValueError),
        ("unknown activation", dict(activation="relu"), ValueError),
        ("negative smooth", dict(smooth=-1.0), ValueError),
        ("nan smooth", dict(smooth=float("nan")), ValueError),
        ("weight length", dict(weight=[1.0, 2.0]), ValueError),
        ("negative weight", dict(weight=[1.0, -1.0, 1.0]), ValueError),
        ("reduction", dict(reduction="avg"), ValueError),
        ("n_threads", dict(n_threads=0), ValueError),
        ("out with compute_grad=False", dict(out="fresh", compute_grad=False), ValueError),
        ("out shape", dict(out=np.zeros((2, 3, 4), dtype=x.dtype)), ValueError),
        ("out dtype", dict(out=np.zeros(x.shape, dtype=np.float32)), ValueError),
        ("out read-only", dict(out="readonly"), ValueError),
        ("out overlaps target", dict(out="target"), ValueError),
        ("batch not bool", dict(batch=1), TypeError),
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_errors_raise_before_anything_is_written(kind):
    rng = np.random.default_rng(13)
    x, onehot, _ = make(rng, np.float64, (2, 3, 4, 5), "sigmoid", {})
    index = rng.integers(0, 3, (2, 4, 5))
    function = getattr(fastloss, kind)
    cases = _bad_calls(x, onehot, index)
    if kind == "tversky":
        cases = [case for case in cases if "weight" not in case[1]]
        cases += [("negative alpha", dict(alpha=-0.1), ValueError),
                  ("negative beta", dict(beta=-0.1), ValueError)]
    for description, changes, error in cases:
        call = dict(input=x.copy(), target=onehot.copy())
        call.update(changes)
        fresh = np.full(x.shape, 7.0)
        if isinstance(call.get("out"), str):
            if call["out"] == "fresh":
                call["out"] = fresh
            elif call["out"] == "readonly":
                fresh.flags.writeable = False
                call["out"] = fresh
            else:
                call["out"] = call["target"]
        before = {k: v.copy() for k, v in call.items() if isinstance(v, np.ndarray)}
        options = {k: v for k, v in call.items() if k not in ("input", "target")}
        with pytest.raises(error), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            function(call["input"], call["target"], **options)
        for key, value in before.items():
            np.testing.assert_array_equal(call[key], value, err_msg=f"{description}: {key} changed")


def test_error_messages_name_the_argument():
    x = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"class index 5 at position \(1, 2\)"):
        index = np.zeros((2, 4), dtype=np.int64)
        index[1, 2] = 5
        fastloss.dice(x, index)
    with pytest.raises(ValueError, match="activation"):
        fastloss.jaccard(x, np.zeros_like(x), activation="tanh")
    with pytest.raises(ValueError, match=r"weight must be a number or have shape \(2,\)"):
        fastloss.dice(x, np.zeros_like(x), include_background=False, weight=[1, 2, 3])
