/*
 * profile_softmax.c -- the softmax kernels without Python, for perf (issue 18, part 2).
 *
 * Build (the extension's flags, plus -g for perf's source lines) and run from the repo root:
 *   gcc -O3 -g -fno-trapping-math -fno-math-errno -Wno-unused-function -fopenmp \
 *       -Ifastloss/_src scripts/profile_softmax.c fastloss/_src/fl_kernels.c -o /tmp/profile_softmax -lm
 *   /tmp/profile_softmax ce 4096 100 3          # softmax CE, N x C, seconds; prints ns/element
 *   /tmp/profile_softmax focal 65536 10 3 1     # softmax focal (gamma 2) on AVX2 (0 baseline, 2 AVX-512)
 *   /tmp/profile_softmax parts                  # the building blocks alone, in L1
 *   perf record -e cpu-clock -F 20000 /tmp/profile_softmax ce 4096 100 4
 *   perf report --no-children --sort srcline
 * One thread: the block worker over blocks of 16384 elements, as run_blocks cuts them. The
 * time reported is the minimum over calls (on a shared machine the mean mostly measures the
 * other processes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fl_kernels.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define PARTS_N 2048
#define FL_V4 __attribute__((target("arch=x86-64-v4"), noinline))
FL_V4 static float part_max(const float *x, int n)
{
    float m = x[0];
#pragma omp simd reduction(max : m)
    for (int i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}
FL_V4 static void part_scale(const float *e, float f, float *g, int n)
{
#pragma omp simd
    for (int i = 0; i < n; i++)
        g[i] = f * e[i];
}
FL_V4 static void part_shift(const float *x, float m, float *g, int n)
{
#pragma omp simd
    for (int i = 0; i < n; i++)
        g[i] = x[i] - m;
}
FL_V4 static float part_sum(const float *x, int n)
{
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++)
        s += x[i];
    return s;
}

static int parts(void)
{
    static float x[PARTS_N] __attribute__((aligned(64))), e[PARTS_N] __attribute__((aligned(64))),
        g[PARTS_N] __attribute__((aligned(64)));
    if (fl_isa_select(2))
        return 1;
    const fl_kernel_table *k = fl_kernels();
    for (int i = 0; i < PARTS_N; i++)
        x[i] = -(float)((i * 37) % 1000) / 100.f;
    const char *names[] = {"exp_nonpos (load, exp, store)", "max reduction (load)",
                           "scale g = f e (load, mul, store)", "shift e = x - m (load, sub, store)",
                           "float sum (load, add)", "log (vector, float32)", "exp (vector, any x)"};
    for (int t = 0; t < 7; t++) {
        double best = 1e9;
        volatile float sink = 0;
        for (int rep = 0; rep < 20000; rep++) {
            double s = now();
            for (int q = 0; q < 8; q++) {
                switch (t) {
                case 0: k->math_f32[FL_MATH_EXP_NONPOS](x, e, PARTS_N); break;
                case 1: sink += part_max(x, PARTS_N); break;
                case 2: part_scale(e, 0.5f, g, PARTS_N); break;
                case 3: part_shift(x, 0.5f, g, PARTS_N); break;
                case 4: sink += part_sum(x, PARTS_N); break;
                case 5: k->math_f32[FL_MATH_LOG](e, g, PARTS_N); break;
                default: k->math_f32[FL_MATH_EXP](x, g, PARTS_N); break;
                }
                __asm__ volatile("" ::: "memory");
            }
            s = (now() - s) / 8;
            if (s < best)
                best = s;
        }
        printf("%-36s %.4f ns/element\n", names[t], best * 1e9 / PARTS_N);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "parts") == 0)
        return parts();
    if (argc < 5) {
        fprintf(stderr, "usage: %s ce|focal N C seconds [isa 0|1|2] | parts\n", argv[0]);
        return 2;
    }
    const int focal = strcmp(argv[1], "focal") == 0;
    const long N = atol(argv[2]), C = atol(argv[3]);
    const double seconds = atof(argv[4]);
    const int isa = argc > 5 ? atoi(argv[5]) : 2;
    if (fl_isa_select(isa)) {
        fprintf(stderr, "SIMD level %d is not available\n", isa);
        return 1;
    }
    float *x = aligned_alloc(64, (size_t)(N * C * 4 + 63) / 64 * 64);
    float *g = aligned_alloc(64, (size_t)(N * C * 4 + 63) / 64 * 64);
    int64_t *y = malloc((size_t)N * 8);
    unsigned s = 1;
    for (long i = 0; i < N * C; i++) {
        s = s * 1103515245u + 12345u;
        x[i] = ((s >> 8) & 0xffff) / 6553.6f - 5.f;
    }
    for (long i = 0; i < N; i++) {
        s = s * 1103515245u + 12345u;
        y[i] = (s >> 8) % C;
    }
    memset(g, 0, (size_t)(N * C * 4));
    fl_softmax_ce_args_f32 ce = {x, y, NULL, NULL, g, NULL, C, -100, 0.0, (double)C, 1.0 / N};
    fl_softmax_focal_args_f32 fo = {x, y, NULL, g, NULL, C, -100, 1.0, 2.0, 1.0 / N};
    const fl_kernel_table *k = fl_kernels();
    const long rows_per_block = 16384 / C > 0 ? 16384 / C : 1;
    double best = 1e9, total = 0;
    long calls = 0;
    volatile double sink = 0;
    const double end = now() + seconds;
    while (now() < end) {
        double t = now();
        for (long r = 0; r < N; r += rows_per_block) {
            const long stop = r + rows_per_block < N ? r + rows_per_block : N;
            sink += focal ? k->softmax_focal_f32(&fo, r, stop) : k->softmax_ce_f32(&ce, r, stop);
        }
        t = now() - t;
        best = t < best ? t : best;
        total += t;
        calls++;
    }
    printf("%s %ldx%ld, SIMD level %d: min %.1f us, mean %.1f us, %.3f ns/element (min), %ld calls\n",
           focal ? "softmax focal" : "softmax CE", N, C, isa, best * 1e6, total / calls * 1e6,
           best * 1e9 / (double)(N * C), calls);
    free(x);
    free(g);
    free(y);
    return 0;
}
