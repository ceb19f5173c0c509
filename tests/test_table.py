"""The loss table (fastloss/_table.py) and what it makes: second derivatives, the generated
signatures and docstrings, the README's table, the new arguments' errors, the penalties and
gaussian_kl. The shared tests (tests/test_losses.py) run every table row through the
reference, finite differences, PyTorch and the calling conventions via tests/cases.py.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

import fastloss
from fastloss import _kernels, reference
from fastloss._table import ELEMENTWISE, ELEMENTWISE_BY_NAME, KERNELS, markdown_table

from cases import CASES, assert_close, option_id, torch

DTYPES = [np.float32, np.float64]
TABLE = {row.name for row in ELEMENTWISE}
HESS_CASES = [pytest.param(case, option, id=f"{case.name}-{option_id(option)}")
              for case in CASES if case.name in TABLE
              and ELEMENTWISE_BY_NAME[case.name].hessian is not None
              for option in case.options]


def call(module, case, x, target, kwargs, **extra):
    return getattr(module, case.name)(x, target, **case.call_kwargs(kwargs), **extra)


# ------------------------------------------------------------------ second derivatives

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, option", HESS_CASES)
def test_hessian_matches_reference(case, option, dtype, reduction):
    rng = np.random.default_rng(21)
    x, target, kwargs = case.make(rng, dtype, case.shapes["small"], option)
    got = call(fastloss, case, x, target, kwargs, reduction=reduction, compute_hess=True)
    ref = call(reference, case, x, target, kwargs, reduction=reduction, compute_hess=True)
    assert type(got).__name__ == "LossGradHess"
    assert got.hess.shape == x.shape and got.hess.dtype == x.dtype
    assert_close(got.loss, ref.loss, dtype, "loss")
    assert_close(got.grad, ref.grad, dtype, "grad")
    assert_close(got.hess, ref.hess, dtype, "hess")
    plain = call(fastloss, case, x, target, kwargs, reduction=reduction)
    # the same formulas in another compile-time variant of the pass: gcc may contract a
    # multiply-add into an FMA in one variant's loop (or its remainder) and not in the
    # other's, so the gradients agree to rounding (relative to the gradient's scale: where
    # a gradient is a difference of two terms, a last-place change in one term is many ulp
    # of a small result), not bitwise
    assert_close(got.grad, plain.grad, dtype, "grad with and without compute_hess")


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("case, option", HESS_CASES)
def test_hessian_matches_torch_double_backward(case, option):
    """The diagonal of torch's Hessian of the same loss (float64): for an element-wise loss
    it is d/dx of the sum of the gradient. Piecewise-linear losses ("scale") return the
    weight times the gradient's scale instead, everywhere."""
    rng = np.random.default_rng(22)
    x, target, kwargs = case.make(rng, np.float64, case.shapes["small"], option)
    got = call(fastloss, case, x, target, kwargs, compute_hess=True)
    row = ELEMENTWISE_BY_NAME[case.name]
    if row.hessian == "scale":
        weight = np.broadcast_to(kwargs.get("weight", 1.0), x.shape)
        np.testing.assert_allclose(got.hess, weight / x.size, rtol=1e-13)
        return
    xt = torch.tensor(x, requires_grad=True)
    loss = case.torch_loss(xt, target, case.call_kwargs(kwargs), "mean")
    (grad,) = torch.autograd.grad(loss, xt, create_graph=True)
    if not grad.requires_grad:   # the gradient does not depend on x (kl_div): hessian 0
        hess = torch.zeros_like(xt)
    else:
        (hess,) = torch.autograd.grad(grad.sum(), xt, allow_unused=True)
    assert_close(got.hess, hess.numpy(), np.float64, "hess vs torch")


@pytest.mark.parametrize("case, option", HESS_CASES)
def test_hessian_matches_finite_differences_of_the_gradient(case, option):
    rng = np.random.default_rng(23)
    x, target, kwargs = case.make(rng, np.float64, (3, 7), option)
    got = call(fastloss, case, x, target, kwargs, reduction="sum", compute_hess=True)
    if ELEMENTWISE_BY_NAME[case.name].hessian == "scale":
        return   # its second derivative is 0 almost everywhere (checked above)
    h = 1e-6
    up = call(fastloss, case, x + h, target, kwargs, reduction="sum").grad
    down = call(fastloss, case, x - h, target, kwargs, reduction="sum").grad
    numeric = (up - down) / (2 * h)
    # away from the kinks of huber / smooth L1 / squared hinge (a step of h crosses them)
    np.testing.assert_allclose(got.hess, numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hess_out_and_in_place(dtype):
    rng = np.random.default_rng(24)
    x = rng.standard_normal((300, 257)).astype(dtype)
    t = rng.standard_normal((300, 257)).astype(dtype)
    expected = fastloss.log_cosh(x, t, compute_hess=True)
    hess_out = np.full_like(x, np.nan)
    got = fastloss.log_cosh(x, t, compute_hess=True, hess_out=hess_out)
    assert got.hess is hess_out
    np.testing.assert_array_equal(hess_out, expected.hess)
    x_in_place = x.copy()
    got = fastloss.log_cosh(x_in_place, t, compute_hess=True, hess_out=x_in_place)
    assert got.hess is x_in_place
    np.testing.assert_array_equal(x_in_place, expected.hess)
    np.testing.assert_array_equal(got.grad, expected.grad)
    for n_threads in (1, 2, 3):
        again = fastloss.log_cosh(x, t, compute_hess=True, n_threads=n_threads)
        np.testing.assert_array_equal(again.hess, expected.hess)


# ------------------------------------------------------------------ made from the table

def test_every_row_is_a_public_function_with_the_generated_signature():
    for row in ELEMENTWISE:
        function = getattr(fastloss, row.name)
        assert row.name in fastloss.__all__
        params = inspect.signature(function).parameters
        assert list(params)[:2] == [row.input_name, "target"]
        for name in row.options + ("weight", "reduction", "compute_grad", "out", "n_threads"):
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, (row.name, name)
        for param in row.params:
            assert params[param.name].default == param.default
        assert ("compute_hess" in params) == (row.hessian is not None)
        assert function.__doc__.startswith(row.summary)
        assert row.reference in function.__doc__ and "Maths" in function.__doc__
        assert hasattr(reference, row.name)


def test_kernel_list_and_table_agree():
    assert _kernels.ELEMENTWISE_KERNEL_COUNT == len(KERNELS)
    used = set()
    for row in ELEMENTWISE:
        defaults = {p.name: p.default for p in row.params}
        used.add(row.kernel(defaults)[0])
    used |= {"poisson_linear", "kl_div_log_target"}   # picked by a bool option
    assert used == {kernel.name for kernel in KERNELS}


def test_readme_table_of_losses_is_the_generated_one():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert markdown_table() in readme, "regenerate the README table: fastloss._table.markdown_table()"


# ------------------------------------------------------------------ errors of the new arguments

def _unchanged_after(error, words, function, *args, **kwargs):
    arrays = [a for a in list(args) + list(kwargs.values()) if isinstance(a, np.ndarray)]
    saved = [a.copy() for a in arrays]
    with pytest.raises(error) as info:
        function(*args, **kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    for array, copy in zip(arrays, saved):
        np.testing.assert_array_equal(array, copy)


BAD_OPTIONS = [
    ("pinball", {"quantile": 0.0}, "quantile"), ("pinball", {"quantile": 1.0}, "quantile"),
    ("pinball", {"quantile": np.array([0.5, 0.5, 1.5, 0.5])}, "quantile"),
    ("pinball", {"quantile": np.array([0.5, 0.5])}, "quantile"),
    ("tweedie", {"power": 1.0}, "power"), ("tweedie", {"power": 2.0}, "power"),
    ("poisson_nll", {"eps": 0.0}, "eps"), ("poisson_nll", {"eps": -1.0}, "eps"),
    ("mse", {"reduction": "batchmean"}, "batchmean"),
    ("huber", {"weight": np.ones(5)}, "weight"),
    ("mse", {"compute_grad": False, "compute_hess": True}, "compute_hess"),
    ("mse", {"hess_out": np.zeros((3, 4))}, "hess_out"),
    ("mse", {"compute_hess": True, "hess_out": np.zeros((3, 5))}, "hess_out"),
]


@pytest.mark.parametrize("name, options, word", BAD_OPTIONS,
                         ids=[f"{n}-{w}-{i}" for i, (n, _, w) in enumerate(BAD_OPTIONS)])
def test_bad_new_options_raise_value_error_with_nothing_written(name, options, word):
    rng = np.random.default_rng(25)
    x = rng.standard_normal((3, 4))
    t = rng.random((3, 4))
    kwargs = dict(options)
    if "compute_grad" not in kwargs:
        kwargs["out"] = np.zeros_like(x)   # a gradient buffer that must stay untouched
    _unchanged_after(ValueError, [word], getattr(fastloss, name), x, t, **kwargs)
    with pytest.raises(ValueError):
        getattr(reference, name)(x, t, **options)


def test_bool_options_must_be_bools():
    x = np.zeros(4)
    with pytest.raises(TypeError, match="log_input"):
        fastloss.poisson_nll(x, x, log_input=1)
    with pytest.raises(TypeError, match="log_target"):
        fastloss.kl_div(x, x, log_target="yes")


@pytest.mark.parametrize("bad", [-0.1, 1.1, np.nan])
def test_binary_cross_entropy_input_outside_0_1(bad):
    rng = np.random.default_rng(26)
    x = rng.uniform(0, 1, (300, 257))
    t = rng.random((300, 257))
    x[123, 45] = bad
    _unchanged_after(ValueError, ["[0, 1]", str(123 * 257 + 45)], fastloss.binary_cross_entropy,
                     x, t, out=x)
    with pytest.raises(ValueError):
        reference.binary_cross_entropy(x, t)


def test_batchmean_divides_by_the_batch():
    rng = np.random.default_rng(27)
    x = np.log(rng.dirichlet(np.ones(5), 8))
    t = rng.dirichlet(np.ones(5), 8)
    total = fastloss.kl_div(x, t, reduction="sum")
    batch = fastloss.kl_div(x, t, reduction="batchmean")
    assert batch.loss == pytest.approx(total.loss / 8, rel=1e-14)
    np.testing.assert_allclose(batch.grad, total.grad / 8, rtol=1e-15)
    if torch is not None:
        import torch.nn.functional as F
        expected = F.kl_div(torch.tensor(x), torch.tensor(t), reduction="batchmean")
        assert batch.loss == pytest.approx(float(expected), rel=1e-12)


def test_multi_quantile_pinball_matches_one_call_per_level():
    rng = np.random.default_rng(28)
    levels = np.array([0.1, 0.5, 0.9])
    x = rng.standard_normal((50, 3))
    t = rng.standard_normal((50, 3))
    got = fastloss.pinball(x, t, quantile=levels, reduction="none")
    for j, q in enumerate(levels):
        single = fastloss.pinball(x[:, j].copy(), t[:, j].copy(), quantile=q, reduction="none")
        np.testing.assert_array_equal(got.loss[:, j], single.loss)
        np.testing.assert_array_equal(got.grad[:, j], single.grad)


def test_pinball_matches_scikit_learn_formula():
    """scikit-learn's PinballLoss per element: q r if r >= 0 else (q - 1) r with r = y - raw,
    gradient -q if r >= 0 (at 0 too) else 1 - q; written out in float64."""
    rng = np.random.default_rng(29)
    x = rng.standard_normal(1000)
    t = np.round(rng.standard_normal(1000), 1)
    x[:10] = t[:10]   # r = 0
    q = 0.3
    r = t - x
    loss, grad = fastloss.pinball(x, t, quantile=q, reduction="none")
    np.testing.assert_allclose(loss, np.where(r >= 0, q * r, (q - 1) * r), rtol=1e-15)
    np.testing.assert_array_equal(grad, np.where(r >= 0, -q, 1 - q))


def test_tweedie_matches_lightgbm_formulas():
    """LightGBM's tweedie objective: grad -t exp((1 - p) s) + exp((2 - p) s), hess
    -t (1 - p) exp((1 - p) s) + (2 - p) exp((2 - p) s); its metric the deviance form."""
    rng = np.random.default_rng(30)
    s = rng.standard_normal(500)
    t = rng.poisson(2.0, 500).astype(float)
    p = 1.3
    got = fastloss.tweedie(s, t, power=p, reduction="none", compute_hess=True)
    a, b = np.exp((1 - p) * s), np.exp((2 - p) * s)
    np.testing.assert_allclose(got.loss, -t * a / (1 - p) + b / (2 - p), rtol=1e-13)
    np.testing.assert_allclose(got.grad, -t * a + b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.hess, -t * (1 - p) * a + (2 - p) * b, rtol=1e-13)


def test_hinge_and_squared_hinge_match_scikit_learn_and_keras_formulas():
    rng = np.random.default_rng(31)
    x = rng.standard_normal(500)
    t = np.where(rng.random(500) < 0.5, -1.0, 1.0)
    x[:4] = t[:4] * 1.0   # on the kink: m - t x = 0
    z = 1.0 - t * x
    loss, grad = fastloss.hinge(x, t, reduction="none")
    np.testing.assert_array_equal(loss, np.maximum(0, z))
    np.testing.assert_array_equal(grad, np.where(z > 0, -t, 0.0))   # 0 at the kink
    loss, grad = fastloss.squared_hinge(x, t, reduction="none")
    np.testing.assert_allclose(loss, np.maximum(0, z) ** 2, rtol=1e-15)
    np.testing.assert_allclose(grad, -2 * t * np.maximum(0, z), rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_cosh_and_soft_margin_are_finite_and_accurate_everywhere(dtype):
    d = np.array([0.0, 1e-30, 1e-8, 1e-3, 0.5, 0.999, 1.0, 1.001, 30.0, 1e4, 1e30,
                  np.finfo(dtype).max], dtype=dtype)
    loss, grad = fastloss.log_cosh(d, np.zeros_like(d), reduction="none")
    wide = d.astype(np.float64)
    with np.errstate(over="ignore"):   # (the series near 0; cosh rounds to 1 there)
        series = wide**2 / 2 - wide**4 / 12 + wide**6 / 45 - 17 * wide**8 / 2520
        exact = np.where(wide < 1e-2, series,
                         np.where(wide < 1e4, np.log(np.cosh(np.minimum(wide, 1e4).astype(np.longdouble))).astype(np.float64),
                                  wide - np.log(2)))
    rtol = 3e-7 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(loss, exact.astype(dtype), rtol=rtol, atol=0)
    np.testing.assert_allclose(grad, np.tanh(d.astype(np.float64)), rtol=rtol, atol=0)
    loss, grad = fastloss.soft_margin(-d, np.ones_like(d), reduction="none")
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, np.logaddexp(0, d.astype(np.float64)), rtol=rtol)


# ------------------------------------------------------------------ penalties

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["l1_penalty", "l2_penalty"])
def test_penalties_match_reference_and_accumulate(name, dtype):
    rng = np.random.default_rng(32)
    w = rng.standard_normal((300, 257)).astype(dtype)
    w[0, :3] = 0
    function, ref = getattr(fastloss, name), getattr(reference, name)
    got, expected = function(w, strength=0.01), ref(w, strength=0.01)
    assert type(got.loss) is float
    assert got.loss == pytest.approx(expected.loss, rel=1e-12 if dtype == np.float64 else 1e-6)
    np.testing.assert_allclose(got.grad, expected.grad, rtol=1e-6)
    base = rng.standard_normal(w.shape).astype(dtype)
    accumulated = base.copy()
    result = function(w, strength=0.01, out=accumulated, accumulate=True)
    assert result.grad is accumulated
    # (an FMA may add the product with one rounding: compare at the operands' scale)
    np.testing.assert_allclose(accumulated, base + expected.grad, rtol=1e-6,
                               atol=1e-6 * float(np.abs(base).max()))
    for n_threads in (1, 2, 3):
        again = function(w, strength=0.01, n_threads=n_threads)
        assert again.loss == got.loss
        np.testing.assert_array_equal(again.grad, got.grad)
    with pytest.raises(ValueError, match="accumulate"):
        function(w, strength=0.01, accumulate=True)
    with pytest.raises(ValueError, match="strength"):
        function(w, strength=-1.0)


@pytest.mark.parametrize("name", ["l1_penalty", "l2_penalty"])
def test_penalties_fast_path_agrees_with_the_checked_path(name):
    """A plain call takes the C-level fast path; a float strength subclass, a list-like view
    or a numpy scalar strength goes through the checked path: the same bits either way, in
    place too, and a strength the fast path does not take still gets its error."""
    rng = np.random.default_rng(33)
    w = rng.standard_normal((5, 7, 3)).astype(np.float32)
    function = getattr(fastloss, name)
    fast = function(w, strength=0.25)
    checked = function(w, strength=np.float64(0.25))
    assert fast.loss == checked.loss and type(fast.loss) is float
    np.testing.assert_array_equal(fast.grad, checked.grad)
    in_place = w.copy()
    result = function(in_place, strength=0.25, out=in_place)
    assert result.grad is in_place
    np.testing.assert_array_equal(in_place, fast.grad)
    overlapping = np.zeros(w.size + 1, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        function(overlapping[:-1].reshape(w.shape), strength=1.0,
                 out=overlapping[1:].reshape(w.shape))
    with pytest.raises(ValueError, match="strength"):
        function(w, strength=float("nan"))
    with pytest.raises(ValueError, match="shape"):
        function(w, strength=1.0, out=np.zeros((7, 5, 3), np.float32))


def test_sigmoid_focal_hessian_is_negative_where_p_t_is_small():
    """The exact second derivative at gamma = 2, t = 1 changes sign near p_t = 0.058 (the
    root of 5 (1 - p) = 2 (1 - 3p) (-log p)): returned as it is, as the docstring says."""
    p = np.array([0.01, 0.04, 0.07, 0.3, 0.9])
    x = np.log(p / (1 - p))
    got = fastloss.sigmoid_focal(x, np.ones_like(x), alpha=-1.0, gamma=2.0, reduction="none",
                                 compute_hess=True)
    assert (np.sign(got.hess) == [-1, -1, 1, 1, 1]).all()
    root = 0.058
    assert 5 * (1 - root) == pytest.approx(2 * (1 - 3 * root) * -np.log(root), rel=2e-3)


# ------------------------------------------------------------------ gaussian_kl

def _torch_gaussian_kl(m, v, reduction):
    per_sample = -0.5 * (1 + v - m ** 2 - v.exp()).sum(dim=1)
    return {"none": per_sample, "sum": per_sample.sum(), "mean": per_sample.mean()}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_kl_matches_reference_and_torch(dtype, reduction):
    rng = np.random.default_rng(33)
    m = rng.standard_normal((70, 33)).astype(dtype)
    v = rng.standard_normal((70, 33)).astype(dtype)
    got = fastloss.gaussian_kl(m, v, reduction=reduction, compute_hess=True)
    ref = reference.gaussian_kl(m, v, reduction=reduction, compute_hess=True)
    assert_close(got.loss, ref.loss, dtype)
    for a, b in zip(got.grad + got.hess, ref.grad + ref.hess):
        assert_close(a, b, dtype)
    if torch is not None:
        mt = torch.tensor(m, requires_grad=True)
        vt = torch.tensor(v, requires_grad=True)
        loss = _torch_gaussian_kl(mt, vt, reduction)
        loss.sum().backward()
        assert_close(got.loss, loss.detach().numpy(), dtype)
        assert_close(got.grad[0], mt.grad.numpy(), dtype)
        assert_close(got.grad[1], vt.grad.numpy(), dtype)


def test_gaussian_kl_out_tuple_finite_differences_and_errors():
    rng = np.random.default_rng(34)
    m, v = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    buffers = (np.empty_like(m), None)
    got = fastloss.gaussian_kl(m, v, out=buffers)
    assert got.grad[0] is buffers[0]
    h = 1e-6
    for which in (0, 1):
        numeric = np.empty_like(m)
        for index in np.ndindex(m.shape):
            args_up, args_down = [m.copy(), v.copy()], [m.copy(), v.copy()]
            args_up[which][index] += h
            args_down[which][index] -= h
            numeric[index] = (fastloss.gaussian_kl(*args_up).loss
                              - fastloss.gaussian_kl(*args_down).loss) / (2 * h)
        np.testing.assert_allclose(got.grad[which], numeric, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="out"):
        fastloss.gaussian_kl(m, v, out=(np.empty_like(m),))
    with pytest.raises(ValueError, match="log_var"):
        fastloss.gaussian_kl(m, v[:, :2])
    with pytest.raises(ValueError, match="out"):
        fastloss.gaussian_kl(m, v, out=(v, None))   # out[0] overlaps log_var
    with pytest.raises(ValueError):
        fastloss.gaussian_kl(m, v, compute_grad=False, out=(np.empty_like(m), None))
    empty = fastloss.gaussian_kl(np.zeros((0, 3)), np.zeros((0, 3)))
    assert np.isnan(empty.loss) and empty.grad[0].shape == (0, 3)
