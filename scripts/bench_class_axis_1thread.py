"""One-thread CPU-time medians of the class-axis kernels (issue 13), for old/new A/B runs on a
shared machine: ``time.thread_time`` leaves out the time other processes hold the core, so
kernel changes show through a load that makes wall times useless.

    python scripts/bench_class_axis_1thread.py [repeats] [case prefixes, comma-separated]
                                                [out offset]
    PYTHONPATH=/path/to/old/tree python scripts/bench_class_axis_1thread.py   # the old build

float32, mean loss and gradient into ``out=``, ``n_threads=1``. Cases: K-dim CE and focal at
(8, 21, 256, 256) and (64, 10, 64, 64); (16384, 1000) CE with z_loss + logit_softcap + lse_out
(``zsl``), with z_loss + lse_out (``zl``); plain (N, C) CE at (16384, 1000) and (4096, 100).
Prints the median time, the time per element and the fastest repeat. `out offset`: the
out= arrays start that many bytes past a 64-byte boundary (default: where np.empty_like puts
them; for large arrays glibc's mmap chunks put them 16 bytes past one). Run old and new
alternately, twice or more: on a loaded machine even thread time moves by ~5 %.
"""

import statistics
import sys
import time

import numpy as np

import fastloss


def empty_at(like, offset):
    """np.empty_like(like), or with offset given an array starting offset bytes past a
    64-byte boundary."""
    if offset is None:
        return np.empty_like(like)
    buf = np.empty(like.nbytes + 128, np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    return buf[start:start + like.nbytes].view(like.dtype).reshape(like.shape)


def cases(rng, offset=None):
    for shape in [(8, 21, 256, 256), (64, 10, 64, 64)]:
        x = rng.standard_normal(shape, dtype=np.float32) * 3
        t = rng.integers(0, shape[1], (shape[0],) + shape[2:])
        out = empty_at(x, offset)
        yield (f"ce{shape}", x.size,
               lambda x=x, t=t, out=out: fastloss.softmax_cross_entropy(x, t, out=out,
                                                                        n_threads=1))
        yield (f"focal{shape}", x.size,
               lambda x=x, t=t, out=out: fastloss.softmax_focal(x, t, out=out, n_threads=1))
    for name, shape, opts in [("zsl", (16384, 1000), dict(z_loss=1e-4, logit_softcap=30.0)),
                              ("zl", (16384, 1000), dict(z_loss=1e-4)),
                              ("plain", (16384, 1000), None), ("plain", (4096, 100), None)]:
        x = rng.standard_normal(shape, dtype=np.float32) * 3
        t = rng.integers(0, shape[1], shape[0])
        out = empty_at(x, offset)
        if opts is not None:
            opts = dict(opts, lse_out=np.empty(shape[0], np.float32))
        yield (f"{name}{shape}", x.size,
               lambda x=x, t=t, out=out, opts=opts or {}: fastloss.softmax_cross_entropy(
                   x, t, out=out, n_threads=1, **opts))


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    only = sys.argv[2].split(",") if len(sys.argv) > 2 and sys.argv[2] else None
    offset = int(sys.argv[3]) if len(sys.argv) > 3 else None
    print(f"# fastloss from {fastloss.__file__}, {fastloss.simd_level()}, one thread, "
          f"thread CPU time, {repeats} repeats, out offset "
          f"{'as allocated' if offset is None else offset}", flush=True)
    for name, size, fn in cases(np.random.default_rng(0), offset):
        if only and not any(name.startswith(prefix) for prefix in only):
            continue
        fn()
        times = []
        for _ in range(repeats):
            start = time.thread_time()
            fn()
            times.append(time.thread_time() - start)
        median = statistics.median(times)
        print(f"{name:26s} {median * 1e3:8.3f} ms  {median / size * 1e9:6.3f} ns/element  "
              f"fastest {min(times) * 1e3:8.3f} ms", flush=True)


if __name__ == "__main__":
    main()
