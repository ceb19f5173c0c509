"""linear_cross_entropy: the chunked LM head against PyTorch's F.linear_cross_entropy (and
autograd for z_loss / logit_softcap, which torch's function does not take), against the NumPy
reference over the full logits, and against fastloss.softmax_cross_entropy of those logits."""

import tracemalloc
import warnings

import numpy as np
import pytest

import fastloss
from fastloss import _linear_ce, reference

from cases import torch

if torch is not None:
    import torch.nn.functional as F

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
N, D, V = 37, 8, 50
CHUNK = 8  # does not divide N

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def make_inputs(dtype, n=N, d=D, v=V, seed=0, probabilities=False, ignore_index=-100):
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((n, d)).astype(dtype)
    weight = (rng.standard_normal((v, d)) / np.sqrt(d) * 3).astype(dtype)
    bias = rng.standard_normal(v).astype(dtype)
    if probabilities:
        target = rng.random((n, v))
        target /= target.sum(axis=1, keepdims=True)
    else:
        target = rng.integers(0, v, n)
        target[::6] = ignore_index
    return hidden, weight, bias, target


def class_weights(dtype, v=V, seed=5):
    return (np.random.default_rng(seed).random(v) + 0.25).astype(dtype)


OPTIONS = {
    "plain": {},
    "ignore_index": {"ignore_index": 7},
    "label_smoothing": {"label_smoothing": 0.15},
    "class_weight": {"class_weight": "weights"},
    "z_loss": {"z_loss": 0.05},
    "logit_softcap": {"logit_softcap": 2.5},
    "everything": {"class_weight": "weights", "label_smoothing": 0.1, "z_loss": 0.02,
                   "logit_softcap": 4.0},
    "probabilities": {"label_smoothing": 0.1, "class_weight": "weights", "z_loss": 0.01},
}


def options_for(name, dtype, v=V):
    options = dict(OPTIONS[name])
    if options.get("class_weight") == "weights":
        options["class_weight"] = class_weights(dtype, v=v)
    return options


def inputs_for(name, dtype, **kwargs):
    return make_inputs(dtype, probabilities=name == "probabilities",
                       ignore_index=OPTIONS[name].get("ignore_index", -100), **kwargs)


def torch_linear_ce(hidden, weight, target, *, bias=None, class_weight=None, ignore_index=-100,
                    label_smoothing=0.0, z_loss=0.0, logit_softcap=None, reduction="mean",
                    chunked=False):
    """float64 PyTorch loss and (d hidden, d weight, d bias) by autograd: F.linear_cross_entropy
    where it covers the options, else F.linear + tanh cap + F.cross_entropy + the z term."""
    ht = torch.tensor(np.asarray(hidden, np.float64), requires_grad=True)
    wt = torch.tensor(np.asarray(weight, np.float64), requires_grad=True)
    bt = None if bias is None else torch.tensor(np.asarray(bias, np.float64), requires_grad=True)
    yt = torch.as_tensor(target)
    yt = yt.double() if yt.is_floating_point() else yt
    cwt = None if class_weight is None else torch.tensor(np.asarray(class_weight, np.float64))
    ce = {"weight": cwt, "ignore_index": ignore_index, "label_smoothing": label_smoothing}
    if z_loss == 0.0 and logit_softcap is None:
        options = torch.nn.LinearCrossEntropyOptions() if chunked else None
        loss = F.linear_cross_entropy(ht, wt, yt, linear_bias=bt, reduction=reduction,
                                      options=options, **ce)
    else:
        logits = F.linear(ht, wt, bt)
        if logit_softcap is not None:
            logits = logit_softcap * torch.tanh(logits / logit_softcap)
        per_sample = F.cross_entropy(logits, yt, reduction="none", **ce)
        kept = (yt != ignore_index) if yt.ndim == 1 else torch.ones(len(yt), dtype=torch.bool)
        z_term = torch.where(kept, z_loss * torch.logsumexp(logits, dim=1) ** 2, 0.0)
        if reduction == "none":
            loss = per_sample + z_term
        else:
            loss = per_sample.sum() + z_term.sum()
            if reduction == "mean":
                if yt.ndim == 1 and cwt is not None:
                    denominator = torch.where(kept, cwt[torch.where(kept, yt, 0)], 0.0).sum()
                else:
                    denominator = kept.sum() if yt.ndim == 1 else len(yt)
                loss = loss / denominator
    loss.sum().backward()
    grads = (ht.grad, wt.grad, None if bt is None else bt.grad)
    return loss.detach().numpy(), tuple(None if g is None else g.numpy() for g in grads)


def tolerances(dtype):
    return {"rtol": 2e-4, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-13}


def assert_result_close(result, expected_loss, expected_grads, dtype, bias=True):
    loss, grads = result
    tol = tolerances(dtype)
    np.testing.assert_allclose(loss, expected_loss, **tol)
    assert len(grads) == 3
    for got, want in zip(grads[:2], expected_grads[:2]):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol)
    if bias:
        assert grads[2].dtype == dtype
        np.testing.assert_allclose(grads[2], expected_grads[2], **tol)
    else:
        assert grads[2] is None


# ------------------------------------------------------------------ against PyTorch

@needs_torch
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch(dtype, option, reduction, with_bias):
    hidden, weight, bias, target = inputs_for(option, dtype)
    bias = bias if with_bias else None
    options = options_for(option, dtype)
    result = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=CHUNK,
                                           reduction=reduction, **options)
    expected = torch_linear_ce(hidden, weight, target, bias=bias, reduction=reduction, **options)
    assert_result_close(result, *expected, dtype, bias=with_bias)
    if reduction == "none":
        assert result.loss.dtype == dtype and result.loss.shape == (N,)
    else:
        assert isinstance(result.loss, float)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_chunked_path(dtype):
    """torch's own chunked implementation (LinearCrossEntropyOptions()) agrees too."""
    hidden, weight, bias, target = make_inputs(dtype)
    result = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=CHUNK)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = torch_linear_ce(hidden, weight, target, bias=bias, chunked=True)
    assert_result_close(result, *expected, dtype)


# ------------------------------------------------------------------ against the oracles

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference(dtype, option, reduction):
    hidden, weight, bias, target = inputs_for(option, dtype, seed=3)
    options = options_for(option, dtype)
    got = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=CHUNK,
                                        reduction=reduction, **options)
    want = reference.linear_cross_entropy(hidden, weight, target, bias=bias,
                                          reduction=reduction, **options)
    assert_result_close(got, want.loss, want.grad, dtype)


CE_OPTIONS = ["plain", "ignore_index", "label_smoothing", "class_weight"]


@pytest.mark.parametrize("chunk_size", [1, 5, 16, N, 64, None])
@pytest.mark.parametrize("option", CE_OPTIONS + ["probabilities_plain"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_equals_softmax_cross_entropy_of_full_logits(dtype, option, chunk_size):
    """The chunked result is fastloss.softmax_cross_entropy(hidden @ weight.T + bias) and its
    chain rule, to float rounding, for chunk sizes that do not divide N and N < chunk."""
    probabilities = option == "probabilities_plain"
    option = "plain" if probabilities else option
    hidden, weight, bias, target = make_inputs(
        dtype, seed=4, probabilities=probabilities,
        ignore_index=OPTIONS[option].get("ignore_index", -100))
    options = options_for(option, dtype)
    logits = hidden @ weight.T + bias
    ce_options = {("weight" if k == "class_weight" else k): v for k, v in options.items()}
    for reduction in REDUCTIONS:
        loss, g = fastloss.softmax_cross_entropy(logits, target, reduction=reduction, **ce_options)
        g = g.astype(np.float64)
        want = (g @ weight.astype(np.float64), g.T @ hidden.astype(np.float64), g.sum(axis=0))
        got = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias,
                                            reduction=reduction, chunk_size=chunk_size, **options)
        rounding = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
        np.testing.assert_allclose(got.loss, loss, **rounding)
        for got_grad, want_grad in zip(got.grad, want):
            np.testing.assert_allclose(got_grad, want_grad, **rounding)


def test_finite_differences():
    """float64 gradients of every input equal central differences of the loss, every option."""
    rng = np.random.default_rng(11)
    hidden, weight, bias, target = make_inputs(np.float64, n=7, d=3, v=6, seed=11)
    options = {"class_weight": rng.random(6) + 0.5, "label_smoothing": 0.2, "z_loss": 0.1,
               "logit_softcap": 1.5}
    _, grads = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=3,
                                             **options)
    step = 1e-6
    for array, grad in zip((hidden, weight, bias), grads):
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + step
            up = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias,
                                               compute_grad=False, **options).loss
            array[index] = saved - step
            down = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias,
                                                 compute_grad=False, **options).loss
            array[index] = saved
            numeric[index] = (up - down) / (2 * step)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ edge cases

@needs_torch
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(dtype, with_bias):
    hidden, weight, bias, _ = make_inputs(dtype, n=0)
    bias = bias if with_bias else None
    target = np.zeros(0, dtype=np.int64)
    loss, (dh, dw, db) = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias)
    torch_loss, torch_grads = torch_linear_ce(hidden, weight, target, bias=bias)
    assert np.isnan(loss) and np.isnan(torch_loss)
    assert dh.shape == (0, D) and dh.dtype == dtype
    np.testing.assert_array_equal(dw, np.zeros((V, D), dtype))
    np.testing.assert_array_equal(dw, torch_grads[1])
    if with_bias:
        np.testing.assert_array_equal(db, np.zeros(V, dtype))
    assert fastloss.linear_cross_entropy(hidden, weight, target, reduction="sum").loss == 0.0
    none = fastloss.linear_cross_entropy(hidden, weight, target, reduction="none").loss
    assert none.shape == (0,) and none.dtype == dtype
    # an out= gradient of weight holding garbage is zeroed
    out = (None, np.full((V, D), np.nan, dtype), None)
    np.testing.assert_array_equal(
        fastloss.linear_cross_entropy(hidden, weight, target, out=out).grad[1], 0)


@needs_torch
@pytest.mark.parametrize("z_loss", [0.0, 0.1])
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_targets_ignored(dtype, z_loss):
    hidden, weight, bias, _ = make_inputs(dtype)
    target = np.full(N, -100)
    loss, grads = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias, z_loss=z_loss,
                                                chunk_size=CHUNK)
    torch_loss, torch_grads = torch_linear_ce(hidden, weight, target, bias=bias, z_loss=z_loss)
    assert np.isnan(loss) and np.isnan(torch_loss)
    for grad, torch_grad in zip(grads, torch_grads):
        np.testing.assert_array_equal(grad, np.zeros_like(grad))
        np.testing.assert_array_equal(grad, torch_grad)
    assert fastloss.linear_cross_entropy(hidden, weight, target, reduction="sum").loss == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_class_weights_summing_to_zero_as_softmax_cross_entropy(dtype):
    """A zero "mean" denominator with rows kept: nan loss, nan gradient rows where the full
    softmax_cross_entropy has them, zero rows for the ignored samples."""
    hidden, weight, bias, target = make_inputs(dtype)
    cw = np.ones(V, dtype)
    cw[target[target >= 0]] = 0
    loss, (dh, dw, db) = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias,
                                                       class_weight=cw, chunk_size=CHUNK)
    full_loss, g = fastloss.softmax_cross_entropy(hidden @ weight.T + bias, target, weight=cw)
    assert np.isnan(loss) and np.isnan(full_loss)
    np.testing.assert_array_equal(np.isnan(dh), np.isnan(g @ weight))
    np.testing.assert_array_equal(dh[target == -100], 0)
    assert np.isnan(dw).all() and np.isnan(db).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_compute_grad_false(dtype):
    hidden, weight, bias, target = make_inputs(dtype)
    options = options_for("everything", dtype)
    for reduction in REDUCTIONS:
        with_grad = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias,
                                                  reduction=reduction, chunk_size=CHUNK, **options)
        without = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias,
                                                reduction=reduction, chunk_size=CHUNK,
                                                compute_grad=False, **options)
        assert without.grad is None
        np.testing.assert_array_equal(without.loss, with_grad.loss)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_tuple_and_in_place_hidden(dtype):
    hidden, weight, bias, target = make_inputs(dtype)
    expected = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=CHUNK)
    outs = (np.full_like(hidden, np.nan), np.full_like(weight, np.nan), np.full_like(bias, np.nan))
    result = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=CHUNK,
                                           out=outs)
    assert all(got is out for got, out in zip(result.grad, outs))
    for got, want in zip(result.grad, expected.grad):
        np.testing.assert_array_equal(got, want)
    # None entries are allocated
    partial = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=CHUNK,
                                            out=[None, np.empty_like(weight), None])
    for got, want in zip(partial.grad, expected.grad):
        np.testing.assert_array_equal(got, want)
    # the gradient of hidden written over hidden
    in_place = hidden.copy()
    result = fastloss.linear_cross_entropy(in_place, weight, target, bias=bias, chunk_size=CHUNK,
                                           out=(in_place, None, None))
    assert result.grad[0] is in_place
    for got, want in zip(result.grad, expected.grad):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic(dtype, n_threads):
    hidden, weight, bias, target = make_inputs(dtype, n=300, d=40, v=700, seed=9)
    options = options_for("everything", dtype) | {"class_weight": class_weights(dtype, v=700)}
    assert_same_bits([fastloss.linear_cross_entropy(hidden, weight, target, bias=bias,
                                                    chunk_size=64, n_threads=n_threads,
                                                    **options) for _ in range(3)])


def assert_same_bits(runs):
    """Every result equal to the first, bit for bit (loss and each gradient)."""
    for run in runs[1:]:
        assert run.loss == runs[0].loss
        for got, want in zip(run.grad, runs[0].grad):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(dtype):
    hidden, weight, bias, target = make_inputs(dtype)
    expected = fastloss.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=CHUNK)
    wide_hidden = np.zeros((N, 2 * D), dtype)
    wide_hidden[:, ::2] = hidden
    fortran_weight = np.asfortranarray(weight)
    strided_bias = np.repeat(bias, 2)[::2]
    strided_target = np.repeat(target, 2)[::2]
    result = fastloss.linear_cross_entropy(wide_hidden[:, ::2], fortran_weight, strided_target,
                                           bias=strided_bias, chunk_size=CHUNK)
    assert result.loss == expected.loss
    for got, want in zip(result.grad, expected.grad):
        np.testing.assert_array_equal(got, want)


def test_default_chunk_size():
    """From the sizes only (no thread count, no dtype): the largest multiple of 16 rows n with
    n (V + 8 D) <= (15/256) N V, within [32, 512], at most N."""
    size = _linear_ce.default_chunk_size
    assert size(4096, 32768, 512, 4) == 208
    assert size(2048, 131072, 1024, 4) == 112
    assert size(4096, 32768, 512, 8) == 208
    for n, v, d in [(4096, 32768, 512), (2048, 131072, 1024), (8192, 50000, 4096)]:
        rows = size(n, v, d, 4)
        assert rows % 16 == 0 and rows * (v + 8 * d) <= 15 / 256 * n * v
        assert (rows + 16) * (v + 8 * d) > 15 / 256 * n * v
    assert size(10, 32768, 512, 4) == 10
    assert size(1000, 32768, 512, 4) == 48
    assert size(400, 32768, 512, 4) == 32
    assert size(10**6, 1000, 64, 4) == 512
    assert size(0, 10, 4, 4) == 1


def test_tile_size():
    """~2 MiB of weight per vocabulary tile, a multiple of 16 classes, at least 16, at most V."""
    assert _linear_ce.tile_size(32768, 512, 4) == 1024
    assert _linear_ce.tile_size(131072, 1024, 4) == 512
    assert _linear_ce.tile_size(131072, 1024, 8) == 256
    assert _linear_ce.tile_size(50, 8, 4) == 50
    assert _linear_ce.tile_size(10**6, 10**6, 4) == 16


def test_never_allocates_the_full_logits():
    """Peak traced memory of a call stays far below the (N, V) logits (NumPy reports its
    allocations to tracemalloc)."""
    hidden, weight, bias, target = make_inputs(np.float32, n=2048, d=16, v=4096, seed=2)
    logits_bytes = 2048 * 4096 * 4
    gradient_bytes = hidden.nbytes + weight.nbytes + bias.nbytes
    tracemalloc.start()
    try:
        fastloss.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=128)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - gradient_bytes < logits_bytes / 8


# ------------------------------------------------------------------ errors

def _error_cases(dtype, hidden, weight, bias, target):
    other = np.float64 if dtype == np.float32 else np.float32
    bad_target = target.copy()
    bad_target[4] = V
    return [
        (TypeError, {"hidden": hidden.astype(np.int32)}),
        (TypeError, {"weight": weight.astype(other)}),
        (TypeError, {"bias": bias.astype(other)}),
        (TypeError, {"target": target.astype(float)}),
        (ValueError, {"hidden": hidden[0]}),
        (ValueError, {"weight": weight[:, :-1]}),
        (ValueError, {"weight": weight[0]}),
        (ValueError, {"bias": bias[:-1]}),
        (ValueError, {"target": target[:-1]}),
        (ValueError, {"target": bad_target}),
        (ValueError, {"target": target[:, None]}),
        (ValueError, {"target": target.astype(float)[:, None].repeat(V, axis=1), "ignore_index": 3}),
        (ValueError, {"target": np.zeros((N, V + 1))}),
        (ValueError, {"target": np.zeros((N, 1, 1), np.int64)}),
        (ValueError, {"chunk_size": 0}),
        (ValueError, {"chunk_size": -3}),
        (TypeError, {"chunk_size": 2.5}),
        (ValueError, {"z_loss": -0.1}),
        (ValueError, {"logit_softcap": 0.0}),
        (ValueError, {"logit_softcap": -1.0}),
        (ValueError, {"label_smoothing": 1.5}),
        (ValueError, {"reduction": "avg"}),
        (ValueError, {"n_threads": 0}),
        (ValueError, {"class_weight": np.ones(V - 1)}),
        (ValueError, {"out": "grads"}),
        (ValueError, {"out": (None, None)}),
        (ValueError, {"out": (np.empty((N, D + 1), dtype), None, None)}),
        (ValueError, {"out": (np.empty((N, D), other), None, None)}),
        (ValueError, {"out": (None, weight, None)}),
        (ValueError, {"out": (None, None, bias)}),
        (ValueError, {"out": (None, None, np.empty(V, dtype)), "bias": None}),
        (ValueError, {"out": (np.empty((N, D), dtype), None, None), "compute_grad": False}),
    ]


@pytest.mark.parametrize("case", range(len(_error_cases(np.float32, *make_inputs(np.float32)))))
@pytest.mark.parametrize("dtype", DTYPES)
def test_errors_write_nothing(dtype, case):
    hidden, weight, bias, target = make_inputs(dtype)
    error, changes = _error_cases(dtype, hidden, weight, bias, target)[case]
    outs = (np.full_like(hidden, 7), np.full_like(weight, 7), np.full_like(bias, 7))
    arguments = {"hidden": hidden, "weight": weight, "target": target, "bias": bias,
                 "out": outs, **changes}
    given = {name: value.copy() for name, value in arguments.items() if isinstance(value, np.ndarray)}
    for function in (fastloss.linear_cross_entropy, reference.linear_cross_entropy):
        call = dict(arguments)
        with pytest.raises(error):
            function(call.pop("hidden"), call.pop("weight"), call.pop("target"), **call)
        for name, value in given.items():
            np.testing.assert_array_equal(arguments[name], value)
        for out in outs:
            assert (out == 7).all()


def test_error_messages_name_the_argument():
    hidden, weight, bias, target = make_inputs(np.float32)
    with pytest.raises(ValueError, match="chunk_size"):
        fastloss.linear_cross_entropy(hidden, weight, target, chunk_size=0)
    with pytest.raises(TypeError, match="weight must have the dtype of hidden"):
        fastloss.linear_cross_entropy(hidden, weight.astype(np.float64), target)
    with pytest.raises(ValueError, match=r"out\[1\] overlaps weight"):
        fastloss.linear_cross_entropy(hidden, weight, target, out=(None, weight, None))
    with pytest.raises(ValueError, match=r"target.ravel\(\)"):
        fastloss.linear_cross_entropy(hidden, weight, target[:, None])
    with pytest.raises(ValueError, match="class index 50 at position 3"):
        bad = target.copy()
        bad[3] = 50
        fastloss.linear_cross_entropy(hidden, weight, bad)
