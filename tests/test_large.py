"""Inputs of more than 2**31 elements (index arithmetic is 64-bit throughout), with the
gradient written over the input itself (out=input).

Slow (minutes) and big (8.6 GB for a class-index loss, 17.2 GB for an element-wise one,
whose target is as large as its input): skipped unless asked for,

    FASTLOSS_RUN_SLOW=1 pytest tests/test_large.py      # or: pytest --runslow tests/test_large.py

and skipped, saying so, when the machine has too little memory available.

The loss is held against fastloss.reference evaluated chunk by chunk before the call; the
gradient, on rows (or elements) sampled at the start, the end and across the 2**31 and 2**32
element boundaries, against the reference on those rows; and every row of a softmax
gradient must sum to 0, which shows every row was written.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import reliability_cases as rc

CASES = rc.case_params()
BEYOND = 2**31 + 4096  # elements
N_CLASSES = 1000
CHUNK = 2**24  # elements per reference chunk


def available_bytes() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fill_normal(array: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    flat = array.reshape(-1)
    for start in range(0, flat.size, CHUNK):
        rng.standard_normal(out=flat[start:start + CHUNK], dtype=np.float32)


def sample_indices(n: int, per_item: int) -> np.ndarray:
    """Items (rows or elements) at both ends and straddling the 2**31 and 2**32 element
    offsets, and a few in between."""
    picks = {0, 1, n - 2, n - 1, n // 2}
    for boundary in (2**31, 2**32):
        item = boundary // per_item
        picks.update(i for i in (item - 1, item, item + 1) if 0 <= i < n)
    picks.update(np.random.default_rng(0).integers(0, n, 8).tolist())
    return np.array(sorted(picks))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_more_than_2_31_elements_in_place(case, record_property):
    started = time.perf_counter()
    function, reference = case.function(), case.reference()
    if case.class_index:
        n_items, per_item = -(-BEYOND // N_CLASSES), N_CLASSES
        shape = (n_items, N_CLASSES)
        needed = n_items * N_CLASSES * 4 + n_items * 8
    else:
        n_items, per_item = BEYOND, 1
        shape = (BEYOND,)
        needed = 2 * BEYOND * 4
    if available_bytes() < needed + 2 * 2**30:
        pytest.skip(f"needs {needed / 2**30:.1f} GiB free, {available_bytes() / 2**30:.1f} available")

    x = np.empty(shape, dtype=np.float32)
    fill_normal(x, 1)
    if case.class_index:
        target = np.random.default_rng(2).integers(0, N_CLASSES, n_items)
    else:
        target = np.empty(shape, dtype=np.float32)
        fill_normal(target, 2)
        np.abs(target, out=target)
        np.minimum(target, 1, out=target)  # targets in [0, 1] suit every element-wise loss
    assert x.size > 2**31
    prepared = time.perf_counter()

    # the reference, chunk by chunk, before the input is overwritten
    items_per_chunk = max(1, CHUNK // per_item)
    expected_total = 0.0
    for start in range(0, n_items, items_per_chunk):
        stop = min(n_items, start + items_per_chunk)
        expected_total += float(np.sum(reference(x[start:stop], target[start:stop],
                                                 reduction="none", compute_grad=False).loss,
                                       dtype=np.float64))
    picks = sample_indices(n_items, per_item)
    saved_x, saved_target = x[picks].copy(), target[picks].copy()
    referenced = time.perf_counter()

    loss, grad = function(x, target, reduction="sum", out=x)
    kernel_done = time.perf_counter()

    assert grad is x
    assert loss == pytest.approx(expected_total, rel=1e-6)
    expected_grad = reference(saved_x, saved_target, reduction="sum").grad
    np.testing.assert_allclose(x[picks], expected_grad, rtol=1e-5, atol=1e-6)
    if case.name == "softmax_cross_entropy":
        row_sums = np.concatenate([np.abs(x[s:s + items_per_chunk].sum(axis=1, dtype=np.float64))
                                   for s in range(0, n_items, items_per_chunk)])
        assert row_sums.max() < 1e-5, "a row of the gradient does not sum to 0"
    else:
        assert np.isfinite(x[::997]).all()
    timings = {"prepare_s": prepared - started, "reference_s": referenced - prepared,
               "kernel_s": kernel_done - referenced, "total_s": time.perf_counter() - started}
    record_property("timings", {k: round(v, 2) for k, v in timings.items()})
    print(f"\n{case.name}: {x.size} elements ({x.nbytes / 2**30:.2f} GiB), in place: "
          + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
