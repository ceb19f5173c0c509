"""Benchmark of the set and pair losses (issue 14): fastloss against the memory floor,
MONAI (or MONAI's formulas in eager torch) and torch eager / torch.compile.

    python scripts/bench_sets_pairs.py [--threads 1,2] [--repeats 15] [--no-compile] [--quick]
        [--only all|overlap|softmax|pairs]

float32, medians of `repeats` timed calls after a warm-up, every implementation in this
process. The floors are NumPy on one thread: for the overlap losses c = a + b over the input's
size (input and target read, gradient written); for triplet_margin three np.copyto (three
inputs read, three gradients written). Prints a markdown table per thread count (with
fastloss's best time per element and core: the one-thread column is the kernel's own cost,
little disturbed by other processes); ratios mean something only within one run (see
shared/PERFORMANCE.md). On a 2-core machine with another busy process, a 2-thread call of
~1 ms runs at about its one-thread speed (the second thread is woken late and finds no block
left), so compare 2-thread rows only from a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


BEST = {}   # fn's best time, beside the median (on a loaded machine the median includes
            # the scheduler's preemptions; the best shows the kernel's own speed)


def median_time(fn, repeats, key=None):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    if key is not None:
        BEST[key] = min(times)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="2",
                        help="comma-separated thread counts, one table each (default 2)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--only", choices=("all", "overlap", "softmax", "pairs"), default="all",
                        help="overlap: only the dice/tversky rows; softmax: only their softmax "
                             "rows (8, 21, 128, 128); pairs: only the pair losses' rows")
    parser.add_argument("--pairs-only", action="store_true", help="the same as --only pairs")
    args = parser.parse_args(argv)
    if args.pairs_only:
        args.only = "pairs"
    thread_counts = [int(v) for v in str(args.threads).split(",")]
    for threads in thread_counts:
        args.threads = threads
        run_table(args)


def torch_time(args, loss_fn, tensors):
    def step():
        for t in tensors:
            t.grad = None
        loss_fn(*tensors).backward()
    return median_time(step, args.repeats)


def compiled_time(args, loss_fn, tensors):
    import torch

    if args.no_compile:
        return None
    try:
        torch._dynamo.reset()   # inductor bakes the thread count into its code
        compiled = torch.compile(loss_fn, dynamic=False)
        return torch_time(args, compiled, tensors)
    except Exception as error:  # no compiler toolchain: leave the column empty
        print(f"  torch.compile failed: {type(error).__name__}: {error}")
        return None


def run_table(args):
    import torch

    import fastloss

    torch.set_num_threads(args.threads)
    try:
        from monai.losses import DiceLoss, TverskyLoss
    except ImportError:
        DiceLoss = TverskyLoss = None
    rng = np.random.default_rng(0)
    rows = []
    print(f"# fastloss sets and pairs, float32, {args.threads} threads, SIMD "
          f"{fastloss.simd_level()}, load average {os.getloadavg()[0]:.2f}")

    # ------------------------------------------------------------------ overlap losses
    def overlap_rows(kind, activation, shape):
        n, c = shape[:2]
        x = rng.standard_normal(shape).astype(np.float32)
        index = rng.integers(0, c, (n,) + shape[2:])
        target = np.moveaxis(np.eye(c, dtype=np.float32)[index], -1, 1).copy()
        out = np.empty_like(x)
        fn = getattr(fastloss, kind)
        check = fn(x, target, activation=activation)
        t_out = median_time(lambda: fn(x, target, activation=activation, out=out,
                                       n_threads=args.threads), args.repeats,
                            key=f"{kind} {activation}")
        t_alloc = median_time(lambda: fn(x, target, activation=activation,
                                         n_threads=args.threads), args.repeats)
        a, b, c_ = x.copy(), target.copy(), np.empty_like(x)
        t_floor = median_time(lambda: np.add(a, b, out=c_), args.repeats,
                              key=f"floor {kind} {activation}")
        xt = torch.tensor(x, requires_grad=True)
        tt = torch.tensor(target)
        kw = dict(sigmoid=activation == "sigmoid", softmax=activation == "softmax")
        if DiceLoss is not None:
            module = TverskyLoss(**kw) if kind == "tversky" else DiceLoss(**kw)
            peer_name = "MONAI"
        else:
            def module(p, t):   # MONAI's formulas in eager torch
                p = torch.sigmoid(p) if activation == "sigmoid" else torch.softmax(p, 1)
                tp = (p * t).sum((2, 3))
                if kind == "tversky":
                    den = tp + 0.5 * (p * (1 - t)).sum((2, 3)) + 0.5 * ((1 - p) * t).sum((2, 3))
                    return (1 - (tp + 1e-5) / (den + 1e-5)).mean()
                return (1 - (2 * tp + 1e-5) / (p.sum((2, 3)) + t.sum((2, 3)) + 1e-5)).mean()
            peer_name = "torch eager (MONAI's formulas)"
        peer_loss = module(xt, tt).item()
        assert abs(peer_loss - check.loss) < 1e-4 * max(1, abs(peer_loss)), (peer_loss, check.loss)
        t_peer = torch_time(args, lambda p: module(p, tt), [xt])
        rows.append((f"{kind} {activation}", "x".join(map(str, shape)), t_out, t_alloc, t_floor,
                     peer_name, t_peer, None, x.size))

    big = not args.quick
    if args.only in ("all", "overlap"):
        for kind in ("dice", "tversky"):
            overlap_rows(kind, "sigmoid", (8, 4, 256, 256) if big else (2, 4, 64, 64))
    if args.only != "pairs":
        for kind in ("dice", "tversky"):
            overlap_rows(kind, "softmax", (8, 21, 128, 128) if big else (2, 21, 32, 32))
    ordinary = {}
    if args.only in ("all", "pairs"):
        pair_rows(args, rows, rng, ordinary)
    print_table(args, rows, ordinary)


def pair_rows(args, rows, rng, ordinary):
    import torch
    import torch.nn.functional as F

    import fastloss

    big = not args.quick

    # ------------------------------------------------------------------ pair losses
    n, d = (65536, 128) if big else (4096, 128)
    a, p, q = (rng.standard_normal((n, d)).astype(np.float32) for _ in range(3))
    y = rng.choice([-1.0, 1.0], n).astype(np.float32)
    t01 = (y > 0).astype(np.float32)
    outs3 = tuple(np.empty_like(a) for _ in range(3))
    copies = [(np.empty_like(a), v.copy()) for v in (a, p, q)]

    def triplet_floor():
        for dst, src in copies:
            np.copyto(dst, src)

    t_floor3 = median_time(triplet_floor, args.repeats, key="floor triplet_margin")
    t_floor2 = median_time(lambda: [np.copyto(dst, src) for dst, src in copies[:2]],
                           args.repeats, key="floor contrastive")
    x1r, x2r = rng.standard_normal((2, n * 32)).astype(np.float32)
    yr = rng.choice([-1.0, 1.0], n * 32).astype(np.float32)
    outs_r = (np.empty_like(x1r), np.empty_like(x2r))
    ar, br, cr = x1r.copy(), x2r.copy(), np.empty_like(x1r)
    t_floor_r = median_time(lambda: np.add(ar, br, out=cr), args.repeats,
                            key="floor margin_ranking")

    def contrastive_torch(u, v, t=torch.tensor(t01)):
        dist = F.pairwise_distance(u, v)
        return (t * dist ** 2 + (1 - t) * torch.clamp(1.0 - dist, min=0) ** 2).mean()

    pair_cases = [
        ("triplet_margin", f"{n}x{d}", lambda **k: fastloss.triplet_margin(a, p, q, **k), outs3,
         t_floor3, "read 3, write 3",
         lambda u, v, w: F.triplet_margin_loss(u, v, w), (a, p, q)),
        ("contrastive", f"{n}x{d}", lambda **k: fastloss.contrastive(a, p, t01, **k), outs3[:2],
         t_floor2, "read 2, write 2", contrastive_torch, (a, p)),
        ("cosine_embedding", f"{n}x{d}", lambda **k: fastloss.cosine_embedding(a, p, y, **k),
         outs3[:2], t_floor2, "read 2, write 2",
         lambda u, v, t=torch.tensor(y): F.cosine_embedding_loss(u, v, t), (a, p)),
        ("margin_ranking", f"{n * 32}", lambda **k: fastloss.margin_ranking(x1r, x2r, yr, **k),
         outs_r, t_floor_r, "c = a + b",
         lambda u, v, t=torch.tensor(yr): F.margin_ranking_loss(u, v, t), (x1r, x2r)),
    ]
    for name, shape, call, outs, t_floor, floor_name, torch_fn, inputs in pair_cases:
        t_out = median_time(lambda: call(out=outs, n_threads=args.threads), args.repeats,
                            key=name)
        t_alloc = median_time(lambda: call(n_threads=args.threads), args.repeats)
        if name != "margin_ranking":   # the row losses' streaming stores off (fl_pairs.inc)
            previous = fastloss._kernels._set_stream_threshold(2 ** 62)
            try:
                ordinary[name] = median_time(lambda: call(out=outs, n_threads=args.threads),
                                             args.repeats)
            finally:
                fastloss._kernels._set_stream_threshold(previous)
        tensors = [torch.tensor(v, requires_grad=True) for v in inputs]
        ours = call().loss
        theirs = torch_fn(*tensors).item()
        assert abs(ours - theirs) < 1e-4 * max(1.0, abs(theirs)), (name, ours, theirs)
        t_eager = torch_time(args, torch_fn, tensors)
        t_compile = compiled_time(args, torch_fn, tensors)
        rows.append((name, shape, t_out, t_alloc, t_floor, "torch eager", t_eager, t_compile,
                     inputs[0].size))


def print_table(args, rows, ordinary):
    print()
    print("| loss | shape | fastloss out= | allocating | floor | /floor | best out= / best floor "
          "| best ns/element/core | peer | peer time | x peer | torch.compile | x compile |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    floor_keys = {"cosine_embedding": "floor contrastive"}
    for row in rows:
        name, shape, t_out, t_alloc, t_floor, peer, t_peer, t_compile, n_elements = row
        compile_cells = (f"{t_compile * 1e3:.2f} ms | {t_compile / t_out:.1f}"
                         if t_compile else " | ")
        best = BEST[name] / BEST[floor_keys.get(name, "floor " + name)]
        print(f"| {name} | {shape} | {t_out * 1e3:.2f} ms | {t_alloc * 1e3:.2f} ms | "
              f"{t_floor * 1e3:.2f} ms | {t_out / t_floor:.2f} | {best:.2f} | "
              f"{BEST[name] * 1e9 * args.threads / n_elements:.2f} | {peer} | "
              f"{t_peer * 1e3:.2f} ms | {t_peer / t_out:.1f} | {compile_cells} |")
    if ordinary:
        print("\npair losses, out= with the gradients' streaming stores (the default at this size) "
              "and with ordinary stores:\n")
        print("| loss | streamed | ordinary stores | ordinary / streamed |")
        print("|---|---:|---:|---:|")
        for row in rows:
            if row[0] in ordinary:
                print(f"| {row[0]} | {row[2] * 1e3:.2f} ms | {ordinary[row[0]] * 1e3:.2f} ms | "
                      f"{ordinary[row[0]] / row[2]:.2f} |")
    print(f"\nload average after the run: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
