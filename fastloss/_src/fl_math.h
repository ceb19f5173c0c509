/*
 * fl_math.h -- branch-free, vectorizable elementary functions for the fastloss kernels.
 *
 * Why not libm: a loop that calls scalar expf/logf does not vectorize, and on the machines
 * fastloss targets such a kernel loses to NumPy's SIMD exp (see shared/PERFORMANCE.md).
 * Every function here is straight-line code with selects (`c ? a : b`) instead of branches,
 * so gcc's vectorizer turns a `#pragma omp simd` loop that calls it into SSE2/AVX2/AVX-512
 * code, whichever the calling function is compiled for (fl_kernels.c compiles each kernel
 * once per ISA and dispatches at run time).
 *
 * Accuracy (tests/test_math.py, against float64 / long double references, every ISA variant;
 * exp on every float32 argument, the others on dense sweeps), largest errors measured:
 *   exp, log, log1p: 0.84 ulp in float32 and float64;
 *   exp_nonpos (float32 softmax exp) and exp_neg (x <= 0, the logistic losses' exp): 0.91 ulp
 *   with FMA (avx2, avx512), 1.17 ulp without;
 *   softplus, log_sigmoid: 1.51 ulp; sigmoid: 2.25 ulp.
 *   nan propagates; +-inf, 0, overflow and gradual underflow behave as C99 Annex F says.
 * Compile with -fno-trapping-math (value-safe) and never with -ffast-math: the selects and
 * the nan tests below rely on IEEE semantics.
 */
#ifndef FASTLOSS_FL_MATH_H
#define FASTLOSS_FL_MATH_H

#include <stdint.h>
#include <string.h>

/* always_inline: the functions must be inlined into the ISA-specific callers to vectorize.
 * Inlining a default-target function into a target("arch=...") function is allowed. */
#define FL_INLINE static inline __attribute__((always_inline))

/* ---- bit casts (memcpy is the defined way; gcc turns it into a register move) ---- */
FL_INLINE float fl_f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
FL_INLINE uint32_t fl_f32_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
FL_INLINE double fl_f64_from_bits(uint64_t u) { double f; memcpy(&f, &u, sizeof f); return f; }
FL_INLINE uint64_t fl_f64_bits(double f) { uint64_t u; memcpy(&u, &f, sizeof u); return u; }

/* Round-to-nearest-integer without rint() (SSE2 has no vector round): adding and subtracting
 * 1.5 * 2^(mantissa bits) rounds x to an integer for |x| < 2^22 (float) / 2^51 (double). */
#define FL_ROUND_MAGIC_F32 0x1.8p23f
#define FL_ROUND_MAGIC_F64 0x1.8p52

/* 2^k for an integer-valued k in [-126, 127]. The low bits of (k + magic) hold k in two's
 * complement; adding the exponent bias and shifting the exponent field into place makes the
 * bits of 2^k (the magic's own high bits are shifted out of the word). */
FL_INLINE float fl_exp2i_f32(float k)
{
    return fl_f32_from_bits((fl_f32_bits(k + FL_ROUND_MAGIC_F32) + 127u) << 23);
}

/* 2^k for an integer-valued k in [-1022, 1023]; same construction in 64 bits. */
FL_INLINE double fl_exp2i_f64(double k)
{
    return fl_f64_from_bits((fl_f64_bits(k + FL_ROUND_MAGIC_F64) + 1023u) << 52);
}

/* ===================================== exp ===================================== */
/*
 * exp(x) = 2^k * exp(r),  k = rint(x / ln 2),  r = x - k ln 2 in [-ln2/2, ln2/2].
 * r is computed with ln 2 split in two (Cody & Waite, "Software Manual for the Elementary
 * Functions", 1980): k * LN2_HI is exact because LN2_HI has trailing zero bits.
 * exp(r) = 1 + r + r^2 P(r), P fitted for least relative error on the interval
 * (float32: degree 4, max rel. error 3.6e-9; float64: degree 9, 4.3e-18).
 * The sum is evaluated as hi + (lo + r^2 P) with hi = 1 + r rounded and lo = (1 - hi) + r
 * its exact rounding error (Fast2Sum, |r| < 1; Dekker 1971): only the last addition rounds
 * at the scale of the result. Rounding r + r^2 P first and then adding 1 rounds twice and
 * reached 1.01 ulp (float32) / 1.04 ulp (float64) where FMA contraction is on; this form
 * stays within 0.80 / 0.82 ulp in every ISA variant for three more additions
 * (measured by tests/test_math.py: every float32, millions of float64).
 * 2^k is applied as two factors 2^k1 * 2^k2 so that results down into the subnormal range
 * round once (gradual underflow) and results past the largest float become +inf.
 */
#define FL_LOG2E_F32 0x1.715476p+0f
#define FL_LN2_HI_F32 0x1.62e4p-1f          /* 9 significant bits: k * LN2_HI is exact */
#define FL_LN2_LO_F32 0x1.7f7d1cp-20f       /* ln 2 - LN2_HI */
#define FL_LOG2E_F64 0x1.71547652b82fep+0
#define FL_LN2_HI_F64 0x1.62e42feep-1       /* 32 significant bits */
#define FL_LN2_LO_F64 0x1.a39ef35793c76p-33

/* rint(x) for |x| < 2^22 (float) / 2^51 (double), see FL_ROUND_MAGIC_*. */
FL_INLINE float fl_rint_f32(float x) { return (x + FL_ROUND_MAGIC_F32) - FL_ROUND_MAGIC_F32; }
FL_INLINE double fl_rint_f64(double x) { return (x + FL_ROUND_MAGIC_F64) - FL_ROUND_MAGIC_F64; }

/* r = x - k ln 2 for k = rint(x / ln 2), |r| <= ln2/2 (Cody-Waite: k * LN2_HI is exact). */
FL_INLINE float fl_exp_arg_f32(float x, float k)
{
    const float r = x - k * FL_LN2_HI_F32;
    return r - k * FL_LN2_LO_F32;
}

FL_INLINE double fl_exp_arg_f64(double x, double k)
{
    const double r = x - k * FL_LN2_HI_F64;
    return r - k * FL_LN2_LO_F64;
}

/* P(r) with exp(r) = 1 + r + r^2 P(r) on |r| <= ln2/2. */
FL_INLINE float fl_exp_poly_f32(float r)
{
    return 0x1.fffff8p-2f + r * (0x1.55548ep-3f + r * (0x1.555b58p-5f
           + r * (0x1.123b8ep-7f + r * 0x1.687c22p-10f)));
}

FL_INLINE double fl_exp_poly_f64(double r)
{
    return 0x1.000000000000bp-1 + r * (0x1.5555555555513p-3
        + r * (0x1.55555555500b2p-5 + r * (0x1.1111111121b01p-7
        + r * (0x1.6c16c18581530p-10 + r * (0x1.a01a014a32d85p-13
        + r * (0x1.a019970598987p-16 + r * (0x1.71dedfc117959p-19
        + r * (0x1.28afdbfa89bf0p-22 + r * 0x1.adeb8db5d7212p-26))))))));
}

/* exp(r) = hi + (lo + r^2 P(r)), hi + lo = 1 + r exactly (see the comment above). */
FL_INLINE float fl_exp_reduced_f32(float r)
{
    const float hi = 1.0f + r;
    const float lo = (1.0f - hi) + r;
    return hi + (lo + r * r * fl_exp_poly_f32(r));
}

FL_INLINE double fl_exp_reduced_f64(double r)
{
    const double hi = 1.0 + r;
    const double lo = (1.0 - hi) + r;
    return hi + (lo + r * r * fl_exp_poly_f64(r));
}

FL_INLINE float fl_exp_f32(float x)
{
    float xc = x < -104.0f ? -104.0f : x;   /* exp(-104) < 2^-150: rounds to 0 */
    xc = xc > 89.0f ? 89.0f : xc;           /* exp(89) > FLT_MAX: rounds to inf */
    xc = (x == x) ? xc : 0.0f;              /* keep nan out of the integer arithmetic */
    const float k = fl_rint_f32(xc * FL_LOG2E_F32);
    const float k1 = fl_rint_f32(k * 0.5f);
    const float k2 = k - k1;
    const float er = fl_exp_reduced_f32(fl_exp_arg_f32(xc, k));
    const float y = (er * fl_exp2i_f32(k1)) * fl_exp2i_f32(k2);
    return (x == x) ? y : x;
}

/*
 * exp for x <= 0 as the softmax needs it (x = logit - row max): the hottest loop of the
 * softmax kernels, so it does the least work that keeps it accurate where it matters.
 * - Results below FLT_MIN (x < -87.33) are returned as 0 instead of subnormals, so one scale
 *   factor 2^k (k >= -126) suffices: such a term is below 1.2e-38 against a softmax
 *   denominator >= 1.
 * - No nan selects: a nan argument stays nan through every operation below (the scale bits
 *   built from it are finite or not, but nan * anything is nan), and no upper clamp: the
 *   argument is never positive.
 * - The rounding sum j = x log2(e) + magic yields both k = j - magic and the bits of 2^k.
 * - exp(r) = 1 + r (1 + r P(r)) is two fused multiply-adds where the ISA has FMA (avx2,
 *   avx512: 0.91 ulp at most, measured on every float32), and rounds r (1 + r P) separately
 *   without (baseline SSE2: 1.17 ulp), against 0.80 ulp and three more additions for the
 *   compensated form of fl_exp_f32.
 */
/* The body shared by fl_exp_nonpos_f32 and fl_exp_neg_f32: 2^(k + extra) (1 + r (1 + r P(r)))
 * for a clamped argument xc <= 0, 2^(k + extra) a normal number. */
FL_INLINE float fl_exp_le0_f32(float xc, uint32_t extra)
{
    const float j = xc * FL_LOG2E_F32 + FL_ROUND_MAGIC_F32;
    const float k = j - FL_ROUND_MAGIC_F32;
    const float r = fl_exp_arg_f32(xc, k);
    const float scale = fl_f32_from_bits((fl_f32_bits(j) + 127u + extra) << 23);
    return (1.0f + r * (1.0f + r * fl_exp_poly_f32(r))) * scale;
}

FL_INLINE float fl_exp_nonpos_f32(float x)
{
    const float lo = -0x1.5d589ep+6f;       /* -87.33: ln(FLT_MIN), so k >= -126 */
    const float y = fl_exp_le0_f32(x < lo ? lo : x, 0u);
    return x < lo ? 0.0f : y;
}

/*
 * exp for x <= 0 with gradual underflow: the e = exp(-|x|) of the logistic losses, whose
 * subnormal values are results (sigmoid(-90) = e / (1 + e) in float32), so they cannot be
 * flushed as in fl_exp_nonpos_f32. The same reduction and 1 + r (1 + r P(r)) as
 * fl_exp_nonpos_f32, and one multiplication more instead of fl_exp_f32's second rounding
 * step, upper clamp, nan selects and compensated sum: the scale is 2^(k + 64), a normal
 * number for every k in [-150, 0], and the product is multiplied by 2^-64, exact where the
 * result is normal and rounding once more into the subnormal range (<= 1 ulp of a
 * subnormal on top). nan stays nan (as in fl_exp_nonpos_f32), -inf and x < -104 give +0.
 */
FL_INLINE float fl_exp_neg_f32(float x)
{
    const float lo = -104.0f;               /* exp(-104) < 2^-150: rounds to 0 */
    const float y = fl_exp_le0_f32(x < lo ? lo : x, 64u) * 0x1p-64f;
    return x < lo ? 0.0f : y;
}

FL_INLINE double fl_exp_f64(double x)
{
    double xc = x < -746.0 ? -746.0 : x;     /* exp(-746) < 2^-1075: rounds to 0 */
    xc = xc > 710.0 ? 710.0 : xc;            /* exp(710) > DBL_MAX */
    xc = (x == x) ? xc : 0.0;
    const double k = fl_rint_f64(xc * FL_LOG2E_F64);
    const double k1 = fl_rint_f64(k * 0.5);
    const double k2 = k - k1;
    const double er = fl_exp_reduced_f64(fl_exp_arg_f64(xc, k));
    const double y = (er * fl_exp2i_f64(k1)) * fl_exp2i_f64(k2);
    return (x == x) ? y : x;
}

/* fl_exp_le0_f32 in float64 */
FL_INLINE double fl_exp_le0_f64(double xc, uint64_t extra)
{
    const double j = xc * FL_LOG2E_F64 + FL_ROUND_MAGIC_F64;
    const double k = j - FL_ROUND_MAGIC_F64;
    const double r = fl_exp_arg_f64(xc, k);
    const double scale = fl_f64_from_bits((fl_f64_bits(j) + 1023u + extra) << 52);
    return (1.0 + r * (1.0 + r * fl_exp_poly_f64(r))) * scale;
}

/* The float64 counterpart of fl_exp_nonpos_f32: results below DBL_MIN (x < -708.40) are 0. */
FL_INLINE double fl_exp_nonpos_f64(double x)
{
    const double lo = -0x1.6232bdd7abcd2p+9;   /* -708.40: ln(DBL_MIN), so k >= -1022 */
    const double y = fl_exp_le0_f64(x < lo ? lo : x, 0u);
    return x < lo ? 0.0 : y;
}

/* The float64 counterpart of fl_exp_neg_f32: scale 2^(k + 512) for k in [-1075, 0], then
 * 2^-512. */
FL_INLINE double fl_exp_neg_f64(double x)
{
    const double lo = -746.0;                /* exp(-746) < 2^-1075: rounds to 0 */
    const double y = fl_exp_le0_f64(x < lo ? lo : x, 512u) * 0x1p-512;
    return x < lo ? 0.0 : y;
}

/* ===================================== log ===================================== */
/*
 * log(x) = e ln2 + log(m),  x = 2^e m,  m in [sqrt(1/2), sqrt(2)).
 * With f = m - 1 (exact) and s = f / (2 + f):  log(1 + f) = 2 atanh(s) = 2s + s R(s^2),
 * R(z) = sum_k 2 z^k / (2k + 1), |s| <= 0.1716, truncated where the next term is below
 * 1/25 of the format's rounding error. Since 2s = f - f^2/2 + s f^2/2,
 *     log(1 + f) = f - (f^2/2 - s (f^2/2 + R)),
 * the form of fdlibm's e_log.c (Sun Microsystems, 1993): the exact leading term f carries
 * the result, and the rounding error of s (a division) only enters through the small
 * s (f^2/2 + R). The low part of e ln2 and a caller's correction c join the small terms, so
 * that the result rounds essentially once: log and log1p stay within 0.84 ulp (measured,
 * float32 and float64, every ISA), where the earlier form f - s (f - R) with the
 * correction added afterwards reached 1.17 ulp (log, float64, x just below sqrt(1/2) where
 * e ln 2 and log(m) cancel) and 1.44 ulp (log1p, float32, x near -2^-24).
 * fl_log_reduced_* take a positive normal xs and return log(xs) - e_offset ln 2 + c;
 * the caller handles 0, negative, inf and nan with fl_log_specials_*.
 * The exponent and mantissa are split with a logical shift of
 * bits(x) + (bits(1) - bits(sqrt(1/2))), which vectorizes without the 64-bit arithmetic shift
 * that AVX2 lacks.
 */
FL_INLINE float fl_log_reduced_f32(float xs, float e_offset, float c)
{
    const uint32_t u = fl_f32_bits(xs) + (0x3f800000u - 0x3f3504f3u);
    const float e = (float)(int32_t)(u >> 23) - (127.0f + e_offset);
    const float m = fl_f32_from_bits((u & 0x007fffffu) + 0x3f3504f3u);
    const float f = m - 1.0f;
    const float s = f / (2.0f + f);
    const float z = s * s;
    const float R = z * (0x1.555556p-1f + z * (0x1.99999ap-2f + z * (0x1.24924ap-2f
                    + z * 0x1.c71c72p-3f)));
    const float hfsq = 0.5f * f * f;
    return e * FL_LN2_HI_F32 + (f - (hfsq - (s * (hfsq + R) + (e * FL_LN2_LO_F32 + c))));
}

FL_INLINE double fl_log_reduced_f64(double xs, double e_offset, double c)
{
    const uint64_t u = fl_f64_bits(xs) + (0x3ff0000000000000ull - 0x3fe6a09e667f3bcdull);
    /* (u >> 52) as a double, exactly, via the 2^52 magic (no int64 -> double convert) */
    const double e = (fl_f64_from_bits((u >> 52) | 0x4330000000000000ull) - 0x1p52)
                     - (1023.0 + e_offset);
    const double m = fl_f64_from_bits((u & 0x000fffffffffffffull) + 0x3fe6a09e667f3bcdull);
    const double f = m - 1.0;
    const double s = f / (2.0 + f);
    const double z = s * s;
    const double R = z * (2.0 / 3 + z * (2.0 / 5 + z * (2.0 / 7 + z * (2.0 / 9
        + z * (2.0 / 11 + z * (2.0 / 13 + z * (2.0 / 15 + z * (2.0 / 17 + z * (2.0 / 19
        + z * (2.0 / 21 + z * (2.0 / 23)))))))))));
    const double hfsq = 0.5 * f * f;
    return e * FL_LN2_HI_F64 + (f - (hfsq - (s * (hfsq + R) + (e * FL_LN2_LO_F64 + c))));
}

/* log(0) = -inf, log(x < 0) = nan, log(inf) = inf, nan in, nan out (C99 F.9.3.7). */
FL_INLINE float fl_log_specials_f32(float x, float y)
{
    y = (x == 0.0f) ? -__builtin_inff() : y;
    y = (x < 0.0f) ? __builtin_nanf("") : y;
    y = (x == __builtin_inff()) ? x : y;
    return (x == x) ? y : x;
}

FL_INLINE double fl_log_specials_f64(double x, double y)
{
    y = (x == 0.0) ? -__builtin_inf() : y;
    y = (x < 0.0) ? __builtin_nan("") : y;
    y = (x == __builtin_inf()) ? x : y;
    return (x == x) ? y : x;
}

/* Subnormal x is scaled by 2^23 (2^52) first. */
FL_INLINE float fl_log_f32(float x)
{
    const int tiny = x < 0x1p-126f;
    const float xs = tiny ? x * 0x1p23f : x;
    return fl_log_specials_f32(x, fl_log_reduced_f32(xs, tiny ? 23.0f : 0.0f, 0.0f));
}

FL_INLINE double fl_log_f64(double x)
{
    const int tiny = x < 0x1p-1022;
    const double xs = tiny ? x * 0x1p52 : x;
    return fl_log_specials_f64(x, fl_log_reduced_f64(xs, tiny ? 52.0 : 0.0, 0.0));
}

/*
 * log1p(e) for e in [0, 1] only: the log1p(exp(-|x|)) of softplus, log_sigmoid and the
 * logistic losses. On that interval no exponent/mantissa split is needed: with
 * s = e / (2 + e) in [0, 1/3], log1p(e) = 2 atanh(s) = e - s (e - R(s^2)) (as in fl_log),
 * R(z) = z Q(z), Q fitted for least relative error of the result over the whole interval
 * (float32: degree 3, 4.5e-9; float64: degree 9, 1.4e-18). One division and a short
 * polynomial instead of log1p's range reduction, correction division and selects; the
 * losses that take it per element are compute-bound. Outside [0, 1] the result is not
 * log1p; nan in, nan out; the sign of zero is kept.
 */
FL_INLINE float fl_log1p_unit_f32(float e)
{
    const float s = e / (2.0f + e);
    const float z = s * s;
    const float R = z * (0x1.555504p-1f + z * (0x1.99d12ep-2f + z * (0x1.1ec904p-2f
                    + z * 0x1.1ea3a8p-2f)));
    return e - s * (e - R);
}

FL_INLINE double fl_log1p_unit_f64(double e)
{
    const double s = e / (2.0 + e);
    const double z = s * s;
    const double R = z * (0x1.5555555555539p-1 + z * (0x1.999999999fd9cp-2
        + z * (0x1.24924920d05aep-2 + z * (0x1.c71c73fe7671ap-3 + z * (0x1.745cb7ce86be7p-3
        + z * (0x1.3b1d8fd10736fp-3 + z * (0x1.106b6b319dbbcp-3 + z * (0x1.efa19db1a8cd8p-4
        + z * (0x1.5694a1a2cb6e2p-4 + z * 0x1.5baf1075e19f7p-3)))))))));
    return e - s * (e - R);
}

/* ============================ the derived functions ============================ */
/*
 * log1p(x) = log(u) + c,  u = 1 + x rounded,  c = (x - (u - 1)) / u: u - 1 and x - (u - 1)
 * are exact for -1 <= x <= 2^24 (2^53), so c is the first-order correction for the rounding
 * of 1 + x (Goldberg, "What every computer scientist should know about floating-point
 * arithmetic", 1991, Thm. 4); beyond, c is zero or below the result's rounding error.
 * c is added among the small terms of log(u) (see fl_log_reduced_*) so that it does not
 * round separately. u is never subnormal (u >= 2^-24 when positive). Where 1 + x rounds to
 * 1, log1p(x) rounds to x itself, which also keeps the sign of zero.
 *
 * softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))
 * log_sigmoid(x) = -softplus(-x) = min(x, 0) - log1p(exp(-|x|))
 * sigmoid(x): with e = exp(-|x|), 1 / (1 + e) for x >= 0 and e / (1 + e) otherwise, so
 * neither branch overflows.
 * Stamped out once per precision from one definition.
 */
#define FL_DEFINE_DERIVED(T, SFX)                                                   \
FL_INLINE T fl_log1p_##SFX(T x)                                                     \
{                                                                                   \
    const T u = (T)1 + x;                                                           \
    const T c = (x - (u - (T)1)) / u;                                               \
    const T y = fl_log_specials_##SFX(u, fl_log_reduced_##SFX(u, (T)0, c));          \
    return (u == (T)1) ? x : y;   /* |x| < ulp(1)/2: log1p(x) rounds to x, sign of 0 kept */\
}                                                                                   \
FL_INLINE T fl_softplus_##SFX(T x)                                                  \
{                                                                                   \
    const T ax = x < (T)0 ? -x : x;                                                 \
    return (x > (T)0 ? x : (T)0) + fl_log1p_unit_##SFX(fl_exp_##SFX(-ax));                \
}                                                                                   \
FL_INLINE T fl_log_sigmoid_##SFX(T x)                                               \
{                                                                                   \
    const T ax = x < (T)0 ? -x : x;                                                 \
    return (x < (T)0 ? x : (T)0) - fl_log1p_unit_##SFX(fl_exp_##SFX(-ax));                \
}                                                                                   \
FL_INLINE T fl_sigmoid_##SFX(T x)                                                   \
{                                                                                   \
    const T ax = x < (T)0 ? -x : x;                                                 \
    const T e = fl_exp_##SFX(-ax);                                                  \
    return (x >= (T)0 ? (T)1 : e) / ((T)1 + e);                                     \
}

FL_DEFINE_DERIVED(float, f32)
FL_DEFINE_DERIVED(double, f64)

#undef FL_DEFINE_DERIVED

/*
 * expm1(x) = exp(x) - 1 for x <= 0, accurate where the result is small: for
 * -ln2/2 < x <= 0 the reduction of exp leaves k = 0 and r = x, so
 * expm1(x) = x + x^2 P(x) = x (1 + x P(x)) with exp's own polynomial, no cancellation; below,
 * |expm1(x)| > 0.29 and exp_neg(x) - 1 loses nothing. -inf gives -1, nan stays nan.
 * (log_cosh's tanh(a) = -expm1(-2a) / (1 + exp(-2a)), accurate for small a.)
 */
#define FL_DEFINE_EXPM1_NEG(T, SFX)                                                 \
FL_INLINE T fl_expm1_neg_##SFX(T x)                                                 \
{                                                                                   \
    const T small = x * ((T)1 + x * fl_exp_poly_##SFX(x));                          \
    const T large = fl_exp_neg_##SFX(x) - (T)1;                                     \
    return x > (T)-0.34657359027997264 ? small : large;                             \
}

FL_DEFINE_EXPM1_NEG(float, f32)
FL_DEFINE_EXPM1_NEG(double, f64)

#undef FL_DEFINE_EXPM1_NEG

/* ===================================== tanh ===================================== */
/*
 * tanh(x) for the logit soft-capping of softmax_cross_entropy (issue 13: class-axis
 * losses). With v = -2|x| <= 0 and em1 = expm1(v):
 *     tanh|x| = -em1 / (2 + em1),     tanh x = copysign(tanh|x|, x)
 * em1 comes from one pass of exp's reduction and polynomial, with k = rint(v / ln 2),
 * r = v - k ln2 (Cody-Waite) and p = r + r^2 P(r) = expm1(r) (P of fl_exp_poly):
 *     expm1(v) = 2^k (1 + p) - 1 = 2^k p + (2^k - 1)
 * For k = 0 that is p itself, so there is no cancellation near 0 and tiny x give x exactly
 * (v + v^2 P rounds to v; -v / 2 is exact); for k = -1, p / 2 - 1 / 2; below, 2^k - 1 is
 * exact and |2^k p| < 0.35 |2^k - 1|: the sum rounds once at the result's scale. One
 * polynomial and no selects between branches (an earlier form computed exp's polynomial
 * twice, for the small and the large arguments, and picked one: ~2x the work per element).
 * v is clamped at -20 (float32) / -40 (float64), where exp(v) is far below half an ulp of 1:
 * past |x| = 9.01 (float32) / 19.06 (float64) em1 rounds to -1 and the result is exactly
 * +-1 (saturation), which also keeps 2^k a normal number; +-inf give +-1, nan stays nan
 * (it passes the clamp and every operation), and the sign of zero is kept.
 */
#define FL_DEFINE_TANH(T, UT, SFX, FN, LO, LOG2E, MAGIC, BIAS, SHIFT, BITS, FROM_BITS)  \
FL_INLINE T fl_tanh_##SFX(T x)                                                      \
{                                                                                   \
    const T v0 = (T)-2 * FN(fabs)(x);                                               \
    const T v = v0 < (T)(LO) ? (T)(LO) : v0;                                        \
    const T j = v * LOG2E + MAGIC;                                                  \
    const T k = j - MAGIC;                                                          \
    const T r = fl_exp_arg_##SFX(v, k);                                             \
    const T p = r + r * r * fl_exp_poly_##SFX(r);                                   \
    const T scale = FROM_BITS((BITS(j) + (UT)(BIAS)) << SHIFT);   /* 2^k */         \
    const T em1 = scale * p + (scale - (T)1);                                       \
    const T t = FN(fabs)(em1 / ((T)2 + em1));                                       \
    return FN(copysign)(t, x);                                                      \
}

#define FL_BUILTIN_F32(fn) __builtin_##fn##f
#define FL_BUILTIN_F64(fn) __builtin_##fn
FL_DEFINE_TANH(float, uint32_t, f32, FL_BUILTIN_F32, -20.0f, FL_LOG2E_F32, FL_ROUND_MAGIC_F32,
               127u, 23, fl_f32_bits, fl_f32_from_bits)
FL_DEFINE_TANH(double, uint64_t, f64, FL_BUILTIN_F64, -40.0, FL_LOG2E_F64, FL_ROUND_MAGIC_F64,
               1023u, 52, fl_f64_bits, fl_f64_from_bits)
#undef FL_BUILTIN_F32
#undef FL_BUILTIN_F64

#undef FL_DEFINE_TANH

#endif /* FASTLOSS_FL_MATH_H */
