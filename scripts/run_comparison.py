"""Run the full benchmark comparison and write docs/benchmark.md and docs/benchmark.png.

    python scripts/run_comparison.py [extra fastloss-bench options, e.g. --quick]

Compares fastloss with every peer that is installed (PyTorch eager and torch.compile, JAX,
scikit-learn, numba: ``pip install torch jax scikit-learn numba matplotlib``; the report says
plainly which are missing) at the default sizes, both dtypes, 1 thread and all threads. The
markdown holds the machine description and the table; the README shows both files. Takes
several minutes: torch.compile compiles every case for each thread count. Exits with the
report's status (1 if any implementation gave a wrong result).
"""
import os
import sys

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    from fastloss import bench

    docs = os.path.join(REPOSITORY, "docs")
    os.makedirs(docs, exist_ok=True)
    markdown = os.path.join(docs, "benchmark.md")
    plot = os.path.join(docs, "benchmark.png")
    print(f"fastloss from {os.path.dirname(bench.__file__)}", file=sys.stderr)
    status = bench.main(["--compare", "all", "--markdown", markdown, "--plot", plot]
                        + list(sys.argv[1:] if argv is None else argv))
    if status == 0:
        with open(markdown) as f:
            text = f.read()
        with open(markdown, "w") as f:
            f.write(text.replace(
                "# fastloss benchmark\n",
                "# fastloss benchmark\n\nWritten by `python scripts/run_comparison.py` "
                "(see `fastloss-bench --help`); the plot is [benchmark.png](benchmark.png).\n", 1))
    return status


if __name__ == "__main__":
    sys.exit(main())
