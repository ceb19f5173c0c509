"""One-thread CPU time of the row pair losses with ordinary and with streamed gradient stores
(issue 14, fastloss/_src/fl_stream.inc and fl_pairs.inc), in one process:

    python scripts/bench_pairs_streaming.py [--n 65536] [--d 128] [--repeats 15] [--rounds 3]

float32 (N, D) inputs, gradients into out= buffers that start on a 64-byte boundary and 16
bytes past one (as NumPy's large allocations do); the streamed column forces the streaming path
(threshold 0), the ordinary one turns it off. CPU time of the calling thread (time.thread_time,
n_threads=1), best and median of `repeats` calls, the best of `rounds` interleaved rounds: it
is much less disturbed by other processes than wall time (shared/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import fastloss
from fastloss import _kernels


def _out(shape, offset_bytes):
    size = int(np.prod(shape))
    buffer = np.empty(size + 64, np.float32)
    start = (-buffer.ctypes.data % 64 + offset_bytes) // 4
    return buffer[start:start + size].reshape(shape)


def _cpu_times(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return min(times), statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=65536)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    n, d = args.n, args.d
    rng = np.random.default_rng(0)
    a, p, q = (rng.standard_normal((n, d)).astype(np.float32) for _ in range(3))
    y = rng.choice([-1.0, 1.0], n).astype(np.float32)
    t01 = (y > 0).astype(np.float32)
    cases = {
        "triplet_margin": (lambda out: fastloss.triplet_margin(a, p, q, out=out, n_threads=1), 3),
        "contrastive": (lambda out: fastloss.contrastive(a, p, t01, out=out, n_threads=1), 2),
        "cosine_embedding": (lambda out: fastloss.cosine_embedding(a, p, y, out=out,
                                                                   n_threads=1), 2),
    }
    print(f"# pair losses, float32 {n}x{d}, 1 thread CPU time, SIMD {fastloss.simd_level()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    results = {}
    for _ in range(args.rounds):
        for name, (fn, count) in cases.items():
            for offset in (0, 16):
                outs = tuple(_out((n, d), offset) for _ in range(count))
                for mode, threshold in (("ordinary", 2 ** 62), ("streamed", 0)):
                    previous = _kernels._set_stream_threshold(threshold)
                    try:
                        best, median = _cpu_times(lambda: fn(outs), args.repeats)
                    finally:
                        _kernels._set_stream_threshold(previous)
                    key = (name, offset, mode)
                    old = results.get(key, (float("inf"), float("inf")))
                    results[key] = (min(old[0], best), min(old[1], median))
    print()
    print("| loss | out= offset from 64 B | ordinary best / median | streamed best / median "
          "| streamed / ordinary (best) |")
    print("|---|---:|---:|---:|---:|")
    for name in cases:
        for offset in (0, 16):
            ob, om = results[(name, offset, "ordinary")]
            sb, sm = results[(name, offset, "streamed")]
            print(f"| {name} | {offset} B | {ob * 1e3:.2f} / {om * 1e3:.2f} ms | "
                  f"{sb * 1e3:.2f} / {sm * 1e3:.2f} ms | {sb / ob:.2f} |")
    print(f"\nload average after the run: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
