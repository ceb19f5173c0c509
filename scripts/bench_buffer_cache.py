#!/usr/bin/env python
"""The allocating call against out=, with and without the buffer cache (issue 18).

    python scripts/bench_buffer_cache.py [--threads 2] [--dtype float32] [--repeats 7]
    python scripts/bench_buffer_cache.py --sizes   # the cache's size threshold (see below)

Each case is called the way a training loop calls it: ``loss, grad = f(x, y)`` over and
over, the previous step's gradient alive until the call returns (so with the cache the loop
alternates between two buffers). Variants, interleaved round after round so that a change
in the machine's load hits them alike:

  out=             the gradient written into one preallocated array (the target speed)
  alloc, no cache  the default call with the cache off (set_buffer_cache(0)): NumPy's
                   allocator, i.e. fastloss before issue 18
  alloc, cache     the default call with the cache at its default cap
  copy floor       np.copyto of the input into a preallocated array (one thread)
  a+b floor        np.add(input, target, out=) (element-wise losses; one thread)

A round runs each variant for --calls calls after --warmup calls that are not timed; the
time of a variant is the median of all its timed calls. Ratios are against the copy floor
and against out= of the same run; only ratios within one run mean anything. The header
gives the SIMD level and the load average (other processes on the machine slow the
2-thread calls most of all).

--sizes times the default call at sizes around FL_BUFFER_MIN_BYTES with the cache off and
on (one thread, Huber, whose kernel is cheap so allocation shows), the measurement behind
that constant.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

import fastloss as fl
from fastloss import _kernels


def cases(dtype):
    rng = np.random.default_rng(0)
    n = 1 << 24
    out = []
    for rows, classes in ((16384, 1000), (2048, 32768)):
        x = rng.standard_normal((rows, classes), dtype=np.float32).astype(dtype, copy=False)
        y = rng.integers(0, classes, rows)
        out.append((f"softmax CE {rows}x{classes}", fl.softmax_cross_entropy, x, y, {}, False))
    x = rng.standard_normal(n, dtype=np.float32).astype(dtype, copy=False)
    t = (rng.random(n, dtype=np.float32) < 0.3).astype(dtype)
    out.append(("BCE with logits 2^24", fl.binary_cross_entropy_with_logits, x, t, {}, True))
    out.append(("sigmoid focal 2^24", fl.sigmoid_focal, x, t, {"alpha": 0.25, "gamma": 2.0},
                True))
    # the general-gamma passes (issue 18, part 3): hard targets, and soft ones
    out.append(("sigmoid focal 2^24 gamma=1.5", fl.sigmoid_focal, x, t,
                {"alpha": 0.25, "gamma": 1.5}, True))
    soft = rng.random(n, dtype=np.float32).astype(dtype)
    out.append(("sigmoid focal 2^24 gamma=1.5 soft", fl.sigmoid_focal, x, soft,
                {"alpha": 0.25, "gamma": 1.5}, True))
    return out


def timed_loop(step, calls, warmup):
    """Per-call seconds of `calls` calls of step() after `warmup` untimed ones."""
    times = []
    for index in range(warmup + calls):
        start = time.perf_counter()
        step()
        elapsed = time.perf_counter() - start
        if index >= warmup:
            times.append(elapsed)
    return times


def run_case(name, function, x, target, params, elementwise, args, default_cap):
    threads = args.threads
    grad_out = np.empty_like(x)
    copy_dst = np.empty_like(x)
    held = {}  # the loop's variables: the previous result stays alive during the next call

    def out_call():
        held["out"] = function(x, target, out=grad_out, n_threads=threads, **params)

    def alloc_call():
        held["alloc"] = function(x, target, n_threads=threads, **params)

    def copy_floor():
        np.copyto(copy_dst, x)

    def add_floor():
        np.add(x, target, out=copy_dst)

    variants = [("out=", out_call, None), ("alloc, no cache", alloc_call, 0),
                ("alloc, cache", alloc_call, default_cap), ("copy floor", copy_floor, None)]
    if elementwise:
        variants.append(("a+b floor", add_floor, None))
    # results first: identical with and without the cache, and equal to out=
    fl.set_buffer_cache(0)
    reference = function(x, target, n_threads=threads, **params)
    fl.set_buffer_cache(default_cap)
    for _ in range(2):
        cached = function(x, target, n_threads=threads, **params)
        assert cached.loss == reference.loss and np.array_equal(cached.grad, reference.grad)
    with_out = function(x, target, out=grad_out, n_threads=threads, **params)
    assert with_out.loss == reference.loss and np.array_equal(grad_out, reference.grad)
    del reference, cached, with_out
    samples = {label: [] for label, _, _ in variants}
    for _ in range(args.repeats):
        for label, step, cap in variants:
            fl.set_buffer_cache(default_cap if cap is None else cap)
            held.clear()
            samples[label] += timed_loop(step, args.calls, args.warmup)
    held.clear()
    fl.set_buffer_cache(default_cap)
    return {label: statistics.median(values) for label, values in samples.items()}


def threshold_sweep(args, default_cap):
    """The default call's time against its size, cache off / on (one thread, Huber)."""
    print("bytes of the gradient | alloc, no cache (us) | alloc, cache (us) | out= (us)")
    rng = np.random.default_rng(1)
    for size in (16 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20,
                 64 << 20):
        x = rng.standard_normal(size // 4, dtype=np.float32)
        t = rng.standard_normal(size // 4, dtype=np.float32)
        grad = np.empty_like(x)
        calls = max(20, min(2000, int(2e8 / size)))
        held = {}

        def alloc():
            held["r"] = fl.huber(x, t, n_threads=1)
        results = {}
        for label, step, cap in (("off", alloc, 0), ("on", alloc, default_cap),
                                 ("out", lambda: fl.huber(x, t, out=grad, n_threads=1),
                                  default_cap)):
            fl.set_buffer_cache(cap)
            held.clear()
            results[label] = statistics.median(timed_loop(step, calls, 5)) * 1e6
        print(f"{size:>21} | {results['off']:>20.2f} | {results['on']:>17.2f} | "
              f"{results['out']:>9.2f}")
    fl.set_buffer_cache(default_cap)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5, help="rounds over the variants")
    parser.add_argument("--calls", type=int, default=8, help="timed calls per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per round")
    parser.add_argument("--sizes", action="store_true", help="the threshold sweep instead")
    args = parser.parse_args(argv)
    default_cap = fl.set_buffer_cache(0)
    if default_cap == 0:
        default_cap = 1 << 30  # FASTLOSS_BUFFER_CACHE=0 in the environment: "after" is 1 GiB
    fl.set_buffer_cache(default_cap)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"fastloss {fl.__version__}, SIMD {fl.simd_level()}, {args.threads} threads, "
          f"{args.dtype}, cache cap {default_cap >> 20} MiB, load average {load:.2f} "
          f"(at start), {os.cpu_count()} CPUs")
    if args.sizes:
        threshold_sweep(args, default_cap)
        return 0
    dtype = np.dtype(args.dtype)
    print()
    print("| case | out= | alloc, no cache (before) | alloc, cache (after) | after / out= |"
          " copy floor | a+b floor |")
    print("|---|---|---|---|---|---|---|")
    for name, function, x, target, params, elementwise in cases(dtype):
        result = run_case(name, function, x, target, params, elementwise, args, default_cap)
        floor = result["copy floor"]

        def cell(label):
            return f"{result[label] * 1e3:.2f} ms ({result[label] / floor:.2f}x)"
        add = cell("a+b floor") if elementwise else "-"
        print(f"| {name} | {cell('out=')} | {cell('alloc, no cache')} | "
              f"{cell('alloc, cache')} | {result['alloc, cache'] / result['out=']:.2f} | "
              f"{floor * 1e3:.2f} ms | {add} |", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n(x): time / copy floor. Load average at the end {load:.2f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
