"""Logistic regression by full-batch gradient descent over a Dask array, with fastloss.dask.

The data (features X of shape (N, D), labels y in {0, 1}) are generated chunk by chunk on the
workers from a seed, never held whole by any worker: with the defaults, X is 1 GiB of float64
and each of the two workers has a 512 MiB memory limit. Every iteration computes, over the
whole data set,

    loss, g = fastloss.dask.binary_cross_entropy_with_logits(X @ w + b, y)   # "mean"
    grad_w = X.T @ g,  grad_b = sum(g)

and takes a step w -= lr grad_w, b -= lr grad_b. The same fit is then run in memory with
fastloss.binary_cross_entropy_with_logits on the same data (X concatenated from the same
chunks), and the two sets of coefficients are compared: they agree to float rounding, since
fastloss.dask's loss and gradient equal the single-machine call's to rounding.

    python scripts/dask_logistic_regression.py                       # the big run
    python scripts/dask_logistic_regression.py --rows 100000 --memory-limit 1GiB
    python scripts/dask_logistic_regression.py --skip-in-memory      # only the Dask fit

tests/test_dask.py runs the same functions on small data.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import dask
import dask.array as da

import fastloss
import fastloss.dask


def true_coefficients(n_features: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 2**31]).uniform(-1.0, 1.0, n_features)


def data_chunk(seed: int, index: int, n_rows: int, coefficients: np.ndarray):
    """Chunk `index` of the data set: X (n_rows, D) standard normal and y = 1 where
    X @ coefficients + logistic noise > 0, so P(y = 1 | x) = sigmoid(x @ coefficients)."""
    features = np.random.default_rng([seed, index, 0]).standard_normal(
        (n_rows, coefficients.size))
    noise = np.random.default_rng([seed, index, 1]).logistic(size=n_rows)
    labels = (features @ coefficients + noise > 0).astype(np.float64)
    return features, labels


def _features_block(coefficients, seed, block_info=None):
    info = block_info[None]
    return data_chunk(seed, info["chunk-location"][0], info["chunk-shape"][0], coefficients)[0]


def _labels_block(coefficients, seed, block_info=None):
    info = block_info[None]
    return data_chunk(seed, info["chunk-location"][0], info["chunk-shape"][0], coefficients)[1]


def row_chunks(n_rows: int, n_chunks: int) -> tuple:
    """n_chunks chunk sizes adding up to n_rows, as even as possible (the last ones larger)."""
    base, extra = divmod(n_rows, n_chunks)
    return tuple(base + (i >= n_chunks - extra) for i in range(n_chunks))


def dask_data(n_rows: int, n_features: int, chunks: tuple, seed: int = 0):
    """(X, y) as lazy Dask arrays: every chunk is generated where it is used."""
    assert sum(chunks) == n_rows
    coefficients = true_coefficients(n_features, seed)
    features = da.map_blocks(_features_block, coefficients, seed, dtype=np.float64,
                             chunks=(chunks, (n_features,)),
                             meta=np.empty((0, 0), np.float64))
    labels = da.map_blocks(_labels_block, coefficients, seed, dtype=np.float64,
                           chunks=(chunks,), meta=np.empty((0,), np.float64))
    return features, labels


def numpy_data(n_rows: int, n_features: int, chunks: tuple, seed: int = 0):
    """The same (X, y) as dask_data, in memory."""
    coefficients = true_coefficients(n_features, seed)
    parts = [data_chunk(seed, index, size, coefficients) for index, size in enumerate(chunks)]
    return (np.concatenate([p[0] for p in parts]).reshape(n_rows, n_features),
            np.concatenate([p[1] for p in parts]))


def fit_dask(features, labels, iterations: int, learning_rate: float, scheduler=None,
             verbose: bool = False):
    """Full-batch gradient descent over Dask arrays; returns (w, b, losses)."""
    weights = np.zeros(features.shape[1])
    bias = 0.0
    losses = []
    for iteration in range(iterations):
        logits = features @ weights + bias
        loss, grad = fastloss.dask.binary_cross_entropy_with_logits(logits, labels)
        loss, grad_w, grad_b = dask.compute(loss, features.T @ grad, grad.sum(),
                                            scheduler=scheduler)
        weights = weights - learning_rate * grad_w
        bias = bias - learning_rate * float(grad_b)
        losses.append(float(loss))
        if verbose:
            print(f"  iteration {iteration:3d}  loss {float(loss):.12f}", flush=True)
    return weights, bias, losses


def fit_in_memory(features, labels, iterations: int, learning_rate: float):
    """The same descent with the single-machine fastloss call; returns (w, b, losses)."""
    weights = np.zeros(features.shape[1])
    bias = 0.0
    losses = []
    for _ in range(iterations):
        loss, grad = fastloss.binary_cross_entropy_with_logits(features @ weights + bias, labels)
        weights = weights - learning_rate * (features.T @ grad)
        bias = bias - learning_rate * float(grad.sum())
        losses.append(loss)
    return weights, bias, losses


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2**23)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="512MiB", help="per worker")
    parser.add_argument("--skip-in-memory", action="store_true")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    chunks = row_chunks(args.rows, args.chunks)
    data_bytes = args.rows * args.features * 8
    print(f"X: {args.rows} x {args.features} float64 = {data_bytes / 2**20:.0f} MiB in "
          f"{args.chunks} chunks; {args.workers} workers with memory_limit={args.memory_limit}")
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None,  # no dashboard; health
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # routes: any port
                      memory_limit=args.memory_limit) as cluster, Client(cluster) as client:
        limit = min(w.memory_limit for w in client.cluster.scheduler.workers.values())
        print(f"worker memory limit {limit / 2**20:.0f} MiB; data / limit = "
              f"{data_bytes / limit:.2f}")
        features, labels = dask_data(args.rows, args.features, chunks)
        start = time.perf_counter()
        w_dask, b_dask, losses = fit_dask(features, labels, args.iterations,
                                          args.learning_rate, scheduler=client, verbose=True)
        print(f"Dask fit: {time.perf_counter() - start:.1f} s, final loss {losses[-1]:.15f}")
    print("coefficients (Dask):", np.array2string(w_dask, precision=6), f"bias {b_dask:.6f}")
    if args.skip_in_memory:
        return 0
    features, labels = numpy_data(args.rows, args.features, chunks)
    start = time.perf_counter()
    w_mem, b_mem, losses_mem = fit_in_memory(features, labels, args.iterations,
                                             args.learning_rate)
    print(f"in-memory fit: {time.perf_counter() - start:.1f} s, final loss {losses_mem[-1]:.15f}")
    difference = max(np.max(np.abs(w_dask - w_mem) / np.abs(w_mem)),
                     abs(b_dask - b_mem) / abs(b_mem))
    print(f"max relative difference of the coefficients: {difference:.2e}")
    np.testing.assert_allclose(w_dask, w_mem, rtol=1e-10)
    np.testing.assert_allclose(b_dask, b_mem, rtol=1e-10)
    print("equal to float rounding (rtol 1e-10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
