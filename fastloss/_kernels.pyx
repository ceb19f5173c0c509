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
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.long cimport PyLong_CheckExact
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc

cnp.import_array()


cdef extern from "fl_build.h":
    const char *fl_build_flags
    const char *fl_build_link_flags
    const char *fl_build_compiler
    const int fl_build_debug


cdef extern from "fl_openmp.h" nogil:
    int fl_openmp_enabled()
    int fl_openmp_max_threads()
    int fl_affinity_cpus()


def _cgroup_cpu_quota():
    """The container's CPU quota, rounded up to whole CPUs, or 0 when there is none
    (cgroup v2 cpu.max, or v1 cfs_quota_us / cfs_period_us)."""
    import math
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return 0
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as fh:
            quota = int(fh.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as fh:
            period = int(fh.read())
        return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else 0
    except (OSError, ValueError):
        return 0


# read once: a container's quota does not change under a running process
cdef int CPU_QUOTA = _cgroup_cpu_quota()


cdef int resolve_default_threads() noexcept nogil:
    """What n_threads=None means: OpenMP's max threads for this thread (OMP_NUM_THREADS,
    omp_set_num_threads and so threadpoolctl), never more than the CPUs the process may use
    (its affinity mask now, and the container's CPU quota)."""
    cdef int n = fl_openmp_max_threads()
    cdef int cpus = fl_affinity_cpus()
    if cpus < n:
        n = cpus
    if CPU_QUOTA > 0 and CPU_QUOTA < n:
        n = CPU_QUOTA
    return n if n > 0 else 1


cdef extern from "fl_kernels.h" nogil:
    ctypedef double (*fl_block_fn)(const void *args, int64_t begin, int64_t end) noexcept nogil
    ctypedef void (*fl_math_f32_fn)(const float *x, float *y, int64_t n) noexcept nogil
    ctypedef void (*fl_math_f64_fn)(const double *x, double *y, int64_t n) noexcept nogil
    ctypedef int64_t (*fl_check_targets_fn)(const int64_t *target, int64_t n, int64_t n_classes,
                                            int64_t ignore_index,
                                            int64_t *n_ignored) noexcept nogil

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
        int64_t n_rows

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
        int64_t n_rows

    int64_t FL_SOFTMAX_PLAIN_WIDE_BYTES
    int64_t FL_OVERLAP_STASH_BYTES
    int64_t FL_OVERLAP_STREAM_MIN_CLASSES

    # ---- the element-wise losses and softmax focal
    int FL_ELEMENTWISE_CHUNK

    int FL_ELEMENTWISE_COUNT
    int FL_ELEMENTWISE_SCALARS

    ctypedef struct fl_elementwise_args_f32:
        const float *input
        const float *target
        const float *weight
        const float *param
        float *grad
        float *hess
        float *loss_out
        int64_t weight_period
        int64_t param_period
        double scalar[4]
        double grad_scale

    ctypedef struct fl_elementwise_args_f64:
        const double *input
        const double *target
        const double *weight
        const double *param
        double *grad
        double *hess
        double *loss_out
        int64_t weight_period
        int64_t param_period
        double scalar[4]
        double grad_scale

    ctypedef struct fl_penalty_args_f32:
        const float *params
        float *grad
        double strength
        int squared
        int accumulate

    ctypedef struct fl_penalty_args_f64:
        const double *params
        double *grad
        double strength
        int squared
        int accumulate

    ctypedef struct fl_gaussian_kl_args_f32:
        const float *mean
        const float *log_var
        float *grad_mean
        float *grad_log_var
        float *hess_mean
        float *hess_log_var
        float *loss_out
        int64_t n_cols
        double grad_scale

    ctypedef struct fl_gaussian_kl_args_f64:
        const double *mean
        const double *log_var
        double *grad_mean
        double *grad_log_var
        double *hess_mean
        double *hess_log_var
        double *loss_out
        int64_t n_cols
        double grad_scale

    ctypedef struct fl_range_args_f32:
        const float *values
        double low
        double high

    ctypedef struct fl_range_args_f64:
        const double *values
        double low
        double high

    ctypedef struct fl_softmax_focal_args_f32:
        const float *logits
        const int64_t *target
        const float *alpha
        float *grad
        float *loss_out
        int64_t n_classes
        int64_t ignore_index
        double alpha_scalar
        double gamma
        double grad_scale

    ctypedef struct fl_softmax_focal_args_f64:
        const double *logits
        const int64_t *target
        const double *alpha
        double *grad
        double *loss_out
        int64_t n_classes
        int64_t ignore_index
        double alpha_scalar
        double gamma
        double grad_scale

    int FL_MATH_COUNT
    ctypedef struct fl_kernel_table:
        const char *isa
        fl_block_fn softmax_ce_f32
        fl_block_fn softmax_ce_f64
        fl_math_f32_fn math_f32[10]
        fl_math_f64_fn math_f64[10]
        fl_block_fn elementwise_f32[17]
        fl_block_fn elementwise_f64[17]
        fl_block_fn penalty_f32
        fl_block_fn penalty_f64
        fl_block_fn gaussian_kl_f32
        fl_block_fn gaussian_kl_f64
        fl_block_fn count_outside_f32
        fl_block_fn count_outside_f64
        fl_block_fn softmax_focal_f32
        fl_block_fn softmax_focal_f64
        fl_check_targets_fn check_targets
        # class-axis losses (issue 13)
        fl_block_fn class_ce_f32
        fl_block_fn class_ce_f64
        fl_block_fn class_focal_f32
        fl_block_fn class_focal_f64
        fl_block_fn multi_margin_f32
        fl_block_fn multi_margin_f64
        fl_block_fn distill_kl_f32
        fl_block_fn distill_kl_f64
        # second derivatives of the softmax class-axis losses (issue 15)
        fl_block_fn class_ce_hess_f32
        fl_block_fn class_ce_hess_f64
        fl_block_fn class_focal_hess_f32
        fl_block_fn class_focal_hess_f64

    int FL_ISA_COUNT
    int FL_ISA_AVX512
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
# The value comes from scripts/serial_threshold.py (README, "Threads"); a variable only so
# that script can sweep it (_set_serial_threshold), never changed otherwise.
cdef int64_t serial_below_elements = 65536

BLOCK_SIZE_ELEMENTS = BLOCK_ELEMENTS
SERIAL_THRESHOLD_ELEMENTS = serial_below_elements


def _set_serial_threshold(int64_t elements):
    """Set the serial threshold (for scripts/serial_threshold.py's measurement and the
    tests); returns the previous value. Results do not depend on it, only speed does."""
    global serial_below_elements
    if elements < 0:
        raise ValueError("the serial threshold is a number of elements >= 0")
    previous = serial_below_elements
    serial_below_elements = elements
    return previous

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

# in the order of fl_math_fn (fl_kernels.h)
MATH_FUNCTIONS = ("exp", "exp_nonpos", "log", "log1p", "softplus", "log_sigmoid", "sigmoid",
                  "log1p_unit", "exp_neg", "expm1_neg", "tanh")


cdef double run_blocks(fl_block_fn fn, const void *args, int64_t n_items,
                       int64_t items_per_block, int64_t elements_per_item,
                       int n_threads) except? -1.0:
    """Sum of fn over [0, n_items) in blocks of items_per_block, in block order.
    n_threads 0 stands for None (the default, see resolve_default_threads)."""
    cdef int64_t n_blocks = (n_items + items_per_block - 1) // items_per_block
    cdef int64_t b
    cdef double total = 0.0
    cdef double *partial
    if n_blocks > 1 and n_threads == 0 and n_items * elements_per_item >= serial_below_elements:
        n_threads = resolve_default_threads()   # None, resolved only where it matters
    if (n_blocks <= 1 or n_threads <= 1 or n_items * elements_per_item < serial_below_elements
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
        # A dynamic schedule, not a static one: each block writes its own partial sum, so
        # which thread runs it does not change the result, and on a machine where another
        # process holds a core, the thread that is running takes the blocks the descheduled
        # one would have waited for (a static split made the call as slow as the slower
        # thread). A block is ~16k elements, so the shared counter costs nothing measurable.
        with nogil:
            for b in prange(n_blocks, schedule="dynamic", chunksize=1, num_threads=n_threads):
                partial[b] = fn(args, b * items_per_block,
                                min(n_items, (b + 1) * items_per_block))
        for b in range(n_blocks):
            total += partial[b]
    finally:
        free(partial)
    return total


cdef inline int64_t even_block_rows(int64_t n_rows, int64_t row_elements) noexcept nogil:
    """Rows per block for run_blocks over rows of row_elements elements each: an even number
    of blocks of nearly equal rows, about BLOCK_ELEMENTS elements each, so that two threads
    get the same work. BLOCK_ELEMENTS // row_elements rows per block left a short last block
    and, as often as not, an odd count (softmax CE 4096 x 100: 25 blocks of 163 rows and one
    of 21, one thread a whole block more; issue 16). Depends on the shape only, never on
    n_threads, so results stay bitwise equal across thread counts."""
    cdef int64_t n_blocks
    if row_elements < 1:
        row_elements = 1
    n_blocks = (n_rows * row_elements + BLOCK_ELEMENTS - 1) // BLOCK_ELEMENTS
    if n_blocks <= 1:
        return max(1, n_rows)
    if n_blocks % 2 == 1:
        n_blocks += 1
    return max(1, (n_rows + n_blocks - 1) // n_blocks)


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
    cdef int64_t rows_per_block = even_block_rows(n_rows, n_classes)
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
        args32.n_rows = n_rows
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
        args64.n_rows = n_rows
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
    cdef int64_t n_ignored = 0
    cdef double denominator = 0.0
    cdef const float *w32 = NULL
    cdef const double *w64 = NULL
    if weight is None:
        # the count of targets not ignored: the vectorized check of the active ISA
        with nogil:
            bad = fl_kernels().check_targets(t, n, n_classes, ignore_index, &n_ignored)
        return bad, <double>(n - n_ignored)
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
            else:
                denominator += w64[y]
    return bad, denominator


# ------------------------------------------------------------------ element-wise losses
#
# Items are elements, in blocks of BLOCK_ELEMENTS; the arrays are flat views of C-contiguous
# inputs of any shape. Each function returns the sum of the (unscaled) element losses and
# writes grad (times grad_scale) and loss_out where they are not None.

# A periodic weight buffer (see fl_kernels.h) must hold its period plus this many entries.
ELEMENTWISE_CHUNK = FL_ELEMENTWISE_CHUNK
# The plain softmax CE's chunk layout past 100 classes: logits of at most this many bytes.
SOFTMAX_PLAIN_WIDE_BYTES = FL_SOFTMAX_PLAIN_WIDE_BYTES
OVERLAP_STASH_BYTES = FL_OVERLAP_STASH_BYTES
OVERLAP_STREAM_MIN_CLASSES = FL_OVERLAP_STREAM_MIN_CLASSES


ELEMENTWISE_KERNEL_COUNT = FL_ELEMENTWISE_COUNT


cdef double run_elementwise(int kind, cnp.ndarray input, cnp.ndarray target,
                            cnp.ndarray weight, int64_t weight_period, cnp.ndarray param,
                            int64_t param_period, const double *scalars, int n_scalars,
                            double grad_scale, cnp.ndarray grad, cnp.ndarray hess,
                            cnp.ndarray loss_out, int n_threads) except? -1.0:
    cdef fl_elementwise_args_f32 args32
    cdef fl_elementwise_args_f64 args64
    cdef const void *args
    cdef fl_block_fn fn
    cdef int i
    if cnp.PyArray_TYPE(input) == cnp.NPY_FLOAT:
        args32.input = <const float *>cnp.PyArray_DATA(input)
        args32.target = <const float *>cnp.PyArray_DATA(target)
        args32.weight = <const float *>data_or_null(weight)
        args32.param = <const float *>data_or_null(param)
        args32.grad = <float *>data_or_null(grad)
        args32.hess = <float *>data_or_null(hess)
        args32.loss_out = <float *>data_or_null(loss_out)
        args32.weight_period = weight_period
        args32.param_period = param_period
        for i in range(FL_ELEMENTWISE_SCALARS):
            args32.scalar[i] = scalars[i] if i < n_scalars else 0.0
        args32.grad_scale = grad_scale
        args = &args32
        fn = fl_kernels().elementwise_f32[kind]
    else:
        args64.input = <const double *>cnp.PyArray_DATA(input)
        args64.target = <const double *>cnp.PyArray_DATA(target)
        args64.weight = <const double *>data_or_null(weight)
        args64.param = <const double *>data_or_null(param)
        args64.grad = <double *>data_or_null(grad)
        args64.hess = <double *>data_or_null(hess)
        args64.loss_out = <double *>data_or_null(loss_out)
        args64.weight_period = weight_period
        args64.param_period = param_period
        for i in range(FL_ELEMENTWISE_SCALARS):
            args64.scalar[i] = scalars[i] if i < n_scalars else 0.0
        args64.grad_scale = grad_scale
        args = &args64
        fn = fl_kernels().elementwise_f64[kind]
    return run_blocks(fn, args, cnp.PyArray_SIZE(input), BLOCK_ELEMENTS, 1, n_threads)


def elementwise(int kind, cnp.ndarray input, cnp.ndarray target, cnp.ndarray weight,
                int64_t weight_period, cnp.ndarray param, int64_t param_period, tuple scalars,
                double grad_scale, cnp.ndarray grad, cnp.ndarray hess, cnp.ndarray loss_out,
                int n_threads):
    """Sum of the element losses of kernel `kind` (fastloss._table.KERNELS order); writes
    grad and hess (times grad_scale and the weight) and loss_out where not None.

    input, target, grad, hess, loss_out: C-contiguous, of input's dtype and size; weight and
    param: None or periodic buffers (fl_kernels.h) with their periods; scalars: at most
    FL_ELEMENTWISE_SCALARS floats. All validated by the caller (fastloss/_elementwise.py).
    """
    cdef double values[4]
    cdef int i, n = len(scalars)
    if not 0 <= kind < FL_ELEMENTWISE_COUNT or n > FL_ELEMENTWISE_SCALARS:
        raise ValueError("no such element-wise kernel")
    for i in range(n):
        values[i] = scalars[i]
    return run_elementwise(kind, input, target, weight, weight_period, param, param_period,
                           values, n, grad_scale, grad, hess, loss_out, n_threads)


def penalty(cnp.ndarray params, cnp.ndarray grad, double strength, bint squared,
            bint accumulate, int n_threads):
    """Sum of |w| (squared: w^2) in double; grad gets strength sign(w) (2 strength w),
    written or added (accumulate). params and grad C-contiguous of one dtype."""
    cdef fl_penalty_args_f32 args32
    cdef fl_penalty_args_f64 args64
    cdef const void *args
    cdef fl_block_fn fn
    if cnp.PyArray_TYPE(params) == cnp.NPY_FLOAT:
        args32.params = <const float *>cnp.PyArray_DATA(params)
        args32.grad = <float *>cnp.PyArray_DATA(grad)
        args32.strength = strength
        args32.squared = squared
        args32.accumulate = accumulate
        args = &args32
        fn = fl_kernels().penalty_f32
    else:
        args64.params = <const double *>cnp.PyArray_DATA(params)
        args64.grad = <double *>cnp.PyArray_DATA(grad)
        args64.strength = strength
        args64.squared = squared
        args64.accumulate = accumulate
        args = &args64
        fn = fl_kernels().penalty_f64
    return run_blocks(fn, args, cnp.PyArray_SIZE(params), BLOCK_ELEMENTS, 1, n_threads)


def gaussian_kl(cnp.ndarray mean, cnp.ndarray log_var, double grad_scale,
                cnp.ndarray grad_mean, cnp.ndarray grad_log_var, cnp.ndarray hess_mean,
                cnp.ndarray hess_log_var, cnp.ndarray loss_out, int n_threads):
    """Sum over rows of (N, D) of sum_d (m^2 + exp(v) - 1 - v) / 2; gradients and second
    derivatives (both or neither of each pair) times grad_scale; loss_out (N,) or None."""
    cdef fl_gaussian_kl_args_f32 args32
    cdef fl_gaussian_kl_args_f64 args64
    cdef const void *args
    cdef fl_block_fn fn
    cdef int64_t n_rows = cnp.PyArray_DIM(mean, 0)
    cdef int64_t n_cols = cnp.PyArray_DIM(mean, 1)
    if cnp.PyArray_TYPE(mean) == cnp.NPY_FLOAT:
        args32.mean = <const float *>cnp.PyArray_DATA(mean)
        args32.log_var = <const float *>cnp.PyArray_DATA(log_var)
        args32.grad_mean = <float *>data_or_null(grad_mean)
        args32.grad_log_var = <float *>data_or_null(grad_log_var)
        args32.hess_mean = <float *>data_or_null(hess_mean)
        args32.hess_log_var = <float *>data_or_null(hess_log_var)
        args32.loss_out = <float *>data_or_null(loss_out)
        args32.n_cols = n_cols
        args32.grad_scale = grad_scale
        args = &args32
        fn = fl_kernels().gaussian_kl_f32
    else:
        args64.mean = <const double *>cnp.PyArray_DATA(mean)
        args64.log_var = <const double *>cnp.PyArray_DATA(log_var)
        args64.grad_mean = <double *>data_or_null(grad_mean)
        args64.grad_log_var = <double *>data_or_null(grad_log_var)
        args64.hess_mean = <double *>data_or_null(hess_mean)
        args64.hess_log_var = <double *>data_or_null(hess_log_var)
        args64.loss_out = <double *>data_or_null(loss_out)
        args64.n_cols = n_cols
        args64.grad_scale = grad_scale
        args = &args64
        fn = fl_kernels().gaussian_kl_f64
    return run_blocks(fn, args, n_rows, even_block_rows(n_rows, n_cols), n_cols, n_threads)


def count_outside(cnp.ndarray values, double low, double high, int n_threads):
    """How many elements of a C-contiguous float32/float64 array are not in [low, high]
    (nan included)."""
    cdef fl_range_args_f32 args32
    cdef fl_range_args_f64 args64
    cdef const void *args
    cdef fl_block_fn fn
    if cnp.PyArray_TYPE(values) == cnp.NPY_FLOAT:
        args32.values = <const float *>cnp.PyArray_DATA(values)
        args32.low = low
        args32.high = high
        args = &args32
        fn = fl_kernels().count_outside_f32
    else:
        args64.values = <const double *>cnp.PyArray_DATA(values)
        args64.low = low
        args64.high = high
        args = &args64
        fn = fl_kernels().count_outside_f64
    return int(run_blocks(fn, args, cnp.PyArray_SIZE(values), BLOCK_ELEMENTS, 1, n_threads))


def softmax_focal(cnp.ndarray logits, cnp.ndarray target, cnp.ndarray alpha,
                  double alpha_scalar, double gamma, int64_t ignore_index, double grad_scale,
                  cnp.ndarray grad, cnp.ndarray loss_out, int n_threads):
    """Sum over rows of -alpha_y (1 - p_y)^gamma log p_y; alpha (C,) or None (then
    alpha_scalar for every class); target (N,) int64 checked by the caller."""
    cdef fl_softmax_focal_args_f32 args32
    cdef fl_softmax_focal_args_f64 args64
    cdef const void *args
    cdef fl_block_fn fn
    cdef int64_t n_rows = cnp.PyArray_DIM(logits, 0)
    cdef int64_t n_classes = cnp.PyArray_DIM(logits, 1)
    cdef int64_t rows_per_block = even_block_rows(n_rows, n_classes)
    if cnp.PyArray_TYPE(logits) == cnp.NPY_FLOAT:
        args32.logits = <const float *>cnp.PyArray_DATA(logits)
        args32.target = <const int64_t *>cnp.PyArray_DATA(target)
        args32.alpha = <const float *>data_or_null(alpha)
        args32.grad = <float *>data_or_null(grad)
        args32.loss_out = <float *>data_or_null(loss_out)
        args32.n_classes = n_classes
        args32.ignore_index = ignore_index
        args32.alpha_scalar = alpha_scalar
        args32.gamma = gamma
        args32.grad_scale = grad_scale
        args = &args32
        fn = fl_kernels().softmax_focal_f32
    else:
        args64.logits = <const double *>cnp.PyArray_DATA(logits)
        args64.target = <const int64_t *>cnp.PyArray_DATA(target)
        args64.alpha = <const double *>data_or_null(alpha)
        args64.grad = <double *>data_or_null(grad)
        args64.loss_out = <double *>data_or_null(loss_out)
        args64.n_classes = n_classes
        args64.ignore_index = ignore_index
        args64.alpha_scalar = alpha_scalar
        args64.gamma = gamma
        args64.grad_scale = grad_scale
        args = &args64
        fn = fl_kernels().softmax_focal_f64
    return run_blocks(fn, args, n_rows, rows_per_block, n_classes, n_threads)


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

def build_info():
    """How the extension was built: compile flags, link flags, compiler, debug build."""
    return {
        "compile_flags": fl_build_flags.decode(),
        "link_flags": fl_build_link_flags.decode(),
        "compiler": fl_build_compiler.decode(),
        "debug": bool(fl_build_debug),
    }


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (they can run on several threads)."""
    return bool(fl_openmp_enabled())


def default_n_threads():
    """What n_threads=None means now, for the calling thread (see resolve_default_threads)."""
    return resolve_default_threads()


def cpu_quota():
    """The container CPU quota in whole CPUs (0: none), as read at import."""
    return CPU_QUOTA


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


# ------------------------------------------------------------------ the fast path
#
# A training loop calls a loss thousands of times on small arrays, where Python-level argument
# checks would cost more than the kernel. The functions below recognise the common case in a
# few C-level tests -- exact ndarrays of the input's dtype, C-contiguous and aligned, int64
# class indices, default-like options -- and run it directly. They never raise for bad input:
# anything they do not recognise returns None, and fastloss/_api.py then validates it fully
# (and raises with its messages). So every error message lives in one place, _validation.py.

cdef object _LossResult = None


def _set_result_type(result_type):
    """Called once by fastloss._api with its LossResult named tuple."""
    global _LossResult
    _LossResult = result_type


cdef inline bint plain_float_array(object value, int ndim):
    """An exact ndarray of float32/float64 with `ndim` dims, C-contiguous and aligned."""
    if not cnp.PyArray_CheckExact(value):
        return False
    cdef cnp.ndarray array = <cnp.ndarray>value
    cdef int type_num = cnp.PyArray_TYPE(array)
    return (cnp.PyArray_NDIM(array) == ndim
            and (type_num == cnp.NPY_FLOAT or type_num == cnp.NPY_DOUBLE)
            and cnp.PyArray_ISCARRAY_RO(array))


cdef inline bint plain_nonempty_float(object value):
    """A non-empty exact ndarray of float32/float64 of any shape, C-contiguous and aligned."""
    if not cnp.PyArray_CheckExact(value):
        return False
    cdef cnp.ndarray array = <cnp.ndarray>value
    cdef int type_num = cnp.PyArray_TYPE(array)
    return ((type_num == cnp.NPY_FLOAT or type_num == cnp.NPY_DOUBLE)
            and cnp.PyArray_ISCARRAY_RO(array) and cnp.PyArray_SIZE(array) > 0)


cdef inline bint disjoint(cnp.ndarray a, cnp.ndarray b):
    """The byte ranges of two C-contiguous arrays do not overlap."""
    cdef uintptr_t a0 = <uintptr_t>cnp.PyArray_DATA(a)
    cdef uintptr_t b0 = <uintptr_t>cnp.PyArray_DATA(b)
    return a0 + <uintptr_t>cnp.PyArray_NBYTES(a) <= b0 or b0 + <uintptr_t>cnp.PyArray_NBYTES(b) <= a0


cdef inline int reduction_code(object reduction):
    """0 mean, 1 sum, 2 none, -1 anything else."""
    if reduction == "mean":
        return 0
    if reduction == "sum":
        return 1
    if reduction == "none":
        return 2
    return -1


cdef inline int plain_n_threads(object n_threads):
    """0 for None (resolved later, only if the call goes parallel), the count for a plain
    int >= 1, -1 for anything else."""
    if n_threads is None:
        return 0
    if PyLong_CheckExact(n_threads) and 1 <= n_threads <= 256:   # _validation.MAX_THREADS
        return <int>n_threads
    return -1


cdef inline bint plain_gradient_buffer(object out, cnp.ndarray like):
    """out is None, the input itself, or a separate writeable array just like it."""
    if out is None:
        return True
    if out is like:
        return cnp.PyArray_ISWRITEABLE(like)
    if not cnp.PyArray_CheckExact(out):
        return False
    cdef cnp.ndarray o = <cnp.ndarray>out
    return (cnp.PyArray_ISCARRAY(o)
            and cnp.PyArray_TYPE(o) == cnp.PyArray_TYPE(like)
            and cnp.PyArray_NDIM(o) == cnp.PyArray_NDIM(like)
            and cnp.PyArray_SIZE(o) == cnp.PyArray_SIZE(like)
            and cnp.PyArray_DIM(o, 0) == cnp.PyArray_DIM(like, 0)
            and disjoint(o, like))


def softmax_cross_entropy_fast(object logits, object target, object weight, object ignore_index,
                               object label_smoothing, object reduction, object compute_grad,
                               object out, object n_threads):
    """softmax_cross_entropy for plain class-index calls, or None (see above)."""
    if not plain_float_array(logits, 2) or weight is not None:
        return None
    cdef cnp.ndarray x = <cnp.ndarray>logits
    cdef int64_t n_rows = cnp.PyArray_DIM(x, 0)
    cdef int64_t n_classes = cnp.PyArray_DIM(x, 1)
    if n_classes < 1 or n_rows < 1:
        return None
    if not (cnp.PyArray_CheckExact(target) and cnp.PyArray_NDIM(<cnp.ndarray>target) == 1
            and cnp.PyArray_TYPE(<cnp.ndarray>target) == cnp.NPY_INT64
            and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>target)
            and cnp.PyArray_DIM(<cnp.ndarray>target, 0) == n_rows):
        return None
    cdef cnp.ndarray t = <cnp.ndarray>target
    if not PyLong_CheckExact(ignore_index) or not (-(1 << 62) < ignore_index < (1 << 62)):
        return None
    cdef double eps
    if PyFloat_CheckExact(label_smoothing):
        eps = PyFloat_AS_DOUBLE(label_smoothing)
    elif PyLong_CheckExact(label_smoothing) and (label_smoothing == 0 or label_smoothing == 1):
        eps = <double>label_smoothing
    else:
        return None
    if not (0.0 <= eps <= 1.0):
        return None
    cdef int code = reduction_code(reduction)
    cdef int threads = plain_n_threads(n_threads)
    if code < 0 or threads < 0 or not (compute_grad is True or compute_grad is False):
        return None
    if compute_grad is False and out is not None:
        return None
    if out is not None and not (plain_gradient_buffer(out, x) and disjoint(<cnp.ndarray>out, t)):
        return None
    bad, denominator = check_class_indices(t, n_classes, ignore_index, None)
    if bad >= 0:
        return None
    cdef cnp.ndarray grad = None
    if compute_grad is True:
        grad = <cnp.ndarray>out if out is not None else result_empty_c(
            2, cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x))
    cdef cnp.ndarray loss_out = None
    if code == 2:
        loss_out = result_empty_c(1, cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x))
    cdef double scale = 1.0
    if code == 0:
        scale = 1.0 / denominator if denominator != 0 else float("nan")
    total = softmax_cross_entropy(x, t, None, None, ignore_index, eps, <double>n_classes,
                                  scale, grad, loss_out, threads)
    if code == 0:
        loss = total / denominator if denominator != 0 else float("nan")
    elif code == 1:
        loss = total
    else:
        loss = loss_out
    return tuple.__new__(_LossResult, (loss, grad))


# The fast paths of the element-wise losses and softmax focal, by the same rules: anything not
# recognised returns None and is validated (and rejected with its message) by _api.py.

cdef inline bint plain_like(object value, cnp.ndarray like):
    """An exact ndarray of like's dtype and shape, C-contiguous and aligned."""
    if not cnp.PyArray_CheckExact(value):
        return False
    cdef cnp.ndarray array = <cnp.ndarray>value
    cdef int d
    if (cnp.PyArray_TYPE(array) != cnp.PyArray_TYPE(like) or not cnp.PyArray_ISCARRAY_RO(array)
            or cnp.PyArray_NDIM(array) != cnp.PyArray_NDIM(like)):
        return False
    for d in range(cnp.PyArray_NDIM(like)):
        if cnp.PyArray_DIM(array, d) != cnp.PyArray_DIM(like, d):
            return False
    return True


cdef inline bint plain_real(object value, double *number):
    """A Python float that is not nan, or a Python int of moderate size, into *number."""
    if PyFloat_CheckExact(value):
        number[0] = PyFloat_AS_DOUBLE(value)
        return number[0] == number[0]
    if PyLong_CheckExact(value) and -(1 << 52) < value < (1 << 52):
        number[0] = <double>value
        return True
    return False


cdef inline bint plain_out(object out, cnp.ndarray like, cnp.ndarray target):
    """out is None, the input itself, or a separate writeable array just like it; never
    overlapping the target."""
    if out is None:
        return True
    if out is like:
        return cnp.PyArray_ISWRITEABLE(like) and disjoint(like, target)
    return (plain_like(out, like) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)
            and disjoint(<cnp.ndarray>out, like) and disjoint(<cnp.ndarray>out, target))


# The domains of the checked scalars of each element-wise kernel (registered once by
# fastloss/_elementwise.py from the loss table): (low, high, low_open, high_open) with nan
# for an open-ended side.
cdef double ew_low[32][4]
cdef double ew_high[32][4]
cdef int ew_low_open[32][4]
cdef int ew_high_open[32][4]
# the input's domain of each kernel ([low, high]; nan: none), checked by a pass over the input
cdef double ew_input_low[32]
cdef double ew_input_high[32]
for _kind in range(32):
    ew_input_low[_kind] = float("nan")
    ew_input_high[_kind] = float("nan")


def _register_domains(int kind, list domains, input_domain=None):
    """Domains of the first len(domains) scalars of `kind`, and the input's domain (low,
    high) or None, for elementwise_fast."""
    cdef int i
    if not 0 <= kind < FL_ELEMENTWISE_COUNT or len(domains) > FL_ELEMENTWISE_SCALARS:
        raise ValueError("no such element-wise kernel or too many scalars")
    if input_domain is not None:
        ew_input_low[kind], ew_input_high[kind] = input_domain
    for i, (low, high, low_open, high_open) in enumerate(domains):
        ew_low[kind][i] = float("nan") if low is None else low
        ew_high[kind][i] = float("nan") if high is None else high
        ew_low_open[kind][i] = low_open
        ew_high_open[kind][i] = high_open


cdef inline bint in_domain(int kind, int i, double v) noexcept:
    cdef double low = ew_low[kind][i], high = ew_high[kind][i]
    if low == low and (v < low or (ew_low_open[kind][i] and v == low)):
        return False
    if high == high and (v > high or (ew_high_open[kind][i] and v == high)):
        return False
    return True


def elementwise_fast(int kind, object input, object target, tuple scalars, int n_checked,
                     object reduction, object compute_grad, object out, object n_threads):
    """An element-wise loss for plain calls (no weight, no array parameter, no hessian), or
    None. The first n_checked scalars are the loss's public real options, checked against
    their registered domains; the rest were derived by the caller."""
    if kind < 0 or not plain_nonempty_float(input):
        return None
    cdef cnp.ndarray x = <cnp.ndarray>input
    cdef int type_num = cnp.PyArray_TYPE(x)
    if not plain_like(target, x):
        return None
    cdef cnp.ndarray t = <cnp.ndarray>target
    cdef int code = reduction_code(reduction)
    cdef int threads = plain_n_threads(n_threads)
    if code < 0 or threads < 0 or not (compute_grad is True or compute_grad is False):
        return None
    if compute_grad is False and out is not None:
        return None
    if not plain_out(out, x, t):
        return None
    cdef double values[4]
    cdef int i, n = len(scalars)
    if n > FL_ELEMENTWISE_SCALARS:
        return None
    for i in range(n):
        if not plain_real(scalars[i], &values[i]):
            return None
        if i < n_checked and not in_domain(kind, i, values[i]):
            return None
    if ew_input_low[kind] == ew_input_low[kind] and count_outside(
            x, ew_input_low[kind], ew_input_high[kind], threads) != 0:
        return None   # outside the input's domain: the full path raises with its message
    cdef cnp.ndarray grad = None
    if compute_grad is True:
        grad = <cnp.ndarray>out if out is not None else result_empty_c(
            cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), type_num)
    cdef cnp.ndarray loss_out = None
    if code == 2:
        loss_out = result_empty_c(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), type_num)
    cdef double size = <double>cnp.PyArray_SIZE(x)
    cdef double scale = 1.0 / size if code == 0 else 1.0
    total = run_elementwise(kind, x, t, None, 1, None, 1, values, n, scale, grad, None,
                            loss_out, threads)
    if code == 0:
        loss = total / size
    elif code == 1:
        loss = total
    else:
        loss = loss_out
    return tuple.__new__(_LossResult, (loss, grad))


def penalty_fast(object params, object strength, object out, object accumulate,
                 object n_threads, bint squared):
    """l1_penalty / l2_penalty for plain calls (a C-contiguous float array, a plain number
    strength >= 0, out None, params itself or a disjoint array just like it), or None."""
    if not plain_nonempty_float(params):
        return None
    cdef cnp.ndarray x = <cnp.ndarray>params
    cdef int type_num = cnp.PyArray_TYPE(x)
    if not (accumulate is True or accumulate is False):
        return None
    if accumulate is True and out is None:
        return None
    cdef double s
    if not plain_real(strength, &s) or not s >= 0.0:
        return None
    cdef int threads = plain_n_threads(n_threads)
    if threads < 0:
        return None
    if out is x:
        if not cnp.PyArray_ISWRITEABLE(x):
            return None
    elif out is not None and not (plain_like(out, x) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)
                                  and disjoint(<cnp.ndarray>out, x)):
        return None
    cdef cnp.ndarray grad = <cnp.ndarray>out if out is not None else result_empty_c(
        cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), type_num)
    total = penalty(x, grad, s, squared, accumulate is True, threads)
    return tuple.__new__(_LossResult, (s * total, grad))


def softmax_focal_fast(object logits, object target, object alpha, object gamma,
                       object ignore_index, object reduction, object compute_grad, object out,
                       object n_threads):
    """softmax_focal for plain calls (alpha None or a number), or None."""
    if not plain_float_array(logits, 2):
        return None
    cdef cnp.ndarray x = <cnp.ndarray>logits
    cdef int64_t n_rows = cnp.PyArray_DIM(x, 0)
    cdef int64_t n_classes = cnp.PyArray_DIM(x, 1)
    if n_classes < 1 or n_rows < 1:
        return None
    if not (cnp.PyArray_CheckExact(target) and cnp.PyArray_NDIM(<cnp.ndarray>target) == 1
            and cnp.PyArray_TYPE(<cnp.ndarray>target) == cnp.NPY_INT64
            and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>target)
            and cnp.PyArray_DIM(<cnp.ndarray>target, 0) == n_rows):
        return None
    cdef cnp.ndarray t = <cnp.ndarray>target
    if not PyLong_CheckExact(ignore_index) or not (-(1 << 62) < ignore_index < (1 << 62)):
        return None
    cdef double alpha_scalar = 1.0, gamma_value = 0.0
    if alpha is not None and not plain_real(alpha, &alpha_scalar):
        return None
    if not plain_real(gamma, &gamma_value) or not gamma_value >= 0.0:
        return None
    cdef int code = reduction_code(reduction)
    cdef int threads = plain_n_threads(n_threads)
    if code < 0 or threads < 0 or not (compute_grad is True or compute_grad is False):
        return None
    if compute_grad is False and out is not None:
        return None
    if out is not None and not (plain_gradient_buffer(out, x) and disjoint(<cnp.ndarray>out, t)):
        return None
    bad, denominator = check_class_indices(t, n_classes, ignore_index, None)
    if bad >= 0:
        return None
    cdef cnp.ndarray grad = None
    if compute_grad is True:
        grad = <cnp.ndarray>out if out is not None else result_empty_c(
            2, cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x))
    cdef cnp.ndarray loss_out = None
    if code == 2:
        loss_out = result_empty_c(1, cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x))
    cdef double scale = 1.0
    if code == 0:
        scale = 1.0 / denominator if denominator != 0 else float("nan")
    total = softmax_focal(x, t, None, alpha_scalar, gamma_value, ignore_index, scale, grad,
                          loss_out, threads)
    if code == 0:
        loss = total / denominator if denominator != 0 else float("nan")
    elif code == 1:
        loss = total
    else:
        loss = loss_out
    return tuple.__new__(_LossResult, (loss, grad))


# ------------------------------------------------------------------ result buffers (issue 18)
# result_empty_c / result_empty: the arrays fastloss returns, from a bounded buffer cache
include "_buffers.pxi"
# ------------------------------------------------------------------ sets and pairs (issue 14)
#
# The overlap losses (Dice, Jaccard, Tversky; fl_overlap.inc) and the pair and triplet losses
# (fl_pairs.inc). Their kernel-table entries are read through the two accessors below, so
# this block is the only part of the module that knows them.

import numpy as _np

cdef extern from *:
    """
    static fl_block_fn fl_overlap_kernel(int is_double)
    {
        return is_double ? fl_kernels()->overlap_f64 : fl_kernels()->overlap_f32;
    }
    static fl_block_fn fl_pairs_kernel(int is_double)
    {
        return is_double ? fl_kernels()->pairs_f64 : fl_kernels()->pairs_f32;
    }
    """
    fl_block_fn fl_overlap_kernel(int is_double) nogil
    fl_block_fn fl_pairs_kernel(int is_double) nogil


cdef extern from "fl_kernels.h" nogil:
    int FL_OVERLAP_FUSED
    int FL_OVERLAP_SUMS
    int FL_OVERLAP_FINISH
    int FL_OVERLAP_GRAD

    ctypedef struct fl_overlap_args_f32:
        const float *input
        const float *target
        const int64_t *target_index
        float *grad
        const double *weight
        double *sums
        double *coef
        double *loss_items
        int64_t n_classes
        int64_t spatial
        int64_t first_class
        int activation
        int kind
        int squared
        int mode
        double smooth
        double alpha
        double beta
        double grad_scale
        float *stash
        int64_t stash_stride
        int64_t stash_slots

    ctypedef struct fl_overlap_args_f64:
        const double *input
        const double *target
        const int64_t *target_index
        double *grad
        const double *weight
        double *sums
        double *coef
        double *loss_items
        int64_t n_classes
        int64_t spatial
        int64_t first_class
        int activation
        int kind
        int squared
        int mode
        double smooth
        double alpha
        double beta
        double grad_scale
        double *stash
        int64_t stash_stride
        int64_t stash_slots

    ctypedef struct fl_pairs_args_f32:
        const float *x1
        const float *x2
        const float *x3
        const float *target
        float *g1
        float *g2
        float *g3
        float *loss_out
        int64_t dim
        int kind
        int norm
        int swap
        double p
        double eps
        double margin
        double grad_scale
        int stream

    ctypedef struct fl_pairs_args_f64:
        const double *x1
        const double *x2
        const double *x3
        const double *target
        double *g1
        double *g2
        double *g3
        double *loss_out
        int64_t dim
        int kind
        int norm
        int swap
        double p
        double eps
        double margin
        double grad_scale
        int stream

# constants of fl_kernels.h for fastloss/_sets_pairs.py
ACTIVATIONS = {"none": 0, "sigmoid": 1, "softmax": 2}
OVERLAP_DICE, OVERLAP_JACCARD, OVERLAP_TVERSKY = 0, 1, 2
PAIR_TRIPLET, PAIR_CONTRASTIVE, PAIR_COSINE, PAIR_RANKING = 0, 1, 2, 3
NORM_2, NORM_1, NORM_INF, NORM_GENERAL = 0, 1, 2, 3


# Gradients at least this large (bytes, all gradients of the call together) of the row pair
# losses and of the softmax overlap losses are written with non-temporal (streaming) stores
# when no gradient is its own input: they go to memory without the write-allocate read of
# each line, which a large output would not keep in cache anyway (fl_stream.inc). A variable
# so the tests can run the streaming paths on small inputs (_set_stream_threshold); results
# never depend on it.
cdef int64_t stream_above_bytes = 8 << 20


def _set_stream_threshold(int64_t nbytes):
    """Set the streaming-store threshold of the pair and softmax overlap losses (bytes of
    gradient, >= 0); returns the previous value. Results do not depend on it, only speed does."""
    global stream_above_bytes
    if nbytes < 0:
        raise ValueError("the streaming threshold is a number of bytes >= 0")
    previous = stream_above_bytes
    stream_above_bytes = nbytes
    return previous


def overlap(cnp.ndarray input, cnp.ndarray target, cnp.ndarray target_index,
            cnp.ndarray weight, int activation, int kind, bint squared, bint batch,
            int64_t first_class, double smooth, double alpha, double beta, double grad_scale,
            cnp.ndarray grad, int n_threads):
    """Dice / Jaccard / Tversky over input (N, C, S), C-contiguous float32/float64.

    target (N, C, S) of input's dtype or None; target_index (N, S) int64 in [0, C) or None;
    weight (C,) float64, the loss factor of each class; grad like input, or None. Returns
    (sum of the kept classes' weighted losses, the weighted loss of every slice: (N, C)
    float64, or (C,) with batch). grad receives the gradient of that sum times grad_scale.
    """
    cdef fl_overlap_args_f32 args32
    cdef fl_overlap_args_f64 args64
    cdef const void *args
    cdef bint is_double = cnp.PyArray_TYPE(input) == cnp.NPY_DOUBLE
    cdef fl_block_fn fn = fl_overlap_kernel(is_double)
    cdef int64_t n = cnp.PyArray_DIM(input, 0)
    cdef int64_t C = cnp.PyArray_DIM(input, 1)
    cdef int64_t S = cnp.PyArray_DIM(input, 2)
    cdef cnp.ndarray sums = _np.zeros(n * C * 3, dtype=_np.float64)
    cdef cnp.ndarray class_sums
    cdef cnp.ndarray coef = _np.zeros((C if batch else n * C) * 2, dtype=_np.float64)
    cdef cnp.ndarray loss_items = _np.zeros(C if batch else n * C, dtype=_np.float64)
    cdef int64_t per_item = C * S if activation == 2 else S
    cdef int64_t n_items = n if activation == 2 else n * C
    cdef int64_t items_per_block = max(1, BLOCK_ELEMENTS // max(per_item, 1))
    cdef double *s
    cdef double *cs
    cdef int64_t i, j
    cdef double total = 0.0
    # the softmax layout's streamed gradient (fl_overlap.inc, "Streamed softmax gradients"):
    # with one call's sums and gradient per sample (not batch), a gradient that is not the
    # input, aligned to its items and large enough to leave the caches anyway, at least
    # FL_OVERLAP_STREAM_MIN_CLASSES classes and samples of at most FL_OVERLAP_STASH_BYTES,
    # on AVX-512, each thread stashes a sample's p in its slot of `stash` (from the buffer
    # cache: the same pages call after call) instead of the gradient
    cdef cnp.ndarray stash = None
    cdef int64_t stash_stride = 0, stash_slots = 0
    cdef int64_t itemsize = cnp.PyArray_ITEMSIZE(input)
    if (activation == 2 and not batch and grad is not None and n > 0 and S > 0
            and fl_isa_active() == FL_ISA_AVX512   # the layout's register groups (AVX-512)
            and C >= FL_OVERLAP_STREAM_MIN_CLASSES
            and data_or_null(grad) != data_or_null(input)
            # element-aligned: the streamed lines are found from the gradient's address (an
            # out= view a few bytes off its items' alignment keeps p in the gradient)
            and <uintptr_t>cnp.PyArray_DATA(grad) % itemsize == 0
            and cnp.PyArray_NBYTES(grad) >= stream_above_bytes
            and C * S * itemsize <= FL_OVERLAP_STASH_BYTES):
        stash_stride = (C * S * itemsize + 63) // 64 * 64 // itemsize   # whole lines
        # a slot per thread number run_blocks may use (the threads of its parallel loop)
        stash_slots = min((n_items + items_per_block - 1) // items_per_block,
                          n_threads if n_threads > 0 else resolve_default_threads())
        stash = result_empty(stash_slots * stash_stride, input.dtype)
    if grad is None and activation == 2 and C > 8192:
        # the softmax sums without a gradient stash p into a chunk scratch of
        # FL_OVERLAP_SCRATCH = 8192 entries (fl_kernels.h), too small for one pixel's C
        # classes here: stash into a full-size buffer instead
        grad = _np.empty_like(input)
    if is_double:
        args64.input = <const double *>cnp.PyArray_DATA(input)
        args64.target = <const double *>data_or_null(target)
        args64.target_index = <const int64_t *>data_or_null(target_index)
        args64.grad = <double *>data_or_null(grad)
        args64.weight = <const double *>cnp.PyArray_DATA(weight)
        args64.sums = <double *>cnp.PyArray_DATA(sums)
        args64.coef = <double *>cnp.PyArray_DATA(coef)
        args64.loss_items = <double *>cnp.PyArray_DATA(loss_items)
        args64.n_classes = C
        args64.spatial = S
        args64.first_class = first_class
        args64.activation = activation
        args64.kind = kind
        args64.squared = squared
        args64.mode = FL_OVERLAP_SUMS if batch else FL_OVERLAP_FUSED
        args64.smooth = smooth
        args64.alpha = alpha
        args64.beta = beta
        args64.grad_scale = grad_scale
        args64.stash = <double *>data_or_null(stash)
        args64.stash_stride = stash_stride
        args64.stash_slots = stash_slots
        args = &args64
    else:
        args32.input = <const float *>cnp.PyArray_DATA(input)
        args32.target = <const float *>data_or_null(target)
        args32.target_index = <const int64_t *>data_or_null(target_index)
        args32.grad = <float *>data_or_null(grad)
        args32.weight = <const double *>cnp.PyArray_DATA(weight)
        args32.sums = <double *>cnp.PyArray_DATA(sums)
        args32.coef = <double *>cnp.PyArray_DATA(coef)
        args32.loss_items = <double *>cnp.PyArray_DATA(loss_items)
        args32.n_classes = C
        args32.spatial = S
        args32.first_class = first_class
        args32.activation = activation
        args32.kind = kind
        args32.squared = squared
        args32.mode = FL_OVERLAP_SUMS if batch else FL_OVERLAP_FUSED
        args32.smooth = smooth
        args32.alpha = alpha
        args32.beta = beta
        args32.grad_scale = grad_scale
        args32.stash = <float *>data_or_null(stash)
        args32.stash_stride = stash_stride
        args32.stash_slots = stash_slots
        args = &args32
    total = run_blocks(fn, args, n_items, items_per_block, per_item, n_threads)
    if not batch:
        return total, loss_items.reshape(n, C)
    # batch: the class sums, added over the samples in sample order; the per-class
    # coefficients; then the gradient pass
    class_sums = _np.zeros(C * 3, dtype=_np.float64)
    s = <double *>cnp.PyArray_DATA(sums)
    cs = <double *>cnp.PyArray_DATA(class_sums)
    for i in range(n):
        for j in range(3 * C):
            cs[j] += s[i * 3 * C + j]
    if is_double:
        args64.sums = cs
        args64.mode = FL_OVERLAP_FINISH
    else:
        args32.sums = cs
        args32.mode = FL_OVERLAP_FINISH
    with nogil:
        total = fn(args, 0, C)
    if grad is not None:
        if is_double:
            args64.mode = FL_OVERLAP_GRAD
        else:
            args32.mode = FL_OVERLAP_GRAD
        run_blocks(fn, args, n_items, items_per_block, per_item, n_threads)
    return total, loss_items


cdef bint pair_streams(int kind, cnp.ndarray x1, cnp.ndarray x2, cnp.ndarray x3,
                       cnp.ndarray g1, cnp.ndarray g2, cnp.ndarray g3):
    """Whether the row kernels stream the gradients: large enough, and none written over an
    input (in place the lines are in cache already and have no write-allocate read)."""
    if kind == PAIR_RANKING or g1 is None:
        return False
    if data_or_null(g1) == data_or_null(x1) or data_or_null(g2) == data_or_null(x2):
        return False
    if g3 is not None and data_or_null(g3) == data_or_null(x3):
        return False
    cdef int64_t nbytes = cnp.PyArray_NBYTES(g1) + cnp.PyArray_NBYTES(g2)
    if g3 is not None:
        nbytes += cnp.PyArray_NBYTES(g3)
    return nbytes >= stream_above_bytes


def pairs(int kind, cnp.ndarray x1, cnp.ndarray x2, cnp.ndarray x3, cnp.ndarray target,
          cnp.ndarray g1, cnp.ndarray g2, cnp.ndarray g3, cnp.ndarray loss_out, int norm,
          bint swap, double p, double eps, double margin, double grad_scale, int n_threads):
    """A pair or triplet loss over rows of (N, D) C-contiguous inputs of one dtype (margin
    ranking: over the elements of inputs of any shape). x3 / target / the gradients /
    loss_out may be None where the loss has none. Returns the sum of the row losses; the
    gradients receive their derivatives times grad_scale."""
    cdef fl_pairs_args_f32 args32
    cdef fl_pairs_args_f64 args64
    cdef const void *args
    cdef bint is_double = cnp.PyArray_TYPE(x1) == cnp.NPY_DOUBLE
    cdef fl_block_fn fn = fl_pairs_kernel(is_double)
    cdef int64_t n_items, dim
    if kind == PAIR_RANKING:
        n_items = cnp.PyArray_SIZE(x1)
        dim = 1
    else:
        n_items = cnp.PyArray_DIM(x1, 0)
        dim = cnp.PyArray_DIM(x1, 1)
    cdef int64_t items_per_block = even_block_rows(n_items, dim)
    cdef int stream = pair_streams(kind, x1, x2, x3, g1, g2, g3)
    if is_double:
        args64.x1 = <const double *>cnp.PyArray_DATA(x1)
        args64.x2 = <const double *>cnp.PyArray_DATA(x2)
        args64.x3 = <const double *>data_or_null(x3)
        args64.target = <const double *>data_or_null(target)
        args64.g1 = <double *>data_or_null(g1)
        args64.g2 = <double *>data_or_null(g2)
        args64.g3 = <double *>data_or_null(g3)
        args64.loss_out = <double *>data_or_null(loss_out)
        args64.dim = dim
        args64.kind = kind
        args64.norm = norm
        args64.swap = swap
        args64.p = p
        args64.eps = eps
        args64.margin = margin
        args64.grad_scale = grad_scale
        args64.stream = stream
        args = &args64
    else:
        args32.x1 = <const float *>cnp.PyArray_DATA(x1)
        args32.x2 = <const float *>cnp.PyArray_DATA(x2)
        args32.x3 = <const float *>data_or_null(x3)
        args32.target = <const float *>data_or_null(target)
        args32.g1 = <float *>data_or_null(g1)
        args32.g2 = <float *>data_or_null(g2)
        args32.g3 = <float *>data_or_null(g3)
        args32.loss_out = <float *>data_or_null(loss_out)
        args32.dim = dim
        args32.kind = kind
        args32.norm = norm
        args32.swap = swap
        args32.p = p
        args32.eps = eps
        args32.margin = margin
        args32.grad_scale = grad_scale
        args32.stream = stream
        args = &args32
    return run_blocks(fn, args, n_items, items_per_block, dim, n_threads)
# ------------------------------------------------------------------ class-axis losses (issue 13)
# K-dimensional inputs, sample weights, z-loss, logit soft-capping and lse_out of softmax
# cross-entropy and softmax focal (fl_class_axis.inc), multi_margin (fl_multi_margin.inc) and
# kl_divergence_with_logits (fl_distill_kl.inc). Arguments validated by fastloss/_class_losses.py.

cdef extern from "fl_kernels.h" nogil:
    int FL_CLASS_TILE_MAX
    ctypedef struct fl_class_axis_args_f32:
        const float *logits
        const int64_t *target
        const float *target_prob
        const float *weight
        const float *sample_weight
        float *grad
        float *loss_out
        float *lse_out
        int64_t n_classes, inner, tile, sample_weight_per_position, ignore_index
        double label_smoothing, weight_sum, grad_scale, z_loss, softcap, alpha_scalar, gamma
    ctypedef struct fl_class_axis_args_f64:
        const double *logits
        const int64_t *target
        const double *target_prob
        const double *weight
        const double *sample_weight
        double *grad
        double *loss_out
        double *lse_out
        int64_t n_classes, inner, tile, sample_weight_per_position, ignore_index
        double label_smoothing, weight_sum, grad_scale, z_loss, softcap, alpha_scalar, gamma
    # second derivatives (issue 15): the class-axis arguments and the hessian buffer
    ctypedef struct fl_class_hess_args_f32:
        fl_class_axis_args_f32 base
        float *hess
    ctypedef struct fl_class_hess_args_f64:
        fl_class_axis_args_f64 base
        double *hess
    ctypedef struct fl_multi_margin_args_f32:
        const float *input
        const int64_t *target
        const float *weight
        float *grad
        float *hess
        float *loss_out
        int64_t n_classes, p
        double margin, grad_scale
    ctypedef struct fl_multi_margin_args_f64:
        const double *input
        const int64_t *target
        const double *weight
        double *grad
        double *hess
        double *loss_out
        int64_t n_classes, p
        double margin, grad_scale
    ctypedef struct fl_distill_kl_args_f32:
        const float *logits
        const float *target_logits
        float *grad
        float *hess
        float *loss_out
        int64_t n_classes
        double temperature, grad_scale
    ctypedef struct fl_distill_kl_args_f64:
        const double *logits
        const double *target_logits
        double *grad
        double *hess
        double *loss_out
        int64_t n_classes
        double temperature, grad_scale

# elements of a K-dim tile (C classes x W positions): its logits and gradient (2 x 12 KB in
# float32) and the next tile's, prefetched meanwhile, stay in L1/L2 between its passes (issue
# 13 speed: 8192 ran ~15 % slower per element than 4096, float32 AVX-512, one thread; 3072
# with W a whole number of 64-lane groups, against 4096 in multiples of 16, thread CPU time:
# (64, 10, 64, 64) W 400 -> 256 -4 % CE, -5 % focal; (8, 40, 128, 128) W 96 -> 64 -3 % CE,
# -6 % focal; (8, 21, 256, 256) W 192 -> 128 the same)
cdef enum:
    CLASS_TILE_ELEMENTS = 3072
    # W rounds down to a multiple of this where it can: whole lane groups of every ISA and
    # type (fl_class_axis.inc's FL_CA_GROUP, 64 floats in AVX-512), no remainder loop per span
    CLASS_TILE_GROUP = 64
    # elements of a K-dim block (issue 13 alignment): its passes' spans begin with a head up to
    # the gradient's first aligned vector and end one span short of whole groups, once a block
    CLASS_TILE_BLOCK_ELEMENTS = 65536

CLASS_TILE_MAX = FL_CLASS_TILE_MAX


def class_axis_tile(int64_t n_classes, int64_t inner):
    """Positions per tile of a K-dim call: about CLASS_TILE_ELEMENTS / C, a multiple of
    CLASS_TILE_GROUP where that is at least one group, else of 16, in [16, FL_CLASS_TILE_MAX],
    at most P. Depends only on the shape (never on threads)."""
    cdef int64_t w = CLASS_TILE_ELEMENTS // max(n_classes, 1)
    w = (w // CLASS_TILE_GROUP) * CLASS_TILE_GROUP if w >= CLASS_TILE_GROUP else (w // 16) * 16
    w = min(max(w, 16), FL_CLASS_TILE_MAX)
    return max(1, min(w, inner))


def class_axis(bint focal, cnp.ndarray logits, int64_t n_samples, int64_t n_classes,
               int64_t inner, cnp.ndarray target, cnp.ndarray target_prob, cnp.ndarray weight,
               cnp.ndarray sample_weight, bint sample_weight_per_position, int64_t ignore_index,
               double label_smoothing, double weight_sum, double grad_scale, double z_loss,
               double softcap, double alpha_scalar, double gamma, cnp.ndarray grad,
               cnp.ndarray loss_out, cnp.ndarray lse_out, int n_threads,
               cnp.ndarray hess=None):
    """Sum of the per-sample losses (times the sample weights) of softmax cross-entropy
    (focal=False) or softmax focal over logits (N, C, P), all arrays validated and
    C-contiguous. Writes grad * grad_scale, loss_out (N, P) and lse_out (N, P) where given;
    with hess (issue 15; grad then given) the Hessian's diagonal * grad_scale too, by the
    kernels' with_hess variant."""
    cdef fl_class_axis_args_f32 a32
    cdef fl_class_axis_args_f64 a64
    cdef fl_class_hess_args_f32 h32
    cdef fl_class_hess_args_f64 h64
    cdef const void *args
    cdef fl_block_fn fn
    cdef int64_t tile = class_axis_tile(n_classes, inner)
    cdef int64_t n_items, items_per_block, elements_per_item
    if inner != 1:   # tiles (none at all when a spatial dimension is 0)
        n_items = n_samples * ((inner + tile - 1) // tile)
        elements_per_item = n_classes * tile
    else:
        n_items = n_samples
        elements_per_item = n_classes
    items_per_block = max(1, BLOCK_ELEMENTS // max(elements_per_item, 1))
    if inner != 1:   # issue 13 alignment: a block's spans start with a short head (fl_class_axis.inc)
        items_per_block = max(1, CLASS_TILE_BLOCK_ELEMENTS // max(elements_per_item, 1))
    if cnp.PyArray_TYPE(logits) == cnp.NPY_FLOAT:
        a32.logits = <const float *>cnp.PyArray_DATA(logits)
        a32.target = <const int64_t *>data_or_null(target)
        a32.target_prob = <const float *>data_or_null(target_prob)
        a32.weight = <const float *>data_or_null(weight)
        a32.sample_weight = <const float *>data_or_null(sample_weight)
        a32.grad = <float *>data_or_null(grad)
        a32.loss_out = <float *>data_or_null(loss_out)
        a32.lse_out = <float *>data_or_null(lse_out)
        a32.n_classes, a32.inner, a32.tile = n_classes, inner, tile
        a32.sample_weight_per_position = sample_weight_per_position
        a32.ignore_index = ignore_index
        a32.label_smoothing, a32.weight_sum, a32.grad_scale = label_smoothing, weight_sum, grad_scale
        a32.z_loss, a32.softcap, a32.alpha_scalar, a32.gamma = z_loss, softcap, alpha_scalar, gamma
        args = &a32
        fn = fl_kernels().class_focal_f32 if focal else fl_kernels().class_ce_f32
        if hess is not None:
            h32.base = a32
            h32.hess = <float *>cnp.PyArray_DATA(hess)
            args = &h32
            fn = fl_kernels().class_focal_hess_f32 if focal else fl_kernels().class_ce_hess_f32
    else:
        a64.logits = <const double *>cnp.PyArray_DATA(logits)
        a64.target = <const int64_t *>data_or_null(target)
        a64.target_prob = <const double *>data_or_null(target_prob)
        a64.weight = <const double *>data_or_null(weight)
        a64.sample_weight = <const double *>data_or_null(sample_weight)
        a64.grad = <double *>data_or_null(grad)
        a64.loss_out = <double *>data_or_null(loss_out)
        a64.lse_out = <double *>data_or_null(lse_out)
        a64.n_classes, a64.inner, a64.tile = n_classes, inner, tile
        a64.sample_weight_per_position = sample_weight_per_position
        a64.ignore_index = ignore_index
        a64.label_smoothing, a64.weight_sum, a64.grad_scale = label_smoothing, weight_sum, grad_scale
        a64.z_loss, a64.softcap, a64.alpha_scalar, a64.gamma = z_loss, softcap, alpha_scalar, gamma
        args = &a64
        fn = fl_kernels().class_focal_f64 if focal else fl_kernels().class_ce_f64
        if hess is not None:
            h64.base = a64
            h64.hess = <double *>cnp.PyArray_DATA(hess)
            args = &h64
            fn = fl_kernels().class_focal_hess_f64 if focal else fl_kernels().class_ce_hess_f64
    return run_blocks(fn, args, n_items, items_per_block, elements_per_item, n_threads)


def multi_margin(cnp.ndarray input, cnp.ndarray target, cnp.ndarray weight, int64_t p,
                 double margin, double grad_scale, cnp.ndarray grad, cnp.ndarray hess,
                 cnp.ndarray loss_out, int n_threads):
    """Sum over rows of the multi-margin losses; writes grad * grad_scale, the hessian's
    diagonal * grad_scale (hess: p = 2 and a gradient only; issue 15) and loss_out."""
    cdef fl_multi_margin_args_f32 a32
    cdef fl_multi_margin_args_f64 a64
    cdef const void *args
    cdef fl_block_fn fn
    cdef int64_t n_rows = cnp.PyArray_DIM(input, 0)
    cdef int64_t n_classes = cnp.PyArray_DIM(input, 1)
    if cnp.PyArray_TYPE(input) == cnp.NPY_FLOAT:
        a32.input = <const float *>cnp.PyArray_DATA(input)
        a32.target = <const int64_t *>cnp.PyArray_DATA(target)
        a32.weight = <const float *>data_or_null(weight)
        a32.grad = <float *>data_or_null(grad)
        a32.hess = <float *>data_or_null(hess)
        a32.loss_out = <float *>data_or_null(loss_out)
        a32.n_classes, a32.p, a32.margin, a32.grad_scale = n_classes, p, margin, grad_scale
        args = &a32
        fn = fl_kernels().multi_margin_f32
    else:
        a64.input = <const double *>cnp.PyArray_DATA(input)
        a64.target = <const int64_t *>cnp.PyArray_DATA(target)
        a64.weight = <const double *>data_or_null(weight)
        a64.grad = <double *>data_or_null(grad)
        a64.hess = <double *>data_or_null(hess)
        a64.loss_out = <double *>data_or_null(loss_out)
        a64.n_classes, a64.p, a64.margin, a64.grad_scale = n_classes, p, margin, grad_scale
        args = &a64
        fn = fl_kernels().multi_margin_f64
    return run_blocks(fn, args, n_rows, even_block_rows(n_rows, n_classes), n_classes,
                      n_threads)


def distill_kl(cnp.ndarray logits, cnp.ndarray target_logits, double temperature,
               double grad_scale, cnp.ndarray grad, cnp.ndarray hess, cnp.ndarray loss_out,
               int n_threads):
    """Sum over rows of T^2 KL(softmax(t / T) || softmax(x / T)); writes grad * grad_scale
    and the hessian's diagonal * grad_scale (hess: with a gradient only; issue 15)."""
    cdef fl_distill_kl_args_f32 a32
    cdef fl_distill_kl_args_f64 a64
    cdef const void *args
    cdef fl_block_fn fn
    cdef int64_t n_rows = cnp.PyArray_DIM(logits, 0)
    cdef int64_t n_classes = cnp.PyArray_DIM(logits, 1)
    if cnp.PyArray_TYPE(logits) == cnp.NPY_FLOAT:
        a32.logits = <const float *>cnp.PyArray_DATA(logits)
        a32.target_logits = <const float *>cnp.PyArray_DATA(target_logits)
        a32.grad = <float *>data_or_null(grad)
        a32.hess = <float *>data_or_null(hess)
        a32.loss_out = <float *>data_or_null(loss_out)
        a32.n_classes, a32.temperature, a32.grad_scale = n_classes, temperature, grad_scale
        args = &a32
        fn = fl_kernels().distill_kl_f32
    else:
        a64.logits = <const double *>cnp.PyArray_DATA(logits)
        a64.target_logits = <const double *>cnp.PyArray_DATA(target_logits)
        a64.grad = <double *>data_or_null(grad)
        a64.hess = <double *>data_or_null(hess)
        a64.loss_out = <double *>data_or_null(loss_out)
        a64.n_classes, a64.temperature, a64.grad_scale = n_classes, temperature, grad_scale
        args = &a64
        fn = fl_kernels().distill_kl_f64
    return run_blocks(fn, args, n_rows, even_block_rows(n_rows, n_classes), n_classes,
                      n_threads)


# ------------------------------------------------------------------------------------------
# issue 17, linear_cross_entropy: the BLAS driver of one chunk's sweep over vocabulary tiles.
# The ?gemm function pointers come at run time from SciPy's cython_blas capsules (no build or
# import dependency on SciPy here); int is the BLAS's LP64 integer.

from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer

ctypedef void (*fl_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k, float *alpha,
                             float *a, int *lda, float *b, int *ldb, float *beta, float *c,
                             int *ldc) noexcept nogil
ctypedef void (*fl_dgemm_fn)(char *transa, char *transb, int *m, int *n, int *k, double *alpha,
                             double *a, int *lda, double *b, int *ldb, double *beta, double *c,
                             int *ldc) noexcept nogil


cdef void lce_gemm(void *fn, bint is_double, char transa, char transb, int m, int n, int k,
                   double alpha, void *a, int lda, void *b, int ldb, double beta, void *c,
                   int ldc) noexcept nogil:
    """C = alpha op(A) op(B) + beta C, column-major (BLAS conventions)."""
    cdef float alpha32 = <float>alpha, beta32 = <float>beta
    if m == 0 or n == 0:
        return
    if is_double:
        (<fl_dgemm_fn>fn)(&transa, &transb, &m, &n, &k, &alpha, <double *>a, &lda,
                          <double *>b, &ldb, &beta, <double *>c, &ldc)
    else:
        (<fl_sgemm_fn>fn)(&transa, &transb, &m, &n, &k, &alpha32, <float *>a, &lda,
                          <float *>b, &ldb, &beta32, <float *>c, &ldc)


cdef void lce_tiles(void *fn, bint is_double, size_t item, char *buf, int n_classes,
                    int n_features, char *h_cur, int n_cur, char *h_next, int n_next,
                    char *w, char *dw, char *dh, double scale, double dw_beta, int tile,
                    int t_begin, int t_end) noexcept nogil:
    """Tiles [t_begin, t_end) of the sweep (see lce_sweep), in order."""
    cdef int t, j0, width
    cdef size_t row = <size_t>n_features * item
    cdef int ld = n_features if n_features > 0 else 1  # BLAS: leading dimensions >= 1
    for t in range(t_begin, t_end):
        j0 = t * tile
        width = n_classes - j0 if n_classes - j0 < tile else tile
        if n_cur > 0:
            # dW[j0:j0+width]^T (D, width) = s H_c^T (D, n) g[:, tile] (n, width) + beta dW^T
            lce_gemm(fn, is_double, b'N', b'T', n_features, width, n_cur, scale,
                     h_cur, ld, buf + j0 * item, n_classes, dw_beta,
                     dw + j0 * row, ld)
            # dH_c^T (D, n) (+)= s W[tile]^T (D, width) g[:, tile]^T (width, n)
            lce_gemm(fn, is_double, b'N', b'N', n_features, n_cur, width, scale,
                     w + j0 * row, ld, buf + j0 * item, n_classes,
                     0.0 if t == t_begin else 1.0, dh, ld)
        if n_next > 0:
            # logits[:, tile]^T (width, n') = W[tile] (width, D) H_next^T (D, n')
            lce_gemm(fn, is_double, b'T', b'N', width, n_next, n_features, 1.0,
                     w + j0 * row, ld, h_next, ld, 0.0,
                     buf + j0 * item, n_classes)


def lce_sweep(object gemm_capsule, cnp.ndarray buf, cnp.ndarray h_cur, cnp.ndarray h_next,
              cnp.ndarray weight, cnp.ndarray grad_weight, cnp.ndarray dh_parts, double scale,
              bint dw_accumulate, int tile, int n_parts, int n_threads):
    """One sweep of the (n, V) C-ordered chunk buffer over vocabulary tiles of `tile` classes.
    Per tile, in this order: with h_cur (n, D) (the buffer holds its chunk's logit gradient g),
    dW[tile] = s g[:, tile]^T h_cur (+ dW[tile] if dw_accumulate) and
    dh_parts[p] (+)= s g[:, tile] W[tile]; with h_next (n', D), the buffer's tile becomes
    h_next W[tile]^T (the next chunk's logits). W[tile] is read once for both.

    The tiles are cut into n_parts contiguous runs (parts), run by n_threads OpenMP threads
    (dynamic schedule: a descheduled thread takes fewer parts), each GEMM on one BLAS thread
    (the caller sets that). dh_parts (n_parts, n, D): part p's sum of its tiles' dH terms, in
    tile order; the caller adds the parts in part order. So the result does not depend on
    n_threads. Returns the number of parts used (min(n_parts, number of tiles)). Arrays
    C-contiguous, the dtype of weight."""
    cdef bint is_double = cnp.PyArray_TYPE(weight) == cnp.NPY_DOUBLE
    cdef void *fn = PyCapsule_GetPointer(gemm_capsule, PyCapsule_GetName(gemm_capsule))
    cdef size_t item = 8 if is_double else 4
    cdef int n_classes = <int>cnp.PyArray_DIM(weight, 0)
    cdef int n_features = <int>cnp.PyArray_DIM(weight, 1)
    cdef int n_cur = 0 if h_cur is None else <int>cnp.PyArray_DIM(h_cur, 0)
    cdef int n_next = 0 if h_next is None else <int>cnp.PyArray_DIM(h_next, 0)
    cdef char *p_buf = <char *>cnp.PyArray_DATA(buf)
    cdef char *p_cur = NULL if h_cur is None else <char *>cnp.PyArray_DATA(h_cur)
    cdef char *p_next = NULL if h_next is None else <char *>cnp.PyArray_DATA(h_next)
    cdef char *p_w = <char *>cnp.PyArray_DATA(weight)
    cdef char *p_dw = NULL if grad_weight is None else <char *>cnp.PyArray_DATA(grad_weight)
    cdef char *p_dh = NULL if dh_parts is None else <char *>cnp.PyArray_DATA(dh_parts)
    cdef size_t part_bytes = <size_t>n_cur * n_features * item
    cdef double dw_beta = 1.0 if dw_accumulate else 0.0
    cdef int n_tiles = (n_classes + tile - 1) // tile
    cdef int p
    if n_parts > n_tiles:
        n_parts = n_tiles
    if n_threads > n_parts:
        n_threads = n_parts
    with nogil:
        for p in prange(n_parts, schedule="dynamic", chunksize=1, num_threads=n_threads):
            lce_tiles(fn, is_double, item, p_buf, n_classes, n_features, p_cur, n_cur, p_next,
                      n_next, p_w, p_dw, p_dh + p * part_bytes, scale, dw_beta, tile,
                      <int>((<int64_t>n_tiles * p) // n_parts),
                      <int>((<int64_t>n_tiles * (p + 1)) // n_parts))
    return n_parts
