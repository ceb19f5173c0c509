"""fastloss.torch's shortcut for the plain softmax cross-entropy call with a gradient (issue
16): f(input, target) on a (N, C) float input and (N,) int64 class indices goes straight to
the autograd Function, without run / _kernel_takes; it gives the general path's loss and
gradient bit for bit, and every other call still goes through the general path."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import fastloss.torch as flt  # noqa: E402


def logits(dtype, shape=(9, 6), seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=generator, dtype=dtype) * 3).requires_grad_()
    y = torch.randint(0, shape[1], (shape[0],), generator=generator)
    return x, y


def loss_and_grad(call, x, y):
    loss = call(x, y)
    (grad,) = torch.autograd.grad(loss, x)
    return loss, grad


@pytest.fixture
def general_path_calls(monkeypatch):
    """The calls that reach the general path's _kernel_takes (their tensors' shapes)."""
    calls = []
    takes = flt._kernel_takes

    def spy(spec, positional, options):
        calls.append(tuple(tuple(t.shape) for t in positional))
        return takes(spec, positional, options)

    monkeypatch.setattr(flt, "_kernel_takes", spy)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_plain_call_skips_the_general_path_with_the_same_bits(dtype, general_path_calls):
    x, y = logits(dtype)
    plain = [loss_and_grad(flt.cross_entropy, x, y),
             loss_and_grad(flt.CrossEntropyLoss(), x, y)]
    assert general_path_calls == []
    # the same call through the general path (an option given by name, at its default)
    loss, grad = loss_and_grad(lambda a, b: flt.cross_entropy(a, b, reduction="mean"), x, y)
    assert len(general_path_calls) == 1
    for plain_loss, plain_grad in plain:
        assert plain_loss.dtype == dtype and plain_loss.shape == ()
        assert plain_loss.grad_fn.name() == "fastloss_softmax_cross_entropyBackward"
        assert torch.equal(plain_loss, loss) and torch.equal(plain_grad, grad)
    expected = torch.nn.functional.cross_entropy(x, y)
    torch.testing.assert_close(loss, expected)


def test_other_calls_take_the_general_path(general_path_calls):
    """No gradient wanted, a Parameter (a Tensor subclass), int32 indices, probabilities,
    a (N, C, d) input and one unbatched sample: each through run, with torch's values."""
    x, y = logits(torch.float64)
    probabilities = torch.softmax(torch.randn(9, 6, dtype=torch.float64), 1)
    x3 = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    y3 = torch.randint(0, 5, (4, 3))
    cases = [(x.detach(), y), (torch.nn.Parameter(x.detach().clone()), y),
             (x, y.to(torch.int32)), (x, probabilities), (x3, y3), (x[0], y[0])]
    for a, b in cases:
        general_path_calls.clear()
        loss = flt.cross_entropy(a, b)
        assert len(general_path_calls) == 1, (a.shape, b.dtype)
        expected = torch.nn.functional.cross_entropy(
            a, b if b.is_floating_point() else b.long())   # torch takes int64 indices only
        torch.testing.assert_close(loss, expected)
    general_path_calls.clear()
    with torch.no_grad():
        loss = flt.cross_entropy(x, y)
    assert len(general_path_calls) == 1 and not loss.requires_grad
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(x, y))


def test_a_module_off_its_defaults_takes_the_general_path(general_path_calls):
    x, y = logits(torch.float32)
    loss = flt.CrossEntropyLoss(label_smoothing=0.1)(x, y)
    assert len(general_path_calls) == 1
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(x, y,
                                                                       label_smoothing=0.1))
