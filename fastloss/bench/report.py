"""The report's data (``Report``) and its rendering: the text table of the command, the
markdown file (``--markdown``) and the JSON file (``Report.to_json``, ``--json``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Sequence, Tuple

from .losses import LOSSES


@dataclasses.dataclass
class Report:
    machine: Dict[str, Any]
    settings: Dict[str, Any]
    results: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    failures: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped: List[str] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> Dict[str, Any]:
        return {"schema": "fastloss-bench/1", "machine": self.machine,
                "settings": self.settings, "results": self.results,
                "failures": self.failures, "skipped": self.skipped, "notes": self.notes,
                "seconds": self.seconds}


def _format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


COLUMNS = ("loss", "dtype", "shape", "threads", "implementation", "median", "±IQR/2", "repeats",
           "GB/s", "vs ref", "/copy", "/a+b", "/io", "/gemm")
FLOOR_COLUMNS = (("copy", "/copy"), ("add", "/a+b"), ("io", "/io"), ("gemm", "/gemm"))


def _table_rows(report: Report) -> List[List[str]]:
    order = {name: i for i, name in enumerate(LOSSES)}
    impl_order = ["reference", "copy-floor", "add-floor", "io-floor", "gemm-floor", "fastloss",
                  "fastloss-alloc"]
    rows = sorted(report.results, key=lambda r: (
        order.get(r["loss"], 99), r["dtype"], r["n_elements"],
        0 if r["family"] in ("reference", "floor") else r["threads"],
        impl_order.index(r["implementation"]) if r["implementation"] in impl_order else 9,
        r["implementation"]))
    table = []
    for r in rows:
        spread = (r["q3_s"] - r["q1_s"]) / 2 / r["median_s"] * 100
        table.append([
            r["loss"], r["dtype"], "x".join(map(str, r["shape"])), str(r["threads"]),
            r["implementation"], _format_time(r["median_s"]), f"{spread:.1f}%",
            f"{r['repeats']}×{r['calls_per_repeat']}",
            f"{r['gb_per_s']:.2f}", f"{r.get('speedup_vs_reference', float('nan')):.2f}",
        ] + [f"{r[key]:.2f}" if key in r else ""
             for key in (f"ratio_to_{floor}_floor" for floor, _ in FLOOR_COLUMNS)])
    return table


def _header_lines(report: Report) -> List[str]:
    m = report.machine
    caches = ", ".join(f"{k} {v}" for k, v in m["caches"].items()) or "unknown"
    lines = [
        f"fastloss {m['fastloss']} benchmark: SIMD level {m['simd_level']}, OpenMP "
        f"{'on' if m['openmp'] else 'off'} (default {m['default_n_threads']} threads)",
        f"CPU: {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs; "
        f"caches (per instance): {caches}",
        f"{m['os']}, Python {m['python']}, NumPy {m['numpy']}, compiler {m['compiler']} "
        f"{m['compile_flags']}".rstrip() + f"; load average at start {m['load_average']}",
        f"run {report.settings['date']}: sizes {','.join(report.settings['sizes'])}; dtypes "
        f"{','.join(report.settings['dtypes'])}; threads "
        f"{','.join(map(str, report.settings['threads']))}; compared: "
        f"{', '.join(report.settings['compare']) or 'none'}",
        "median of repeats ± half the interquartile range; repeats = timed samples × calls "
        "per sample; GB/s = (input + gradient + target bytes) / time; vs ref = reference "
        "time / time; /copy, /a+b, /io = time / floor time (np.copyto, np.add out=, every "
        "input read and every gradient written; 1 thread); /gemm = time / the three GEMMs' "
        "time at the row's thread count",
    ]
    lines += _shape_lines(report)
    return lines


# How each layout turns an element count into a shape (cases.layout_shape); "{width}" is
# the entry's width (D of rows, C of images).
_SHAPE_RULES = {
    "classes": "take an element count as N x C, C = 1000 from 64000 elements on, else "
               "max(2, isqrt(count)), N = max(1, count // C)",
    "rows": "take an element count as N x D rows, D = min({width}, count), "
            "N = max(1, count // D)",
    "image": "take an element count as N x C x H x W, C = {width}, H = W the largest power "
             "of two with C H W <= count (at most 256), N = max(1, count // (C H W))",
    "linear": "take an element count as the (N, V) logits (never held), N x D x V: "
              "V = min(32768, max(2, count // 64)), N = max(1, count // V), "
              "D = V // 128 within [16, 256]",
}
_DEFAULT_WIDTH = {"rows": 64, "image": 4}


def _shape_lines(report: Report) -> List[str]:
    """One line per layout (and width) that turned an element count into a shape: the rule,
    and "label -> shape" for each size (explicit shapes left out), in increasing size."""
    groups: Dict[tuple, Tuple[List[str], Dict[str, tuple]]] = {}
    for r in report.results:
        entry = LOSSES.get(r["loss"])
        shape = "x".join(map(str, r["shape"]))
        if entry is None or entry.layout == "flat" or r["size"] == shape:
            continue
        key = (entry.layout, entry.width or _DEFAULT_WIDTH.get(entry.layout),
               entry.max_named)
        names, shapes = groups.setdefault(key, ([], {}))
        if entry.name not in names:
            names.append(entry.name)
        shapes[r["size"]] = (math.prod(r["shape"]), shape)
    order = list(_SHAPE_RULES)
    lines = []
    for (layout, width, cap), (names, shapes) in sorted(
            groups.items(), key=lambda item: (order.index(item[0][0]), item[0][1] or 0,
                                              item[0][2] or 0)):
        who = ("class-index losses" if layout == "classes" and cap is None
               else ", ".join(names))
        rule = _SHAPE_RULES[layout].format(width=width)
        if cap is not None:
            rule = rule.replace("an element count", f"an element count (tiny, cache and "
                                f"large: at most {cap})", 1)
        if (layout != "classes" or cap is not None) and len(names) == 1:
            rule = rule.replace("take an", "takes an", 1)
        listed = ", ".join(f"{label} -> {shape}" for label, (_, shape) in
                           sorted(shapes.items(), key=lambda item: item[1][0]))
        lines.append(f"{who} {rule}: {listed}")
    return lines


def _summary(report: Report) -> Tuple[str, List[str], List[List[str]]]:
    """At each loss and dtype's largest size and most threads: fastloss's time, its ratio
    to the floor, and how many times faster it is than the reference and each peer."""
    fastloss_rows = [r for r in report.results if r["implementation"] == "fastloss"]
    if not fastloss_rows:
        return "", [], []
    peers = sorted({r["implementation"] for r in report.results
                    if r["family"] not in ("fastloss", "reference", "floor")})
    order = {name: i for i, name in enumerate(LOSSES)}
    columns = ["loss", "dtype", "shape", "threads", "fastloss", "/floor", "x reference"]
    columns += [f"x {peer}" for peer in peers]
    table = []
    groups = sorted({(r["loss"], r["dtype"]) for r in fastloss_rows},
                    key=lambda key: (order.get(key[0], 99), key[1]))
    for loss, dtype in groups:
        mine = [r for r in fastloss_rows if r["loss"] == loss and r["dtype"] == dtype]
        best = max(mine, key=lambda r: (r["n_elements"], r["threads"]))
        same = [r for r in report.results if r["loss"] == loss and r["dtype"] == dtype
                and r["size"] == best["size"]]
        entry = LOSSES.get(loss)
        floor = best.get(f"ratio_to_{entry.floor}_floor") if entry is not None else None
        if floor is None:
            floor = best.get("ratio_to_add_floor", best.get("ratio_to_copy_floor"))
        row = [loss, dtype, "x".join(map(str, best["shape"])), str(best["threads"]),
               _format_time(best["median_s"]), f"{floor:.2f}" if floor is not None else "",
               f"{best['speedup_vs_reference']:.1f}"]
        for peer in peers:
            # the peer at the same thread count (jax: all threads only)
            match = [r for r in same if r["implementation"] == peer
                     and r["threads"] == best["threads"]]
            row.append(f"{match[0]['median_s'] / best['median_s']:.1f}" if match else "")
        table.append(row)
    title = ("Summary: fastloss (out=) at the largest size and most threads; /floor = time "
             "over the loss's floor (a+b for element-wise and overlap losses, io for the pair "
             "and triplet losses, the three GEMMs at the same threads for "
             "linear_cross_entropy, copy otherwise); x NAME = how many times faster than NAME")
    return title, columns, table


def _aligned(columns: Sequence[str], table: List[List[str]], right_from: int,
             group_width: int = 0) -> List[str]:
    widths = [max([len(h)] + [len(row[i]) for row in table]) for i, h in enumerate(columns)]

    def fmt(cells):
        return "  ".join(c.rjust(w) if i >= right_from or c[:1].isdigit() and i == 3
                         else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [fmt(columns), fmt(["-" * w for w in widths])]
    previous = None
    for row in table:
        group = tuple(row[:group_width])
        if group_width and previous is not None and group != previous:
            out.append("")
        previous = group
        out.append(fmt(row))
    return out


def render_text(report: Report) -> str:
    out = list(_header_lines(report)) + [""]
    out += _aligned(COLUMNS, _table_rows(report), right_from=5, group_width=3)
    title, columns, summary = _summary(report)
    if summary:
        out += ["", title] + _aligned(columns, summary, right_from=4)
    out += _trailer_lines(report)
    return "\n".join(out) + "\n"


def _markdown_table(columns: Sequence[str], table: List[List[str]], right_from: int) -> List[str]:
    out = ["| " + " | ".join(columns) + " |",
           "|" + "|".join("---" if i < right_from else "---:" for i in range(len(columns))) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table]
    return out


def _trailer_lines(report: Report) -> List[str]:
    out = []
    for message in report.skipped:
        out.append(f"skipped: {message}")
    for note in report.notes:
        out.append(f"note: {note}")
    for failure in report.failures:
        out.append(f"FAILED: {failure['case']}: {failure['message']}")
    if report.failures:
        out.append(f"{len(report.failures)} implementation(s) FAILED the check against "
                   "the reference (not timed)")
    out.append(f"total time {report.seconds:.1f} s")
    return [""] + out if out else out


def render_markdown(report: Report) -> str:
    out = ["# fastloss benchmark", ""]
    out += [f"- {line}" for line in _header_lines(report)]
    title, columns, summary = _summary(report)
    if summary:
        out += ["", f"## {title.split(':')[0]}", "", title.split(": ", 1)[1] + ".", ""]
        out += _markdown_table(columns, summary, right_from=3)
        out += ["", "## All measurements", ""]
    else:
        out += [""]
    out += _markdown_table(COLUMNS, _table_rows(report), right_from=5)
    trailer = [line for line in _trailer_lines(report) if line]
    if trailer:
        out += [""] + [f"- {line}" for line in trailer]
    return "\n".join(out) + "\n"

