"""fastloss.torch: the kernels inside PyTorch.

Parametrized from two tables: the adapter's rows (fastloss.torch.EXPORTED: every loss the
installed fastloss has) and the test registry (tests/cases.py: inputs, options and PyTorch's
expression of each loss). A loss added to fastloss with a row in fastloss.torch.LOSSES and a
case in tests/cases.py is enrolled in every test here.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fastloss  # noqa: E402
import fastloss.torch as flt  # noqa: E402
from cases import entries_by_name, merged_cases, option_id  # noqa: E402

# every registry entry of each loss, merged into one case
ENTRIES = entries_by_name()
CASE_BY_NAME = merged_cases()


def entry_case(row, option):
    """The registry entry an option of the merged case comes from."""
    return ENTRIES[row.fastloss][option.get("_entry", 0)]


ROWS = [row for row in flt.EXPORTED if row.fastloss in CASE_BY_NAME]
# rows of several differentiated inputs, without a target or with (N, C') overlap losses:
# tests/test_torch_adapter_multi.py
MULTI = [row for row in flt.EXPORTED if row.inputs > 1 or not row.has_target
         or row.per == "overlap"]
DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
SHAPE = (13, 5)

def adapter_takes(row, option) -> bool:
    """The registry option can be said in torch's signature of the row (smooth_l1_loss has
    no weight, for example: such options are not the adapter's to test)."""
    case = CASE_BY_NAME[row.fastloss]
    _, _, kwargs = case.make(np.random.default_rng(0), np.dtype(np.float64), SHAPE, option)
    names = dict(flt.kernel_option_names(row))
    return all(name in names for name in case.call_kwargs(kwargs))


def torch_refuses(row, option) -> bool:
    """torch refuses the registry option: a weight of another shape than the input where
    torch's function takes only the input's shape (mse_loss, l1_loss, huber_loss in torch
    2.13; fastloss broadcasts it). The adapter raises torch's error there
    (test_weight_torch_refuses_is_torchs_error)."""
    case = CASE_BY_NAME[row.fastloss]
    x, _, kwargs = case.make(np.random.default_rng(0), np.dtype(np.float64), SHAPE, option)
    return any(np.shape(kwargs.get(name)) != x.shape for name in row.same_shape
               if kwargs.get(name) is not None)


def row_options(row):
    """The registry options of the row that the adapter takes and torch accepts."""
    return [option for option in CASE_BY_NAME[row.fastloss].options
            if adapter_takes(row, option) and not torch_refuses(row, option)]


ROW_OPTIONS = [
    pytest.param(row, option, id=f"{row.fastloss}-{option_id(option)}")
    for row in ROWS
    for option in row_options(row)
]
REFUSED = [
    pytest.param(row, option, id=f"{row.fastloss}-{option_id(option)}")
    for row in ROWS
    for option in CASE_BY_NAME[row.fastloss].options
    if adapter_takes(row, option) and torch_refuses(row, option)
]
ROW_IDS = [row.fastloss for row in ROWS]


def tolerance(dtype):
    return dict(rtol=2e-5, atol=2e-6) if np.dtype(dtype) == np.float32 else \
        dict(rtol=1e-10, atol=1e-12)


def make_inputs(row, option, dtype, shape=SHAPE, seed=0):
    """(input tensor requiring grad, target (numpy), fastloss kwargs, adapter kwargs)."""
    case = CASE_BY_NAME[row.fastloss]
    x, target, kwargs = case.make(np.random.default_rng(seed), np.dtype(dtype), shape, option)
    kwargs = case.call_kwargs(kwargs)
    return torch.tensor(x, requires_grad=True), target, kwargs, adapter_kwargs(row, kwargs, x.dtype)


def adapter_kwargs(row, kwargs, dtype):
    """The registry's fastloss keyword arguments as the adapter's (torch's names, tensors)."""
    torch_name = dict(flt.kernel_option_names(row))
    return {torch_name[name]: (torch.as_tensor(value, dtype=torch_dtype(dtype))
                               if isinstance(value, np.ndarray) else value)
            for name, value in kwargs.items()}


def torch_dtype(dtype):
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(dtype)]


def target_tensor(target, dtype):
    tensor = torch.as_tensor(target)
    return tensor.to(torch_dtype(dtype)) if tensor.is_floating_point() else tensor


def adapter(row):
    return getattr(flt, flt.functional_name(row))


def torch_reference(row, x, target, kwargs, reduction, option=None):
    """For torch's names, torch's own function with the adapter's arguments (its semantics
    are the adapter's contract: mse_loss's weighted "mean" divides by the weights' sum, where
    fastloss.mse and the registry's expression divide by N), unless fastloss's own options
    (cross_entropy's sample_weight, z_loss, logit_softcap) are given; else the registry's
    expression."""
    if row.functional is not None and not set(kwargs) & set(row.extra):
        dtype = x.detach().numpy().dtype
        return getattr(F, row.functional)(x, target_tensor(target, dtype), reduction=reduction,
                                          **adapter_kwargs(row, kwargs, dtype))
    return entry_case(row, option or {}).torch_loss(x, target, kwargs, reduction)


def assert_close(actual, expected, dtype, what=""):
    np.testing.assert_allclose(np.asarray(actual.detach(), dtype=np.float64),
                               np.asarray(expected.detach(), dtype=np.float64),
                               equal_nan=True, err_msg=what, **tolerance(dtype))


# ------------------------------------------------------------------------ the table itself

def test_every_fastloss_loss_of_the_table_is_exported():
    for row in flt.LOSSES:
        exported = hasattr(fastloss, row.fastloss)
        assert (row in flt.EXPORTED) == exported, row.fastloss
        for name in (flt.functional_name(row), row.module):
            assert hasattr(flt, name) == exported, name
            assert (name in flt.__all__) == exported, name
        if exported:
            assert flt.CUSTOM_OPS[row.fastloss] is not None
            assert hasattr(torch.ops.fastloss, row.fastloss)


def test_every_exported_row_has_a_test_case():
    missing = [row.fastloss for row in flt.EXPORTED
               if row.fastloss not in CASE_BY_NAME and row not in MULTI]
    assert not missing, f"add a LossCase to tests/cases.py for {missing}"


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_signature_is_torchs(row):
    import inspect
    function = adapter(row)
    if row.functional is not None:  # torch's parameters, then fastloss's keyword-only extras
        ours = list(inspect.signature(function).parameters.values())
        theirs = list(inspect.signature(getattr(F, row.functional)).parameters.values())
        assert ours[:len(theirs)] == theirs
        assert [p.name for p in ours[len(theirs):]] == list(row.extra)
        assert all(p.kind == p.KEYWORD_ONLY for p in ours[len(theirs):])
        assert issubclass(getattr(flt, row.module), getattr(torch.nn, row.module))
    else:
        expected = [name for name in inspect.signature(getattr(fastloss, row.fastloss)).parameters
                    if name not in ("compute_grad", "out", "n_threads", "compute_hess",
                                    "hess_out")]
        assert list(inspect.signature(function).parameters) == expected


# ------------------------------------------------------------------ values and gradients

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row, option", ROW_OPTIONS)
def test_matches_torch(row, option, dtype, reduction):
    x, target, kwargs, kw = make_inputs(row, option, dtype)
    loss = adapter(row)(x, target_tensor(target, dtype), reduction=reduction, **kw)
    x_ref = x.detach().clone().requires_grad_()
    expected = torch_reference(row, x_ref, target, kwargs, reduction, option)
    assert loss.dtype == expected.dtype and loss.shape == expected.shape
    assert loss.grad_fn is not None
    assert_close(loss, expected, dtype, "loss")
    # a grad_output that is not 1 (and a different one per sample for "none")
    grad_output = torch.linspace(0.5, 2.0, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    loss.backward(grad_output)
    expected.backward(grad_output)
    assert_close(x.grad, x_ref.grad, dtype, "gradient")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("row, option", REFUSED)
def test_weight_torch_refuses_is_torchs_error(row, option, reduction):
    """A weight torch's function refuses (not of the input's shape) raises torch's error,
    though fastloss's kernel would broadcast it: torch's names keep torch's semantics."""
    x, target, kwargs, kw = make_inputs(row, option, np.float64)
    t = target_tensor(target, np.float64)
    with pytest.raises(ValueError) as expected:
        getattr(F, row.functional)(x, t, reduction=reduction, **kw)
    with pytest.raises(ValueError, match=str(expected.value)):
        adapter(row)(x, t, reduction=reduction, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_module_matches_function(row, dtype):
    if row.functional is not None:  # the options torch's module constructor takes (its
        # weight, where torch.nn has one: MSELoss, L1Loss and HuberLoss have none in 2.13)
        import inspect
        constructor = inspect.signature(getattr(torch.nn, row.module).__init__).parameters
    for option in row_options(row):
        x, target, _, kw = make_inputs(row, option, dtype)
        if row.functional is not None:
            if any(name not in constructor for name in kw):
                continue
        t = target_tensor(target, dtype)
        module = getattr(flt, row.module)(**kw, reduction="sum")
        expected = adapter(row)(x, t, reduction="sum", **kw)
        assert module(x, t).item() == expected.item()
        if row.functional is not None:  # torch's own module, same constructor
            reference = getattr(torch.nn, row.module)(**kw, reduction="sum")
            assert_close(module(x, t), reference(x, t), dtype)
            assert module.state_dict().keys() == reference.state_dict().keys()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_no_grad_and_input_without_grad(row, dtype):
    x, target, _, kw = make_inputs(row, {}, dtype)
    t = target_tensor(target, dtype)
    with_grad = adapter(row)(x, t, **kw)
    with torch.no_grad():
        plain = adapter(row)(x, t, **kw)
    detached = adapter(row)(x.detach(), t, **kw)
    assert plain.grad_fn is None and detached.grad_fn is None
    assert plain.item() == with_grad.item() == detached.item()


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_backward_twice_with_retained_graph(row):
    x, target, _, kw = make_inputs(row, {}, np.float64)
    loss = adapter(row)(x, target_tensor(target, np.float64), **kw)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward(retain_graph=True)
    loss.backward()
    torch.testing.assert_close(x.grad, 3 * first)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("row, option", ROW_OPTIONS)
def test_gradcheck(row, option, reduction):
    x, target, _, kw = make_inputs(row, option, np.float64, shape=(6, 4), seed=3)
    t = target_tensor(target, np.float64)
    assert torch.autograd.gradcheck(
        lambda a: adapter(row)(a, t, reduction=reduction, **kw), (x,))


# ------------------------------------------------------------------ the custom ops

@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_opcheck(row, reduction):
    """The custom op's schema, fake (meta) kernel, autograd registration and AOT dispatch
    are consistent with its real kernel."""
    option = row_options(row)[-1]  # the richest option of the case the adapter takes
    x, target, kwargs, _ = make_inputs(row, option, np.float64, shape=(6, 4))
    names = [name for name, _ in flt.kernel_option_names(row)]
    spec_defaults = flt._SPECS[row.fastloss].defaults
    torch_name = dict(flt.kernel_option_names(row))
    arguments = []
    for name in names:
        value = kwargs.get(name, spec_defaults[torch_name[name]])
        if name == "reduction":
            value = reduction
        elif isinstance(value, np.ndarray):
            value = torch.as_tensor(value)
        arguments.append(value)
    torch.library.opcheck(flt.CUSTOM_OPS[row.fastloss],
                          (x, target_tensor(target, np.float64), *arguments, True))


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_torch_compile_fullgraph(row):
    """A model whose loss is a fastloss module compiles as one graph (fullgraph=True raises
    on a graph break) and gives the eager result."""
    torch._dynamo.reset()
    x, target, _, kw = make_inputs(row, CASE_BY_NAME[row.fastloss].options[0], np.float32)
    t = target_tensor(target, np.float32)
    torch.manual_seed(0)
    model = torch.nn.Linear(SHAPE[1], SHAPE[1])
    criterion = getattr(flt, row.module)(**kw)

    # the model's output in the loss's input domain (probabilities for binary_cross_entropy)
    link = torch.sigmoid if row.fastloss == "binary_cross_entropy" else (lambda z: z)

    def step(features, labels):
        return criterion(link(model(features)), labels)

    compiled = torch.compile(step, fullgraph=True)
    features = x.detach()
    loss = compiled(features, t)
    loss.backward()
    compiled_grad = model.weight.grad.clone()
    model.zero_grad()
    eager = step(features, t)
    eager.backward()
    torch.testing.assert_close(loss, eager, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(compiled_grad, model.weight.grad, rtol=1e-5, atol=1e-7)


def test_torch_compile_uses_the_custom_op():
    """The compiled graph calls torch.ops.fastloss.softmax_cross_entropy (no graph break,
    no fallback to PyTorch's cross-entropy)."""
    torch._dynamo.reset()
    seen = []

    def backend(graph_module, example_inputs):
        seen.extend(str(node.target) for node in graph_module.graph.nodes)
        return graph_module.forward

    def per_sample_weighted(a, b, w):
        return (flt.cross_entropy(a, b, label_smoothing=0.1, reduction="none") * w).sum()

    compiled = torch.compile(per_sample_weighted, backend=backend, fullgraph=True)
    for n in (8, 12, 16):  # new batch sizes: a dynamic-shape graph (the fake kernel's shapes)
        x = torch.randn(n, 5, requires_grad=True)
        y = torch.randint(0, 5, (n,))
        w = torch.rand(n)
        compiled(x, y, w).backward()
        x_ref = x.detach().clone().requires_grad_()
        (F.cross_entropy(x_ref, y, label_smoothing=0.1, reduction="none") * w).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad)
    assert any("fastloss.softmax_cross_entropy" in target for target in seen), seen
    assert not any("nll_loss" in target or "log_softmax" in target for target in seen), seen


# --------------------------------------------------- shapes PyTorch takes beyond (N, C)

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_k_dimensional_and_unbatched(reduction):
    rng = np.random.default_rng(1)
    for shape, target_shape in [((4, 5, 3, 2), (4, 3, 2)), ((5,), ())]:
        x = torch.tensor(rng.standard_normal(shape), requires_grad=True)
        y = torch.as_tensor(rng.integers(0, 5, target_shape))
        w = torch.tensor(rng.uniform(0.5, 2, 5))
        loss = flt.cross_entropy(x, y, weight=w, reduction=reduction, label_smoothing=0.1)
        x_ref = x.detach().clone().requires_grad_()
        expected = F.cross_entropy(x_ref, y, weight=w, reduction=reduction, label_smoothing=0.1)
        assert loss.shape == expected.shape
        torch.testing.assert_close(loss, expected)
        loss.sum().backward()
        expected.sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad)
        # probabilities along dim 1
        p = torch.softmax(torch.tensor(rng.standard_normal(shape)), dim=0 if len(shape) == 1 else 1)
        torch.testing.assert_close(flt.cross_entropy(x, p, reduction=reduction),
                                   F.cross_entropy(x, p, reduction=reduction))


def test_legacy_size_average_and_reduce():
    x = torch.randn(6, 3, requires_grad=True)
    t = torch.randn(6, 3)
    for size_average, reduce in [(False, None), (None, False), (True, True), (False, True)]:
        with pytest.warns(UserWarning):
            expected = F.smooth_l1_loss(x, t, size_average=size_average, reduce=reduce)
        with pytest.warns(UserWarning):
            loss = flt.smooth_l1_loss(x, t, size_average=size_average, reduce=reduce)
        torch.testing.assert_close(loss, expected)


# ------------------------------------------------------ what goes to PyTorch's implementation

def test_half_precision_and_other_devices_go_to_torch():
    x = torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype).requires_grad_()
        loss = flt.cross_entropy(xh, y)
        assert loss.dtype == dtype
        assert loss.item() == F.cross_entropy(xh, y).item()
    meta = flt.cross_entropy(x.to("meta"), y.to("meta"))
    assert meta.device.type == "meta"
    sigmoid_meta = flt.sigmoid_focal(x.to("meta"), torch.rand(8, 5).to("meta"))
    assert sigmoid_meta.device.type == "meta"


def test_target_that_requires_grad_goes_to_torch():
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    for name in ["huber_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits"]:
        t = torch.rand(7, 3, dtype=torch.float64, requires_grad=True)
        getattr(flt, name)(x, t).backward()
        mine = t.grad.clone()
        t.grad = None
        getattr(F, name)(x, t).backward()
        torch.testing.assert_close(mine, t.grad)
    probabilities = torch.softmax(torch.randn(7, 3, dtype=torch.float64), 1).requires_grad_()
    flt.cross_entropy(x, probabilities).backward()
    assert probabilities.grad is not None


def test_options_the_kernel_does_not_take_go_to_torch():
    """torch arguments that the installed fastloss function lacks (huber's element weight
    until fastloss.huber takes one) give PyTorch's result, not an error."""
    for row in ROWS:
        spec = flt._SPECS[row.fastloss]
        for name in spec.torch_only:
            x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
            t = torch.rand(6, 4, dtype=torch.float64)
            value = torch.rand(6, 4, dtype=torch.float64)
            torch.testing.assert_close(adapter(row)(x, t, **{name: value}),
                                       getattr(F, row.functional)(x, t, **{name: value}))


def test_mismatched_and_broadcast_targets_go_to_torch():
    x = torch.randn(6, 4, requires_grad=True)
    t = torch.randn(4)
    with pytest.warns(UserWarning):  # torch broadcasts, with a warning; so does the adapter
        expected = F.huber_loss(x, t)
    with pytest.warns(UserWarning):
        torch.testing.assert_close(flt.huber_loss(x, t), expected)
    t64 = torch.rand(6, 4, dtype=torch.float64)
    try:
        expected = F.binary_cross_entropy_with_logits(x, t64)
    except RuntimeError as error:
        with pytest.raises(RuntimeError, match=str(error)[:30]):
            flt.binary_cross_entropy_with_logits(x, t64)
    else:
        torch.testing.assert_close(flt.binary_cross_entropy_with_logits(x, t64), expected)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_double_backward_is_torchs(row):
    """create_graph=True: second derivatives by PyTorch's implementation of the same loss."""
    x, target, kwargs, kw = make_inputs(row, {}, np.float64, shape=(5, 4))
    t = target_tensor(target, np.float64)
    (grad,) = torch.autograd.grad(adapter(row)(x, t, **kw), x, create_graph=True)
    x_ref = x.detach().clone().requires_grad_()
    (grad_ref,) = torch.autograd.grad(torch_reference(row, x_ref, target, kwargs, "mean"),
                                      x_ref, create_graph=True)
    torch.testing.assert_close(grad, grad_ref)
    if not grad_ref.requires_grad:  # torch's gradient is constant in x (kl_div, pinball):
        assert not grad.requires_grad  # no second derivative to take, as torch's
        return
    try:
        (second_ref,) = torch.autograd.grad((grad_ref ** 2).sum(), x_ref)
    except RuntimeError as error:  # torch has none (multi_margin_loss): the same error
        with pytest.raises(RuntimeError, match=str(error)[:40]):
            torch.autograd.grad((grad ** 2).sum(), x)
        return
    (second,) = torch.autograd.grad((grad ** 2).sum(), x)
    torch.testing.assert_close(second, second_ref)


def test_double_backward_refuses_an_input_modified_in_place():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    logits = x * 1.0
    loss = flt.cross_entropy(logits, torch.tensor([0, 1, 2, 0, 1]))
    with torch.no_grad():
        logits.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        torch.autograd.grad(loss, x, create_graph=True)


# ------------------------------------------------------------------------- errors

def test_errors_are_fastlosss_before_any_work():
    x = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(ValueError, match="target"):
        flt.cross_entropy(x, torch.tensor([0, 1, 5, 2]))
    assert x.grad is None
    with pytest.raises(ValueError, match="reduction"):
        flt.huber_loss(x, torch.zeros(4, 3), reduction="avg")
    with pytest.raises(ValueError, match="delta"):
        flt.huber_loss(x, torch.zeros(4, 3), delta=-1.0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        flt.cross_entropy(x, torch.tensor([0, 1, 2, 2]), smoothing=0.1)
    with pytest.raises(TypeError, match="missing"):
        flt.huber_loss(x)
    with pytest.raises(TypeError, match="positional"):
        flt.huber_loss(x, x, "mean", 1.0, None, 3)


# ------------------------------------------------------------------ a real training run

def _digits(dtype):
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # a generated set of the same shape: 10 noisy class prototypes
        rng = np.random.default_rng(0)
        prototypes = rng.uniform(0, 16, (10, 64))
        labels = rng.integers(0, 10, 1797)
        features = prototypes[labels] + rng.normal(0, 3, (1797, 64))
    else:
        features, labels = load_digits(return_X_y=True)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    return torch.tensor(features, dtype=dtype), torch.as_tensor(labels)


def _train(criterion, dtype, epochs=4, batch=256):
    features, labels = _digits(dtype)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10)).to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    curve = []
    for _ in range(epochs):
        for start in range(0, len(labels), batch):
            index = order[start:start + batch]
            optimizer.zero_grad()
            loss = criterion(model(features[index]), labels[index])
            assert (type(loss.grad_fn).__name__ == "fastloss_softmax_cross_entropyBackward") \
                == isinstance(criterion, flt.CrossEntropyLoss)
            loss.backward()
            optimizer.step()
            curve.append(loss.item())
    with torch.no_grad():
        accuracy = (model(features).argmax(1) == labels).double().mean().item()
    return np.array(curve), accuracy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_training_run_loss_curve_equals_torchs(dtype):
    ours, accuracy = _train(flt.CrossEntropyLoss(label_smoothing=0.05), dtype)
    theirs, accuracy_ref = _train(torch.nn.CrossEntropyLoss(label_smoothing=0.05), dtype)
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(ours, theirs, rtol=rtol)
    assert ours[-1] < 0.5 * ours[0]  # it learned
    assert accuracy > 0.9 and abs(accuracy - accuracy_ref) < 0.01


# ---------------------------------------------- a loss added to fastloss is one row of the table

def _stand_in_mse(input, target, *, weight=None, reduction="mean", compute_grad=True,
                  out=None, n_threads=None):
    """fastloss.mse's contract (shared/API.md) in NumPy, for the adapter test below while
    fastloss has no mse: d^2 times weight; "mean" divides by the number of elements."""
    d = input - np.asarray(target, dtype=input.dtype)
    w = np.ones_like(d) if weight is None else np.broadcast_to(weight, d.shape)
    per = (w * d * d).astype(input.dtype)
    scale = {"mean": 1.0 / d.size if d.size else np.nan, "sum": 1.0, "none": 1.0}[reduction]
    loss = per if reduction == "none" else float(per.sum(dtype=np.float64) * scale)
    grad = (2 * scale * w * d).astype(input.dtype) if compute_grad else None
    return fastloss.LossResult(loss, grad)


@pytest.fixture(scope="module")
def mse_loss():
    """fastloss.torch.mse_loss: the real one when fastloss has mse, else the adapter built
    from the table's mse row over a NumPy stand-in of the kernel."""
    if hasattr(flt, "mse_loss"):
        return flt.mse_loss
    row = next(row for row in flt.LOSSES if row.fastloss == "mse")
    fastloss.mse = _stand_in_mse
    try:
        spec = flt._Spec(row)
        return flt._make_function(spec, flt._register_custom_op(spec),
                                  flt._make_eager_function(spec))
    finally:
        del fastloss.mse


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_a_row_of_the_table_is_a_loss(mse_loss, weighted, reduction):
    """The mse row, torch's weighted "mean" included (mse_loss divides by the weights' sum)."""
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.standard_normal((7, 3)), requires_grad=True)
    t = torch.tensor(rng.standard_normal((7, 3)))
    kw = {"weight": torch.tensor(rng.uniform(0.1, 2.0, (7, 3)))} if weighted else {}
    loss = mse_loss(x, t, reduction=reduction, **kw)
    assert "mse" in type(loss.grad_fn).__name__ or weighted and reduction == "mean"
    x_ref = x.detach().clone().requires_grad_()
    expected = F.mse_loss(x_ref, t, reduction=reduction, **kw)
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    module = flt.MSELoss if hasattr(flt, "MSELoss") else None
    if module is not None:
        torch.testing.assert_close(module(reduction=reduction)(x, t),
                                   F.mse_loss(x, t, reduction=reduction))
