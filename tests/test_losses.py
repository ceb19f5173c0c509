"""The shared tests: every loss in tests/cases.py, in float32 and float64, over its options.

Each kernel is held against the independent NumPy reference, against central finite
differences of its own loss, and against PyTorch (values and autograd gradients); then the
calling conventions of API.md (out=, in place, compute_grad=False, n_threads, non-contiguous
inputs), every compiled SIMD level, and the edge cases.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from fastloss import _kernels, reference

from cases import CASES, option_id, torch

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]

CASE_OPTIONS = [
    pytest.param(case, option, id=f"{case.name}-{option_id(option)}")
    for case in CASES
    for option in case.options
]


def tolerances(dtype):
    """(rtol, atol factor): atol is scaled by the largest magnitude compared."""
    return (2e-5, 2e-6) if np.dtype(dtype) == np.float32 else (1e-10, 1e-12)


def assert_close(actual, expected, dtype, what=""):
    rtol, atol_factor = tolerances(dtype)
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.abs(expected[finite]).max())) if finite.any() else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol_factor * scale,
                               equal_nan=True, err_msg=what)


def run(case, x, target, kwargs, **extra):
    return getattr(fastloss, case.name)(x, target, **case.call_kwargs(kwargs), **extra)


def run_reference(case, x, target, kwargs, **extra):
    return getattr(reference, case.name)(x, target, **case.call_kwargs(kwargs), **extra)


# ----------------------------------------------------------------------------- values

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, option", CASE_OPTIONS)
def test_matches_reference(case, option, dtype, reduction):
    rng = np.random.default_rng(1)
    x, target, kwargs = case.make(rng, dtype, case.shapes["small"], option)
    loss, grad = run(case, x, target, kwargs, reduction=reduction)
    ref_loss, ref_grad = run_reference(case, x, target, kwargs, reduction=reduction)
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.dtype == x.dtype
        assert loss.shape == ref_loss.shape
    else:
        assert type(loss) is float
    assert grad.dtype == x.dtype and grad.shape == x.shape and grad.flags.c_contiguous
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad, dtype, "grad")


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, option", CASE_OPTIONS)
def test_matches_torch(case, option, dtype, reduction):
    rng = np.random.default_rng(2)
    x, target, kwargs = case.make(rng, dtype, case.shapes["small"], option)
    loss, grad = run(case, x, target, kwargs, reduction=reduction)
    xt = torch.tensor(x, requires_grad=True)
    torch_loss = case.torch_loss(xt, target, case.call_kwargs(kwargs), reduction)
    torch_loss.sum().backward()
    assert_close(loss, torch_loss.detach().numpy(), dtype, "loss vs torch")
    assert_close(grad, xt.grad.numpy(), dtype, "grad vs torch autograd")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case, option", CASE_OPTIONS)
def test_gradient_matches_finite_differences(case, option, reduction):
    """Central differences of the kernel's own loss (float64), element by element."""
    rng = np.random.default_rng(3)
    x, target, kwargs = case.make(rng, np.float64, (5, 4) if case.class_axis else (3, 7), option)

    def total(values):
        loss = run(case, values, target, kwargs, reduction=reduction, compute_grad=False).loss
        return float(np.sum(loss))

    _, grad = run(case, x, target, kwargs, reduction=reduction)
    h = 1e-6
    numeric = np.empty_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (total(up) - total(down)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------- conventions

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, option", CASE_OPTIONS)
def test_compute_grad_false_gives_same_loss_and_no_grad(case, option, dtype):
    rng = np.random.default_rng(4)
    x, target, kwargs = case.make(rng, dtype, case.shapes["small"], option)
    for reduction in REDUCTIONS:
        full = run(case, x, target, kwargs, reduction=reduction)
        loss_only = run(case, x, target, kwargs, reduction=reduction, compute_grad=False)
        assert loss_only.grad is None
        np.testing.assert_array_equal(loss_only.loss, full.loss)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, option", CASE_OPTIONS)
def test_out_and_in_place_match_allocating_call(case, option, dtype):
    rng = np.random.default_rng(5)
    x, target, kwargs = case.make(rng, dtype, case.shapes["threads"], option)
    expected_loss, expected_grad = run(case, x, target, kwargs)
    out = np.full_like(x, np.nan)
    loss, grad = run(case, x, target, kwargs, out=out)
    assert grad is out
    assert loss == expected_loss
    np.testing.assert_array_equal(out, expected_grad)
    x_in_place = x.copy()
    loss, grad = run(case, x_in_place, target, kwargs, out=x_in_place)
    assert grad is x_in_place
    assert loss == expected_loss
    np.testing.assert_array_equal(x_in_place, expected_grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, option", CASE_OPTIONS)
def test_bitwise_identical_for_every_thread_count(case, option, dtype):
    rng = np.random.default_rng(6)
    x, target, kwargs = case.make(rng, dtype, case.shapes["threads"], option)
    assert x.size > _kernels.SERIAL_THRESHOLD_ELEMENTS  # large enough to run in parallel
    results = {}
    for n_threads in (1, 2, 3):
        for reduction in REDUCTIONS:
            results[n_threads, reduction] = run(case, x, target, kwargs, reduction=reduction,
                                                n_threads=n_threads)
    for reduction in REDUCTIONS:
        first = results[1, reduction]
        for n_threads in (2, 3):
            other = results[n_threads, reduction]
            assert np.array_equal(np.asarray(other.loss), np.asarray(first.loss), equal_nan=True)
            np.testing.assert_array_equal(other.grad, first.grad)
    # and from run to run
    again = run(case, x, target, kwargs, n_threads=2)
    assert again.loss == results[2, "mean"].loss


@pytest.mark.parametrize("layout", ["fortran", "sliced", "negative_strides"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, option", CASE_OPTIONS)
def test_non_contiguous_inputs(case, option, dtype, layout):
    rng = np.random.default_rng(7)
    x, target, kwargs = case.make(rng, dtype, case.shapes["small"], option)
    expected = run(case, x, target, kwargs, reduction="none")
    if layout == "fortran":
        x_view = np.asfortranarray(x)
        target_view = np.asfortranarray(target)
    elif layout == "sliced":
        wide = np.zeros((x.shape[0], 2 * x.shape[1]), dtype=dtype)
        wide[:, ::2] = x
        x_view = wide[:, ::2]
        target_view = target
    else:
        x_view = x[::-1].copy()[::-1]  # same values, viewed through negative strides
        target_view = target[::-1].copy()[::-1]
    assert not x_view.flags.c_contiguous
    loss, grad = run(case, x_view, target_view, kwargs, reduction="none")
    np.testing.assert_array_equal(loss, expected.loss)
    np.testing.assert_array_equal(grad, expected.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, option", CASE_OPTIONS)
def test_every_simd_level_matches_reference(case, option, dtype, simd_level):
    assert fastloss.simd_level() == simd_level
    rng = np.random.default_rng(8)
    x, target, kwargs = case.make(rng, dtype, case.shapes["threads"], option)
    loss, grad = run(case, x, target, kwargs, reduction="none")
    ref_loss, ref_grad = run_reference(case, x, target, kwargs, reduction="none")
    assert_close(loss, ref_loss, dtype, f"loss at {simd_level}")
    assert_close(grad, ref_grad, dtype, f"grad at {simd_level}")


# The chunk layouts of the class losses (C <= 128) take each chunk's rows as one run of
# elements, with per-row values spread over it by vector permutes whose patterns depend on C
# and the vector width: check several whole chunks and a partial one, class counts around
# the vector widths (the row trees take C in (P/2, P], P the lanes of a vector: 16 or 8
# float32, 8 or 4 float64), ignored rows (one of them nan) and in-place gradients, at every
# level.
CHUNK_CLASS_COUNTS = [1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 64, 100, 128]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", CHUNK_CLASS_COUNTS)
def test_chunk_layouts_at_every_simd_level(n_classes, dtype, simd_level):
    rng = np.random.default_rng(n_classes)
    n = 3 * (2048 // n_classes) + 5
    x = (rng.standard_normal((n, n_classes)) * 3).astype(dtype)
    y = rng.integers(0, n_classes, n)
    y[::7] = -100
    x[7] = np.nan   # an ignored row: zero gradient, no loss, whatever its logits
    weight = rng.uniform(0.2, 2.0, n_classes)
    calls = [("softmax_cross_entropy", {}),
             ("softmax_cross_entropy", {"weight": weight.astype(dtype)}),
             ("softmax_cross_entropy", {"label_smoothing": 0.1}),
             ("softmax_focal", {"gamma": 2.0}),
             ("softmax_focal", {"gamma": 0.7, "alpha": weight})]
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    for name, kwargs in calls:
        loss, grad = getattr(fastloss, name)(x, y, reduction="none", **kwargs)
        ref_loss, ref_grad = getattr(reference, name)(x.astype(np.float64), y,
                                                      reduction="none", **kwargs)
        where = f"{name} {kwargs.keys()} at {simd_level}"
        np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=rtol, err_msg=where)
        np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=rtol * 1e-2, err_msg=where)
        assert not grad[y == -100].any()
        x_in_place = x.copy()
        getattr(fastloss, name)(x_in_place, y, reduction="none", out=x_in_place, **kwargs)
        np.testing.assert_array_equal(x_in_place, grad, err_msg=where)


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "softmax_focal"])
def test_target_check_finds_the_first_bad_index_at_every_simd_level(name, simd_level):
    """The class-index check scans blocks of 2048 targets with a vector loop and rescans a
    block only when it holds a bad one: the first bad position is named wherever it lies,
    the ignored targets before it do not count as bad, and the mean's denominator counts
    the kept targets."""
    n, n_classes = 5000, 4
    x = np.zeros((n, n_classes))
    good = np.arange(n) % n_classes
    good[::3] = -100
    kwargs = {"gamma": 0.0} if name == "softmax_focal" else {}   # both the cross-entropy
    loss = getattr(fastloss, name)(x, good, **kwargs).loss
    np.testing.assert_allclose(loss, np.log(n_classes), rtol=1e-13)
    assert getattr(fastloss, name)(x, good, reduction="sum", **kwargs).loss == pytest.approx(
        np.log(n_classes) * np.count_nonzero(good != -100), rel=1e-12)
    for position in (0, 1, 2047, 2048, 2049, 4095, 4999):
        for value in (-1, n_classes, -101, 2**40, -2**63, 2**63 - 1):
            target = good.copy()
            target[position] = value
            target[position + 1:] = -5   # later bad ones must not be named
            with pytest.raises(ValueError, match=rf"class index {value} at position {position},"):
                getattr(fastloss, name)(x, target)


# ------------------------------------------------------------------------ edge cases

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_empty_batch(case, dtype):
    rng = np.random.default_rng(9)
    shape = (0,) + tuple(case.shapes["small"][1:])
    x, target, kwargs = case.make(rng, dtype, shape, case.options[0])
    mean = run(case, x, target, kwargs)
    assert np.isnan(mean.loss) and mean.grad.shape == x.shape
    total = run(case, x, target, kwargs, reduction="sum")
    assert total.loss == 0.0 and type(total.loss) is float
    none = run(case, x, target, kwargs, reduction="none")
    assert none.loss.shape == (0,) if case.class_axis else none.loss.shape == x.shape


# losses whose input domain is the whole real line: nan and inf go through the kernel (for
# the others, binary_cross_entropy's [0, 1], they are a ValueError: test_table.py)
UNBOUNDED = [case for case in CASES if case.input_domain is None]
# (case, non-finite value): an infinite input where torch's formula overflows to nan and
# fastloss's stable form gives the limit is checked against the reference only (above)
TORCH_NONFINITE = [pytest.param(case, value, id=f"{case.name}-{value}") for case in UNBOUNDED
                   for value in [np.nan, np.inf, -np.inf]
                   if not (case.torch_nonfinite_differs and np.isinf(value))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("case", UNBOUNDED, ids=lambda c: c.name)
def test_nan_and_inf_stay_in_their_sample(case, dtype, bad_value):
    rng = np.random.default_rng(10)
    x, target, kwargs = case.make(rng, dtype, case.shapes["threads"], case.options[0])
    clean = run(case, x, target, kwargs, reduction="none")
    x_bad = x.copy()
    position = (3, 5) if x.ndim == 2 else (3,)
    x_bad[position] = bad_value
    loss, grad = run(case, x_bad, target, kwargs, reduction="none")
    ref_loss, ref_grad = run_reference(case, x_bad, target, kwargs, reduction="none")
    sample = position[0] if case.class_axis else position
    others = np.ones(loss.shape, dtype=bool)
    others[sample] = False
    np.testing.assert_array_equal(loss[others], clean.loss[others])
    grad_others = np.ones(grad.shape, dtype=bool)
    grad_others[sample] = False
    np.testing.assert_array_equal(grad[grad_others], clean.grad[grad_others])
    # the affected sample follows the reference (and so PyTorch): nan where it is nan
    assert_close(loss[sample], ref_loss[sample], dtype)
    assert_close(grad[sample], ref_grad[sample], dtype)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, bad_value", TORCH_NONFINITE)
def test_nan_and_inf_as_torch(case, dtype, bad_value):
    rng = np.random.default_rng(11)
    x, target, kwargs = case.make(rng, dtype, case.shapes["small"], case.options[0])
    x[(2, 1) if x.ndim == 2 else (2,)] = bad_value
    loss, grad = run(case, x, target, kwargs, reduction="none")
    xt = torch.tensor(x, requires_grad=True)
    torch_loss = case.torch_loss(xt, target, case.call_kwargs(kwargs), "none")
    torch_loss.sum().backward()
    assert_close(loss, torch_loss.detach().numpy(), dtype)
    assert_close(grad, xt.grad.numpy(), dtype)


# ------------------------------------------------------------------------- the build

def test_openmp_was_built_in():
    """Fails when the build silently fell back to serial kernels (FASTLOSS_ALLOW_NO_OPENMP=1
    accepts that, for platforms without an OpenMP runtime)."""
    import os

    if os.environ.get("FASTLOSS_ALLOW_NO_OPENMP", "0") not in ("", "0"):
        pytest.skip("FASTLOSS_ALLOW_NO_OPENMP is set")
    assert fastloss.openmp_enabled(), "fastloss was built without OpenMP"
    assert _kernels.default_n_threads() >= 1


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def test_simd_dispatch_picks_the_best_level_the_cpu_has():
    """Independent of the extension's own CPU detection: /proc/cpuinfo's flags."""
    import os
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        assert fastloss.simd_level() == "baseline"
        return
    levels = {name: compiled for name, compiled, _ in _kernels.isa_levels()}
    assert levels == {"baseline": True, "avx2": True, "avx512": True}, levels
    flags = _cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo to read CPU flags from")
    if {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma"} <= flags:
        expected = "avx512"
    elif {"avx2", "fma", "bmi2"} <= flags:
        expected = "avx2"
    else:
        expected = "baseline"
    assert _kernels.best_isa() == expected
    if not os.environ.get("FASTLOSS_SIMD"):
        assert fastloss.simd_level() == expected


def test_show_config_reports_build_and_dispatch(capsys):
    info = fastloss.show_config()
    printed = capsys.readouterr().out
    assert info["openmp"] == fastloss.openmp_enabled()
    assert info["simd_level"] == fastloss.simd_level()
    assert "-fno-trapping-math" in info["compile_flags"]
    assert "-ffast-math" not in info["compile_flags"] and "-march" not in info["compile_flags"]
    for key in ("openmp", "simd_level", "compile_flags", "default_n_threads"):
        assert key in printed
