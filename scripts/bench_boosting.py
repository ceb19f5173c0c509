"""Benchmark of fastloss.boosting (issue 15, "How fast"): one objective call, and whole
training runs, against NumPy objectives and the boosters' built-in objectives.

    python scripts/bench_boosting.py [--repeats 15] [--threads 2] [--rounds 100] [--quick]

1. One objective call (gradient + hessian): 10^6 binary rows and 10^5 x 10 multiclass, in
   each booster's layout (LightGBM: float64 scores, (n, k) Fortran-ordered; XGBoost: float32,
   (n, k) C-ordered), against the NumPy objectives of LightGBM's and XGBoost's documentation
   examples (see "NumPy objectives" below: the binary loglikelihood / logregobj, LightGBM's
   multiclass demo, XGBoost's custom_softmax row loop) and against a copy of the scores
   (np.copy: read n k values, write n k values). The LightGBM-layout times include what
   LightGBM's Booster.__boost does with the result (ravel(order="F"), cast to float32).
2. Training runs: 10^6 rows x 20 features of a synthetic logistic problem, 100 rounds, the
   fastloss BCE objective (from its init score) and the docs' NumPy logistic objective
   against the built-in binary objective, wall time of lgb.train / xgb.train.

Prints markdown tables with the load average; compare only within one run (HELPERS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--train-repeats", type=int, default=2,
                        help="training runs of each kind (the median is shown)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", choices=("calls", "training"), default=None,
                        help="run one of the two parts")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time the calls by wall clock (median of the repeats), or by "
                             "the calling thread's CPU time (the best of the repeats; with "
                             "--threads 1: much less disturbed by other processes on a busy "
                             "machine)")
    return parser.parse_args()


ARGS = parse()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)   # before the boosters start their pools

import numpy as np  # noqa: E402

import fastloss  # noqa: E402
from fastloss import boosting  # noqa: E402


CLOCK = time.thread_time if ARGS.clock == "cpu" else time.perf_counter


def median_time(function, repeats=None):
    """Median seconds of `function()` over repeats (the best with --clock cpu), after a
    warm-up; calls under ~1 ms are timed in loops."""
    repeats = repeats or ARGS.repeats
    function()
    start = CLOCK()
    function()
    once = CLOCK() - start
    inner = max(1, int(1e-3 / max(once, 1e-9)))
    samples = []
    for _ in range(repeats):
        start = CLOCK()
        for _ in range(inner):
            function()
        samples.append((CLOCK() - start) / inner)
    return min(samples) if ARGS.clock == "cpu" else statistics.median(samples)


# ------------------------------------------------------------------ NumPy objectives
# The objectives of the two libraries' own documentation examples, written here in NumPy as
# those examples compute them (our code, same operations):
# - binary: LightGBM's examples/python-guide/advanced_example.py (`loglikelihood`) and
#   XGBoost's demo/guide-python/custom_objective.py (`logregobj`), the same three lines:
#   p = 1 / (1 + exp(-preds)), grad = p - labels, hess = p (1 - p);
# - multiclass, LightGBM: its python-guide has no multiclass objective; its documented one
#   is R-package/demo/multiclass_custom_objective.R, vectorised: preds minus the row max,
#   prob = exp(preds) / rowSums(exp(preds)) (exp taken twice, as written there), grad = prob
#   with 1 subtracted at the label, hess = 2 prob (1 - prob);
# - multiclass, XGBoost: demo/guide-python/custom_softmax.py (`softprob_obj`), a Python loop
#   over the rows and the classes: softmax of the row without a shift, weights of ones when
#   the DMatrix has none, g = (p - [c == label]) w, h = max(2 p (1 - p) w, 1e-6), float64
#   (n, k) results.

def numpy_logistic(preds, labels):
    """LightGBM's `loglikelihood` = XGBoost's `logregobj` (both docs' binary objective)."""
    preds = 1.0 / (1.0 + np.exp(-preds))
    grad = preds - labels
    hess = preds * (1.0 - preds)
    return grad, hess


def numpy_softmax_lightgbm_demo(preds, labels):
    """LightGBM's multiclass custom objective demo (R-package/demo), in NumPy on its (n, k)
    scores: shift by the row max, exp(preds) / rowSums(exp(preds)), grad = prob with 1
    subtracted at the label (a copy of prob, as R's assignment), hess = 2 prob (1 - prob)."""
    preds = preds - preds.max(axis=1, keepdims=True)
    prob = np.exp(preds) / np.exp(preds).sum(axis=1, keepdims=True)
    grad = prob.copy()
    grad[np.arange(len(labels)), labels.astype(np.intp)] -= 1.0
    hess = 2.0 * prob * (1.0 - prob)
    return grad, hess


def numpy_softmax_xgboost_demo(preds, labels, weights=None):
    """XGBoost's custom_softmax.py `softprob_obj`: a Python loop over rows and classes."""
    rows, classes = preds.shape
    if weights is None:
        weights = np.ones(rows, dtype=float)
    grad = np.zeros((rows, classes), dtype=float)
    hess = np.zeros((rows, classes), dtype=float)
    eps = 1e-6
    for r in range(rows):
        target = int(labels[r])
        weight = float(weights[r])
        e = np.exp(preds[r, :])
        p = e / np.sum(e)
        for c in range(classes):
            pc = float(p[c])
            g = pc - 1.0 if c == target else pc
            grad[r, c] = g * weight
            hess[r, c] = max(2.0 * pc * (1.0 - pc) * weight, eps)
    return grad, hess


def numpy_softmax_vectorised(preds, labels):
    """Not from the docs: XGBoost's demo formulas vectorised (shifted softmax, one exp), for
    scale: what a careful NumPy user would write."""
    e = np.exp(preds - preds.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    hess = np.maximum(2.0 * prob * (1.0 - prob), 1e-6)
    prob[np.arange(len(labels)), labels.astype(np.intp)] -= 1.0
    return prob, hess


def c_order_path_time(function):
    """median_time of `function` with LightGBM's Fortran-ordered scores cast to C order for
    the 2-D kernel and the results copied back (boosting.KERNEL_READS_FORTRAN_SCORES = False;
    the default reads them directly, as K-dim logits), to compare the two paths."""
    default = boosting.KERNEL_READS_FORTRAN_SCORES
    boosting.KERNEL_READS_FORTRAN_SCORES = False
    try:
        return median_time(function)
    finally:
        boosting.KERNEL_READS_FORTRAN_SCORES = default


def as_lightgbm_takes(result):
    """What LightGBM's Booster.__boost does with an objective's (grad, hess): ravel(order="F")
    for k classes, then a contiguous float32 array (a view when they are so already). Part of
    the LightGBM-layout timings, for fastloss and NumPy alike."""
    return tuple(np.ascontiguousarray(a.ravel(order="F"), dtype=np.float32) for a in result)


def format_time(seconds):
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


# ------------------------------------------------------------------ one objective call

def objective_calls():
    rng = np.random.default_rng(0)
    n_binary = 10_000 if ARGS.quick else 1_000_000
    n_multi, k = (2_000, 10) if ARGS.quick else (100_000, 10)
    rows = []
    threads = {"n_threads": ARGS.threads}

    labels = (rng.random(n_binary) < 0.3).astype(np.float32)
    scores64 = rng.normal(size=n_binary)                 # LightGBM: float64 scores
    scores32 = scores64.astype(np.float32)               # XGBoost: float32 scores
    lgb_bce = boosting.lightgbm_objective("binary_cross_entropy_with_logits", **threads)
    xgb_bce = boosting.xgboost_objective("binary_cross_entropy_with_logits", **threads)
    check = numpy_logistic(scores64, labels)
    for got in (lgb_bce(labels, scores64), xgb_bce(labels, scores32)):
        np.testing.assert_allclose(got[0], check[0], atol=1e-6)
        np.testing.assert_allclose(got[1], check[1], atol=1e-6)
    copy64 = median_time(lambda: np.copy(scores64))
    copy32 = median_time(lambda: np.copy(scores32))
    docs64 = median_time(lambda: as_lightgbm_takes(numpy_logistic(scores64, labels)))
    docs32 = median_time(lambda: numpy_logistic(scores32, labels))
    rows += [
        (f"binary {n_binary:.0e}, LightGBM layout (float64)", "fastloss",
         median_time(lambda: as_lightgbm_takes(lgb_bce(labels, scores64))), copy64, docs64),
        ("", "NumPy (docs' loglikelihood)", docs64, copy64, None),
        (f"binary {n_binary:.0e}, XGBoost layout (float32)", "fastloss",
         median_time(lambda: xgb_bce(labels, scores32)), copy32, docs32),
        ("", "NumPy (docs' logregobj)", docs32, copy32, None),
    ]

    classes = rng.integers(0, k, n_multi).astype(np.float32)
    multi32 = rng.normal(size=(n_multi, k)).astype(np.float32)          # XGBoost: C order
    multi64 = np.asfortranarray(multi32, dtype=np.float64)              # LightGBM: F order
    lgb_ce = boosting.lightgbm_objective("softmax_cross_entropy", **threads)
    xgb_ce = boosting.xgboost_objective("softmax_cross_entropy", **threads)
    grad, hess = lgb_ce(classes, multi64)
    assert grad.dtype == np.float32 and grad.flags.f_contiguous
    check = numpy_softmax_lightgbm_demo(multi64, classes)
    np.testing.assert_allclose(grad, check[0], atol=1e-6)
    np.testing.assert_allclose(hess, check[1] / 2, atol=1e-6)     # ours: p (1 - p)
    few = slice(0, 200)
    check = numpy_softmax_xgboost_demo(multi32[few], classes[few])
    np.testing.assert_allclose(xgb_ce(classes[few], multi32[few])[0], check[0], atol=1e-6)
    copy64 = median_time(lambda: np.copy(multi64, order="K"))
    copy32 = median_time(lambda: np.copy(multi32))
    loop = median_time(lambda: numpy_softmax_xgboost_demo(multi32, classes), repeats=1)
    lgb_docs = median_time(lambda: as_lightgbm_takes(numpy_softmax_lightgbm_demo(multi64,
                                                                                classes)))
    rows += [
        (f"multiclass {n_multi:.0e} x {k}, LightGBM layout (float64, F)", "fastloss",
         median_time(lambda: as_lightgbm_takes(lgb_ce(classes, multi64))), copy64, lgb_docs),
        ("", "fastloss, C-order path (KERNEL_READS_FORTRAN_SCORES=False)",
         c_order_path_time(lambda: as_lightgbm_takes(lgb_ce(classes, multi64))), copy64,
         lgb_docs),
        ("", "NumPy (LightGBM's multiclass demo)", lgb_docs, copy64, None),
        (f"multiclass {n_multi:.0e} x {k}, XGBoost layout (float32, C)", "fastloss",
         median_time(lambda: xgb_ce(classes, multi32)), copy32, loop),
        ("", "NumPy (XGBoost's custom_softmax demo: row loop, 1 run)", loop, copy32, None),
        ("", "NumPy (that demo vectorised; not from the docs)",
         median_time(lambda: numpy_softmax_vectorised(multi32, classes)), copy32, None),
    ]
    return rows


# ------------------------------------------------------------------ training runs

def training_runs():
    import lightgbm as lgb
    import xgboost as xgb

    rng = np.random.default_rng(1)
    n, d = (20_000, 20) if ARGS.quick else (1_000_000, 20)
    X = rng.normal(size=(n, d)).astype(np.float32)
    logit = X[:, :5] @ rng.normal(size=5) + 0.5 * np.sin(3 * X[:, 5]) - 0.7
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    rounds = ARGS.rounds
    rows = []

    lgb_params = {"num_leaves": 31, "learning_rate": 0.1, "num_threads": ARGS.threads,
                  "verbose": -1, "force_col_wise": True, "max_bin": 255}
    objective = boosting.lightgbm_objective("binary_cross_entropy_with_logits")
    start = objective.init_score(y)

    def lgb_builtin():
        data = lgb.Dataset(X, y, params={"max_bin": 255}, free_raw_data=False)
        data.construct()
        t0 = time.perf_counter()
        booster = lgb.train(dict(lgb_params, objective="binary"), data, rounds)
        return time.perf_counter() - t0, booster.predict(X[:1000], raw_score=True)

    def lgb_fastloss():
        data = lgb.Dataset(X, y, init_score=np.full(n, start), params={"max_bin": 255},
                           free_raw_data=False)
        data.construct()
        t0 = time.perf_counter()
        booster = lgb.train(dict(lgb_params, objective=objective), data, rounds)
        return time.perf_counter() - t0, booster.predict(X[:1000], raw_score=True) + start

    def lgb_numpy():
        data = lgb.Dataset(X, y, init_score=np.full(n, start), params={"max_bin": 255},
                           free_raw_data=False)
        data.construct()

        def loglikelihood(preds, train_data):
            return numpy_logistic(preds, train_data.get_label())

        t0 = time.perf_counter()
        booster = lgb.train(dict(lgb_params, objective=loglikelihood), data, rounds)
        return time.perf_counter() - t0, booster.predict(X[:1000], raw_score=True) + start

    xgb_params = {"max_depth": 6, "eta": 0.1, "nthread": ARGS.threads, "tree_method": "hist",
                  "max_bin": 256}
    xgb_objective = boosting.xgboost_objective("binary_cross_entropy_with_logits")
    dtrain = xgb.DMatrix(X, y, nthread=ARGS.threads)
    # the hist method's quantile cuts are built at the DMatrix's first training and kept:
    # built here, so that the first timed run (the built-in objective's) does not pay them
    xgb.train(dict(xgb_params, objective="binary:logistic"), dtrain, 1)

    def xgb_builtin():
        t0 = time.perf_counter()
        booster = xgb.train(dict(xgb_params, objective="binary:logistic"), dtrain, rounds)
        return time.perf_counter() - t0, booster.predict(xgb.DMatrix(X[:1000]),
                                                         output_margin=True)

    def xgb_fastloss():
        t0 = time.perf_counter()
        booster = xgb.train(dict(xgb_params, base_score=start), dtrain, rounds,
                            obj=xgb_objective)
        return time.perf_counter() - t0, booster.predict(xgb.DMatrix(X[:1000]),
                                                         output_margin=True)

    def xgb_numpy():
        def logregobj(preds, dtrain):
            return numpy_logistic(preds, dtrain.get_label())

        t0 = time.perf_counter()
        booster = xgb.train(dict(xgb_params, base_score=start), dtrain, rounds, obj=logregobj)
        return time.perf_counter() - t0, booster.predict(xgb.DMatrix(X[:1000]),
                                                         output_margin=True)

    for library, runs in (("LightGBM", (("built-in binary", lgb_builtin),
                                        ("fastloss BCE", lgb_fastloss),
                                        ("NumPy (docs' loglikelihood)", lgb_numpy))),
                          ("XGBoost", (("built-in binary", xgb_builtin),
                                       ("fastloss BCE", xgb_fastloss),
                                       ("NumPy (docs' logregobj)", xgb_numpy)))):
        times = {name: [] for name, _ in runs}
        predictions = {}
        for _ in range(ARGS.train_repeats):   # interleaved: load drifts hit all alike
            for name, run in runs:
                seconds, predictions[name] = run()
                times[name].append(seconds)
        base = statistics.median(times["built-in binary"])
        for name, samples in times.items():
            difference = float(np.max(np.abs(predictions["built-in binary"]
                                              - predictions[name])))
            rows.append((f"{library}, {n:.0e} rows x {d}, {rounds} rounds", name,
                         statistics.median(samples), base, difference))
    return rows


def main():
    load = os.getloadavg()
    print(f"fastloss {fastloss.__version__}, SIMD {fastloss.simd_level()}, "
          f"{ARGS.threads} threads, {ARGS.clock} clock for the calls, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    if ARGS.only in (None, "calls"):
        print("| one objective call (grad + hess) | implementation | "
              f"{'best CPU time' if ARGS.clock == 'cpu' else 'median'} | "
              "/ copy of the scores | docs' NumPy objective / this |")
        print("|---|---|---|---|---|")
        for case, name, seconds, copy, docs in objective_calls():
            speedup = f"{docs / seconds:.1f}x" if docs else ""
            print(f"| {case} | {name} | {format_time(seconds)} | {seconds / copy:.2f}x | "
                  f"{speedup} |")
        print("\ncopy = np.copy of the scores in the booster's layout and dtype\n")
    if ARGS.only in (None, "training"):
        print("| training run | objective | wall time (median) | / built-in | max raw-score "
              "difference (1000 rows) |")
        print("|---|---|---|---|---|")
        for case, name, seconds, base, difference in training_runs():
            print(f"| {case} | {name} | {format_time(seconds)} | {seconds / base:.2f}x | "
                  f"{difference:.2e} |")
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
