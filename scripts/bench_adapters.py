"""Benchmark of the adapters (issue 16): fastloss.torch and fastloss.jax against the
frameworks' own losses, forward + backward, float32, 2 threads, one run.

    python scripts/bench_adapters.py [--repeats 15] [--threads 2] [--quick]
                                     [--only torch overhead training jax] [--no-malloc-run]

Prints markdown tables: medians of interleaved rounds (each round times every contender
once, after an untimed call of its own), and the ratio of each peer to the fastloss adapter.
Compare only within one run (HELPERS.md). The jax table is printed a second time from a
child process whose glibc keeps freed memory (MALLOC_KEEP below: XLA's large outputs then
reuse it instead of fresh pages the OS must clear; see fastloss.jax's docstring), for both
fastloss.jax and JAX's own loss; --no-malloc-run skips it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


SECTIONS = ["torch", "overhead", "training", "jax"]
# glibc's tunables for a process that keeps its freed memory (no mmap / munmap per large
# buffer): the environment of the second jax run
MALLOC_KEEP = {"MALLOC_MMAP_THRESHOLD_": "2000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000"}


def parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS,
                        help="the tables to print (default: all)")
    parser.add_argument("--no-malloc-run", action="store_true",
                        help="skip the jax table under MALLOC_KEEP")
    parser.add_argument("--title", default="", help=argparse.SUPPRESS)
    return parser.parse_args()


ARGS = parse()
# before any framework starts its thread pools
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true "
                      f"intra_op_parallelism_threads={ARGS.threads}")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fastloss  # noqa: E402
import fastloss.torch as flt  # noqa: E402

torch.set_num_threads(ARGS.threads)


def interleaved_medians(functions, rounds=None):
    """{name: median seconds per call}: each round times every function once (one untimed
    call, then a loop of calls that takes ~3 ms, the count fixed per function after a
    warm-up), the order alternating from round to round, so that all of them see the same
    minutes of a shared machine (timed one after the other, a peer's whole row could fall in
    a slower minute than ours, or a faster one: torch eager's CE 4096x100 moved 415-534 us
    between runs). The untimed call restores the function's own steady state (its buffers
    back in the caches after the others' passes evicted them), which a loop of calls of its
    own has: without it, a 64 MB case's single timed call ran from memory the others had
    pushed out of the L3 (fastloss.torch CE 16384x1000 4.8 ms alone, 9.7 ms right after
    torch eager's call)."""
    rounds = rounds or 2 * ARGS.repeats
    inner = {}
    for name, function in functions.items():
        for _ in range(2):
            function()
        start = time.perf_counter()
        function()
        inner[name] = max(1, int(3e-3 / max(time.perf_counter() - start, 1e-9)))
    samples = {name: [] for name in functions}
    order = list(functions)
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            function, count = functions[name], inner[name]
            function()
            start = time.perf_counter()
            for _ in range(count):
                function()
            samples[name].append((time.perf_counter() - start) / count)
    return {name: statistics.median(values) for name, values in samples.items()}


def fmt(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.2f} ms"


def table(title, header, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


# ------------------------------------------------------------------- torch: large losses

def torch_cases():
    rng = np.random.default_rng(0)
    ce_shapes = [(16384, 1000), (4096, 100), (65536, 10)]
    n_elements = 2 ** 24
    if ARGS.quick:
        ce_shapes, n_elements = [(512, 100), (256, 10)], 2 ** 16
    for shape in ce_shapes:
        x = torch.from_numpy((rng.standard_normal(shape) * 3).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, shape[1], shape[0]))
        yield (f"cross_entropy {shape[0]}x{shape[1]}", x, y, flt.cross_entropy, F.cross_entropy,
               lambda a, b: fastloss.softmax_cross_entropy(a, b, n_threads=ARGS.threads))
    x = torch.from_numpy((rng.standard_normal(n_elements) * 3).astype(np.float32))
    soft = torch.from_numpy(rng.random(n_elements, dtype=np.float32))
    yield (f"binary_cross_entropy_with_logits 2^{n_elements.bit_length() - 1}", x, soft,
           flt.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits,
           lambda a, b: fastloss.binary_cross_entropy_with_logits(a, b, n_threads=ARGS.threads))
    regression = torch.from_numpy((rng.standard_normal(n_elements) * 2).astype(np.float32))
    yield (f"huber_loss 2^{n_elements.bit_length() - 1}", x, regression, flt.huber_loss,
           F.huber_loss, lambda a, b: fastloss.huber(a, b, n_threads=ARGS.threads))


def forward_backward(loss_function, x, target):
    def step():
        x.grad = None
        loss_function(x, target).backward()
    return step


def bench_torch_large():
    rows = []
    for name, x, target, ours, theirs, bare in torch_cases():
        x = x.clone().requires_grad_()
        x_np, target_np = x.detach().numpy(), target.numpy()
        compiled = torch.compile(theirs)
        times = interleaved_medians({
            "fastloss (NumPy call)": lambda: bare(x_np, target_np),
            "fastloss.torch": forward_backward(ours, x, target),
            "torch eager": forward_backward(theirs, x, target),
            "torch.compile": forward_backward(compiled, x, target),
        })
        # the same gradient (a check that each peer did the work)
        x.grad = None
        ours(x, target).backward()
        mine = x.grad.clone()
        x.grad = None
        theirs(x, target).backward()
        assert torch.allclose(mine, x.grad, rtol=1e-4, atol=1e-9), name
        adapter = times["fastloss.torch"]
        rows.append([name] + [fmt(t) for t in times.values()]
                    + [f"{times['torch eager'] / adapter:.1f}x",
                       f"{times['torch.compile'] / adapter:.1f}x"])
        del x, compiled
    table("fastloss.torch: forward + backward (loss(x, t).backward()), float32, medians of "
          f"{2 * ARGS.repeats} interleaved rounds",
          ["case", "fastloss (NumPy call)", "fastloss.torch", "torch eager", "torch.compile",
           "eager / adapter", "compile / adapter"], rows)


# ------------------------------------------------------------------ torch: per-call overhead

def bench_overhead():
    rng = np.random.default_rng(1)
    rows = []
    cases = [
        ("cross_entropy 8x10", rng.standard_normal((8, 10)), rng.integers(0, 10, 8),
         flt.cross_entropy, F.cross_entropy, fastloss.softmax_cross_entropy),
        ("huber_loss 64", rng.standard_normal(64), rng.standard_normal(64), flt.huber_loss,
         F.huber_loss, fastloss.huber),
    ]
    for name, x_np, target_np, ours, theirs, bare in cases:
        x_np = x_np.astype(np.float32)
        if target_np.dtype.kind == "f":
            target_np = target_np.astype(np.float32)
        x, target = torch.from_numpy(x_np), torch.from_numpy(target_np)
        xg = x.clone().requires_grad_()
        times = interleaved_medians({
            "bare": lambda: bare(x_np, target_np),
            "no_grad": lambda: ours(x, target),
            "with_grad": forward_backward(ours, xg, target),
            "torch_grad": forward_backward(theirs, xg, target),
        }, rounds=2 * max(ARGS.repeats, 25))
        bare_time, no_grad = times["bare"], times["no_grad"]
        with_grad, torch_grad = times["with_grad"], times["torch_grad"]
        rows.append([name, fmt(bare_time), fmt(no_grad), fmt(no_grad - bare_time),
                     fmt(with_grad), fmt(torch_grad)])
    table("fastloss.torch: per-call overhead (tiny inputs, medians of loops)",
          ["case", "bare fastloss call (loss + grad)", "adapter, no grad",
           "overhead over bare", "adapter forward + backward", "torch eager forward + backward"],
          rows)


# ------------------------------------------------------------------ torch: a training step

def bench_training_step():
    try:
        from sklearn.datasets import load_digits
        features, labels = load_digits(return_X_y=True)
    except ImportError:
        rng = np.random.default_rng(0)
        features, labels = rng.uniform(0, 16, (1797, 64)), rng.integers(0, 10, 1797)
    features = torch.tensor((features - features.mean(0)) / (features.std(0) + 1e-6),
                            dtype=torch.float32)
    labels = torch.as_tensor(labels)
    batch = 256
    x, y = features[:batch], labels[:batch]
    # the two runs' steps interleaved, in alternating order, one step per sample: a
    # sequential benchmark (all of one, then all of the other) gave either side the better
    # minutes by turns on a shared machine; the phases show where a difference comes from
    runs = {}
    for name, criterion in [("fastloss.torch.CrossEntropyLoss", flt.CrossEntropyLoss()),
                            ("torch.nn.CrossEntropyLoss", torch.nn.CrossEntropyLoss())]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                    torch.nn.Linear(64, 10))
        runs[name] = (model, torch.optim.SGD(model.parameters(), lr=0.01), criterion,
                      {"step": [], "loss": [], "backward": [], "no_grad": []})
    clock = time.perf_counter
    rounds = max(ARGS.repeats * 40, 1000)
    names = list(runs)
    for r in range(rounds + 50):
        for name in (names if r % 2 else names[::-1]):
            model, optimizer, criterion, samples = runs[name]
            t0 = clock()
            optimizer.zero_grad()
            logits = model(x)
            t1 = clock()
            loss = criterion(logits, y)
            t2 = clock()
            loss.backward()
            t3 = clock()
            optimizer.step()
            t4 = clock()
            with torch.no_grad():
                criterion(model(x), y)
            t5 = clock()
            if r >= 50:   # warm-up rounds
                samples["step"].append(t4 - t0)
                samples["loss"].append(t2 - t1)
                samples["backward"].append(t3 - t2)
                samples["no_grad"].append(t5 - t4)
    rows = []
    for name, (_, _, _, samples) in runs.items():
        med = {k: float(np.median(v)) for k, v in samples.items()}
        rows.append([name, fmt(med["step"]), fmt(med["loss"]), fmt(med["backward"]),
                     fmt(med["no_grad"])])
    table(f"digits MLP (64-64-10), batch 256, SGD: one training step (medians of {rounds} "
          "interleaved steps each)",
          ["loss", "training step", "of which the loss's forward", "of which backward",
           "forward only (no_grad)"], rows)


# ------------------------------------------------------------------------------ jax

def bench_jax():
    import jax
    import jax.numpy as jnp
    import optax

    import fastloss.jax as flj

    rng = np.random.default_rng(2)
    shape, n_elements = ((512, 100), 2 ** 16) if ARGS.quick else ((16384, 1000), 2 ** 24)
    x = jnp.asarray((rng.standard_normal(shape) * 3).astype(np.float32))
    y = jnp.asarray(rng.integers(0, shape[1], shape[0]).astype(np.int32))
    xe = jnp.asarray((rng.standard_normal(n_elements) * 3).astype(np.float32))
    te = jnp.asarray(rng.random(n_elements, dtype=np.float32))
    power = n_elements.bit_length() - 1
    cases = [
        (f"softmax_cross_entropy {shape[0]}x{shape[1]}", x, y,
         lambda a, b: flj.softmax_cross_entropy(a, b),
         lambda a, b: optax.softmax_cross_entropy_with_integer_labels(a, b).mean(),
         lambda a, b: fastloss.softmax_cross_entropy(a, b)),
        (f"binary_cross_entropy_with_logits 2^{power}", xe, te,
         lambda a, b: flj.binary_cross_entropy_with_logits(a, b),
         lambda a, b: optax.sigmoid_binary_cross_entropy(a, b).mean(),
         lambda a, b: fastloss.binary_cross_entropy_with_logits(a, b)),
        (f"huber 2^{power}", xe, te, lambda a, b: flj.huber(a, b),
         lambda a, b: optax.huber_loss(a, b).mean(), lambda a, b: fastloss.huber(a, b)),
    ]
    rows = []
    for name, a, b, ours, theirs, bare in cases:
        ours_vg = jax.jit(jax.value_and_grad(ours))
        theirs_vg = jax.jit(jax.value_and_grad(theirs))
        a_np, b_np = np.asarray(a), np.asarray(b)
        times = interleaved_medians({
            "fastloss (NumPy call)": lambda: bare(a_np, b_np),
            "fastloss.jax": lambda: jax.block_until_ready(ours_vg(a, b)),
            "jax.jit(value_and_grad)": lambda: jax.block_until_ready(theirs_vg(a, b)),
        })
        np.testing.assert_allclose(ours_vg(a, b)[1], theirs_vg(a, b)[1], rtol=1e-3, atol=1e-9)
        rows.append([name] + [fmt(t) for t in times.values()]
                    + [f"{times['jax.jit(value_and_grad)'] / times['fastloss.jax']:.1f}x"])
    table("fastloss.jax: jax.jit(jax.value_and_grad(loss)), float32" + ARGS.title,
          ["case", "fastloss (NumPy call)", "fastloss.jax (jit)", "jax.jit(value_and_grad)",
           "jax / adapter"], rows)


def main():
    print(f"fastloss {fastloss.__version__}, SIMD {fastloss.simd_level()}, torch "
          f"{torch.__version__}, {ARGS.threads} threads, load average "
          f"{os.getloadavg()[0]:.2f} at start")
    if "torch" in ARGS.only:
        bench_torch_large()
    if "overhead" in ARGS.only:
        bench_overhead()
    if "training" in ARGS.only:
        bench_training_step()
    if "jax" in ARGS.only:
        try:
            bench_jax()
        except ImportError as missing:
            print(f"\n(jax benchmark skipped: {missing})")
        else:
            if not ARGS.no_malloc_run and not ARGS.title:
                subprocess.run(
                    [sys.executable, __file__, "--only", "jax", "--no-malloc-run",
                     "--repeats", str(ARGS.repeats), "--threads", str(ARGS.threads),
                     "--title", ", glibc keeping freed memory (" + " ".join(
                         f"{k}={v}" for k, v in MALLOC_KEEP.items()) + ")"]
                    + (["--quick"] if ARGS.quick else []),
                    env={**os.environ, **MALLOC_KEEP}, check=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
