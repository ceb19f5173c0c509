/*
 * fl_buffers.c -- the buffer cache behind the arrays fastloss returns (issue 18); the design
 * is described in fl_buffers.h.
 *
 * Every buffer comes from malloc (or calloc) with a small header in front of the address
 * handed to NumPy, which is aligned to 64 bytes (a cache line, one AVX-512 vector):
 *
 *     raw (from malloc) ... [fl_buffer_header] user (64-aligned) ... user + capacity
 *
 * The header records raw and the capacity, so a buffer can serve any later request of a
 * size close to it, whatever size NumPy passes to free() (it passes the array's nbytes,
 * which ndarray.resize and shape changes make differ from the allocation).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <numpy/ndarraytypes.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "fl_buffers.h"

#if defined(_WIN32)
#include <windows.h>
typedef SRWLOCK fl_lock_t;
#define FL_LOCK_INIT SRWLOCK_INIT
static void fl_lock(fl_lock_t *lock) { AcquireSRWLockExclusive(lock); }
static void fl_unlock(fl_lock_t *lock) { ReleaseSRWLockExclusive(lock); }
#else
#include <pthread.h>
typedef pthread_mutex_t fl_lock_t;
#define FL_LOCK_INIT PTHREAD_MUTEX_INITIALIZER
static void fl_lock(fl_lock_t *lock) { pthread_mutex_lock(lock); }
static void fl_unlock(fl_lock_t *lock) { pthread_mutex_unlock(lock); }
#endif

/* Under AddressSanitizer an idle buffer is poisoned: a read or write through a pointer that
 * outlived its array (the bug this cache could otherwise hide from ASan, since the memory is
 * never free()d) is reported as use-after-poison. */
#if defined(__SANITIZE_ADDRESS__)
#define FL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FL_ASAN 1
#endif
#endif
#ifdef FL_ASAN
#include <sanitizer/asan_interface.h>
#define FL_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define FL_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define FL_POISON(p, n) ((void)(p), (void)(n))
#define FL_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define FL_BUFFER_ALIGN 64

typedef struct {
    void *raw;        /* what malloc returned: what free() gets */
    size_t capacity;  /* usable bytes from the user address */
} fl_buffer_header;

/* malloc aligns to at least 16, so user - raw <= header + 63 */
#define FL_BUFFER_OVERHEAD (sizeof(fl_buffer_header) + FL_BUFFER_ALIGN)

typedef struct {
    char *user;
    size_t capacity;
    uint64_t freed_at;  /* the clock when it came back: the smallest is evicted first */
} fl_buffer_slot;

static struct {
    fl_lock_t lock;
    fl_buffer_slot slots[FL_BUFFER_SLOTS];
    int count;
    size_t cached_bytes;
    uint64_t clock;
    uint64_t hits, misses, evictions;
} cache = {FL_LOCK_INIT};

/* read without the lock by fl_buffer_cache_max(); written under it */
static _Atomic size_t max_bytes = 0;

static fl_buffer_header *header_of(void *user)
{
    return (fl_buffer_header *)((char *)user - sizeof(fl_buffer_header));
}

/* ---- the table, always under the lock */

/* Take the smallest idle buffer that serves `size`, or NULL. */
static char *cache_take_locked(size_t size)
{
    int best = -1;
    const size_t limit = size + size / FL_BUFFER_SLACK;
    for (int i = 0; i < cache.count; i++) {
        const size_t capacity = cache.slots[i].capacity;
        if (capacity >= size && capacity <= limit &&
            (best < 0 || capacity < cache.slots[best].capacity))
            best = i;
    }
    if (best < 0) {
        cache.misses++;
        return NULL;
    }
    char *user = cache.slots[best].user;
    cache.cached_bytes -= cache.slots[best].capacity;
    cache.slots[best] = cache.slots[--cache.count];
    cache.hits++;
    return user;
}

/* Remove the least recently freed buffer into *evicted[(*n)++]. */
static void cache_evict_oldest_locked(char **evicted, int *n_evicted)
{
    int oldest = 0;
    for (int i = 1; i < cache.count; i++)
        if (cache.slots[i].freed_at < cache.slots[oldest].freed_at)
            oldest = i;
    evicted[(*n_evicted)++] = cache.slots[oldest].user;
    cache.cached_bytes -= cache.slots[oldest].capacity;
    cache.slots[oldest] = cache.slots[--cache.count];
    cache.evictions++;
}

/* ---- buffers */

static void *buffer_new(size_t size, int zeroed)
{
    if (size > SIZE_MAX - FL_BUFFER_OVERHEAD)
        return NULL;
    void *raw = zeroed ? calloc(1, size + FL_BUFFER_OVERHEAD) : malloc(size + FL_BUFFER_OVERHEAD);
    if (raw == NULL)
        return NULL;
    uintptr_t user = ((uintptr_t)raw + sizeof(fl_buffer_header) + FL_BUFFER_ALIGN - 1) &
                     ~(uintptr_t)(FL_BUFFER_ALIGN - 1);
    fl_buffer_header *header = header_of((void *)user);
    header->raw = raw;
    header->capacity = size;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    /* Transparent huge pages for large buffers, as NumPy's default allocator asks for them
     * from 4 MiB on (fewer TLB misses while a kernel streams through the array); only the
     * whole pages inside the buffer, never the header's page. */
    if (size >= ((size_t)1 << 22)) {
        const uintptr_t page = 4096;
        const uintptr_t first = (user + page - 1) & ~(page - 1);
        const uintptr_t last = (user + size) & ~(page - 1);
        if (last > first)
            madvise((void *)first, (size_t)(last - first), MADV_HUGEPAGE);
    }
#endif
    return (void *)user;
}

static void buffer_delete(char *user)
{
    FL_UNPOISON(user, header_of(user)->capacity);
    free(header_of(user)->raw);
}

static void *buffer_take(size_t size, int zeroed)
{
    if (size >= FL_BUFFER_MIN_BYTES && atomic_load_explicit(&max_bytes, memory_order_relaxed)) {
        fl_lock(&cache.lock);
        char *user = cache_take_locked(size);
        fl_unlock(&cache.lock);
        if (user != NULL) {
            FL_UNPOISON(user, header_of(user)->capacity);
            if (zeroed)
                memset(user, 0, size);
            return user;
        }
    }
    return buffer_new(size, zeroed);
}

static void buffer_give_back(char *user)
{
    const size_t capacity = header_of(user)->capacity;
    char *evicted[FL_BUFFER_SLOTS + 1];
    int n_evicted = 0;
    int kept = 0;
    if (capacity >= FL_BUFFER_MIN_BYTES) {
        FL_POISON(user, capacity);  /* before it is visible to other threads */
        fl_lock(&cache.lock);
        const size_t cap = atomic_load_explicit(&max_bytes, memory_order_relaxed);
        if (capacity <= cap) {
            while (cache.count > 0 &&
                   (cache.count == FL_BUFFER_SLOTS || cache.cached_bytes + capacity > cap))
                cache_evict_oldest_locked(evicted, &n_evicted);
            cache.slots[cache.count].user = user;
            cache.slots[cache.count].capacity = capacity;
            cache.slots[cache.count].freed_at = ++cache.clock;
            cache.count++;
            cache.cached_bytes += capacity;
            kept = 1;
        }
        fl_unlock(&cache.lock);
    }
    if (!kept)
        buffer_delete(user);
    for (int i = 0; i < n_evicted; i++)
        buffer_delete(evicted[i]);
}

/* ---- the NumPy memory handler (NEP 49) */

static void *handler_malloc(void *ctx, size_t size)
{
    (void)ctx;
    return buffer_take(size, 0);
}

static void *handler_calloc(void *ctx, size_t n_elements, size_t element_size)
{
    (void)ctx;
    if (element_size != 0 && n_elements > SIZE_MAX / element_size)
        return NULL;
    return buffer_take(n_elements * element_size, 1);
}

static void *handler_realloc(void *ctx, void *ptr, size_t new_size)
{
    (void)ctx;
    if (ptr == NULL)
        return buffer_take(new_size, 0);
    const size_t capacity = header_of(ptr)->capacity;
    if (new_size <= capacity)
        return ptr;
    void *grown = buffer_take(new_size, 0);
    if (grown == NULL)
        return NULL;  /* as realloc: the old buffer stays valid */
    memcpy(grown, ptr, capacity);
    buffer_give_back(ptr);
    return grown;
}

static void handler_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;  /* the header knows the capacity */
    if (ptr != NULL)
        buffer_give_back(ptr);
}

static PyDataMem_Handler handler = {
    "fastloss_buffer_cache",
    1,
    {NULL, handler_malloc, handler_calloc, handler_realloc, handler_free},
};

void *fl_buffer_handler(void) { return &handler; }

/* ---- configuration */

size_t fl_buffer_cache_set_max(size_t new_max)
{
    char *evicted[FL_BUFFER_SLOTS];
    int n_evicted = 0;
    fl_lock(&cache.lock);
    const size_t old = atomic_load_explicit(&max_bytes, memory_order_relaxed);
    atomic_store_explicit(&max_bytes, new_max, memory_order_relaxed);
    while (cache.count > 0 && cache.cached_bytes > new_max)
        cache_evict_oldest_locked(evicted, &n_evicted);
    fl_unlock(&cache.lock);
    for (int i = 0; i < n_evicted; i++)
        buffer_delete(evicted[i]);
    return old;
}

size_t fl_buffer_cache_max(void) { return atomic_load_explicit(&max_bytes, memory_order_relaxed); }

void fl_buffer_cache_stats(fl_buffer_stats *stats)
{
    fl_lock(&cache.lock);
    stats->max_bytes = atomic_load_explicit(&max_bytes, memory_order_relaxed);
    stats->cached_bytes = cache.cached_bytes;
    stats->cached_buffers = (size_t)cache.count;
    stats->hits = cache.hits;
    stats->misses = cache.misses;
    stats->evictions = cache.evictions;
    fl_unlock(&cache.lock);
}

/* ---- fork: the child must not inherit the lock held by a thread that does not exist there */

#if defined(_WIN32)
int fl_buffer_cache_init(void) { return 0; }
#else
static void before_fork(void) { fl_lock(&cache.lock); }
static void after_fork(void) { fl_unlock(&cache.lock); }

static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;
static int fork_handlers_status = 0;

static void register_fork_handlers(void)
{
    fork_handlers_status = pthread_atfork(before_fork, after_fork, after_fork);
}

int fl_buffer_cache_init(void)
{
    pthread_once(&fork_handlers_once, register_fork_handlers);
    return fork_handlers_status;
}
#endif
