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

/* ---- element-wise losses (fl_elementwise.inc) and softmax focal (fl_softmax_focal.inc) ----
 * The element-wise workers walk their block in chunks of FL_ELEMENTWISE_CHUNK elements (a
 * chunk's scratch stays in L1; see PERFORMANCE.md item 7, loop fission).
 *
 * Periodic weights: element i's weight is weight[i % weight_period] without a broadcast copy.
 * The worker reads weight[(s % weight_period) + k] for element s + k of a chunk starting at s
 * (k < FL_ELEMENTWISE_CHUNK), so the buffer holds the period repeated up to at least
 * weight_period + FL_ELEMENTWISE_CHUNK - 1 entries (the driver tiles a short period), or it is
 * a full-size weight with weight_period = the number of elements. */
#define FL_ELEMENTWISE_CHUNK 512

/* Binary cross-entropy with logits: loss_i = w_i [(1 - t_i) softplus(x_i) + p_i t_i softplus(-x_i)],
 * w = weight (periodic, or NULL for ones), p = pos_weight (periodic, or NULL for ones). */
#define FL_DECLARE_BCE_ARGS(T, SFX)                                                  \
    typedef struct {                                                                \
        const T *logits;           /* (n,) */                                       \
        const T *target;           /* (n,) */                                       \
        const T *weight;           /* periodic weight, or NULL */                   \
        const T *pos_weight;       /* periodic pos_weight, or NULL */               \
        T *grad;                   /* (n,), NULL, or logits (in place) */           \
        T *loss_out;               /* (n,) per-element losses, or NULL */           \
        int64_t weight_period;                                                      \
        int64_t pos_weight_period;                                                  \
        double grad_scale;         /* the gradient is multiplied by this */         \
    } fl_bce_args_##SFX;

/* Huber loss with threshold delta, times loss_scale (smooth L1 with beta is Huber with
 * delta = beta and loss_scale = 1 / beta). */
#define FL_DECLARE_HUBER_ARGS(T, SFX)                                                \
    typedef struct {                                                                \
        const T *input;            /* (n,) */                                       \
        const T *target;           /* (n,) */                                       \
        T *grad;                   /* (n,), NULL, or input (in place) */            \
        T *loss_out;               /* (n,) or NULL */                               \
        double delta;              /* > 0 */                                        \
        double loss_scale;         /* > 0 */                                        \
        double grad_scale;                                                          \
    } fl_huber_args_##SFX;

/* Sigmoid focal loss (torchvision's): alpha < 0 turns the alpha factor off; gamma >= 0. */
#define FL_DECLARE_SIGMOID_FOCAL_ARGS(T, SFX)                                        \
    typedef struct {                                                                \
        const T *logits;           /* (n,) */                                       \
        const T *target;           /* (n,) */                                       \
        T *grad;                   /* (n,), NULL, or logits (in place) */           \
        T *loss_out;               /* (n,) or NULL */                               \
        double alpha;                                                               \
        double gamma;                                                               \
        double grad_scale;                                                          \
    } fl_sigmoid_focal_args_##SFX;

/* Softmax focal loss over rows of an (N, C) C-contiguous array: per row
 * -alpha_y (1 - p_y)^gamma log p_y. The driver has checked every class index. */
#define FL_DECLARE_SOFTMAX_FOCAL_ARGS(T, SFX)                                        \
    typedef struct {                                                                \
        const T *logits;           /* (N, C) */                                     \
        const int64_t *target;     /* (N,) class indices */                         \
        const T *alpha;            /* (C,) per-class factors, or NULL */            \
        T *grad;                   /* (N, C), NULL, or logits (in place) */         \
        T *loss_out;               /* (N,) or NULL */                               \
        int64_t n_classes;                                                          \
        int64_t ignore_index;                                                       \
        double alpha_scalar;       /* the factor of every class when alpha is NULL */ \
        double gamma;                                                               \
        double grad_scale;                                                          \
    } fl_softmax_focal_args_##SFX;

FL_DECLARE_BCE_ARGS(float, f32)
FL_DECLARE_BCE_ARGS(double, f64)
FL_DECLARE_HUBER_ARGS(float, f32)
FL_DECLARE_HUBER_ARGS(double, f64)
FL_DECLARE_SIGMOID_FOCAL_ARGS(float, f32)
FL_DECLARE_SIGMOID_FOCAL_ARGS(double, f64)
FL_DECLARE_SOFTMAX_FOCAL_ARGS(float, f32)
FL_DECLARE_SOFTMAX_FOCAL_ARGS(double, f64)

/* ---- class-axis losses (issue 13): K-dimensional inputs, sample weights, z-loss, logit
 * soft-capping, log-sum-exp out (fl_class_axis.inc); multi-margin (fl_multi_margin.inc);
 * distillation KL (fl_distill_kl.inc) ----
 * Logits (N, C, P) C-contiguous, P = d1 * ... * dK (1 for (N, C) logits): class c of
 * position p of sample n at logits[(n C + c) P + p]. With P > 1 the work items are tiles of
 * `tile` consecutive positions of one sample (tiles_per_sample = ceil(P / tile)), processed
 * as vector lanes with a loop over the classes; with P == 1 they are rows. */
#define FL_CLASS_TILE_MAX 512
#define FL_DECLARE_CLASS_AXIS_ARGS(T, SFX)                                           \
    typedef struct {                                                                \
        const T *logits;           /* (N, C, P) */                                  \
        const int64_t *target;     /* (N, P) class indices, or NULL */              \
        const T *target_prob;      /* (N, C, P) probabilities, or NULL */           \
        const T *weight;           /* (C,) class weight (CE) or alpha (focal), or NULL */ \
        const T *sample_weight;    /* (N,) or (N, P), or NULL for ones */           \
        T *grad;                   /* (N, C, P), NULL, or logits (in place) */      \
        T *loss_out;               /* (N, P), or NULL */                            \
        T *lse_out;                /* (N, P) log-sum-exp of the (capped) logits, or NULL */ \
        int64_t n_classes;                                                          \
        int64_t inner;             /* P */                                          \
        int64_t tile;              /* positions per tile (P > 1), <= FL_CLASS_TILE_MAX */ \
        int64_t sample_weight_per_position;  /* 1: (N, P); 0: (N,) */               \
        int64_t ignore_index;                                                       \
        double label_smoothing;                                                     \
        double weight_sum;         /* sum of weight over the C classes (C if NULL) */ \
        double grad_scale;                                                          \
        double z_loss;             /* >= 0 (CE) */                                  \
        double softcap;            /* > 0, or 0 for none (CE) */                    \
        double alpha_scalar;       /* focal: the factor of every class when weight is NULL */ \
        double gamma;              /* focal */                                      \
    } fl_class_axis_args_##SFX;

/* multi_margin: per row sum_{j != y} w_y max(0, margin - x_y + x_j)^p / C */
#define FL_DECLARE_MULTI_MARGIN_ARGS(T, SFX)                                         \
    typedef struct {                                                                \
        const T *input;            /* (N, C) */                                     \
        const int64_t *target;     /* (N,) */                                       \
        const T *weight;           /* (C,), or NULL */                              \
        T *grad;                   /* (N, C), NULL, or input (in place) */          \
        T *loss_out;               /* (N,), or NULL */                              \
        int64_t n_classes;                                                          \
        int64_t p;                 /* 1 or 2 */                                     \
        double margin;                                                              \
        double grad_scale;                                                          \
    } fl_multi_margin_args_##SFX;

/* kl_divergence_with_logits: per row T^2 KL(softmax(t / T) || softmax(s / T)) */
#define FL_DECLARE_DISTILL_KL_ARGS(T, SFX)                                           \
    typedef struct {                                                                \
        const T *logits;           /* (N, C) student */                             \
        const T *target_logits;    /* (N, C) teacher */                             \
        T *grad;                   /* (N, C), NULL, or logits (in place) */         \
        T *loss_out;               /* (N,), or NULL */                              \
        int64_t n_classes;                                                          \
        double temperature;                                                         \
        double grad_scale;                                                          \
    } fl_distill_kl_args_##SFX;

FL_DECLARE_CLASS_AXIS_ARGS(float, f32)
FL_DECLARE_CLASS_AXIS_ARGS(double, f64)
FL_DECLARE_MULTI_MARGIN_ARGS(float, f32)
FL_DECLARE_MULTI_MARGIN_ARGS(double, f64)
FL_DECLARE_DISTILL_KL_ARGS(float, f32)
FL_DECLARE_DISTILL_KL_ARGS(double, f64)
/* ---- end of the class-axis losses' declarations (issue 13) ---- */

/* Element-wise math over an array, for the tests of the math layer. */
typedef enum {
    FL_MATH_EXP = 0,
    FL_MATH_EXP_NONPOS,
    FL_MATH_LOG,
    FL_MATH_LOG1P,
    FL_MATH_SOFTPLUS,
    FL_MATH_LOG_SIGMOID,
    FL_MATH_SIGMOID,
    FL_MATH_LOG1P_UNIT,
    FL_MATH_EXP_NEG,
    FL_MATH_TANH,   /* issue 13: logit soft-capping */
    FL_MATH_COUNT
} fl_math_fn;

typedef void (*fl_math_f32_fn)(const float *x, float *y, int64_t n);
typedef void (*fl_math_f64_fn)(const double *x, double *y, int64_t n);

/* The class-index check (fl_class_targets.inc): the first position whose target is neither
 * ignore_index nor in [0, n_classes), or -1; *n_ignored counts the ignored targets before it. */
typedef int64_t (*fl_check_targets_fn)(const int64_t *target, int64_t n, int64_t n_classes,
                                       int64_t ignore_index, int64_t *n_ignored);

/* One table per compiled instruction set. */
typedef struct {
    const char *isa;
    fl_block_fn softmax_ce_f32;
    fl_block_fn softmax_ce_f64;
    fl_math_f32_fn math_f32[FL_MATH_COUNT];
    fl_math_f64_fn math_f64[FL_MATH_COUNT];
    /* the element-wise losses and softmax focal */
    fl_block_fn bce_f32, bce_f64;
    fl_block_fn huber_f32, huber_f64;
    fl_block_fn sigmoid_focal_f32, sigmoid_focal_f64;
    fl_block_fn softmax_focal_f32, softmax_focal_f64;
    fl_check_targets_fn check_targets;
    /* class-axis losses (issue 13) */
    fl_block_fn class_ce_f32, class_ce_f64;
    fl_block_fn class_focal_f32, class_focal_f64;
    fl_block_fn multi_margin_f32, multi_margin_f64;
    fl_block_fn distill_kl_f32, distill_kl_f64;
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
