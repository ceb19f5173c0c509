/*
 * fl_buffers.h -- a bounded cache of the buffers fastloss returns (issue 18).
 *
 * A training loop that calls `loss, grad = fl.softmax_cross_entropy(x, y)` gets a new
 * gradient array every step. At 64-256 MB glibc serves it from fresh mmap pages, which fault
 * in and are zeroed by the kernel on first touch, and unmaps it again when it is freed: half
 * the time of the call. This allocator keeps a few recently freed buffers and hands them out
 * again, so the steady state touches no new pages.
 *
 * It is a NumPy memory handler (NEP 49). fastloss installs it, with PyDataMem_SetHandler,
 * only around the allocation of the arrays it returns (fastloss/_buffers.pxi); an array keeps
 * the handler it was made with, so its buffer comes back here when NumPy frees it -- that is,
 * when the array and every view of it are gone. A buffer is in the cache only between that
 * free and the next allocation that takes it, so no live array ever shares it.
 *
 * Bounded: the cache holds at most `max_bytes` of idle buffers (and at most FL_BUFFER_SLOTS
 * of them); the least recently freed go first. Buffers smaller than FL_BUFFER_MIN_BYTES are
 * never cached (malloc serves them well). Thread-safe: one mutex, held only to look up or
 * update the table, never around malloc, free or memset. Fork-safe: pthread_atfork takes the
 * mutex before fork and releases it in both processes, so a child never inherits it locked;
 * the child keeps its own copy of the cache.
 */
#ifndef FASTLOSS_FL_BUFFERS_H
#define FASTLOSS_FL_BUFFERS_H

#include <stddef.h>
#include <stdint.h>

/* Buffers below this size are neither cached nor worth the PyDataMem_SetHandler round trip:
 * glibc's malloc reuses its heap for them (scripts/bench_buffer_cache.py --min-bytes). */
#define FL_BUFFER_MIN_BYTES ((size_t)1 << 17)
/* At most this many idle buffers (a loop uses one or two per loss it calls) */
#define FL_BUFFER_SLOTS 32
/* A cached buffer serves a request of size s if its capacity is in [s, s + s / FL_BUFFER_SLACK] */
#define FL_BUFFER_SLACK 4

typedef struct {
    size_t max_bytes;       /* the cap (0: the cache is off) */
    size_t cached_bytes;    /* capacity of the idle buffers held now (<= max_bytes) */
    size_t cached_buffers;  /* their number */
    uint64_t hits;          /* allocations served from the cache */
    uint64_t misses;        /* allocations that had to go to malloc */
    uint64_t evictions;     /* idle buffers given back to malloc to respect the cap */
} fl_buffer_stats;

/* Register the fork handlers (once; later calls do nothing). 0 on success. */
int fl_buffer_cache_init(void);
/* The PyDataMem_Handler (typed void * so this header does not need NumPy's). */
void *fl_buffer_handler(void);
/* Set the cap; idle buffers beyond it are freed before this returns. Returns the old cap. */
size_t fl_buffer_cache_set_max(size_t max_bytes);
/* The cap now (a relaxed atomic read: for the quick "is it on" test before allocating). */
size_t fl_buffer_cache_max(void);
void fl_buffer_cache_stats(fl_buffer_stats *stats);

#endif /* FASTLOSS_FL_BUFFERS_H */
