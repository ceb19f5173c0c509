"""Timing: medians of batched repeats, and thread limits for every library timed."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import statistics
import sys
import time
from typing import Any, Callable, List, Optional, Tuple

# A zero-argument call that computes (loss, grad) or, for floors, an array.
Call = Callable[[], Any]


@dataclasses.dataclass
class Timing:
    samples: List[float]       # seconds per call, one entry per repeat
    calls_per_sample: int

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def quartiles(self) -> Tuple[float, float]:
        if len(self.samples) < 2:
            return self.samples[0], self.samples[0]
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[0], q[2]


def measure(call: Call, *, budget: float, min_repeats: int, max_repeats: int = 200,
            max_total: float = math.inf, min_sample: float = 2e-4,
            first: Optional[float] = None) -> Timing:
    """Median-able timings of ``call`` (which has been called at least once already, so
    caches, JITs and allocators are warm). Calls are batched so a sample lasts at least
    ``min_sample`` seconds; repeats fill ``budget`` seconds within [min_repeats, max_repeats],
    but take no more than ``max_total`` seconds (at least one sample: a call that slow is
    timed once). ``first``: the duration of a call just made that is representative (no
    warm-up effects), used as the first sample instead of making one more call."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if first is None:
            start = time.perf_counter()
            call()
            single = time.perf_counter() - start
        else:
            single = first
        samples = []
        calls = 1
        if single >= min_sample:
            samples.append(single)
        else:
            calls = max(2, math.ceil(min_sample / max(single, 1e-8)))
        per_sample = max(single * calls, 1e-9)
        repeats = int(min(max_repeats, max(min_repeats, budget / per_sample)))
        if max_total < math.inf:
            repeats = max(1, min(repeats, int(max_total / per_sample)))
        perf_counter = time.perf_counter
        while len(samples) < repeats:
            start = perf_counter()
            for _ in range(calls):
                call()
            samples.append((perf_counter() - start) / calls)
        return Timing(samples, calls)
    finally:
        if gc_was_enabled:
            gc.enable()


def _all_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def thread_limit(n_threads: int):
    """Limit the thread pools of numpy's BLAS, OpenMP runtimes (threadpoolctl), torch and
    numba to ``n_threads`` (fastloss gets n_threads explicitly)."""
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
            stack.enter_context(threadpool_limits(limits=n_threads))
        except ImportError:
            pass
        if "torch" in sys.modules:
            torch = sys.modules["torch"]
            before = torch.get_num_threads()
            torch.set_num_threads(n_threads)
            stack.callback(torch.set_num_threads, before)
        if "numba" in sys.modules:
            numba = sys.modules["numba"]
            before = numba.get_num_threads()
            numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
            stack.callback(numba.set_num_threads, before)
        yield
