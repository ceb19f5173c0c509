"""triplet_margin, contrastive, cosine_embedding, margin_ranking: against the NumPy reference,
PyTorch (F.triplet_margin_loss, F.cosine_embedding_loss, F.margin_ranking_loss, and
F.pairwise_distance for the contrastive loss), central finite differences, in float32 and
float64, over every option; zero distances, all-zero rows, kinks, nan/inf confinement; the
gradient tuple, out= tuples (with None entries, in place), compute_grad=False, non-contiguous
inputs, thread counts (bitwise), every SIMD level, and every error with nothing written."""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from fastloss import _kernels, reference

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - torch is in the test extra
    torch = None

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


class Pair:
    """One loss: how to make its inputs, and its torch counterpart."""

    def __init__(self, name, n_inputs, options, make_target, torch_loss, rows=True):
        self.name, self.n_inputs, self.options = name, n_inputs, options
        self.make_target, self.torch_loss, self.rows = make_target, torch_loss, rows

    def make(self, rng, dtype, n=9, d=5):
        shape = (n, d) if self.rows else (n,)
        inputs = [rng.standard_normal(shape).astype(dtype) for _ in range(self.n_inputs)]
        target = self.make_target(rng, n)
        return inputs, target

    def call(self, inputs, target, option, **kwargs):
        args = list(inputs) + ([] if target is None else [target])
        return getattr(fastloss, self.name)(*args, **option, **kwargs)

    def call_reference(self, inputs, target, option, **kwargs):
        args = list(inputs) + ([] if target is None else [target])
        return getattr(reference, self.name)(*args, **option, **kwargs)


def _torch_contrastive(x1, x2, target, margin=1.0, reduction="mean"):
    d = F.pairwise_distance(x1, x2)
    t = torch.as_tensor(target, dtype=x1.dtype)
    per_row = t * d ** 2 + (1 - t) * torch.clamp(margin - d, min=0) ** 2
    return {"mean": per_row.mean(), "sum": per_row.sum(), "none": per_row}[reduction]


def _signs(rng, n):
    return rng.choice([-1.0, 1.0], n)


PAIRS = [
    Pair("triplet_margin", 3,
         [{}, {"p": 1.0}, {"p": 3.0}, {"p": 0.7}, {"p": np.inf}, {"swap": True},
          {"swap": True, "p": 1.0, "margin": 0.3}, {"margin": 5.0, "eps": 1e-3}],
         lambda rng, n: None,
         lambda xs, t, o, r: F.triplet_margin_loss(*xs, reduction=r, **o)),
    Pair("contrastive", 2, [{}, {"margin": 3.0}, {"margin": 0.0}],
         lambda rng, n: rng.uniform(0, 1, n),
         lambda xs, t, o, r: _torch_contrastive(*xs, t, reduction=r, **o)),
    Pair("cosine_embedding", 2, [{}, {"margin": 0.2}, {"margin": -0.5}],
         _signs,
         lambda xs, t, o, r: F.cosine_embedding_loss(*xs, torch.as_tensor(t), reduction=r, **o)),
    Pair("margin_ranking", 2, [{}, {"margin": 0.5}, {"margin": -1.0}],
         _signs,
         lambda xs, t, o, r: F.margin_ranking_loss(*xs, torch.as_tensor(t), reduction=r, **o),
         rows=False),
]

CASES = [pytest.param(pair, option, id=f"{pair.name}-" + ("-".join(f"{k}={v}" for k, v in option.items()) or "default"))
         for pair in PAIRS for option in pair.options]
BY_NAME = {pair.name: pair for pair in PAIRS}


def assert_close(actual, expected, dtype, what="", rtol=None):
    if rtol is None:
        rtol = 2e-5 if np.dtype(dtype) == np.float32 else 1e-10
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.abs(expected[finite]).max())) if finite.any() else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 0.1 * scale,
                               equal_nan=True, err_msg=what)


def assert_grads_close(grads, expected, dtype, what="", rtol=None):
    assert isinstance(grads, tuple) and len(grads) == len(expected)
    for k, (g, e) in enumerate(zip(grads, expected)):
        assert_close(g, e, dtype, f"{what} grad[{k}]", rtol)


# ----------------------------------------------------------------------------- values

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pair, option", CASES)
def test_matches_reference(pair, option, dtype):
    rng = np.random.default_rng(1)
    inputs, target = pair.make(rng, dtype)
    for reduction in REDUCTIONS:
        loss, grads = pair.call(inputs, target, option, reduction=reduction)
        ref_loss, ref_grads = pair.call_reference(inputs, target, option, reduction=reduction)
        if reduction == "none":
            assert loss.dtype == inputs[0].dtype and loss.shape == inputs[0].shape[:1]
        else:
            assert type(loss) is float
        for g, x in zip(grads, inputs):
            assert g.dtype == x.dtype and g.shape == x.shape and g.flags.c_contiguous
        assert_close(loss, ref_loss, dtype, f"loss {reduction}")
        assert_grads_close(grads, ref_grads, dtype, reduction)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pair, option", CASES)
def test_matches_torch(pair, option, dtype):
    rng = np.random.default_rng(2)
    inputs, target = pair.make(rng, dtype)
    for reduction in REDUCTIONS:
        loss, grads = pair.call(inputs, target, option, reduction=reduction)
        tensors = [torch.tensor(x, requires_grad=True) for x in inputs]
        torch_loss = pair.torch_loss(tensors, target, option, reduction)
        torch_loss.sum().backward()
        rtol = 1e-4 if dtype == np.float32 else 1e-9   # torch's norms sum in float32
        assert_close(loss, torch_loss.detach().numpy(), dtype, f"loss {reduction}", rtol)
        assert_grads_close(grads, [t.grad.numpy() for t in tensors], dtype, reduction, rtol)


@pytest.mark.parametrize("pair, option", CASES)
def test_gradient_matches_finite_differences(pair, option):
    rng = np.random.default_rng(3)
    inputs, target = pair.make(rng, np.float64, n=4, d=3)
    for reduction in ("mean", "none"):
        _, grads = pair.call(inputs, target, option, reduction=reduction)
        for k in range(pair.n_inputs):
            def total(values):
                changed = list(inputs)
                changed[k] = values
                loss = pair.call(changed, target, option, reduction=reduction, compute_grad=False)
                return float(np.sum(loss.loss))

            h = 1e-6
            numeric = np.empty_like(inputs[k])
            for index in np.ndindex(inputs[k].shape):
                up, down = inputs[k].copy(), inputs[k].copy()
                up[index] += h
                down[index] -= h
                numeric[index] = (total(up) - total(down)) / (2 * h)
            np.testing.assert_allclose(grads[k], numeric, rtol=1e-5, atol=1e-7,
                                       err_msg=f"input {k}")


# ----------------------------------------------------------------------------- degenerate

@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, np.inf])
@pytest.mark.parametrize("dtype", DTYPES)
def test_triplet_zero_distances_and_ties_match_torch(p, swap, dtype):
    """a == p (distance eps), a == n, and d(a, n) == d(p, n) (a swap tie, half each)."""
    a = np.zeros((4, 3), dtype=dtype)
    a[1] = 1.0
    pos = a.copy()
    neg = np.ones((4, 3), dtype=dtype)
    neg[2] = a[2]
    loss, grads = fastloss.triplet_margin(a, pos, neg, p=p, swap=swap, margin=2.0,
                                          reduction="none")
    tensors = [torch.tensor(x, requires_grad=True) for x in (a, pos, neg)]
    torch_loss = F.triplet_margin_loss(*tensors, p=p, swap=swap, margin=2.0, reduction="none")
    torch_loss.sum().backward()
    assert_close(loss, torch_loss.detach().numpy(), dtype, rtol=1e-5)
    assert_grads_close(grads, [t.grad.numpy() for t in tensors], dtype, rtol=1e-5)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("dtype", DTYPES)
def test_contrastive_zero_distance_and_cosine_zero_rows_match_torch(dtype):
    x1 = np.zeros((3, 4), dtype=dtype)
    x2 = x1.copy()
    x2[2] = 1.0
    # contrastive: x1 - x2 = 0 exactly in rows 0, 1 (d = eps sqrt(D), not 0, as torch)
    t = np.array([1.0, 0.0, 0.5])
    loss, grads = fastloss.contrastive(x1, x2, t, reduction="none")
    tensors = [torch.tensor(x, requires_grad=True) for x in (x1, x2)]
    torch_loss = _torch_contrastive(*tensors, t, reduction="none")
    torch_loss.sum().backward()
    assert_close(loss, torch_loss.detach().numpy(), dtype, rtol=1e-5)
    assert_grads_close(grads, [t_.grad.numpy() for t_ in tensors], dtype, rtol=1e-5)
    # cosine embedding of all-zero rows: cosine 0 (torch's EPSILON), finite gradients
    y = np.array([1.0, -1.0, 1.0])
    loss, grads = fastloss.cosine_embedding(x1, x2, y, margin=-0.5, reduction="none")
    tensors = [torch.tensor(x, requires_grad=True) for x in (x1, x2)]
    torch_loss = F.cosine_embedding_loss(*tensors, torch.as_tensor(y), margin=-0.5,
                                         reduction="none")
    torch_loss.sum().backward()
    np.testing.assert_allclose(loss[:2], [1.0, 0.5])
    assert_close(loss, torch_loss.detach().numpy(), dtype, rtol=1e-5)
    assert_grads_close(grads, [t_.grad.numpy() for t_ in tensors], dtype, rtol=1e-5)
    assert all(np.isfinite(g).all() for g in grads)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_kinks_pass_the_gradient_as_torch_clamp_min():
    """Hinges exactly at 0 keep their gradient (torch's clamp_min backward: x >= 0)."""
    x1 = np.array([1.0, 2.0, 0.5])
    x2 = np.array([1.0, 1.0, 0.5])
    y = np.array([1.0, 1.0, -1.0])
    _, grads = fastloss.margin_ranking(x1, x2, y, reduction="sum")
    tensors = [torch.tensor(x, requires_grad=True) for x in (x1, x2)]
    F.margin_ranking_loss(*tensors, torch.as_tensor(y), reduction="sum").backward()
    np.testing.assert_array_equal(grads[0], tensors[0].grad.numpy())
    np.testing.assert_array_equal(grads[1], tensors[1].grad.numpy())
    # cosine embedding with y = -1 at cos == margin, and a target that is neither +1 nor -1
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[1.0, 0.0], [1.0, 2.0]])
    loss, grads = fastloss.cosine_embedding(a, b, np.array([-1.0, 0.0]), margin=1.0,
                                            reduction="none")
    tensors = [torch.tensor(x, requires_grad=True) for x in (a, b)]
    torch_loss = F.cosine_embedding_loss(*tensors, torch.tensor([-1.0, 0.0]), margin=1.0,
                                         reduction="none")
    torch_loss.sum().backward()
    np.testing.assert_allclose(loss, torch_loss.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(grads[0], tensors[0].grad.numpy(), atol=1e-7)
    assert loss[1] == 0.0 and not grads[0][1].any()


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_nan_and_inf_stay_in_their_row(pair, value):
    rng = np.random.default_rng(4)
    inputs, target = pair.make(rng, np.float64)
    inputs[0][3] = value
    loss, grads = pair.call(inputs, target, {}, reduction="none")
    clean = [np.delete(x, 3, axis=0) for x in inputs]
    clean_target = None if target is None else np.delete(target, 3)
    other_loss, other_grads = pair.call(clean, clean_target, {}, reduction="none")
    np.testing.assert_array_equal(np.delete(loss, 3), other_loss)
    for g, o in zip(grads, other_grads):
        np.testing.assert_array_equal(np.delete(g, 3, axis=0), o)
    ref_loss, _ = pair.call_reference(inputs, target, {}, reduction="none")
    assert_close(loss, ref_loss, np.float64)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_empty_batch(pair):
    rng = np.random.default_rng(5)
    inputs, target = pair.make(rng, np.float32, n=0)
    loss, grads = pair.call(inputs, target, {})
    assert np.isnan(loss) and all(g.shape == x.shape for g, x in zip(grads, inputs))
    assert pair.call(inputs, target, {}, reduction="sum").loss == 0.0


def test_targets_of_any_real_dtype_are_converted():
    rng = np.random.default_rng(6)
    x1, x2 = rng.standard_normal((2, 5, 3)).astype(np.float32)
    y = np.array([1, -1, 1, 1, -1], dtype=np.int8)
    expected = fastloss.cosine_embedding(x1, x2, y.astype(np.float32))
    assert fastloss.cosine_embedding(x1, x2, y).loss == expected.loss
    t = np.array([1, 0, 1, 0, 1], dtype=np.uint8)
    assert fastloss.contrastive(x1, x2, t).loss == fastloss.contrastive(x1, x2, t * 1.0).loss


def test_margin_ranking_takes_any_shape():
    rng = np.random.default_rng(7)
    x1, x2 = rng.standard_normal((2, 4, 3))
    y = np.sign(rng.standard_normal((4, 3)))
    loss, grads = fastloss.margin_ranking(x1, x2, y, reduction="none")
    assert loss.shape == (4, 3)
    ref_loss, ref_grads = reference.margin_ranking(x1, x2, y, reduction="none")
    np.testing.assert_array_equal(loss, ref_loss)
    assert_grads_close(grads, ref_grads, np.float64)


# ----------------------------------------------------------------------------- conventions

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_out_tuples_in_place_and_compute_grad_false(pair, dtype):
    rng = np.random.default_rng(8)
    inputs, target = pair.make(rng, dtype)
    expected_loss, expected = pair.call(inputs, target, {})
    k = pair.n_inputs
    outs = tuple(np.full_like(x, np.nan) for x in inputs)
    loss, grads = pair.call(inputs, target, {}, out=outs)
    assert loss == expected_loss and all(g is o for g, o in zip(grads, outs))
    for g, e in zip(grads, expected):
        np.testing.assert_array_equal(g, e)
    # None entries are allocated; the others are written
    partial = (None,) + outs[1:]
    loss, grads = pair.call(inputs, target, {}, out=list(partial))
    assert grads[0] is not None and grads[1] is outs[1]
    np.testing.assert_array_equal(grads[0], expected[0])
    # every gradient over its own input
    copies = [x.copy() for x in inputs]
    loss, grads = pair.call(copies, target, {}, out=tuple(copies))
    assert loss == expected_loss
    for g, c, e in zip(grads, copies, expected):
        assert g is c
        np.testing.assert_array_equal(c, e)
    for reduction in REDUCTIONS:
        full = pair.call(inputs, target, {}, reduction=reduction)
        loss_only = pair.call(inputs, target, {}, reduction=reduction, compute_grad=False)
        assert loss_only.grad is None
        np.testing.assert_array_equal(loss_only.loss, full.loss)
    assert len(expected) == k


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_non_contiguous_inputs(pair):
    rng = np.random.default_rng(9)
    inputs, target = pair.make(rng, np.float32)
    expected = pair.call(inputs, target, {}, reduction="none")
    views = [np.asfortranarray(x) if x.ndim == 2 else x[::-1].copy()[::-1] for x in inputs]
    views = [x[::-1].copy()[::-1] for x in views] if pair.rows else views
    assert not any(v.flags.c_contiguous for v in views if v.ndim == 2 and v.shape[1] > 1)
    loss, grads = pair.call(views, target, {}, reduction="none")
    np.testing.assert_array_equal(loss, expected.loss)
    for g, e in zip(grads, expected.grad):
        np.testing.assert_array_equal(g, e)


@pytest.fixture
def parallel_always():
    previous = _kernels._set_serial_threshold(0)
    yield
    _kernels._set_serial_threshold(previous)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pair, option", CASES)
def test_bitwise_identical_for_every_thread_count(pair, option, dtype, parallel_always):
    rng = np.random.default_rng(10)
    # several blocks: 16384 // 300 rows each; margin ranking 40000 elements
    inputs, target = pair.make(rng, dtype, n=400 if pair.rows else 40000, d=300)
    results = {n: pair.call(inputs, target, option, n_threads=n) for n in (1, 2, 3)}
    for n in (2, 3):
        assert results[n].loss == results[1].loss
        for g, e in zip(results[n].grad, results[1].grad):
            np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pair, option", CASES)
def test_every_simd_level_matches_reference(pair, option, dtype, simd_level):
    assert fastloss.simd_level() == simd_level
    rng = np.random.default_rng(11)
    inputs, target = pair.make(rng, dtype, n=7, d=37)   # vector bodies and remainders
    loss, grads = pair.call(inputs, target, option, reduction="none")
    ref_loss, ref_grads = pair.call_reference(inputs, target, option, reduction="none")
    assert_close(loss, ref_loss, dtype, f"loss at {simd_level}")
    assert_grads_close(grads, ref_grads, dtype, f"at {simd_level}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 15, 16, 17, 32, 128, 131])
@pytest.mark.parametrize("pair, option", [
    pytest.param(BY_NAME["triplet_margin"], {}, id="triplet"),
    pytest.param(BY_NAME["triplet_margin"], {"swap": True}, id="triplet-swap"),
    pytest.param(BY_NAME["contrastive"], {}, id="contrastive"),
])
def test_two_norm_lanes_at_every_row_width(pair, option, d, dtype):
    # the 2-norms are summed in 16 lanes with a remainder loop (fl_pairs.inc, pair_sq_norms2):
    # widths below, at and around multiples of the lane count, against the reference
    rng = np.random.default_rng(d)
    inputs, target = pair.make(rng, dtype, n=11, d=d)
    loss, grads = pair.call(inputs, target, option, reduction="none")
    ref_loss, ref_grads = pair.call_reference(inputs, target, option, reduction="none")
    assert_close(loss, ref_loss, dtype, f"loss d={d}")
    assert_grads_close(grads, ref_grads, dtype, f"d={d}")


# ----------------------------------------------------------------------------- errors

def _error_cases(pair, inputs, target):
    """(description, args, kwargs, expected error)."""
    k = pair.n_inputs
    x = inputs[0]
    cases = [
        ("int input", [x.astype(np.int32)] + inputs[1:], {}, TypeError),
        ("mixed dtypes", inputs[:-1] + [inputs[-1].astype(np.float32)], {}, TypeError),
        ("shape mismatch", inputs[:-1] + [inputs[-1][:-1]], {}, ValueError),
        ("reduction", inputs, {"reduction": "avg"}, ValueError),
        ("n_threads", inputs, {"n_threads": 0}, ValueError),
        ("out not a tuple", inputs, {"out": np.zeros_like(x)}, ValueError),
        ("out of the wrong length", inputs, {"out": (None,) * (k + 1)}, ValueError),
        ("out entry shape", inputs, {"out": (np.zeros(x.shape + (1,)),) + (None,) * (k - 1)},
         ValueError),
        ("out entry dtype", inputs, {"out": (np.zeros(x.shape, np.float32),) + (None,) * (k - 1)},
         ValueError),
        ("out entry is another input", inputs, {"out": "second input"}, ValueError),
        ("two out entries share memory", inputs, {"out": ("shared", "shared") + (None,) * (k - 2)},
         ValueError),
        ("out with compute_grad=False", inputs,
         {"out": (np.zeros_like(x),) + (None,) * (k - 1), "compute_grad": False}, ValueError),
        ("nan margin", inputs, {"margin": float("nan")}, ValueError),
    ]
    if pair.rows:
        cases.append(("1-D inputs", [v[:, 0].copy() for v in inputs], {}, ValueError))
    if target is not None:
        cases.append(("target shape", inputs, {"target": target[:-1]}, ValueError))
        cases.append(("out overlaps target", inputs, {"out": "target"}, ValueError))
    if pair.name == "triplet_margin":
        cases += [("p = 0", inputs, {"p": 0.0}, ValueError),
                  ("negative p", inputs, {"p": -1.0}, ValueError),
                  ("eps = 0", inputs, {"eps": 0.0}, ValueError),
                  ("swap not bool", inputs, {"swap": 1}, TypeError)]
    return cases


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_errors_raise_before_anything_is_written(pair):
    rng = np.random.default_rng(12)
    inputs, target = pair.make(rng, np.float64)
    for description, args, kwargs, error in _error_cases(pair, inputs, target):
        args = [a.copy() for a in args]
        kwargs = dict(kwargs)
        call_target = kwargs.pop("target", target)
        call_target = None if call_target is None else np.array(call_target, dtype=np.float64)
        if isinstance(kwargs.get("out"), str) and kwargs["out"] == "second input":
            kwargs["out"] = (args[1],) + (None,) * (pair.n_inputs - 1)
        elif isinstance(kwargs.get("out"), str):   # "target"
            kwargs["out"] = (call_target.reshape(-1, 1) if pair.rows else call_target,) + \
                (None,) * (pair.n_inputs - 1)
        elif isinstance(kwargs.get("out"), tuple) and any(isinstance(o, str) for o in kwargs["out"]):
            shared = np.zeros_like(args[0])   # "shared": one array for two entries
            kwargs["out"] = tuple(shared if isinstance(o, str) else o for o in kwargs["out"])
        buffers = [o for o in kwargs.get("out", ()) or () if isinstance(o, np.ndarray)] \
            if isinstance(kwargs.get("out"), tuple) else []
        before = [a.copy() for a in args] + [b.copy() for b in buffers]
        with pytest.raises(error):
            pair.call(args, call_target, kwargs)
        for a, b in zip(args + buffers, before):
            np.testing.assert_array_equal(a, b, err_msg=f"{description}: an array changed")


def test_out_errors_name_the_entry():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"out\[1\] \(the gradient of positive\)"):
        fastloss.triplet_margin(x, x.copy(), x.copy(), out=(None, np.zeros((3, 3)), None))
    with pytest.raises(ValueError, match="tuple of 2 entries"):
        fastloss.contrastive(x, x.copy(), np.ones(3), out=np.zeros((3, 2)))
