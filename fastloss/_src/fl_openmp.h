/*
 * fl_openmp.h -- OpenMP queries that compile with or without OpenMP, so a build on a
 * compiler without it still works (serially) and can say so.
 */
#ifndef FASTLOSS_FL_OPENMP_H
#define FASTLOSS_FL_OPENMP_H

#if defined(__linux__)
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#endif
#include <unistd.h>

/* CPUs this process may run on now (its affinity mask; it can change at run time, and
 * OpenMP reads it only once, at start-up). */
static inline int fl_affinity_cpus(void)
{
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
#endif
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

#ifdef _OPENMP
#include <omp.h>
static inline int fl_openmp_enabled(void) { return 1; }
/* honours OMP_NUM_THREADS, omp_set_num_threads() and so threadpoolctl's limits */
static inline int fl_openmp_max_threads(void) { return omp_get_max_threads(); }
/* the calling thread's number in its team (0 outside a parallel region) */
static inline int fl_thread_num(void) { return omp_get_thread_num(); }
#else
static inline int fl_openmp_enabled(void) { return 0; }
static inline int fl_openmp_max_threads(void) { return 1; }
static inline int fl_thread_num(void) { return 0; }
#endif

#endif /* FASTLOSS_FL_OPENMP_H */
