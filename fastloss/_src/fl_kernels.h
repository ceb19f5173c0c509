/*
 * fl_kernels.h -- the C interface between the Cython driver (fastloss/_kernels.pyx) and the
 * per-ISA block workers (fl_kernels.c).
 *
 * A block worker computes one loss over the items [begin, end) of its arguments (rows for
 * the class losses, elements for the element-wise ones), writes their gradient and per-item
 * losses where asked, and returns the sum of their losses in double, added in item order.
 * The driver cuts the work into fixed-size blocks that do not depend on the thread count and
 * adds the block sums in block order, so the total is bitwise the same for any n_threads.
 */
#ifndef FASTLOSS_FL_KERNELS_H
#define FASTLOSS_FL_KERNELS_H

#include <stdint.h>

typedef double (*fl_block_fn)(const void *args, int64_t begin, int64_t end);

/* Softmax cross-entropy over rows of an (N, C) C-contiguous array. Exactly one of target /
 * target_prob is set. The driver has checked every class index: 0 <= target[i] < C or
 * target[i] == ignore_index. grad may be NULL (no gradient) or equal logits (in place). */
#define FL_DECLARE_SOFTMAX_CE_ARGS(T, SFX)                                           \
    typedef struct {                                                                \
        const T *logits;           /* (N, C) */                                     \
        const int64_t *target;     /* (N,) class indices, or NULL */                \
        const T *target_prob;      /* (N, C) class probabilities, or NULL */        \
        const T *weight;           /* (C,) class weights, or NULL for all ones */   \
        T *grad;                   /* (N, C), or NULL */                            \
        T *loss_out;               /* (N,) per-row losses, or NULL */               \
        int64_t n_classes;                                                          \
        int64_t ignore_index;                                                       \
        double label_smoothing;    /* eps in [0, 1] */                              \
        double weight_sum;         /* sum of weight over all C classes (C if NULL) */ \
        double grad_scale;         /* the gradient is multiplied by this */         \
    } fl_softmax_ce_args_##SFX;

FL_DECLARE_SOFTMAX_CE_ARGS(float, f32)
FL_DECLARE_SOFTMAX_CE_ARGS(double, f64)

/* Element-wise math over an array, for the tests of the math layer. */
typedef enum {
    FL_MATH_EXP = 0,
    FL_MATH_EXP_NONPOS,
    FL_MATH_LOG,
    FL_MATH_LOG1P,
    FL_MATH_SOFTPLUS,
    FL_MATH_LOG_SIGMOID,
    FL_MATH_SIGMOID,
    FL_MATH_COUNT
} fl_math_fn;

typedef void (*fl_math_f32_fn)(const float *x, float *y, int64_t n);
typedef void (*fl_math_f64_fn)(const double *x, double *y, int64_t n);

/* One table per compiled instruction set. */
typedef struct {
    const char *isa;
    fl_block_fn softmax_ce_f32;
    fl_block_fn softmax_ce_f64;
    fl_math_f32_fn math_f32[FL_MATH_COUNT];
    fl_math_f64_fn math_f64[FL_MATH_COUNT];
} fl_kernel_table;

/* Instruction-set levels, lowest first. On non-x86 builds only FL_ISA_BASELINE exists. */
enum { FL_ISA_BASELINE = 0, FL_ISA_AVX2 = 1, FL_ISA_AVX512 = 2, FL_ISA_COUNT = 3 };

int fl_isa_compiled(int level);      /* 1 if this build has kernels for the level */
int fl_isa_cpu_supports(int level);  /* 1 if this CPU (and OS) can run them */
const char *fl_isa_name(int level);
int fl_isa_best(void);               /* the highest level that is compiled and supported */
int fl_isa_select(int level);        /* make `level` active; -1 if it cannot run here */
int fl_isa_active(void);
const fl_kernel_table *fl_kernels(void);  /* the active table */

#endif /* FASTLOSS_FL_KERNELS_H */
