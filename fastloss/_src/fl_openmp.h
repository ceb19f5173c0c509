/*
 * fl_openmp.h -- OpenMP queries that compile with or without OpenMP, so a build on a
 * compiler without it still works (serially) and can say so.
 */
#ifndef FASTLOSS_FL_OPENMP_H
#define FASTLOSS_FL_OPENMP_H

#ifdef _OPENMP
#include <omp.h>
static inline int fl_openmp_enabled(void) { return 1; }
/* honours OMP_NUM_THREADS, omp_set_num_threads() and so threadpoolctl's limits */
static inline int fl_openmp_max_threads(void) { return omp_get_max_threads(); }
#else
static inline int fl_openmp_enabled(void) { return 0; }
static inline int fl_openmp_max_threads(void) { return 1; }
#endif

#endif /* FASTLOSS_FL_OPENMP_H */
