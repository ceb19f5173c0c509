/*
 * ab_softmax_plain.c -- one-thread A/B of the plain softmax cross-entropy kernel (issue 16),
 * without Python: the block worker over the blocks the driver cuts (_kernels.pyx: an even
 * number of blocks of about 16384 elements), timed in thread CPU time.
 *
 * Build one binary per source tree (scripts/ab_softmax_plain.sh does both and alternates):
 *   gcc -O3 -fno-trapping-math -fno-math-errno -Wno-unused-function -fopenmp \
 *       -I TREE/fastloss/_src scripts/ab_softmax_plain.c TREE/fastloss/_src/fl_kernels.c -o BIN -lm
 *   BIN time N C reps [isa [f64]] -> min and median thread-CPU us per call (isa 0 baseline,
 *                               1 AVX2, 2 AVX-512 (default); float32 unless f64)
 *   BIN hash                  -> one hash line per case (loss, per-row losses, gradient bytes)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fl_kernels.h"

#ifdef AB_MINI
/* -DAB_MINI: only fl_softmax_ce.inc, per ISA and precision (a 1-2 minute build instead of the
 * whole fl_kernels.c), with a table of its own */
#include "fl_math.h"
#define FL_CAT_(a, b, c, d) a##b##_##c##_##d
#define FL_CAT(a, b, c, d) FL_CAT_(a, b, c, d)
#define FL_NAME(base) FL_CAT(fl_, base, FL_SFX, FL_ISA)
#define FL_M_(fn, sfx) fl_##fn##_##sfx
#define FL_M_X(fn, sfx) FL_M_(fn, sfx)
#define FL_M(fn) FL_M_X(fn, FL_SFX)
#define FL_M64(fn) fl_##fn##_f64
#define FL_ARGS_(base, sfx) fl_##base##_args_##sfx
#define FL_ARGS_X(base, sfx) FL_ARGS_(base, sfx)
#define FL_ARGS_SOFTMAX_CE FL_ARGS_X(softmax_ce, FL_SFX)
#define FL_ISA baseline
#define FL_TARGET
#define FL_VEC_BYTES 16
#include "ab_softmax_plain_types.h"
#undef FL_ISA
#undef FL_TARGET
#undef FL_VEC_BYTES
#define FL_ISA avx2
#define FL_TARGET __attribute__((target("arch=x86-64-v3")))
#define FL_VEC_BYTES 32
#include "ab_softmax_plain_types.h"
#undef FL_ISA
#undef FL_TARGET
#undef FL_VEC_BYTES
#define FL_ISA avx512
#define FL_TARGET __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#define FL_VEC_BYTES 64
#include "ab_softmax_plain_types.h"
typedef struct {
    fl_block_fn softmax_ce_f32, softmax_ce_f64;
} ab_table;
static const ab_table ab_tables[3] = {
    {fl_softmax_ce_f32_baseline, fl_softmax_ce_f64_baseline},
    {fl_softmax_ce_f32_avx2, fl_softmax_ce_f64_avx2},
    {fl_softmax_ce_f32_avx512, fl_softmax_ce_f64_avx512},
};
static int ab_level = 2;
static int ab_select(int level)
{
    ab_level = level;
    return 0;
}
#define fl_isa_select ab_select
#define fl_kernels() (&ab_tables[ab_level])
#define fl_kernel_table ab_table
#endif

static double tnow(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

static unsigned lcg = 1;
static double rnd(void)
{
    lcg = lcg * 1103515245u + 12345u;
    return ((lcg >> 8) & 0xffffff) / 16777216.0;
}

static long rows_per_block(long N, long C)
{
    long nb = (N * C + 16383) / 16384;
    if (nb < 1)
        nb = 1;
    if (nb > 1 && nb % 2 == 1)
        nb++;
    long r = (N + nb - 1) / nb;
    return r < 1 ? 1 : r;
}

/* one call over all blocks; dbl selects float64 */
static double run(int dbl, void *args, long N, long C)
{
    const fl_kernel_table *k = fl_kernels();
    const long rpb = rows_per_block(N, C);
    double t = 0;
    for (long r = 0; r < N; r += rpb) {
        const long stop = r + rpb < N ? r + rpb : N;
        t += dbl ? k->softmax_ce_f64(args, r, stop) : k->softmax_ce_f32(args, r, stop);
    }
    return t;
}

static int timing(long N, long C, int reps, int isa, int dbl)
{
    if (fl_isa_select(isa))
        return 1;
    const size_t es = dbl ? 8 : 4;
    void *x = aligned_alloc(64, (N * C * es + 63) / 64 * 64);
    void *g = aligned_alloc(64, (N * C * es + 63) / 64 * 64);
    int64_t *y = malloc((size_t)N * 8);
    for (long i = 0; i < N * C; i++) {
        if (dbl)
            ((double *)x)[i] = rnd() * 10 - 5;
        else
            ((float *)x)[i] = (float)(rnd() * 10 - 5);
    }
    for (long i = 0; i < N; i++)
        y[i] = (long)(rnd() * C) % C;
    memset(g, 0, N * C * es);
    fl_softmax_ce_args_f32 a32 = {x, y, NULL, NULL, g, NULL, C, -100, 0.0, (double)C, 1.0 / N};
    fl_softmax_ce_args_f64 a64 = {x, y, NULL, NULL, g, NULL, C, -100, 0.0, (double)C, 1.0 / N};
    void *a = dbl ? (void *)&a64 : (void *)&a32;
    double *ts = malloc(sizeof(double) * reps);
    volatile double sink = 0;
    for (int i = 0; i < 3; i++)
        sink += run(dbl, a, N, C);
    for (int i = 0; i < reps; i++) {
        double t = tnow();
        sink += run(dbl, a, N, C);
        ts[i] = tnow() - t;
    }
    qsort(ts, reps, sizeof(double), cmp);
    printf("%ldx%ld min %.1f med %.1f us\n", N, C, ts[0] * 1e6, ts[reps / 2] * 1e6);
    return 0;
}

static int hashes(void)
{
    static const long Ns[] = {1, 7, 163, 300, 1000};
    static const long Cs[] = {1, 2, 5, 10, 15, 16, 17, 31, 32, 33, 40, 47, 48, 50, 63, 64, 65,
                              77, 80, 96, 99, 100, 101, 128, 200};
    for (int isa = 0; isa <= 2; isa++) {
        if (fl_isa_select(isa))
            continue;
        for (int dbl = 0; dbl <= 1; dbl++)
            for (size_t ci = 0; ci < sizeof Cs / sizeof *Cs; ci++)
                for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++)
                    for (int variant = 0; variant < 4; variant++) {
                        /* variant: bit 0 ignore_index rows and weights; bit 1 wide range
                         * (and inf/-inf entries), no loss_out */
                        const long N = Ns[ni], C = Cs[ci];
                        const size_t es = dbl ? 8 : 4;
                        lcg = (unsigned)(N * 1000 + C * 10 + variant);
                        void *x = calloc((size_t)(N * C), es), *g = calloc((size_t)(N * C), es);
                        void *lo = calloc((size_t)N, es), *w = calloc((size_t)C, es);
                        int64_t *y = malloc((size_t)N * 8);
                        const double span = (variant & 2) ? 200 : 12;
                        for (long i = 0; i < N * C; i++) {
                            double v = rnd() * span - span / 2;
                            if ((variant & 2) && rnd() < 0.01)
                                v = rnd() < 0.5 ? -1.0 / 0.0 : -1e30;
                            if (dbl)
                                ((double *)x)[i] = v;
                            else
                                ((float *)x)[i] = (float)v;
                        }
                        for (long c = 0; c < C; c++) {
                            if (dbl)
                                ((double *)w)[c] = 0.5 + rnd();
                            else
                                ((float *)w)[c] = (float)(0.5 + rnd());
                        }
                        for (long i = 0; i < N; i++) {
                            y[i] = (long)(rnd() * C) % C;
                            if ((variant & 1) && rnd() < 0.2)
                                y[i] = -100;
                        }
                        const int wt = variant & 1;
                        double tot;
                        if (dbl) {
                            fl_softmax_ce_args_f64 a = {x, y, NULL, wt ? w : NULL, g,
                                                        (variant & 2) ? NULL : lo, C, -100, 0.0,
                                                        (double)C, 1.0 / N};
                            tot = run(1, &a, N, C);
                        } else {
                            fl_softmax_ce_args_f32 a = {x, y, NULL, wt ? w : NULL, g,
                                                        (variant & 2) ? NULL : lo, C, -100, 0.0,
                                                        (double)C, 1.0 / N};
                            tot = run(0, &a, N, C);
                        }
                        uint64_t h = fnv(1469598103934665603ull, &tot, 8);
                        h = fnv(h, lo, (size_t)N * es);
                        h = fnv(h, g, (size_t)(N * C) * es);
                        printf("isa %d f%d N %ld C %ld v %d %016llx\n", isa, dbl ? 64 : 32, N,
                               C, variant, (unsigned long long)h);
                        free(x);
                        free(g);
                        free(lo);
                        free(w);
                        free(y);
                    }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "hash") == 0)
        return hashes();
    if (argc > 4 && strcmp(argv[1], "time") == 0)
        return timing(atol(argv[2]), atol(argv[3]), atoi(argv[4]), argc > 5 ? atoi(argv[5]) : 2,
                      argc > 6 && strcmp(argv[6], "f64") == 0);
    fprintf(stderr, "usage: %s time N C reps [isa] | hash\n", argv[0]);
    return 2;
}
