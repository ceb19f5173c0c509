"""fastloss.torch: the losses of several differentiated inputs, without a target, or of
(N, C') overlap losses (the rows tests/test_torch_adapter.py does not take), and the native
K-dimensional cross_entropy with fastloss's own options.

References: torch.nn.functional where torch has the loss; for fastloss's own losses the
formulas of tests/test_overlap.py and tests/test_pairs.py (MONAI's and Hadsell et al.'s written
in torch, held there against the kernels) and the VAE KL term written out below.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fastloss.torch as flt  # noqa: E402
from test_overlap import torch_formula as overlap_formula  # noqa: E402
from test_pairs import _torch_contrastive  # noqa: E402

DTYPES = [torch.float32, torch.float64]
REDUCTIONS = ["mean", "sum", "none"]


def _gaussian_kl(mean, log_var, reduction="mean"):
    per = -0.5 * torch.sum(1 + log_var - mean ** 2 - torch.exp(log_var), dim=1)
    return {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]


def _signs(rng, n):
    return torch.as_tensor(rng.choice([-1.0, 1.0], n))


class Multi:
    """One row: its inputs (make(rng, dtype) -> (differentiated tensors, target or None,
    other tensors as keyword arguments)), the options to try and the reference loss."""

    def __init__(self, name, make, options, reference):
        self.name, self.make, self.options, self.reference = name, make, options, reference

    def row(self):
        return next(row for row in flt.EXPORTED if flt.functional_name(row) == self.name)


def _rows(rng, dtype, count, n=7, d=5):
    return [torch.as_tensor(rng.standard_normal((n, d)), dtype=dtype) for _ in range(count)]


def _overlap_make(activation, target_kind):
    def make(rng, dtype):
        x = torch.as_tensor(rng.standard_normal((3, 4, 5, 2)) * 2, dtype=dtype)
        if activation == "none":
            x = torch.sigmoid(x)
        index = torch.as_tensor(rng.integers(0, 4, (3, 5, 2)))
        target = index if target_kind == "index" else \
            F.one_hot(index, 4).movedim(-1, 1).to(dtype)
        return [x], target, {}
    return make


def _overlap(kind):
    def reference(x, target, reduction, **options):
        return overlap_formula(kind, x, target.numpy(), dict(options, activation=options.get(
            "activation", "sigmoid")), reduction)
    return reference


def _linear_ce_make(rng, dtype):
    hidden, = _rows(rng, dtype, 1, n=9, d=6)
    weight = torch.as_tensor(rng.standard_normal((11, 6)), dtype=dtype)
    target = torch.as_tensor(rng.integers(0, 11, 9))
    target[2] = -100
    return [hidden, weight], target, {}


def _linear_ce_bias_make(rng, dtype):
    (hidden, weight), target, _ = _linear_ce_make(rng, dtype)
    bias = torch.as_tensor(rng.standard_normal(11), dtype=dtype)
    return [hidden, weight], target, {"linear_bias": bias}


def _linear_ce_prob_make(rng, dtype):
    (hidden, weight), _, _ = _linear_ce_make(rng, dtype)
    target = torch.softmax(torch.as_tensor(rng.standard_normal((9, 11)), dtype=dtype), 1)
    return [hidden, weight], target, {}


MULTIS = [
    Multi("triplet_margin_loss", lambda rng, dtype: (_rows(rng, dtype, 3), None, {}),
          [{}, {"p": 1.0, "swap": True}, {"margin": 0.3, "p": 3.0, "eps": 1e-3}],
          lambda *xs, reduction, **o: F.triplet_margin_loss(*xs, reduction=reduction, **o)),
    Multi("cosine_embedding_loss", lambda rng, dtype: (_rows(rng, dtype, 2), _signs(rng, 7), {}),
          [{}, {"margin": 0.2}, {"margin": -0.5}],
          lambda a, b, t, reduction, **o: F.cosine_embedding_loss(a, b, t.to(a.dtype),
                                                                  reduction=reduction, **o)),
    Multi("margin_ranking_loss",
          lambda rng, dtype: ([r[:, 0] for r in _rows(rng, dtype, 2)], _signs(rng, 7), {}),
          [{}, {"margin": 0.5}],
          lambda a, b, t, reduction, **o: F.margin_ranking_loss(a, b, t.to(a.dtype),
                                                                reduction=reduction, **o)),
    Multi("contrastive",
          lambda rng, dtype: (_rows(rng, dtype, 2), torch.as_tensor(rng.uniform(0, 1, 7)), {}),
          [{}, {"margin": 3.0}],
          lambda a, b, t, reduction, **o: _torch_contrastive(a, b, t, reduction=reduction, **o)),
    Multi("gaussian_kl", lambda rng, dtype: (_rows(rng, dtype, 2), None, {}), [{}],
          lambda m, v, reduction: _gaussian_kl(m, v, reduction)),
    Multi("dice", _overlap_make("softmax", "index"),
          [{"activation": "softmax"},
           {"activation": "softmax", "batch": True, "include_background": False,
            "squared": True, "weight": torch.tensor([0.5, 1.0, 2.0])},
           {"smooth": 0.5}],
          _overlap("dice")),
    Multi("jaccard", _overlap_make("sigmoid", "onehot"), [{}, {"batch": True}],
          _overlap("jaccard")),
    Multi("tversky", _overlap_make("none", "onehot"),
          [{"activation": "none", "alpha": 0.3, "beta": 0.8}], _overlap("tversky")),
    Multi("linear_cross_entropy", _linear_ce_make,
          [{}, {"label_smoothing": 0.1, "ignore_index": -100}],
          lambda h, w, t, reduction, **o: F.linear_cross_entropy(h, w, t, reduction=reduction,
                                                                 **o)),
    Multi("linear_cross_entropy", _linear_ce_bias_make, [{"weight": "class"}],
          lambda h, w, t, reduction, **o: F.linear_cross_entropy(h, w, t, reduction=reduction,
                                                                 **o)),
    Multi("linear_cross_entropy", _linear_ce_prob_make, [{"label_smoothing": 0.2}],
          lambda h, w, t, reduction, **o: F.linear_cross_entropy(h, w, t, reduction=reduction,
                                                                 **o)),
]
CASES = [pytest.param(m, option, id=f"{m.name}-{i}-{j}")
         for i, m in enumerate(MULTIS) for j, option in enumerate(m.options)]


def make(multi, option, dtype, seed=0):
    """(differentiated tensors requiring grad, positional non-differentiated target or None,
    keyword arguments) in dtype."""
    rng = np.random.default_rng(seed)
    inputs, target, kwargs = multi.make(rng, dtype)
    kwargs = dict(kwargs, **option)
    if target is not None and target.is_floating_point():
        target = target.to(dtype)
    if kwargs.get("weight") == "class":  # linear_cross_entropy's class weight
        kwargs["weight"] = torch.as_tensor(rng.uniform(0.5, 2.0, 11), dtype=dtype)
    kwargs = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
              for k, v in kwargs.items()}
    for k, v in kwargs.items():
        if k == "linear_bias":
            v.requires_grad_()
    return [x.requires_grad_() for x in inputs], target, kwargs


def call(function, inputs, target, kwargs, **more):
    args = list(inputs) + ([] if target is None else [target])
    return function(*args, **kwargs, **more)


def clone(inputs, kwargs):
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    kwargs = {k: (v.detach().clone().requires_grad_() if k == "linear_bias" else v)
              for k, v in kwargs.items()}
    return inputs, kwargs


def differentiated(inputs, kwargs):
    return list(inputs) + ([kwargs["linear_bias"]] if "linear_bias" in kwargs else [])


def tolerance(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)


def test_every_row_of_several_inputs_is_tested_here():
    import test_torch_adapter
    names = {m.name for m in MULTIS}
    assert {flt.functional_name(row) for row in test_torch_adapter.MULTI} <= names
    for name in names:
        assert hasattr(flt, name) and name in flt.__all__


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("multi, option", CASES)
def test_matches_torch(multi, option, dtype, reduction):
    inputs, target, kwargs = make(multi, option, dtype)
    ref_inputs, ref_kwargs = clone(inputs, kwargs)
    loss = call(getattr(flt, multi.name), inputs, target, kwargs, reduction=reduction)
    expected = call(multi.reference, ref_inputs, target, ref_kwargs, reduction=reduction)
    assert loss.dtype == expected.dtype == dtype and loss.shape == expected.shape
    row = multi.row()
    by_kernel = not (row.none_by_torch and reduction == "none")
    assert type(loss.grad_fn).__name__.startswith("fastloss_") == by_kernel
    torch.testing.assert_close(loss, expected, **tolerance(dtype))
    grad_output = torch.linspace(0.5, 2.0, loss.numel(), dtype=dtype).reshape(loss.shape)
    loss.backward(grad_output)
    expected.backward(grad_output)
    for ours, theirs in zip(differentiated(inputs, kwargs), differentiated(ref_inputs, ref_kwargs)):
        torch.testing.assert_close(ours.grad, theirs.grad, **tolerance(dtype))


@pytest.mark.parametrize("multi", [m for m in MULTIS if m.make is not _linear_ce_prob_make
                                   and m.row().inputs > 1],
                         ids=lambda m: m.name)
def test_only_the_inputs_that_require_grad_get_one(multi):
    inputs, target, kwargs = make(multi, multi.options[0], torch.float64)
    inputs[0].requires_grad_(False)
    loss = call(getattr(flt, multi.name), inputs, target, kwargs)
    ref_inputs, ref_kwargs = clone(inputs, kwargs)
    ref_inputs[0].requires_grad_(False)
    call(multi.reference, ref_inputs, target, ref_kwargs, reduction="mean").backward()
    loss.backward()
    assert inputs[0].grad is None
    torch.testing.assert_close(inputs[1].grad, ref_inputs[1].grad)
    # and none at all: no graph, the loss only
    with torch.no_grad():
        plain = call(getattr(flt, multi.name), inputs, target, kwargs)
    assert plain.grad_fn is None and plain.item() == loss.item()


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("multi, option", CASES)
def test_gradcheck(multi, option, reduction):
    inputs, target, kwargs = make(multi, option, torch.float64, seed=3)
    function = getattr(flt, multi.name)
    bias = kwargs.pop("linear_bias", None)

    def loss(*tensors):
        extra = {"linear_bias": tensors[-1]} if bias is not None else {}
        xs = tensors[:-1] if bias is not None else tensors
        return call(function, xs, target, dict(kwargs, **extra), reduction=reduction)

    assert torch.autograd.gradcheck(loss, tuple(inputs) + ((bias,) if bias is not None else ()))


@pytest.mark.parametrize("multi", [m for m in MULTIS if m.name != "linear_cross_entropy"
                                   or m.make is _linear_ce_bias_make], ids=lambda m: m.name)
def test_opcheck(multi):
    """The custom op's schema, fake kernel, autograd registration and AOT dispatch."""
    row = multi.row()
    spec = flt._SPECS[row.fastloss]
    inputs, target, kwargs = make(multi, multi.options[-1], torch.float64)
    for reduction in ("mean", "none"):
        named = {fl: kwargs.get(user, spec.defaults[user]) for fl, user in
                 flt.kernel_option_names(row)}
        named = {k: row.none_means.get(k, v) if v is None else v for k, v in named.items()}
        named["reduction"] = reduction
        positional = list(inputs) + ([] if target is None else [target])
        torch.library.opcheck(flt.CUSTOM_OPS[row.fastloss],
                              (*positional, *named.values(), True))


@pytest.mark.parametrize("multi", MULTIS[:1] + MULTIS[5:6], ids=lambda m: m.name)
def test_double_backward_is_torchs(multi):
    inputs, target, kwargs = make(multi, multi.options[0], torch.float64)
    ref_inputs, ref_kwargs = clone(inputs, kwargs)
    grads = torch.autograd.grad(call(getattr(flt, multi.name), inputs, target, kwargs), inputs,
                                create_graph=True)
    ref_grads = torch.autograd.grad(call(multi.reference, ref_inputs, target, ref_kwargs,
                                         reduction="mean"), ref_inputs, create_graph=True)
    second = torch.autograd.grad(sum((g ** 2).sum() for g in grads), inputs)
    second_ref = torch.autograd.grad(sum((g ** 2).sum() for g in ref_grads), ref_inputs)
    for ours, theirs in zip(second, second_ref):
        torch.testing.assert_close(ours, theirs)


# ------------------------------------------------------------------------------- modules

def test_modules_take_the_options_and_torchs_constructors():
    for multi in MULTIS:
        row = multi.row()
        module = getattr(flt, row.module)
        if row.functional is not None:
            assert issubclass(module, getattr(torch.nn, row.module))
            assert inspect.signature(module.__init__) == \
                inspect.signature(getattr(torch.nn, row.module).__init__)
        else:
            options = list(inspect.signature(getattr(flt, multi.name)).parameters)[
                row.inputs + row.has_target:]
            assert list(inspect.signature(module.__init__).parameters)[1:] == options
    triplet = flt.TripletMarginLoss(margin=0.5, p=1.0, reduction="sum")
    a, p, n = [torch.randn(6, 3) for _ in range(3)]
    torch.testing.assert_close(triplet(a, p, n), torch.nn.TripletMarginLoss(
        margin=0.5, p=1.0, reduction="sum")(a, p, n))
    dice = flt.DiceLoss(activation="softmax", weight=torch.tensor([1.0, 2.0]), batch=True)
    x, t = torch.randn(4, 2, 5), torch.randint(0, 2, (4, 5))
    assert "weight" in dict(dice.named_buffers())
    assert dice(x, t).item() == flt.dice(x, t, activation="softmax", batch=True,
                                         weight=torch.tensor([1.0, 2.0])).item()
    kl = flt.GaussianKLLoss(reduction="sum")
    assert kl(a, p).item() == pytest.approx(_gaussian_kl(a, p, "sum").item(), rel=1e-6)


def test_linear_cross_entropy_module_is_torchs_with_the_kernel():
    torch.manual_seed(0)
    ours = flt.LinearCrossEntropyLoss(6, 11, bias=True, label_smoothing=0.1)
    theirs = torch.nn.LinearCrossEntropyLoss(6, 11, bias=True, label_smoothing=0.1)
    theirs.load_state_dict(ours.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    h = torch.randn(9, 6)
    t = torch.randint(0, 11, (9,))
    loss, expected = ours(h, t), theirs(h, t)
    assert type(loss.grad_fn).__name__ == "fastloss_linear_cross_entropyBackward"
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(ours.linear.weight.grad, theirs.linear.weight.grad)
    torch.testing.assert_close(ours.linear.bias.grad, theirs.linear.bias.grad)


def _compile_check(step, args, parameters):
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(*args)
    loss.backward()
    grads = [p.grad.clone() for p in parameters]
    for p in parameters:
        p.grad = None
    eager = step(*args)
    eager.backward()
    torch.testing.assert_close(loss, eager, rtol=1e-6, atol=1e-7)
    for g, p in zip(grads, parameters):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-7)


def test_torch_compile_fullgraph_embedding_net_with_triplet_and_gaussian_kl():
    """A small model whose loss is TripletMarginLoss plus a GaussianKLLoss: one graph."""
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 8)
    triplet, kl = flt.TripletMarginLoss(margin=0.5), flt.GaussianKLLoss()

    def step(a, p, n):
        ea, ep, en = net(a), net(p), net(n)
        return triplet(ea, ep, en) + 0.1 * kl(ea[:, :4], ea[:, 4:])

    _compile_check(step, [torch.randn(6, 5) for _ in range(3)], list(net.parameters()))


def test_torch_compile_fullgraph_linear_cross_entropy_and_dice():
    torch.manual_seed(0)
    head = flt.LinearCrossEntropyLoss(5, 7, bias=True)
    conv = torch.nn.Conv2d(2, 3, 1)
    dice = flt.DiceLoss(activation="softmax")

    def step(h, y, image, mask):
        return head(torch.tanh(h), y) + dice(conv(image), mask)

    args = [torch.randn(8, 5), torch.randint(0, 7, (8,)), torch.randn(2, 2, 4, 4),
            torch.randint(0, 3, (2, 4, 4))]
    _compile_check(step, args, list(head.parameters()) + list(conv.parameters()))


# --------------------------------------------------------------- what goes to PyTorch

def test_what_the_kernels_do_not_take_goes_to_torch():
    a, p, n = [torch.randn(6, 4, dtype=torch.float16, requires_grad=True) for _ in range(3)]
    loss = flt.triplet_margin_loss(a, p, n)
    assert loss.dtype == torch.float16 and not type(loss.grad_fn).__name__.startswith("fastloss")
    assert loss.item() == F.triplet_margin_loss(a, p, n).item()
    # unbatched (D,) inputs: torch's
    a1, p1, n1 = [torch.randn(4, requires_grad=True) for _ in range(3)]
    torch.testing.assert_close(flt.triplet_margin_loss(a1, p1, n1),
                               F.triplet_margin_loss(a1, p1, n1))
    # a target that requires grad (margin_ranking's y): torch's, with its gradient
    x1, x2 = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    y = torch.tensor([1.0, -1, 1, -1, 1], dtype=torch.float64, requires_grad=True)
    flt.margin_ranking_loss(x1, x2, y).backward()
    assert y.grad is not None
    # fastloss's own: its torch formula (half precision, the overlap losses' "none")
    x = torch.randn(2, 3, 4, dtype=torch.bfloat16)
    t = torch.randint(0, 3, (2, 4))
    torch.testing.assert_close(flt.dice(x, t, activation="softmax"),
                               overlap_formula("dice", x, t.numpy(), {"activation": "softmax"},
                                               "mean"))
    # linear_cross_entropy: K-dim weights, unbatched input, chunking options are torch's
    h = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 5, (4, 2))
    loss = flt.linear_cross_entropy(h, w, t)
    assert not type(loss.grad_fn).__name__.startswith("fastloss")
    torch.testing.assert_close(loss, F.linear_cross_entropy(h, w, t))
    w2 = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(flt.linear_cross_entropy(h[0], w2, t[0, 0]),
                               F.linear_cross_entropy(h[0], w2, t[0, 0]))


def test_errors_are_fastlosss_or_torchs():
    with pytest.raises(ValueError, match="margin|p"):
        flt.triplet_margin_loss(*[torch.randn(4, 3) for _ in range(3)], p=-1.0)
    with pytest.raises(ValueError, match="activation"):
        flt.dice(torch.randn(2, 3, 4), torch.randint(0, 3, (2, 4)), activation="relu")
    with pytest.raises(TypeError, match="unexpected keyword"):
        flt.gaussian_kl(torch.randn(2, 3), torch.randn(2, 3), weight=None)
    with pytest.raises(TypeError, match="missing"):
        flt.cosine_embedding_loss(torch.randn(2, 3), torch.randn(2, 3))


# ------------------------------------ cross_entropy: K-dim natively, fastloss's own options

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_cross_entropy_k_dim_with_fastloss_options(target_kind, dtype, reduction, monkeypatch):
    from cases import torch_class_axis_ce
    rng = np.random.default_rng(2)
    x = torch.as_tensor(rng.standard_normal((3, 5, 4, 2)) * 3, dtype=dtype).requires_grad_()
    if target_kind == "index":
        y = torch.as_tensor(rng.integers(0, 5, (3, 4, 2)))
        y[0, 1, 1] = 2
        options = dict(weight=torch.as_tensor(rng.uniform(0.5, 2, 5), dtype=dtype),
                       ignore_index=2, label_smoothing=0.1)
    else:
        y = torch.softmax(torch.as_tensor(rng.standard_normal((3, 5, 4, 2)), dtype=dtype), 1)
        options = {}
    extras = dict(sample_weight=torch.as_tensor(rng.uniform(0, 2, (3, 4, 2)), dtype=dtype),
                  z_loss=0.01, logit_softcap=4.0)
    # the kernel gets the (N, C, d1, d2) input itself: no transposed copy
    spec = flt._SPECS["softmax_cross_entropy"]
    seen = []
    kernel = spec.kernel

    def spy(logits, *args, **kwargs):
        seen.append(np.shares_memory(logits, x.detach().numpy()) and logits.ndim == 4)
        return kernel(logits, *args, **kwargs)

    monkeypatch.setattr(spec, "kernel", spy)
    loss = flt.cross_entropy(x, y, reduction=reduction, **options, **extras)
    assert seen == [True]
    x_ref = x.detach().clone().requires_grad_()
    kwargs = {k: (v.numpy() if isinstance(v, torch.Tensor) else v)
              for k, v in dict(options, **extras).items()}
    expected = torch_class_axis_ce(x_ref, y, kwargs, reduction)
    torch.testing.assert_close(loss, expected, **tolerance(dtype))
    grad_output = torch.linspace(0.5, 2.0, loss.numel(), dtype=dtype).reshape(loss.shape)
    loss.backward(grad_output)
    expected.backward(grad_output)
    torch.testing.assert_close(x.grad, x_ref.grad, **tolerance(dtype))


def test_cross_entropy_fastloss_options_fall_back_to_the_torch_formula():
    from fastloss import _torch_formulas
    x = torch.randn(6, 4, dtype=torch.bfloat16, requires_grad=True)
    y = torch.randint(0, 4, (6,))
    s = torch.rand(6, dtype=torch.bfloat16)
    loss = flt.cross_entropy(x, y, sample_weight=s, z_loss=0.1)
    assert not type(loss.grad_fn).__name__.startswith("fastloss")
    assert loss.item() == _torch_formulas.cross_entropy(x, y, sample_weight=s, z_loss=0.1).item()
    # and with torch's arguments only, torch's own cross_entropy
    assert flt.cross_entropy(x, y).item() == F.cross_entropy(x, y).item()
    # gradcheck of the kernel path with every option, K-dim
    xk = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    yk = torch.randint(0, 4, (3, 2))
    sk = torch.rand(3, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a: flt.cross_entropy(a, yk, sample_weight=sk, z_loss=0.05, logit_softcap=2.0,
                                    reduction="none"), (xk,))


def test_softmax_focal_k_dim():
    from fastloss import _torch_formulas
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (3, 5))
    s = torch.rand(3, 5, dtype=torch.float64)
    loss = flt.softmax_focal(x, y, gamma=1.5, sample_weight=s, reduction="none")
    assert type(loss.grad_fn).__name__ == "fastloss_softmax_focalBackward"
    x_ref = x.detach().clone().requires_grad_()
    expected = _torch_formulas.softmax_focal(x_ref, y, gamma=1.5, sample_weight=s,
                                             reduction="none")
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
