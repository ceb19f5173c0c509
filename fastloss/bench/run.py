"""Running the report: the rows of each loss (reference, floors, fastloss, peers), checked
against the reference, then timed at each thread count."""

from __future__ import annotations

import dataclasses
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
    out = grads[0] if len(grads) == 1 else grads
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


def implementations(entry: LossEntry, peers: Sequence[str] = ()) -> List[Implementation]:
    """The rows of one loss: reference, floors, fastloss, then the requested peers that
    the table has for this loss (peers are implementation names such as "torch.compile").
    The a+b floor (a three-stream pass) is there for element-wise losses of two input
    arrays; the penalties, of one array, have only the copy floor."""
    rows = [REFERENCE_IMPL, COPY_FLOOR] + ([ADD_FLOOR] if entry.floor == "add" else [])
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
        "shape": list(case.shape), "n_elements": int(case.x.size), "threads": threads,
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
    for row in [*rows.values(), *threaded_rows]:
        row["speedup_vs_reference"] = rows["reference"]["median_s"] / row["median_s"]
        for floor in ("copy-floor", "add-floor"):
            if floor in rows:
                row[f"ratio_to_{floor.replace('-', '_')}"] = (
                    row["median_s"] / rows[floor]["median_s"])

