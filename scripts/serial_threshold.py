"""Measure where running a call on two threads starts to pay: the serial threshold.

    python scripts/serial_threshold.py [--dtype float32] [--threads 2] [--repeats 41]

Below ``fastloss._kernels.SERIAL_THRESHOLD_ELEMENTS`` elements a call runs on the calling
thread without entering an OpenMP parallel region, whatever ``n_threads`` says. This script
lowers the threshold to 0 (so every size with two or more blocks runs in parallel), times
each loss at sizes around the block size with ``n_threads=1`` and with ``n_threads=N``, and
prints, per loss, parallel time / serial time and the smallest size from which the parallel
call is faster at that size and every larger one.

Two situations are timed, interleaved so that drift hits both alike:
- hot: calls back to back (the worker threads are still spinning from the last region);
- cold: 5 ms of sleep before each call (the workers have gone to sleep, as in a training
  loop that does other work between loss calls), each call timed alone.
Medians of ``--repeats``; element-wise losses at (n,), class losses at (n / C, C), C = 100.
The README's "Threads" section records the result this script gave and the threshold chosen.
"""
import argparse
import statistics
import sys
import time

import numpy as np

import fastloss
from fastloss import _kernels, bench

SIZES = (16384, 24576, 32768, 49152, 65536, 98304, 131072, 196608, 262144, 393216, 524288)
CLASSES = 100


def _call(entry, x, target, out, n_threads):
    kernel = entry.resolve_kernel()
    params = dict(entry.params)
    return lambda: kernel(x, target, out=out, n_threads=n_threads, **params)


def _time_hot(fn, repeats):
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(10):
            fn()
        samples.append((time.perf_counter() - start) / 10)
    return samples


def _time_cold(fn, repeats):
    samples = []
    for _ in range(repeats):
        time.sleep(0.005)
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def measure(entry, n_elements, dtype, threads, repeats):
    size = bench.Size(str(n_elements), shape=None if entry.elementwise
                      else (max(1, n_elements // CLASSES), CLASSES),
                      n_elements=n_elements)
    case = bench.make_case(entry, size, dtype)
    out = np.empty_like(case.x)
    serial = _call(entry, case.x, case.target, out, 1)
    parallel = _call(entry, case.x, case.target, out, threads)
    serial(), parallel()   # warm
    result = {}
    for mode, timer in (("hot", _time_hot), ("cold", _time_cold)):
        s, p = [], []
        for _ in range(3):   # interleaved rounds
            s += timer(serial, repeats // 3 + 1)
            p += timer(parallel, repeats // 3 + 1)
        result[mode] = (statistics.median(s), statistics.median(p))
    return case.x.size, result


def crossover(sizes, ratios):
    """The smallest size from which every ratio (parallel / serial) is below 1, or None."""
    best = None
    for size, ratio in reversed(list(zip(sizes, ratios))):
        if ratio >= 1.0:
            break
        best = size
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--losses", default=",".join(bench.LOSSES))
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype)
    print(f"fastloss {fastloss.__version__}, SIMD {fastloss.simd_level()}, {args.dtype}, "
          f"1 vs {args.threads} threads, block {_kernels.BLOCK_SIZE_ELEMENTS} elements, "
          f"medians of {args.repeats}; machine: {bench._cpu_model()}, "
          f"load average {bench._load_average()}")
    previous = _kernels._set_serial_threshold(0)
    summary = []
    try:
        for name in args.losses.split(","):
            entry = bench.LOSSES[name]
            print(f"\n{name}\n{'elements':>9} | {'hot 1 thr':>9} {'hot par':>9} {'ratio':>6} |"
                  f" {'cold 1 thr':>10} {'cold par':>9} {'ratio':>6}")
            sizes, hot, cold = [], [], []
            for n in SIZES:
                elements, r = measure(entry, n, dtype, args.threads, args.repeats)
                (hs, hp), (cs, cp) = r["hot"], r["cold"]
                sizes.append(elements)
                hot.append(hp / hs)
                cold.append(cp / cs)
                print(f"{elements:>9} | {hs * 1e6:>7.1f}us {hp * 1e6:>7.1f}us {hp / hs:>6.2f} |"
                      f" {cs * 1e6:>8.1f}us {cp * 1e6:>7.1f}us {cp / cs:>6.2f}", flush=True)
            summary.append((name, crossover(sizes, hot), crossover(sizes, cold)))
    finally:
        _kernels._set_serial_threshold(previous)
    print("\nparallel faster from (elements): loss, hot, cold")
    for name, h, c in summary:
        print(f"  {name:34} {h}  {c}")
    print(f"current threshold: {previous}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
