"""The command line: ``python -m fastloss.bench`` and the ``fastloss-bench`` script."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional, Sequence, Tuple

from .losses import LOSSES
from .peers import PEER_FAMILIES, _installed
from .plot import PLOT_METRICS, write_plot
from .report import render_markdown, render_text
from .run import Settings, _progress, run
from .sizes import parse_size
from .timing import _all_threads


QUICK = dict(sizes="tiny,cache,large", dtypes="float32", threads="1,all", budget=0.03,
             min_repeats=3, max_total=0.4)
DEFAULT = dict(sizes="tiny,cache,large", dtypes="float32,float64", threads="1,all",
               budget=0.15, min_repeats=5, max_total=2.5)


def _capped() -> str:
    """Which losses count fewer elements at the named sizes (LossEntry.max_named)."""
    caps = {}
    for entry in LOSSES.values():
        if entry.max_named is not None:
            caps.setdefault(entry.max_named, []).append(entry.name)
    return "; ".join(f"{cap} elements for {', '.join(names)}" for cap, names in caps.items()) \
        or "nothing"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastloss-bench",
        description="Time fastloss's fused kernels against the NumPy reference, the memory "
                    "floor and (with --compare) other libraries. Every result is checked "
                    "against the reference first; a wrong result makes the command exit 1.",
        epilog="Sizes: tiny (4096 elements), cache (131072), large (>= 2**24, twice the "
               "last-level cache; capped at " + _capped() + "), an element count, or a "
               "shape: NxC (class "
               "losses, rows), NxCxHxW (dice, jaccard, tversky, dice_softmax), NxDxV "
               "(linear_cross_entropy). Losses: " + ", ".join(LOSSES) + " (dice_softmax: "
               "fastloss.dice with activation='softmax').")
    parser.add_argument("--quick", action="store_true",
                        help="a short run (float32, fewer repeats; under 20 s on 2 cores)")
    parser.add_argument("--losses", help="comma-separated losses (default: all)")
    parser.add_argument("--sizes", help=f"comma-separated sizes (default: {DEFAULT['sizes']})")
    parser.add_argument("--dtypes", help="float32,float64 (default: both; --quick: float32)")
    parser.add_argument("--threads", help="comma-separated thread counts or 'all' "
                                          "(default: 1,all)")
    parser.add_argument("--compare", default="",
                        help="peers: " + ", ".join(PEER_FAMILIES) + ", torch.compile, "
                             "torch.chunked, or all")
    parser.add_argument("--budget", type=float,
                        help="seconds of repeats per measurement (default 0.15; --quick 0.03)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the table as markdown")
    parser.add_argument("--plot", metavar="PATH.png",
                        help="plot speedup (or --plot-y) against size per loss (needs "
                             "matplotlib)")
    parser.add_argument("--plot-y", choices=tuple(PLOT_METRICS),
                        help="the plot's y axis: speedup over the NumPy reference (default) "
                             "or time per element of the input, in ns")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def _split(text: str) -> List[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_settings(argv: Optional[Sequence[str]]) -> Tuple[argparse.Namespace, Settings, List[str]]:
    """Parse the command line; argparse exits with status 2 on bad arguments. Returns the
    namespace, the settings, and the messages about requested peers that are missing."""
    parser = _parser()
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else DEFAULT

    losses = _split(args.losses) if args.losses else list(LOSSES)
    unknown = [name for name in losses if name not in LOSSES]
    if unknown or not losses:
        parser.error(f"unknown loss {', '.join(map(repr, unknown)) or '(none given)'}; "
                     f"choose from {', '.join(LOSSES)}")
    try:
        sizes = [parse_size(s) for s in _split(args.sizes or defaults["sizes"])]
    except ValueError as exc:
        parser.error(str(exc))
    if not sizes:
        parser.error("--sizes: no size given")
    for size in sizes:
        for name in losses:
            if size.shape is not None and not LOSSES[name].takes_shape(size.shape):
                try:
                    LOSSES[name].shape_for(size)
                except ValueError as exc:
                    parser.error(str(exc))
    dtypes = _split(args.dtypes or defaults["dtypes"])
    bad = [d for d in dtypes if d not in ("float32", "float64")]
    if bad or not dtypes:
        parser.error(f"unknown dtype {', '.join(map(repr, bad)) or '(none given)'}; "
                     "choose from float32, float64")
    threads = []
    for text in _split(args.threads or defaults["threads"]):
        if text == "all":
            value = _all_threads()
        elif text.isdigit() and int(text) >= 1:
            value = int(text)
        else:
            parser.error(f"--threads: {text!r} is not a positive integer or 'all'")
        if value not in threads:
            threads.append(value)
    if not threads:
        parser.error("--threads: no thread count given")

    peers, missing = [], []
    requested = _split(args.compare)
    if "all" in requested:
        requested = list(PEER_FAMILIES)
    known_impls = {impl: family for family in PEER_FAMILIES.values()
                   for impl in family.implementations}
    for name in requested:
        if name in PEER_FAMILIES:
            family, names = PEER_FAMILIES[name], PEER_FAMILIES[name].implementations
        elif name in known_impls:
            family, names = known_impls[name], (name,)
        else:
            parser.error(f"--compare: unknown implementation {name!r}; choose from "
                         f"{', '.join(PEER_FAMILIES)}, torch.compile, torch.chunked, all")
        if not _installed(family.module):
            message = f"{name} is not installed ({family.install}): not compared"
            if message not in missing:
                missing.append(message)
            continue
        peers += [n for n in names if n not in peers]

    budget = args.budget if args.budget is not None else defaults["budget"]
    if not budget > 0:
        parser.error("--budget must be positive")
    if args.plot_y and not args.plot:
        parser.error("--plot-y needs --plot PATH.png")
    if args.plot and not _installed("matplotlib"):
        parser.error("--plot needs matplotlib, which is not installed "
                     "(pip install matplotlib, or pip install 'fastloss[bench]')")
    return args, Settings(losses, sizes, dtypes, threads, peers, budget,
                          defaults["min_repeats"], defaults["max_total"], args.seed), missing


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the report; returns the exit status (0 ok, 1 a result was wrong, 2 bad arguments)."""
    args, settings, missing = parse_settings(argv)
    for message in missing:
        _progress(message)
    report = run(settings)
    report.notes[:0] = missing
    sys.stdout.write(render_text(report))
    sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_json(), f, indent=1)
        _progress(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render_markdown(report))
        _progress(f"wrote {args.markdown}")
    if args.plot:
        if report.results:
            write_plot(report, args.plot, args.plot_y or "speedup")
            _progress(f"wrote {args.plot}")
        else:
            _progress(f"no results: {args.plot} not written")
    if report.failures:
        _progress(f"{len(report.failures)} FAILURE(S): a result did not match the reference")
        return 1
    return 0

