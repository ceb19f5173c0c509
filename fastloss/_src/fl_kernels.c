/*
 * fl_kernels.c -- every kernel compiled once per instruction set, and the run-time dispatch.
 *
 * The package is built without -march flags so that one binary runs on any x86-64 machine.
 * The hot loops only vectorize well with wide registers, so each kernel is compiled three
 * times here: for baseline x86-64 (SSE2), x86-64-v3 (AVX2 + FMA) and x86-64-v4 (AVX-512),
 * through gcc/clang's target attribute, and the best level the CPU supports is chosen once at
 * import (fastloss.show_config() reports it; FASTLOSS_SIMD=baseline|avx2|avx512 lowers it).
 * On other architectures only the baseline variant is built.
 *
 * A table of function pointers, rather than target_clones' ifunc resolver, makes the
 * choice explicit, portable beyond glibc, and switchable, so the tests run every variant.
 */
#include "fl_openmp.h"   /* first: it defines _GNU_SOURCE before any system header */
#include <float.h>
#include <string.h>

#include "fl_kernels.h"
#include "fl_math.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#define FL_HAVE_X86_VARIANTS 1
#else
#define FL_HAVE_X86_VARIANTS 0
#endif

/* FL_VEC_BYTES: the ISA's vector register width, for the code written with vector types
 * (the row spreads of fl_softmax_ce.inc) */
#define FL_ISA baseline
#define FL_TARGET
#define FL_VEC_BYTES 16
#include "fl_isa_variant.inc"
#undef FL_ISA
#undef FL_TARGET
#undef FL_VEC_BYTES

#if FL_HAVE_X86_VARIANTS
#define FL_ISA avx2
#define FL_TARGET __attribute__((target("arch=x86-64-v3")))
#define FL_VEC_BYTES 32
#include "fl_isa_variant.inc"
#undef FL_ISA
#undef FL_TARGET
#undef FL_VEC_BYTES

/* gcc's default tuning keeps AVX-512 code to 256-bit vectors; the kernels are streaming
 * loops that gain from the full width. */
#define FL_ISA avx512
#define FL_TARGET __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#define FL_VEC_BYTES 64
#include "fl_isa_variant.inc"
#undef FL_ISA
#undef FL_TARGET
#undef FL_VEC_BYTES
#endif

static const fl_kernel_table *const fl_tables[FL_ISA_COUNT] = {
    &fl_table_baseline,
#if FL_HAVE_X86_VARIANTS
    &fl_table_avx2,
    &fl_table_avx512,
#else
    NULL,
    NULL,
#endif
};

static const char *const fl_isa_names[FL_ISA_COUNT] = {"baseline", "avx2", "avx512"};

static const fl_kernel_table *fl_active_table = &fl_table_baseline;
static int fl_active_level = FL_ISA_BASELINE;

int fl_isa_compiled(int level)
{
    return level >= 0 && level < FL_ISA_COUNT && fl_tables[level] != NULL;
}

int fl_isa_cpu_supports(int level)
{
    if (level == FL_ISA_BASELINE)
        return 1;
#if FL_HAVE_X86_VARIANTS
    __builtin_cpu_init();
    /* x86-64-v3 and v4 as gcc's -march defines them (the features the compiler may use) */
    const int v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                   __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
                   __builtin_cpu_supports("avx") && __builtin_cpu_supports("popcnt");
    if (level == FL_ISA_AVX2)
        return v3;
    if (level == FL_ISA_AVX512)
        return v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vl");
#endif
    return 0;
}

const char *fl_isa_name(int level)
{
    return (level >= 0 && level < FL_ISA_COUNT) ? fl_isa_names[level] : "unknown";
}

int fl_isa_best(void)
{
    int best = FL_ISA_BASELINE;
    for (int level = 0; level < FL_ISA_COUNT; ++level)
        if (fl_isa_compiled(level) && fl_isa_cpu_supports(level))
            best = level;
    return best;
}

int fl_isa_select(int level)
{
    if (!fl_isa_compiled(level) || !fl_isa_cpu_supports(level))
        return -1;
    fl_active_table = fl_tables[level];
    fl_active_level = level;
    return 0;
}

int fl_isa_active(void) { return fl_active_level; }

const fl_kernel_table *fl_kernels(void) { return fl_active_table; }
