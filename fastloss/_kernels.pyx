# cython: language_level=3
"""The compiled kernels: the parallel block loop, the class-index check, and ISA dispatch.

Everything here trusts its arguments: fastloss/_api.py has validated them (dtypes, shapes,
C-contiguity, class indices in range) before calling. The per-row and per-element work is C
(fastloss/_src), compiled per instruction set; this module cuts the work into fixed-size
blocks, runs them under ``prange`` with the GIL released, and adds the block sums in block
order so that the total does not depend on the thread count.
"""

import os as _os

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

cnp.import_array()


cdef extern from "fl_openmp.h" nogil:
    int fl_openmp_enabled()
    int fl_openmp_max_threads()


cdef extern from "fl_kernels.h" nogil:
    ctypedef double (*fl_block_fn)(const void *args, int64_t begin, int64_t end) noexcept nogil
    ctypedef void (*fl_math_f32_fn)(const float *x, float *y, int64_t n) noexcept nogil
    ctypedef void (*fl_math_f64_fn)(const double *x, double *y, int64_t n) noexcept nogil

    ctypedef struct fl_softmax_ce_args_f32:
        const float *logits
        const int64_t *target
        const float *target_prob
        const float *weight
        float *grad
        float *loss_out
        int64_t n_classes
        int64_t ignore_index
        double label_smoothing
        double weight_sum
        double grad_scale

    ctypedef struct fl_softmax_ce_args_f64:
        const double *logits
        const int64_t *target
        const double *target_prob
        const double *weight
        double *grad
        double *loss_out
        int64_t n_classes
        int64_t ignore_index
        double label_smoothing
        double weight_sum
        double grad_scale

    int FL_MATH_COUNT
    ctypedef struct fl_kernel_table:
        const char *isa
        fl_block_fn softmax_ce_f32
        fl_block_fn softmax_ce_f64
        fl_math_f32_fn math_f32[7]
        fl_math_f64_fn math_f64[7]

    int FL_ISA_COUNT
    int fl_isa_compiled(int level)
    int fl_isa_cpu_supports(int level)
    const char *fl_isa_name(int level)
    int fl_isa_best()
    int fl_isa_select(int level)
    int fl_isa_active()
    const fl_kernel_table *fl_kernels()


# Work is cut into blocks of about this many elements (whole rows for the class losses): a
# block's rows stay in L2 between a row's passes, and there are enough blocks to balance two
# or more threads. Fixed, so the block sums (and their order) do not depend on n_threads.
cdef enum:
    BLOCK_ELEMENTS = 16384
# Below this many elements a call runs on the calling thread without entering a parallel
# region: waking a second thread costs more than the work (see PERFORMANCE.md, item 9).
cdef enum:
    SERIAL_BELOW_ELEMENTS = 65536

BLOCK_SIZE_ELEMENTS = BLOCK_ELEMENTS
SERIAL_THRESHOLD_ELEMENTS = SERIAL_BELOW_ELEMENTS

# Fork safety. GNU libgomp keeps its thread pool across fork(), but the child has only the
# forking thread, so a child's first parallel region waits forever for pool threads that do
# not exist (https://gcc.gnu.org/bugzilla/show_bug.cgi?id=60035; seen hanging here with gcc
# 12's libgomp; the same hang in OpenBLAS: https://github.com/OpenMathLib/OpenBLAS/issues/294).
# So a forked child runs every kernel serially on the calling thread, never entering a
# parallel region. Its results are identical: block sums are added in block order whatever
# the thread count. It applies to every forked child, not only to children of a process
# where fastloss ran a parallel region: another library may have started the same libgomp
# pool. Children started by spawn or forkserver are fresh processes and keep their threads.
# (tests/test_fork.py)
cdef bint _in_forked_child = False


def _after_fork_in_child():
    global _in_forked_child
    _in_forked_child = True


if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_after_fork_in_child)

MATH_FUNCTIONS = ("exp", "exp_nonpos", "log", "log1p", "softplus", "log_sigmoid", "sigmoid")


cdef double run_blocks(fl_block_fn fn, const void *args, int64_t n_items,
                       int64_t items_per_block, int64_t elements_per_item,
                       int n_threads) except? -1.0:
    """Sum of fn over [0, n_items) in blocks of items_per_block, in block order."""
    cdef int64_t n_blocks = (n_items + items_per_block - 1) // items_per_block
    cdef int64_t b
    cdef double total = 0.0
    cdef double *partial
    if (n_blocks <= 1 or n_threads <= 1 or n_items * elements_per_item < SERIAL_BELOW_ELEMENTS
            or _in_forked_child):
        with nogil:
            for b in range(n_blocks):
                total += fn(args, b * items_per_block,
                            min(n_items, (b + 1) * items_per_block))
        return total
    if n_threads > n_blocks:
        n_threads = <int>n_blocks
    partial = <double *>malloc(n_blocks * sizeof(double))
    if partial == NULL:
        raise MemoryError()
    try:
        with nogil:
            for b in prange(n_blocks, schedule="static", num_threads=n_threads):
                partial[b] = fn(args, b * items_per_block,
                                min(n_items, (b + 1) * items_per_block))
        for b in range(n_blocks):
            total += partial[b]
    finally:
        free(partial)
    return total


cdef inline void *data_or_null(cnp.ndarray array):
    return NULL if array is None else cnp.PyArray_DATA(array)


def softmax_cross_entropy(cnp.ndarray logits, cnp.ndarray target, cnp.ndarray target_prob,
                          cnp.ndarray weight, int64_t ignore_index, double label_smoothing,
                          double weight_sum, double grad_scale, cnp.ndarray grad,
                          cnp.ndarray loss_out, int n_threads):
    """Sum over rows of the (unscaled) row losses; writes grad * grad_scale and loss_out.

    logits (N, C) float32/float64 C-contiguous; target (N,) int64 or None; target_prob
    (N, C) of logits' dtype or None; weight (C,) of logits' dtype or None; grad and loss_out
    of logits' dtype or None. All validated by the caller.
    """
    cdef fl_softmax_ce_args_f32 args32
    cdef fl_softmax_ce_args_f64 args64
    cdef const void *args
    cdef fl_block_fn fn
    cdef int64_t n_rows = cnp.PyArray_DIM(logits, 0)
    cdef int64_t n_classes = cnp.PyArray_DIM(logits, 1)
    cdef int64_t rows_per_block = max(1, BLOCK_ELEMENTS // max(n_classes, 1))
    if cnp.PyArray_TYPE(logits) == cnp.NPY_FLOAT:
        args32.logits = <const float *>cnp.PyArray_DATA(logits)
        args32.target = <const int64_t *>data_or_null(target)
        args32.target_prob = <const float *>data_or_null(target_prob)
        args32.weight = <const float *>data_or_null(weight)
        args32.grad = <float *>data_or_null(grad)
        args32.loss_out = <float *>data_or_null(loss_out)
        args32.n_classes = n_classes
        args32.ignore_index = ignore_index
        args32.label_smoothing = label_smoothing
        args32.weight_sum = weight_sum
        args32.grad_scale = grad_scale
        args = &args32
        fn = fl_kernels().softmax_ce_f32
    else:
        args64.logits = <const double *>cnp.PyArray_DATA(logits)
        args64.target = <const int64_t *>data_or_null(target)
        args64.target_prob = <const double *>data_or_null(target_prob)
        args64.weight = <const double *>data_or_null(weight)
        args64.grad = <double *>data_or_null(grad)
        args64.loss_out = <double *>data_or_null(loss_out)
        args64.n_classes = n_classes
        args64.ignore_index = ignore_index
        args64.label_smoothing = label_smoothing
        args64.weight_sum = weight_sum
        args64.grad_scale = grad_scale
        args = &args64
        fn = fl_kernels().softmax_ce_f64
    return run_blocks(fn, args, n_rows, rows_per_block, n_classes, n_threads)


def check_class_indices(cnp.ndarray target, int64_t n_classes, int64_t ignore_index,
                        cnp.ndarray weight):
    """Check int64 class indices; return (first bad position or -1, mean denominator).

    The denominator is the number of targets not ignored, or, with weight (a float32/float64
    (C,) array), the sum of their class weights, added in double in index order.
    """
    cdef const int64_t *t = <const int64_t *>cnp.PyArray_DATA(target)
    cdef int64_t n = cnp.PyArray_DIM(target, 0)
    cdef int64_t i, y
    cdef int64_t bad = -1
    cdef double denominator = 0.0
    cdef const float *w32 = NULL
    cdef const double *w64 = NULL
    if weight is not None:
        if cnp.PyArray_TYPE(weight) == cnp.NPY_FLOAT:
            w32 = <const float *>cnp.PyArray_DATA(weight)
        else:
            w64 = <const double *>cnp.PyArray_DATA(weight)
    with nogil:
        for i in range(n):
            y = t[i]
            if y == ignore_index:
                continue
            if y < 0 or y >= n_classes:
                bad = i
                break
            if w32 != NULL:
                denominator += w32[y]
            elif w64 != NULL:
                denominator += w64[y]
            else:
                denominator += 1.0
    return bad, denominator


def math_apply(str name, cnp.ndarray x, cnp.ndarray out):
    """out = fn(x) elementwise with the active ISA's math layer (for the tests)."""
    cdef int index = MATH_FUNCTIONS.index(name)
    cdef int64_t n = cnp.PyArray_SIZE(x)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT:
        with nogil:
            fl_kernels().math_f32[index](<const float *>cnp.PyArray_DATA(x),
                                         <float *>cnp.PyArray_DATA(out), n)
    else:
        with nogil:
            fl_kernels().math_f64[index](<const double *>cnp.PyArray_DATA(x),
                                         <double *>cnp.PyArray_DATA(out), n)


# ------------------------------------------------------------------ configuration

def openmp_enabled():
    """True when the kernels were compiled with OpenMP (they can run on several threads)."""
    return bool(fl_openmp_enabled())


def default_n_threads():
    """What n_threads=None means now: OpenMP's max threads for the calling thread."""
    return fl_openmp_max_threads()


def isa_levels():
    """Names of the instruction-set variants, lowest first, with (compiled, supported)."""
    return [(fl_isa_name(level).decode(), bool(fl_isa_compiled(level)),
             bool(fl_isa_cpu_supports(level))) for level in range(FL_ISA_COUNT)]


def best_isa():
    return fl_isa_name(fl_isa_best()).decode()


def active_isa():
    return fl_isa_name(fl_isa_active()).decode()


def set_isa(str name):
    """Make the named variant active; ValueError if it is not compiled or cannot run here."""
    for level in range(FL_ISA_COUNT):
        if fl_isa_name(level).decode() == name:
            if fl_isa_select(level) != 0:
                raise ValueError(f"SIMD level {name!r} cannot run on this CPU or was not built")
            return
    raise ValueError(f"unknown SIMD level {name!r}")
