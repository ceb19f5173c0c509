"""Benchmark of the class-axis losses of issue 13 (a standalone script for this round; the
cases belong in fastloss.bench's table once it has a row per loss for them).

    python scripts/bench_class_axis.py [--threads 2] [--no-compile] [--old PATH] [--clock cpu]

float32, mean loss and gradient. Rows per case: fastloss with ``out=`` (a preallocated
gradient), fastloss allocating, (K-dim) fastloss with ``compute_hess=True`` into ``out=`` and
``hess_out=`` (one write stream more), the memory floor (``np.copyto`` of the logits: one read and
one write stream; ``np.add(a, b, out=c)`` for the two-input KL: two reads and a write), and
the peers: torch eager (forward + ``backward``) and ``torch.compile`` of the same function
(compiled once per case, warmed up before timing). Every peer's loss is checked against
fastloss's before it is timed. ``--old PATH`` imports a second fastloss build from PATH (a
source tree built in place) and times the (N, C) paths without the new options under both,
in the same run. Times are medians of repeats; ratios are within this run only.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time

import numpy as np


CLOCK = time.perf_counter


def timeit(fn, budget=1.0, min_repeats=5, max_repeats=40):
    fn()  # warm up (page faults, compilation)
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < budget
                                       and len(times) < max_repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return statistics.median(times)


def load_fastloss(path, name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(path, "fastloss", "__init__.py"),
        submodule_search_locations=[os.path.join(path, "fastloss")])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def torch_peers(torch, loss_fn, inputs, compile_too):
    """{name: callable} computing loss_fn's mean loss and its gradient in torch."""
    F_inputs = [torch.from_numpy(a) for a in inputs]

    def eager():
        x = F_inputs[0].requires_grad_(True)
        loss = loss_fn(x, *F_inputs[1:])
        loss.backward()
        x.grad = None
        return loss

    peers = {"torch eager": eager}
    if compile_too:
        compiled = torch.compile(loss_fn, dynamic=False)

        def compiled_call():
            x = F_inputs[0].requires_grad_(True)
            loss = compiled(x, *F_inputs[1:])
            loss.backward()
            x.grad = None
            return loss

        peers["torch.compile"] = compiled_call
    return peers


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--old", default=None, help="source tree of the old build")
    parser.add_argument("--only", default=None, help="comma-separated case prefixes")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: the process's CPU time (time.process_time), which leaves "
                             "out the time other processes hold the cores: for --threads 1 "
                             "on a loaded machine, where wall times measure the scheduler")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    import fastloss
    import torch
    import torch.nn.functional as F
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threads = args.threads
    rng = np.random.default_rng(0)
    rows = []
    print(f"# fastloss {fastloss.simd_level()}, {threads} threads, float32, {args.clock} clock, "
          f"load average {os.getloadavg()}", flush=True)

    def record(case, floor_name, floor, results):
        for name, seconds in results.items():
            rows.append((case, name, seconds, seconds / floor, floor_name))
            print(f"{case:<42} {name:<24} {seconds * 1e3:9.3f} ms  {seconds / floor:6.2f}x "
                  f"{floor_name}", flush=True)

    def want(case):
        return args.only is None or any(case.startswith(p) for p in args.only.split(","))

    def torch_focal(x, t, gamma=2.0):
        log_p = F.log_softmax(x, dim=1).gather(1, t[:, None])[:, 0]
        return (-(1 - log_p.exp()) ** gamma * log_p).mean()

    with threadpool_limits(threads):
        # ------------------------------------------------------------ K-dim CE and focal
        for shape in [(8, 21, 256, 256), (64, 10, 64, 64)]:
            x = rng.standard_normal(shape, dtype=np.float32) * 3
            t = rng.integers(0, shape[1], (shape[0],) + shape[2:])
            out = np.empty_like(x)
            copy = timeit(lambda: np.copyto(out, x))
            for loss_name in ("ce", "focal"):
                case = f"K-dim {loss_name} {shape}"
                if not want(case):
                    continue
                fl_fn = fastloss.softmax_cross_entropy if loss_name == "ce" else fastloss.softmax_focal
                results = {
                    "fastloss out=": timeit(lambda: fl_fn(x, t, out=out, n_threads=threads)),
                    "fastloss in place": None,
                    "fastloss alloc": timeit(lambda: fl_fn(x, t, n_threads=threads)),
                }
                work = x.copy()
                results["fastloss in place"] = timeit(
                    lambda: (np.copyto(work, x), fl_fn(work, t, out=work, n_threads=threads)))
                results["fastloss in place"] -= copy   # the refill is not part of the call
                # the with_hess variant of the tiles (issue 15's compute_hess), out= and hess_out=
                hess = np.empty_like(x)
                results["fastloss +hess out="] = timeit(lambda: fl_fn(
                    x, t, out=out, compute_hess=True, hess_out=hess, n_threads=threads))
                results["copy floor"] = copy
                tt = torch.from_numpy(t)
                if loss_name == "ce":
                    peers = torch_peers(torch, lambda xx, yy: F.cross_entropy(xx, yy),
                                        [x, t], not args.no_compile)
                    expected = fastloss.softmax_cross_entropy(x, t).loss
                else:
                    peers = torch_peers(torch, lambda xx, yy: torch_focal(
                        torch.movedim(xx, 1, -1).reshape(-1, xx.shape[1]), yy.reshape(-1)),
                        [x, t], not args.no_compile)
                    expected = fastloss.softmax_focal(x, t).loss
                for name, fn in peers.items():
                    got = float(fn().detach())
                    assert abs(got - expected) <= 1e-4 * abs(expected), (name, got, expected)
                    results[name] = timeit(fn)
                record(case, "copy", copy, results)

        # ---------------------------------------- z_loss + logit_softcap + lse_out, (N, C)
        shape = (16384, 1000)
        x = rng.standard_normal(shape, dtype=np.float32) * 3
        t = rng.integers(0, shape[1], shape[0])
        out = np.empty_like(x)
        lse = np.empty(shape[0], np.float32)
        copy = timeit(lambda: np.copyto(out, x))
        case = f"CE z_loss+softcap+lse_out {shape}"
        if want(case):
            opts = dict(z_loss=1e-4, logit_softcap=30.0, lse_out=lse)

            def torch_options(xx, yy):
                z = 30.0 * torch.tanh(xx / 30.0)
                lse_t = torch.logsumexp(z, 1)
                return (F.cross_entropy(z, yy, reduction="none") + 1e-4 * lse_t ** 2).mean()

            results = {
                "fastloss out=": timeit(lambda: fastloss.softmax_cross_entropy(
                    x, t, out=out, n_threads=threads, **opts)),
                "fastloss z_loss+lse_out out=": timeit(lambda: fastloss.softmax_cross_entropy(
                    x, t, out=out, n_threads=threads, z_loss=1e-4, lse_out=lse)),
                "fastloss plain CE out=": timeit(lambda: fastloss.softmax_cross_entropy(
                    x, t, out=out, n_threads=threads)),
                "copy floor": copy,
            }
            expected = fastloss.softmax_cross_entropy(x, t, **opts).loss
            for name, fn in torch_peers(torch, torch_options, [x, t], not args.no_compile).items():
                got = float(fn().detach())
                assert abs(got - expected) <= 1e-4 * abs(expected), (name, got, expected)
                results[name] = timeit(fn)
            record(case, "copy", copy, results)

        # ------------------------------------------------------------------ multi_margin
        shape = (4096, 1000)
        x = rng.standard_normal(shape, dtype=np.float32) * 0.05
        t = rng.integers(0, shape[1], shape[0])
        out = np.empty_like(x)
        copy = timeit(lambda: np.copyto(out, x))
        case = f"multi_margin p=1 {shape}"
        if want(case):
            results = {
                "fastloss out=": timeit(lambda: fastloss.multi_margin(x, t, out=out,
                                                                      n_threads=threads)),
                "fastloss alloc": timeit(lambda: fastloss.multi_margin(x, t, n_threads=threads)),
                "copy floor": copy,
            }
            expected = fastloss.multi_margin(x, t).loss
            for name, fn in torch_peers(torch, lambda xx, yy: F.multi_margin_loss(xx, yy),
                                        [x, t], not args.no_compile).items():
                got = float(fn().detach())
                assert abs(got - expected) <= 1e-4 * abs(expected), (name, got, expected)
                results[name] = timeit(fn)
            record(case, "copy", copy, results)

        # --------------------------------------------------------- kl_divergence_with_logits
        shape = (16384, 1000)
        s = rng.standard_normal(shape, dtype=np.float32) * 3
        tl = rng.standard_normal(shape, dtype=np.float32) * 3
        out = np.empty_like(s)
        add = timeit(lambda: np.add(s, tl, out=out))
        case = f"kl_divergence_with_logits T=2 {shape}"
        if want(case):
            results = {
                "fastloss out=": timeit(lambda: fastloss.kl_divergence_with_logits(
                    s, tl, temperature=2.0, out=out, n_threads=threads)),
                "fastloss alloc": timeit(lambda: fastloss.kl_divergence_with_logits(
                    s, tl, temperature=2.0, n_threads=threads)),
                "a+b floor": add,
            }
            expected = fastloss.kl_divergence_with_logits(s, tl, temperature=2.0).loss

            def torch_kl(xx, yy):
                return 4.0 * F.kl_div(F.log_softmax(xx / 2.0, 1), F.log_softmax(yy / 2.0, 1),
                                      log_target=True, reduction="batchmean")

            for name, fn in torch_peers(torch, torch_kl, [s, tl], not args.no_compile).items():
                got = float(fn().detach())
                assert abs(got - expected) <= 1e-4 * abs(expected), (name, got, expected)
                results[name] = timeit(fn)
            record(case, "a+b", add, results)

        # ------------------------------------------------- (N, C) paths, old build vs new
        if args.old and want("old"):
            old = load_fastloss(args.old, "fastloss_old")
            for shape in [(16384, 1000), (65536, 10), (4096, 100)]:
                x = rng.standard_normal(shape, dtype=np.float32) * 3
                t = rng.integers(0, shape[1], shape[0])
                out = np.empty_like(x)
                copy = timeit(lambda: np.copyto(out, x))
                for loss_name in ("softmax_cross_entropy", "softmax_focal"):
                    results = {}
                    for _ in range(2):   # interleaved, twice, so drift hits both alike
                        for label, module in (("old", old), ("new", fastloss)):
                            fn = getattr(module, loss_name)
                            seconds = timeit(lambda: fn(x, t, out=out, n_threads=threads))
                            results[label] = min(results.get(label, 1e9), seconds)
                    record(f"(N, C) {loss_name} {shape}", "copy", copy,
                           {"old build out=": results["old"], "new build out=": results["new"],
                            "copy floor": copy})
    print(f"# load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
