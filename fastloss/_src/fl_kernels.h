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
        int64_t n_rows;            /* N, the call's rows (its layout depends on N C) */ \
    } fl_softmax_ce_args_##SFX;

FL_DECLARE_SOFTMAX_CE_ARGS(float, f32)
FL_DECLARE_SOFTMAX_CE_ARGS(double, f64)

/* The plain call's chunk layout past 100 classes takes logits of at most this many bytes
 * (fl_softmax_ce.inc, softmax_plain_by_chunk); _kernels.SOFTMAX_PLAIN_WIDE_BYTES in Python. */
#ifndef FL_SOFTMAX_PLAIN_WIDE_BYTES
#define FL_SOFTMAX_PLAIN_WIDE_BYTES ((int64_t)8 << 20)
#endif

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

/* Every element-wise loss of the loss table (fastloss/_table.py) has one block worker with
 * this argument struct; fl_elementwise_list.h (generated from the table) lists them.
 * Element i's weight is weight[i % weight_period] (NULL: all 1) and its per-element
 * parameter param[i % param_period] (NULL: scalar[0] for every element), both periodic
 * buffers as above. grad may be NULL (no gradient) or the input (in place); hess NULL (no
 * second derivative), or the input when grad is not. Both are multiplied by grad_scale. */
#include "fl_elementwise_list.h"

#define FL_DECLARE_ELEMENTWISE_ARGS(T, SFX)                                           \
    typedef struct {                                                                \
        const T *input;            /* (n,) */                                       \
        const T *target;           /* (n,) */                                       \
        const T *weight;           /* periodic weight, or NULL */                   \
        const T *param;            /* periodic per-element parameter, or NULL */    \
        T *grad;                   /* (n,), NULL, or input (in place) */            \
        T *hess;                   /* (n,) or NULL */                               \
        T *loss_out;               /* (n,) per-element losses, or NULL */           \
        int64_t weight_period;                                                      \
        int64_t param_period;                                                       \
        double scalar[FL_ELEMENTWISE_SCALARS];  /* the kernel's scalar parameters */ \
        double grad_scale;                                                          \
    } fl_elementwise_args_##SFX;

/* l1_penalty / l2_penalty: sum of |w| (or w^2) in double; the gradient strength sign(w)
 * (or 2 strength w) written into grad, or added to it (accumulate). */
#define FL_DECLARE_PENALTY_ARGS(T, SFX)                                               \
    typedef struct {                                                                \
        const T *params;                                                            \
        T *grad;                   /* may be params itself */                       \
        double strength;                                                            \
        int squared;               /* 0: l1, 1: l2 */                               \
        int accumulate;            /* add into grad instead of overwriting it */    \
    } fl_penalty_args_##SFX;

/* gaussian_kl over rows of (N, D) means and log-variances: per row
 * sum_d (mean^2 + exp(log_var) - 1 - log_var) / 2. */
#define FL_DECLARE_GAUSSIAN_KL_ARGS(T, SFX)                                           \
    typedef struct {                                                                \
        const T *mean;                                                              \
        const T *log_var;                                                           \
        T *grad_mean;              /* or NULL */                                    \
        T *grad_log_var;           /* or NULL */                                    \
        T *hess_mean;              /* or NULL */                                    \
        T *hess_log_var;           /* or NULL */                                    \
        T *loss_out;               /* (N,) or NULL */                               \
        int64_t n_cols;                                                             \
        double grad_scale;                                                          \
    } fl_gaussian_kl_args_##SFX;

/* How many elements lie outside [low, high] (nan counts): the input-domain check of
 * binary_cross_entropy, before its kernel runs. */
#define FL_DECLARE_RANGE_ARGS(T, SFX)                                                 \
    typedef struct {                                                                \
        const T *values;                                                            \
        double low, high;                                                           \
    } fl_range_args_##SFX;

FL_DECLARE_ELEMENTWISE_ARGS(float, f32)
FL_DECLARE_ELEMENTWISE_ARGS(double, f64)
FL_DECLARE_PENALTY_ARGS(float, f32)
FL_DECLARE_PENALTY_ARGS(double, f64)
FL_DECLARE_GAUSSIAN_KL_ARGS(float, f32)
FL_DECLARE_GAUSSIAN_KL_ARGS(double, f64)
FL_DECLARE_RANGE_ARGS(float, f32)
FL_DECLARE_RANGE_ARGS(double, f64)

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

FL_DECLARE_SOFTMAX_FOCAL_ARGS(float, f32)
FL_DECLARE_SOFTMAX_FOCAL_ARGS(double, f64)

/* ---- sets and pairs (issue 14): overlap losses (fl_overlap.inc), pair losses (fl_pairs.inc) */
/* The largest sample (C S entries, bytes) of the softmax overlap layout whose p is stashed
 * outside the gradient, which is then streamed (fl_overlap.inc, "Streamed softmax
 * gradients"); _kernels.OVERLAP_STASH_BYTES in Python. */
#ifndef FL_OVERLAP_STASH_BYTES
#define FL_OVERLAP_STASH_BYTES ((int64_t)4 << 20)
#endif
/* ... and the fewest classes for which it does so (fewer: fewer strided streams, and the
 * measured gain was gone); _kernels.OVERLAP_STREAM_MIN_CLASSES in Python */
#ifndef FL_OVERLAP_STREAM_MIN_CLASSES
#define FL_OVERLAP_STREAM_MIN_CLASSES 20
#endif
enum { FL_ACT_NONE = 0, FL_ACT_SIGMOID = 1, FL_ACT_SOFTMAX = 2 };
enum { FL_OVERLAP_DICE = 0, FL_OVERLAP_JACCARD = 1, FL_OVERLAP_TVERSKY = 2 };
/* what one call of the overlap worker does (fl_overlap.inc, "Passes") */
enum { FL_OVERLAP_FUSED = 0, FL_OVERLAP_SUMS = 1, FL_OVERLAP_FINISH = 2, FL_OVERLAP_GRAD = 3 };
/* entries of the softmax layout's per-chunk scratch (all C classes of a pixel chunk; 32 KB
 * float32, 64 KB float64, on the worker's stack) */
#define FL_OVERLAP_SCRATCH 8192

/* Dice / Jaccard / Tversky over (N, C, S). Items: (sample, class) slices for sigmoid and none,
 * samples for softmax, classes for FL_OVERLAP_FINISH. sums: (N, C, 3) doubles (I, P, T) per
 * slice, or (C, 3) per class for FINISH; coef: (N, C, 2) per slice (FUSED) or (C, 2) per
 * class (FINISH, GRAD); loss_items: the weighted loss of each slice (N, C) or class (C). */
#define FL_DECLARE_OVERLAP_ARGS(T, SFX)                                              \
    typedef struct {                                                                \
        const T *input;              /* (N, C, S) */                                \
        const T *target;             /* (N, C, S) one-hot or soft, or NULL */       \
        const int64_t *target_index; /* (N, S) class indices, or NULL */            \
        T *grad;                     /* (N, C, S), NULL, or input (in place) */     \
        const double *weight;        /* (C,) loss factor of each class */           \
        double *sums;                                                               \
        double *coef;                                                               \
        double *loss_items;                                                         \
        int64_t n_classes;                                                          \
        int64_t spatial;             /* S */                                        \
        int64_t first_class;         /* 0, or 1 without the background */           \
        int activation;              /* FL_ACT_* */                                 \
        int kind;                    /* FL_OVERLAP_DICE, _JACCARD, _TVERSKY */      \
        int squared;                 /* q = 2: sums of p^2 and t^2 */               \
        int mode;                    /* FL_OVERLAP_FUSED, _SUMS, _FINISH, _GRAD */  \
        double smooth, alpha, beta;                                                 \
        double grad_scale;                                                          \
        T *stash;                    /* softmax: stash_slots slots of p, or NULL */ \
        int64_t stash_stride;        /* entries per slot (>= C S) */                \
        int64_t stash_slots;         /* one per thread number */                    \
    } fl_overlap_args_##SFX;

enum { FL_PAIR_TRIPLET = 0, FL_PAIR_CONTRASTIVE = 1, FL_PAIR_COSINE = 2, FL_PAIR_RANKING = 3 };
enum { FL_NORM_2 = 0, FL_NORM_1 = 1, FL_NORM_INF = 2, FL_NORM_GENERAL = 3 };

/* Pair and triplet losses: rows of (N, D) inputs (elements for margin ranking). */
#define FL_DECLARE_PAIRS_ARGS(T, SFX)                                                \
    typedef struct {                                                                \
        const T *x1, *x2, *x3;       /* anchor, positive, negative / input1, input2 */ \
        const T *target;             /* (N,) (ranking: elements), or NULL */        \
        T *g1, *g2, *g3;             /* gradients (all or none), may be their input */ \
        T *loss_out;                 /* (N,) or NULL */                             \
        int64_t dim;                 /* D */                                        \
        int kind;                    /* FL_PAIR_* */                                \
        int norm;                    /* FL_NORM_* (triplet) */                      \
        int swap;                                                                   \
        double p, eps, margin;                                                      \
        double grad_scale;                                                          \
        int stream;                  /* non-temporal gradient stores (fl_pairs.inc) */ \
    } fl_pairs_args_##SFX;

FL_DECLARE_OVERLAP_ARGS(float, f32)
FL_DECLARE_OVERLAP_ARGS(double, f64)
FL_DECLARE_PAIRS_ARGS(float, f32)
FL_DECLARE_PAIRS_ARGS(double, f64)
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
        T *hess;                   /* (N, C) or NULL (issue 15: p = 2, with grad) */ \
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
        T *hess;                   /* (N, C) or NULL (issue 15: with grad) */       \
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

/* ---- second derivatives of softmax cross-entropy and softmax focal (issue 15): the
 * class-axis arguments and the (N, C, P) buffer that receives the Hessian's diagonal (times
 * grad_scale and the sample weights), written in the same pass as the gradient (given). */
#define FL_DECLARE_CLASS_HESS_ARGS(T, SFX)                                           \
    typedef struct {                                                                \
        fl_class_axis_args_##SFX base;                                              \
        T *hess;                   /* (N, C, P), or the logits (in place) */        \
    } fl_class_hess_args_##SFX;

FL_DECLARE_CLASS_HESS_ARGS(float, f32)
FL_DECLARE_CLASS_HESS_ARGS(double, f64)

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
    FL_MATH_EXPM1_NEG,
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
    /* the element-wise losses (the loss table), the penalties, gaussian_kl */
    fl_block_fn elementwise_f32[FL_ELEMENTWISE_COUNT];
    fl_block_fn elementwise_f64[FL_ELEMENTWISE_COUNT];
    fl_block_fn penalty_f32, penalty_f64;
    fl_block_fn gaussian_kl_f32, gaussian_kl_f64;
    fl_block_fn count_outside_f32, count_outside_f64;
    fl_block_fn softmax_focal_f32, softmax_focal_f64;
    fl_check_targets_fn check_targets;
    /* sets and pairs (issue 14) */
    fl_block_fn overlap_f32, overlap_f64;
    fl_block_fn pairs_f32, pairs_f64;
    /* class-axis losses (issue 13) */
    fl_block_fn class_ce_f32, class_ce_f64;
    fl_block_fn class_focal_f32, class_focal_f64;
    fl_block_fn multi_margin_f32, multi_margin_f64;
    fl_block_fn distill_kl_f32, distill_kl_f64;
    /* second derivatives of the softmax class-axis losses (issue 15) */
    fl_block_fn class_ce_hess_f32, class_ce_hess_f64;
    fl_block_fn class_focal_hess_f32, class_focal_hess_f64;
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
