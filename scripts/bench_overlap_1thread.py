"""Dice / Tversky with softmax at (8, 21, 128, 128): one-thread CPU time, builds alternated.

    python scripts/bench_overlap_1thread.py [--rounds 5] [--calls 30] [BUILD_DIR ...]

On a shared 2-core machine two-thread wall times measure the other tenants; the kernel's
own cost is better seen in one thread's CPU time (time.thread_time). Each round runs every
build (a directory with an importable fastloss: a worktree built in place; none given: the
fastloss this Python imports) in a fresh process, one after the other, and prints each
case's median and minimum over --calls calls (out=, float32). Cases: one-hot float targets
(MONAI's form), class-index targets, soft targets.
"""
import argparse
import os
import subprocess
import sys

CHILD = r"""
import statistics, sys, time
import numpy as np
import fastloss
from fastloss.bench.cases import one_hot_inputs
rng = np.random.default_rng(0)
shape = (8, 21, 128, 128)
x, onehot = one_hot_inputs(shape, np.float32, rng).arrays
labels = onehot.argmax(1)
soft = rng.uniform(0, 1, shape).astype(np.float32)
out = np.empty_like(x)
calls = int(sys.argv[1])
for kind in ("dice", "tversky"):
    fn = getattr(fastloss, kind)
    for name, t in (("one-hot", onehot), ("index", labels), ("soft", soft)):
        if kind == "tversky" and name != "one-hot":
            continue
        fn(x, t, activation="softmax", out=out, n_threads=1)
        ts = []
        for _ in range(calls):
            t0 = time.thread_time()
            fn(x, t, activation="softmax", out=out, n_threads=1)
            ts.append(time.thread_time() - t0)
        print(f"{kind} {name} {statistics.median(ts) * 1e3:.3f} {min(ts) * 1e3:.3f}",
              flush=True)
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("builds", nargs="*")
    args = parser.parse_args(argv)
    builds = args.builds or [""]
    print(f"# one thread, thread CPU time, medians (min) of {args.calls} calls, ms; load "
          f"{os.getloadavg()[0]:.1f}")
    for r in range(args.rounds):
        for b in builds:
            env = dict(os.environ)
            if b:
                env["PYTHONPATH"] = os.path.abspath(b)
            res = subprocess.run([sys.executable, "-c", CHILD, str(args.calls)], env=env,
                                 capture_output=True, text=True, check=True, cwd="/")
            cells = [f"{k} {n} {med} ({mn})" for k, n, med, mn in
                     (line.split() for line in res.stdout.splitlines())]
            print(f"round {r} {b or 'installed'}: " + "; ".join(cells), flush=True)
    print(f"# load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
