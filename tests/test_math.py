"""Accuracy and special values of the vectorized math layer, fastloss/_src/fl_math.h.

Every function of ``fastloss._kernels.MATH_FUNCTIONS`` is applied over arrays with
``fastloss._kernels.math_apply`` under each instruction-set variant this CPU can run (the
``isa`` fixture: baseline SSE2, AVX2+FMA, AVX-512 on x86-64; the variants differ in vector
width and in whether gcc fuses multiply-adds, so each is measured on its own).

Results are compared with a reference in higher precision: float64 (NumPy) for float32
results, np.longdouble (x87 80-bit, 64-bit significand; the C library's expl/logl/log1pl) for
float64 results, itself checked against mpmath. Errors are in ulps of the result format at the
exact value (``ulp_error``); the reference contributes < 2^-11 ulp.

What is swept (float32 input sets are ordered by bit pattern, so "every float32" is literal):
  exp       float32: every float32 with 2^-26 <= |x| <= 89 (positive) / 104 (negative), i.e.
            every argument whose result is neither 1 nor 0 nor inf, on every ISA
            (~545 M values, 5-10 s per ISA here); |x| < 2^-26 gives exactly 1.
  exp_nonpos float32: every float32 in [-104, -2^-26]; below ln(FLT_MIN) = -87.3365 the
            result is 0 by design (see fl_math.h), above it within the bound.
  exp_neg   float32: every float32 in [-104, -2^-26], subnormal results included.
  all      float32: every 127th bit pattern of all 2^32 (34 M values: ~130 000 in each of
            the 256 exponents of either sign, subnormals, infs, nans; the stride is odd, so
            the low mantissa bits take every value).
  float64:  ~4 M points per function: random bit patterns (every binade, both signs,
            subnormals) and uniform samples over the range where the function is not
            saturated.

Measured maximum errors (ulp), AMD EPYC (Zen 5), gcc 12, baseline / avx2 / avx512:
               float32                 float64
  exp          0.80 / 0.80 / 0.80      0.80 / 0.80 / 0.80
  exp_nonpos   1.17 / 0.90 / 0.90      0.82 / 0.82 / 0.82   (float64: measured when it was the full exp)
  exp_neg      1.17 / 0.90 / 0.90      1.17 / 0.90 / 0.90
  log          0.78 / 0.75 / 0.75      0.83 / 0.74 / 0.74
  log1p        0.84 / 0.74 / 0.74      0.81 / 0.74 / 0.74
  softplus     1.50 / 1.46 / 1.46      1.48 / 1.47 / 1.47
  log_sigmoid  1.48 / 1.46 / 1.46      1.48 / 1.48 / 1.48
  sigmoid      2.25 / 2.25 / 2.25      2.12 / 2.12 / 2.12
The whole file takes 50-95 s on the project's 2-core machine, depending on the load from
other jobs (exp's exhaustive sweep 22-33 s for the three ISAs, exp_nonpos's 8-15 s).
The bounds asserted (ULP_BOUND) are these rounded up; each test records its measured maximum
as the ``max_ulp`` property (``pytest --junitxml``) and prints it in its failure message.
"""

import platform

import numpy as np
import pytest

from fastloss import _kernels

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)

# The reference precision for each result format.
WIDE = {F32: np.dtype(np.float64), F64: np.dtype(np.longdouble)}

# Largest error, in ulps, that each function may have. Why each bound is what it is:
#   exp, log, log1p: the result is formed so that its last addition is the only rounding at
#     the result's scale (fl_math.h: a compensated 1 + r in exp; fdlibm's arrangement of
#     log(1 + f)), so the error is that half ulp plus < 0.35 ulp of smaller terms: <= 1 ulp.
#   exp_nonpos, exp_neg (float32 and float64): the cheaper exps for x <= 0, 1 + r (1 + r P(r)): two fused multiply-
#     adds where the ISA has FMA (avx2, avx512), so one rounding at the result's scale
#     (<= 1 ulp); baseline SSE2 rounds the product r (1 + r P) first: 1.17 ulp measured.
#   log1p_unit (log1p on [0, 1], no range reduction): e - s (e - R(s^2)) with s = e / (2 + e)
#     rounded twice (the sum and the quotient), and s (e - R) reaches a third of the result
#     near e = 1: 1.08 ulp measured with FMA, 1.32 without (baseline). It is what the
#     logistic losses and softplus use: 24-30% faster BCE and sigmoid focal than log1p.
#   softplus, log_sigmoid: log1p_unit(exp(-|x|)) inherits exp's error through the derivative
#     of log1p (<= 1), adds log1p_unit's own, and max(x, 0) + ... rounds once more: 1.5 ulp
#     measured with FMA, 1.95 without.
#   sigmoid: e / (1 + e) with e = exp(-|x|): exp's error, the rounding of 1 + e and the
#     division's rounding add up: 2.25 measured.
ULP_BOUND = {
    "exp": 1.0,
    "exp_nonpos": 1.0,
    "exp_neg": 1.0,
    "log": 1.0,
    "log1p": 1.0,
    "softplus": 2.0,
    "log_sigmoid": 2.0,
    "sigmoid": 2.5,
    "log1p_unit": 1.1,
    # x (1 + x P(x)) near 0 (two roundings at the result's scale), exp_neg(x) - 1 beyond
    # ln2/2 (exp_neg's 1 ulp of a value in [0.5, 0.71] is up to 2 ulps of |result| >= 0.29;
    # the subtraction is exact by Sterbenz' lemma)
    "expm1_neg": 2.5,
    # tanh (issue 13, logit soft-capping): -em1 / (2 + em1) rounds em1 (exp's polynomial or
    # exp - 1), the sum and the quotient; above 1/2 the result's ulp is half that of 2 + em1:
    # 2.5 ulp measured (float32 exhaustive-ish, float64 sampled), every ISA.
    "tanh": 3.0,
}
EXP_NONPOS_BOUND_WITHOUT_FMA = 1.25
LOG1P_UNIT_BOUND_WITHOUT_FMA = 1.35


# the functions defined for x <= 0 only
NONPOSITIVE_DOMAIN = ("exp_nonpos", "exp_neg", "expm1_neg")


def ulp_bound(name, dtype, isa):
    if name in ("exp_nonpos", "exp_neg") and isa == "baseline":
        return EXP_NONPOS_BOUND_WITHOUT_FMA
    if name == "log1p_unit" and isa == "baseline":
        return LOG1P_UNIT_BOUND_WITHOUT_FMA
    return ULP_BOUND[name]


# ----------------------------------------------------------------------------- helpers


def ulp_error(result, reference):
    """|result - reference| in ulps of result's format at the exact value `reference`.

    `reference` is in a wider format (float64 for float32 results, longdouble for float64).
    The ulp of a real value v with 2^e <= |v| < 2^(e+1) is 2^(e - mantissa bits), and below
    the smallest normal it is the smallest subnormal (the spacing there). Where the
    reference rounded to the result's format is inf or nan, or the result is, the result
    must be exactly that (error 0), otherwise the error is inf: an overflow to inf where the
    correctly rounded result is finite counts as a failure, and so does a lost nan.
    """
    dtype = result.dtype
    info = np.finfo(dtype)
    if reference.dtype == np.float64:
        # 2^e from the exponent bits of |reference|: the same as frexp/ldexp below, four
        # times faster, which matters in the sweeps over 545 M float32 values
        exponent_bits = np.abs(reference).view(np.uint64) & np.uint64(0x7FF0000000000000)
        ulp = exponent_bits.view(np.float64) * 2.0 ** -info.nmant
    else:
        _, exponent = np.frexp(reference)
        ulp = np.ldexp(np.ones((), reference.dtype), exponent - (info.nmant + 1))
    ulp = np.maximum(ulp, info.smallest_subnormal.astype(reference.dtype), out=ulp)
    with np.errstate(over="ignore", invalid="ignore"):
        error = result.astype(reference.dtype)
        error -= reference
        np.abs(error, out=error)
        error /= ulp
        rounded = reference.astype(dtype)
    special = ~(np.isfinite(rounded) & np.isfinite(result))
    if special.any():
        got, want = result[special], rounded[special]
        same = (got == want) | (np.isnan(got) & np.isnan(want))
        error[special] = np.where(same, 0.0, np.inf)
    return error


def softplus_reference(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow, no cancellation."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def sigmoid_reference(x):
    """1 / (1 + e^-x) as 1 / (1 + e) for x >= 0 and e / (1 + e) otherwise, e = e^-|x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


def exp_nonpos_reference(x):
    """exp(x), and 0 where exp(x) is below the smallest normal number of the function's
    format: fl_exp_nonpos_f32 and _f64 flush those by design (x is float64 for the float32
    function, long double for the float64 one)."""
    y = np.exp(x)
    tiny = np.finfo(np.float32 if x.dtype == np.float64 else np.float64).smallest_normal
    return np.where(y < tiny, 0, y).astype(y.dtype)


REFERENCE = {
    "exp": np.exp,
    "exp_nonpos": exp_nonpos_reference,
    "exp_neg": np.exp,
    "log": np.log,
    "log1p": np.log1p,
    "softplus": softplus_reference,
    "log_sigmoid": lambda x: -softplus_reference(-x),
    "sigmoid": sigmoid_reference,
    "log1p_unit": np.log1p,
    "expm1_neg": np.expm1,
    "tanh": np.tanh,
}


# Every function of the math layer; each test below is parametrized over this registry, so a
# function added to fl_math.h and _kernels.MATH_FUNCTIONS is enrolled everywhere once it has
# a REFERENCE, a ULP_BOUND, FLOAT64_RANGES and exact_cases entry.
FUNCTIONS = list(_kernels.MATH_FUNCTIONS)


def test_every_function_has_a_reference_and_a_bound():
    assert set(REFERENCE) == set(FUNCTIONS) == set(ULP_BOUND) == set(FLOAT64_RANGES)


def reference(name, x):
    """The function `name` at x (float32/float64), computed in the wider format."""
    with np.errstate(all="ignore"):
        return REFERENCE[name](x.astype(WIDE[x.dtype]))


def apply(name, x):
    """fl_math.h's `name` over the contiguous array x, under the active ISA variant."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _kernels.math_apply(name, x, out)
    return out


CHUNK = 1 << 21  # values per call in the sweeps: keeps memory at ~60 MB


def float32_range(first, last, stride=1):
    """Every `stride`-th float32 between `first` and `last` (same sign), in chunks."""
    lo, hi = sorted(int(np.float32(v).view(np.uint32)) for v in (first, last))
    for start in range(lo, hi + 1, CHUNK * stride):
        stop = min(start + CHUNK * stride, hi + 1)
        yield np.arange(start, stop, stride, dtype=np.uint32).view(np.float32)


def every_float32(stride):
    """Every `stride`-th of all 2^32 float32 bit patterns (both signs, inf, nan), in chunks."""
    for start in range(0, 1 << 32, CHUNK * stride):
        stop = min(start + CHUNK * stride, 1 << 32)
        yield np.arange(start, stop, stride, dtype=np.uint64).astype(np.uint32).view(np.float32)


def max_ulp_error(name, chunks):
    """The largest ulp_error of `name` over the chunks of input, and the x where it occurs."""
    worst, worst_x = 0.0, None
    for x in chunks:
        error = ulp_error(apply(name, x), reference(name, x))
        i = int(np.argmax(error))
        if error[i] > worst or worst_x is None:
            worst, worst_x = float(error[i]), x[i]
    return worst, worst_x


def assert_within(name, dtype, isa, worst, worst_x, record_property):
    """Record the measured maximum and check it against the function's bound."""
    record_property("max_ulp", worst)
    bound = ulp_bound(name, dtype, isa)
    assert worst <= bound, (
        f"{name} {dtype} [{isa}]: {worst:.3f} ulp at x = {worst_x!r} "
        f"(result {apply(name, np.array([worst_x]))[0]!r}, "
        f"reference {reference(name, np.array([worst_x]))[0]!r}); bound {bound}")


# ------------------------------------------------------------------------ ISA variants

RUNNABLE_ISAS = [name for name, compiled, supported in _kernels.isa_levels()
                 if compiled and supported]


@pytest.fixture(params=RUNNABLE_ISAS)
def isa(request):
    """Run the test under one ISA variant; afterwards restore the best one (the default)."""
    _kernels.set_isa(request.param)
    assert _kernels.active_isa() == request.param
    yield request.param
    _kernels.set_isa(_kernels.best_isa())


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="the AVX2 and AVX-512 variants exist on x86-64 only")
def test_every_isa_variant_is_compiled_on_x86_64():
    """A build that silently lost the AVX2/AVX-512 variants would pass every other test."""
    levels = _kernels.isa_levels()
    assert [name for name, _, _ in levels] == ["baseline", "avx2", "avx512"]
    assert all(compiled for _, compiled, _ in levels)
    assert levels[0][2], "the baseline variant must run on every x86-64 CPU"
    supported = [name for name, _, cpu_supports in levels if cpu_supports]
    assert _kernels.best_isa() == supported[-1]


# ------------------------------------------------------------------- float32 sweeps


def test_exp_float32_every_value(isa, record_property):
    """exp on every float32 with 2^-26 <= |x| <= 89 / 104: all results that are neither
    exactly 1 (|x| < 2^-26) nor 0 / inf beyond the underflow and overflow thresholds, which
    are reached inside the swept range (so the exact thresholds are checked too), including
    every gradually underflowing (subnormal) result."""
    chunks = [float32_range(2.0**-26, 89.0), float32_range(-(2.0**-26), -104.0)]
    worst, worst_x = max(max_ulp_error("exp", c) for c in chunks)
    assert_within("exp", F32, isa, worst, worst_x, record_property)


def test_exp_neg_float32_every_value(isa, record_property):
    """The logistic losses' exp on every float32 in [-104, -2^-26]: within the bound all the
    way down, through every subnormal result (gradual underflow, no flush), to +0 at the
    underflow threshold."""
    worst, worst_x = max_ulp_error("exp_neg", float32_range(-(2.0**-26), -104.0))
    assert_within("exp_neg", F32, isa, worst, worst_x, record_property)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_exp_neg_underflows_gradually(isa, dtype):
    """At exp's exact underflow threshold exp_neg gives +0 and one float above it the
    smallest subnormal; one argument per subnormal binade gives that binade's value."""
    info = np.finfo(dtype)
    _, underflow = exp_thresholds(dtype)
    y = apply("exp_neg", np.array([underflow, np.nextafter(underflow, dtype.type(0))], dtype))
    assert y[0] == 0 and not np.signbit(y[0])
    assert y[1] == info.smallest_subnormal
    k = np.arange(-int(np.log2(info.smallest_normal)), -int(np.log2(info.smallest_subnormal)))
    x = np.log(np.ldexp(np.ones(len(k), WIDE[dtype]), -k - 1) * 1.5).astype(dtype)
    y = apply("exp_neg", x)
    assert np.all((y > 0) & (y < info.smallest_normal))
    assert np.all(ulp_error(y, reference("exp_neg", x)) <= ULP_BOUND["exp_neg"])


def test_exp_nonpos_float32_every_value(isa, record_property):
    """The softmax's exp on every float32 in [-104, -2^-26]: within the bound down to
    ln(FLT_MIN), exactly +0 below (the flush of fl_exp_nonpos_f32, part of the reference),
    never a subnormal."""
    worst, worst_x = 0.0, None
    for x in float32_range(-(2.0**-26), -104.0):
        y = apply("exp_nonpos", x)
        assert not np.any((y != 0) & (y < np.finfo(np.float32).smallest_normal))
        assert not np.any(np.signbit(y))
        error = ulp_error(y, reference("exp_nonpos", x))
        i = int(np.argmax(error))
        if error[i] > worst or worst_x is None:
            worst, worst_x = float(error[i]), x[i]
    assert_within("exp_nonpos", F32, isa, worst, worst_x, record_property)


@pytest.mark.parametrize("name", ["exp", "exp_nonpos", "exp_neg"])
def test_exp_float32_tiny_arguments_give_one(isa, name):
    """For |x| < 2^-26, e^x = 1 + x + ... rounds to 1 (every 7th float32 with that magnitude,
    both signs; exp_nonpos is only defined for x <= 0)."""
    signs = [-1.0] if name in ("exp_nonpos", "exp_neg") else [1.0, -1.0]
    for sign in signs:
        for x in float32_range(sign * 0.0, sign * 2.0**-26, stride=7):
            assert np.all(apply(name, x) == 1.0)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_float32_dense_sweep(isa, name, record_property):
    """Every 127th float32 bit pattern (all exponents, both signs, subnormals, infs and nans:
    34 M values; exp_nonpos and exp_neg over their domain x <= 0 only) against the float64
    reference."""
    stride = 127
    if name in NONPOSITIVE_DOMAIN:
        chunks = float32_range(-0.0, -np.inf, stride)
    elif name == "log1p_unit":
        chunks = float32_range(0.0, 1.0, 1)   # every float32 of its domain [0, 1]
    else:
        chunks = every_float32(stride)
    worst, worst_x = max_ulp_error(name, chunks)
    assert_within(name, F32, isa, worst, worst_x, record_property)


# ------------------------------------------------------------------- float64 sweeps

# Where each float64 function is not saturated: uniform samples there come on top of the
# random bit patterns (which spread evenly over the binades instead).
FLOAT64_RANGES = {
    "exp": [(-746.0, 710.0), (-1.0, 1.0)],
    "exp_nonpos": [(-746.0, 0.0), (-1.0, 0.0)],
    "exp_neg": [(-746.0, 0.0), (-1.0, 0.0), (-746.0, -708.0)],
    "log": [(0.0, 4.0), (0.5, 2.0)],
    "log1p": [(-1.0, 1.0), (-1e-3, 1e-3), (0.0, 1e6)],
    "softplus": [(-750.0, 750.0), (-40.0, 40.0), (-1.0, 1.0)],
    "log_sigmoid": [(-750.0, 750.0), (-40.0, 40.0), (-1.0, 1.0)],
    "sigmoid": [(-750.0, 750.0), (-40.0, 40.0), (-1.0, 1.0)],
    "log1p_unit": [(0.0, 1.0), (0.0, 1e-3), (0.9, 1.0)],
    "expm1_neg": [(-746.0, 0.0), (-1.0, 0.0), (-1e-3, 0.0), (-0.4, -0.3)],
    "tanh": [(-20.0, 20.0), (-1.1, 1.1), (-1e-3, 1e-3)],
}
FLOAT64_SAMPLES_PER_PART = 1_000_000


def in_domain(name, x):
    """Arguments mapped into the domain of the functions defined on part of the line only:
    exp_nonpos and exp_neg (x <= 0) and log1p_unit (0 <= x <= 1; |x| or 1/|x|). nan stays
    nan."""
    if name in NONPOSITIVE_DOMAIN:
        return -np.abs(x)
    if name == "log1p_unit":
        magnitude = np.abs(x)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            return np.where(magnitude <= 1, magnitude, 1 / magnitude).astype(x.dtype)
    return x


def float64_arguments(name, n):
    """n random float64 bit patterns (every binade, both signs, subnormals, some inf and nan)
    and n uniform samples in each of the function's FLOAT64_RANGES."""
    rng = np.random.default_rng(sum(map(ord, name)))
    parts = [rng.integers(0, 1 << 64, n, dtype=np.uint64, endpoint=False).view(np.float64)]
    parts += [rng.uniform(lo, hi, n) for lo, hi in FLOAT64_RANGES[name]]
    x = np.concatenate(parts)
    return in_domain(name, x)


@pytest.fixture(scope="module", params=FUNCTIONS)
def float64_sweep(request):
    """(name, x, reference) for the float64 sweep of one function. Module scope: the long
    double reference is computed once and shared by the ISA variants (pytest runs the tests
    of one function together and frees the arrays before the next)."""
    name = request.param
    x = float64_arguments(name, FLOAT64_SAMPLES_PER_PART)
    return name, x, reference(name, x)


def test_float64_dense_sweep(isa, float64_sweep, record_property):
    """~4 M float64 arguments per function against the long double reference."""
    name, x, ref = float64_sweep
    error = ulp_error(apply(name, x), ref)
    i = int(np.argmax(error))
    assert_within(name, F64, isa, float(error[i]), x[i], record_property)


def test_longdouble_reference_agrees_with_mpmath():
    """The float64 oracle itself: np.longdouble (64-bit significand where it is x87 extended
    precision) against mpmath at 100 bits, on arguments drawn like the float64 sweep's; its
    error must be far below a float64 ulp (2^-60 relative: < 1/128 ulp) for the sweeps to
    mean anything."""
    mpmath = pytest.importorskip("mpmath")
    if np.finfo(np.longdouble).nmant < 63:
        pytest.fail("np.longdouble is not wider than float64 here: the float64 sweeps "
                    "need another reference (mpmath) on this platform")
    mp = mpmath.mp
    exact = {
        "exp": mp.exp,
        "exp_nonpos": mp.exp,
        "exp_neg": mp.exp,
        "log": mp.log,
        "log1p": mp.log1p,
        "softplus": lambda v: mp.log1p(mp.exp(v)),
        "log_sigmoid": lambda v: -mp.log1p(mp.exp(-v)),
        "sigmoid": lambda v: 1 / (1 + mp.exp(-v)),
        "log1p_unit": mp.log1p,
        "expm1_neg": mp.expm1,
        "tanh": mp.tanh,
    }
    with mpmath.workprec(100):
        for name, fn in exact.items():
            x = float64_arguments(name, 100)
            for xi, ri in zip(x, reference(name, x)):
                if not np.isfinite(ri) or ri == 0:
                    continue
                want = fn(mp.mpf(float(xi)))
                mantissa, exponent = np.frexp(ri)  # ri = mantissa 2^exponent, exactly
                got = mp.ldexp(mp.mpf(int(np.ldexp(mantissa, 64))), int(exponent) - 64)
                assert abs(got - want) <= abs(want) * 2.0**-60, (name, xi, ri, want)


# ------------------------------------------------------------------- special values


def exact_cases(name, dtype):
    """(x, result) pairs whose result is exactly determined: nan, +-inf, +-0, the extremes of
    the format, the domain boundaries of log/log1p (C99 Annex F for exp/log/log1p)."""
    info = np.finfo(dtype)
    inf, nan = np.inf, np.nan
    big, tiny, sub = float(info.max), float(info.smallest_normal), float(info.smallest_subnormal)
    below_minus_one = float(np.nextafter(dtype.type(-1), dtype.type(-2)))
    cases = {
        "exp": [(nan, nan), (inf, inf), (-inf, 0.0), (0.0, 1.0), (-0.0, 1.0), (big, inf),
                (-big, 0.0), (tiny, 1.0), (-tiny, 1.0), (sub, 1.0), (-sub, 1.0), (-1e4, 0.0),
                (1e4, inf)],
        "exp_nonpos": [(nan, nan), (-inf, 0.0), (0.0, 1.0), (-0.0, 1.0), (-big, 0.0),
                       (-tiny, 1.0), (-sub, 1.0), (-1e4, 0.0)],
        "exp_neg": [(nan, nan), (-inf, 0.0), (0.0, 1.0), (-0.0, 1.0), (-big, 0.0),
                    (-tiny, 1.0), (-sub, 1.0), (-1e4, 0.0)],
        "log": [(nan, nan), (inf, inf), (-inf, nan), (0.0, -inf), (-0.0, -inf), (1.0, 0.0),
                (-1.0, nan), (-tiny, nan), (-sub, nan), (-big, nan)],
        "log1p": [(nan, nan), (inf, inf), (-inf, nan), (0.0, 0.0), (-0.0, -0.0), (-1.0, -inf),
                  (below_minus_one, nan), (-2.0, nan), (-big, nan), (sub, sub), (-sub, -sub),
                  (tiny, tiny), (-tiny, -tiny), (2.0**-60, 2.0**-60), (-(2.0**-60), -(2.0**-60))],
        "softplus": [(nan, nan), (inf, inf), (-inf, 0.0), (big, big), (-big, 0.0),
                     (1e4, 1e4), (-1e4, 0.0)],
        "log_sigmoid": [(nan, nan), (inf, 0.0), (-inf, -inf), (-big, -big), (big, 0.0),
                        (-1e4, -1e4), (1e4, 0.0)],
        "sigmoid": [(nan, nan), (inf, 1.0), (-inf, 0.0), (0.0, 0.5), (-0.0, 0.5), (big, 1.0),
                    (-big, 0.0), (1e4, 1.0), (-1e4, 0.0)],
        "log1p_unit": [(nan, nan), (0.0, 0.0), (-0.0, -0.0), (sub, sub), (tiny, tiny),
                       (2.0**-60, 2.0**-60)],
        "expm1_neg": [(nan, nan), (-inf, -1.0), (0.0, 0.0), (-0.0, -0.0), (-big, -1.0),
                      (-sub, -sub), (-tiny, -tiny), (-1e4, -1.0), (-(2.0**-60), -(2.0**-60))],
        # saturation: exactly +-1 from |x| > 9.01 (float32) / 19.06 (float64) on
        "tanh": [(nan, nan), (inf, 1.0), (-inf, -1.0), (0.0, 0.0), (-0.0, -0.0), (big, 1.0),
                 (-big, -1.0), (sub, sub), (-sub, -sub), (tiny, tiny), (-tiny, -tiny),
                 (2.0**-60, 2.0**-60), (20.0, 1.0), (-20.0, -1.0), (1e4, 1.0)],
    }
    return cases[name]


# Zeros whose sign is defined: C99 for exp (+0 on underflow), log (log 1 = +0) and log1p
# (log1p(+-0) = +-0); softplus and sigmoid are positive functions, so their 0 is +0.
# log_sigmoid's 0 (at +inf or huge x) may have either sign.
SIGNED_ZERO = {"exp", "exp_nonpos", "exp_neg", "log", "log1p", "softplus", "sigmoid", "log1p_unit",
               "expm1_neg", "tanh"}


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_exact_special_values(isa, name, dtype):
    """nan, +-inf, +-0, the format's extremes and the domain edges, element by element and
    together in one array (so that both the vector body and the remainder loop see them)."""
    cases = exact_cases(name, dtype)
    x = np.array([c[0] for c in cases], dtype=dtype)
    want = np.array([c[1] for c in cases], dtype=dtype)
    together = apply(name, x)
    alone = np.array([apply(name, x[i:i + 1])[0] for i in range(len(x))], dtype=dtype)
    for got in (together, alone):
        for xi, gi, wi in zip(x, got, want):
            if np.isnan(wi):
                assert np.isnan(gi), f"{name}({xi!r}) = {gi!r}, expected nan"
                continue
            assert gi == wi, f"{name}({xi!r}) = {gi!r}, expected {wi!r}"
            if wi == 0 and name in SIGNED_ZERO:
                assert np.signbit(gi) == np.signbit(wi), f"{name}({xi!r}) = {gi!r}, want {wi!r}"


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_nan_stays_nan(isa, dtype):
    """Every function maps every nan (quiet or signalling, either sign, any payload) to nan."""
    if dtype == F32:
        bits = np.array([0x7FC00000, 0xFFC00000, 0x7FC00001, 0x7F800001, 0xFFFFFFFF,
                         0x7FBFFFFF], dtype=np.uint32)
    else:
        bits = np.array([0x7FF8000000000000, 0xFFF8000000000000, 0x7FF8000000000001,
                         0x7FF0000000000001, 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
    x = np.tile(bits.view(dtype), 7)  # long enough for the vector body too
    for name in FUNCTIONS:
        assert np.all(np.isnan(apply(name, x))), name


def exp_thresholds(dtype):
    """(largest x with a finite exp, largest x whose exp rounds to 0) for the format, found
    from the reference by stepping one float at a time from ln(max) and ln(min subnormal / 2)."""
    info = np.finfo(dtype)

    def step_up(v):
        return np.nextafter(v, dtype.type(np.inf))

    def step_down(v):
        return np.nextafter(v, dtype.type(-np.inf))

    def rounds(v):  # exp(v) correctly rounded to the format
        return reference("exp", np.array([v], dtype))[0].astype(dtype)

    with np.errstate(over="ignore"):
        x = dtype.type(np.log(info.max.astype(WIDE[dtype])))
        while np.isfinite(rounds(step_up(x))):
            x = step_up(x)
        while not np.isfinite(rounds(x)):
            x = step_down(x)
        overflow = x
        x = dtype.type(np.log(info.smallest_subnormal.astype(WIDE[dtype]) / 2))
        while rounds(step_up(x)) == 0:
            x = step_up(x)
        while rounds(x) != 0:
            x = step_down(x)
        underflow = x
    return overflow, underflow


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_exp_overflow_and_underflow_thresholds(isa, dtype):
    """At the exact overflow threshold exp is finite and correct, one float further it is
    +inf; at the exact underflow threshold it is +0, one float further the smallest
    subnormal (the exact value lies just above half of it: < 1 ulp either way, so the
    correctly rounded value is demanded); in between, results go gradually through every
    subnormal binade (no flush to zero)."""
    info = np.finfo(dtype)
    overflow, underflow = exp_thresholds(dtype)
    up = np.nextafter(overflow, dtype.type(np.inf))
    x = np.array([overflow, up, underflow, np.nextafter(underflow, dtype.type(0))], dtype)
    y = apply("exp", x)
    assert np.isfinite(y[0]) and ulp_error(y[:1], reference("exp", x[:1]))[0] <= 1.0
    assert y[1] == np.inf
    assert y[2] == 0 and not np.signbit(y[2])
    assert y[3] == info.smallest_subnormal
    # gradual underflow: one argument per subnormal binade, results 2^-k for k down to the last
    k = np.arange(-int(np.log2(info.smallest_normal)), -int(np.log2(info.smallest_subnormal)))
    powers = np.ldexp(np.ones(len(k), WIDE[dtype]), -k - 1) * 1.5
    x = np.log(powers).astype(dtype)
    y = apply("exp", x)
    assert np.all((y > 0) & (y < info.smallest_normal))
    assert np.all(ulp_error(y, reference("exp", x)) <= ULP_BOUND["exp"])


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_extreme_finite_arguments(isa, name, dtype):
    """The format's largest finite, smallest normal and smallest subnormal of either sign,
    +-1, +-2 and their neighbours: within the function's bound of the reference (nan where
    the reference is nan)."""
    info = np.finfo(dtype)
    base = [info.max, info.smallest_normal, info.smallest_subnormal, 1.0, 2.0, 0.5,
            np.log(2.0), 88.0, 700.0]
    x = np.array(base, dtype)
    with np.errstate(over="ignore"):  # the neighbour of the largest float is inf
        x = np.concatenate([x, np.nextafter(x, dtype.type(np.inf)),
                            np.nextafter(x, dtype.type(0))])
    x = np.concatenate([x, -x])
    if name in NONPOSITIVE_DOMAIN:
        x = x[x <= 0]
    if name == "log1p_unit":
        x = x[(x >= 0) & (x <= 1)]
    error = ulp_error(apply(name, x), reference(name, x))
    i = int(np.argmax(error))
    assert error[i] <= ulp_bound(name, dtype, isa), (name, x[i], error[i])


# ------------------------------------------------------------------ remainder loops


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("n", [1, 3, 17, 1_000_003])
def test_lengths_not_a_multiple_of_the_vector_width(isa, dtype, n):
    """Every function gives for each element of an array of length n (also starting 1 and 3
    elements past an aligned address) what it gives for that element alone: the peeled,
    vector and remainder iterations compute the same thing. For n = 1_000_003 the first and
    last 40 elements and every 997th are compared one by one."""
    rng = np.random.default_rng(n)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1.0], dtype)
    idx = np.arange(n) if n <= 100 else np.unique(np.r_[0:40, n - 40:n, 0:n:997])
    for offset in (0, 1, 3):
        base = rng.standard_normal(n + offset) * rng.choice([1.0, 30.0, 1e3], n + offset)
        base = base.astype(dtype)
        base[rng.integers(0, n + offset, min(n, 7))] = specials[: min(n, 7)]
        for name in FUNCTIONS:
            # slicing after the copy keeps x `offset` elements past the allocation's start
            x = in_domain(name, base)[offset:]
            together = apply(name, x)
            alone = np.array([apply(name, x[i:i + 1])[0] for i in idx], dtype)
            np.testing.assert_array_equal(together[idx], alone, err_msg=f"{name} n={n}")


# ------------------------------------------------------------- tanh (issue 13)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_tanh_saturates_exactly_and_is_odd(isa, dtype):
    """Soft-capping needs tanh to be exactly +-1 once the true value rounds to it (so the
    cap's derivative (1 - t)(1 + t) is exactly 0 there) and odd to the bit."""
    threshold = 9.01 if dtype == F32 else 19.07
    x = np.linspace(threshold, 60.0, 4001).astype(dtype)
    assert np.all(apply("tanh", x) == 1) and np.all(apply("tanh", -x) == -1)
    y = np.linspace(0, threshold, 100_001).astype(dtype)
    np.testing.assert_array_equal(apply("tanh", -y), -apply("tanh", y))
    assert np.all(np.diff(apply("tanh", y)) >= 0)   # monotone
