"""Benchmark of fastloss.dask: loss + gradient over 2^27 float32 elements in 64 chunks.

For softmax cross-entropy ((N, C) logits, class-index targets) and binary cross-entropy with
logits ((N, D) logits, soft targets), "mean" reduction:

- wall: the median wall time, over --repeats runs, of computing the loss and the gradient on
  a LocalCluster of --workers worker processes (one thread each), the data persisted on the
  workers first and the gradient left there (persisted, not gathered: a training loop
  consumes it on the cluster);
- in memory: the median wall time of the single-machine fastloss call on the same data held
  by this process (n_threads=None: every core, as the cluster's workers together);
- ratio: wall / in memory;
- overhead per chunk: the worker time not spent running tasks, (wall x workers - busy) /
  chunks, where busy is the tasks' compute time from the scheduler's task stream;
- tiny: the wall time of the same graph over one sample per chunk (pure scheduling), per
  chunk;
- transfers: the time the workers spent moving data between them (task stream);
- chunk task: the median compute time of a chunk's kernel task on a worker, beside the
  in-memory call's thread time per chunk's worth of data (in memory x threads / chunks).

The targets' chunks are made from (on the worker of) the logits' chunks, as data loaded
together would be.

    python scripts/bench_dask.py                      # 2^27 elements, 64 chunks
    python scripts/bench_dask.py --log2-elements 25   # a smaller run
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import dask
import dask.array as da

import fastloss
import fastloss.dask


def _softmax_block(n_classes, seed, block_info=None):
    info = block_info[None]
    rows = info["chunk-shape"][0]
    rng = np.random.default_rng([seed, info["chunk-location"][0]])
    return rng.standard_normal((rows, n_classes), dtype=np.float32) * np.float32(3)


def _class_block(x_block, n_classes, seed, block_info=None):
    # takes the logits' block only to run where it is (as data loaded together would be)
    info = block_info[None]
    rng = np.random.default_rng([seed, info["chunk-location"][0], 1])
    return rng.integers(0, n_classes, x_block.shape[0], dtype=np.int64)


def _logit_block(width, seed, block_info=None):
    info = block_info[None]
    rng = np.random.default_rng([seed, info["chunk-location"][0]])
    return rng.standard_normal((info["chunk-shape"][0], width), dtype=np.float32)


def _soft_block(x_block, width, seed, block_info=None):
    info = block_info[None]
    rng = np.random.default_rng([seed, info["chunk-location"][0], 1])
    return rng.random(x_block.shape, dtype=np.float32)


def make_problem(name: str, n_elements: int, n_chunks: int, seed: int = 0):
    """(function name, x, target) as lazy Dask arrays of n_elements float32 in n_chunks."""
    if name == "softmax_cross_entropy":
        width = 256  # classes
        make_x, make_t = _softmax_block, _class_block
        t_meta, t_axes = np.empty((0,), np.int64), 1
    else:
        width = 64  # logits per sample
        make_x, make_t = _logit_block, _soft_block
        t_meta, t_axes = np.empty((0, 0), np.float32), 2
    rows = n_elements // width
    row_chunks = (rows // n_chunks,) * n_chunks
    x = da.map_blocks(make_x, width, seed, chunks=(row_chunks, (width,)), dtype=np.float32,
                      meta=np.empty((0, 0), np.float32))
    # each target chunk is made from (on the worker of) its logits chunk
    t = x.map_blocks(make_t, width, seed, dtype=t_meta.dtype, meta=t_meta,
                     drop_axis=1 if t_axes == 1 else ())
    return x, t


def time_cluster(client, name, x, t, repeats):
    from distributed import get_task_stream, wait

    function = getattr(fastloss.dask, name)
    times, overheads, transfers, kernels = [], [], [], []
    n_workers = len(client.scheduler_info()["workers"])
    for _ in range(repeats + 1):  # the first run warms up (imports, pools) and is dropped
        with get_task_stream(client) as stream:
            start = time.perf_counter()
            loss, grad = function(x, t)
            grad = client.persist(grad)
            loss = client.compute(loss)
            wait([grad, loss])
            value = loss.result()
            wall = time.perf_counter() - start
        busy = sum(part["stop"] - part["start"] for task in stream.data
                   for part in task["startstops"] if part["action"] == "compute")
        moved = sum(part["stop"] - part["start"] for task in stream.data
                    for part in task["startstops"] if part["action"] == "transfer")
        kernel_times = [part["stop"] - part["start"] for task in stream.data
                        if "-chunk-" in str(task["key"])
                        for part in task["startstops"] if part["action"] == "compute"]
        times.append(wall)
        overheads.append((wall * n_workers - busy) / x.numblocks[0])
        transfers.append(moved)
        kernels.append(statistics.median(kernel_times))
        del grad, loss
    return (statistics.median(times[1:]), statistics.median(overheads[1:]), value,
            statistics.median(transfers[1:]), statistics.median(kernels[1:]))


def time_tiny(client, name, n_chunks, repeats):
    """The same graph with one sample per chunk: what the scheduling alone costs."""
    x, t = make_problem(name, 256 * n_chunks if name == "softmax_cross_entropy" else 64 * n_chunks,
                        n_chunks)
    x, t = client.persist([x, t])
    function = getattr(fastloss.dask, name)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        loss, grad = function(x, t)
        client.compute([loss, grad], sync=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) / n_chunks


def time_in_memory(name, x, t, repeats, n_threads=None):
    function = getattr(fastloss, name)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        value, grad = function(x, t, n_threads=n_threads)
        times.append(time.perf_counter() - start)
        del grad
    return statistics.median(times[1:]), value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2-elements", type=int, default=27)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-limit", default="3GiB", help="per worker")
    parser.add_argument("--losses", nargs="+",
                        default=["softmax_cross_entropy", "binary_cross_entropy_with_logits"])
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    n_elements = 2**args.log2_elements
    load = os.getloadavg()
    print(f"fastloss {fastloss.__version__}, SIMD {fastloss.simd_level()}, "
          f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"2^{args.log2_elements} float32 elements in {args.chunks} chunks, "
          f"{args.workers} workers x 1 thread, median of {args.repeats}\n")
    rows = []
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                      memory_limit=args.memory_limit) as cluster, Client(cluster) as client:
        for name in args.losses:
            x, t = make_problem(name, n_elements, args.chunks)
            x, t = client.persist([x, t])
            wall, overhead, value, moved, kernel = time_cluster(client, name, x, t,
                                                               args.repeats)
            tiny = time_tiny(client, name, args.chunks, args.repeats)
            x_mem, t_mem = dask.compute(x, t)  # the same data, in this process
            del x, t
            in_memory, expected = time_in_memory(name, x_mem, t_mem, args.repeats)
            # the in-memory call's thread time per chunk's worth of data (cold data, a fresh
            # gradient: like a worker's chunk task; timing one chunk again and again would
            # time warm caches and recycled pages instead)
            per_chunk = in_memory * fastloss._kernels.default_n_threads() / args.chunks
            del x_mem, t_mem
            assert abs(value - expected) <= 1e-12 * abs(expected), (value, expected)
            rows.append((name, wall, in_memory, overhead, tiny, moved, kernel, per_chunk))
            print(f"  {name}: done ({time.strftime('%H:%M:%S')})", flush=True)
    load = os.getloadavg()
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print("| loss | cluster wall (s) | in memory (s) | ratio | overhead per chunk (ms) "
          "| tiny graph per chunk (ms) | transfers (s) | chunk task (ms) "
          "| in memory, thread time per chunk (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, wall, in_memory, overhead, tiny, moved, kernel, per_chunk in rows:
        print(f"| {name} | {wall:.3f} | {in_memory:.3f} | {wall / in_memory:.2f} | "
              f"{overhead * 1e3:.2f} | {tiny * 1e3:.2f} | {moved:.3f} | {kernel * 1e3:.1f} "
              f"| {per_chunk * 1e3:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
