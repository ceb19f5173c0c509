# The arrays fastloss returns, from a bounded cache of recently freed buffers (issue 18).
# Included by _kernels.pyx. The allocator is C (fastloss/_src/fl_buffers.c, where the design
# is described); this part installs it as NumPy's memory handler (NEP 49) for exactly the
# allocation of a result array, and is the Python face of its settings. The public
# functions (fastloss.set_buffer_cache, the environment variable) are in fastloss/_buffers.py.

import operator as _operator

import numpy as _np

from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New
from libc.stdint cimport uint64_t
from libc.string cimport strcmp


cdef extern from "fl_buffers.h" nogil:
    size_t FL_BUFFER_MIN_BYTES
    int FL_BUFFER_SLOTS
    ctypedef struct fl_buffer_stats:
        size_t max_bytes
        size_t cached_bytes
        size_t cached_buffers
        uint64_t hits
        uint64_t misses
        uint64_t evictions
    int fl_buffer_cache_init()
    void *fl_buffer_handler()
    size_t fl_buffer_cache_set_max(size_t max_bytes)
    size_t fl_buffer_cache_max()
    void fl_buffer_cache_stats(fl_buffer_stats *stats)


cdef extern from "numpy/ndarraytypes.h":
    ctypedef struct PyDataMem_Handler:
        char name[127]

if fl_buffer_cache_init() != 0:
    raise ImportError("fastloss: pthread_atfork failed for the buffer cache")

# The handler as NumPy wants it: a capsule named "mem_handler". It lives as long as the
# module, and every array allocated with it holds a reference to it besides.
cdef object _buffer_handler = PyCapsule_New(fl_buffer_handler(), b"mem_handler", NULL)

BUFFER_MIN_BYTES = FL_BUFFER_MIN_BYTES
BUFFER_SLOTS = FL_BUFFER_SLOTS


cdef inline bint _default_handler_in_force() except -1:
    """NumPy's own allocator is the one in force: fastloss never overrides a handler that
    the user (or another library) installed for this context."""
    cdef object current = cnp.PyDataMem_GetHandler()
    cdef PyDataMem_Handler *h = <PyDataMem_Handler *>PyCapsule_GetPointer(current, b"mem_handler")
    return strcmp(h.name, b"default_allocator") == 0


cdef cnp.ndarray result_empty_c(int ndim, cnp.npy_intp *dims, int type_num):
    """An uninitialised C-contiguous array for a result (the replacement of
    cnp.PyArray_EMPTY(ndim, dims, type_num, 0)): from the buffer cache when it is on and the
    array is large enough to profit, else from NumPy's allocator."""
    cdef size_t itemsize = 4 if type_num == cnp.NPY_FLOAT else (8 if type_num == cnp.NPY_DOUBLE
                                                                else 0)
    cdef size_t nbytes = itemsize
    cdef int d
    if itemsize == 0:  # other types: the descriptor knows (a builtin type_num, never flexible)
        itemsize = <size_t>cnp.PyArray_DescrFromType(type_num).itemsize
        nbytes = itemsize
    for d in range(ndim):
        if dims[d] < 0 or (dims[d] > 0 and nbytes > (<size_t>-1) // <size_t>dims[d]):
            nbytes = 0  # numpy raises for these
            break
        nbytes *= <size_t>dims[d]
    if (nbytes < FL_BUFFER_MIN_BYTES or fl_buffer_cache_max() == 0
            or not _default_handler_in_force()):
        return cnp.PyArray_EMPTY(ndim, dims, type_num, 0)
    previous = cnp.PyDataMem_SetHandler(_buffer_handler)
    try:
        return cnp.PyArray_EMPTY(ndim, dims, type_num, 0)
    finally:
        cnp.PyDataMem_SetHandler(previous)


def result_empty(shape, dtype):
    """An uninitialised C-contiguous ndarray of `shape` (an int or a sequence of ints) and
    `dtype`, as np.empty, for a result fastloss returns: its buffer comes from, and goes
    back to, the buffer cache (when the cache is on and the array large enough)."""
    try:
        dims = (_operator.index(shape),)
    except TypeError:
        try:
            dims = tuple([_operator.index(d) for d in shape])
        except TypeError:
            return _np.empty(shape, dtype)  # raises numpy's own error
    cdef object descr = _np.dtype(dtype)
    cdef object nbytes = descr.itemsize
    for d in dims:
        nbytes *= d
    if (nbytes < <object>FL_BUFFER_MIN_BYTES or min(dims, default=0) < 0
            or fl_buffer_cache_max() == 0 or not _default_handler_in_force()):
        return _np.empty(dims, descr)
    previous = cnp.PyDataMem_SetHandler(_buffer_handler)
    try:
        return _np.empty(dims, descr)
    finally:
        cnp.PyDataMem_SetHandler(previous)


def _buffer_cache_set_max(size_t max_bytes):
    """Set the cache's cap in bytes (0: off), freeing idle buffers beyond it; returns the
    previous cap. Validated by fastloss._buffers.set_buffer_cache."""
    return fl_buffer_cache_set_max(max_bytes)


def _buffer_cache_stats():
    """The cache now: a dict of max_bytes, cached_bytes, cached_buffers, hits, misses,
    evictions (counts since import)."""
    cdef fl_buffer_stats stats
    fl_buffer_cache_stats(&stats)
    return {"max_bytes": stats.max_bytes, "cached_bytes": stats.cached_bytes,
            "cached_buffers": stats.cached_buffers, "hits": stats.hits,
            "misses": stats.misses, "evictions": stats.evictions}
