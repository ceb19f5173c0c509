"""What the second derivatives cost (issue 15): softmax_cross_entropy and softmax_focal with
compute_hess=False and compute_hess=True, float32, "mean", preallocated out= / hess_out=.

    python scripts/bench_class_hessians.py [--threads N] [--budget SECONDS]

Rows per case (times are medians of repeats, ratios within this run only):
- copy floor: np.copyto of the logits (one read stream, one write stream);
- hess=False: the public call as users make it (the (N, C) fast paths);
- class-axis, no hess: the class-axis kernel that compute_hess=True runs, in its variant
  without the hessian (fastloss._class_losses; the same layout, one write stream less);
- hess=True: the public call with compute_hess=True (gradient and hessian in one pass).
The hessian adds one write stream: against the class-axis kernel without it, expect about
the cost of one more stream (the copy floor's write half) on arrays that stream from memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import fastloss
from fastloss import _class_losses


def timeit(fn, budget, min_repeats=7, max_repeats=200):
    fn()   # warm up: page faults, the buffer cache
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < budget
                                       and len(times) < max_repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="n_threads (default None)")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds per row")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"fastloss SIMD level: {fastloss.simd_level()}, n_threads={args.threads}, "
          f"load average before: {os.getloadavg()}")
    header = f"{'case':34s} {'row':22s} {'ms':>9s} {'/ copy':>7s} {'/ hess=False':>12s}"
    print(header)
    print("-" * len(header))
    for shape in [(16384, 1000), (4096, 100)]:
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        y = rng.integers(0, shape[1], shape[0])
        grad = np.empty_like(x)
        hess = np.empty_like(x)
        copy_target = np.empty_like(x)
        for name in ("softmax_cross_entropy", "softmax_focal"):
            public = getattr(fastloss, name)
            inner = getattr(_class_losses, name)
            extra = ({"weight": None, "ignore_index": -100, "label_smoothing": 0.0,
                      "sample_weight": None, "z_loss": 0.0, "logit_softcap": None,
                      "lse_out": None} if name == "softmax_cross_entropy" else
                     {"alpha": None, "gamma": 2.0, "ignore_index": -100, "sample_weight": None})
            plain = public(x, y, out=grad, n_threads=args.threads)
            both = public(x, y, out=grad, hess_out=hess, compute_hess=True,
                          n_threads=args.threads)
            assert abs(both.loss - plain.loss) <= 1e-5 * abs(plain.loss)   # checked before timing
            rows = [
                ("copy floor", lambda: np.copyto(copy_target, x)),
                ("hess=False", lambda: public(x, y, out=grad, n_threads=args.threads)),
                ("class-axis, no hess", lambda: inner(
                    x, y, reduction="mean", compute_grad=True, out=grad,
                    n_threads=args.threads, **extra)),
                ("hess=True", lambda: public(x, y, out=grad, hess_out=hess, compute_hess=True,
                                             n_threads=args.threads)),
            ]
            times = {label: timeit(fn, args.budget) for label, fn in rows}
            for label, _ in rows:
                t = times[label]
                print(f"{name + ' ' + str(shape):34s} {label:22s} {t * 1e3:9.3f} "
                      f"{t / times['copy floor']:7.2f} {t / times['hess=False']:12.2f}")
            print()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
