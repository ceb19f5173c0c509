"""Property-based tests: every loss, every input hypothesis can think of.

For each enrolled loss (tests/reliability_cases.py) hypothesis draws a call: shapes with 0-
and 1-sized axes (and now and then a shape large enough to run several blocks on several
threads), float32/float64, memory layouts (C, Fortran, strided, negative strides, zero-stride
broadcast, read-only), the loss's own options, the options every loss takes (reduction,
compute_grad, out: none / fresh / in place / overlapping / read-only / Fortran, n_threads
1..3 or None) and values from the whole float range (subnormals, +-0, huge, nan, +-inf).

Each call either raises the exception type that fastloss.reference raises on the same
arguments (TypeError or ValueError: API.md's Errors table), leaving its inputs and `out`
bitwise untouched, or returns a result that matches the reference within the tolerance of
reliability_cases (nan exactly where the reference is nan), with every input array and the
guard elements around every buffer bitwise unchanged (the gradient buffer's guards too: a
write past either end of it is caught). Targets marked ignored must get exactly zero loss and
gradient, whatever the reduction and whatever values their rows hold.

The hypothesis profile (tests/conftest.py) is deterministic; HYPOTHESIS_PROFILE=explore
draws new examples, ten times as many. The number of examples that ran, by outcome, is
printed at the end of the module.
"""

from __future__ import annotations

import collections
import inspect
import math

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

import fastloss
import reliability_cases as rc

CONTRACT_ERRORS = (TypeError, ValueError)
EXAMPLES_RUN = collections.Counter()


def examples(budget: int, floor: int) -> int:
    """Examples for one loss: a budget shared by the enrolled losses (so that the file keeps
    to about a minute on 2 cores as losses land), at least `floor`; scaled by the hypothesis
    profile (ci: 1x, explore: 10x)."""
    per_loss = max(floor, budget // max(1, len(rc.enrolled())))
    return max(1, per_loss * settings.default.max_examples // 100)


@pytest.fixture(scope="module", autouse=True)
def report_example_counts(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and EXAMPLES_RUN:
        with capture.global_and_fixture_disabled():
            write_example_counts(reporter)


def write_example_counts(reporter):
    total = sum(count for key, count in EXAMPLES_RUN.items() if key[1] == "examples")
    reporter.write_line(f"\ntest_properties: {total} generated examples ran")
    for key in sorted(EXAMPLES_RUN):
        reporter.write_line(f"    {key[0]:<34} {key[1]:<28} {EXAMPLES_RUN[key]}")


# ------------------------------------------------------------------ the registry itself

def test_registry_covers_every_public_loss():
    public = {name for name in fastloss.__all__ if rc.is_loss_function(getattr(fastloss, name))}
    assert public, "no loss function found in fastloss.__all__"
    missing = public - set(rc.CASES_BY_NAME) - set(rc.TESTED_ELSEWHERE)
    assert not missing, f"losses without an entry in tests/reliability_cases.py: {sorted(missing)}"
    for name in public:
        assert hasattr(fastloss.reference, name), f"fastloss.reference has no {name}"
        assert name in fastloss.reference.__all__


def test_registry_names_the_losses_of_the_contract():
    assert set(rc.API_LOSSES) == set(rc.CASES_BY_NAME)
    for case in rc.CASES:
        if case.available:
            params = list(inspect.signature(case.function()).parameters)
            assert params[:len(case.arg_names)] == list(case.arg_names), case.name
            for option in case.options:
                assert option in params, f"{case.name} has no keyword {option}"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in rc.CASES])
@settings(max_examples=examples(budget=0, floor=25))
@given(data=st.data())
def test_registry_entries_work_before_their_loss_lands(case, data):
    """Every entry (also of a loss fastloss does not have yet) draws inputs, widens them, and
    computes its tolerances, denominator and kept mask without error; its valid call and its
    list of bad options are well formed."""
    dtype = data.draw(st.sampled_from(rc.FLOAT_DTYPES))
    args, kwargs = case.draw_inputs(data.draw, dtype)
    assert len(args) == len(case.arg_names) and args[0].dtype == dtype
    if not case.class_index and np.shape(args[1]) != np.shape(args[0]):
        return  # a target of the wrong shape, drawn on purpose: the call must raise
    wide_args, wide_kwargs = rc.widen(case, args, kwargs, dtype)
    assert wide_args[0].dtype == np.float64
    try:
        loss_tol, grad_tol = case.tolerance(wide_args, wide_kwargs, float(np.finfo(dtype).eps))
        case.denominator(wide_args, wide_kwargs)
        case.kept(args, kwargs)
    except (ValueError, IndexError, TypeError, ZeroDivisionError):
        return  # drawn inputs that the contract rejects (no classes, bad indices)
    assert np.shape(grad_tol) == np.shape(args[0])
    (small, small_kwargs), (big, _) = (case.valid_call(np.random.default_rng(0), dtype),
                                       case.valid_call(np.random.default_rng(0), dtype, 5000))
    assert small[0].dtype == dtype and big[0].size >= 4000
    for update, error, word in case.bad_options(list(small), small_kwargs):
        assert error in (TypeError, ValueError) and isinstance(update, dict) and word


def describe_inputs(case, x_values, other_args, kwargs) -> str:
    def show(value):
        if isinstance(value, np.ndarray):
            text = np.array2string(value, threshold=40, precision=17)
            return f"array(dtype={value.dtype}, shape={value.shape}, strides={value.strides}) {text}"
        return repr(value)
    lines = [f"{case.arg_names[0]}: {show(x_values)}"]
    lines += [f"{name}: {show(value)}" for name, value in zip(case.arg_names[1:], other_args)]
    lines += [f"{name}={show(value)}" for name, value in kwargs.items()]
    return "\n".join(lines)


# ------------------------------------------------------------------ building a call

# about one call in ten gets an `out` that must be refused (overlapping, read-only, Fortran)
OUT_MODES = ("none", "fresh", "inplace")
INVALID_OUT_MODES = ("overlapping", "read-only", "fortran")


def draw_call(draw, case):
    dtype = draw(st.sampled_from(rc.FLOAT_DTYPES))
    args, kwargs = case.draw_inputs(draw, dtype)
    x_values = np.asarray(args[0])
    layouts = rc.LAYOUTS + (("broadcast",) if x_values.ndim >= 1 else ())
    spec = {
        "dtype": dtype,
        "out": draw(st.sampled_from(INVALID_OUT_MODES if rc.one_in(draw, 12) else OUT_MODES)),
        "reduction": draw(st.sampled_from(["mean", "mean", "sum", "none"])),
        "n_threads": draw(st.sampled_from([None, 1, 2, 3])),
    }
    # in place needs a C-contiguous writeable input: mostly give it one, now and then not
    in_place = spec["out"] == "inplace" and not rc.one_in(draw, 10)
    spec["layout"] = "C" if in_place else draw(st.sampled_from(layouts))
    spec["read_only"] = not in_place and rc.one_in(draw, 6)
    # out with compute_grad=False is a ValueError: rare
    spec["compute_grad"] = not rc.one_in(draw, 6 if spec["out"] == "none" else 30)
    if spec["layout"] == "broadcast" and x_values.shape[0]:
        x_values = np.broadcast_to(x_values[:1], x_values.shape).copy()
    return x_values, args[1:], kwargs, spec


def materialize(x_values, spec):
    """The differentiated input in its layout, and `out` for the spec's out mode, built on
    fresh buffers; with the buffers whose guards the call must leave unchanged."""
    dtype = x_values.dtype
    layout, mode = spec["layout"], spec["out"]
    if mode == "overlapping":  # out starts one row (or element) into the input's buffer
        shift = max(1, x_values.shape[-1] if x_values.ndim else 1)
        buffer = np.full(x_values.size + shift + 2 * rc.GUARD, -7.25, dtype=dtype)
        x = buffer[rc.GUARD:rc.GUARD + x_values.size].reshape(x_values.shape)
        x[...] = x_values
        out = buffer[rc.GUARD + shift:rc.GUARD + shift + x_values.size].reshape(x_values.shape)
        span = (rc.GUARD + shift, rc.GUARD + shift + x_values.size)  # no overlap when size <= 1
        return x, out, [("input+out buffer", buffer, span)]
    if layout == "broadcast":
        x = np.broadcast_to(x_values[:1].copy(), x_values.shape)
        placed_x = None
    else:
        placed_x = rc.place(x_values, layout, spec["read_only"])
        x = placed_x.view
    out = None
    guarded = []
    if mode == "fresh" or mode == "read-only" or mode == "fortran":
        # prefilled with nan: an element the kernel forgets to write shows up as wrong
        placed_out = rc.place(np.full(x_values.shape, np.nan, dtype=dtype),
                              "F" if mode == "fortran" else "C", mode == "read-only")
        out = placed_out.view
        guarded.append(("out's guards", placed_out.base, (placed_out.start, placed_out.stop)))
    elif mode == "inplace":
        out = x
    if placed_x is not None:
        writable_span = (placed_x.start, placed_x.stop) if mode == "inplace" else None
        guarded.append(("input's buffer", placed_x.base, writable_span))
    return x, out, guarded


def snapshot(guarded):
    return [(name, base.copy(), span) for name, base, span in guarded]


def assert_unchanged(before, after_bases, what, spans_written=True):
    """Every buffer bitwise as saved; outside its writable span only, if spans_written."""
    for (name, saved, span), base in zip(before, after_bases):
        if span is None or not spans_written:
            assert saved.tobytes() == base.tobytes(), f"{what}: {name} was modified"
        else:
            start, stop = span
            assert saved[:start].tobytes() == base[:start].tobytes(), f"{what}: wrote before {name}"
            assert saved[stop:].tobytes() == base[stop:].tobytes(), f"{what}: wrote after {name}"


def call_kwargs(kwargs, spec, out):
    full = dict(kwargs, reduction=spec["reduction"], compute_grad=spec["compute_grad"],
                n_threads=spec["n_threads"])
    if spec["out"] != "none":
        full["out"] = out
    return full


def copy_arg(value):
    return value.copy() if isinstance(value, np.ndarray) else value


# ------------------------------------------------------------------ comparing

def close(got, ref, tol, out_dtype) -> np.ndarray:
    """Element-wise: both nan, or neither nan and |got - ref| <= tol + rounding to out_dtype,
    after clipping both to out_dtype's finite range (so inf and a value that rounds to
    float max are the same: the float32 and float64 evaluations overflow at different
    points)."""
    info = np.finfo(out_dtype)
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    tol = np.nan_to_num(np.asarray(tol, dtype=np.float64), nan=0.0, posinf=np.inf)
    with np.errstate(all="ignore"):
        g = np.clip(got, -float(info.max), float(info.max))
        r = np.clip(ref, -float(info.max), float(info.max))
        bound = tol + 2 * float(info.eps) * np.abs(r) + rc.K_ULPS * float(info.smallest_normal)
        near = np.abs(g - r) <= bound
    return (np.isnan(got) & np.isnan(ref)) | (~np.isnan(got) & ~np.isnan(ref) & near)


# A loss whose tolerance is this large has terms near the end of the double range (logits
# like -8.9e307 with a weight of 2): inf or nan, where PyTorch, the reference and the kernel
# each overflow, depends on the order of the operations. Such results are accepted when they
# are not finite, or when a reference is not finite and the result is huge.
EDGE_OF_DOUBLE = float(np.finfo(np.float64).max) * 2.0**-60


def at_the_edge(tol, got, refs):
    with np.errstate(all="ignore"):
        edge = np.nan_to_num(np.asarray(tol, dtype=np.float64), nan=0.0) > EDGE_OF_DOUBLE
        got = np.asarray(got, dtype=np.float64)
        ref_overflowed = np.zeros(np.shape(got), dtype=bool)
        for ref in refs:
            ref_overflowed |= ~np.isfinite(np.asarray(ref, dtype=np.float64))
        return edge & (~np.isfinite(got) | (ref_overflowed & (np.abs(got) > 1e300)))


def close_to_either(got, refs, tol, out_dtype, nonfinite_agree=False):
    """close() to any of refs; with nonfinite_agree, also any non-finite value where a
    reference is non-finite (see has_infinite_weight)."""
    ok = np.zeros(np.shape(got), dtype=bool)
    for ref in refs:
        ok |= close(got, ref, tol, out_dtype)
        if nonfinite_agree:
            with np.errstate(invalid="ignore"):
                ok |= ~np.isfinite(np.asarray(got, dtype=np.float64)) & ~np.isfinite(
                    np.asarray(ref, dtype=np.float64))
    return ok


# An infinite weight (class weight, BCE weight or pos_weight, softmax focal alpha) multiplies
# terms that underflow to 0 in one precision and not in another (a softmax probability
# exp(-120) is 0 in float32 and 1e-52 in float64): inf * 0 = nan in one evaluation is inf in
# the other, and which one PyTorch's autograd graph gives differs again. Both say "not
# finite", which is all an infinite weight can mean; such results are accepted as agreeing.
WEIGHT_OPTIONS = ("weight", "pos_weight", "alpha")


def has_infinite_weight(kwargs) -> bool:
    for name in WEIGHT_OPTIONS:
        value = kwargs.get(name)
        if value is None or isinstance(value, str):
            continue
        try:
            if np.isinf(np.asarray(value, dtype=np.float64)).any():
                return True
        except (TypeError, ValueError):
            continue
    return False


def explain(label, got, refs, tol, ok):
    bad = np.argwhere(~np.atleast_1d(ok))[:5]
    lines = [f"{label}: {int((~np.atleast_1d(ok)).sum())} element(s) off"]
    for index in bad:
        index = tuple(index)
        lines.append(f"  at {index}: got {np.atleast_1d(got)[index]!r}, reference(s) "
                     f"{[np.atleast_1d(r)[index] for r in refs]}, tolerance "
                     f"{np.broadcast_to(np.atleast_1d(tol), np.atleast_1d(got).shape)[index]!r}")
    return "\n".join(lines)


def check_result(case, spec, x_values, other_args, kwargs, got, ref_native, reference):
    dtype = np.dtype(spec["dtype"])
    reduction = spec["reduction"]
    wide_args, wide_kwargs = rc.widen(case, (x_values,) + tuple(other_args), kwargs, dtype)
    ref_wide = reference(*wide_args, **dict(wide_kwargs, reduction=reduction,
                                            compute_grad=spec["compute_grad"]))
    refs_of = (lambda native, wide: [native] if dtype == np.float64 else [wide, native])
    eps = float(np.finfo(dtype).eps)
    loss_tol, grad_tol = case.tolerance(wide_args, wide_kwargs, eps)
    denominator = case.denominator(wide_args, wide_kwargs)
    kept = case.kept((x_values,) + tuple(other_args), kwargs)
    degenerate_mean = reduction == "mean" and denominator == 0
    # 1/denominator overflows (a sum of subnormal weights): the gradient of the mean is not
    # finite in PyTorch or the reference either (the loss is fine); not compared
    scale_overflows = reduction == "mean" and denominator != 0 and math.isinf(1.0 / denominator)

    loss, grad = got
    nonfinite_agree = has_infinite_weight(kwargs)
    # ---- the loss
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.dtype == dtype
        assert loss.shape == np.shape(ref_native.loss)
        if kept is not None:
            assert np.all(loss[~kept] == 0), "an ignored target has a non-zero loss"
            loss, natives, wides, tol = (loss[kept], ref_native.loss[kept], ref_wide.loss[kept],
                                         loss_tol[kept])
        else:
            natives, wides, tol = ref_native.loss, ref_wide.loss, loss_tol
        ok = close_to_either(loss, refs_of(natives, wides), tol, dtype, nonfinite_agree)
        ok |= at_the_edge(tol, loss, refs_of(natives, wides))
        assert ok.all(), explain("loss", loss, refs_of(natives, wides), tol, ok)
    else:
        assert type(loss) is float, f"loss should be a Python float, got {type(loss)}"
        if degenerate_mean:
            assert math.isnan(loss), "mean over a zero denominator must be nan"
        else:
            per_sample = reference(*wide_args, **dict(wide_kwargs, reduction="none",
                                                      compute_grad=False)).loss
            scale = 1.0 / denominator if reduction == "mean" else 1.0
            # the per-sample tolerances, the rounding of the per-sample values (the float32
            # reference sums them rounded to float32) relatively and, below the dtype's normal
            # range, absolutely (the same floor the "none" comparison allows each element: a
            # float32 term of 1e-45 holds no relative precision), and the error bound of a
            # double sum (and of the mean's denominator) added one by one
            n_terms = np.size(per_sample) + 4
            underflow = np.size(per_sample) * rc.K_ULPS * float(np.finfo(dtype).smallest_normal)
            with np.errstate(all="ignore"):
                magnitude = float(np.sum(np.abs(per_sample), dtype=np.float64))
                tol = scale * (float(np.sum(np.nan_to_num(loss_tol, nan=0.0))) + underflow
                               + (2 * eps + n_terms * 2.0**-52) * magnitude)
            refs = refs_of(ref_native.loss, ref_wide.loss)
            ok = close_to_either(loss, refs, tol, np.float64, nonfinite_agree)
            if not magnitude < 1e306 or np.any(at_the_edge(loss_tol, 0.0, [0.0])):
                # the double sum itself overflows, or a row's terms do
                ok |= at_the_edge(np.inf, loss, refs)
            assert ok.all(), explain("loss", loss, refs, tol, ok)
    # ---- the gradient
    if not spec["compute_grad"]:
        assert grad is None
        return
    assert isinstance(grad, np.ndarray) and grad.dtype == dtype and grad.shape == x_values.shape
    grad_native, grad_wide = ref_native.grad, ref_wide.grad
    if kept is not None:
        assert np.all(grad[~kept] == 0), "an ignored target has a non-zero gradient row"
        grad, grad_native, grad_wide, grad_tol = (grad[kept], grad_native[kept],
                                                  grad_wide[kept], grad_tol[kept])
    if degenerate_mean:
        assert not np.isfinite(grad).any(), "gradient of a nan mean has finite entries"
        return
    if scale_overflows:
        EXAMPLES_RUN[case.name, "gradient not compared: 1/denominator overflows"] += 1
        return
    scale = 1.0 / denominator if reduction == "mean" else 1.0
    # "mean": 1/denominator, a double sum over the samples, is off by up to n eps relatively
    n_terms = np.shape(x_values)[0] if np.ndim(x_values) else 1
    slack = (n_terms + 4) * 2.0**-52 if reduction == "mean" else 0.0
    with np.errstate(all="ignore"):
        tol = grad_tol * scale + slack * np.abs(grad_wide if dtype == np.float32 else grad_native)
    ok = close_to_either(grad, refs_of(grad_native, grad_wide), tol, dtype, nonfinite_agree)
    assert ok.all(), explain("gradient", grad, refs_of(grad_native, grad_wide), tol, ok)


# ------------------------------------------------------------------ the properties

# Inputs on which a kernel is known to give a wrong value: each has a test at the end of this
# file that fails until it is fixed. The property test still makes these calls (no crash, no
# exception, inputs untouched) but does not compare their values, so that it goes on finding
# other bugs; the summary counts them. Remove an entry when its test passes.
KNOWN_KERNEL_BUGS: dict = {
    # an entry looks like
    # "loss_name": [("description (test_that_fails_until_fixed)", lambda args, kwargs: ...)],
    # (issue 15 fixed the two recorded here: multi_margin's nan/inf class weight of a row
    # without an active hinge, the distill KL's float32 overflow near FLT_MAX; their tests
    # follow)
}


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_multi_margin_nan_weight_of_an_inactive_row_is_torchs(p, bad):
    """Only active hinge terms carry the class weight (torch's loops): a row without one
    gives 0 whatever its weight; a row with one gives what torch gives."""
    x = np.array([[5.0, 0.0], [0.0, 0.5]], dtype=np.float32)   # row 0: no hinge; row 1: one
    y = np.array([0, 0])
    weight = np.array([bad, 1.0], dtype=np.float32)
    loss, grad = fastloss.multi_margin(x, y, p=p, weight=weight, reduction="none")
    assert loss[0] == 0.0 and not np.isnan(grad[0]).any() and (grad[0] == 0).all()
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    expected = torch.nn.functional.multi_margin_loss(xt, torch.tensor(y), p=p,
                                                     weight=torch.tensor(weight),
                                                     reduction="none")
    expected.sum().backward()
    np.testing.assert_array_equal(loss, expected.detach().numpy())
    np.testing.assert_array_equal(grad, xt.grad.numpy())


def test_distill_kl_near_float32_max_is_finite():
    logits = np.zeros((1, 8), dtype=np.float32)
    logits[0, 2] = np.float32(3.4e38)
    target = np.zeros((1, 8), dtype=np.float32)
    loss = fastloss.kl_divergence_with_logits(logits, target, reduction="none").loss
    exact = fastloss.reference.kl_divergence_with_logits(logits.astype(np.float64), target,
                                                         reduction="none").loss
    assert np.isfinite(exact[0]) and exact[0] < np.finfo(np.float32).max
    assert np.isfinite(loss[0])
    np.testing.assert_allclose(loss[0], exact[0], rtol=1e-6)


@pytest.mark.parametrize("case", rc.case_params())
@settings(max_examples=examples(budget=3000, floor=500))
@given(data=st.data())
def test_matches_reference_or_raises(case, data):
    x_values, other_args, kwargs, spec = draw_call(data.draw, case)
    note(f"spec={spec}")
    note(describe_inputs(case, x_values, other_args, kwargs))
    function, reference = case.function(), case.reference()

    # the reference first, on its own copies: the exception type the call must raise, if any
    x_ref, out_ref, _ = materialize(x_values, spec)
    ref_args = (x_ref,) + tuple(copy_arg(a) for a in other_args)
    ref_kwargs = call_kwargs({k: copy_arg(v) for k, v in kwargs.items()}, spec, out_ref)
    try:
        ref_native = reference(*ref_args, **ref_kwargs)
        ref_error = None
    except CONTRACT_ERRORS as error:
        ref_native, ref_error = None, error

    x, out, guarded = materialize(x_values, spec)
    args = (x,) + tuple(other_args)
    call = call_kwargs(kwargs, spec, out)
    before = snapshot(guarded)
    watched = [(name, a) for name, a in list(zip(case.arg_names, args)) + list(kwargs.items())
               if isinstance(a, np.ndarray) and a is not out]
    watched_bytes = [a.tobytes() for _, a in watched]
    key = case.name
    try:
        got = function(*args, **call)
    except CONTRACT_ERRORS as error:
        EXAMPLES_RUN[key, f"raised {type(error).__name__}: {' '.join(str(error).split()[:2])}"] += 1
        EXAMPLES_RUN[key, "examples"] += 1
        assert ref_error is not None, f"fastloss raised {error!r}; the reference returned"
        assert type(error) is type(ref_error), (error, ref_error)
        # nothing written anywhere, not even into out
        assert_unchanged(before, [base for _, base, _ in guarded], "after an error",
                         spans_written=False)
        for (name, array), saved in zip(watched, watched_bytes):
            assert saved == array.tobytes(), f"{name} was modified by a call that raised"
        return
    EXAMPLES_RUN[key, "examples"] += 1
    assert ref_error is None, f"fastloss returned; the reference raised {ref_error!r}"
    assert len(got) == 2 and got.loss is got[0] and got.grad is got[1]
    if spec["out"] != "none":
        assert got.grad is out, "out must be returned as grad"
    for (name, array), saved in zip(watched, watched_bytes):
        assert saved == array.tobytes(), f"{name} was modified"
    assert_unchanged(before, [base for _, base, _ in guarded], "after the call")
    known = [bug for bug, hits in KNOWN_KERNEL_BUGS.get(case.name, ())
             if hits((x_values,) + tuple(other_args), kwargs)]
    if known:
        EXAMPLES_RUN[key, f"not compared: known bug {known[0]}"] += 1
        return
    oracle = case.oracle((x_values,) + tuple(other_args), kwargs)
    if oracle is not None:
        EXAMPLES_RUN[key, "held against " + oracle.__name__] += 1
        ref_native = oracle(x_values, *other_args, **call_kwargs(kwargs, spec, None))
    check_result(case, spec, x_values, other_args, kwargs, got, ref_native,
                 oracle or reference)
    outcome = "returned"
    if np.isnan(np.asarray(got.loss, dtype=np.float64)).any():
        outcome = "returned (nan loss)"
    if x_values.size > rc.LARGE_CLASS_SHAPES[0][0] * 1000:
        EXAMPLES_RUN[key, "returned, several blocks"] += 1
    EXAMPLES_RUN[key, outcome] += 1


@pytest.mark.parametrize("case", rc.case_params())
@settings(max_examples=examples(budget=300, floor=60))
@given(data=st.data())
def test_bitwise_identical_for_any_thread_count_and_in_place(case, data):
    """API.md: loss and gradient are bitwise identical for every n_threads; and writing the
    gradient over the input gives the same bits as a separate buffer."""
    dtype = data.draw(st.sampled_from(rc.FLOAT_DTYPES))
    args, kwargs = case.draw_inputs(data.draw, dtype)
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]))
    function = case.function()
    x = np.ascontiguousarray(args[0])
    results = []
    try:
        for n_threads in (1, 2, 3, None):
            results.append(function(x, *args[1:], **kwargs, reduction=reduction,
                                    n_threads=n_threads))
    except CONTRACT_ERRORS:
        EXAMPLES_RUN[case.name, "examples"] += 1
        EXAMPLES_RUN[case.name, "determinism: raised"] += 1
        return
    in_place = x.copy()
    results.append(function(in_place, *args[1:], **kwargs, reduction=reduction, out=in_place,
                            n_threads=2))
    first = results[0]
    for result in results[1:]:
        assert np.asarray(result.loss).tobytes() == np.asarray(first.loss).tobytes()
        assert result.grad.tobytes() == first.grad.tobytes()
    EXAMPLES_RUN[case.name, "examples"] += 1
    EXAMPLES_RUN[case.name, "determinism: compared"] += 1


# ------------------------------------------------------------------ bugs the properties found
# Each test fails until its bug is fixed. PyTorch (the semantics API.md names) is the judge.

def _torch_ce(x, y, **kwargs):
    import torch
    xt = torch.tensor(x, requires_grad=True)
    weight = kwargs.pop("weight", None)
    loss = torch.nn.functional.cross_entropy(
        xt, torch.tensor(y), weight=None if weight is None else torch.tensor(weight), **kwargs)
    (loss.sum() if kwargs.get("reduction") == "none" else loss).backward()
    return loss.detach().numpy(), xt.grad.numpy()


def test_reference_leaves_out_the_smoothing_term_without_smoothing():
    """fastloss.reference adds (eps / C) * sum_c w_c log p_c even for eps = 0, and 0 * inf is
    nan: a -inf logit, or a nan/inf weight of a class no sample has, turns the loss to nan."""
    x = np.array([[0.0, -np.inf], [1.0, 2.0]])
    y = np.array([0, 1])
    expected, _ = _torch_ce(x, y, reduction="none")
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(fastloss.softmax_cross_entropy(x, y, reduction="none").loss,
                               expected, rtol=1e-12)  # the kernel is right
    np.testing.assert_allclose(fastloss.reference.softmax_cross_entropy(x, y, reduction="none").loss,
                               expected, rtol=1e-12)


def test_reference_ignores_weights_of_absent_classes():
    x = np.array([[0.5, -1.0, 2.0]])
    y = np.array([2])
    weight = np.array([np.nan, 1.0, 3.0])
    expected, expected_grad = _torch_ce(x, y, weight=weight.copy(), reduction="sum")
    result = fastloss.reference.softmax_cross_entropy(x, y, weight=weight, reduction="sum")
    assert result.loss == pytest.approx(float(expected), rel=1e-12)
    np.testing.assert_allclose(result.grad, expected_grad, rtol=1e-12)


def test_reference_ignored_rows_contribute_nothing_even_when_not_finite():
    """An ignored target's row enters the reference's sum as 0 * its loss: nan when its
    logits are nan or inf. PyTorch and the kernel give 0 for it."""
    x = np.array([[0.0, 1.0], [np.nan, 0.0]])
    y = np.array([1, -100])
    expected, _ = _torch_ce(x, y, reduction="mean")
    assert fastloss.softmax_cross_entropy(x, y).loss == pytest.approx(float(expected), rel=1e-12)
    assert fastloss.reference.softmax_cross_entropy(x, y).loss == pytest.approx(float(expected),
                                                                               rel=1e-12)


def test_reference_gradient_is_zero_when_every_target_is_ignored():
    """API.md: "Every target ignored: as PyTorch ("mean" gives nan), the gradient is all
    zeros". The reference multiplies the zero gradient by 1/0 and returns nan."""
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    y = np.full(3, -100)
    kernel = fastloss.softmax_cross_entropy(x, y)
    assert math.isnan(kernel.loss) and np.all(kernel.grad == 0)
    reference = fastloss.reference.softmax_cross_entropy(x, y)
    assert math.isnan(reference.loss)
    assert np.all(reference.grad == 0), reference.grad


def test_kernel_infinite_class_weight():
    """An inf class weight on a target that is its row's largest logit: PyTorch gives
    loss inf (inf * log(sum exp(x - max)) > 0); the kernel computes S log s - a_y (x_y - max)
    = inf - inf * 0 and returns nan."""
    x = np.array([[0.0, 0.0], [1.0, 0.0]])
    y = np.array([0, 0])
    weight = np.array([np.inf, 1.0])
    expected, expected_grad = _torch_ce(x, y, weight=weight.copy(), reduction="none")
    assert np.isposinf(expected).all()
    result = fastloss.softmax_cross_entropy(x, y, weight=weight, reduction="none")
    np.testing.assert_array_equal(result.grad, expected_grad)  # this part is right
    np.testing.assert_array_equal(result.loss, expected)
