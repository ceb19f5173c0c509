"""The plot of the report (``--plot``, needs matplotlib): speedup over the reference or time
per element against size."""

from __future__ import annotations

import math
from typing import Any, Mapping

from .losses import LOSSES
from .report import Report


PLOT_METRICS = {
    # metric: (y-axis label, what the title says about it)
    "speedup": ("speedup over NumPy reference",
                "speedup over the NumPy reference (higher is faster)"),
    "time": ("ns per element of the input",
             "time per element of the differentiated input (lower is faster)"),
}


def plot_value(row: Mapping[str, Any], metric: str) -> float:
    """The y of one result row: its speedup over the reference, or its median time in
    nanoseconds per element of the differentiated input (of the (N, V) logits for
    linear_cross_entropy: what its sizes count)."""
    if metric == "speedup":
        return row["speedup_vs_reference"]
    if metric == "time":
        return row["median_s"] / row["n_elements"] * 1e9
    raise ValueError(f"unknown plot metric {metric!r}; choose from {', '.join(PLOT_METRICS)}")


def write_plot(report: Report, path: str, metric: str = "speedup") -> None:
    """``metric`` (speedup over the NumPy reference, or time per element) against input
    size, log-log: one panel per loss and dtype, one line per implementation and thread
    count (solid: the most threads measured, dashed: fewer; the floors, dotted grey, bound
    what a memory-bound kernel can reach). The reference is the line y = 1 of a speedup
    plot and a line of its own in a time plot."""
    if metric not in PLOT_METRICS:
        raise ValueError(f"unknown plot metric {metric!r}; choose from {', '.join(PLOT_METRICS)}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [name for name in LOSSES if any(r["loss"] == name for r in report.results)]
    losses += sorted({r["loss"] for r in report.results} - set(losses))
    dtypes = sorted({r["dtype"] for r in report.results})
    panels = [(loss, dtype) for dtype in dtypes for loss in losses]
    if not panels:
        raise ValueError("no results to plot")
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, sharey=True,
                             figsize=(4.4 * n_cols, 3.3 * n_rows + 1.2))
    impls = sorted({r["implementation"] for r in report.results if r["family"] == "fastloss"})
    impls += sorted({r["implementation"] for r in report.results
                     if r["family"] not in ("fastloss", "reference", "floor")})
    colors = {name: plt.cm.tab10(i % 10) for i, name in enumerate(impls)}
    if metric != "speedup":
        impls.append("reference")
        colors["reference"] = "black"
    floor_styles = {"copy-floor": ":", "add-floor": (0, (1, 3))}
    max_threads = max(report.settings["threads"])
    for ax, (loss, dtype) in zip(axes.flat, panels):
        rows = [r for r in report.results if r["loss"] == loss and r["dtype"] == dtype]
        lines = [(impl, threads) for impl in impls + list(floor_styles)
                 for threads in sorted({r["threads"] for r in rows
                                        if r["implementation"] == impl}, reverse=True)]
        for impl, threads in lines:
            points = sorted((r["n_elements"], plot_value(r, metric)) for r in rows
                            if r["implementation"] == impl and r["threads"] == threads)
            xs, ys = zip(*points)
            if impl in floor_styles:
                ax.plot(xs, ys, color="grey", linestyle=floor_styles[impl],
                        label=f"{impl} (1 thread)")
            else:
                # the reference is single-threaded NumPy: solid, like the most threads
                solid = threads == max_threads or impl == "reference"
                ax.plot(xs, ys, marker="o", markersize=4, color=colors[impl],
                        linestyle="-" if solid else "--",
                        label=f"{impl} ({threads} thread{'s' if threads > 1 else ''})")
        if metric == "speedup":
            ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{loss}, {dtype}", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    y_label, title = PLOT_METRICS[metric]
    for ax in axes[:, 0]:
        ax.set_ylabel(y_label, fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("elements of the input", fontsize=8)
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    legend_rows = math.ceil(len(handles) / 4)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=8)
    m = report.machine
    fig.suptitle(f"fastloss {m['fastloss']}, {m['cpu']} ({m['usable_cpus']} CPUs, SIMD "
                 f"{m['simd_level']}), {report.settings['date']}:\n{title}", fontsize=10)
    bottom = (0.25 * legend_rows + 0.3) / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.6 / fig.get_figheight()))
    fig.savefig(path, dpi=100)
    plt.close(fig)

