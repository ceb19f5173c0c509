"""Run the full benchmark comparison: docs/benchmark.md and .png, then docs/scaling.md and .png.

    python scripts/run_comparison.py [extra fastloss-bench options, e.g. --quick]

Compares fastloss with every peer that is installed (PyTorch eager and torch.compile, JAX,
scikit-learn, numba: ``pip install torch jax scikit-learn numba matplotlib``; the report says
plainly which are missing). Two runs of the report, one after the other in this process:

1. **The comparison**: the default sizes (tiny, cache, large), both dtypes, 1 thread and all
   threads; the plot is the speedup over the NumPy reference. The markdown holds the machine
   description and the table; the README shows both files.
2. **The scaling sweep**: 1, 10, 100, ..., 1e8 elements (class losses: the N x C each count
   becomes is listed in the markdown's header), float32, all threads only; the plot is the
   time per element (``--plot-y time``). At 1e8 elements the inputs (shared by the losses
   that take the same kind) and the reference's gradient take 2.4 GB, and the largest
   temporaries about 6 GB more (measured alone: the NumPy reference
   of sigmoid focal peaks at 6.3 GB, PyTorch eager at 4.9 GB); 10 GB of free memory is
   enough. The slowest calls (measured at 1e8: the sigmoid focal reference 18-20 s, PyTorch
   eager 11-12 s) exceed the report's cap of 2.5 s per measurement and are timed once; the
   ``repeats`` column and a note say which.

Extra options go to both runs, after the script's own, so they win: ``--losses huber``
narrows both, ``--budget`` sets both, and ``--quick`` makes both short (the sweep then stops
at 1e5 elements), which is how to smoke-test the script. ``--sizes``, ``--dtypes`` and
``--threads`` replace the sweep's too.

Run time on the 2-core machine of docs/benchmark.md (estimated: the comparison took 181 s;
the sweep from a ``--quick`` run of the small sizes and the per-call times above): the
comparison about 3 minutes, the sweep about 9 (3.5 for 1 to 1e6 elements, most of it in
torch.compile's and jax's compilations, one per loss and size; 1.5 for 1e7; 4 for 1e8,
where every slow implementation makes a checked call and then timed ones), about 12 minutes
in all. ``--quick``: 3.5 minutes. Run it on a quiet machine: other processes make the
multi-thread timings of the small sizes unreliable (the report notes the load average).
Exits with the worse of the two runs' statuses (1 if any implementation gave a wrong result).
"""
import os
import sys

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCALING_SIZES = "1,10,100,1e3,1e4,1e5,1e6,1e7,1e8"
QUICK_SCALING_SIZES = "1,10,100,1e3,1e4,1e5"


def _add_preamble(markdown: str, preamble: str) -> None:
    with open(markdown) as f:
        text = f.read()
    with open(markdown, "w") as f:
        f.write(text.replace("# fastloss benchmark\n", f"# fastloss benchmark\n\n{preamble}\n", 1))


def main(argv=None) -> int:
    from fastloss import bench

    extra = list(sys.argv[1:] if argv is None else argv)
    # bad options exit 2 here, before anything runs
    quick = bench.parse_settings(extra)[0].quick
    docs = os.path.join(REPOSITORY, "docs")
    os.makedirs(docs, exist_ok=True)
    markdown = os.path.join(docs, "benchmark.md")
    plot = os.path.join(docs, "benchmark.png")
    print(f"fastloss from {os.path.dirname(bench.__file__)}", file=sys.stderr)
    status = bench.main(["--compare", "all", "--markdown", markdown, "--plot", plot] + extra)
    if status == 0:
        _add_preamble(markdown, "Written by `python scripts/run_comparison.py` (see "
                      "`fastloss-bench --help`); the plot is [benchmark.png](benchmark.png). "
                      "The scaling sweep of the same run is [scaling.md](scaling.md).")

    scaling_md = os.path.join(docs, "scaling.md")
    scaling_png = os.path.join(docs, "scaling.png")
    sizes = QUICK_SCALING_SIZES if quick else SCALING_SIZES
    print(f"scaling sweep: sizes {sizes}, float32, all threads", file=sys.stderr)
    scaling_status = bench.main(
        ["--compare", "all", "--sizes", sizes, "--dtypes", "float32", "--threads", "all",
         "--markdown", scaling_md, "--plot", scaling_png, "--plot-y", "time"] + extra)
    if scaling_status == 0:
        _add_preamble(scaling_md, "Written by `python scripts/run_comparison.py`, its second "
                      "run (the first is [benchmark.md](benchmark.md)): the scaling sweep, "
                      "time per element against the number of elements. The plot is "
                      "[scaling.png](scaling.png). Sizes are element counts of the "
                      "differentiated input; the class-index losses' shapes are listed below. "
                      "The `repeats` column gives timed samples × calls per sample: the "
                      "slowest calls are timed once.")
    return max(status, scaling_status)


if __name__ == "__main__":
    sys.exit(main())
