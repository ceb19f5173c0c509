"""softmax_cross_entropy beyond the shared tests: its own edge cases and argument rules."""

import numpy as np
import pytest

import fastloss
from fastloss import reference

from cases import torch

if torch is not None:
    import torch.nn.functional as F

DTYPES = [np.float32, np.float64]


def torch_reference(x, target, **kwargs):
    """float64 PyTorch loss and gradient for the given inputs."""
    xt = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    t = torch.as_tensor(target)
    t = t.double() if t.is_floating_point() else t
    if kwargs.get("weight") is not None:
        kwargs["weight"] = torch.as_tensor(kwargs["weight"], dtype=torch.float64)
    loss = F.cross_entropy(xt, t, **kwargs)
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_targets_ignored(dtype):
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(dtype)
    y = np.full(6, -100)
    loss, grad = fastloss.softmax_cross_entropy(x, y)
    assert np.isnan(loss)
    np.testing.assert_array_equal(grad, np.zeros_like(x))
    assert fastloss.softmax_cross_entropy(x, y, reduction="sum").loss == 0.0
    np.testing.assert_array_equal(fastloss.softmax_cross_entropy(x, y, reduction="none").loss,
                                  np.zeros(6, dtype))


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_class_weights_summing_to_zero_give_nan_mean_as_torch():
    x = np.random.default_rng(1).standard_normal((3, 2))
    y = np.array([0, 0, 0])
    weight = np.array([0.0, 1.0])
    loss, grad = fastloss.softmax_cross_entropy(x, y, weight=weight)
    torch_loss, torch_grad = torch_reference(x, y, weight=weight)
    assert np.isnan(loss) and np.isnan(torch_loss)
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(torch_grad))


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_class(dtype):
    x = np.random.default_rng(2).standard_normal((5, 1)).astype(dtype)
    loss, grad = fastloss.softmax_cross_entropy(x, np.zeros(5, dtype=np.int64), reduction="none")
    np.testing.assert_array_equal(loss, np.zeros(5, dtype))
    np.testing.assert_array_equal(grad, np.zeros_like(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fifty_thousand_classes(dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 50000)) * 4).astype(dtype)
    y = np.array([0, 49999, 12345])
    for kwargs in ({}, {"label_smoothing": 0.1}):
        loss, grad = fastloss.softmax_cross_entropy(x, y, reduction="none", **kwargs)
        ref_loss, ref_grad = reference.softmax_cross_entropy(x.astype(np.float64), y,
                                                             reduction="none", **kwargs)
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
        np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=rtol * 1e-4)


@pytest.mark.parametrize("offset", [1e4, -1e4, 1e30, -1e30])
@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits_keep_the_precision_of_their_differences(dtype, offset):
    """API.md: accuracy is judged relative to the differences between logits. The float64
    reference on the very same (rounded) values is the truth."""
    rng = np.random.default_rng(4)
    noise = rng.standard_normal((64, 10)) * 2
    x = (offset + noise).astype(dtype) if abs(offset) < 1e20 else (offset * (1 + noise * 1e-6)).astype(dtype)
    y = rng.integers(0, 10, 64)
    for kwargs in ({}, {"label_smoothing": 0.3}):
        loss, grad = fastloss.softmax_cross_entropy(x, y, reduction="none", **kwargs)
        ref_loss, ref_grad = reference.softmax_cross_entropy(x.astype(np.float64), y,
                                                             reduction="none", **kwargs)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        rtol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=rtol)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("dtype", DTYPES)
def test_mixed_extreme_logits_as_torch(dtype):
    x = np.array([[1e30, -1e30, 0.0], [-1e30, -1e30, -1e30 * 0.5], [3.0, -np.inf, 1.0]],
                 dtype=dtype)
    y = np.array([1, 0, 2])
    loss, grad = fastloss.softmax_cross_entropy(x, y, reduction="none")
    torch_loss, torch_grad = torch_reference(x.astype(np.float64), y, reduction="none")
    np.testing.assert_allclose(loss, torch_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, torch_grad, rtol=1e-6, atol=1e-30)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_option_interplay_as_torch(label_smoothing, weighted, reduction):
    """weight x ignore_index x label_smoothing x reduction, float64, against F.cross_entropy."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 6)) * 2
    y = rng.integers(0, 6, 40)
    y[::4] = 3
    weight = rng.uniform(0.1, 3.0, 6) if weighted else None
    for ignore_index in (-100, 3):
        kwargs = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                      reduction=reduction)
        loss, grad = fastloss.softmax_cross_entropy(x, y, **kwargs)
        torch_loss, torch_grad = torch_reference(x, y, **kwargs)
        np.testing.assert_allclose(loss, torch_loss, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grad, torch_grad, rtol=1e-12, atol=1e-14)


def test_target_kind_rules():
    x = np.zeros((4, 3))
    with pytest.raises(TypeError, match="target"):
        fastloss.softmax_cross_entropy(x, np.zeros(4))               # 1-D float: not indices
    with pytest.raises(TypeError, match="target"):
        fastloss.softmax_cross_entropy(x, np.zeros((4, 3), np.int64))  # 2-D int: not probs
    with pytest.raises(ValueError, match="ignore_index"):
        fastloss.softmax_cross_entropy(x, np.full((4, 3), 1 / 3), ignore_index=0)
    with pytest.raises(ValueError, match="target"):
        fastloss.softmax_cross_entropy(x, np.zeros((4, 3, 1)))


def test_class_index_out_of_range_names_index_and_position():
    x = np.zeros((5, 3), dtype=np.float32)
    before = x.copy()
    out = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match=r"class index 3 at position 2"):
        fastloss.softmax_cross_entropy(x, np.array([0, 1, 3, 5, 2]), out=out)
    with pytest.raises(ValueError, match=r"class index -1 at position 0"):
        fastloss.softmax_cross_entropy(x, np.array([-1, 0, 0, 0, 0]))
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(out, np.full_like(x, 7.0))


@pytest.mark.parametrize("int_dtype", [np.int8, np.int16, np.int32, np.int64,
                                       np.uint8, np.uint16, np.uint32, np.uint64])
def test_every_integer_target_dtype(int_dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((9, 5))
    y = rng.integers(0, 5, 9)
    expected = fastloss.softmax_cross_entropy(x, y)
    got = fastloss.softmax_cross_entropy(x, y.astype(int_dtype))
    assert got.loss == expected.loss
    np.testing.assert_array_equal(got.grad, expected.grad)


def test_float_targets_of_another_dtype_are_converted():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 5)).astype(np.float32)
    t = rng.dirichlet(np.ones(5), 9)
    loss64, grad64 = fastloss.softmax_cross_entropy(x, t)            # float64 target
    loss32, grad32 = fastloss.softmax_cross_entropy(x, t.astype(np.float32))
    assert loss64 == loss32 and grad64.dtype == np.float32
    np.testing.assert_array_equal(grad64, grad32)


def test_returns_named_tuple():
    result = fastloss.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]))
    assert isinstance(result, fastloss.LossResult)
    assert result.loss == pytest.approx(np.log(3))
    assert result.grad is result[1]


@pytest.mark.parametrize("n_classes", [1, 2, 15, 16, 17, 31, 39, 40, 41, 47, 48, 63, 64, 65, 100,
                                       127, 256, 257, 1000])
@pytest.mark.parametrize("dtype", DTYPES)
def test_class_counts_around_vector_widths_and_layouts(n_classes, dtype):
    """The kernel switches layout by C (class indices without smoothing: across-rows loops
    below 48 classes, row loops up to 256, the row layout above; otherwise the chunk layout
    up to 40) and handles partial vectors specially: check both sides of every boundary, for
    every option kind, against the reference."""
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((67, n_classes)) * 3).astype(dtype)
    y = rng.integers(0, n_classes, 67)
    y[::5] = -100
    t = rng.dirichlet(np.ones(n_classes), 67)
    for target, kwargs in ((y, {}), (y, {"weight": rng.random(n_classes)}),
                           (y, {"label_smoothing": 0.2, "weight": rng.random(n_classes)}),
                           (t, {}), (t, {"label_smoothing": 0.1})):
        loss, grad = fastloss.softmax_cross_entropy(x, target, reduction="none", **kwargs)
        ref_loss, ref_grad = reference.softmax_cross_entropy(x.astype(np.float64), target,
                                                             reduction="none", **kwargs)
        rtol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("n_classes", [10, 100, 1000])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_whatever_the_array_address(n_classes, dtype):
    """Determinism must not depend on where the arrays lie in memory (alignment)."""
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((300, n_classes)) * 3).astype(dtype)
    y = rng.integers(0, n_classes, 300)
    expected = fastloss.softmax_cross_entropy(x, y, reduction="none", label_smoothing=0.1)
    expected_mean = fastloss.softmax_cross_entropy(x, y, label_smoothing=0.1).loss
    itemsize = np.dtype(dtype).itemsize
    for shift in range(1, 64 // itemsize):
        buffer = np.empty(x.size + shift, dtype=dtype)
        moved = buffer[shift:].reshape(x.shape)
        moved[...] = x
        loss, grad = fastloss.softmax_cross_entropy(moved, y, reduction="none", label_smoothing=0.1)
        np.testing.assert_array_equal(loss, expected.loss)
        np.testing.assert_array_equal(grad, expected.grad)
        assert fastloss.softmax_cross_entropy(moved, y, label_smoothing=0.1).loss == expected_mean


def test_in_place_on_a_read_only_array_is_refused():
    x = np.zeros((3, 4))
    x.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        fastloss.softmax_cross_entropy(x, np.array([0, 1, 2]), out=x)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_path_and_validated_path_agree(reduction, dtype):
    """Plain calls take a C-level fast path (fastloss/_kernels.pyx); an equivalent call that
    it does not recognise (an int32 target, a NumPy scalar for label_smoothing) takes the
    validated path. Both give the same bits and the same types."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((50, 7)).astype(dtype)
    y = rng.integers(0, 7, 50)
    fast = fastloss.softmax_cross_entropy(x, y, reduction=reduction, label_smoothing=0.1)
    validated = fastloss.softmax_cross_entropy(x, y.astype(np.int32), reduction=reduction,
                                               label_smoothing=np.float64(0.1))
    np.testing.assert_array_equal(np.asarray(fast.loss), np.asarray(validated.loss))
    np.testing.assert_array_equal(fast.grad, validated.grad)
    assert type(fast) is type(validated) is fastloss.LossResult
    assert type(fast.loss) is type(validated.loss)
