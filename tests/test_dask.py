"""fastloss.dask: losses over Dask arrays, on a real distributed.LocalCluster (2 worker
processes) and on the threaded scheduler, against the single-machine call.

Parametrized from fastloss.dask.LOSSES (the rows exported by this build) and, for the inputs
of each loss, the shared registry tests/cases.py: a loss added to both is enrolled here.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import threading
from pathlib import Path

import numpy as np
import pytest

import fastloss
from fastloss import LossResult

da = pytest.importorskip("dask.array")  # dask and distributed are in the test extra
distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

import fastloss.dask as fld  # noqa: E402
from cases import CASES, option_id  # noqa: E402

# every registry entry of each loss (a later entry of the same name holds the class-axis
# options of issue 13: sample_weight, z_loss, logit_softcap); CASE_BY_NAME keeps the first
CASES_BY_NAME = {}
for _case in CASES:
    CASES_BY_NAME.setdefault(_case.name, []).append(_case)
CASE_BY_NAME = {name: cases[0] for name, cases in CASES_BY_NAME.items()}
EXPORTED = [row for row in fld.LOSSES if hasattr(fastloss, row.name)]
DTYPES = [np.float32, np.float64]

# uneven row chunks of a 37-row input (one chunk of a single row)
ROW_CHUNKS = (10, 1, 20, 6)


# ----------------------------------------------------------------------------- fixtures

def _local_cluster(n_workers, threads_per_worker=1):
    # dashboard off; the scheduler's remaining HTTP routes (health) on a free loopback port
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                    processes=True, host="127.0.0.1", dashboard_address=None,
                                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                    memory_limit="1GiB")


@pytest.fixture(scope="module")
def client():
    """One 2-worker LocalCluster (worker processes) for the whole module."""
    with _local_cluster(2) as cluster, distributed.Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture(params=["threads", "cluster"])
def compute(request):
    """compute(*collections) on the threaded scheduler or on the 2-worker cluster."""
    if request.param == "threads":
        return lambda *objs: dask.compute(*objs, scheduler="threads", num_workers=4)
    c = request.getfixturevalue("client")
    return lambda *objs: tuple(c.compute(list(objs), sync=True))


def _compute_result(compute, result):
    if result.grad is None:
        return compute(result.loss)[0], None
    return compute(result.loss, result.grad)


# ----------------------------------------------------------------------------- helpers

def _reductions(row):
    """"mean", "sum", "none" and the row's other averaging reductions (kl_div's "batchmean")."""
    return ["mean", "sum", "none"] + [r for r in row.denominators if r != "mean"]


def _cases(with_reductions=False):
    """(row, case, option[, reduction]) for every exported row, every option of its registry
    case (and every reduction of the row)."""
    out = []
    for row in EXPORTED:
        for case, option in _options(row):
            name = f"{row.name}-{option_id(option)}"
            if not with_reductions:
                out.append(pytest.param(row, case, option, id=name))
                continue
            for reduction in _reductions(row):
                out.append(pytest.param(row, case, option, reduction, id=f"{name}-{reduction}"))
    return out


def _options(row):
    """(case, option) of every registry entry of the row's loss."""
    return [(case, option) for case in CASES_BY_NAME.get(row.name, ()) for option in case.options]


def _to_dask(x, kwargs, row, rng):
    """x chunked unevenly along axis 0; per-sample arrays as Dask arrays with other chunks
    (fastloss.dask rechunks them) or left as NumPy arrays (alternately)."""
    n = x.shape[0]
    chunks = ROW_CHUNKS if n == sum(ROW_CHUNKS) else (max(1, n // 3),)
    dx = da.from_array(x, chunks=(chunks,) + tuple((s,) for s in x.shape[1:]))
    dkwargs = {}
    for name, value in kwargs.items():
        if isinstance(value, np.ndarray) and value.ndim == x.ndim and value.shape[0] == n > 1:
            value = da.from_array(value, chunks=(max(1, n // 2),) + value.shape[1:])
        dkwargs[name] = value
    return dx, dkwargs


def _assert_same_bits(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert actual.tobytes() == expected.tobytes(), np.max(np.abs(actual - expected))


def _assert_close_to_rounding(actual, expected):
    """Equal to the rounding of the dtype: the same nan positions; a relative tolerance of a
    few eps and an absolute one of a few eps times the array's scale. The absolute part is
    for the "mean" gradient: the kernel folds 1 / D into its terms before it rounds them
    (g = fl(S p / D) - fl(a / D)), fastloss.dask scales the rounded sum gradient
    (fl(fl(S p - a) / D)); where the terms cancel, the two differ by a few units of the
    terms' rounding, which is the gradient's own accuracy. In float64 the denominator's own
    summation order shows too."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    eps = np.finfo(expected.dtype).eps
    finite = np.isfinite(expected)
    scale = np.max(np.abs(expected[finite]), initial=0.0)
    np.testing.assert_allclose(actual, expected, rtol=4 * eps, atol=8 * eps * scale,
                               equal_nan=True)


def _assert_matches_single_machine(result, expected, reduction):
    """The contract of fastloss.dask against fastloss on the computed arrays: the loss to
    double rounding, per-sample losses and gradients to the rounding of the input's dtype.

    (Not bitwise: an element's value can depend on where it sits in the array the kernel is
    given -- a SIMD kernel's tail elements go through the scalar path -- and chunking moves
    the tails; test_each_chunk_is_the_single_machine_call checks the bits chunk by chunk.)"""
    loss, grad = result
    if reduction == "none":
        _assert_close_to_rounding(loss, expected.loss)
    else:
        assert np.ndim(loss) == 0
        if math.isnan(expected.loss):
            assert math.isnan(float(loss))
        else:
            assert float(loss) == pytest.approx(expected.loss, rel=1e-13, abs=1e-300)
    if expected.grad is None:
        assert grad is None
    else:
        _assert_close_to_rounding(grad, expected.grad)


# ----------------------------------------------------------------------------- the table

def test_exported_names_follow_the_table():
    exported = {row.name for row in EXPORTED}
    assert exported, "no loss exported"
    for row in fld.LOSSES:
        assert (row.name in fld.__all__) == (row.name in exported)
        assert callable(getattr(fld, row.name, None)) == (row.name in exported)
    # the losses fastloss has today are all rows of the table
    for name in ["softmax_cross_entropy", "softmax_focal", "binary_cross_entropy_with_logits",
                 "huber", "smooth_l1", "sigmoid_focal"]:
        assert name in exported
    assert len({row.name for row in fld.LOSSES}) == len(fld.LOSSES)
    # the element-wise losses of the second wave have rows, exported once they land
    for name in ["mse", "mae", "pinball", "log_cosh", "poisson_nll", "tweedie", "hinge",
                 "squared_hinge", "soft_margin", "binary_cross_entropy", "kl_div"]:
        assert name in {row.name for row in fld.LOSSES}


# rows with a test of their own here instead of a tests/cases.py entry (two differentiated
# inputs and no target: the registry's (input, target) cases do not fit them)
OWN_TESTS = {"gaussian_kl": "test_gaussian_kl"}


@pytest.mark.parametrize("row", EXPORTED, ids=lambda row: row.name)
def test_every_exported_loss_is_enrolled(row):
    """A row of the table whose function exists must have inputs in tests/cases.py (or a
    test of its own, OWN_TESTS)."""
    if row.name in OWN_TESTS:
        assert OWN_TESTS[row.name] in globals()
        return
    assert row.name in CASE_BY_NAME, f"add a LossCase for {row.name} to tests/cases.py"


@pytest.mark.parametrize("row", EXPORTED, ids=lambda row: row.name)
def test_signature_is_the_single_machine_one_without_out(row):
    import inspect
    own = inspect.signature(getattr(fld, row.name)).parameters
    single = inspect.signature(getattr(fastloss, row.name)).parameters
    assert "out" not in own
    dropped = ("out", "hess_out", "lse_out")
    assert [n for n in single if n not in dropped] == list(own)
    assert own["n_threads"].default == 1
    assert f"fastloss.{row.name}" in getattr(fld, row.name).__doc__


# ----------------------------------------------------------- every loss, every reduction

def _dask_and_single_machine(row, case, option, reduction, dtype):
    """(fastloss.dask result, single-machine result) on the registry's inputs, the input
    chunked unevenly, the target chunked otherwise (rechunked to match)."""
    rng = np.random.default_rng(19)
    x, target, kwargs = case.make(rng, np.dtype(dtype), case.shapes["small"], option)
    kwargs = case.call_kwargs(kwargs)
    expected = getattr(fastloss, row.name)(x, target, reduction=reduction, **kwargs)
    dx, dkwargs = _to_dask(x, kwargs, row, rng)
    dtarget = da.from_array(target, chunks=(7,) + target.shape[1:])
    result = getattr(fld, row.name)(dx, dtarget, reduction=reduction, **dkwargs)
    assert isinstance(result, fastloss.LossResult)
    assert isinstance(result.grad, da.Array) and result.grad.chunks == dx.chunks
    if reduction == "none":
        per_sample = dx.chunks[:1] + dx.chunks[2:] if row.layout == fld.CLASS_AXIS else dx.chunks
        assert isinstance(result.loss, da.Array) and result.loss.chunks == per_sample
    else:
        assert isinstance(result.loss, da.Array) and result.loss.shape == ()
    return result, expected


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("row, case, option, reduction", _cases(with_reductions=True))
def test_matches_single_machine(row, case, option, reduction, dtype):
    """Threaded scheduler, one case per test."""
    result, expected = _dask_and_single_machine(row, case, option, reduction, dtype)
    computed = dask.compute(*result, scheduler="threads", num_workers=4)
    _assert_matches_single_machine(computed, expected, reduction)


@pytest.mark.parametrize("row", [r for r in EXPORTED if r.name in CASE_BY_NAME],
                         ids=lambda row: row.name)
def test_matches_single_machine_on_cluster(row, client):
    """The same cases on the 2-worker cluster: every option, reduction and dtype of a loss
    computed in one client.compute call (one round trip), then checked one by one."""
    labels, collections, expectations = [], [], []
    for case, option in _options(row):
        for reduction in _reductions(row):
            for dtype in DTYPES:
                result, expected = _dask_and_single_machine(row, case, option, reduction, dtype)
                labels.append((option_id(option), reduction, np.dtype(dtype).name))
                collections.extend(result)
                expectations.append((expected, reduction))
    computed = client.compute(collections, sync=True)
    failures = []
    for index, (label, (expected, reduction)) in enumerate(zip(labels, expectations)):
        try:
            _assert_matches_single_machine(computed[2 * index:2 * index + 2], expected,
                                           reduction)
        except AssertionError as error:
            failures.append(f"{label}: {error}")
    assert not failures, "\n".join(failures)


def _per_sample(value, x):
    return (isinstance(value, np.ndarray) and value.ndim == x.ndim
            and value.shape[0] == x.shape[0] > 1)


@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("row, case, option", _cases())
def test_each_chunk_is_the_single_machine_call(row, case, option, reduction):
    """Bit for bit, each chunk's losses and gradient are fastloss.<name> on that chunk's rows
    (targets and per-sample weights aligned with it), and "sum" adds the chunk sums in chunk
    order."""
    rng = np.random.default_rng(21)
    x, target, kwargs = case.make(rng, np.dtype(np.float32), case.shapes["small"], option)
    kwargs = case.call_kwargs(kwargs)
    dx, dkwargs = _to_dask(x, kwargs, row, rng)
    loss, grad = dask.compute(*getattr(fld, row.name)(dx, da.from_array(target, chunks=5),
                                                      reduction=reduction, **dkwargs),
                              scheduler="threads")
    edges = np.cumsum((0,) + dx.chunks[0])
    parts = [getattr(fastloss, row.name)(
        x[a:b], target[a:b], reduction=reduction,
        **{k: v[a:b] if _per_sample(v, x) or k in row.sample_args else v
           for k, v in kwargs.items()})
        for a, b in zip(edges[:-1], edges[1:])]
    _assert_same_bits(grad, np.concatenate([p.grad for p in parts]))
    if reduction == "none":
        _assert_same_bits(loss, np.concatenate([p.loss for p in parts]))
    else:
        total = 0.0
        for part in parts:
            total += part.loss
        assert float(loss) == total


@pytest.mark.parametrize("row", [r for r in EXPORTED if r.layout == fld.ELEMENTWISE],
                         ids=lambda row: row.name)
@pytest.mark.parametrize("shape", [(37,), (12, 3, 4)], ids=["1d", "3d"])
def test_elementwise_shapes(row, shape):
    case = CASE_BY_NAME[row.name]
    rng = np.random.default_rng(5)
    x, target, kwargs = case.make(rng, np.dtype(np.float64), shape, {})
    kwargs = case.call_kwargs(kwargs)
    for reduction in ["mean", "sum", "none"]:
        expected = getattr(fastloss, row.name)(x, target, reduction=reduction, **kwargs)
        dx = da.from_array(x, chunks=(5,) + x.shape[1:])
        result = getattr(fld, row.name)(dx, target, reduction=reduction, **kwargs)
        _assert_matches_single_machine(dask.compute(*result, scheduler="sync"), expected,
                                       reduction)


@pytest.mark.parametrize("weight_kind", ["last", "full", "scalar", "row"])
def test_elementwise_weight_layouts(weight_kind, compute):
    """Weights that vary along the samples are chunked with them; the others go whole."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((37, 11))
    target = rng.random((37, 11))
    shape = {"last": (11,), "full": (37, 11), "scalar": (), "row": (37, 1)}[weight_kind]
    weight = rng.uniform(0.2, 2.0, shape)
    pos_weight = rng.uniform(0.5, 4.0, (11,))
    dx = da.from_array(x, chunks=(ROW_CHUNKS, 11))
    for dask_weight in [weight, da.from_array(weight)]:
        for reduction in ["mean", "sum", "none"]:
            expected = fastloss.binary_cross_entropy_with_logits(
                x, target, weight=weight, pos_weight=pos_weight, reduction=reduction)
            result = fld.binary_cross_entropy_with_logits(
                dx, target, weight=dask_weight, pos_weight=da.from_array(pos_weight),
                reduction=reduction)
            _assert_matches_single_machine(compute(*result), expected, reduction)


def test_compute_grad_false(compute):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 5)).astype(np.float32)
    target = rng.integers(0, 5, 37)
    for reduction in ["mean", "sum", "none"]:
        result = fld.softmax_cross_entropy(da.from_array(x, chunks=(ROW_CHUNKS, 5)), target,
                                           reduction=reduction, compute_grad=False)
        assert result.grad is None
        expected = fastloss.softmax_cross_entropy(x, target, reduction=reduction,
                                                  compute_grad=False)
        _assert_matches_single_machine((compute(result.loss)[0], None), expected, reduction)


# -------------------------------------------------- ignore_index, class weights, edge cases

def _class_inputs(n=37, c=6, seed=11, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c)) * 3).astype(dtype)
    target = rng.integers(0, c, n)
    return x, target, rng


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "softmax_focal"])
def test_ignored_targets_and_all_ignored_chunks(loss, compute):
    x, target, rng = _class_inputs()
    target[10:31] = -100          # chunks 1 and 2 entirely ignored
    target[rng.random(37) < 0.2] = -100
    weight_name = "weight" if loss == "softmax_cross_entropy" else "alpha"
    weights = [None, rng.uniform(0.2, 2.0, 6).astype(np.float32)]
    for weight in weights:
        for reduction in ["mean", "sum", "none"]:
            kwargs = {weight_name: weight}
            expected = getattr(fastloss, loss)(x, target, reduction=reduction, **kwargs)
            result = getattr(fld, loss)(da.from_array(x, chunks=(ROW_CHUNKS, 6)), target,
                                        reduction=reduction, **kwargs)
            _assert_matches_single_machine(compute(*result), expected, reduction)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "softmax_focal"])
def test_every_target_ignored(loss, compute):
    """"mean" is nan and the gradient all zeros, as the single-machine call."""
    x, target, _ = _class_inputs()
    target[:] = 3
    kwargs = {"ignore_index": 3}
    for reduction in ["mean", "sum", "none"]:
        expected = getattr(fastloss, loss)(x, target, reduction=reduction, **kwargs)
        loss_value, grad = compute(*getattr(fld, loss)(
            da.from_array(x, chunks=(ROW_CHUNKS, 6)), target, reduction=reduction, **kwargs))
        assert not np.any(grad)
        if reduction == "mean":
            assert math.isnan(float(loss_value))
        _assert_matches_single_machine((loss_value, grad), expected, reduction)


def test_class_weights_summing_to_zero(compute):
    """Zero denominator: nan loss, nan rows for the kept samples, zero rows for the ignored
    ones -- as the single-machine call."""
    x, target, _ = _class_inputs()
    target[::3] = -100
    target[target >= 0] = np.where(target[target >= 0] < 3, 0, 1)
    weight = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 1.0], np.float32)
    expected = fastloss.softmax_cross_entropy(x, target, weight=weight)
    assert math.isnan(expected.loss)
    loss_value, grad = compute(*fld.softmax_cross_entropy(
        da.from_array(x, chunks=(ROW_CHUNKS, 6)), target, weight=weight))
    assert math.isnan(float(loss_value))
    assert np.all(np.isnan(grad[target != -100])) and not np.any(grad[target == -100])
    _assert_matches_single_machine((loss_value, grad), expected, "mean")


def test_probability_targets_mean_over_samples(compute):
    x, _, rng = _class_inputs(dtype=np.float64)
    target = rng.dirichlet(np.ones(6), 37)
    weight = rng.uniform(0.2, 2.0, 6)
    for reduction in ["mean", "sum", "none"]:
        kwargs = {"weight": weight, "label_smoothing": 0.1}
        expected = fastloss.softmax_cross_entropy(x, target, reduction=reduction, **kwargs)
        result = fld.softmax_cross_entropy(da.from_array(x, chunks=(ROW_CHUNKS, 6)),
                                           da.from_array(target, chunks=(5, 3)),
                                           reduction=reduction, **kwargs)
        _assert_matches_single_machine(compute(*result), expected, reduction)


@pytest.mark.parametrize("sample_weight_shape", [None, "samples", "positions"])
@pytest.mark.parametrize("loss, target_kind", [("softmax_cross_entropy", "index"),
                                               ("softmax_cross_entropy", "prob"),
                                               ("softmax_focal", "index")])
def test_k_dim_logits_with_sample_weights(loss, target_kind, sample_weight_shape, compute):
    """(N, C, d1, d2) logits chunked along N; targets (N, d1, d2) indices (some ignored) or
    probabilities (CE); sample weights (N,) or (N, d1, d2), chunked otherwise; the "mean"
    denominator sum s_i w_{y_i} formed over the whole array."""
    rng = np.random.default_rng(11)
    n, c, d1, d2 = 23, 5, 3, 4
    x = (rng.standard_normal((n, c, d1, d2)) * 2).astype(np.float32)
    if target_kind == "index":
        target = rng.integers(0, c, (n, d1, d2))
        target[rng.random(target.shape) < 0.2] = -100
        target[5:9] = -100                         # a chunk with every position ignored
    else:
        target = rng.dirichlet(np.ones(c), (n, d1, d2)).transpose(0, 3, 1, 2).astype(np.float32)
    kwargs = {}
    if loss == "softmax_cross_entropy" and target_kind == "index":
        kwargs["weight"] = rng.uniform(0.2, 2.0, c).astype(np.float32)
    if sample_weight_shape is not None:
        shape = (n,) if sample_weight_shape == "samples" else (n, d1, d2)
        kwargs["sample_weight"] = rng.uniform(0.0, 2.0, shape).astype(np.float32)
    dx = da.from_array(x, chunks=((5, 4, 10, 4), c, d1, d2))
    dkwargs = dict(kwargs)
    if "sample_weight" in kwargs:
        dkwargs["sample_weight"] = da.from_array(kwargs["sample_weight"], chunks=7)
    for reduction in ["mean", "sum", "none"]:
        expected = getattr(fastloss, loss)(x, target, reduction=reduction, **kwargs)
        result = getattr(fld, loss)(dx, da.from_array(target, chunks=6), reduction=reduction,
                                    **dkwargs)
        if reduction == "none":
            assert result.loss.shape == (n, d1, d2)
        _assert_matches_single_machine(compute(*result), expected, reduction)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_gaussian_kl(dtype, compute):
    """Two differentiated inputs: mean and log_var chunked along the rows (log_var chunked
    otherwise and rechunked), the gradient and hessian tuples of Dask arrays with the mean's
    chunks, every reduction against the single-machine call; each chunk bitwise the
    single-machine call on its rows."""
    rng = np.random.default_rng(17)
    mean = rng.standard_normal((37, 6)).astype(dtype)
    log_var = rng.uniform(-3, 2, (37, 6)).astype(dtype)
    dmean = da.from_array(mean, chunks=(ROW_CHUNKS, 6))
    dlog_var = da.from_array(log_var, chunks=(9, 6))
    for reduction in ["mean", "sum", "none"]:
        expected = fastloss.gaussian_kl(mean, log_var, reduction=reduction, compute_hess=True)
        result = fld.gaussian_kl(dmean, dlog_var, reduction=reduction, compute_hess=True)
        assert type(result).__name__ == "LossGradHess"
        assert len(result.grad) == 2 and all(g.chunks == dmean.chunks for g in result.grad)
        loss, grad, hess = compute(result.loss, result.grad, result.hess)
        if reduction == "none":
            assert np.shape(loss) == (37,)
        _assert_matches_single_machine((loss, grad[0]), LossResult(expected.loss,
                                                                   expected.grad[0]), reduction)
        for got, want in zip(tuple(grad) + tuple(hess), expected.grad + expected.hess):
            _assert_close_to_rounding(got, want)
    total, grad = dask.compute(*fld.gaussian_kl(dmean, log_var, reduction="sum"),
                               scheduler="sync")
    edges = np.cumsum((0,) + ROW_CHUNKS)
    parts = [fastloss.gaussian_kl(mean[a:b], log_var[a:b], reduction="sum")
             for a, b in zip(edges[:-1], edges[1:])]
    for k in range(2):
        _assert_same_bits(grad[k], np.concatenate([p.grad[k] for p in parts]))
    running = 0.0
    for part in parts:
        running += part.loss
    assert float(total) == running


def test_sample_weights_all_zero(compute):
    """Zero "mean" denominator from the sample weights: nan, as the single-machine call."""
    x, target, _ = _class_inputs()
    target[::4] = -100
    sample_weight = np.zeros(37, np.float32)
    expected = fastloss.softmax_cross_entropy(x, target, sample_weight=sample_weight)
    result = fld.softmax_cross_entropy(da.from_array(x, chunks=(ROW_CHUNKS, 6)), target,
                                       sample_weight=sample_weight)
    loss_value, grad = compute(*result)
    assert math.isnan(float(loss_value)) and math.isnan(expected.loss)
    _assert_matches_single_machine((loss_value, grad), expected, "mean")


HESS_ROWS = [row for row in EXPORTED if row.name not in OWN_TESTS
             and "compute_hess" in inspect.signature(getattr(fastloss, row.name)).parameters]


@pytest.mark.parametrize("row", HESS_ROWS, ids=lambda row: row.name)
def test_compute_hess(row, compute):
    """compute_hess=True: LossGradHess of Dask arrays, the hessian scaled like the gradient
    (the global 1 / D for "mean"), equal to the single-machine call to rounding."""
    rng = np.random.default_rng(13)
    # multi_margin's p=1 (piecewise linear) has no hessian: a ValueError (API.md)
    options = [(case, option) for case, option in _options(row)
               if not (row.name == "multi_margin" and option.get("p", 1) == 1)]
    assert options
    for case, option in options[:2]:
        x, target, kwargs = case.make(rng, np.dtype(np.float64), case.shapes["small"], option)
        kwargs = case.call_kwargs(kwargs)
        dx, dkwargs = _to_dask(x, kwargs, row, rng)
        for reduction in _reductions(row):
            expected = getattr(fastloss, row.name)(x, target, reduction=reduction,
                                                   compute_hess=True, **kwargs)
            result = getattr(fld, row.name)(dx, target, reduction=reduction,
                                            compute_hess=True, **dkwargs)
            assert type(result).__name__ == "LossGradHess"
            assert result.hess.chunks == dx.chunks
            loss_value, grad, hess = compute(*result)
            _assert_matches_single_machine((loss_value, grad), expected, reduction)
            _assert_close_to_rounding(hess, expected.hess)


@pytest.mark.parametrize("loss, make", [
    ("softmax_cross_entropy", lambda: (np.zeros((0, 4), np.float32), np.zeros(0, np.int64))),
    ("binary_cross_entropy_with_logits",
     lambda: (np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))),
])
def test_empty_input(loss, make):
    x, target = make()
    for reduction in ["mean", "sum", "none"]:
        expected = getattr(fastloss, loss)(x, target, reduction=reduction)
        result = getattr(fld, loss)(da.from_array(x), target, reduction=reduction)
        loss_value, grad = dask.compute(*result, scheduler="sync")
        assert grad.shape == x.shape
        _assert_matches_single_machine((loss_value, grad), expected, reduction)


def test_many_chunks_and_one_chunk(compute):
    """More chunks than SPLIT_EVERY (a tree of several levels), and a single chunk."""
    x, target, rng = _class_inputs(n=300, c=5, dtype=np.float64)
    target[rng.random(300) < 0.25] = -100
    weight = rng.uniform(0.2, 2.0, 5)
    sizes = tuple(int(s) for s in rng.integers(1, 6, 200))
    sizes = sizes[:np.searchsorted(np.cumsum(sizes), 300)]
    sizes = sizes + (300 - sum(sizes),)
    assert len(sizes) > 2 * fld.SPLIT_EVERY
    expected = fastloss.softmax_cross_entropy(x, target, weight=weight)
    for chunks in [sizes, (300,)]:
        result = fld.softmax_cross_entropy(da.from_array(x, chunks=(chunks, 5)), target,
                                           weight=weight)
        _assert_matches_single_machine(compute(*result), expected, "mean")


# ------------------------------------------------------------------ determinism and threads

def _determinism_calls(rng):
    x, target, _ = _class_inputs(n=5000, c=17, seed=23)
    target[rng.random(5000) < 0.2] = -100
    weight = rng.uniform(0.2, 2.0, 17).astype(np.float32)
    cuts = np.sort(rng.choice(4999, 40, replace=False) + 1)
    chunks = tuple(int(s) for s in np.diff(np.r_[0, cuts, 5000]))
    dx = da.from_array(x, chunks=(chunks, 17))
    z = rng.standard_normal((5000, 3)).astype(np.float32)
    dz = da.from_array(z, chunks=(chunks, 3))
    return [
        fld.softmax_cross_entropy(dx, target, weight=weight, label_smoothing=0.1),
        fld.softmax_focal(dx, target, alpha=weight, reduction="sum"),
        fld.binary_cross_entropy_with_logits(dz, (z > 0.3).astype(np.float32),
                                             weight=np.float32(0.5)),
        fld.huber(dz, z * 0.5, reduction="none"),
    ]


def test_bitwise_same_on_any_cluster(client):
    """1 worker (2 threads), 2 workers, the threaded scheduler with 1 and 4 threads and the
    synchronous scheduler: the same bits."""
    results = _determinism_calls(np.random.default_rng(0))
    flat = [array for result in results for array in result]
    runs = {"2 workers": client.compute(flat, sync=True)}
    with _local_cluster(1, threads_per_worker=2) as cluster, \
            distributed.Client(cluster, set_as_default=False) as single:
        runs["1 worker"] = single.compute(flat, sync=True)
    runs["threads 1"] = dask.compute(*flat, scheduler="threads", num_workers=1)
    runs["threads 4"] = dask.compute(*flat, scheduler="threads", num_workers=4)
    runs["sync"] = dask.compute(*flat, scheduler="sync")
    reference = runs.pop("2 workers")
    for name, run in runs.items():
        for got, want in zip(run, reference):
            assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), name


def test_n_threads_per_chunk():
    """Per-chunk kernels run with n_threads=1 unless told otherwise; any count gives the
    same bits (the kernels' own determinism)."""
    x, target, _ = _class_inputs(n=2000, c=33, dtype=np.float64)
    dx = da.from_array(x, chunks=(700, 33))
    results = {}
    for n_threads in [1, 2, None]:
        result = fld.softmax_cross_entropy(dx, target, n_threads=n_threads)
        tasks = [task for task in dict(result.grad.__dask_graph__()).values()
                 if isinstance(getattr(task, "func", task), fld._ChunkKernel)
                 or (isinstance(task, tuple) and isinstance(task[0], fld._ChunkKernel))]
        results[n_threads] = dask.compute(*result, scheduler="sync")
        kernels = [getattr(t, "func", None) or t[0] for t in tasks]
        assert kernels and all(k.n_threads == n_threads for k in kernels)
    for n_threads in [2, None]:
        for got, want in zip(results[n_threads], results[1]):
            assert np.asarray(got).tobytes() == np.asarray(want).tobytes()


# ------------------------------------------------------------------------ laziness, errors

def test_lazy_until_computed():
    calls = []
    lock = threading.Lock()

    def record(block):
        with lock:
            calls.append(block.shape)
        return block

    x, target, _ = _class_inputs()
    dx = da.from_array(x, chunks=(ROW_CHUNKS, 6)).map_blocks(record, dtype=x.dtype,
                                                                     meta=np.empty((0, 0), x.dtype))
    result = fld.softmax_cross_entropy(dx, target)
    assert calls == []
    dask.compute(*result, scheduler="threads")
    assert len(calls) == len(ROW_CHUNKS)  # each chunk read once for the loss and gradient


def test_errors_before_computing():
    x, target, _ = _class_inputs()
    dx = da.from_array(x, chunks=(ROW_CHUNKS, 6))
    with pytest.raises(TypeError, match="float32"):
        fld.softmax_cross_entropy(dx.astype(np.int32), target)
    with pytest.raises(TypeError, match="integer"):
        fld.softmax_cross_entropy(dx, target.astype(np.float32))
    with pytest.raises(ValueError, match="samples along axis 0"):
        fld.softmax_cross_entropy(dx, target[:-1])
    with pytest.raises(ValueError, match="reduction"):
        fld.softmax_cross_entropy(dx, target, reduction="average")
    with pytest.raises(ValueError, match="weight"):
        fld.softmax_cross_entropy(dx, target, weight=np.ones(5))
    with pytest.raises(ValueError, match="label_smoothing"):
        fld.softmax_cross_entropy(dx, target, label_smoothing=2.0)
    with pytest.raises(ValueError, match=r"sample axis \(axis 0\) only"):
        fld.softmax_cross_entropy(dx.rechunk((10, 3)), target)
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        fld.softmax_cross_entropy(dx[dx[:, 0] > 0], target[:10])
    with pytest.raises(ValueError, match="n_threads"):
        fld.softmax_cross_entropy(dx, target, n_threads=0)
    with pytest.raises(TypeError, match="out"):
        fld.softmax_cross_entropy(dx, target, out=np.empty_like(x))
    with pytest.raises(ValueError, match="delta"):
        fld.huber(dx, dx, delta=-1.0)
    with pytest.raises(ValueError, match="broadcastable"):
        fld.binary_cross_entropy_with_logits(dx, dx, weight=np.ones(5))
    with pytest.raises(ValueError, match="ignore_index"):
        fld.softmax_cross_entropy(dx, np.full((37, 6), 1 / 6), ignore_index=1)


def test_bad_class_index_raises_at_compute_naming_the_chunk(compute):
    x, target, _ = _class_inputs()
    target[15] = 9
    result = fld.softmax_cross_entropy(da.from_array(x, chunks=(ROW_CHUNKS, 6)), target)
    with pytest.raises(ValueError, match=r"samples 11:31.*class index 9 at position 4"):
        compute(*result)


# --------------------------------------------------------------------------- the example

def _example_module():
    path = Path(__file__).resolve().parents[1] / "scripts" / "dask_logistic_regression.py"
    spec = importlib.util.spec_from_file_location("dask_logistic_regression", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_logistic_regression_example(client):
    """Full-batch gradient descent over a Dask array on the cluster gives the coefficients
    of the same descent in memory, to float rounding."""
    example = _example_module()
    chunks = (700, 300, 1200, 1, 799)
    features, labels = example.dask_data(3000, 5, chunks, seed=1)
    x_mem, y_mem = example.numpy_data(3000, 5, chunks, seed=1)
    np.testing.assert_array_equal(features.compute(scheduler="sync"), x_mem)
    w_dask, b_dask, losses = example.fit_dask(features, labels, 12, 2.0, scheduler=client)
    w_mem, b_mem, losses_mem = example.fit_in_memory(x_mem, y_mem, 12, 2.0)
    assert losses[-1] < losses[0]  # it fits
    np.testing.assert_allclose(w_dask, w_mem, rtol=1e-12)
    assert b_dask == pytest.approx(b_mem, rel=1e-12)
    np.testing.assert_allclose(losses, losses_mem, rtol=1e-13)


# ------------------------------------------------------------- a loss added later: one row

def _fake_weighted_mse(input, target, *, weight=None, reduction="mean", compute_grad=True,
                       out=None, n_threads=None):
    """A stand-in single-machine loss with the second wave's shape (weight= broadcastable to
    the input): w (x - t)^2, gradient 2 w (x - t); "mean" over the elements."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"unknown reduction {reduction!r}")
    x = np.asarray(input)
    difference = x - np.asarray(target, dtype=x.dtype)
    w = np.ones((), x.dtype) if weight is None else np.asarray(weight, dtype=x.dtype)
    loss = np.broadcast_to(w * difference * difference, x.shape).astype(x.dtype)
    grad = np.broadcast_to(2 * w * difference, x.shape).astype(x.dtype) if compute_grad else None
    if reduction == "none":
        return fastloss.LossResult(loss, grad)
    total = float(np.sum(loss, dtype=np.float64))
    if reduction == "sum":
        return fastloss.LossResult(total, grad)
    if grad is not None:
        grad = grad * x.dtype.type(1 / x.size) if x.size else grad
    return fastloss.LossResult(total / x.size if x.size else math.nan, grad)


@pytest.mark.parametrize("weight_shape", [None, (), (7,), (30, 7), (30, 1)])
def test_a_new_row_is_enough(monkeypatch, weight_shape):
    """A row of the table and a single-machine function are all a loss needs: here a stand-in
    for a weighted element-wise loss, with every weight layout (threaded scheduler: the
    stand-in lives in this process only)."""
    monkeypatch.setattr(fastloss, "fake_weighted_mse", _fake_weighted_mse, raising=False)
    row = fld.DaskLoss("fake_weighted_mse", fld.ELEMENTWISE, broadcast_args=("weight",))
    function = fld._make_function(row, _fake_weighted_mse)
    rng = np.random.default_rng(2)
    x, target = rng.standard_normal((30, 7)), rng.standard_normal((30, 7))
    weight = None if weight_shape is None else rng.uniform(0.5, 2.0, weight_shape)
    dx = da.from_array(x, chunks=((4, 11, 15), 7))
    for reduction in ["mean", "sum", "none"]:
        expected = _fake_weighted_mse(x, target, weight=weight, reduction=reduction)
        result = function(dx, target, weight=weight, reduction=reduction)
        _assert_matches_single_machine(dask.compute(*result, scheduler="threads"), expected,
                                       reduction)
