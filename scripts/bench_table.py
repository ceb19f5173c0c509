"""Time every loss of the loss table against the memory floors, in one process.

For each element-wise loss (fastloss/_table.py) and the penalties: the gradient into a
preallocated ``out=`` at 2**24 float32 elements (``--elements``) on all threads, against
the three-stream floor ``np.add(input, target, out=grad)`` (the penalties against
``np.copyto``), the forward+backward of the same loss in torch eager (where installed), and a
tiny call (8 elements, ``out=``). Medians of repeats; the machine, SIMD level and load
average in the header. ``--compare-build DIR`` also times the losses of another fastloss
build (a source tree built in place, e.g. the commit before a change) in a subprocess,
alternating with this one, for old-against-new tables.

    python scripts/bench_table.py
    python scripts/bench_table.py --losses huber,sigmoid_focal --compare-build /path/to/old
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


def median_time(call, repeats: int, min_seconds: float = 0.0) -> float:
    """Median seconds per call over `repeats` samples (calls batched to >= min_seconds)."""
    call()
    start = time.perf_counter()
    call()
    once = time.perf_counter() - start
    batch = max(1, int(min_seconds / once)) if once > 0 else 1000
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batch):
            call()
        samples.append((time.perf_counter() - start) / batch)
    return statistics.median(samples)


def inputs(row, n, dtype, rng):
    kind = row.input_kind
    if kind == "probability":
        x = rng.uniform(0.02, 0.98, n)
    elif kind == "log_probability":
        x = np.log(rng.uniform(0.02, 1.0, n))
    else:
        x = rng.standard_normal(n)
    tk = row.target_kind
    if tk in ("binary",):
        t = (rng.random(n) < 0.3) * 1.0
    elif tk in ("soft", "probability"):
        t = rng.random(n)
    elif tk == "sign":
        t = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    elif tk == "count":
        t = rng.poisson(1.5, n) * 1.0
    else:
        t = rng.standard_normal(n)
    return x.astype(dtype), t.astype(dtype)


TORCH = {
    "mse": "F.mse_loss(x, t)", "mae": "F.l1_loss(x, t)", "huber": "F.huber_loss(x, t)",
    "smooth_l1": "F.smooth_l1_loss(x, t)",
    "binary_cross_entropy_with_logits": "F.binary_cross_entropy_with_logits(x, t)",
    "poisson_nll": "F.poisson_nll_loss(x, t)", "soft_margin": "F.soft_margin_loss(x, t)",
    "binary_cross_entropy": "F.binary_cross_entropy(x, t)", "kl_div": "F.kl_div(x, t)",
    "pinball": "torch.where(t - x >= 0, 0.5 * (t - x), -0.5 * (t - x)).mean()",
    "log_cosh": "(torch.logaddexp(x - t, t - x) - 0.6931471805599453).mean()",
    "tweedie": "(-t * torch.exp(-0.5 * x) / -0.5 + torch.exp(0.5 * x) / 0.5).mean()",
    "hinge": "F.relu(1 - t * x).mean()", "squared_hinge": "(F.relu(1 - t * x) ** 2).mean()",
    "sigmoid_focal": None,
}


def _table():
    """This checkout's loss table, read from its file (an older build being compared may not
    have one; its losses are rows here too)."""
    import runpy
    return runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                       "fastloss", "_table.py"))


def measure(names, n, repeats, with_torch):
    import fastloss
    ELEMENTWISE_BY_NAME = _table()["ELEMENTWISE_BY_NAME"]

    rng = np.random.default_rng(0)
    results = {}
    torch = F = None
    if with_torch:
        try:
            import torch
            import torch.nn.functional as F
        except ImportError:
            torch = None
    for name in names:
        if name in ("l1_penalty", "l2_penalty"):
            w = rng.standard_normal(n).astype(np.float32)
            g = np.empty_like(w)
            function = getattr(fastloss, name)
            row = {"fastloss": median_time(lambda: function(w, strength=1e-3, out=g), repeats),
                   "floor": median_time(lambda: np.copyto(g, w), repeats)}
            tiny_w, tiny_g = w[:8].copy(), g[:8].copy()
            row["tiny"] = median_time(lambda: function(tiny_w, strength=1e-3, out=tiny_g), 15, 0.02)
            results[name] = row
            continue
        if not hasattr(fastloss, name):
            continue
        spec = ELEMENTWISE_BY_NAME[name]
        x, t = inputs(spec, n, np.float32, rng)
        g = np.empty_like(x)
        function = getattr(fastloss, name)
        row = {"fastloss": median_time(lambda: function(x, t, out=g), repeats),
               "floor": median_time(lambda: np.add(x, t, out=g), repeats)}
        tx, tt, tg = x[:8].copy(), t[:8].copy(), g[:8].copy()
        row["tiny"] = median_time(lambda: function(tx, tt, out=tg), 15, 0.02)
        if torch is not None and TORCH.get(name):
            xt = torch.from_numpy(x.copy()).requires_grad_(True)
            tt_ = torch.from_numpy(t)
            expression = compile(TORCH[name], "<torch>", "eval")

            def torch_call():
                xt.grad = None
                loss = eval(expression, {"F": F, "torch": torch, "x": xt, "t": tt_})
                loss.backward()
            row["torch"] = median_time(torch_call, max(3, repeats // 2))
        results[name] = row
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--losses", default="")
    parser.add_argument("--elements", type=int, default=1 << 24)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--compare-build", default="")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        names = args.losses.split(",")
        print(json.dumps(measure(names, args.elements, args.repeats, False)))
        return 0
    import fastloss
    ELEMENTWISE = _table()["ELEMENTWISE"]

    names = args.losses.split(",") if args.losses else [r.name for r in ELEMENTWISE] + [
        "l1_penalty", "l2_penalty"]
    load = os.getloadavg()[0]
    print(f"# fastloss {fastloss.__version__}, SIMD {fastloss.simd_level()}, "
          f"{fastloss._kernels.default_n_threads()} threads, {args.elements} float32 elements, "
          f"load average {load:.2f}")
    if args.compare_build:
        rows = {}
        for round_ in range(args.rounds):
            for label, path in (("old", args.compare_build), ("new", os.getcwd())):
                env = dict(os.environ, PYTHONPATH=path)
                output = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--worker", "--losses", ",".join(names),
                     "--elements", str(args.elements), "--repeats", str(args.repeats)],
                    env=env, capture_output=True, text=True, cwd=path, check=True).stdout
                for name, row in json.loads(output.splitlines()[-1]).items():
                    rows.setdefault(name, {}).setdefault(label, []).append(row["fastloss"])
                    rows[name].setdefault(label + " tiny", []).append(row["tiny"])
        print("\n| loss | old (ms) | new (ms) | new/old | tiny old (us) | tiny new (us) |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, row in rows.items():
            old, new = min(row["old"]), min(row["new"])
            print(f"| {name} | {old * 1e3:.2f} | {new * 1e3:.2f} | {new / old:.2f} | "
                  f"{min(row['old tiny']) * 1e6:.2f} | {min(row['new tiny']) * 1e6:.2f} |")
        return 0
    results = measure(names, args.elements, args.repeats, not args.no_torch)
    print("\n| loss | fastloss (ms) | floor (ms) | /floor | torch eager (ms) | x torch | tiny, out= (us) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in results.items():
        torch_ms = f"{row['torch'] * 1e3:.2f}" if "torch" in row else ""
        speedup = f"{row['torch'] / row['fastloss']:.1f}" if "torch" in row else ""
        print(f"| {name} | {row['fastloss'] * 1e3:.2f} | {row['floor'] * 1e3:.2f} | "
              f"{row['fastloss'] / row['floor']:.2f} | {torch_ms} | {speedup} | "
              f"{row['tiny'] * 1e6:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
