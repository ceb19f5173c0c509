"""The benchmark report (fastloss.bench): runs, writes its files, rejects bad arguments,
reports a wrong implementation as a failure, skips losses fastloss does not have, and its
peer entries compute the same quantity as each other. Timings are never asserted."""
import dataclasses
import importlib
import json
import math

import numpy as np
import pytest

from fastloss import bench

# Tiny settings: one loss, small custom sizes, one thread, a few milliseconds per timing.
FAST = ["--quick", "--losses", "softmax_cross_entropy", "--sizes", "64x10,3000",
        "--threads", "1", "--budget", "0.002"]


def test_report_runs_and_writes_json_and_markdown(tmp_path, capsys):
    json_path, md_path = tmp_path / "r.json", tmp_path / "r.md"
    status = bench.main(FAST + ["--dtypes", "float32,float64", "--json", str(json_path),
                                "--markdown", str(md_path)])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    report = json.loads(json_path.read_text())
    assert report["schema"] == "fastloss-bench/1"
    assert report["failures"] == []
    for key in ("cpu", "usable_cpus", "simd_level", "openmp", "numpy", "fastloss", "caches"):
        assert key in report["machine"]
    assert report["machine"]["simd_level"] in ("baseline", "avx2", "avx512")
    rows = report["results"]
    seen = {(r["dtype"], r["size"], r["implementation"]) for r in rows}
    for dtype in ("float32", "float64"):
        for size in ("64x10", "3000"):
            for impl in ("reference", "copy-floor", "fastloss", "fastloss-alloc"):
                assert (dtype, size, impl) in seen
    # 3000 elements with the class rule (C = isqrt(3000) = 54 below 64000 elements)
    assert {tuple(r["shape"]) for r in rows if r["size"] == "3000"} == {(55, 54)}
    for row in rows:
        assert row["median_s"] > 0 and row["q1_s"] <= row["median_s"] <= row["q3_s"]
        assert row["repeats"] >= 3
        n, c = row["shape"]
        itemsize = 4 if row["dtype"] == "float32" else 8
        assert row["bytes"] == 2 * n * c * itemsize + n * 8  # logits + gradient + int64 labels
        assert math.isclose(row["gb_per_s"], row["bytes"] / row["median_s"] / 1e9)
        assert row["speedup_vs_reference"] > 0 and row["ratio_to_copy_floor"] > 0
        assert "ratio_to_add_floor" not in row  # class-index loss: no three-stream floor
    reference = [r for r in rows if r["implementation"] == "reference"]
    assert all(r["speedup_vs_reference"] == 1.0 for r in reference)
    markdown = md_path.read_text()
    assert "| loss | dtype | shape | threads | implementation | median | ±IQR/2 | repeats |" \
        in markdown
    for row in rows:  # each measurement's repeats: samples × calls per sample
        assert f"| {row['repeats']}×{row['calls_per_repeat']} |" in markdown
    # the shape that the element count became (explicit shapes are not listed)
    assert "N = max(1, count // C): 3000 -> 55x54\n" in markdown
    # the summary: fastloss at the largest size, compared with the reference
    assert "| loss | dtype | shape | threads | fastloss | /floor | x reference |" in markdown
    assert "Summary: fastloss (out=) at the largest size" in out
    assert "softmax_cross_entropy" in markdown and report["machine"]["cpu"] in markdown
    # the table on stdout, the progress on stderr
    assert "fastloss-alloc" in out and "SIMD level" in out
    assert "[1/4] softmax_cross_entropy" in err


@pytest.mark.parametrize("argv, message", [
    (["--losses", "softmax_cross_entropy,nope"], "unknown loss 'nope'"),
    (["--sizes", "huge"], "unknown size 'huge'"),
    (["--sizes", "10x"], "NxC"),
    (["--compare", "tensorflow"], "unknown implementation 'tensorflow'"),
    (["--dtypes", "float16"], "unknown dtype 'float16'"),
    (["--threads", "0"], "'0' is not a positive integer"),
    (["--budget", "0"], "--budget must be positive"),
    (["--plot", "p.png", "--plot-y", "ns"], "argument --plot-y: invalid choice: 'ns'"),
    (["--plot-y", "time"], "--plot-y needs --plot PATH.png"),
    (["--no-such-option"], "unrecognized arguments"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc_info:
        bench.main(argv)
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_matplotlib_for_plot_exits_2_before_running(monkeypatch, capsys, tmp_path):
    real = bench._installed
    monkeypatch.setattr(bench.cli, "_installed", lambda module: module != "matplotlib" and real(module))
    with pytest.raises(SystemExit) as exc_info:
        bench.main(FAST + ["--plot", str(tmp_path / "p.png")])
    assert exc_info.value.code == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_missing_peer_is_named_and_the_run_goes_on(monkeypatch, capsys):
    real = bench._installed
    monkeypatch.setattr(bench.cli, "_installed", lambda module: module != "jax" and real(module))
    assert bench.main(FAST + ["--compare", "jax"]) == 0
    out, err = capsys.readouterr()
    assert "jax is not installed (pip install jax): not compared" in out
    assert "jax is not installed" in err


def test_compare_adds_peer_rows_checked_against_the_reference(tmp_path, capsys):
    pytest.importorskip("sklearn")
    json_path = tmp_path / "r.json"
    assert bench.main(FAST + ["--compare", "sklearn", "--json", str(json_path)]) == 0
    report = json.loads(json_path.read_text())
    assert report["settings"]["compare"] == ["sklearn"]
    assert {r["size"] for r in report["results"] if r["implementation"] == "sklearn"} == {
        "64x10", "3000"}


def test_wrong_implementation_is_a_failure(monkeypatch, capsys, tmp_path):
    entry = bench.LOSSES["softmax_cross_entropy"]
    right = entry.resolve_kernel()

    def broken(logits, target, **kwargs):
        loss, grad = right(logits, target, **kwargs)
        grad[0, 0] += 1e-3  # one wrong gradient entry
        return loss, grad

    monkeypatch.setitem(bench.LOSSES, entry.name, dataclasses.replace(entry, kernel=broken))
    json_path = tmp_path / "r.json"
    status = bench.main(FAST + ["--sizes", "64x10", "--json", str(json_path)])
    out, err = capsys.readouterr()
    assert status == 1
    assert "FAILED: softmax_cross_entropy float32 64x10 1 thread fastloss:" in out
    assert "gradient differs at 1 of 640 entries; first at (0, 0)" in out
    assert "FAILURE" in err
    report = json.loads(json_path.read_text())
    assert {f["implementation"] for f in report["failures"]} == {"fastloss", "fastloss-alloc"}
    # a wrong result is not timed: no row for it
    assert not [r for r in report["results"] if r["family"] == "fastloss"]


def test_wrong_loss_value_and_raising_implementation_are_failures(monkeypatch, capsys):
    entry = bench.LOSSES["softmax_cross_entropy"]
    right = entry.resolve_kernel()

    def wrong_loss(logits, target, out=None, **kwargs):
        if out is None:
            raise RuntimeError("kernel exploded")
        loss, grad = right(logits, target, out=out, **kwargs)
        return loss * 1.01, grad

    monkeypatch.setitem(bench.LOSSES, entry.name, dataclasses.replace(entry, kernel=wrong_loss))
    assert bench.main(FAST + ["--sizes", "64x10"]) == 1
    out = capsys.readouterr().out
    assert "fastloss: loss " in out and "reference" in out
    assert "fastloss-alloc: raised RuntimeError: kernel exploded" in out


def test_loss_missing_from_fastloss_is_skipped_with_a_message(monkeypatch, capsys):
    entry = dataclasses.replace(bench.LOSSES["huber"], name="not_a_fastloss_loss")
    monkeypatch.setitem(bench.LOSSES, entry.name, entry)
    argv = FAST[:]
    argv[argv.index("--losses") + 1] = "not_a_fastloss_loss,softmax_cross_entropy"
    assert bench.main(argv) == 0
    out, err = capsys.readouterr()
    message = "not_a_fastloss_loss: not in the installed fastloss"
    assert message in out and message in err
    assert "softmax_cross_entropy" in out


def test_loss_whose_optional_package_is_missing_is_skipped_with_a_message(monkeypatch, capsys):
    """linear_cross_entropy needs SciPy (the `linear` extra): without it the row is skipped
    with how to install it, and the run goes on and exits 0."""
    bench_run = importlib.import_module("fastloss.bench.run")
    real = bench_run._installed
    monkeypatch.setattr(bench_run, "_installed", lambda module: module != "scipy" and real(module))
    argv = FAST[:]
    argv[argv.index("--losses") + 1] = "linear_cross_entropy,huber"
    argv[argv.index("--sizes") + 1] = "tiny"
    assert bench.main(argv) == 0
    out, err = capsys.readouterr()
    message = "linear_cross_entropy: needs scipy, which is not installed"
    assert message in out and message in err and "fastloss[linear]" in out
    assert "\nhuber " in out   # its row of the summary


def test_large_size_is_capped_by_memory(monkeypatch):
    sizes = importlib.import_module("fastloss.bench.sizes")
    monkeypatch.setattr(sizes, "_cache_sizes", lambda: {"L3": 480 * 1024 ** 2})
    monkeypatch.setattr(sizes, "_memory_bytes", lambda: 0)
    assert sizes.named_sizes()["large"] == 1 << 27
    monkeypatch.setattr(sizes, "_memory_bytes", lambda: 23 * 1024 ** 3)
    assert sizes.named_sizes()["large"] == 1 << 26
    monkeypatch.setattr(sizes, "_memory_bytes", lambda: 1024 ** 3)
    assert sizes.named_sizes()["large"] == 1 << 24   # never below 2^24


@pytest.mark.parametrize("plot_y", [[], ["--plot-y", "speedup"], ["--plot-y", "time"]])
def test_plot_is_written(plot_y, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "plot.png"
    argv = FAST + ["--plot", str(path)] + plot_y
    if plot_y[-1:] != ["time"]:
        argv += ["--sizes", "64x10"]  # one test with both sizes is enough
    assert bench.main(argv) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_values_are_speedup_or_nanoseconds_per_element(tmp_path):
    row = {"median_s": 2e-3, "n_elements": 4000, "speedup_vs_reference": 7.5}
    assert bench.plot_value(row, "speedup") == 7.5
    assert math.isclose(bench.plot_value(row, "time"), 500.0)  # 2 ms / 4000 elements
    for call in (lambda: bench.plot_value(row, "ns"),
                 lambda: bench.write_plot(None, str(tmp_path / "p.png"), metric="ns")):
        with pytest.raises(ValueError, match="unknown plot metric 'ns'"):
            call()
    assert not (tmp_path / "p.png").exists()


def test_measurements_timed_fewer_times_than_the_minimum_are_noted(monkeypatch, capsys,
                                                                   tmp_path):
    # a cap per measurement far below one sample: every measurement is a single sample
    monkeypatch.setitem(bench.QUICK, "max_total", 1e-9)
    json_path = tmp_path / "r.json"
    assert bench.main(FAST + ["--sizes", "64x10", "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    # reference, copy floor, fastloss, fastloss-alloc
    assert "4 measurement(s) timed fewer than 3 times: at most 1e-09 s" in out
    rows = json.loads(json_path.read_text())["results"]
    assert len(rows) == 4 and all(r["repeats"] == 1 for r in rows)
    assert all(f"  1×{r['calls_per_repeat']}  " in out for r in rows)


def test_sizes():
    names = bench.named_sizes()
    assert names["tiny"] < names["cache"] < names["large"]
    assert names["large"] >= 1 << 24
    assert bench.parse_size("large").n_elements == names["large"]
    assert bench.parse_size("1e6") == bench.Size("1000000", n_elements=1000000)
    assert bench.parse_size("1_000").n_elements == 1000
    assert bench.parse_size("128x1000") == bench.Size("128x1000", shape=(128, 1000))
    assert bench.parse_size("8x4x256x256") == bench.Size("8x4x256x256", shape=(8, 4, 256, 256))
    assert bench.parse_size("4096x512x32768").shape == (4096, 512, 32768)
    for bad in ("0", "-5", "1.5", "x10", "3x4x5x6x7", "3x0x5", "big"):
        with pytest.raises(ValueError):
            bench.parse_size(bad)
    softmax, huber = bench.LOSSES["softmax_cross_entropy"], bench.LOSSES["huber"]
    assert softmax.shape_for(bench.parse_size("large")) == (names["large"] // 1000, 1000)
    assert softmax.shape_for(bench.parse_size("tiny")) == (64, 64)
    assert huber.shape_for(bench.parse_size("tiny")) == (4096,)
    assert huber.shape_for(bench.parse_size("8x9")) == (8, 9)


def test_check_result_finds_each_kind_of_difference():
    entry = bench.LOSSES["softmax_cross_entropy"]
    case = bench.make_case(entry, bench.parse_size("16x5"), "float32")
    loss, grad = entry.resolve_reference()(case.x, case.target)
    case.expected = (loss, grad)
    assert bench.check_result(case, (loss, grad)) is None
    assert "loss" in bench.check_result(case, (loss * (1 + 1e-3), grad))
    assert "shape" in bench.check_result(case, (loss, grad[:-1]))
    bad = grad.copy()
    bad[3, 2] = np.nan
    assert "first at (3, 2)" in bench.check_result(case, (loss, bad))
    assert "not (loss, grad)" in bench.check_result(case, None)


def test_measure_batches_fast_calls_and_keeps_the_repeat_bounds():
    calls = []
    timing = bench.measure(lambda: calls.append(1), budget=0.001, min_repeats=4, max_repeats=6)
    assert timing.calls_per_sample > 1  # a no-op is far below the 0.2 ms sample length
    assert 4 <= len(timing.samples) <= 6
    assert len(calls) == 1 + timing.calls_per_sample * len(timing.samples)
    q1, q3 = timing.quartiles
    assert q1 <= timing.median <= q3


# Peers whose first call compiles for seconds per loss: checked with --runslow (and by
# every report run, which checks each peer against the reference before timing it).
SLOW_PEERS = ("torch.compile", "numba")


def _peer_params():
    for name, entry in bench.LOSSES.items():
        for peer in entry.peers:
            marks = [pytest.mark.slow] if peer in SLOW_PEERS else []
            yield pytest.param(name, peer, marks=marks, id=f"{name}-{peer}")


# a small explicit size of each layout (the flat one an element count)
SMALL = {"flat": "3000", "classes": "24x7", "rows": "24x7", "image": "2x3x8x8",
         "linear": "24x16x40"}


@pytest.mark.parametrize("name, peer", list(_peer_params()))
def test_peer_entries_compute_the_same_quantity_as_the_reference(name, peer):
    """Each peer family's formula and factor conventions (sklearn's "half" losses,
    sample_weight = scale/n, smooth_l1 = huber/beta; the torch, jax and numba forms of each
    loss) give fastloss.reference's loss and gradients, for every loss that has the peer,
    at a small size in float64 (and float32 for numba, whose kernels are typed per dtype)."""
    entry = bench.LOSSES[name]
    pytest.importorskip(bench.PEER_FAMILIES[peer.split(".")[0]].module)
    size = SMALL[entry.layout]
    dtypes = ("float64", "float32") if peer == "numba" else ("float64",)
    for dtype in dtypes:
        case = bench.make_case(entry, bench.parse_size(size), dtype, seed=3)
        if name in ("mae", "l1_penalty") and peer != "sklearn":
            # the kink: the gradient is 0 there, as torch's (sklearn's AbsoluteError takes
            # the subgradient -1 at 0: the same loss, another convention where it has no
            # derivative, which the report's continuous random inputs never hit)
            case.x[:5] = 0.0 if name == "l1_penalty" else case.target[:5]
        case.expected = tuple(entry.resolve_reference()(*case.args, **case.params))
        result = entry.peers[peer](case, bench._all_threads())()
        assert bench.check_result(case, result) is None, (dtype, bench.check_result(case, result))


def test_every_loss_of_the_table_is_in_the_report_with_its_defaults():
    from fastloss._table import ELEMENTWISE
    names = list(bench.LOSSES)
    for row in ELEMENTWISE:
        entry = bench.LOSSES[row.name]
        assert entry.layout == "flat" and entry.floor == "add"
        assert dict(entry.params) == {p.name: p.default for p in row.params}
        # the inputs the row's kinds name (a probability input lies in (0, 1), ...)
        case = bench.make_case(entry, bench.parse_size("500"), "float32")
        assert case.x.shape == case.target.shape == (500,)
        if row.input_kind == "probability":
            assert 0 < case.x.min() and case.x.max() < 1
        if row.target_kind == "sign":
            assert set(np.unique(case.target)) == {-1.0, 1.0}
        # every peer family has the loss where it makes sense: torch where torch has it
        # or its formula is written, jax and numba always
        assert {"torch", "torch.compile", "jax", "numba"} <= set(entry.peers), row.name
    for name in ("softmax_cross_entropy", "softmax_focal", "gaussian_kl", "l1_penalty",
                 "l2_penalty"):
        assert name in names
    assert bench.LOSSES["l1_penalty"].floor == bench.LOSSES["l2_penalty"].floor == "copy"
    assert bench.LOSSES["softmax_focal"].floor == "copy"
    # scikit-learn's loss objects for squared error, absolute error, pinball, Poisson, Tweedie
    for name in ("mse", "mae", "pinball", "poisson_nll", "tweedie", "huber", "smooth_l1",
                 "binary_cross_entropy_with_logits", "softmax_cross_entropy"):
        assert "sklearn" in bench.LOSSES[name].peers, name


def test_report_runs_every_loss_of_the_table(tmp_path, capsys):
    """One tiny run of every loss: each table row, the class-axis losses, gaussian_kl and
    the penalties are rows of the report, with the floor each is measured against."""
    json_path = tmp_path / "r.json"
    argv = ["--quick", "--sizes", "256", "--threads", "1", "--budget", "0.0005",
            "--json", str(json_path)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    report = json.loads(json_path.read_text())
    assert report["failures"] == []
    seen = {(r["loss"], r["implementation"]) for r in report["results"]}
    for name, entry in bench.LOSSES.items():
        for impl in ("reference", "copy-floor", "fastloss", "fastloss-alloc"):
            assert (name, impl) in seen, (name, impl)
        for floor in ("add", "io", "gemm"):
            assert ((name, f"{floor}-floor") in seen) == (entry.floor == floor), (name, floor)
        assert f"\n{name} " in out   # a row of the summary table
    kl = [r for r in report["results"] if r["loss"] == "gaussian_kl"]
    assert {tuple(r["shape"]) for r in kl} == {(4, 64)}
    assert "N = max(1, count // D): 256 -> 4x64\n" in out
    # mean + log_var read, two gradients written
    assert {r["bytes"] for r in kl} == {4 * 4 * 256}


def test_console_script_entry_point_is_main():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    import pathlib
    pyproject = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    module, _, function = scripts["fastloss-bench"].partition(":")
    assert module == bench.__name__ and getattr(bench, function) is bench.main


def _load_run_comparison():
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "run_comparison.py"
    spec = importlib.util.spec_from_file_location("run_comparison", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("extra, sweep_sizes, statuses", [
    ([], "1,10,100,1e3,1e4,1e5,1e6,1e7,1e8", [0, 0]),
    (["--quick", "--losses", "huber"], "1,10,100,1e3,1e4,1e5", [0, 1]),
    (["--budget", "0.01"], "1,10,100,1e3,1e4,1e5,1e6,1e7,1e8", [1, 0]),
])
def test_comparison_script_runs_the_report_then_the_scaling_sweep(
        extra, sweep_sizes, statuses, monkeypatch, tmp_path, capsys):
    script = _load_run_comparison()
    monkeypatch.setattr(script, "REPOSITORY", str(tmp_path))
    runs = []

    def fake_main(argv):
        args, settings, _ = bench.parse_settings(argv)  # the real parser accepts them
        runs.append((argv, settings))
        with open(args.markdown, "w") as f:
            f.write("# fastloss benchmark\n\n- header\n")
        return statuses[len(runs) - 1]

    monkeypatch.setattr(bench, "main", fake_main)
    # the fake report draws nothing: matplotlib need not be installed for --plot to parse
    real_installed = bench._installed
    monkeypatch.setattr(bench.cli, "_installed",
                        lambda module: module == "matplotlib" or real_installed(module))
    assert script.main(extra) == max(statuses)
    (main_argv, _), (sweep_argv, sweep) = runs
    docs = tmp_path / "docs"
    assert main_argv == ["--compare", "all", "--markdown", str(docs / "benchmark.md"),
                         "--plot", str(docs / "benchmark.png")] + extra
    # the sweep: its own sizes, float32, all threads, time per element; extra options last
    assert sweep_argv[len(sweep_argv) - len(extra):] == extra
    assert sweep_argv[sweep_argv.index("--sizes") + 1] == sweep_sizes
    assert [s.n_elements for s in sweep.sizes] == [int(float(s)) for s in sweep_sizes.split(",")]
    assert sweep.dtypes == ["float32"] and sweep.threads == [bench._all_threads()]
    assert sweep_argv[sweep_argv.index("--plot") + 1] == str(docs / "scaling.png")
    assert sweep_argv[sweep_argv.index("--plot-y") + 1] == "time"
    assert sweep_argv[sweep_argv.index("--compare") + 1] == "all"
    # a run that failed keeps its markdown as the report wrote it
    for name, status in zip(("benchmark.md", "scaling.md"), statuses):
        text = (docs / name).read_text()
        assert ("Written by `python scripts/run_comparison.py`" in text) == (status == 0)
        assert text.startswith("# fastloss benchmark\n") and text.endswith("- header\n")


def test_comparison_script_rejects_bad_options_before_running(monkeypatch, tmp_path, capsys):
    script = _load_run_comparison()
    monkeypatch.setattr(script, "REPOSITORY", str(tmp_path))
    monkeypatch.setattr(bench, "main", lambda argv: pytest.fail("ran despite a bad option"))
    with pytest.raises(SystemExit) as exc_info:
        script.main(["--sizes", "huge"])
    assert exc_info.value.code == 2
    assert not (tmp_path / "docs").exists()


def test_scaling_sizes_become_class_shapes_of_at_most_1000_classes():
    entry = bench.LOSSES["softmax_cross_entropy"]
    script = _load_run_comparison()
    shapes = [entry.shape_for(bench.parse_size(s)) for s in script.SCALING_SIZES.split(",")]
    assert shapes == [(1, 2), (3, 3), (10, 10), (32, 31), (100, 100), (100, 1000),
                      (1000, 1000), (10000, 1000), (100000, 1000)]


# ------------------------------------------------------------------ the second wave's entries

SECOND_WAVE = ("multi_margin", "kl_divergence_with_logits", "dice", "jaccard", "tversky",
               "dice_softmax", "triplet_margin", "contrastive", "cosine_embedding",
               "margin_ranking", "linear_cross_entropy")


def test_every_loss_of_the_package_is_in_the_report():
    """Every loss function that fastloss exports has an entry (dice twice: sigmoid, and
    softmax as dice_softmax), with the peers the brief names."""
    import fastloss
    functions = {entry.function_name for entry in bench.LOSSES.values()}
    not_losses = {"LossResult", "LossGradHess", "openmp_enabled", "show_config", "simd_level",
                  "set_buffer_cache"}
    assert set(fastloss.__all__) - not_losses <= functions
    for name in SECOND_WAVE:
        entry = bench.LOSSES[name]
        assert {"torch", "torch.compile", "jax"} <= set(entry.peers), name
        assert ("monai" in entry.peers) == (entry.layout == "image"), name
    assert bench.LOSSES["dice_softmax"].params["activation"] == "softmax"
    assert bench.LOSSES["dice_softmax"].resolve_kernel() is fastloss.dice
    assert "torch.chunked" in bench.LOSSES["linear_cross_entropy"].peers
    assert bench.LOSSES["multi_margin"].params["p"] == 1
    floors = {name: bench.LOSSES[name].floor for name in SECOND_WAVE}
    assert floors == {"multi_margin": "copy", "kl_divergence_with_logits": "add", "dice": "add",
                      "jaccard": "add", "tversky": "add", "dice_softmax": "add",
                      "triplet_margin": "io", "contrastive": "io", "cosine_embedding": "io",
                      "margin_ranking": "io", "linear_cross_entropy": "gemm"}


def test_second_wave_shapes_of_the_named_and_explicit_sizes():
    names = bench.named_sizes()
    shape = {name: {label: bench.LOSSES[name].shape_for(bench.parse_size(label))
                    for label in ("tiny", "cache", "large")} for name in SECOND_WAVE}
    assert shape["dice"] == {"tiny": (1, 4, 32, 32), "cache": (2, 4, 128, 128),
                             "large": (16, 4, 256, 256)}
    assert shape["dice_softmax"]["cache"] == (1, 21, 64, 64)
    assert shape["triplet_margin"] == {"tiny": (32, 128), "cache": (1024, 128),
                                       "large": (32768, 128)}
    assert shape["margin_ranking"]["large"] == (1 << 22,)
    assert shape["linear_cross_entropy"] == {"tiny": (64, 16, 64), "cache": (64, 16, 2048),
                                             "large": (128, 256, 32768)}
    # the named sizes are capped at 2**22 elements (the references' time), whatever the cache
    assert shape["multi_margin"]["large"] == (4194, 1000)
    for name in SECOND_WAVE:
        assert math.prod(shape[name]["large"][:1] + shape[name]["large"][-1:]
                         if name == "linear_cross_entropy" else shape[name]["large"]) <= 1 << 22
    # explicit sizes give the issues' benchmark shapes, uncapped
    assert bench.LOSSES["dice"].shape_for(bench.parse_size("8x4x256x256")) == (8, 4, 256, 256)
    assert bench.LOSSES["triplet_margin"].shape_for(bench.parse_size("65536x128")) == (65536, 128)
    linear = bench.LOSSES["linear_cross_entropy"]
    assert linear.shape_for(bench.parse_size("4096x512x32768")) == (4096, 512, 32768)
    assert linear.shape_for(bench.parse_size(str(names["large"])))[0] == names["large"] // 32768
    case = bench.make_case(linear, bench.parse_size("24x16x40"), "float32")
    hidden, weight, target = case.args
    assert hidden.shape == (24, 16) and weight.shape == (40, 16) and target.shape == (24,)
    assert case.n_elements == 24 * 40     # what its sizes count: the logits
    onehot = bench.make_case(bench.LOSSES["dice_softmax"], bench.parse_size("2x3x4x4"),
                             "float64").target
    assert np.array_equal(onehot.sum(axis=1), np.ones((2, 4, 4)))


@pytest.mark.parametrize("argv, message", [
    (["--losses", "dice", "--sizes", "64x10"], "dice needs a 4-D size NxCxHxW"),
    (["--losses", "linear_cross_entropy", "--sizes", "8x4x256x256"],
     "linear_cross_entropy needs a 3-D size NxDxV"),
    (["--losses", "triplet_margin", "--sizes", "4096x512x32768"],
     "triplet_margin needs a 2-D size NxD"),
])
def test_a_shape_of_another_rank_than_the_layout_exits_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc_info:
        bench.main(argv)
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err


def test_second_wave_report_with_its_floors_and_shape_lines(tmp_path, capsys):
    """A tiny run of the new entries at two thread counts: the io floor (one thread), the
    gemm floor at each thread count with the fastloss rows' ratio to the one at their own
    count, the summary's /floor the entry's own floor, and the rule each layout used."""
    json_path = tmp_path / "r.json"
    argv = ["--quick", "--losses", "dice_softmax,triplet_margin,linear_cross_entropy",
            "--sizes", "2000", "--threads", "1,2", "--budget", "0.0005", "--json",
            str(json_path)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    report = json.loads(json_path.read_text())
    assert report["failures"] == []
    rows = {(r["loss"], r["implementation"], r["threads"]): r for r in report["results"]}
    assert ("triplet_margin", "io-floor", 1) in rows
    assert ("triplet_margin", "io-floor", 2) not in rows        # a memory floor: one thread
    for threads in (1, 2):
        gemm = rows[("linear_cross_entropy", "gemm-floor", threads)]["median_s"]
        mine = rows[("linear_cross_entropy", "fastloss", threads)]
        assert math.isclose(mine["ratio_to_gemm_floor"], mine["median_s"] / gemm)
    triplet = rows[("triplet_margin", "fastloss", 2)]
    io = rows[("triplet_margin", "io-floor", 1)]["median_s"]
    assert math.isclose(triplet["ratio_to_io_floor"], triplet["median_s"] / io)
    assert triplet["bytes"] == 6 * 15 * 128 * 4           # three inputs read, three written
    # V = 2000 // 64, N = 2000 // V; the bytes: hidden, weight, targets read, two gradients
    linear = rows[("linear_cross_entropy", "fastloss", 1)]
    assert linear["shape"] == [64, 16, 31] and linear["n_elements"] == 64 * 31
    assert linear["bytes"] == (2 * (64 * 16 + 31 * 16)) * 4 + 64 * 8
    assert "dice_softmax takes an element count (tiny, cache and large: at most 4194304) as " \
           "N x C x H x W, C = 21" in out and ": 2000 -> 1x21x8x8\n" in out
    assert "triplet_margin takes an element count (tiny, cache and large: at most 4194304) " \
           "as N x D rows, D = min(128, count)" in out
    assert "N = max(1, count // V), D = V // 128 within [16, 256]: 2000 -> 64x16x31" in out
    summary = out[out.index("Summary:"):]
    line = next(l for l in summary.splitlines() if l.startswith("linear_cross_entropy "))
    assert f"{rows[('linear_cross_entropy', 'fastloss', 2)]['ratio_to_gemm_floor']:.2f}" in line


def test_check_result_leaves_out_none_gradients():
    """linear_cross_entropy returns (grad_hidden, grad_weight, None) without a bias; a peer
    that differentiates the two arrays returns two gradients: both are right."""
    entry = bench.LOSSES["linear_cross_entropy"]
    case = bench.make_case(entry, bench.parse_size("6x4x5"), "float64")
    loss, grads = entry.resolve_reference()(*case.args)
    assert grads[2] is None
    case.expected = (loss, grads)
    assert bench.check_result(case, (loss, grads)) is None
    assert bench.check_result(case, (loss, grads[:2])) is None
    assert "1 gradient(s), expected 2" in bench.check_result(case, (loss, grads[:1]))
    wrong = (grads[0], grads[1] + 1e-3, None)
    assert "gradient 1 differs" in bench.check_result(case, (loss, wrong))


def test_margin_ranking_takes_a_target_of_its_inputs_shape_at_any_size():
    entry = bench.LOSSES["margin_ranking"]
    for size in ("3000", "20x6"):
        case = bench.make_case(entry, bench.parse_size(size), "float32")
        x1, x2, target = case.args
        assert x1.shape == x2.shape == target.shape == case.shape
        assert set(np.unique(target)) == {-1.0, 1.0}
        case.expected = tuple(entry.resolve_reference()(*case.args, **case.params))
        assert bench.check_result(case, entry.resolve_kernel()(*case.args, **case.params)) \
            is None


@pytest.mark.parametrize("peer", ["torch", "jax"])
def test_margin_ranking_peers_take_the_reference_subgradient_at_the_kink(peer):
    """x1 == x2 with margin 0 puts the hinge exactly at 0, where the reference (as torch's
    clamp_min) takes the gradient -y: a large random float32 run hits it."""
    pytest.importorskip(peer)
    entry = bench.LOSSES["margin_ranking"]
    case = bench.make_case(entry, bench.parse_size("500"), "float64", seed=1)
    case.x[:7] = case.args[1][:7]
    case.expected = tuple(entry.resolve_reference()(*case.args, **case.params))
    assert np.all(case.expected[1][0][:7] != 0)
    result = entry.peers[peer](case, bench._all_threads())()
    assert bench.check_result(case, result) is None
