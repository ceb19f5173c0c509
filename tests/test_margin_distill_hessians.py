"""Second derivatives of multi_margin (p=2) and kl_divergence_with_logits (issue 15), and the
two kernel bugs issue 15 fixed in them (a nan/inf class weight of a row without an active
hinge; the distill KL's float32 overflow near FLT_MAX).

The hessian (the diagonal of the Hessian of the returned loss, scaled like the gradient) is
held against the diagonal of torch.func.hessian of the loss written in torch (float64, every
option and reduction), against central finite differences of the kernel's own gradient, and
against fastloss.reference in float32 and float64; then hess_out's rules (those of out), the
bits (n_threads, every SIMD level, with or without the hessian), empty batches, nan/inf
confinement, huge float32 logits, and every error with nothing written.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from fastloss import _kernels, reference

from cases import assert_close, torch

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]

MARGIN_OPTIONS = [{}, {"margin": 0.3}, {"margin": 2.0, "weight": True}, {"margin": -0.5},
                  {"weight": True}]
DISTILL_OPTIONS = [{}, {"temperature": 3.0}, {"temperature": 0.5}]


def option_id(option):
    return "-".join(f"{k}={v}" for k, v in option.items()) or "default"


def margin_inputs(rng, dtype, shape, option, spread=0.7, avoid_kinks=False):
    """(input, target, kwargs) of a p=2 multi_margin call; with avoid_kinks no hinge within
    1e-3 of its kink (a finite-difference step must not cross one: small shapes only)."""
    n, c = shape
    kwargs = {"p": 2, **{k: v for k, v in option.items() if k != "weight"}}
    if option.get("weight"):
        kwargs["weight"] = rng.uniform(0.2, 2.0, c).astype(dtype)
    margin = kwargs.get("margin", 1.0)
    while True:
        x = (rng.standard_normal((n, c)) * spread).astype(dtype)
        y = rng.integers(0, c, n)
        v = margin - x[np.arange(n), y][:, None] + x
        v[np.arange(n), y] = 1.0
        if not avoid_kinks or np.abs(v).min(initial=1.0) > 1e-3:
            return x, y, kwargs


def distill_inputs(rng, dtype, shape, option, spread=3.0, avoid_kinks=False):
    x = (rng.standard_normal(shape) * spread).astype(dtype)
    t = (rng.standard_normal(shape) * spread).astype(dtype)
    return x, t, dict(option)


LOSSES = {
    "multi_margin": (margin_inputs, MARGIN_OPTIONS),
    "kl_divergence_with_logits": (distill_inputs, DISTILL_OPTIONS),
}
CASES = [pytest.param(name, option, id=f"{name}-{option_id(option)}")
         for name, (_, options) in LOSSES.items() for option in options]


def make(name, rng, dtype, shape, option, avoid_kinks=False):
    return LOSSES[name][0](rng, dtype, shape, option, avoid_kinks=avoid_kinks)


def call(module, name, x, other, kwargs, **extra):
    return getattr(module, name)(x, other, **kwargs, **extra)


# ------------------------------------------------------------------ the losses in torch

def torch_multi_margin(x, y, kwargs, reduction):
    """F.multi_margin_loss(p=2) written out in torch (its own backward has no derivative):
    per row (w_y / C) sum_{j != y} max(0, margin - x_y + x_j)^2."""
    n, c = x.shape
    y_t = torch.as_tensor(y)
    v = kwargs.get("margin", 1.0) - x.gather(1, y_t[:, None]) + x
    others = torch.ones(n, c, dtype=torch.bool)
    others[torch.arange(n), y_t] = False
    terms = torch.where(others & (v > 0), v, torch.zeros_like(v)) ** 2
    w = kwargs.get("weight")
    w_y = torch.as_tensor(w, dtype=x.dtype)[y_t] if w is not None else torch.ones(n, dtype=x.dtype)
    per = w_y * terms.sum(dim=1) / c
    return {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]


def torch_distill_kl(x, t, kwargs, reduction):
    temperature = kwargs.get("temperature", 1.0)
    log_q = torch.nn.functional.log_softmax(x / temperature, dim=1)
    log_p = torch.nn.functional.log_softmax(torch.as_tensor(t, dtype=x.dtype) / temperature,
                                            dim=1)
    per = torch.nn.functional.kl_div(log_q, log_p, log_target=True, reduction="none").sum(1)
    per = temperature ** 2 * per
    return {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]


TORCH_LOSSES = {"multi_margin": torch_multi_margin, "kl_divergence_with_logits": torch_distill_kl}


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("option", MARGIN_OPTIONS, ids=option_id)
def test_torch_form_of_multi_margin_is_torchs(option):
    """The written-out form above is F.multi_margin_loss (values and gradients)."""
    rng = np.random.default_rng(30)
    x, y, kwargs = margin_inputs(rng, np.float64, (9, 6), option)
    for reduction in REDUCTIONS:
        xa, xb = (torch.tensor(x, requires_grad=True) for _ in range(2))
        kw = dict(kwargs)
        if "weight" in kw:
            kw["weight"] = torch.as_tensor(kw["weight"])
        ours = torch_multi_margin(xa, y, kwargs, reduction)
        theirs = torch.nn.functional.multi_margin_loss(xb, torch.as_tensor(y),
                                                       reduction=reduction, **kw)
        ours.sum().backward()
        theirs.sum().backward()
        np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-13)
        np.testing.assert_allclose(xa.grad.numpy(), xb.grad.numpy(), rtol=1e-13, atol=1e-16)


def torch_hessian_diagonal(name, x, other, kwargs, reduction):
    """The diagonal of torch.func.hessian of the loss (of loss.sum() for "none")."""
    shape = x.shape

    def loss(flat):
        value = TORCH_LOSSES[name](flat.reshape(shape), other, kwargs, reduction)
        return value.sum()

    full = torch.func.hessian(loss)(torch.tensor(x).reshape(-1))
    return torch.diagonal(full).reshape(shape).numpy()


# ------------------------------------------------------------------ values

@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name, option", CASES)
def test_hessian_is_the_diagonal_of_torchs_hessian(name, option, reduction):
    rng = np.random.default_rng(31)
    x, other, kwargs = make(name, rng, np.float64, (7, 6), option)
    got = call(fastloss, name, x, other, kwargs, reduction=reduction, compute_hess=True)
    assert type(got).__name__ == "LossGradHess" and got.hess.shape == x.shape
    expected = torch_hessian_diagonal(name, x, other, kwargs, reduction)
    assert_close(got.hess, expected, np.float64, "hess vs torch.func.hessian")
    # and the loss and gradient of the same call are torch's
    xt = torch.tensor(x, requires_grad=True)
    value = TORCH_LOSSES[name](xt, other, kwargs, reduction)
    value.sum().backward()
    assert_close(got.loss, value.detach().numpy(), np.float64, "loss vs torch")
    assert_close(got.grad, xt.grad.numpy(), np.float64, "grad vs torch")


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_distill_hessian_does_not_depend_on_the_teacher_or_temperature_scale():
    """q (1 - q) of the student's tempered softmax, with no factor of T: the teacher does not
    enter."""
    rng = np.random.default_rng(32)
    x = rng.standard_normal((5, 8)) * 2
    for temperature in (0.7, 4.0):
        hs = []
        for teacher in (rng.standard_normal((5, 8)), rng.standard_normal((5, 8)) * 9):
            hs.append(fastloss.kl_divergence_with_logits(
                x, teacher, temperature=temperature, reduction="sum", compute_hess=True).hess)
        q = np.exp(x / temperature)
        q /= q.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(hs[0], q * (1 - q), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(hs[1], hs[0], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name, option", CASES)
def test_hessian_matches_finite_differences_of_the_gradient(name, option):
    """Central differences of the kernel's own gradient, one column at a time (rows are
    independent, so a column step gives every row's diagonal entry)."""
    rng = np.random.default_rng(33)
    x, other, kwargs = make(name, rng, np.float64, (6, 9), option, avoid_kinks=True)
    got = call(fastloss, name, x, other, kwargs, reduction="sum", compute_hess=True)
    step = 1e-6
    numeric = np.empty_like(x)
    for j in range(x.shape[1]):
        up, down = x.copy(), x.copy()
        up[:, j] += step
        down[:, j] -= step
        g_up = call(fastloss, name, up, other, kwargs, reduction="sum").grad
        g_down = call(fastloss, name, down, other, kwargs, reduction="sum").grad
        numeric[:, j] = (g_up[:, j] - g_down[:, j]) / (2 * step)
    np.testing.assert_allclose(got.hess, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, option", CASES)
def test_hessian_matches_reference(name, option, dtype, reduction):
    """Kernel against the NumPy reference; the loss and gradient of a compute_hess call are
    bitwise those of a plain call (the same pass)."""
    rng = np.random.default_rng(34)
    # C = 300: several runs of the kernels' inner loops (256), the label in either run
    x, other, kwargs = make(name, rng, dtype, (23, 300), option)
    got = call(fastloss, name, x, other, kwargs, reduction=reduction, compute_hess=True)
    ref = call(reference, name, x, other, kwargs, reduction=reduction, compute_hess=True)
    assert type(ref).__name__ == "LossGradHess"
    assert got.hess.dtype == x.dtype and got.hess.shape == x.shape
    assert got.hess.flags.c_contiguous
    assert_close(got.loss, ref.loss, dtype, "loss")
    assert_close(got.grad, ref.grad, dtype, "grad")
    assert_close(got.hess, ref.hess, dtype, "hess")
    plain = call(fastloss, name, x, other, kwargs, reduction=reduction)
    assert type(plain).__name__ == "LossResult" and len(plain) == 2
    np.testing.assert_array_equal(np.asarray(plain.loss), np.asarray(got.loss))
    assert plain.grad.tobytes() == got.grad.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_distill_hessian_of_a_dominant_class_is_accurate(dtype):
    """q close to 1: q (1 - q) from E_o / (1 + E_o)^2, not from 1 - q rounded (which would
    be 0 or off by ~1e-7 / (1 - q) relative in float32)."""
    x = np.zeros((4, 50), dtype=dtype)
    x[:, 7] = np.array([8.0, 14.0, 20.0, 30.0], dtype=dtype)   # 1 - q down to ~1e-11
    x[:, 3] = -3.0
    t = np.zeros_like(x)
    got = fastloss.kl_divergence_with_logits(x, t, reduction="sum", compute_hess=True).hess
    wide = x.astype(np.float64)
    e = np.exp(wide - wide.max(axis=1, keepdims=True))
    e[:, 7] = 0.0
    others = e.sum(axis=1)   # the other classes' exps, no cancellation
    exact_top = others / (1.0 + others) ** 2
    np.testing.assert_allclose(got[:, 7], exact_top, rtol=5e-6 if dtype == np.float32 else 1e-13)
    assert (got[:, 7] > 0).all()
    ref = reference.kl_divergence_with_logits(x, t, reduction="sum", compute_hess=True).hess
    np.testing.assert_allclose(ref[:, 7], exact_top, rtol=1e-6 if dtype == np.float32 else 1e-13)


# ------------------------------------------------------------------ calling conventions

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_hess_out_in_place_and_threads(name, dtype):
    rng = np.random.default_rng(35)
    option = {"margin": 0.8, "weight": True} if name == "multi_margin" else {"temperature": 2.0}
    x, other, kwargs = make(name, rng, dtype, (700, 257), option)   # 12 blocks
    expected = call(fastloss, name, x, other, kwargs, compute_hess=True, n_threads=1)
    hess_out = np.full_like(x, np.nan)
    got = call(fastloss, name, x, other, kwargs, compute_hess=True, hess_out=hess_out)
    assert got.hess is hess_out
    assert hess_out.tobytes() == expected.hess.tobytes()
    # out and hess_out together
    out, hess_out = np.empty_like(x), np.empty_like(x)
    got = call(fastloss, name, x, other, kwargs, compute_hess=True, out=out, hess_out=hess_out)
    assert got.grad is out and got.hess is hess_out
    assert out.tobytes() == expected.grad.tobytes()
    # the hessian over the input (out elsewhere), and the gradient over it
    for in_place in ("hess", "grad"):
        x_in_place = x.copy()
        where = {"hess_out": x_in_place} if in_place == "hess" else {"out": x_in_place}
        got = call(fastloss, name, x_in_place, other, kwargs, compute_hess=True, **where)
        assert (got.hess if in_place == "hess" else got.grad) is x_in_place
        assert got.hess.tobytes() == expected.hess.tobytes(), in_place
        assert got.grad.tobytes() == expected.grad.tobytes(), in_place
        assert np.asarray(got.loss).tobytes() == np.asarray(expected.loss).tobytes()
    for n_threads in (2, 3, None):
        for reduction in REDUCTIONS:
            one = call(fastloss, name, x, other, kwargs, compute_hess=True, n_threads=1,
                       reduction=reduction)
            again = call(fastloss, name, x, other, kwargs, compute_hess=True,
                         n_threads=n_threads, reduction=reduction)
            assert np.asarray(again.loss).tobytes() == np.asarray(one.loss).tobytes()
            assert again.grad.tobytes() == one.grad.tobytes()
            assert again.hess.tobytes() == one.hess.tobytes()


@pytest.mark.parametrize("name", list(LOSSES))
def test_non_contiguous_input(name):
    rng = np.random.default_rng(36)
    x, other, kwargs = make(name, rng, np.float64, (30, 11), {})
    expected = call(fastloss, name, x, other, kwargs, compute_hess=True)
    fortran = np.asfortranarray(x)
    got = call(fastloss, name, fortran, other, kwargs, compute_hess=True)
    assert got.hess.tobytes() == expected.hess.tobytes()
    wide = np.zeros((30, 22))
    wide[:, ::2] = x
    got = call(fastloss, name, wide[:, ::2], other, kwargs, compute_hess=True)
    assert got.hess.tobytes() == expected.hess.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_simd_level(dtype, simd_level):
    """Hessians at each level against the reference; rows of 1..300 classes (tails of
    every width, two runs), huge float32 rows (the float64 exp pass) among them."""
    assert fastloss.simd_level() == simd_level
    rng = np.random.default_rng(37)
    for n_classes in (1, 2, 7, 16, 33, 300):
        for name, option in (("multi_margin", {"margin": 0.9, "weight": True}),
                             ("kl_divergence_with_logits", {"temperature": 1.5})):
            x, other, kwargs = make(name, rng, dtype, (40, n_classes), option)
            if name == "kl_divergence_with_logits" and dtype == np.float32:
                x[3, 0] = 3e38
                other[5, -1] = -3.3e38
            where = f"{name} C={n_classes} at {simd_level}"
            got = call(fastloss, name, x, other, kwargs, reduction="none", compute_hess=True)
            ref = call(reference, name, x, other, kwargs, reduction="none", compute_hess=True)
            assert_close(got.loss, ref.loss, dtype, where)
            assert_close(got.grad, ref.grad, dtype, where)
            assert_close(got.hess, ref.hess, dtype, where)
            plain = call(fastloss, name, x, other, kwargs, reduction="none")
            assert plain.grad.tobytes() == got.grad.tobytes(), where
            x_in_place = x.copy()
            call(fastloss, name, x_in_place, other, kwargs, reduction="none",
                 compute_hess=True, hess_out=x_in_place)
            assert x_in_place.tobytes() == got.hess.tobytes(), where


@pytest.mark.parametrize("name", list(LOSSES))
def test_empty_batch(name):
    rng = np.random.default_rng(38)
    for shape in ((0, 5), (0, 1)):
        x, other, kwargs = make(name, rng, np.float32, shape, {})
        mean = call(fastloss, name, x, other, kwargs, compute_hess=True)
        assert np.isnan(mean.loss) and mean.hess.shape == shape and mean.grad.shape == shape
        total = call(fastloss, name, x, other, kwargs, reduction="sum", compute_hess=True)
        assert total.loss == 0.0 and total.hess.shape == shape
        none = call(fastloss, name, x, other, kwargs, reduction="none", compute_hess=True)
        assert none.loss.shape == (0,) and none.hess.dtype == np.float32


def test_single_class_rows():
    """C = 1: no hinge term (multi_margin), q = 1 (KL): hessian 0."""
    x = np.array([[0.5], [-2.0]])
    got = fastloss.multi_margin(x, np.array([0, 0]), p=2, compute_hess=True)
    assert got.loss == 0.0 and (got.grad == 0).all() and (got.hess == 0).all()
    got = fastloss.kl_divergence_with_logits(x, np.array([[1.0], [3.0]]), compute_hess=True)
    assert got.loss == 0.0 and (got.hess == 0).all()


# ------------------------------------------------------------------ nan, inf, huge values

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_nan_and_inf_stay_in_their_row(name, dtype):
    rng = np.random.default_rng(39)
    x, other, kwargs = make(name, rng, dtype, (12, 9), {})
    clean = call(fastloss, name, x, other, kwargs, reduction="none", compute_hess=True)
    bad_x = x.copy()
    bad_x[1, 4], bad_x[3, 0], bad_x[5, 2], bad_x[7, 8] = np.nan, np.inf, -np.inf, np.nan
    bad_x[9] = -np.inf
    bad_other = other.copy()
    if name == "kl_divergence_with_logits":
        bad_other[10, 3], bad_other[11, 0] = np.nan, -np.inf
    got = call(fastloss, name, bad_x, bad_other, kwargs, reduction="none", compute_hess=True)
    ref = call(reference, name, bad_x, bad_other, kwargs, reduction="none", compute_hess=True)
    for what in ("loss", "grad", "hess"):
        a, b = getattr(got, what), getattr(ref, what)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=what)
        assert_close(a, b, dtype, what)
    touched = [1, 3, 5, 7, 9] + ([10, 11] if name == "kl_divergence_with_logits" else [])
    kept = np.setdiff1d(np.arange(12), touched)
    assert got.hess[kept].tobytes() == clean.hess[kept].tobytes()
    assert got.grad[kept].tobytes() == clean.grad[kept].tobytes()


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_multi_margin_non_finite_class_weight(bad, p):
    """Only active hinge terms carry w_y (torch's loops): rows of a nan/inf class without an
    active term have zero loss, gradient and hessian; rows with one get torch's values;
    an active term whose v^2 rounds to 0 makes inf * 0 = nan, as torch's w_y * v^2."""
    x = np.array([[6.0, 0.0, 1.0], [0.0, 0.5, -3.0], [0.0, 1.0, 2.0], [0.0, -1.0, -1e-20]],
                 dtype=np.float32)
    y = np.array([0, 0, 1, 0])
    weight = np.array([bad, 1.0, 0.5], dtype=np.float32)
    extra = {"compute_hess": True} if p == 2 else {}
    got = fastloss.multi_margin(x, y, p=p, weight=weight, reduction="none", **extra)
    ref = reference.multi_margin(x, y, p=p, weight=weight, reduction="none", **extra)
    for what in ("loss", "grad") + (("hess",) if p == 2 else ()):
        np.testing.assert_array_equal(getattr(got, what), getattr(ref, what), err_msg=what)
    assert got.loss[0] == 0.0 and (got.grad[0] == 0).all()
    assert got.loss[2] == np.float32(2.0 ** p / 3)   # class 1's finite weight, one term
    if torch is not None:
        xt = torch.tensor(x, requires_grad=True)
        value = torch.nn.functional.multi_margin_loss(
            xt, torch.as_tensor(y), p=p, weight=torch.as_tensor(weight), reduction="none")
        value.sum().backward()
        np.testing.assert_array_equal(got.loss, value.detach().numpy())
        np.testing.assert_array_equal(got.grad, xt.grad.numpy())
    # a row whose only active term is v = 1e-30 (v^2 = 0 in float32): nan (inf * 0, or
    # nan) for p = 2, as torch's w_y * v^2; w_y * v for p = 1
    tiny = np.array([[1.0, 1e-30]], dtype=np.float32)
    loss = fastloss.multi_margin(tiny, np.array([0]), p=p, weight=weight[:2],
                                 reduction="none").loss
    expected = reference.multi_margin(tiny, np.array([0]), p=p, weight=weight[:2],
                                      reduction="none").loss
    np.testing.assert_array_equal(loss, expected)
    assert np.isnan(loss[0]) if p == 2 or np.isnan(bad) else loss[0] == bad


@pytest.mark.parametrize("temperature", [1.0, 0.5, 4.0, 1.5, 0.3])
def test_distill_kl_float32_near_flt_max_matches_float64(temperature):
    """Rows whose logits reach FLT_MAX: loss, gradient and hessian as the float64 reference
    computes them from the same float32 values (finite wherever that is below FLT_MAX)."""
    big = np.finfo(np.float32).max
    rows = [
        ([0, 0, big, 0], [0, 0, 0, 0]),
        ([-big, 0, 1, 2], [0.5, 0, 1, 2]),                  # student class far below
        ([big, -big, 0, 0], [0, 0, 3, 1]),                  # range 2 FLT_MAX
        ([1, 2, 3, 4], [big, -big, 0, big]),                # a huge teacher
        ([3e37, 2.9e37, -3e37, 0], [1e37, 0, -1e37, 5]),
        ([1e35, 1e35, 1e35, 1e35], [0, 0, 0, 0]),           # just below the float32 bound
        # float32 arithmetic, logits far beyond exp's range (x / T - max / T contracted
        # into an fma once left the largest class's shift positive: garbage exps)
        ([1e10, 0, 5, -1e10], [1e10, 1e10, 0, 0]),
        ([3e9, 3e9 - 256, 1, 2], [0, 1, 2, 3]),
        ([1, -1, 0.5, 2], [0.1, 0.2, 0.3, 0.4]),            # an ordinary row after them
    ]
    x = np.array([r[0] for r in rows], dtype=np.float32)
    t = np.array([r[1] for r in rows], dtype=np.float32)
    got = fastloss.kl_divergence_with_logits(x, t, temperature=temperature, reduction="none",
                                             compute_hess=True)
    exact = reference.kl_divergence_with_logits(x.astype(np.float64), t.astype(np.float64),
                                                temperature=temperature, reduction="none",
                                                compute_hess=True)
    with np.errstate(over="ignore"):
        expected_loss = exact.loss.astype(np.float32)
    np.testing.assert_array_equal(np.isfinite(got.loss), np.isfinite(expected_loss))
    np.testing.assert_allclose(got.loss, expected_loss, rtol=1e-6, atol=1e-6)
    scale = np.maximum(1.0, np.abs(np.where(np.isfinite(exact.grad), exact.grad, 0)))
    np.testing.assert_allclose(got.grad / scale, exact.grad / scale, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.hess, exact.hess, rtol=1e-5, atol=1e-7)
    # the ordinary row is not touched by its neighbours' float64 pass
    alone = fastloss.kl_divergence_with_logits(x[-1:], t[-1:], temperature=temperature,
                                               reduction="none", compute_hess=True)
    assert alone.hess.tobytes() == got.hess[-1:].tobytes()
    total = fastloss.kl_divergence_with_logits(x, t, temperature=temperature,
                                               reduction="sum").loss
    np.testing.assert_allclose(total, exact.loss.sum(), rtol=1e-6)


# ------------------------------------------------------------------ errors

def error_calls():
    """(what, function, args, kwargs, error, message pattern): API.md's errors of the new
    arguments, for both losses."""
    rng = np.random.default_rng(40)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    y = rng.integers(0, 5, 4)
    t = rng.standard_normal((4, 5)).astype(np.float32)
    mm, kl = fastloss.multi_margin, fastloss.kl_divergence_with_logits
    read_only = np.zeros_like(x)
    read_only.flags.writeable = False
    calls = [
        ("p=1 with compute_hess", mm, (x, y), {"p": 1, "compute_hess": True}, ValueError,
         "p=2"),
        ("default p with compute_hess", mm, (x, y), {"compute_hess": True}, ValueError, "p=2"),
    ]
    for name, function, other, base in (("multi_margin", mm, y, {"p": 2}),
                                        ("kl_divergence_with_logits", kl, t, {})):
        calls += [
            (f"{name}: compute_hess without the gradient", function, (x, other),
             dict(base, compute_hess=True, compute_grad=False), ValueError, "compute_grad"),
            (f"{name}: hess_out without compute_hess", function, (x, other),
             dict(base, hess_out=np.zeros_like(x)), ValueError, "hess_out"),
            (f"{name}: compute_hess not a bool", function, (x, other),
             dict(base, compute_hess=1), TypeError, "compute_hess"),
            (f"{name}: hess_out of the wrong shape", function, (x, other),
             dict(base, compute_hess=True, hess_out=np.zeros((4, 6), np.float32)), ValueError,
             "hess_out"),
            (f"{name}: hess_out of the wrong dtype", function, (x, other),
             dict(base, compute_hess=True, hess_out=np.zeros((4, 5))), ValueError, "hess_out"),
            (f"{name}: hess_out not C-contiguous", function, (x, other),
             dict(base, compute_hess=True, hess_out=np.zeros((5, 4), np.float32).T),
             ValueError, "hess_out"),
            (f"{name}: hess_out read-only", function, (x, other),
             dict(base, compute_hess=True, hess_out=read_only), ValueError, "hess_out"),
            (f"{name}: hess_out a list", function, (x, other),
             dict(base, compute_hess=True, hess_out=[[0.0] * 5] * 4), ValueError, "hess_out"),
            (f"{name}: hess_out is out", function, (x, other),
             dict(base, compute_hess=True, out="same", hess_out="same"), ValueError,
             "hess_out"),
            (f"{name}: hess_out is the input and out too", function, (x, other),
             dict(base, compute_hess=True, out="input", hess_out="input"), ValueError,
             "hess_out"),
            (f"{name}: hess_out overlaps the input", function, (x, other),
             dict(base, compute_hess=True, hess_out="shifted"), ValueError, "hess_out"),
        ]
    calls += [
        ("hess_out is the teacher", kl, (x, t), {"compute_hess": True, "hess_out": "other"},
         ValueError, "target_logits"),
        ("hess_out is the class weight", mm, (x, y),
         {"p": 2, "compute_hess": True, "weight": "hess", "hess_out": "weight"}, ValueError,
         "weight"),
        ("p=1 with compute_hess, bad hess_out too", mm, (x, y),
         {"p": 1, "compute_hess": True, "hess_out": np.zeros((2, 2))}, ValueError, "p=2"),
    ]
    return calls


@pytest.mark.parametrize("what, function, args, kwargs, error, pattern", error_calls(),
                         ids=[c[0] for c in error_calls()])
def test_errors_write_nothing(what, function, args, kwargs, error, pattern):
    x, other = (a.copy() for a in args)
    kwargs = dict(kwargs)
    buffer = np.full((x.size + 1,), 7.0, dtype=x.dtype)
    resolved, shared = {}, {}
    for key, value in kwargs.items():
        if isinstance(value, str):
            if value == "same":
                value = shared.setdefault("same", np.full_like(x, 7.0))
            elif value == "input":
                value = x
            elif value == "shifted":   # a view of the input's buffer, one element on
                whole = np.full(x.size + 1, 7.0, dtype=x.dtype)
                whole[:x.size] = x.reshape(-1)
                x = whole[:x.size].reshape(x.shape)
                value = whole[1:].reshape(x.shape)
            elif value == "other":
                value = other
            elif value == "hess":
                value = buffer[:x.shape[1]]
            elif value == "weight":
                value = buffer[:x.size].reshape(x.shape)
        resolved[key] = value
    watched = [a for a in [x, other, buffer] + list(resolved.values())
               if isinstance(a, np.ndarray)]
    before = [a.tobytes() for a in watched]
    with pytest.raises(error, match=pattern):
        function(x, other, **resolved)
    assert [a.tobytes() for a in watched] == before, "an input or output was written"
