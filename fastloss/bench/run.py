"""Running the report: the rows of each loss (reference, floors, fastloss, peers), checked
against the reference, then timed at each thread count."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import platform
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .cases import Case, Inputs, LossEntry, NotApplicable, check_result, make_case
from .losses import LOSSES
from .peers import _installed
from .report import Report
from .sizes import Size, _cache_sizes
from .timing import Call, Timing, _all_threads, measure, thread_limit

# --------------------------------------------------------------------------- implementations

@dataclasses.dataclass(frozen=True)
class Implementation:
    name: str
    family: str          # "fastloss", "reference", "floor", or a peer family
    build: Callable[[Case, int], Call]
    threaded: bool       # False: single-threaded whatever is asked, timed once per case
    # (case, result) -> None if right, else what is wrong; None: nothing to check
    check: Optional[Callable[[Case, Any], Optional[str]]] = None


def _fastloss_out(case: Case, n_threads: int) -> Call:
    kernel = case.entry.resolve_kernel()
    grads = tuple(np.empty_like(a) for a in case.differentiated)
    slots = case.entry.grad_slots or len(grads)
    out = grads[0] if slots == 1 else grads + (None,) * (slots - len(grads))
    args, params = case.args, dict(case.params)
    return lambda: kernel(*args, out=out, n_threads=n_threads, **params)


def _fastloss_alloc(case: Case, n_threads: int) -> Call:
    kernel = case.entry.resolve_kernel()
    args, params = case.args, dict(case.params)
    return lambda: kernel(*args, n_threads=n_threads, **params)


def _reference(case: Case, n_threads: int) -> Call:
    ref = case.entry.resolve_reference()
    args, params = case.args, dict(case.params)
    return lambda: ref(*args, **params)


def _copy_floor(case: Case, n_threads: int) -> Call:
    x, dst = case.x, np.empty_like(case.x)

    def call():
        np.copyto(dst, x)
        return dst
    return call


def _add_floor(case: Case, n_threads: int) -> Call:
    a, b, dst = case.args[0], case.args[1], np.empty_like(case.x)
    return lambda: np.add(a, b, out=dst)


def _io_floor(case: Case, n_threads: int) -> Call:
    """Every input array read once and every gradient written once, the least any
    implementation moves: each differentiated input is copied into a gradient buffer, or
    added to a non-differentiated array of its shape and dtype where there is one (the
    target of an overlap loss or of margin_ranking), np.add(x, t, out=g). Targets smaller
    than the inputs (one per row of a pair loss) are not read: 1/D of the traffic."""
    differentiated = case.differentiated
    others = [a for a in case.args[len(differentiated):]
              if a.shape == case.x.shape and a.dtype == case.x.dtype]
    pairs = [(a, others[k] if k < len(others) else None, np.empty_like(a))
             for k, a in enumerate(differentiated)]

    def call():
        for a, b, dst in pairs:
            if b is None:
                np.copyto(dst, a)
            else:
                np.add(a, b, out=dst)
        return [dst for _, _, dst in pairs]
    return call


def _check_io(case: Case, result) -> Optional[str]:
    differentiated = case.differentiated
    others = [a for a in case.args[len(differentiated):]
              if a.shape == case.x.shape and a.dtype == case.x.dtype]
    for k, (a, dst) in enumerate(zip(differentiated, result)):
        expected = a + others[k] if k < len(others) else a
        if not np.array_equal(dst, expected):
            return f"output {k} of the io floor is wrong"
    return None


@functools.lru_cache(maxsize=None)
def _blas_controller():
    """threadpoolctl's view of the BLAS libraries loaded (SciPy's, once scipy.linalg.blas is
    imported), or None without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def _gemm_floor(case: Case, n_threads: int) -> Call:
    """The three GEMMs of a linear layer's forward and backward, unchunked, at the given
    thread count, with the BLAS that fastloss.linear_cross_entropy calls (SciPy's ?gemm;
    NumPy's matmul without SciPy): logits = H W^T into an (N, V) buffer, dH = G W and
    dW = G^T H with that buffer as G. linear_cross_entropy does these with the CE kernel in
    between, chunk by chunk: the floor is its time without the loss and without chunking."""
    hidden, weight = case.args[:2]
    logits = np.empty((hidden.shape[0], weight.shape[0]), dtype=hidden.dtype)
    grad_hidden, grad_weight = np.empty_like(hidden), np.empty_like(weight)
    try:
        from scipy.linalg import blas
    except ImportError:
        blas = None
    controller = _blas_controller()

    def limit():
        if controller is None:
            return contextlib.nullcontext()
        return controller.limit(limits=n_threads, user_api="blas")

    if blas is None:
        def gemms():
            np.matmul(hidden, weight.T, out=logits)
            np.matmul(logits, weight, out=grad_hidden)
            np.matmul(logits.T, hidden, out=grad_weight)
    else:
        gemm = blas.sgemm if hidden.dtype == np.float32 else blas.dgemm

        def into(c, *args, **options):
            # the C-ordered arrays as their Fortran-ordered transposes: nothing is copied
            result = gemm(1.0, *args, c=c, overwrite_c=1, **options)
            if result.__array_interface__["data"][0] != c.__array_interface__["data"][0]:
                c[...] = result

        def gemms():
            into(logits.T, weight.T, hidden.T, trans_a=1)      # (H W^T)^T = W H^T
            into(grad_hidden.T, weight.T, logits.T)            # (G W)^T = W^T G^T
            into(grad_weight.T, hidden.T, logits.T, trans_b=1)  # (G^T H)^T = H^T G

    def call():
        with limit():
            gemms()
        return logits, grad_hidden, grad_weight
    return call


def _check_gemm(case: Case, result) -> Optional[str]:
    """The first rows of the three products, recomputed in float64 from the inputs."""
    hidden, weight = (a.astype(np.float64) for a in case.args[:2])
    logits, grad_hidden, grad_weight = result
    rows = slice(0, 4)
    g = logits.astype(np.float64)
    expected = (hidden[rows] @ weight.T, g[rows] @ weight, g[:, rows].T @ hidden)
    for name, got, want in zip(("logits", "dH", "dW"), (logits[rows], grad_hidden[rows],
                                                        grad_weight[rows]), expected):
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        if not np.allclose(got, want, rtol=1e-3, atol=1e-3 * scale):
            return f"the gemm floor's {name} is wrong"
    return None


def _check_copy(case: Case, result) -> Optional[str]:
    return None if np.array_equal(result, case.x) else "the copy differs from the input"


def _check_add(case: Case, result) -> Optional[str]:
    return None if np.array_equal(result, case.args[0] + case.args[1]) else "wrong sum"


FASTLOSS_IMPLS = (
    Implementation("fastloss", "fastloss", _fastloss_out, threaded=True, check=check_result),
    Implementation("fastloss-alloc", "fastloss", _fastloss_alloc, threaded=True,
                   check=check_result),
)
REFERENCE_IMPL = Implementation("reference", "reference", _reference, threaded=False)
COPY_FLOOR = Implementation("copy-floor", "floor", _copy_floor, threaded=False, check=_check_copy)
ADD_FLOOR = Implementation("add-floor", "floor", _add_floor, threaded=False, check=_check_add)
IO_FLOOR = Implementation("io-floor", "floor", _io_floor, threaded=False, check=_check_io)
# at each thread count: the GEMMs are compute-bound and threaded, as linear_cross_entropy's
GEMM_FLOOR = Implementation("gemm-floor", "floor", _gemm_floor, threaded=True, check=_check_gemm)
FLOOR_IMPLS = {"add": ADD_FLOOR, "io": IO_FLOOR, "gemm": GEMM_FLOOR}


def implementations(entry: LossEntry, peers: Sequence[str] = ()) -> List[Implementation]:
    """The rows of one loss: reference, floors, fastloss, then the requested peers that
    the table has for this loss (peers are implementation names such as "torch.compile").
    The copy floor is there for every loss; the a+b floor (a three-stream pass) for
    element-wise losses of two input arrays and the overlap losses; the io floor for the
    pair and triplet losses (every input read, every gradient written); the gemm floor for
    linear_cross_entropy (the three GEMMs alone); the penalties, of one array, and the
    class-index losses have only the copy floor."""
    rows = [REFERENCE_IMPL, COPY_FLOOR]
    if entry.floor in FLOOR_IMPLS:
        rows.append(FLOOR_IMPLS[entry.floor])
    rows += list(FASTLOSS_IMPLS)
    for name in peers:
        if name in entry.peers:
            rows.append(Implementation(name, name.split(".")[0], entry.peers[name],
                                       threaded=True, check=check_result))
    return rows


# --------------------------------------------------------------------------- the run

@dataclasses.dataclass
class Settings:
    losses: List[str]
    sizes: List[Size]
    dtypes: List[str]
    threads: List[int]
    peers: List[str]               # implementation names
    budget: float                  # seconds of repeats per measurement
    min_repeats: int
    max_total: float               # seconds at most per measurement (a slower call: once)
    seed: int = 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> Dict[str, Any]:
    import fastloss
    config = fastloss.show_config(file=io.StringIO())
    caches = _cache_sizes()
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": _all_threads(),
        "caches": {k: f"{v // 1024} KiB" if v < 1024 ** 2 else f"{v // 1024 ** 2} MiB"
                   for k, v in caches.items()},
        "os": f"{platform.system()} {platform.release()}",
        "python": config.get("python"),
        "numpy": config.get("numpy"),
        "fastloss": config.get("fastloss"),
        "simd_level": fastloss.simd_level(),
        "openmp": config.get("openmp"),
        "default_n_threads": config.get("default_n_threads"),
        "compiler": config.get("compiler"),
        "compile_flags": config.get("compile_flags"),
        "load_average": _load_average(),
    }


def _load_average() -> Optional[float]:
    """The 1-minute load average: runnable processes, including other users' (a busy
    machine makes timings, multi-thread ones most of all, unreliable)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_impl(case: Case, impl: Implementation, n_threads: int, settings: Settings,
              report: Report) -> Optional[Timing]:
    where = f"{case.entry.name} {case.dtype} {'x'.join(map(str, case.shape))} " \
            f"{n_threads} thread{'s' if n_threads > 1 else ''} {impl.name}"
    try:
        call = impl.build(case, n_threads)
        result = call()
    except NotApplicable as exc:
        note = f"{impl.name}: {exc}"
        if note not in report.notes:
            report.notes.append(note)
        return None
    except Exception as exc:  # noqa: BLE001 - reported as a failure, the run goes on
        message = f"raised {type(exc).__name__}: {exc}".strip()
        report.failures.append({"case": where, "implementation": impl.name, "message": message})
        _progress(f"  FAILED {where}: {message}")
        return None
    if impl.check is not None:
        problem = impl.check(case, result)
        if problem is not None:
            report.failures.append({"case": where, "implementation": impl.name,
                                    "message": problem})
            _progress(f"  FAILED {where}: wrong result: {problem}")
            return None
    del result
    return measure(call, budget=settings.budget, min_repeats=settings.min_repeats,
                   max_total=settings.max_total)


def _record(report: Report, case: Case, impl: Implementation, threads: int,
            timing: Timing) -> Dict[str, Any]:
    q1, q3 = timing.quartiles
    median = timing.median
    row = {
        "loss": case.entry.name, "dtype": str(case.dtype), "size": case.size_label,
        "shape": list(case.shape), "n_elements": case.n_elements, "threads": threads,
        "implementation": impl.name, "family": impl.family,
        "median_s": median, "q1_s": q1, "q3_s": q3, "min_s": min(timing.samples),
        "repeats": len(timing.samples), "calls_per_repeat": timing.calls_per_sample,
        "bytes": case.bytes_moved, "gb_per_s": case.bytes_moved / median / 1e9,
    }
    report.results.append(row)
    return row


def run(settings: Settings) -> Report:
    started = time.perf_counter()
    report = Report(machine=machine_description(), settings={
        "losses": settings.losses, "sizes": [s.label for s in settings.sizes],
        "dtypes": settings.dtypes, "threads": settings.threads, "compare": settings.peers,
        "budget_s": settings.budget, "min_repeats": settings.min_repeats,
        "max_total_s": settings.max_total,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    })
    entries = []
    for name in settings.losses:
        entry = LOSSES[name]
        if entry.resolve_kernel() is None or entry.resolve_reference() is None:
            import fastloss
            missing = "fastloss" if entry.resolve_kernel() is None else "fastloss.reference"
            message = (f"{name}: not in the installed {missing} {fastloss.__version__} "
                       "(skipped)")
            report.skipped.append(message)
            _progress(message)
            continue
        missing_needs = [(module, install) for module, install in entry.needs
                         if not _installed(module)]
        if missing_needs:
            module, install = missing_needs[0]
            message = f"{name}: needs {module}, which is not installed ({install}; skipped)"
            report.skipped.append(message)
            _progress(message)
        else:
            entries.append(entry)
    if "threadpoolctl" not in sys.modules and not _installed("threadpoolctl"):
        report.notes.append("threadpoolctl is not installed: other libraries' BLAS/OpenMP "
                            "pools are not limited in the 1-thread rows")

    total = len(entries) * len(settings.dtypes) * len(settings.sizes)
    done = 0
    for dtype in settings.dtypes:
        for size in settings.sizes:
            shared_inputs: Dict[tuple, Inputs] = {}
            for entry in entries:
                shape = entry.shape_for(size)
                key = (entry.make_inputs, shape)
                case = make_case(entry, size, dtype, settings.seed, shared_inputs.get(key))
                shared_inputs[key] = case.inputs
                done += 1
                _progress(f"[{done}/{total}] {entry.name} {dtype} {size.label} "
                          f"({'x'.join(map(str, shape))}) t={time.perf_counter() - started:.1f}s")
                _run_case(case, settings, report)
            del shared_inputs
    report.seconds = time.perf_counter() - started
    few = [r for r in report.results if r["repeats"] < settings.min_repeats]
    if few:
        report.notes.append(
            f"{len(few)} measurement(s) timed fewer than {settings.min_repeats} times: at "
            f"most {settings.max_total:g} s is spent on one measurement, and their calls are "
            "too slow for more (down to a single call; see the repeats column)")
    load_end = _load_average()
    report.machine["load_average_end"] = load_end
    load_start = report.machine["load_average"]
    # During the run this process itself keeps about one CPU busy.
    if (load_start or 0) > 0.5 or (load_end or 0) > 1.5:
        report.notes.append(
            f"the machine was busy with other processes (load average {load_start} at the "
            f"start, {load_end} at the end, on {_all_threads()} CPUs): timings, "
            "multi-thread ones most of all, are unreliable")
    return report


def _run_case(case: Case, settings: Settings, report: Report) -> None:
    impls = implementations(case.entry, settings.peers)
    reference = impls[0]
    assert reference is REFERENCE_IMPL
    # The reference's result is the oracle. Its first call is timed too: NumPy has nothing
    # to warm up, and at large sizes the reference dominates the run time.
    try:
        call = reference.build(case, 1)
        with thread_limit(1):
            start = time.perf_counter()
            loss, grad = call()
            first = time.perf_counter() - start
        case.expected = (float(loss), grad)
        del loss, grad
    except Exception as exc:  # noqa: BLE001
        report.failures.append({"case": f"{case.entry.name} {case.dtype} {case.size_label}",
                                "implementation": "reference",
                                "message": f"raised {type(exc).__name__}: {exc}"})
        return
    rows = {}
    with thread_limit(1):
        ref_timing = measure(call, budget=settings.budget, min_repeats=settings.min_repeats,
                             max_total=settings.max_total, first=first)
        rows["reference"] = _record(report, case, reference, 1, ref_timing)
        for impl in impls[1:]:
            if impl.threaded:
                continue
            # Floors are cheap: measured again for every loss, close in time to the rows
            # they normalise (a busy moment on a shared machine spoils one measurement).
            timing = _run_impl(case, impl, 1, settings, report)
            if timing is not None:
                rows[impl.name] = _record(report, case, impl, 1, timing)
    threaded_rows = []
    for n_threads in settings.threads:
        with thread_limit(n_threads):
            for impl in impls:
                if not impl.threaded:
                    continue
                timing = _run_impl(case, impl, n_threads, settings, report)
                if timing is not None:
                    threaded_rows.append(_record(report, case, impl, n_threads, timing))
    # a floor's time: one-thread floors (memory) for every row, a threaded floor (the
    # GEMMs) at the row's own thread count
    floors = {(r["implementation"], None): r["median_s"] for r in rows.values()
              if r["family"] == "floor"}
    floors.update({(r["implementation"], r["threads"]): r["median_s"] for r in threaded_rows
                   if r["family"] == "floor"})
    floor_names = sorted({name for name, _ in floors})
    for row in [*rows.values(), *threaded_rows]:
        row["speedup_vs_reference"] = rows["reference"]["median_s"] / row["median_s"]
        for floor in floor_names:
            time_of_floor = floors.get((floor, None), floors.get((floor, row["threads"])))
            if time_of_floor is not None:
                row[f"ratio_to_{floor.replace('-', '_')}"] = row["median_s"] / time_of_floor

