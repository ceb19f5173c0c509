"""The benchmark report (fastloss.bench): runs, writes its files, rejects bad arguments,
reports a wrong implementation as a failure, skips losses fastloss does not have, and its
peer entries compute the same quantity as each other. Timings are never asserted."""
import dataclasses
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
    assert "| loss | dtype | shape | threads | implementation |" in markdown
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
    (["--no-such-option"], "unrecognized arguments"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc_info:
        bench.main(argv)
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_matplotlib_for_plot_exits_2_before_running(monkeypatch, capsys, tmp_path):
    real = bench._installed
    monkeypatch.setattr(bench, "_installed", lambda module: module != "matplotlib" and real(module))
    with pytest.raises(SystemExit) as exc_info:
        bench.main(FAST + ["--plot", str(tmp_path / "p.png")])
    assert exc_info.value.code == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_missing_peer_is_named_and_the_run_goes_on(monkeypatch, capsys):
    real = bench._installed
    monkeypatch.setattr(bench, "_installed", lambda module: module != "jax" and real(module))
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


def test_plot_is_written(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "speedup.png"
    assert bench.main(FAST + ["--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sizes():
    names = bench.named_sizes()
    assert names["tiny"] < names["cache"] < names["large"]
    assert names["large"] >= 1 << 24
    assert bench.parse_size("large").n_elements == names["large"]
    assert bench.parse_size("1e6") == bench.Size("1000000", n_elements=1000000)
    assert bench.parse_size("1_000").n_elements == 1000
    assert bench.parse_size("128x1000") == bench.Size("128x1000", shape=(128, 1000))
    for bad in ("0", "-5", "1.5", "x10", "3x4x5", "big"):
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


def _torch_oracle(case):
    """The torch eager peer's result in float64: the semantics API.md names."""
    loss, grad = case.entry.peers["torch"](case, 1)()
    return float(loss), np.asarray(grad, dtype=np.float64)


@pytest.mark.parametrize("name, peer", [(name, peer) for name, entry in bench.LOSSES.items()
                                        for peer in ("sklearn", "jax") if peer in entry.peers])
def test_peer_entries_compute_the_same_quantity_as_torch(name, peer):
    """The factor conventions of each peer (sklearn's "half" losses, sample_weight = scale/n,
    smooth_l1 = huber/beta; jax's formulas) checked against PyTorch, for every loss of the
    table, whether or not fastloss has it yet. (numba's kernels compile for seconds: the
    benchmark suite and the report check them.)"""
    entry = bench.LOSSES[name]
    pytest.importorskip("torch")
    pytest.importorskip(bench.PEER_FAMILIES[peer].module)
    case = bench.make_case(entry, bench.parse_size("24x7"), "float64", seed=3)
    case.expected = _torch_oracle(case)
    result = entry.peers[peer](case, bench._all_threads())()
    assert bench.check_result(case, result) is None


def test_console_script_entry_point_is_main():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    import pathlib
    pyproject = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    module, _, function = scripts["fastloss-bench"].partition(":")
    assert module == bench.__name__ and getattr(bench, function) is bench.main
