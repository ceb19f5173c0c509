"""Every row of API.md's Errors table, for every loss of the registry (reliability_cases.py).

Each bad call must raise the contract's exception type (TypeError or ValueError, never
OverflowError, a segfault or a silently wrong answer) before any kernel runs, with a message
that names the argument, and leave every input and `out` bitwise as they were. Beyond the
table: object/complex/float16/bool arrays, lists and scalars, a 3-D input where 2-D is
required, `out` aliasing a target, a read-only `out`, class indices of every integer dtype
(uint64 above 2**63, negative values other than ignore_index), big-endian arrays.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import reliability_cases as rc

CASES = rc.case_params()
CLASS_CASES = [p for p in CASES if p.values[0].class_index]
# the class-index losses with an ignore_index (multi_margin has none)
IGNORE_CASES = [p for p in CLASS_CASES if "ignore_index" in p.values[0].options]
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def valid_call(case, dtype=np.float64, seed=0):
    args, kwargs = case.valid_call(np.random.default_rng(seed), dtype)
    return list(args), dict(kwargs)


def watched_arrays(args, kwargs):
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    arrays += [v for v in kwargs.values() if isinstance(v, np.ndarray)]
    return arrays


def expect_error(case, error, words, args, kwargs):
    """The call raises exactly `error` whose message contains every word of `words`; every
    array argument (out too) is bitwise unchanged; fastloss.reference agrees."""
    arrays = watched_arrays(args, kwargs)
    saved = [(a, a.tobytes(), a.flags.writeable) for a in arrays]
    with pytest.raises(Exception) as info:
        case.function()(*args, **kwargs)
    assert type(info.value) is error, f"expected {error.__name__}, got {info.value!r}"
    message = str(info.value)
    for word in words:
        assert str(word) in message, f"{word!r} is not named in the message {message!r}"
    for array, data, writeable in saved:
        assert array.tobytes() == data, "an argument was modified by a call that raised"
        assert array.flags.writeable == writeable
    with pytest.raises(error):
        case.reference()(*args, **kwargs)
    return message


# ------------------------------------------------------------------ the differentiated input

BAD_INPUT_DTYPES = [np.int8, np.int32, np.int64, np.uint8, np.uint64, np.float16, np.longdouble,
                    np.complex64, np.complex128, np.bool_, object]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bad_dtype", BAD_INPUT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_input_dtype_not_float32_or_float64(case, bad_dtype):
    args, kwargs = valid_call(case)
    args[0] = args[0].astype(bad_dtype)
    message = expect_error(case, TypeError, [case.input_name, "float32", "float64"], args, kwargs)
    assert np.dtype(bad_dtype).name in message or str(np.dtype(bad_dtype)) in message


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bad", ["list", "nested list", "float", "int", "None", "str", "0-d int"])
def test_input_not_an_array(case, bad):
    args, kwargs = valid_call(case)
    args[0] = {"list": args[0].ravel().tolist(), "nested list": args[0].tolist(), "float": 1.5,
               "int": 3, "None": None, "str": "logits", "0-d int": np.array(3)}[bad]
    expect_error(case, TypeError, [case.input_name], args, kwargs)


@pytest.mark.parametrize("case", CASES)
def test_big_endian_input_is_refused_or_read_correctly(case):
    """'>f8' is float64 in another byte order: an error naming the dtype, or the right
    answer, never the bytes read as if they were native."""
    args, kwargs = valid_call(case)
    expected = case.function()(*args, **kwargs)
    swapped = args[0].astype(args[0].dtype.newbyteorder(">"))
    try:
        got = case.function()(swapped, *args[1:], **kwargs)
    except TypeError as error:
        assert case.input_name in str(error)
        return
    assert got.loss == expected.loss
    np.testing.assert_array_equal(got.grad, expected.grad)


@pytest.mark.parametrize("case", CLASS_CASES)
@pytest.mark.parametrize("shape", [(2, 6, 5), (30,), (), (6, 5, 1)], ids=str)
def test_class_input_not_2d(case, shape):
    args, kwargs = valid_call(case)
    args[0] = np.zeros(shape)
    if len(shape) >= 3 and case.name in ("softmax_cross_entropy", "softmax_focal"):
        # K-dim logits (issue 13) are valid input of the softmax losses: the (N,) target of
        # the valid call no longer matches their sample shape (N, d1, ..., dK)
        expect_error(case, ValueError, ["target", "shape"], args, kwargs)
        return
    expect_error(case, ValueError, [case.input_name, "2-D"], args, kwargs)


@pytest.mark.parametrize("case", CLASS_CASES)
@pytest.mark.parametrize("n_samples", [0, 6])
def test_class_input_without_classes(case, n_samples):
    args, kwargs = valid_call(case)
    args[0] = np.zeros((n_samples, 0))
    args[1] = args[1][:n_samples]
    expect_error(case, ValueError, [case.input_name], args, kwargs)


# ------------------------------------------------------------------ targets

@pytest.mark.parametrize("case", CLASS_CASES)
@pytest.mark.parametrize("bad_dtype", [np.float32, np.float64, np.float16, np.bool_,
                                       np.complex128, object, "U3"], ids=str)
def test_class_index_target_not_integer(case, bad_dtype):
    args, kwargs = valid_call(case)
    args[1] = args[1].astype(bad_dtype)
    expect_error(case, TypeError, ["target"], args, kwargs)


@pytest.mark.parametrize("case", CLASS_CASES)
@pytest.mark.parametrize("shape", [(7,), (5,), (0,), (), (6, 1, 1)], ids=str)
def test_class_index_target_shape(case, shape):
    args, kwargs = valid_call(case)
    args[1] = np.zeros(shape, dtype=np.int64)
    expect_error(case, ValueError, ["target"], args, kwargs)


@pytest.mark.parametrize("case", CLASS_CASES)
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32, np.uint8], ids=str)
def test_class_index_column_says_to_ravel(case, index_dtype):
    """An (N, 1) integer target (y[:, None]) is a ValueError that says to pass target.ravel()."""
    args, kwargs = valid_call(case)
    n_samples = args[0].shape[0]
    args[1] = np.asarray(args[1]).astype(index_dtype).reshape(n_samples, 1)
    message = expect_error(case, ValueError, ["target", "target.ravel()"], args, kwargs)
    assert str((n_samples, 1)) in message


@pytest.mark.parametrize("case", CLASS_CASES)
def test_integer_target_of_the_logits_shape_stays_a_type_error(case):
    """(N, C) integers are not class indices: a probability target must be floating (the
    softmax CE) or the shape is wrong (softmax focal); the (N, 1) hint does not apply."""
    args, kwargs = valid_call(case)
    args[1] = np.ones(args[0].shape, dtype=np.int64)
    error = TypeError if case.name == "softmax_cross_entropy" else ValueError
    message = expect_error(case, error, ["target"], args, kwargs)
    assert "ravel" not in message


FLOAT_TARGET_CASES = [p for p in CASES if not p.values[0].class_index
                      or p.values[0].name == "softmax_cross_entropy"]


@pytest.mark.parametrize("case", FLOAT_TARGET_CASES)
@pytest.mark.parametrize("change", ["transposed", "extra axis", "fewer", "scalar"])
def test_float_target_shape(case, change):
    """Element-wise targets, and softmax_cross_entropy's probability targets: same shape as
    the input."""
    args, kwargs = valid_call(case)
    if case.class_index:  # probabilities
        args[1] = np.full(args[0].shape, 0.2)
    target = args[1]
    args[1] = {"transposed": target.T, "extra axis": target[..., None],
               "fewer": target[:-1], "scalar": np.array(0.5)}[change]
    expect_error(case, ValueError, ["target"], args, kwargs)


@pytest.mark.parametrize("case", [p for p in CASES if not p.values[0].class_index])
@pytest.mark.parametrize("bad_dtype", [np.complex128, object, "U3"], ids=str)
def test_float_target_not_real(case, bad_dtype):
    args, kwargs = valid_call(case)
    args[1] = args[1].astype(bad_dtype)
    expect_error(case, TypeError, ["target"], args, kwargs)


def test_probability_target_with_ignore_index():
    case = rc.CASES_BY_NAME["softmax_cross_entropy"]
    if not case.available:
        pytest.skip("softmax_cross_entropy is missing")
    x = np.zeros((3, 4))
    expect_error(case, ValueError, ["ignore_index"], [x, np.full((3, 4), 0.25)],
                 {"ignore_index": 1})


# ------------------------------------------------------------------ class indices

def _fits(dtype, value):
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


BAD_INDEX_VALUES = [5, 6, 127, 255, -1, -2, -99, -101, -128, 2**31, 2**63 - 1, -2**63,
                    2**63, 2**63 + 5, 2**64 - 1]


@pytest.mark.parametrize("case", CLASS_CASES)
@pytest.mark.parametrize("dtype, bad", [
    pytest.param(dtype, bad, id=f"{np.dtype(dtype).name}-{bad}")
    for dtype in rc.INTEGER_DTYPES for bad in BAD_INDEX_VALUES if _fits(dtype, bad)])
def test_class_index_out_of_range(case, dtype, bad):
    """Every value outside [0, C) that is not ignore_index, in every integer dtype that can
    hold it: ValueError naming the target, the first bad index and its position."""
    args, kwargs = valid_call(case)  # C = 5, N = 6
    labels = args[1].astype(dtype)
    labels[3] = bad
    labels[5] = 5 if bad != 5 else 6  # a second bad index: the message names the first
    args[1] = labels
    message = expect_error(case, ValueError, ["target", str(bad), "position 3"], args, kwargs)
    assert "position 5" not in message


@pytest.mark.parametrize("case", CLASS_CASES)
@pytest.mark.parametrize("dtype", rc.INTEGER_DTYPES + (">i4", ">u8", np.intc, np.longlong),
                         ids=lambda d: np.dtype(d).str)
def test_class_indices_of_every_integer_dtype(case, dtype):
    """The same labels in any integer dtype, byte order or layout, or as a list, give bitwise
    the result of int64 labels."""
    args, kwargs = valid_call(case)
    expected = case.function()(*args, **kwargs)
    for labels in (args[1].astype(dtype), np.repeat(args[1], 2).astype(dtype)[::2],
                   args[1][::-1].astype(dtype)[::-1], args[1].tolist()):
        got = case.function()(args[0], labels, **kwargs)
        assert got.loss == expected.loss
        assert got.grad.tobytes() == expected.grad.tobytes()


@pytest.mark.parametrize("case", IGNORE_CASES)
@pytest.mark.parametrize("dtype, ignore_index", [(np.int8, -100), (np.int8, -1), (np.int16, -100),
                                                 (np.uint8, 255), (np.uint16, 7),
                                                 (np.int64, -(2**63)), (np.int64, 2**63 - 1),
                                                 (np.uint64, 2**63 - 1)])
def test_ignore_index_in_every_integer_dtype(case, dtype, ignore_index):
    args, kwargs = valid_call(case)
    labels = args[1].astype(np.int64)
    expected = case.function()(args[0], np.where(np.arange(6) % 2 == 0, labels, -100), **kwargs)
    marked = np.where(np.arange(6) % 2 == 0, labels, ignore_index).astype(dtype)
    got = case.function()(args[0], marked, **kwargs, ignore_index=ignore_index)
    assert got.loss == expected.loss
    assert got.grad.tobytes() == expected.grad.tobytes()
    assert np.all(got.grad[1::2] == 0)


@pytest.mark.parametrize("case", IGNORE_CASES)
@pytest.mark.parametrize("negative", [-1, -2, -99, -101, -(2**63)])
def test_negative_index_other_than_ignore_index(case, negative):
    args, kwargs = valid_call(case)
    args[1][2] = negative
    expect_error(case, ValueError, ["target", str(negative), "position 2"], args, kwargs)
    # and the same value is accepted once it is the ignore_index
    result = case.function()(*args, **kwargs, ignore_index=negative)
    assert np.all(result.grad[2] == 0)


@pytest.mark.parametrize("case", CLASS_CASES)
def test_uint64_index_above_2_63(case):
    """uint64 values that do not fit in int64 (which the kernels use) are not wrapped to
    negative numbers: ValueError naming the value as given and its position."""
    args, kwargs = valid_call(case)
    labels = args[1].astype(np.uint64)
    labels[4] = 2**63 + 3
    args[1] = labels
    expect_error(case, ValueError, ["target", str(2**63 + 3), "position 4"], args, kwargs)
    labels[4] = 2**64 - 1
    expect_error(case, ValueError, ["target", str(2**64 - 1), "position 4"], args, kwargs)


@pytest.mark.parametrize("case", IGNORE_CASES)
@pytest.mark.parametrize("ignore_index", [2**63, 2**64 - 1, -(2**63) - 1, 10**30])
def test_ignore_index_beyond_int64(case, ignore_index):
    """An int that no class index can equal: the call works (nothing is ignored) or raises
    ValueError naming ignore_index; never OverflowError."""
    args, kwargs = valid_call(case)
    expected = case.function()(*args, **kwargs)
    try:
        got = case.function()(*args, **kwargs, ignore_index=ignore_index)
    except ValueError as error:
        assert "ignore_index" in str(error)
        return
    assert got.loss == expected.loss


@pytest.mark.parametrize("case", IGNORE_CASES)
@pytest.mark.parametrize("bad", [1.0, None, "x", True, np.float64(2.0)], ids=repr)
def test_ignore_index_not_an_int(case, bad):
    args, kwargs = valid_call(case)
    expect_error(case, TypeError, ["ignore_index"], args, dict(kwargs, ignore_index=bad))


# ------------------------------------------------------------------ options

@pytest.mark.parametrize("case", CASES)
def test_bad_option_values(case):
    """The loss's own rows of the table (unknown reduction, n_threads < 1, delta/beta <= 0,
    gamma < 0, label_smoothing outside [0, 1], weights of the wrong length) from the registry."""
    args, kwargs = valid_call(case)
    bad_options = case.bad_options(args, kwargs)
    assert bad_options
    for update, error, word in bad_options:
        message = expect_error(case, error, [word], args, dict(kwargs, **update))
        value = next(iter(update.values()))
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            assert repr(value) in message or str(value) in message, message


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bad", [1.5, "2", True, [2]], ids=repr)
def test_n_threads_not_an_int(case, bad):
    args, kwargs = valid_call(case)
    expect_error(case, TypeError, ["n_threads"], args, dict(kwargs, n_threads=bad))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("n_threads", [2**31 - 1, 2**31, 2**40, 2**63, 10**30])
def test_n_threads_huge(case, n_threads):
    """More threads than anyone has: run on the threads there are, or ValueError naming
    n_threads; never OverflowError."""
    args, kwargs = valid_call(case)
    expected = case.function()(*args, **kwargs)
    try:
        got = case.function()(*args, **kwargs, n_threads=n_threads)
    except ValueError as error:
        assert "n_threads" in str(error)
        return
    assert got.loss == expected.loss
    assert got.grad.tobytes() == expected.grad.tobytes()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bad", [0, 1, None, "yes", np.array([True])], ids=repr)
def test_compute_grad_not_a_bool(case, bad):
    args, kwargs = valid_call(case)
    expect_error(case, TypeError, ["compute_grad"], args, dict(kwargs, compute_grad=bad))


@pytest.mark.parametrize("case", CASES)
def test_option_of_the_wrong_type(case):
    args, kwargs = valid_call(case)
    real_options = [name for name in ("label_smoothing", "delta", "beta", "gamma")
                    if name in case.options]
    for name in real_options:
        for bad in ("0.5", None, [0.5], 1j):
            expect_error(case, TypeError, [name], args, dict(kwargs, **{name: bad}))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bad_dtype", [np.complex128, object, np.bool_, "U3"], ids=str)
def test_weights_not_real(case, bad_dtype):
    args, kwargs = valid_call(case)
    for name in ("weight", "pos_weight", "alpha"):
        if name not in case.options:
            continue
        length = args[0].shape[-1]
        expect_error(case, TypeError, [name], args,
                     dict(kwargs, **{name: np.ones(length).astype(bad_dtype)}))


# ------------------------------------------------------------------ out

def _out_cases(case, dtype):
    """(description, args, kwargs with out) for every bad `out`."""
    args, kwargs = valid_call(case, dtype)
    x = args[0]
    other = np.float64 if dtype == np.float32 else np.float32
    shape = x.shape
    flat = int(np.prod(shape))
    cases = [
        ("wrong shape: transposed", np.zeros(shape[::-1], dtype)),
        ("wrong shape: extra axis", np.zeros(shape + (1,), dtype)),
        ("wrong shape: flat", np.zeros(flat, dtype)),
        ("wrong shape: one row short", np.zeros((shape[0] - 1,) + shape[1:], dtype)),
        ("wrong dtype: other float", np.zeros(shape, other)),
        ("wrong dtype: float16", np.zeros(shape, np.float16)),
        ("wrong dtype: int", np.zeros(shape, np.int64)),
        ("not C-contiguous: Fortran", np.asfortranarray(np.zeros(shape, dtype))),
        ("not C-contiguous: sliced", np.zeros(shape[:-1] + (2 * shape[-1],), dtype)[..., ::2]),
        ("not C-contiguous: reversed", np.zeros(shape, dtype)[::-1]),
    ]
    read_only = np.zeros(shape, dtype)
    read_only.flags.writeable = False
    cases.append(("read-only", read_only))
    cases.append(("read-only broadcast", np.broadcast_to(np.zeros(shape[-1], dtype), shape)))
    buffer = np.zeros(flat + shape[-1], dtype)  # overlapping the input, not being it
    overlapping_input = buffer[shape[-1]:].reshape(shape)
    shifted = [buffer[:flat].reshape(shape)] + args[1:]
    shifted[0][...] = x
    result = [(name, list(args), dict(kwargs, out=out)) for name, out in cases]
    result.append(("overlapping the input", shifted, dict(kwargs, out=overlapping_input)))
    # aliasing a target: the float target itself, or an integer target viewing out's memory
    if case.class_index:
        out = np.zeros(shape, dtype)
        int_view = out.reshape(-1).view(np.int64 if dtype == np.float64 else np.int32)
        result.append(("sharing memory with the class indices", [x, int_view[:shape[0]]],
                       dict(kwargs, out=out)))
        if case.name == "softmax_cross_entropy":
            probabilities = np.full(shape, 1.0 / shape[1], dtype)
            result.append(("being the probability target", [x, probabilities],
                           dict(kwargs, out=probabilities)))
    else:
        target = args[1].astype(dtype)
        result.append(("being the target", [x, target], dict(kwargs, out=target)))
        result.append(("a view of the target", [x, target], dict(kwargs, out=target[...])))
    for name in ("weight", "alpha"):
        # array-valued options only: sigmoid_focal's alpha is a scalar
        if name in case.options and not (name == "alpha" and case.name == "sigmoid_focal"):
            out = np.ones(shape, dtype)
            result.append((f"sharing memory with {name}", list(args),
                           dict(kwargs, out=out, **{name: out[0]})))
    return result


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bad_out(case, dtype):
    for description, args, kwargs in _out_cases(case, dtype):
        try:
            expect_error(case, ValueError, ["out"], args, kwargs)
        except AssertionError as failure:
            raise AssertionError(f"out {description}: {failure}") from None


@pytest.mark.parametrize("case", CASES)
def test_out_not_an_array(case):
    args, kwargs = valid_call(case)
    for bad in (args[0].tolist(), 0.0, "grad"):
        with pytest.raises((TypeError, ValueError), match="out"):
            case.function()(*args, **kwargs, out=bad)


@pytest.mark.parametrize("case", CASES)
def test_out_with_compute_grad_false(case):
    args, kwargs = valid_call(case)
    out = np.zeros_like(args[0])
    expect_error(case, ValueError, ["out", "compute_grad"], args,
                 dict(kwargs, out=out, compute_grad=False))
    expect_error(case, ValueError, ["out", "compute_grad"], args,
                 dict(kwargs, out=args[0], compute_grad=False))


@pytest.mark.parametrize("case", CASES)
def test_out_in_place_needs_a_contiguous_writeable_input(case):
    args, kwargs = valid_call(case)
    fortran = np.asfortranarray(args[0])
    expect_error(case, ValueError, ["out"], [fortran] + args[1:], dict(kwargs, out=fortran))
    read_only = args[0].copy()
    read_only.flags.writeable = False
    expect_error(case, ValueError, ["out"], [read_only] + args[1:], dict(kwargs, out=read_only))


@pytest.mark.parametrize("case", CASES)
def test_a_good_out_and_in_place_still_work(case):
    """The errors above are not raised for what the contract allows."""
    args, kwargs = valid_call(case)
    expected = case.function()(*args, **kwargs)
    out = np.full_like(args[0], np.nan)
    assert case.function()(*args, **kwargs, out=out).grad is out
    np.testing.assert_array_equal(out, expected.grad)
    x = args[0].copy()
    assert case.function()(x, *args[1:], **kwargs, out=x).grad is x
    np.testing.assert_array_equal(x, expected.grad)
    assert math.isfinite(expected.loss)
