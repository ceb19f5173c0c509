"""Issue 16: softmax cross-entropy's plain path (class indices, no label smoothing, float32,
out=) in ns per element across class counts, in L2 (2^17 elements) and beyond (2^22), at
one thread (thread CPU time: little disturbed by other load), and the bare 4096 x 100 call
at 1 and 2 threads (wall time, microseconds). Best and median of 7 repeats.

    python scripts/bench_softmax_plain_c.py
"""
import time

import numpy as np

import fastloss


def bench(n, c, n_threads=1, reps=None):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    y = rng.integers(0, c, n)
    g = np.empty_like(x)
    clock = time.thread_time_ns if n_threads == 1 else time.perf_counter_ns
    reps = reps or max(5, int(3e7 // x.size))
    for _ in range(3):
        fastloss.softmax_cross_entropy(x, y, out=g, n_threads=n_threads)
    times = []
    for _ in range(7):
        t0 = clock()
        for _ in range(reps):
            fastloss.softmax_cross_entropy(x, y, out=g, n_threads=n_threads)
        times.append((clock() - t0) / reps)
    times.sort()
    return times[0], times[len(times) // 2]


def main():
    print(f"SIMD level {fastloss.simd_level()}; one thread, ns per element (best / median)")
    print(f"{'C':>5} {'in L2 (2^17)':>16} {'beyond (2^22)':>16}")
    for c in (32, 48, 64, 80, 100, 128):
        cells = []
        for total in (2 ** 17, 2 ** 22):
            n = total // c
            best, med = bench(n, c)
            cells.append(f"{best / (n * c):.3f} / {med / (n * c):.3f}")
        print(f"{c:>5} {cells[0]:>16} {cells[1]:>16}")
    for nt in (1, 2):
        best, med = bench(4096, 100, n_threads=nt, reps=200)
        print(f"4096 x 100, {nt} thread(s): {best / 1e3:.1f} / {med / 1e3:.1f} us")


if __name__ == "__main__":
    main()
