"""linear_cross_entropy with torch's GEMMs (fastloss.torch.linear_cross_entropy's path,
_linear_ce.linear_cross_entropy_torch_gemms): every test of test_linear_cross_entropy.py that
is about results (torch's values and autograd gradients for every option, the NumPy reference,
the unchunked softmax_cross_entropy, finite differences, edge cases, out= and in place,
determinism, non-contiguous inputs, memory, errors with nothing written) rerun on this path,
plus what is its own: torch's thread setting, the adapter's use of it, equality with the
NumPy (SciPy BLAS) path to float rounding."""

import numpy as np
import pytest

import fastloss
from fastloss import _linear_ce

from cases import torch

pytestmark = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

from test_linear_cross_entropy import (  # noqa: E402,F401  (rerun here on torch's GEMMs)
    CHUNK, DTYPES, REDUCTIONS, class_weights, make_inputs, options_for,
    test_all_targets_ignored, test_class_weights_summing_to_zero_as_softmax_cross_entropy,
    test_compute_grad_false, test_deterministic, test_empty_batch,
    test_equals_softmax_cross_entropy_of_full_logits, test_error_messages_name_the_argument,
    test_errors_write_nothing, test_finite_differences, test_matches_reference,
    test_matches_torch, test_matches_torch_chunked_path, test_never_allocates_the_full_logits,
    test_non_contiguous_inputs, test_out_tuple_and_in_place_hidden)

TORCH_GEMMS = _linear_ce.linear_cross_entropy_torch_gemms
BLAS = fastloss.linear_cross_entropy


@pytest.fixture(autouse=True)
def torch_gemms(monkeypatch):
    """Every fastloss.linear_cross_entropy call of the imported tests goes to torch's GEMMs."""
    monkeypatch.setattr(fastloss, "linear_cross_entropy", TORCH_GEMMS)


def test_the_fixture_routes_to_torch_gemms(monkeypatch):
    called = []
    original = _linear_ce._torch_chunks
    monkeypatch.setattr(_linear_ce, "_torch_chunks",
                        lambda *args: called.append(1) or original(*args))
    hidden, weight, bias, target = make_inputs(np.float32)
    fastloss.linear_cross_entropy(hidden, weight, target, chunk_size=CHUNK)
    assert called


def test_same_signature():
    import inspect
    assert inspect.signature(TORCH_GEMMS) == inspect.signature(BLAS)


@pytest.mark.parametrize("forward_classes", [64, 4096])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("compute_grad", [True, False])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_equals_blas_path(monkeypatch, dtype, reduction, compute_grad, with_bias,
                          forward_classes):
    """Both paths to float rounding, at chunk sizes that do not divide N, N < chunk and 1,
    the logits in one call or in calls of 64 classes (the last one shorter)."""
    monkeypatch.setattr(_linear_ce, "TORCH_FORWARD_CLASSES", forward_classes)
    hidden, weight, bias, target = make_inputs(dtype, n=60, d=16, v=200, seed=4)
    bias = bias if with_bias else None
    options = options_for("everything", dtype, v=200)
    tol = {"rtol": 2e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
    for chunk in (1, 7, 60, 100, None):
        want = BLAS(hidden, weight, target, bias=bias, chunk_size=chunk, reduction=reduction,
                    compute_grad=compute_grad, **options)
        got = TORCH_GEMMS(hidden, weight, target, bias=bias, chunk_size=chunk,
                          reduction=reduction, compute_grad=compute_grad, **options)
        np.testing.assert_allclose(got.loss, want.loss, **tol)
        if not compute_grad:
            assert got.grad is None
            continue
        assert (got.grad[2] is None) == (bias is None)
        for g, w in zip(got.grad, want.grad):
            if w is None:
                continue
            assert g.dtype == dtype and g.shape == w.shape
            np.testing.assert_allclose(g, w, **tol)


@pytest.mark.parametrize("n_threads", [None, 1, 2])
def test_torch_threads_set_for_the_call_and_restored(monkeypatch, n_threads):
    seen = []
    original = _linear_ce._ce_on_chunk

    def spy(*args):
        seen.append(torch.get_num_threads())
        return original(*args)

    monkeypatch.setattr(_linear_ce, "_ce_on_chunk", spy)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        hidden, weight, bias, target = make_inputs(np.float32)
        TORCH_GEMMS(hidden, weight, target, chunk_size=CHUNK, n_threads=n_threads)
        assert set(seen) == {3 if n_threads is None else n_threads}
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_the_adapter_uses_torch_gemms(monkeypatch):
    """fastloss.torch.linear_cross_entropy runs this path (and its gradients are torch's)."""
    import torch.nn.functional as F

    import fastloss.torch as flt
    called = []
    original = _linear_ce._torch_chunks
    monkeypatch.setattr(_linear_ce, "_torch_chunks",
                        lambda *args: called.append(1) or original(*args))
    hidden, weight, bias, target = make_inputs(np.float64, n=70, d=12, v=90, seed=6)
    ht = torch.tensor(hidden, requires_grad=True)
    wt = torch.tensor(weight, requires_grad=True)
    bt = torch.tensor(bias, requires_grad=True)
    loss = flt.linear_cross_entropy(ht, wt, torch.tensor(target), linear_bias=bt,
                                    label_smoothing=0.1)
    loss.backward()
    assert called
    refs = [t.detach().clone().requires_grad_(True) for t in (ht, wt, bt)]
    expected = F.linear_cross_entropy(refs[0], refs[1], torch.tensor(target),
                                      linear_bias=refs[2], label_smoothing=0.1)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)
    for got, want in zip((ht, wt, bt), refs):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-12, atol=1e-14)
