"""Benchmark of fastloss.linear_cross_entropy (issue 17): forward + backward wall time and
peak memory against the three GEMMs alone and PyTorch's F.linear_cross_entropy.

Every (implementation, shape) runs in its own process (``--worker``), so that its peak RSS is
its own: the worker builds the inputs, warms up on a small problem, resets the kernel's
high-water mark (``/proc/self/clear_refs``; the warm-up is the same call on 64 rows, which
leaves each library's GEMM workspace resident as a training loop would), times ``--repeats`` runs and reports the median
time and the peak RSS above what it held before the first run plus the gradients' size.

    python scripts/bench_linear_ce.py                      # both shapes, every implementation
    python scripts/bench_linear_ce.py --shapes 4096,512,32768 --chunk-sweep 64,128,192,256,512

Implementations:
  fastloss          fastloss.linear_cross_entropy (default chunk unless --chunk)
  gemm3_full        the three GEMMs on the full (N, V) logits, SciPy's BLAS (the one fastloss
                    uses), no loss: logits = H W^T, dH = G W, dW = G^T H
  gemm3_chunked     the same three GEMMs as chunk-sized calls on fastloss's row chunks (dW
                    accumulated, beta = 1), BLAS threads inside each call: the loop before the
                    tile sweep
  gemm3_sweep       the GEMMs alone in fastloss's tile sweep (fastloss without the CE step)
  gemm_forward      H W^T alone (what a vocabulary-tiled two-pass variant would add)
  torch_gemm3_full  the three full-size GEMMs through torch (torch.mm / addmm with out=, the MKL in
                    torch's wheel), torch threads = --threads
  torch_gemm3_chunked  the same as chunk-sized torch calls on fastloss's default row chunks
  fastloss_torch    fastloss.torch.linear_cross_entropy(...) + backward on torch tensors
  proto_torch_gemm  a prototype (not in fastloss): the chunk loop on torch's GEMMs (MKL, torch
                    threads) with fastloss's CE kernel in place on the chunk buffer, default
                    chunk; BENCH_LCE_TORCH_FORWARD_CLASSES=t computes the logits in calls of t
                    classes (one call over V makes MKL take a workspace the size of the chunk
                    buffer: +59 MiB at (112, 1024, 131072); t = 4096 keeps the cap)
  torch_chunked     F.linear_cross_entropy(..., options=LinearCrossEntropyOptions()) + backward
  torch_reference   F.linear_cross_entropy(..., options=None) + backward
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

IMPLEMENTATIONS = ["gemm3_full", "gemm3_chunked", "gemm3_sweep", "gemm_forward", "fastloss",
                   "torch_gemm3_full", "torch_gemm3_chunked", "fastloss_torch", "proto_torch_gemm",
                   "torch_chunked", "torch_reference"]


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def _gemm_for(dtype):
    from scipy.linalg import blas
    return blas.sgemm if dtype == "float32" else blas.dgemm


def _gemm_into(gemm, alpha, a, b, c, **options):
    """c = alpha op(a) op(b) + beta c on Fortran-ordered views, written into c itself."""
    result = gemm(alpha, a, b, c=c, overwrite_c=1, **options)
    assert result.__array_interface__["data"][0] == c.__array_interface__["data"][0]


def _sweep_gemms(h, w, rows, threads):
    """fastloss's chunk loop and tile sweeps with the CE step left out."""
    import numpy as np
    from fastloss import _kernels, _linear_ce
    n_rows, d = h.shape
    capsule = _linear_ce._gemm_capsule(h.dtype)
    tile = _linear_ce.tile_size(w.shape[0], d, h.itemsize)
    parts_count = _linear_ce.PARTS
    dh, dw = np.empty_like(h), np.empty_like(w)
    buffer = np.empty((min(rows, n_rows), w.shape[0]), h.dtype)
    parts = np.empty(parts_count * min(rows, n_rows) * d, h.dtype)
    with _linear_ce._one_blas_thread():
        _kernels.lce_sweep(capsule, buffer, None, h[:rows], w, None, None, 1.0, False, tile,
                           parts_count, threads)
        for start in range(0, n_rows, rows):
            stop = min(start + rows, n_rows)
            block = parts[: parts_count * (stop - start) * d].reshape(parts_count, -1, d)
            following = h[stop:stop + rows] if stop < n_rows else None
            used = _kernels.lce_sweep(capsule, buffer, h[start:stop], following, w, dw, block,
                                      1.0, start > 0, tile, parts_count, threads)
            np.sum(block[:used], axis=0, out=dh[start:stop])
    return dh, dw


def _worker(name: str, n: int, d: int, v: int, threads: int, repeats: int, chunk) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if os.environ.get("BENCH_LCE_TILE_BYTES"):  # tile-size experiments
        from fastloss import _linear_ce
        _linear_ce.TILE_BYTES = int(os.environ["BENCH_LCE_TILE_BYTES"])
    import numpy as np
    from threadpoolctl import threadpool_limits

    import fastloss
    from fastloss import _linear_ce

    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((n, d), dtype=np.float32)
    weight = rng.standard_normal((v, d), dtype=np.float32) * np.float32(1 / np.sqrt(d))
    target = rng.integers(0, v, n)
    gemm = _gemm_for("float32")
    rows = chunk or _linear_ce.default_chunk_size(n, v, d, 4)

    if name.startswith("torch_gemm3"):
        import torch
        torch.set_num_threads(threads)

        def run(h, w, t):
            ht, wt = torch.from_numpy(h), torch.from_numpy(w)
            n_rows = len(h)
            dh, dw = torch.empty_like(ht), torch.empty_like(wt)
            step = rows if name == "torch_gemm3_chunked" else max(n_rows, 1)
            buffer = torch.empty((min(step, n_rows), wt.shape[0]), dtype=ht.dtype)
            for start in range(0, n_rows, step):
                hc = ht[start:start + step]
                block = buffer[: hc.shape[0]]
                torch.mm(hc, wt.t(), out=block)
                dw.addmm_(block.t(), hc, beta=0.0 if start == 0 else 1.0)
                torch.mm(block, wt, out=dh[start:start + step])
            return dh, dw
    elif name == "proto_torch_gemm":  # prototype: torch GEMMs + fastloss's CE in place
        import torch
        torch.set_num_threads(threads)
        forward_classes = int(os.environ.get("BENCH_LCE_TORCH_FORWARD_CLASSES") or v)

        def run(h, w, t):
            ht, wt = torch.from_numpy(h), torch.from_numpy(w)
            n_rows = len(h)
            dh, dw = torch.empty_like(ht), torch.empty_like(wt)
            buffer = torch.empty((min(rows, n_rows), wt.shape[0]), dtype=ht.dtype)
            arr = buffer.numpy()
            total = 0.0
            scale = 1.0 / n_rows
            for start in range(0, n_rows, rows):
                hc = ht[start:start + rows]
                n_c = hc.shape[0]
                block = buffer[:n_c]
                for j in range(0, wt.shape[0], forward_classes):
                    torch.mm(hc, wt[j:j + forward_classes].t(), out=block[:, j:j + forward_classes])
                total += fastloss.softmax_cross_entropy(
                    arr[:n_c], t[start:start + rows], reduction="sum", out=arr[:n_c],
                    n_threads=threads).loss
                dw.addmm_(block.t(), hc, beta=0.0 if start == 0 else 1.0, alpha=scale)
                torch.addmm(dh[start:start + rows], block, wt, beta=0.0, alpha=scale,
                            out=dh[start:start + rows])
            return total * scale, dh, dw
    elif name == "fastloss_torch":
        import torch
        import fastloss.torch as flt
        torch.set_num_threads(threads)

        def run(h, w, t):
            ht = torch.from_numpy(h).requires_grad_(True)
            wt = torch.from_numpy(w).requires_grad_(True)
            loss = flt.linear_cross_entropy(ht, wt, torch.from_numpy(t))
            loss.backward()
            return float(loss), ht.grad, wt.grad
    elif name.startswith("torch"):
        import torch
        import torch.nn.functional as F
        torch.set_num_threads(threads)
        options = torch.nn.LinearCrossEntropyOptions() if name == "torch_chunked" else None

        def run(h, w, t):
            ht = torch.from_numpy(h).requires_grad_(True)
            wt = torch.from_numpy(w).requires_grad_(True)
            loss = F.linear_cross_entropy(ht, wt, torch.from_numpy(t), options=options)
            loss.backward()
            return float(loss), ht.grad, wt.grad
    elif name == "fastloss":
        def run(h, w, t):
            return fastloss.linear_cross_entropy(h, w, t, chunk_size=chunk, n_threads=threads)
    elif name == "gemm3_sweep":
        def run(h, w, t):
            return _sweep_gemms(h, w, rows, threads)
    else:
        def run(h, w, t):
            n_rows = len(h)
            dh, dw = np.empty_like(h), np.empty_like(w)
            if name == "gemm3_chunked":
                buffer = np.empty((min(rows, n_rows), w.shape[0]), h.dtype)
                for start in range(0, n_rows, rows):
                    ht = h[start:start + rows].T
                    block = buffer[: ht.shape[1]]
                    _gemm_into(gemm, 1.0, w.T, ht, block.T, trans_a=1)
                    _gemm_into(gemm, 1.0, ht, block.T, dw.T, trans_b=1,
                                          beta=0.0 if start == 0 else 1.0)
                    _gemm_into(gemm, 1.0, w.T, block.T, dh[start:start + rows].T)
                return dh, dw
            logits = np.empty((n_rows, w.shape[0]), h.dtype)
            _gemm_into(gemm, 1.0, w.T, h.T, logits.T, trans_a=1)
            if name == "gemm3_full":
                _gemm_into(gemm, 1.0, h.T, logits.T, dw.T, trans_b=1)
                _gemm_into(gemm, 1.0, w.T, logits.T, dh.T)
            return dh, dw

    with threadpool_limits(limits=threads, user_api="blas"):
        # warm-up on 64 rows with the full weight: thread pools, lazy imports, and each
        # library's GEMM workspace at these shapes (resident in a training loop anyway).
        # MALLOC_MMAP_THRESHOLD_ (set by the parent) returns the warm-up's arrays to the OS.
        run(hidden[:64].copy(), weight, target[:64].copy())
        gradient_kib = (hidden.nbytes + weight.nbytes) // 1024
        _reset_peak()
        before = _rss_kib("VmRSS")
        times, cpu_times = [], []
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            result = run(hidden, weight, target)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            del result
        peak = _rss_kib("VmHWM")
    return {"name": name, "shape": [n, d, v], "chunk": rows if name in ("fastloss", "gemm3_chunked", "gemm3_sweep", "fastloss_torch", "proto_torch_gemm",
                                                  "torch_gemm3_chunked") else None,
            "median_s": statistics.median(times), "times_s": times,
            "cpu_median_s": statistics.median(cpu_times),
            "peak_above_inputs_and_grads_mib": (peak - before - gradient_kib) / 1024,
            "logits_mib": n * v * 4 / 2**20, "simd": fastloss.simd_level()}


def _run_one(name, shape, threads, repeats, chunk):
    command = [sys.executable, __file__, "--worker", name, "--shapes", ",".join(map(str, shape)),
               "--threads", str(threads), "--repeats", str(repeats)]
    if chunk:
        command += ["--chunk", str(chunk)]
    # a fixed mmap threshold: every array above 64 KiB is mmapped and unmapped on free, so the
    # warm-up's arrays are not kept in the heap and counted in the baseline
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        return {"name": name, "shape": list(shape), "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="4096,512,32768;2048,1024,131072",
                        help="N,D,V triples separated by ';'")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--chunk-sweep", default="", help="chunk sizes to time fastloss at")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";") if s]
    if args.worker:
        print(json.dumps(_worker(args.worker, *shapes[0], args.threads, args.repeats, args.chunk)))
        return
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = []
    for shape in shapes:
        for name in args.only.split(","):
            results.append(_run_one(name, shape, args.threads, args.repeats, args.chunk))
            print(json.dumps(results[-1]), flush=True)
        for chunk in [int(c) for c in args.chunk_sweep.split(",") if c]:
            for name in ("fastloss", "gemm3_sweep"):
                results.append(_run_one(name, shape, args.threads, args.repeats, chunk))
                print(json.dumps(results[-1]), flush=True)
    print(f"load average after: {os.getloadavg()}", flush=True)
    print()
    print("| N, D, V | implementation | chunk | median s | / 3 GEMMs | CPU s | / 3 GEMMs | peak above inputs+grads MiB | / logits |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        rows = [r for r in results if tuple(r["shape"]) == shape]
        full = next((r for r in rows if r["name"] == "gemm3_full" and "error" not in r), None)
        floor = full["median_s"] if full else None
        cpu_floor = full["cpu_median_s"] if full else None
        for r in rows:
            if "error" in r:
                print(f"| {shape} | {r['name']} | | failed: {r['error']} | | | | | |")
                continue
            ratio = f"{r['median_s'] / floor:.2f}" if floor else ""
            cpu_ratio = f"{r['cpu_median_s'] / cpu_floor:.2f}" if cpu_floor else ""
            print(f"| {shape} | {r['name']} | {r['chunk'] or ''} | {r['median_s']:.3f} | {ratio} | "
                  f"{r['cpu_median_s']:.3f} | {cpu_ratio} | "
                  f"{r['peak_above_inputs_and_grads_mib']:.0f} | "
                  f"{r['peak_above_inputs_and_grads_mib'] / r['logits_mib']:.3f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
