"""Time multi_margin (p=2) and kl_divergence_with_logits with compute_hess False and True
(issue 15), at (16384, 1000) float32 by default, gradient (and hessian) into preallocated
arrays, on all threads; against the floors np.copyto (one array read, one written) and
np.add (two read, one written). Medians of repeats; machine, SIMD level and load average in
the header. ``--compare-build DIR`` also times the compute_hess=False calls of another
fastloss build (a source tree built in place, e.g. main before the change) in a subprocess,
alternating with this one, for an old-against-new column.

    python scripts/bench_margin_distill.py
    python scripts/bench_margin_distill.py --compare-build /tmp/fastloss-main
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def median_ms(call, repeats: int) -> float:
    call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return 1e3 * statistics.median(samples)


def make_inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    other = {"multi_margin": rng.integers(0, shape[1], shape[0]),
             "kl_divergence_with_logits": (rng.standard_normal(shape) * 2).astype(np.float32)}
    return x, other


def plain_calls(fl, shape, n_threads):
    """The compute_hess=False calls (the ones an old build also has)."""
    x, other = make_inputs(shape)
    grad = np.empty_like(x)
    return {
        "multi_margin": lambda: fl.multi_margin(x, other["multi_margin"], p=2, out=grad,
                                                n_threads=n_threads),
        "kl_divergence_with_logits": lambda: fl.kl_divergence_with_logits(
            x, other["kl_divergence_with_logits"], temperature=2.0, out=grad,
            n_threads=n_threads),
    }


def worker(shape, repeats, n_threads):
    """Time the plain calls of the fastloss on sys.path; print JSON."""
    import fastloss as fl
    calls = plain_calls(fl, shape, n_threads)
    print(json.dumps({name: median_ms(call, repeats) for name, call in calls.items()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds (medians of the rounds' medians)")
    parser.add_argument("--n-threads", type=int, default=None)
    parser.add_argument("--compare-build", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (args.rows, args.classes)
    if args.worker:
        worker(shape, args.repeats, args.n_threads)
        return

    import fastloss as fl
    x, other = make_inputs(shape)
    grad, hess, a, b = (np.empty_like(x) for _ in range(4))
    t = other["kl_divergence_with_logits"]
    y = other["multi_margin"]
    nt = args.n_threads
    timings = {}
    calls = {
        ("floor", "copy (1 read, 1 written)"): lambda: np.copyto(a, x),
        ("floor", "a + b (2 read, 1 written)"): lambda: np.add(x, t, out=a),
        ("floor", "copy x2 (1 read, 2 written)"): lambda: (np.copyto(a, x), np.copyto(b, x)),
        ("multi_margin", False): lambda: fl.multi_margin(x, y, p=2, out=grad, n_threads=nt),
        ("multi_margin", True): lambda: fl.multi_margin(x, y, p=2, out=grad, compute_hess=True,
                                                        hess_out=hess, n_threads=nt),
        ("kl_divergence_with_logits", False): lambda: fl.kl_divergence_with_logits(
            x, t, temperature=2.0, out=grad, n_threads=nt),
        ("kl_divergence_with_logits", True): lambda: fl.kl_divergence_with_logits(
            x, t, temperature=2.0, out=grad, compute_hess=True, hess_out=hess, n_threads=nt),
    }
    old = {}
    for _ in range(args.rounds):
        for key, call in calls.items():
            timings.setdefault(key, []).append(median_ms(call, args.repeats))
        if args.compare_build:
            env = dict(os.environ, PYTHONPATH=args.compare_build)
            extra = ["--n-threads", str(nt)] if nt else []
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                                  "--rows", str(args.rows), "--classes", str(args.classes),
                                  "--repeats", str(args.repeats)] + extra, env=env, check=True,
                                 capture_output=True, text=True, cwd="/").stdout
            for name, ms in json.loads(out.splitlines()[-1]).items():
                old.setdefault(name, []).append(ms)

    ms = {key: statistics.median(values) for key, values in timings.items()}
    load = os.getloadavg()
    print(f"# simd={fl.simd_level()} cpus={os.cpu_count()} shape={shape} float32, "
          f"n_threads={nt}, medians of {args.rounds} rounds x {args.repeats}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    floor_copy = ms[("floor", "copy (1 read, 1 written)")]
    floor_add = ms[("floor", "a + b (2 read, 1 written)")]
    print(f"| call | ms | / copy floor | / a+b floor |" + (" old build ms |" if old else ""))
    print("|---|---|---|---|" + ("---|" if old else ""))
    for key, value in ms.items():
        name = key[1] if key[0] == "floor" else f"{key[0]} compute_hess={key[1]}"
        row = f"| {name} | {value:.2f} | {value / floor_copy:.2f} | {value / floor_add:.2f} |"
        if old:
            row += (f" {statistics.median(old[key[0]]):.2f} |"
                    if key[0] in old and key[1] is False else " |")
        print(row)
    for name in ("multi_margin", "kl_divergence_with_logits"):
        print(f"# {name}: compute_hess=True / False = "
              f"{ms[(name, True)] / ms[(name, False)]:.2f}"
              + (f"; new / old build (compute_hess=False) = "
                 f"{ms[(name, False)] / statistics.median(old[name]):.2f}" if old else ""))


if __name__ == "__main__":
    main()
