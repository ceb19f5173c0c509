"""What n_threads=None resolves to, and that small inputs stay on the calling thread."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastloss
from fastloss import _kernels

threadpoolctl = pytest.importorskip("threadpoolctl")


def test_default_threads_follow_threadpoolctl_limits():
    if not fastloss.openmp_enabled():
        pytest.skip("built without OpenMP")
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert _kernels.default_n_threads() == 1
    assert _kernels.default_n_threads() >= 1


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity API")
def test_default_threads_never_exceed_the_affinity_mask():
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert _kernels.default_n_threads() == 1
        x = np.random.default_rng(0).standard_normal((2000, 100))
        y = np.zeros(2000, dtype=np.int64)
        pinned = fastloss.softmax_cross_entropy(x, y)       # runs, on one CPU
    finally:
        os.sched_setaffinity(0, before)
    assert _kernels.default_n_threads() == min(len(before), _kernels.default_n_threads())
    free = fastloss.softmax_cross_entropy(x, y)
    assert free.loss == pinned.loss                         # and the same bits either way
    np.testing.assert_array_equal(free.grad, pinned.grad)


def test_default_threads_follow_omp_num_threads():
    code = "from fastloss import _kernels; print(_kernels.default_n_threads())"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True, cwd=os.path.dirname(__file__))
    assert result.stdout.strip() == "1"


def test_cpu_quota_is_read():
    quota = _kernels.cpu_quota()
    assert quota >= 0
    if quota:
        assert _kernels.default_n_threads() <= quota


@pytest.mark.parametrize("n_threads", [1, 2, 4, None])
def test_small_inputs_give_the_same_bits_for_any_thread_request(n_threads):
    """Below the serial threshold a call never enters a parallel region."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 10))
    assert x.size < _kernels.SERIAL_THRESHOLD_ELEMENTS
    y = rng.integers(0, 10, 64)
    base = fastloss.softmax_cross_entropy(x, y, n_threads=1)
    other = fastloss.softmax_cross_entropy(x, y, n_threads=n_threads)
    assert other.loss == base.loss
    np.testing.assert_array_equal(other.grad, base.grad)


def test_serial_threshold_moves_only_speed_not_results():
    """scripts/serial_threshold.py lowers the threshold to 0 to time small inputs in
    parallel: the results are the same bits either way (block sums in block order)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(40000).astype(np.float32)   # three blocks, below the threshold
    t = rng.random(40000).astype(np.float32)
    serial = fastloss.sigmoid_focal(x, t, n_threads=2)
    previous = _kernels._set_serial_threshold(0)
    try:
        assert previous == _kernels.SERIAL_THRESHOLD_ELEMENTS
        parallel = fastloss.sigmoid_focal(x, t, n_threads=2)
    finally:
        _kernels._set_serial_threshold(previous)
    assert parallel.loss == serial.loss
    np.testing.assert_array_equal(parallel.grad, serial.grad)
    with pytest.raises(ValueError, match="elements >= 0"):
        _kernels._set_serial_threshold(-1)
