"""Why fastloss.torch costs more than the bare call at mid sizes (issue 16): the code that
runs right after a kernel pass runs from cold caches.

    python scripts/adapter_cold_cache.py [--threads 1] [--shape 4096x100] [--rounds 30]

A softmax CE call at 4096x100 float32 reads 1.6 MB of logits and writes a 1.6 MB gradient:
more than this machine's 2 MB L2 per core, so everything else the process runs next (the
adapter's Python, PyTorch's dispatcher and autograd engine) is evicted and runs several times
slower than in a loop of its own. The table times, interleaved (best of rounds of ~2 ms
batches, so that a loaded machine disturbs it least): the bare call, the adapter's forward +
backward, and a tiny adapter forward + backward (8x10) and a tiny native
``x.sum().backward()`` alone and right after the bare call. The tiny calls cost about as much
more after the kernel as the adapter costs more than the bare call: the extra time is the
autograd machinery running cold, not work that scales with the input.
"""

from __future__ import annotations

import argparse
import os
import time


def parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shape", default="4096x100")
    parser.add_argument("--rounds", type=int, default=30)
    return parser.parse_args()


ARGS = parse()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import fastloss  # noqa: E402
import fastloss.torch as flt  # noqa: E402

torch.set_num_threads(ARGS.threads)


def best_times(functions, rounds, batch_seconds=2e-3):
    """Best (over rounds) mean time per call of batches of ~batch_seconds, interleaved."""
    inner, best = {}, {}
    for name, function in functions.items():
        for _ in range(3):
            function()
        start = time.perf_counter()
        function()
        inner[name] = max(1, int(batch_seconds / max(time.perf_counter() - start, 1e-7)))
        best[name] = float("inf")
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(inner[name]):
                function()
            best[name] = min(best[name], (time.perf_counter() - start) / inner[name])
    return best


def main():
    rows, columns = map(int, ARGS.shape.split("x"))
    rng = np.random.default_rng(0)
    x = torch.from_numpy((rng.standard_normal((rows, columns)) * 3).astype(np.float32))
    x.requires_grad_()
    y = torch.from_numpy(rng.integers(0, columns, rows))
    x_np, y_np = x.detach().numpy(), y.numpy()
    small_x = torch.randn(8, 10, requires_grad=True)
    small_y = torch.randint(0, 10, (8,))
    threads = ARGS.threads

    def bare():
        fastloss.softmax_cross_entropy(x_np, y_np, n_threads=threads)

    def adapter():
        x.grad = None
        flt.cross_entropy(x, y).backward()

    def tiny_adapter():
        small_x.grad = None
        flt.cross_entropy(small_x, small_y).backward()

    def tiny_sum():
        small_x.grad = None
        small_x.sum().backward()

    def bare_then_tiny_adapter():
        bare()
        tiny_adapter()

    def bare_then_tiny_sum():
        bare()
        tiny_sum()

    best = best_times({"bare": bare, "adapter": adapter, "tiny adapter": tiny_adapter,
                       "tiny sum": tiny_sum, "bare then tiny adapter": bare_then_tiny_adapter,
                       "bare then tiny sum": bare_then_tiny_sum}, ARGS.rounds)
    us = {name: value * 1e6 for name, value in best.items()}
    print(f"softmax CE {ARGS.shape} float32, {threads} thread(s), load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| what | alone | right after the bare call (minus the bare call) |")
    print("|---|---|---|")
    print(f"| bare fastloss call | {us['bare']:.1f} µs | |")
    print(f"| adapter forward + backward, {ARGS.shape} | | {us['adapter'] - us['bare']:.1f} µs "
          f"(total {us['adapter']:.1f} µs) |")
    print(f"| adapter forward + backward, 8x10 | {us['tiny adapter']:.1f} µs | "
          f"{us['bare then tiny adapter'] - us['bare']:.1f} µs |")
    print(f"| x.sum().backward(), 8x10 (native) | {us['tiny sum']:.1f} µs | "
          f"{us['bare then tiny sum'] - us['bare']:.1f} µs |")


if __name__ == "__main__":
    main()
