"""fastloss.torch's eager path (issue 16): the torch.autograd.Function that runs outside
torch.compile gives the custom op's values and gradients bit for bit, and its backward's
shortcut for one differentiated input (the saved gradient returned as it is when grad_output
is 1) stays correct under retained graphs, other grad_outputs and double backward."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fastloss.torch as flt  # noqa: E402


def make_logits(dtype=torch.float64, shape=(7, 5), seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=generator, dtype=dtype) * 2).requires_grad_()
    y = torch.randint(0, shape[1], (shape[0],), generator=generator)
    return x, y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_eager_equals_the_custom_op_bitwise(dtype, reduction):
    """The eager autograd.Function and torch.ops.fastloss.* (what torch.compile calls) run the
    same kernel: equal losses and gradients, bit for bit."""
    x, y = make_logits(dtype)
    loss = flt.cross_entropy(x, y, reduction=reduction, label_smoothing=0.1)
    assert loss.grad_fn.name() == "fastloss_softmax_cross_entropyBackward"
    (grad,) = torch.autograd.grad(loss.sum(), x)
    names = [name for name, _ in flt.kernel_option_names(flt._SPECS["softmax_cross_entropy"].row)]
    options = {"weight": None, "ignore_index": -100, "reduction": reduction,
               "label_smoothing": 0.1, "sample_weight": None, "z_loss": 0.0,
               "logit_softcap": None}
    op_loss, op_grad = flt.CUSTOM_OPS["softmax_cross_entropy"](
        x.detach(), y, *(options[name] for name in names), True)
    assert torch.equal(loss.detach(), op_loss)
    if reduction != "none":
        assert torch.equal(grad, op_grad)
    else:  # grad_output of ones per sample: the same gradient
        assert torch.equal(grad, op_grad * torch.ones(()))


@pytest.mark.parametrize("scale", [2.5, -1.0, 0.0])
@pytest.mark.parametrize("loss_name", ["cross_entropy", "huber_loss"])
def test_grad_output_other_than_one(loss_name, scale):
    """A reduced loss scaled before backward (grad_output != 1) gets the scaled gradient, as
    torch's loss does; the unscaled one afterwards is unchanged (nothing scaled in place)."""
    x, y = make_logits()
    target = y if loss_name == "cross_entropy" else torch.randn(x.shape, dtype=x.dtype)
    ours, theirs = getattr(flt, loss_name), getattr(F, loss_name)
    loss = ours(x, target)
    (scaled,) = torch.autograd.grad(loss, x, torch.tensor(scale, dtype=x.dtype),
                                    retain_graph=True)
    (unit,) = torch.autograd.grad(loss, x)
    x_ref = x.detach().clone().requires_grad_()
    (reference,) = torch.autograd.grad(theirs(x_ref, target) * scale, x_ref)
    torch.testing.assert_close(scaled, reference)
    torch.testing.assert_close(scaled, unit * scale)


def test_retained_graph_then_scaled_and_unit_backwards_accumulate():
    """retain_graph=True: the first (unit) backward's gradient is the saved one; autograd
    must not let .grad alias it, or the later backwards would see it changed."""
    x, y = make_logits()
    loss = flt.cross_entropy(x, y)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    x.grad.mul_(10.0)  # in place on .grad: the saved gradient must not change with it
    (2.0 * loss).backward(retain_graph=True)
    torch.testing.assert_close(x.grad, 12.0 * first)
    x.grad = None
    loss.backward()
    torch.testing.assert_close(x.grad, first)


def test_unit_backward_then_double_backward_is_torchs():
    """A retained first backward (the shortcut) does not disturb a later create_graph=True
    backward of the same graph: second derivatives are PyTorch's."""
    x, y = make_logits()
    loss = flt.cross_entropy(x, y)
    loss.backward(retain_graph=True)
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    x_ref = x.detach().clone().requires_grad_()
    (grad_ref,) = torch.autograd.grad(F.cross_entropy(x_ref, y), x_ref, create_graph=True)
    torch.testing.assert_close(grad, grad_ref)
    torch.testing.assert_close(x.grad, grad_ref.detach())
    (second,) = torch.autograd.grad((grad ** 2).sum(), x)
    (second_ref,) = torch.autograd.grad((grad_ref ** 2).sum(), x_ref)
    torch.testing.assert_close(second, second_ref)


def test_eager_and_compiled_training_steps_agree():
    """A linear model's loss and parameter gradients, eager and torch.compile(fullgraph=True)
    (the custom op), agree to float rounding over a few steps of SGD."""
    torch._dynamo.reset()
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(32, 6, generator=generator)
    labels = torch.randint(0, 4, (32,), generator=generator)
    results = []
    for compile_it in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Linear(6, 4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        criterion = flt.CrossEntropyLoss()

        def step(a, b):
            return criterion(model(a), b)

        run = torch.compile(step, fullgraph=True) if compile_it else step
        losses = []
        for _ in range(3):
            optimizer.zero_grad()
            loss = run(features, labels)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        results.append((losses, model.weight.detach().clone()))
    (eager_losses, eager_weight), (compiled_losses, compiled_weight) = results
    assert eager_losses == pytest.approx(compiled_losses, rel=1e-6)
    torch.testing.assert_close(eager_weight, compiled_weight, rtol=1e-6, atol=1e-7)


def test_module_reads_options_set_after_construction():
    """The module's forward reads its options (attributes and the weight buffer) at each
    call: changing them after construction changes the loss as in torch's module."""
    x, y = make_logits()
    ours, theirs = flt.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    weight = torch.linspace(0.5, 2.0, x.shape[1], dtype=x.dtype)
    for module in (ours, theirs):
        module.label_smoothing = 0.2
        module.reduction = "sum"
        module.weight = weight  # the buffer torch's module registered (None until now)
    assert "weight" in ours._buffers
    torch.testing.assert_close(ours(x, y), theirs(x, y))
    ours.weight = None
    theirs.weight = None
    torch.testing.assert_close(ours(x, y), theirs(x, y))
    torch.testing.assert_close(flt.CrossEntropyLoss()(x, y), torch.nn.CrossEntropyLoss()(x, y))
