"""The buffer cache of the arrays fastloss returns (issue 18; fastloss/_src/fl_buffers.c).

What it must guarantee: results bitwise identical with and without it; a buffer that a live
array (or a view of it) still uses is never handed out again; idle memory never above the cap
(trimmed when the cap is lowered, none at all with the cache off); the process's memory flat
over 10,000 calls; correct under concurrent Python threads and across fork(). The returned
arrays are ordinary: C-contiguous, owning their data, resizable.
"""

from __future__ import annotations

import gc
import io
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastloss
import reliability_cases as rc
from fastloss import _buffers, _kernels

CASES = rc.case_params()
MIN_BYTES = _kernels.BUFFER_MIN_BYTES
MiB = 1 << 20

try:  # the name of the NEP 49 handler an array was allocated with
    from numpy._core.multiarray import get_handler_name
except ImportError:  # numpy < 2
    from numpy.core.multiarray import get_handler_name


def stats() -> dict:
    return _kernels._buffer_cache_stats()


@pytest.fixture
def cap():
    """Set the cache's cap for one test (dropping what it holds first); restored after."""
    previous = fastloss.set_buffer_cache(0)

    def set_cap(max_bytes):
        fastloss.set_buffer_cache(max_bytes)
    yield set_cap
    gc.collect()
    fastloss.set_buffer_cache(previous)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------ the arrays

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.complex128])
@pytest.mark.parametrize("shape", [(0,), (3, 0), (), 7, (5, 3), (300, 1000), (2, 3, 40000)])
def test_result_empty_is_an_ordinary_array(cap, shape, dtype):
    cap(64 * MiB)
    array = _kernels.result_empty(shape, dtype)
    expected = np.empty(shape, dtype)
    assert array.shape == expected.shape and array.dtype == np.dtype(dtype)
    assert array.flags.c_contiguous and array.flags.owndata and array.flags.writeable
    assert array.base is None
    large = array.nbytes >= MIN_BYTES
    assert get_handler_name(array) == ("fastloss_buffer_cache" if large else "default_allocator")
    if large:
        assert array.ctypes.data % 64 == 0
    array[...] = 1  # every byte is usable
    assert (array == 1).all()


def test_result_empty_uses_numpy_allocator_when_off_or_small(cap):
    cap(0)
    assert get_handler_name(_kernels.result_empty((1000, 1000), np.float32)) == "default_allocator"
    cap(64 * MiB)
    small = _kernels.result_empty(MIN_BYTES // 8 - 1, np.float64)
    assert get_handler_name(small) == "default_allocator"
    assert get_handler_name(_kernels.result_empty(MIN_BYTES // 8, np.float64)) == \
        "fastloss_buffer_cache"


def test_result_empty_errors_are_numpy_errors(cap):
    cap(64 * MiB)
    for shape in [(-1,), (3, -2), ("a",), 2.5]:
        with pytest.raises((ValueError, TypeError)):
            _kernels.result_empty(shape, np.float32)
    with pytest.raises(TypeError):
        _kernels.result_empty((3,), "not a dtype")


SANITIZED = "-fsanitize=address" in _kernels.build_info()["compile_flags"]


@pytest.mark.skipif(SANITIZED, reason="ASan aborts the process on a malloc beyond its 1 TiB "
                                      "limit (allocator_may_return_null=0), by design")
def test_huge_allocation_fails_cleanly(cap):
    cap(64 * MiB)
    # 2^46 float32: 256 TiB, more than any address space this runs in
    with pytest.raises((MemoryError, ValueError)):
        _kernels.result_empty((1 << 46,), np.float32)
    assert stats()["cached_bytes"] == 0


def test_sizes_beyond_the_cap_or_intp_are_never_cached(cap):
    cap(64 * MiB)
    with pytest.raises((MemoryError, ValueError)):
        _kernels.result_empty((1 << 62, 1 << 3), np.float32)  # the byte count overflows
    # a buffer larger than the cap is freed, not cached
    big = _kernels.result_empty((65 * MiB // 4,), np.float32)
    assert get_handler_name(big) == "fastloss_buffer_cache"
    big[::1024] = 1
    del big
    assert stats()["cached_bytes"] == 0


@pytest.mark.skipif(not SANITIZED, reason="needs the ASan build (scripts/sanitize.sh asan)")
def test_asan_reports_a_touch_of_an_idle_buffer():
    """Idle buffers are poisoned under ASan (fl_buffers.c), so a stale pointer into one (the
    bug that reuse would otherwise hide from ASan: the memory is never free()d) is
    reported. In a child process, which ASan stops."""
    code = textwrap.dedent("""
        import ctypes, numpy as np
        from fastloss import _kernels
        _kernels._buffer_cache_set_max(64 << 20)
        array = _kernels.result_empty((100_000,), np.float32)
        array[:] = 1
        address = array.ctypes.data
        assert ctypes.string_at(address, 8) == np.ones(2, np.float32).tobytes()
        del array
        ctypes.string_at(address, 8)
        print("not reported")
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert "not reported" not in result.stdout
    assert "use-after-poison" in result.stderr, result.stderr[-2000:]


def test_calloc_path_zeroes_a_reused_buffer(cap):
    """np.empty of an object dtype asks the handler for zeroed memory (calloc): a buffer that
    held floats before must come back all zeros, i.e. all None."""
    cap(64 * MiB)
    garbage = _kernels.result_empty((100_000,), np.float64)
    garbage.fill(np.pi)
    del garbage
    hits = stats()["hits"]
    objects = _kernels.result_empty((100_000,), object)
    assert stats()["hits"] == hits + 1
    assert all(value is None for value in objects[:: 97])
    assert objects[-1] is None


def test_resize_of_a_cached_array_keeps_its_data(cap):
    """ndarray.resize reallocates through the array's handler (realloc)."""
    cap(64 * MiB)
    array = _kernels.result_empty((200_000,), np.float32)
    array[:] = np.arange(200_000, dtype=np.float32)
    array.resize((900_000,), refcheck=False)
    assert np.array_equal(array[:200_000], np.arange(200_000, dtype=np.float32))
    array.resize((150_000,), refcheck=False)
    assert np.array_equal(array, np.arange(150_000, dtype=np.float32))
    del array
    assert stats()["cached_bytes"] <= 64 * MiB


USER_HANDLER_SCRIPT = textwrap.dedent(
    """
    import ctypes
    import numpy as np
    import fastloss
    from numpy._core import _multiarray_umath
    from numpy._core.multiarray import get_handler_name

    # a NEP 49 handler of the user's own ("user_handler": libc's malloc family), installed
    # with NumPy's C API through ctypes
    libc = ctypes.CDLL(None)
    libc.malloc.restype = libc.calloc.restype = libc.realloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    calls = []
    malloc = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(
        lambda ctx, size: calls.append(size) or libc.malloc(size))
    calloc = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t)(
        lambda ctx, n, size: libc.calloc(n, size))
    realloc = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(
        lambda ctx, ptr, size: libc.realloc(ptr, size))
    free = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(
        lambda ctx, ptr, size: libc.free(ptr))

    class Handler(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char * 127), ("version", ctypes.c_uint8),
                    ("ctx", ctypes.c_void_p), ("malloc", ctypes.c_void_p),
                    ("calloc", ctypes.c_void_p), ("realloc", ctypes.c_void_p),
                    ("free", ctypes.c_void_p)]

    cast = lambda f: ctypes.cast(f, ctypes.c_void_p).value
    handler = Handler(b"user_handler", 1, None, cast(malloc), cast(calloc), cast(realloc),
                      cast(free))
    api = ctypes.pythonapi
    api.PyCapsule_New.restype = ctypes.py_object
    api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    capsule = api.PyCapsule_New(ctypes.addressof(handler), b"mem_handler", None)
    table = ctypes.cast(api.PyCapsule_GetPointer(_multiarray_umath._ARRAY_API, None),
                        ctypes.POINTER(ctypes.c_void_p))
    set_handler = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object)(table[304])

    x = np.random.default_rng(0).standard_normal((300, 1000), dtype=np.float32)
    y = np.arange(300) % 1000
    expected = fastloss.softmax_cross_entropy(x, y, reduction="none")
    assert get_handler_name(expected.grad) == "fastloss_buffer_cache"
    previous = set_handler(capsule)
    try:
        result = fastloss.softmax_cross_entropy(x, y, reduction="none")
        validated = fastloss.softmax_cross_entropy(np.asfortranarray(x), y)
    finally:
        set_handler(previous)
    assert get_handler_name(result.grad) == "user_handler", get_handler_name(result.grad)
    assert get_handler_name(validated.grad) == "user_handler"
    assert x.nbytes in calls
    assert np.array_equal(result.grad, expected.grad)
    del result, validated  # freed by the user's handler while it exists
    print("respected")
    """
)


def test_a_handler_set_by_the_user_is_respected(tmp_path):
    """With a NEP 49 handler of the user's own in force, fastloss allocates its results with
    it (and caches nothing) instead of overriding it. In a fresh interpreter: the handler is
    made of ctypes callbacks."""
    script = tmp_path / "user_handler.py"
    script.write_text(USER_HANDLER_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "respected" in result.stdout


# ------------------------------------------------------------------ the losses

def _calls(case, rng, dtype):
    """Calls that return large arrays: fast path (plain arrays) and validated path
    (a Fortran-ordered input), every reduction, with and without a gradient."""
    args, kwargs = case.valid_call(rng, dtype, 300_000)
    fortran = (np.asfortranarray(args[0]),) + tuple(args[1:])
    calls = []
    for arguments in (args, fortran):
        for reduction in ("mean", "sum", "none"):
            calls.append((arguments, dict(kwargs, reduction=reduction)))
        calls.append((arguments, dict(kwargs, reduction="none", compute_grad=False)))
    return calls


def _snapshot(result):
    loss, grad = result
    return (np.array(loss, copy=True), None if grad is None else grad.copy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_results_identical_with_and_without_the_cache(cap, case, dtype):
    function = case.function()
    calls = _calls(case, np.random.default_rng(11), dtype)
    cap(0)
    expected = [_snapshot(function(*args, **kwargs)) for args, kwargs in calls]
    cap(256 * MiB)
    for _ in range(3):  # the second and third rounds run on recycled buffers
        for (args, kwargs), (loss, grad) in zip(calls, expected):
            result = function(*args, **kwargs)
            np.testing.assert_array_equal(result.loss, loss, strict=True)
            if grad is None:
                assert result.grad is None
            else:
                np.testing.assert_array_equal(result.grad, grad, strict=True)
                assert get_handler_name(result.grad) == "fastloss_buffer_cache"
            if kwargs["reduction"] == "none":
                assert get_handler_name(result.loss) == (
                    "fastloss_buffer_cache" if result.loss.nbytes >= MIN_BYTES
                    else "default_allocator")
    assert stats()["hits"] > 0


@pytest.mark.parametrize("case", CASES)
def test_a_live_result_is_never_overwritten(cap, case):
    """A result kept alive, here only through a view of its gradient, keeps its values across
    later calls of the same size, none of which gets its buffer; once the view goes, the
    buffer is idle in the cache."""
    cap(256 * MiB)
    function = case.function()
    rng = np.random.default_rng(12)
    args, kwargs = case.valid_call(rng, np.float32, 300_000)
    others = [case.valid_call(rng, np.float32, 300_000) for _ in range(3)]
    kept = function(*args, **kwargs, reduction="none")
    expected = kept.grad.copy()
    address = kept.grad.ctypes.data
    view = kept.grad.reshape(-1)[1:]      # holds the gradient array (and its buffer) alive
    del kept
    for other_args, other_kwargs in others * 5:
        result = function(*other_args, **other_kwargs, reduction="none")
        assert result.grad.ctypes.data != address
        assert not np.shares_memory(result.grad, view)
        del result
    np.testing.assert_array_equal(view, expected.reshape(-1)[1:])
    held = stats()["cached_buffers"]
    del view
    gc.collect()
    assert stats()["cached_buffers"] == held + 1


def test_a_loop_reuses_the_previous_steps_gradient(cap):
    """In `loss, grad = f(x, y)` the old grad is freed after the call returns: the steady
    state alternates between two buffers and never allocates."""
    cap(256 * MiB)
    x = np.random.default_rng(13).standard_normal((512, 1000), dtype=np.float32)
    y = np.arange(512) % 1000
    grad = None
    addresses = set()
    for step in range(20):
        loss, grad = fastloss.softmax_cross_entropy(x, y)
        addresses.add(grad.ctypes.data)
        if step == 1:
            misses = stats()["misses"]
    assert len(addresses) == 2
    assert stats()["misses"] == misses


# ------------------------------------------------------------------ the cap

def test_idle_memory_never_above_the_cap_and_trimmed(cap):
    cap(6 * MiB)
    rng = np.random.default_rng(14)
    for _ in range(300):
        arrays = [_kernels.result_empty((int(rng.integers(MIN_BYTES // 4, 3 * MiB // 4)),),
                                        np.float32) for _ in range(int(rng.integers(1, 6)))]
        del arrays
        held = stats()
        assert held["cached_bytes"] <= 6 * MiB
        assert held["cached_buffers"] <= _kernels.BUFFER_SLOTS
    assert stats()["evictions"] > 0
    fastloss.set_buffer_cache(2 * MiB)
    assert stats()["cached_bytes"] <= 2 * MiB
    fastloss.set_buffer_cache(0)
    assert stats()["cached_bytes"] == 0 and stats()["cached_buffers"] == 0
    # with the cache off nothing is kept, even of the arrays allocated while it was on
    cap(64 * MiB)
    alive = _kernels.result_empty((MiB,), np.float32)
    fastloss.set_buffer_cache(0)
    del alive
    assert stats()["cached_bytes"] == 0


def test_slot_count_is_bounded(cap):
    cap(1 << 40)
    arrays = [_kernels.result_empty((MIN_BYTES // 4 + 64 * i,), np.float32) for i in range(50)]
    del arrays
    assert stats()["cached_buffers"] == _kernels.BUFFER_SLOTS


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux /proc")
@pytest.mark.skipif(SANITIZED, reason="ASan keeps freed memory in quarantine: RSS grows by design "
                                      "(scripts/sanitize.sh deselects test_memory's RSS test too)")
def test_rss_flat_over_ten_thousand_calls_and_never_above_the_cap(cap):
    """10,000 allocating calls over ten gradient sizes that together need far more than the
    cap (the cache keeps evicting and refilling): the resident set never grows by more than
    the cap plus the two results alive at a time (the previous step's, until the call
    returns) plus malloc's slack, and does not grow from the first half to the second. (An
    unbounded cache reached 7.4 MiB here, against the 4.8 MiB allowed.)"""
    max_bytes = 1 * MiB
    cap(max_bytes)
    rng = np.random.default_rng(15)
    inputs = []
    for rows in (330, 420, 530, 640, 780, 1000, 1250, 1500, 1900, 2300):  # 132 ... 920 kB
        x = rng.standard_normal((rows, 100), dtype=np.float32)
        inputs.append((x, rng.integers(0, 100, rows)))
    largest = max(x.nbytes for x, _ in inputs)
    gc.collect()
    baseline = rss_bytes()
    samples = []
    grad = None
    for call in range(10_000):
        x, y = inputs[(call // 7) % len(inputs)]
        # the previous grad stays alive during the call; one thread: on a busy 2-core host
        # a second thread's barrier can cost a scheduler quantum per call
        loss, grad = fastloss.softmax_cross_entropy(x, y, n_threads=1)
        if call % 100 == 99:
            samples.append(rss_bytes() - baseline)
            assert stats()["cached_bytes"] <= max_bytes
    del grad
    malloc_slack = 2 * MiB  # glibc keeps some freed heap memory (evicted buffers) mapped
    assert max(samples) <= max_bytes + 2 * largest + malloc_slack, samples
    # a leak of one 132 kB buffer per 100 calls would add 6.6 MB over the second half
    first, second = samples[:50], samples[50:]
    assert max(second) <= max(first) + MiB, (max(first), max(second))


# ------------------------------------------------------------------ threads and fork

def test_concurrent_threads_get_correct_results(cap):
    """Eight Python threads call the losses at once (the kernels release the GIL, so
    allocations, frees and kernels interleave), handing results to another thread to free."""
    cap(8 * MiB)
    rng = np.random.default_rng(16)
    work = []
    for index, case in enumerate(rc.enrolled()):
        args, kwargs = case.valid_call(rng, np.float32, 40_000 * (index + 1))
        kwargs = dict(kwargs, reduction="none")
        work.append((case.function(), args, kwargs,
                     _snapshot(case.function()(*args, **kwargs))))
    graveyard: queue.Queue = queue.Queue()
    errors = []

    def worker(seed):
        order = np.random.default_rng(seed)
        try:
            for _ in range(60):
                function, args, kwargs, (loss, grad) = work[order.integers(len(work))]
                result = function(*args, **kwargs, n_threads=int(order.integers(1, 3)))
                if not (np.array_equal(result.loss, loss) and np.array_equal(result.grad, grad)):
                    errors.append("a result differs")
                graveyard.put(result)        # freed by the reaper thread
        except Exception as error:  # noqa: BLE001 -- reported below
            errors.append(repr(error))

    def reaper():
        while graveyard.get() is not None:
            pass

    reaper_thread = threading.Thread(target=reaper)
    reaper_thread.start()
    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    graveyard.put(None)
    reaper_thread.join(60)
    assert not any(thread.is_alive() for thread in threads) and not reaper_thread.is_alive()
    assert not errors, errors[:5]
    assert stats()["cached_bytes"] <= 8 * MiB


FORK_SCRIPT = textwrap.dedent(
    """
    import hashlib, os, sys, threading
    import numpy as np
    import fastloss
    from fastloss import _kernels

    x = np.random.default_rng(1).standard_normal((600, 1000), dtype=np.float32)
    y = np.arange(600) % 1000

    def digest():
        loss, grad = fastloss.softmax_cross_entropy(x, y, reduction="none", n_threads=2)
        return hashlib.sha256(loss.tobytes() + grad.tobytes()).hexdigest()

    expected = digest()
    kept = fastloss.softmax_cross_entropy(x, y)     # a live result across the fork
    kept_copy = kept.grad.copy()
    stop = threading.Event()

    def churn():  # allocating and freeing while the main thread forks
        while not stop.is_set():
            _kernels.result_empty((300_000,), np.float32)

    churner = threading.Thread(target=churn)
    churner.start()
    children = []
    for _ in range(20):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            ok = all(digest() == expected for _ in range(5))
            ok = ok and np.array_equal(kept.grad, kept_copy)
            del kept
            ok = ok and digest() == expected
            os.write(write_end, b"ok" if ok else b"bad")
            os._exit(0)
        os.close(write_end)
        children.append((pid, read_end))
    stop.set()
    churner.join()
    for pid, read_end in children:
        answer = os.read(read_end, 16)
        os.waitpid(pid, 0)
        assert answer == b"ok", answer
    assert digest() == expected and np.array_equal(kept.grad, kept_copy)
    print("fork ok", _kernels._buffer_cache_stats()["hits"] > 0)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_fork_children_allocate_and_free(tmp_path):
    """Children forked while another thread allocates and frees through the cache (so the
    cache's lock may be held at the fork) compute the same results and exit; the parent goes
    on. In a fresh interpreter with a timeout: a deadlock fails instead of hanging."""
    script = tmp_path / "fork_cache.py"
    script.write_text(FORK_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("a forked child or the parent hung")
    assert process.returncode == 0, stderr
    assert "fork ok True" in stdout


# ------------------------------------------------------------------ configuration

def test_set_buffer_cache_validates_and_returns_the_previous_cap(cap):
    cap(12345 * 1024)
    assert fastloss.set_buffer_cache(7 * MiB) == 12345 * 1024
    assert fastloss.set_buffer_cache(np.int64(3 * MiB)) == 7 * MiB
    assert stats()["max_bytes"] == 3 * MiB
    for bad in (1.5, "1G", None, True):
        with pytest.raises(TypeError, match="max_bytes"):
            fastloss.set_buffer_cache(bad)
    with pytest.raises(ValueError, match="max_bytes"):
        fastloss.set_buffer_cache(-1)
    assert stats()["max_bytes"] == 3 * MiB


@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("off", 0), ("OFF", 0), ("268435456", 268435456), ("512M", 512 * MiB),
    ("512MiB", 512 * MiB), ("2g", 2 << 30), ("1.5G", 3 << 29), ("64k", 64 << 10),
    (" 8 MB ", 8 * MiB)])
def test_parse_size(text, expected):
    assert _buffers.parse_size(text) == expected


@pytest.mark.parametrize("text", ["-1", "lots", "1X", "", "1e9"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        _buffers.parse_size(text)


@pytest.mark.parametrize("value, cap_bytes, warns", [
    ("0", 0, False), ("96M", 96 * MiB, False), ("nonsense", None, True), (None, None, False)])
def test_environment_variable(value, cap_bytes, warns):
    env = {key: val for key, val in os.environ.items() if key != _buffers.ENVIRONMENT_VARIABLE}
    if value is not None:
        env[_buffers.ENVIRONMENT_VARIABLE] = value
    code = ("import warnings; warnings.simplefilter('always')\n"
            "import fastloss, io\n"
            "from fastloss import _kernels, _buffers\n"
            "print(_kernels._buffer_cache_stats()['max_bytes'], _buffers.default_cap())\n"
            "info = fastloss.show_config(file=io.StringIO())\n"
            "print(info['buffer_cache'])\n")
    result = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    first, config = result.stdout.splitlines()[:2]
    max_bytes, default = map(int, first.split())
    assert max_bytes == (default if cap_bytes is None else cap_bytes)
    assert (_buffers.ENVIRONMENT_VARIABLE in result.stderr) == warns
    assert config.startswith("off" if cap_bytes == 0 else "cap ")
    if value is not None and not warns:
        assert f"{_buffers.ENVIRONMENT_VARIABLE}={value}" in config


def test_show_config_reports_the_cache(cap):
    cap(5 * MiB)
    info = fastloss.show_config(file=io.StringIO())
    assert info["buffer_cache"].startswith("cap 5 MiB (from set_buffer_cache())")
