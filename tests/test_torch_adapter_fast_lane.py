"""fastloss.torch's direct call of softmax cross-entropy's Cython fast path (issue 16): the
plain call (class indices, no class weight, sample weight, z-loss or cap) gives the full
kernel call's loss and gradient bit for bit, the other calls go through the full call, and
the loss tensor made through NumPy is what the scalar tensor was (dtype, shape, grad_fn)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastloss  # noqa: E402
import fastloss.torch as flt  # noqa: E402

SPEC = flt._SPECS["softmax_cross_entropy"]


def logits(dtype, shape=(9, 6), seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=generator, dtype=dtype) * 3).requires_grad_()
    y = torch.randint(0, shape[1], (shape[0],), generator=generator)
    return x, y


def full_call(x, y, **options):
    """The fastloss call the adapter made before the fast lane: the public function."""
    return fastloss.softmax_cross_entropy(x.detach().numpy(), y.numpy(), **options)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2, "ignore_index": 1}])
def test_plain_call_equals_the_full_call_bitwise(dtype, reduction, options):
    x, y = logits(dtype)
    loss = flt.cross_entropy(x, y, reduction=reduction, **options)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    expected_loss, expected_grad = full_call(x, y, reduction=reduction, **options)
    assert loss.dtype == dtype and loss.requires_grad
    assert loss.grad_fn.name() == "fastloss_softmax_cross_entropyBackward"
    assert loss.shape == (() if reduction != "none" else (9,))
    expected_loss = np.asarray(expected_loss, dtype=x.detach().numpy().dtype)
    assert np.array_equal(loss.detach().numpy(), expected_loss)
    assert np.array_equal(grad.numpy(), expected_grad)


def test_the_fast_lane_is_taken_for_the_plain_call_only(monkeypatch):
    """The plain call does not reach the public function; a class weight, a sample weight,
    a z-loss or a cap does (and gets its own results)."""
    x, y = logits(torch.float64)
    calls = []
    kernel = SPEC.kernel

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(SPEC, "kernel", spy)
    flt.cross_entropy(x, y).backward()
    assert calls == []
    for options in [{"weight": torch.rand(6, dtype=torch.float64) + 0.5},
                    {"sample_weight": torch.rand(9, dtype=torch.float64)},
                    {"z_loss": 0.01}, {"logit_softcap": 5.0}]:
        calls.clear()
        loss = flt.cross_entropy(x, y, **options)
        assert len(calls) == 1
        numpy_options = {k: (v.numpy() if isinstance(v, torch.Tensor) else v)
                         for k, v in options.items()}
        assert loss.item() == full_call(x, y, **numpy_options)[0]


def test_a_target_the_fast_path_does_not_take_goes_to_the_full_call():
    """int32 class indices and (N, C, d) inputs are not the fast path's: the full call
    computes them (same values as int64 indices / torch)."""
    x, y = logits(torch.float32)
    expected = flt.cross_entropy(x, y)
    assert flt.cross_entropy(x, y.to(torch.int32)).item() == expected.item()
    x3 = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    y3 = torch.randint(0, 5, (4, 3))
    torch.testing.assert_close(flt.cross_entropy(x3, y3),
                               torch.nn.functional.cross_entropy(x3, y3))


def test_an_out_of_range_label_raises_torchs_way_or_fastlosss_with_nothing_changed():
    """A bad label: the fast path declines, the full call raises its error."""
    x, y = logits(torch.float32)
    y[0] = 99
    with pytest.raises((ValueError, IndexError, RuntimeError)):
        flt.cross_entropy(x, y)
    assert x.grad is None
