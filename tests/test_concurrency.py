"""Threads: the kernels release the GIL, run concurrently from several Python threads with
correct (bitwise deterministic) results, and share read-only inputs safely.

How "releases the GIL" is shown without timing the machine: a heartbeat thread stamps the
time in a pure-Python loop. While a call holds the GIL the heartbeat cannot run a single
bytecode, so its stamps show one gap as long as the call; while a kernel that released the
GIL runs, the heartbeat goes on stamping and its longest gap is a scheduler time slice. The
controls are the same C function, libc's usleep, called through ctypes.PyDLL (which keeps the
GIL) and ctypes.CDLL (which releases it): they show the method tells the two apart here.
This holds on a loaded machine too, where raw speed-ups do not.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time

import numpy as np
import pytest

import reliability_cases as rc

CASES = rc.case_params()
SWITCH_INTERVAL = 0.001  # seconds; so that the heartbeat gets the GIL soon after it is free
GAP_FRACTION = 0.5       # held: the heartbeat's longest gap covers more than this of a call
STEP = 0.0003            # seconds between heartbeat stamps
ATTEMPTS = 3             # a released GIL may look held while other processes take the CPUs


def call_inputs(case, seed, n_elements, dtype=np.float32):
    args, kwargs = case.valid_call(np.random.default_rng(seed), dtype, n_elements)
    return args, kwargs


class Heartbeat:
    """A thread that appends time.perf_counter() to a list as fast as it can."""

    def __init__(self):
        self.stamps = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        # one stamp per STEP at most: the list stays short (a long one, reallocated while it
        # grows, would itself make gaps, notably under AddressSanitizer)
        stamps, stop, clock = self.stamps, self.stop, time.perf_counter
        last = clock()
        while not stop.is_set():
            now = clock()
            if now - last > STEP:
                stamps.append(now)
                last = now

    def __enter__(self):
        self.old_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.thread.start()
        time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        sys.setswitchinterval(self.old_interval)

    def longest_gap(self, start, end):
        """The longest stretch of [start, end] without a heartbeat stamp."""
        stamps = np.asarray(self.stamps)
        inside = np.concatenate(([start], stamps[(stamps > start) & (stamps < end)], [end]))
        return float(np.diff(inside).max())


def gap_fractions(heartbeat, function, repeats=8):
    """For each of `repeats` calls of function(): (duration, longest heartbeat gap / duration)."""
    result = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        end = time.perf_counter()
        result.append((round(end - start, 4), round(heartbeat.longest_gap(start, end) / (end - start), 3)))
        time.sleep(0.003)
    return result


def held_in(calls):
    """How many calls the heartbeat could not run through."""
    return sum(fraction > GAP_FRACTION for _, fraction in calls)


def heartbeat_runs_through(function):
    """The heartbeat runs through (nearly) every call of function(), in one of ATTEMPTS
    rounds: a machine busy with other work can stall the heartbeat now and then, a held
    GIL stalls it in every call of every round. Returns (passed, rounds measured)."""
    rounds = []
    for _ in range(ATTEMPTS):
        with Heartbeat() as heartbeat:
            calls = gap_fractions(heartbeat, function)
        rounds.append(calls)
        if held_in(calls) <= 1:
            return True, rounds
    return False, rounds


def test_heartbeat_tells_a_held_gil_from_a_released_one():
    """The controls: the same 30 ms sleep in C, with the GIL kept (PyDLL) and released (CDLL)."""
    keep_gil = ctypes.PyDLL(None).usleep
    release_gil = ctypes.CDLL(None).usleep
    with Heartbeat() as heartbeat:
        held = gap_fractions(heartbeat, lambda: keep_gil(30000))
    assert held_in(held) >= len(held) - 1, held
    passed, rounds = heartbeat_runs_through(lambda: release_gil(30000))
    assert passed, rounds


@pytest.mark.parametrize("case", CASES)
def test_kernel_releases_the_gil(case):
    args, kwargs = call_inputs(case, 0, 16_000_000, np.float64)  # about 25 ms a call
    out = np.empty_like(args[0])
    function = case.function()
    function(*args, **kwargs, out=out, n_threads=1)  # warm up (page faults of out)
    passed, rounds = heartbeat_runs_through(
        lambda: function(*args, **kwargs, out=out, n_threads=1))
    assert min(duration for duration, _ in rounds[0]) > 0.005, f"calls too short: {rounds}"
    assert passed, f"the heartbeat stopped during the kernel: {rounds}"


def _run_in_threads(work, n_threads):
    """work(0), ..., work(n_threads - 1), each on a thread of its own; fails if one hangs."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"


def _intervals_overlap(intervals):
    """Total time during which two or more of the [start, end] intervals are open."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_count, last, overlap = 0, None, 0.0
    for when, step in events:
        if open_count >= 2:
            overlap += when - last
        open_count += step
        last = when
    return overlap


@pytest.mark.parametrize("case", CASES)
def test_four_threads_on_different_data(case, record_property):
    """4 Python threads, each on its own data and out, n_threads=1 (and 2: one OpenMP team per
    Python thread): every result bitwise equal to the same call made alone, and the calls
    overlap in time. Speed-up and CPU parallelism are recorded, not asserted."""
    function = case.function()
    n_threads_of = [1, 1, 2, 1]
    inputs = [call_inputs(case, seed, 2_000_000) for seed in range(4)]
    expected = [function(*args, **kwargs, n_threads=n) for (args, kwargs), n in
                zip(inputs, n_threads_of)]
    outs = [np.empty_like(args[0]) for args, _ in inputs]
    repeats = 8
    intervals = [[] for _ in range(4)]
    cpu = [0.0] * 4
    results = [None] * 4
    errors = []
    barrier = threading.Barrier(4)

    def work(index):
        try:
            (args, kwargs), out = inputs[index], outs[index]
            barrier.wait()
            cpu_start = time.thread_time()
            for _ in range(repeats):
                start = time.perf_counter()
                results[index] = function(*args, **kwargs, out=out, n_threads=n_threads_of[index])
                intervals[index].append((start, time.perf_counter()))
            cpu[index] = time.thread_time() - cpu_start
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    _run_in_threads(work, 4)
    assert not errors, errors
    for result, want, out in zip(results, expected, outs):
        assert result.grad is out
        assert result.loss == want.loss
        assert out.tobytes() == want.grad.tobytes()

    all_intervals = [iv for per_thread in intervals for iv in per_thread]
    wall = max(e for _, e in all_intervals) - min(s for s, _ in all_intervals)
    overlap = _intervals_overlap(all_intervals)
    assert overlap > 0.1 * wall, f"calls from different threads hardly overlap: {overlap} of {wall}"

    # for the report: the same 32 calls one after another, and the CPU time the threads used
    start = time.perf_counter()
    for index, ((args, kwargs), out) in enumerate(zip(inputs, outs)):
        for _ in range(repeats):
            function(*args, **kwargs, out=out, n_threads=n_threads_of[index])
    sequential = time.perf_counter() - start
    record_property("concurrent_wall_s", round(wall, 4))
    record_property("sequential_wall_s", round(sequential, 4))
    record_property("thread_cpu_over_wall", round(sum(cpu) / wall, 2))
    print(f"\n{case.name}: 4 threads x {repeats} calls: {wall * 1e3:.1f} ms concurrent, "
          f"{sequential * 1e3:.1f} ms sequential (speed-up {sequential / wall:.2f}x); "
          f"thread CPU time / wall = {sum(cpu) / wall:.2f}; overlap {overlap / wall:.0%} of wall")


@pytest.mark.parametrize("case", CASES)
def test_shared_read_only_inputs(case):
    """Several threads calling on the same read-only input and target arrays (the same
    memory, read concurrently by several OpenMP teams) get bitwise the result of a call made
    alone, and the inputs stay untouched."""
    function = case.function()
    args, kwargs = call_inputs(case, 7, 300_000, np.float64)
    args = tuple(np.asarray(a) for a in args)
    for array in args:
        array.flags.writeable = False
    saved = [a.tobytes() for a in args]
    reductions = ("mean", "sum", "none")
    expected = {r: function(*args, **kwargs, reduction=r) for r in reductions}
    failures = []

    def work(index):
        try:
            for step in range(12):
                reduction = reductions[(index + step) % 3]
                got = function(*args, **kwargs, reduction=reduction, n_threads=1 + step % 2)
                want = expected[reduction]
                if (np.asarray(got.loss).tobytes() != np.asarray(want.loss).tobytes()
                        or got.grad.tobytes() != want.grad.tobytes()):
                    failures.append((index, step, reduction))
        except BaseException as error:
            failures.append(error)

    _run_in_threads(work, 4)
    assert not failures, failures
    assert [a.tobytes() for a in args] == saved
