"""Issue 17: is "at most 1.15x the three GEMMs" reachable under the 1/16-of-logits memory cap?

Times, with the same BLAS and threads, the three GEMMs of linear cross-entropy ALONE (no
softmax, no CE kernel) - logits = H W^T, dW (+)= G^T H, dH = G W - done

  full        once on the full (N, V) logits (the floor of the issue's target);
  chunked n   chunk by chunk, n rows at a time, BLAS threads inside each call, in fastloss's
              order (chunk c's logits, then its dW (beta = 1 after the first chunk), then
              its dH), at the largest n the memory cap allows (n V <= N V / 16: the chunk
              buffer alone, nothing left for the BLAS's packing) and at fastloss's default;
  sweep n     fastloss's own tile sweep (lce_sweep, 8 parts on OpenMP threads, one BLAS
              thread each) with the CE step left out;

each also split by GEMM (logits / dW / dH run alone over every chunk), then the CE kernel's
share (fastloss.softmax_cross_entropy in place on each chunk buffer, as linear_cross_entropy
runs it) and the whole fastloss.linear_cross_entropy. Every BLAS call goes through SciPy's
OpenBLAS (scipy.linalg.blas.?gemm: the library whose cython_blas fastloss calls) and, for
comparison, NumPy's (np.matmul with out=; NumPy has no beta = 1, so its chunked dW is a
(V, D) GEMM per chunk into a scratch array, i.e. the GEMM without the accumulation, a lower
bound). Variants are interleaved within each repeat (load drifts between repeats) and the
table shows medians of wall and CPU time, and their ratios to SciPy's full GEMMs.

    python scripts/lce_gemm_bound.py                          # shape 2, 2 threads, 3 repeats
    python scripts/lce_gemm_bound.py --shape 4096,512,32768
    python scripts/lce_gemm_bound.py --coretypes SkylakeX,SapphireRapids,Cooperlake

--coretypes reruns the SciPy/NumPy GEMM rows in a child process per OPENBLAS_CORETYPE (the
kernel set OpenBLAS's DYNAMIC_ARCH build uses; threadpoolctl reports what it picked).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _time(fn):
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def build(n, d, v, threads, chunks):
    import numpy as np
    from scipy.linalg import blas

    import fastloss
    from fastloss import _kernels, _linear_ce

    rng = np.random.default_rng(0)
    h = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((v, d), dtype=np.float32) * np.float32(1 / np.sqrt(d))
    target = rng.integers(0, v, n)
    dh, dw = np.empty_like(h), np.empty_like(w)
    logits = np.empty((n, v), np.float32)
    sgemm = blas.sgemm

    def gemm(alpha, a, b, c, **options):
        """c = alpha op(a) op(b) + beta c in place (Fortran-ordered views of C arrays)."""
        out = sgemm(alpha, a, b, c=c, overwrite_c=1, **options)
        assert out.__array_interface__["data"][0] == c.__array_interface__["data"][0]

    # one chunk's GEMMs, SciPy's BLAS: C-ordered (r, c) arrays are Fortran (c, r) matrices
    def s_logits(hc, buf):        # buf^T (V, n) = W (V, D) Hc^T (D, n)
        gemm(1.0, w.T, hc.T, buf.T, trans_a=1)

    def s_dw(hc, buf, first):     # dW^T (D, V) (+)= Hc^T (D, n) buf (n, V)
        gemm(1.0, hc.T, buf.T, dw.T, trans_b=1, beta=0.0 if first else 1.0)

    def s_dh(buf, dhc):           # dHc^T (D, n) = W^T (D, V) buf^T (V, n)
        gemm(1.0, w.T, buf.T, dhc.T)

    dw_scratch = {}

    def n_logits(hc, buf):
        np.matmul(hc, w.T, out=buf)

    def n_dw(hc, buf, first):
        if first:
            np.matmul(buf.T, hc, out=dw)
        else:  # no beta = 1 in NumPy: the GEMM into scratch, the accumulation left out
            scratch = dw_scratch.setdefault("a", np.empty_like(dw))
            np.matmul(buf.T, hc, out=scratch)

    def n_dh(buf, dhc):
        np.matmul(buf, w, out=dhc)

    lib = {"scipy": (s_logits, s_dw, s_dh), "numpy": (n_logits, n_dw, n_dh)}

    def full(which, kinds="FWH"):
        f_logits, f_dw, f_dh = lib[which]

        def run():
            if "F" in kinds:
                f_logits(h, logits)
            if "W" in kinds:
                f_dw(h, logits, True)
            if "H" in kinds:
                f_dh(logits, dh)
        return run

    def chunked(which, rows, kinds="FWH"):
        f_logits, f_dw, f_dh = lib[which]
        buf_all = logits[:rows]  # a chunk buffer (the first rows of the big one)

        def run():
            for start in range(0, n, rows):
                stop = min(start + rows, n)
                hc, buf = h[start:stop], buf_all[: stop - start]
                if "F" in kinds:
                    f_logits(hc, buf)
                if "W" in kinds:
                    f_dw(hc, buf, start == 0)
                if "H" in kinds:
                    f_dh(buf, dh[start:stop])
        return run

    tile = _linear_ce.tile_size(v, d, 4)
    capsule = _linear_ce._gemm_capsule(np.dtype(np.float32))
    parts_n = _linear_ce.PARTS

    def sweep(rows):
        buffer = logits[:rows]
        parts = np.empty(parts_n * rows * d, np.float32)

        def run():
            with _linear_ce._one_blas_thread():
                _kernels.lce_sweep(capsule, buffer, None, h[:rows], w, None, None, 1.0,
                                   False, tile, parts_n, threads)
                for start in range(0, n, rows):
                    stop = min(start + rows, n)
                    block = parts[: parts_n * (stop - start) * d].reshape(parts_n, -1, d)
                    following = h[stop:stop + rows] if stop < n else None
                    used = _kernels.lce_sweep(capsule, buffer, h[start:stop], following, w,
                                              dw, block, 1.0, start > 0, tile, parts_n,
                                              threads)
                    np.sum(block[:used], axis=0, out=dh[start:stop])
        return run

    def ce(rows):
        """The CE kernel alone on every chunk, in place on a chunk buffer holding logits."""
        buffer = logits[:rows]
        s_logits(h[:rows], buffer)
        saved = buffer.copy()

        def run():
            for start in range(0, n, rows):
                stop = min(start + rows, n)
                np.copyto(buffer, saved)  # timed apart below and subtracted
                _linear_ce._ce_on_chunk(buffer[: stop - start], target[start:stop],
                                        {"weight": None, "ignore_index": -100,
                                         "label_smoothing": 0.0},
                                        0.0, None, "sum", True, threads)

        def copies():
            for start in range(0, n, rows):
                np.copyto(buffer, saved)
        return run, copies

    def whole(rows):
        def run():
            fastloss.linear_cross_entropy(h, w, target, chunk_size=rows, n_threads=threads)
        return run

    variants = {"scipy full": full("scipy"), "numpy full": full("numpy")}
    for kind in "FWH":
        variants[f"scipy full {kind}"] = full("scipy", kind)
        variants[f"numpy full {kind}"] = full("numpy", kind)
    for rows in chunks:
        variants[f"scipy chunked {rows}"] = chunked("scipy", rows)
        variants[f"numpy chunked {rows} (dW no accumulate)"] = chunked("numpy", rows)
        for kind in "FWH":
            variants[f"scipy chunked {rows} {kind}"] = chunked("scipy", rows, kind)
            variants[f"numpy chunked {rows} {kind}"] = chunked("numpy", rows, kind)
    return variants, sweep, ce, whole


KIND_NAMES = {"F": "logits H W^T", "W": "dW = G^T H", "H": "dH = G W"}


def measure(n, d, v, threads, repeats, chunks, blas_only):
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    from threadpoolctl import threadpool_info, threadpool_limits

    import fastloss
    from fastloss import _linear_ce

    variants, sweep, ce, whole = build(n, d, v, threads, chunks)
    default = _linear_ce.default_chunk_size(n, v, d, 4)
    extra = {}
    if not blas_only:
        for rows in chunks:
            extra[f"fastloss sweep {rows} (GEMMs alone)"] = sweep(rows)
            run, copies = ce(rows)
            extra[f"CE kernel {rows} (+ buffer copy)"] = run
            extra[f"buffer copy {rows}"] = copies
        extra[f"fastloss.linear_cross_entropy {default}"] = whole(default)
    variants.update(extra)
    times = {name: [] for name in variants}
    with threadpool_limits(limits=threads, user_api="blas"):
        for name, fn in variants.items():  # warm-up (pools, page faults)
            if not name.endswith((" F", " W", " H")):
                fn()
        for repeat in range(repeats):
            for name, fn in variants.items():
                times[name].append(_time(fn))
                print(f"repeat {repeat}: {name}: {times[name][-1][0]:.3f} s", file=sys.stderr,
                      flush=True)
        info = [{k: lib.get(k) for k in ("prefix", "version", "architecture", "num_threads")}
                for lib in threadpool_info() if lib["user_api"] == "blas"]
    result = {"shape": [n, d, v], "threads": threads, "chunks": chunks, "default": default,
              "simd": fastloss.simd_level(), "blas": info,
              "coretype": os.environ.get("OPENBLAS_CORETYPE"), "rows": {}}
    for name, pairs in times.items():
        result["rows"][name] = {"wall": statistics.median(p[0] for p in pairs),
                                "cpu": statistics.median(p[1] for p in pairs),
                                "walls": [round(p[0], 3) for p in pairs]}
    return result


def table(result) -> None:
    rows = result["rows"]
    floor, cpu_floor = rows["scipy full"]["wall"], rows["scipy full"]["cpu"]
    print(f"shape (N, D, V) = {tuple(result['shape'])}, {result['threads']} threads, float32, "
          f"SIMD {result['simd']}, OPENBLAS_CORETYPE={result['coretype']}")
    for lib in result["blas"]:
        print(f"  BLAS {lib['prefix']} {lib['version']} core {lib['architecture']}")
    print("| what | median wall s | / scipy full | median CPU s | / scipy full | walls |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        label = name
        for kind, text in KIND_NAMES.items():
            if name.endswith(" " + kind):
                label = name[:-2] + ": " + text + " only"
        print(f"| {label} | {r['wall']:.3f} | {r['wall'] / floor:.3f} | {r['cpu']:.3f} | "
              f"{r['cpu'] / cpu_floor:.3f} | {r['walls']} |")
    for rows_n in result["chunks"]:
        ce_row = rows.get(f"CE kernel {rows_n} (+ buffer copy)")
        if ce_row:
            copy = rows[f"buffer copy {rows_n}"]
            ce_s = ce_row["wall"] - copy["wall"]
            print(f"CE kernel alone at chunk {rows_n}: {ce_s:.3f} s wall "
                  f"({ce_s / floor:.3f} of scipy full); chunked GEMMs + CE: "
                  f"{(rows[f'scipy chunked {rows_n}']['wall'] + ce_s) / floor:.3f}x, "
                  f"sweep + CE: "
                  f"{(rows[f'fastloss sweep {rows_n} (GEMMs alone)']['wall'] + ce_s) / floor:.3f}x")
    print()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="2048,1024,131072")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunks", default=None,
                        help="rows per chunk (default: N/16, the cap, and fastloss's default)")
    parser.add_argument("--coretypes", default="",
                        help="also rerun the BLAS rows per OPENBLAS_CORETYPE, comma-separated")
    parser.add_argument("--blas-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n, d, v = (int(x) for x in args.shape.split(","))
    if args.chunks:
        chunks = [int(c) for c in args.chunks.split(",")]
    else:
        from fastloss._linear_ce import default_chunk_size
        chunks = sorted({n // 16, default_chunk_size(n, v, d, 4)}, reverse=True)
    if args.child:
        print(json.dumps(measure(n, d, v, args.threads, args.repeats, chunks, args.blas_only)))
        return
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = [measure(n, d, v, args.threads, args.repeats, chunks, False)]
    table(results[-1])
    for coretype in [c for c in args.coretypes.split(",") if c]:
        command = [sys.executable, __file__, "--child", "--blas-only", "--shape", args.shape,
                   "--threads", str(args.threads), "--repeats", str(args.repeats),
                   "--chunks", ",".join(map(str, chunks))]
        done = subprocess.run(command, capture_output=True, text=True,
                              env=dict(os.environ, OPENBLAS_CORETYPE=coretype))
        if done.returncode != 0:
            print(f"OPENBLAS_CORETYPE={coretype}: failed: {done.stderr[-500:]}")
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        table(results[-1])
    print(f"load average after: {os.getloadavg()}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
