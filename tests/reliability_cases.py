"""The registry of loss functions that the reliability tests run over.

One ``LossCase`` per loss function of API.md says everything the generic tests need to know
about that loss:

- its name and the names of its positional arguments;
- how to draw its inputs with hypothesis (``draw_inputs``): shapes with 0- and 1-sized axes,
  values from the whole float range, its own options (class weights, label smoothing, ...),
  now and then an invalid value that the contract says must raise;
- which arguments are converted to the input's dtype (``converted``), so that the tests can
  evaluate ``fastloss.reference`` on exactly the values the kernel sees, widened to float64;
- how far a correct result may be from the exact one (``tolerance``), and what "mean" divides
  by (``denominator``);
- a small valid call and its argument errors, for tests/test_errors.py.

Adding a loss is adding one entry to ``CASES``. Entries for losses that fastloss does not have
yet are enrolled automatically once ``hasattr(fastloss, name)``; tests/test_properties.py
fails if fastloss exports a loss that has no entry here, or that fastloss.reference lacks.

Tolerances follow API.md: float accuracy is judged relative to the differences between
logits (the "spread" of a row) and to the size of the loss's coefficients, never relative
to a rounded log-sum-exp. ``K_ULPS`` is the number of roundings allowed; it bounds the kernel's
error against the exact value (the reference evaluated in float64 on the same inputs), and
the tests also accept the float32 reference's own value where float32 overflow makes the two
differ (logits 3e38 apart: their difference overflows in float32, as in PyTorch).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastloss
import fastloss.reference

FLOAT_DTYPES = (np.float32, np.float64)
INTEGER_DTYPES = (np.int8, np.int16, np.int32, np.int64,
                  np.uint8, np.uint16, np.uint32, np.uint64)
K_ULPS = 16.0

# The loss functions API.md defines (fastloss may not have all of them yet).
API_LOSSES = ("softmax_cross_entropy", "binary_cross_entropy_with_logits", "huber",
              "smooth_l1", "sigmoid_focal", "softmax_focal", "mse", "mae", "pinball",
              "log_cosh", "poisson_nll", "tweedie", "hinge", "squared_hinge", "soft_margin",
              "binary_cross_entropy", "kl_div",
              "multi_margin", "kl_divergence_with_logits")   # issue 13
# the losses of the loss table added with it (fastloss/_table.py): their entries are made
# from the table's rows (_table_cases below)
TABLE_LOSSES = ("mse", "mae", "pinball", "log_cosh", "poisson_nll", "tweedie", "hinge",
                "squared_hinge", "soft_margin", "binary_cross_entropy", "kl_div")
# Losses the generic property tests do not take (a gradient that is a tuple, several
# differentiated inputs; "none" per (sample, class) rather than per sample): where each is
# tested instead, against its reference, PyTorch/MONAI, finite differences and the calling
# conventions.
TESTED_ELSEWHERE = {
    "gaussian_kl": "tests/test_table.py",
    "dice": "tests/test_overlap.py", "jaccard": "tests/test_overlap.py",
    "tversky": "tests/test_overlap.py",
    "triplet_margin": "tests/test_pairs.py", "contrastive": "tests/test_pairs.py",
    "cosine_embedding": "tests/test_pairs.py", "margin_ranking": "tests/test_pairs.py",
    "linear_cross_entropy": "tests/test_linear_cross_entropy.py",
}

# Shapes big enough to run several blocks on several threads: more than
# fastloss._kernels.SERIAL_THRESHOLD_ELEMENTS (65536) elements and 4 or more blocks of
# BLOCK_SIZE_ELEMENTS (16384) elements; odd sizes leave a partial last block.
LARGE_CLASS_SHAPES = ((64, 1024), (300, 257), (5, 20000), (20000, 4), (4100, 16))
LARGE_ELEMENTWISE_SHAPES = ((70001,), (300, 301), (3, 7, 4001))


def is_loss_function(obj) -> bool:
    """A public loss function: a function whose keyword arguments include those every loss
    takes (API.md, "The shape of every call")."""
    if not inspect.isfunction(obj):
        return False
    params = inspect.signature(obj).parameters
    return all(name in params for name in ("reduction", "compute_grad", "out", "n_threads"))


# ------------------------------------------------------------------ values

def one_in(draw, n: int) -> bool:
    """True about once in n draws. (Hypothesis favours the ends of a range, so the rare
    outcome is a value from the middle: `integers(0, n - 1) == 0` would come up far more
    often than once in n.)"""
    return draw(st.integers(0, n - 1)) == n // 2


def _width(dtype) -> int:
    return 8 * np.dtype(dtype).itemsize


def _representable(dtype, values):
    """The values rounded to dtype (those beyond its range become +-inf)."""
    with np.errstate(over="ignore"):
        return [float(np.asarray(v, dtype=dtype)) for v in values]


def special_values(dtype) -> list:
    """The values most likely to break a kernel: signed zeros, subnormals, the extremes of
    the range, infinities, nan, and the large magnitudes of API.md's edge cases."""
    info = np.finfo(dtype)
    values = [0.0, -0.0, math.nan, math.inf, -math.inf,
              info.smallest_subnormal, -info.smallest_subnormal, info.smallest_normal,
              info.max, -info.max, info.max / 2, -info.max / 2, 1e4, -1e4, 1e30, -1e30, 88.7, -104.0]
    if dtype == np.float64:
        values += [1e300, -1e300, 709.8, -745.2]
    return _representable(dtype, values)


def float_elements(dtype, regime: str):
    """Element strategy: "moderate" (|x| <= 30), "finite" (also the whole finite range with
    subnormals), "all" (also nan, +-inf and the special values)."""
    width = _width(dtype)
    moderate = st.floats(-30, 30, width=width)
    if regime == "moderate":
        return moderate
    finite = st.floats(width=width, allow_nan=False, allow_infinity=False)
    if regime == "finite":
        return st.one_of(moderate, finite)
    return st.one_of(moderate, st.floats(width=width), st.sampled_from(special_values(dtype)))


# moderate values; a common offset (1e4 + noise, -1e30 + noise); the whole finite range; and
# "wild": moderate arrays with one to three values from anywhere (nan, +-inf, subnormals,
# extremes) planted in them, so that most rows stay finite beside the ones that are not
REGIMES = ("moderate", "moderate", "offset", "finite", "wild", "wild")


def draw_floats(draw, dtype, shape, regime: Optional[str] = None, low=None, high=None):
    """An array of `dtype` and `shape`. Small arrays element by element with hypothesis;
    large ones from a drawn seed with a few special values planted at drawn positions."""
    dtype = np.dtype(dtype)
    regime = regime or draw(st.sampled_from(REGIMES))
    size = int(np.prod(shape))
    if low is not None:  # a bounded domain (probabilities), with nan now and then
        if size > 4096:
            rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
            array = (low + (high - low) * rng.random(size)).astype(dtype).reshape(shape)
            if regime == "wild" and size:
                array.flat[draw(st.integers(0, size - 1))] = np.nan
            return array
        bounded = st.floats(low, high, width=_width(dtype))
        if regime == "wild":
            bounded = st.one_of(bounded, st.just(math.nan), st.sampled_from([low, high]))
        return draw(hnp.arrays(dtype, shape, elements=bounded))
    if size > 4096:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        scale = draw(st.sampled_from([1.0, 30.0, 1e4]))
        offset = draw(st.sampled_from([0.0, 0.0, 1e4, -1e30]))
        with np.errstate(over="ignore"):  # huge offsets may round to inf: wanted
            array = (offset + scale * rng.standard_normal(size)).astype(dtype).reshape(shape)
        if regime in ("finite", "wild") and size:
            pool = special_values(dtype)
            if regime == "finite":
                pool = [v for v in pool if math.isfinite(v)]
            for _ in range(draw(st.integers(0, 4))):
                array.flat[draw(st.integers(0, size - 1))] = draw(st.sampled_from(pool))
        return array
    if regime == "wild":  # mostly moderate values, a few from the whole range and specials
        array = draw(hnp.arrays(dtype, shape, elements=float_elements(dtype, "moderate")))
        if size:
            wild = st.one_of(st.floats(width=_width(dtype)),
                             st.sampled_from(special_values(dtype)))
            for _ in range(draw(st.integers(1, 3))):
                array.flat[draw(st.integers(0, size - 1))] = draw(wild)
        return array
    if regime == "offset":
        base = draw(st.sampled_from(_representable(dtype, [1e4, -1e4, 1e6, -1e30, 1e30])))
        noise = draw(hnp.arrays(np.float64, shape, elements=st.floats(-30, 30)))
        with np.errstate(over="ignore"):
            return (base + noise).astype(dtype)
    return draw(hnp.arrays(dtype, shape, elements=float_elements(dtype, regime)))


# ------------------------------------------------------------------ memory layouts

GUARD = 3  # elements of guard before and after every buffer a test array lives in


@dataclass
class Placed:
    """An array `view` that lives inside `base`, with guard elements around it: the tests
    check that `base` is bitwise unchanged after a call (or, for `out`, its guards)."""
    view: np.ndarray
    base: np.ndarray
    start: int  # the view's data occupies base[start:stop] (for out: its only writable span)
    stop: int


def _sentinel(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype.type(-7.25)
    if dtype.kind in "iu":
        return dtype.type(77)
    return dtype.type(0)


def place(array: np.ndarray, layout: str, read_only: bool = False) -> Placed:
    """A view equal to `array` in one of the memory layouts:
    "C", "F" (Fortran), "strided" (every other element on every axis), "reversed" (negative
    strides on every axis), all inside a guarded buffer."""
    array = np.asarray(array)
    dtype = array.dtype
    shape = array.shape
    if layout == "strided":
        steps = tuple(2 for _ in shape)
        big_shape = tuple(n * s + 1 for n, s in zip(shape, steps))
    else:
        big_shape = shape
    size = int(np.prod(big_shape))
    base = np.full(size + 2 * GUARD, _sentinel(dtype), dtype=dtype)
    region = base[GUARD:GUARD + size]
    if layout == "C" or not shape:  # a 0-d array has one layout
        view = region.reshape(shape)
    elif layout == "C":
        view = region.reshape(shape)
    elif layout == "F":
        view = region.reshape(shape[::-1]).T if shape else region.reshape(shape)
    elif layout == "strided":
        view = region.reshape(big_shape)[tuple(slice(0, n * 2, 2) for n in shape)]
    elif layout == "reversed":
        view = region.reshape(shape)[tuple(slice(None, None, -1) for _ in shape)]
    else:
        raise ValueError(layout)
    view[...] = array
    if read_only:
        view.flags.writeable = False
    return Placed(view, base, GUARD, GUARD + size)


LAYOUTS = ("C", "C", "F", "strided", "reversed")


# ------------------------------------------------------------------ the registry entry

@dataclass(frozen=True)
class LossCase:
    name: str
    arg_names: tuple              # positional arguments, the differentiated input first
    class_index: bool             # (N, C) logits with (N,) integer class indices
    converted: tuple              # arguments converted to the input's dtype when floating
    draw_inputs: Callable         # (draw, dtype) -> (args tuple, kwargs dict)
    tolerance: Callable           # (args64, kwargs, eps) -> (per-sample loss tol, grad tol)
    denominator: Callable         # (args64, kwargs) -> what "mean" divides by
    kept: Callable                # (args, kwargs) -> bool per sample not ignored, or None
    valid_call: Callable          # (rng, dtype, n_elements=None) -> (args, kwargs): valid call
    bad_options: Callable         # (args, kwargs) -> [(update, exception, word in message)]
    options: tuple = field(default=())  # its own keyword arguments
    # (args, kwargs) -> a function to hold the kernel against instead of fastloss.reference
    # where the reference is known to be wrong, or None (see _ce_oracle)
    oracle: Callable = field(default=lambda args, kwargs: None)

    @property
    def input_name(self) -> str:
        return self.arg_names[0]

    @property
    def available(self) -> bool:
        return hasattr(fastloss, self.name)

    def function(self):
        return getattr(fastloss, self.name)

    def reference(self):
        return getattr(fastloss.reference, self.name)


def widen(case: LossCase, args: tuple, kwargs: dict, dtype) -> tuple:
    """The inputs as the kernel sees them (converted arguments rounded to the input's dtype),
    then widened to float64: the reference on these is the exact value to float64 rounding."""
    def convert(name, value):
        if value is None or isinstance(value, (int, float)):
            return value
        array = np.asarray(value)
        if name == case.input_name:
            return array.astype(np.float64)
        if name in case.converted and (array.dtype.kind == "f"
                                        or (array.dtype.kind in "iu" and name != "target")):
            with np.errstate(over="ignore"):  # beyond float32's range is inf, as in the kernel
                return array.astype(dtype).astype(np.float64)
        return array
    wide_args = tuple(convert(name, value) for name, value in zip(case.arg_names, args))
    wide_kwargs = {key: convert(key, value) for key, value in kwargs.items()}
    return wide_args, wide_kwargs


def _row_spread(x: np.ndarray) -> np.ndarray:
    """max - min of each row over its finite entries (0 for a row without any)."""
    if x.shape[1] == 0:
        return np.zeros(x.shape[0])
    finite = np.isfinite(x)
    with np.errstate(all="ignore"):
        high = np.where(finite, x, -np.inf).max(axis=1)
        low = np.where(finite, x, np.inf).min(axis=1)
        spread = high - low
    return np.where(np.isfinite(high), spread, 0.0)


# ------------------------------------------------------------------ class-index targets

def draw_class_shape(draw):
    if one_in(draw, 10):
        return draw(st.sampled_from(LARGE_CLASS_SHAPES))
    n_classes = 0 if one_in(draw, 30) else draw(st.integers(1, 7))  # 0: ValueError
    return draw(st.integers(0, 7)), n_classes


def draw_index_target(draw, n_samples: int, n_classes: int, ignore_index: int):
    """Class indices in [0, C), some equal to ignore_index, now and then one invalid index;
    in a random integer dtype that can hold them."""
    if n_samples > 4096:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        labels = rng.integers(0, max(n_classes, 1), n_samples)
        ignored = rng.random(n_samples) < draw(st.sampled_from([0.0, 0.1, 1.0]))
        labels = np.where(ignored, ignore_index, labels)
    else:
        labels = draw(hnp.arrays(np.int64, (n_samples,),
                                 elements=st.integers(0, max(n_classes - 1, 0))))
        ignored = draw(hnp.arrays(np.bool_, (n_samples,)))
        labels = np.where(ignored, ignore_index, labels)
    if n_samples and one_in(draw, 20):  # an index the contract rejects
        labels[draw(st.integers(0, n_samples - 1))] = draw(
            st.sampled_from([n_classes, -1, -101, 2**40]).filter(lambda v: v != ignore_index))
    fitting = [d for d in INTEGER_DTYPES
               if labels.size == 0 or (np.iinfo(d).min <= labels.min()
                                       and labels.max() <= np.iinfo(d).max)]
    target_dtype = draw(st.sampled_from(fitting)) if fitting else np.int64
    return labels.astype(target_dtype)


def draw_ignore_index(draw, n_classes):
    return draw(st.one_of(st.just(-100), st.just(-100), st.integers(-3, n_classes + 2)))


def draw_class_weight(draw, n_classes, dtype):
    if draw(st.booleans()):
        return None
    weight_dtype = draw(st.sampled_from([dtype, dtype, np.float64, np.float32, np.int32]))
    if np.dtype(weight_dtype).kind == "f":
        regime = draw(st.sampled_from(["moderate", "moderate", "wild"]))
        if regime == "moderate":
            values = draw(hnp.arrays(np.float64, (n_classes,), elements=st.floats(0, 10)))
        else:
            values = draw(hnp.arrays(np.float64, (n_classes,), elements=st.one_of(
                st.floats(0, 10), st.sampled_from([0.0, 1e30, math.nan, math.inf, 5e-324]))))
        values = values.astype(weight_dtype)
    else:
        values = draw(hnp.arrays(weight_dtype, (n_classes,), elements=st.integers(0, 5)))
    return place(values, draw(st.sampled_from(LAYOUTS))).view


def _class_coefficients(logits, target, weight, eps, ignore_index):
    """The coefficients a_c of API.md's softmax cross-entropy (loss = sum_c a_c (-log p_c))."""
    n_samples, n_classes = logits.shape
    w = np.ones(n_classes) if weight is None else np.asarray(weight, dtype=np.float64)
    with np.errstate(all="ignore"):
        if target.ndim == 1:
            y = target.astype(np.int64)
            kept = y != ignore_index
            a = np.zeros((n_samples, n_classes))
            rows = np.flatnonzero(kept)
            a[rows, y[rows]] += (1 - eps) * w[y[rows]]
            if eps > 0:  # without smoothing the other classes' weights play no part
                a[rows] += eps / n_classes * w
        else:
            a = w * ((1 - eps) * target + eps / n_classes)
    return a


# ------------------------------------------------------------------ softmax_cross_entropy

def _ce_draw(draw, dtype):
    n_samples, n_classes = draw_class_shape(draw)
    logits = draw_floats(draw, dtype, (n_samples, n_classes))
    kwargs = {}
    probabilities = one_in(draw, 4)
    if probabilities:
        target_dtype = draw(st.sampled_from([dtype, dtype, np.float16, np.float32, np.float64]))
        target = draw_floats(draw, target_dtype, (n_samples, n_classes),
                             regime=draw(st.sampled_from(["moderate", "wild"])), low=0.0, high=1.0)
        if one_in(draw, 20):  # ignore_index with probabilities: ValueError
            kwargs["ignore_index"] = 3
    else:
        ignore_index = draw_ignore_index(draw, n_classes)
        if ignore_index != -100:
            kwargs["ignore_index"] = ignore_index
        target = draw_index_target(draw, n_samples, n_classes, ignore_index)
    target = place(target, draw(st.sampled_from(LAYOUTS))).view
    weight = draw_class_weight(draw, n_classes, dtype)
    if weight is not None:
        kwargs["weight"] = weight
    smoothing = draw(st.sampled_from(["none"] * 4 + ["some"] * 3 + ["one"]))
    if one_in(draw, 20):
        smoothing = "invalid"
    if smoothing == "some":
        kwargs["label_smoothing"] = draw(st.floats(0, 1))
    elif smoothing == "one":
        kwargs["label_smoothing"] = 1.0
    elif smoothing == "invalid":
        kwargs["label_smoothing"] = draw(st.sampled_from([-0.25, 1.5, math.nan]))
    return (logits, target), kwargs


def _ce_tolerance(args, kwargs, eps):
    """K roundings of the input's dtype, and the error bound of a double sum over the C
    classes (C eps64: the kernel adds sum_c a_c, sum_c a_c (x_c - max) and sum_c exp one by
    one in each SIMD lane; it matters for float64 with many classes), relative to the size of
    the coefficients and, for the loss, the spread of the row's logits."""
    logits, target = args
    n_classes = logits.shape[1]
    a = _class_coefficients(logits, target, kwargs.get("weight"),
                            kwargs.get("label_smoothing", 0.0), kwargs.get("ignore_index", -100))
    rounding = K_ULPS * eps + n_classes * 2.0**-52
    with np.errstate(all="ignore"):
        size = np.abs(a).sum(axis=1)
        loss_tol = rounding * size * (1 + math.log(max(n_classes, 1)) + _row_spread(logits))
        grad_tol = np.broadcast_to((rounding * size)[:, None], logits.shape)
    return loss_tol, grad_tol


def torch_cross_entropy(logits, target, *, weight=None, ignore_index=-100, label_smoothing=0.0,
                        reduction="mean", compute_grad=True, out=None, n_threads=None):
    """torch.nn.functional.cross_entropy (the semantics API.md names) with fastloss's
    signature and return values, in the logits' dtype, gradient by autograd."""
    import torch

    logits = np.asarray(logits)
    x = torch.tensor(logits, requires_grad=True)
    target = np.asarray(target)
    t = torch.tensor(target.astype(np.int64) if target.ndim == 1 else target.astype(logits.dtype))
    w = None if weight is None else torch.tensor(np.asarray(weight).astype(logits.dtype))
    loss = torch.nn.functional.cross_entropy(x, t, weight=w, ignore_index=ignore_index,
                                             label_smoothing=label_smoothing, reduction=reduction)
    grad = None
    if compute_grad:
        (loss.sum() if reduction == "none" else loss).backward()
        grad = x.grad.numpy()
    value = loss.detach().numpy() if reduction == "none" else float(loss.detach())
    return fastloss.LossResult(value, grad)


def _ce_oracle(args, kwargs):
    """fastloss.reference, except where it is known to be wrong (the tests
    test_reference_* of tests/test_properties.py fail until it is fixed), then PyTorch:
    - without label smoothing it still adds eps * (smoothing term) with eps = 0, which is nan
      when the smoothing term is not finite: a row with a -inf logit (or logits whose
      difference, times a class weight, overflows), or a nan/inf weight of any class;
    - an ignored target's row still enters the sum as 0 * its loss: nan when its logits are
      not finite."""
    logits, target = (np.asarray(a) for a in args)
    if target.ndim != 1 or logits.ndim != 2 or logits.shape[1] == 0:
        return None
    weight = kwargs.get("weight")
    kept = target.astype(np.int64) != kwargs.get("ignore_index", -100)
    finite_rows = np.isfinite(logits).all(axis=1)
    with np.errstate(all="ignore"):
        huge = float(np.finfo(logits.dtype).max) / 2
        finite_rows &= _row_spread(logits) < huge
    if np.any(~kept & ~finite_rows):
        return torch_cross_entropy
    if kwargs.get("label_smoothing", 0.0) == 0:
        w = np.ones(1) if weight is None else np.abs(np.asarray(weight, dtype=np.float64))
        with np.errstate(all="ignore"):
            # the smoothing term sum_c w_c log p_c overflows in the logits' dtype
            overflow = ~(_row_spread(logits) * w.max(initial=0.0) < huge)
        if (np.any(kept & (~finite_rows | overflow)) or not np.isfinite(w).all()):
            return torch_cross_entropy
    return None


def _ce_denominator(args, kwargs):
    logits, target = args
    if target.ndim == 2:
        return float(logits.shape[0])
    y = target.astype(np.int64)
    kept = y != kwargs.get("ignore_index", -100)
    weight = kwargs.get("weight")
    if weight is None:
        return float(kept.sum())
    return float(np.asarray(weight, dtype=np.float64)[y[kept]].sum())


def _class_kept(args, kwargs):
    target = np.asarray(args[1])
    if target.ndim != 1:
        return None
    return target.astype(np.int64) != kwargs.get("ignore_index", -100)


def _class_valid_call(rng, dtype, n_elements=None):
    """(6, 5) logits with fixed labels; or about n_elements logits in rows of 1000 classes."""
    if n_elements is None:
        logits = rng.standard_normal((6, 5)).astype(dtype)
        return (logits, np.array([0, 4, 2, 1, 3, 2], dtype=np.int64)), {}
    n_classes = 1000
    n_samples = max(1, n_elements // n_classes)
    logits = rng.standard_normal((n_samples, n_classes), dtype=np.float32).astype(dtype, copy=False)
    return (logits, rng.integers(0, n_classes, n_samples)), {}


def _common_bad_options(args, kwargs):
    return [
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"reduction": "MEAN"}, ValueError, "reduction"),
        ({"reduction": ""}, ValueError, "reduction"),
        ({"reduction": None}, ValueError, "reduction"),
        ({"n_threads": 0}, ValueError, "n_threads"),
        ({"n_threads": -1}, ValueError, "n_threads"),
    ]


def _ce_bad_options(args, kwargs):
    n_classes = args[0].shape[1]
    return _common_bad_options(args, kwargs) + [
        ({"label_smoothing": -0.01}, ValueError, "label_smoothing"),
        ({"label_smoothing": 1.01}, ValueError, "label_smoothing"),
        ({"label_smoothing": math.nan}, ValueError, "label_smoothing"),
        ({"label_smoothing": math.inf}, ValueError, "label_smoothing"),
        ({"weight": np.ones(n_classes + 1)}, ValueError, "weight"),
        ({"weight": np.ones(n_classes - 1)}, ValueError, "weight"),
        ({"weight": np.ones((1, n_classes))}, ValueError, "weight"),
        ({"weight": np.ones(1)}, ValueError, "weight"),
    ]


SOFTMAX_CROSS_ENTROPY = LossCase(
    name="softmax_cross_entropy",
    arg_names=("logits", "target"),
    class_index=True,
    converted=("target", "weight"),
    draw_inputs=_ce_draw,
    tolerance=_ce_tolerance,
    denominator=_ce_denominator,
    kept=_class_kept,
    valid_call=_class_valid_call,
    bad_options=_ce_bad_options,
    options=("weight", "ignore_index", "label_smoothing"),
    oracle=_ce_oracle,
)


# ------------------------------------------------------------------ softmax_focal

def _softmax_focal_draw(draw, dtype):
    n_samples, n_classes = draw_class_shape(draw)
    logits = draw_floats(draw, dtype, (n_samples, n_classes))
    kwargs = {}
    ignore_index = draw_ignore_index(draw, n_classes)
    if ignore_index != -100:
        kwargs["ignore_index"] = ignore_index
    target = place(draw_index_target(draw, n_samples, n_classes, ignore_index),
                   draw(st.sampled_from(LAYOUTS))).view
    alpha = draw(st.sampled_from(["none", "float", "array"]))
    if alpha == "float":
        kwargs["alpha"] = draw(st.floats(0, 1))
    elif alpha == "array":
        kwargs["alpha"] = draw_class_weight(draw, n_classes, dtype)
    kwargs.update(draw_gamma(draw))
    return (logits, target), kwargs


def draw_gamma(draw):
    choice = draw(st.sampled_from(["default", "integer", "fraction", "invalid"]))
    if choice == "integer":
        return {"gamma": float(draw(st.integers(0, 3)))}
    if choice == "fraction":
        return {"gamma": draw(st.floats(0, 5))}
    if choice == "invalid":
        return {"gamma": draw(st.sampled_from([-0.5, -math.inf, math.nan]))}
    return {}


def _alpha_per_sample(alpha, y, kept):
    if alpha is None:
        factor = np.ones(y.shape)
    elif np.ndim(alpha) == 0:
        factor = np.full(y.shape, float(alpha))
    else:
        factor = np.asarray(alpha, dtype=np.float64)[np.where(kept, y, 0)]
    return np.where(kept, factor, 0.0)


def _softmax_focal_tolerance(args, kwargs, eps):
    logits, target = args
    n_classes = logits.shape[1]
    y = target.astype(np.int64)
    kept = y != kwargs.get("ignore_index", -100)
    gamma = kwargs.get("gamma", 2.0)
    with np.errstate(all="ignore"):
        size = np.abs(_alpha_per_sample(kwargs.get("alpha"), y, kept)) * (1 + gamma) ** 2
        reach = 1 + math.log(max(n_classes, 1)) + _row_spread(logits)
        loss_tol = K_ULPS * eps * size * reach
        grad_tol = np.broadcast_to((K_ULPS * eps * size * reach)[:, None], logits.shape)
    return loss_tol, grad_tol


def _softmax_focal_denominator(args, kwargs):
    y = np.asarray(args[1]).astype(np.int64)
    return float((y != kwargs.get("ignore_index", -100)).sum())


def _softmax_focal_bad_options(args, kwargs):
    n_classes = args[0].shape[1]
    return _common_bad_options(args, kwargs) + [
        ({"gamma": -0.5}, ValueError, "gamma"),
        ({"gamma": -1e-300}, ValueError, "gamma"),
        ({"alpha": np.ones(n_classes + 1)}, ValueError, "alpha"),
        ({"alpha": np.ones(n_classes - 1)}, ValueError, "alpha"),
    ]


SOFTMAX_FOCAL = LossCase(
    name="softmax_focal",
    arg_names=("logits", "target"),
    class_index=True,
    converted=("alpha",),
    draw_inputs=_softmax_focal_draw,
    tolerance=_softmax_focal_tolerance,
    denominator=_softmax_focal_denominator,
    kept=_class_kept,
    valid_call=_class_valid_call,
    bad_options=_softmax_focal_bad_options,
    options=("alpha", "gamma", "ignore_index"),
)


# ------------------------------------------------------------------ element-wise losses

def draw_elementwise_shape(draw):
    if one_in(draw, 10):
        return draw(st.sampled_from(LARGE_ELEMENTWISE_SHAPES))
    return tuple(draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))


def _elementwise_pair(draw, dtype, target_low=None, target_high=None):
    shape = draw_elementwise_shape(draw)
    x = draw_floats(draw, dtype, shape)
    target_dtype = draw(st.sampled_from([dtype, dtype, dtype, np.float16, np.float32, np.float64]))
    if target_low is None:
        target = draw_floats(draw, target_dtype, shape)
    else:
        target = draw_floats(draw, target_dtype, shape,
                             regime=draw(st.sampled_from(["moderate", "wild"])),
                             low=target_low, high=target_high)
    if shape and one_in(draw, 20):  # a target of another shape: ValueError
        target = target[..., :-1] if shape[-1] else np.zeros(shape[:-1] + (1,), target_dtype)
    return x, place(target, draw(st.sampled_from(LAYOUTS))).view


def _elementwise_denominator(args, kwargs):
    return float(np.asarray(args[0]).size)


def _elementwise_valid_call(rng, dtype, n_elements=None):
    """(4, 5) inputs and targets in [0, 1); or n_elements of each, in one axis."""
    shape = (4, 5) if n_elements is None else (n_elements,)
    x = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
    target = rng.random(shape, dtype=np.float32).astype(dtype, copy=False)
    return (x, target), {}


def _robust_draw(parameter):
    def draw_inputs(draw, dtype):
        x, target = _elementwise_pair(draw, dtype)
        kwargs = {}
        choice = draw(st.sampled_from(["default", "value", "value", "invalid"]))
        if choice == "value":
            kwargs[parameter] = draw(st.one_of(st.floats(1e-3, 1e3), st.sampled_from([1e-30, 1e30])))
        elif choice == "invalid":
            kwargs[parameter] = draw(st.sampled_from([0.0, -1.0, math.nan, -math.inf]))
        return (x, target), kwargs
    return draw_inputs


def _huber_tolerance(args, kwargs, eps):
    x, target = args
    delta = kwargs.get("delta", 1.0)
    with np.errstate(all="ignore"):
        d = np.abs(x - target)
        grad_size = np.minimum(d, delta)
        return K_ULPS * eps * d * grad_size, K_ULPS * eps * grad_size


def _smooth_l1_tolerance(args, kwargs, eps):
    x, target = args
    beta = kwargs.get("beta", 1.0)
    with np.errstate(all="ignore"):
        d = np.abs(x - target)
        grad_size = np.minimum(d / beta, 1.0)
        return K_ULPS * eps * d * grad_size, K_ULPS * eps * grad_size


def _robust_bad_options(parameter):
    def bad_options(args, kwargs):
        return _common_bad_options(args, kwargs) + [
            ({parameter: 0.0}, ValueError, parameter),
            ({parameter: -1.0}, ValueError, parameter),
            ({parameter: math.nan}, ValueError, parameter),
        ]
    return bad_options


HUBER = LossCase(
    name="huber", arg_names=("input", "target"), class_index=False, converted=("target",),
    draw_inputs=_robust_draw("delta"), tolerance=_huber_tolerance,
    denominator=_elementwise_denominator, kept=lambda args, kwargs: None,
    valid_call=_elementwise_valid_call, bad_options=_robust_bad_options("delta"),
    options=("delta",),
)

SMOOTH_L1 = LossCase(
    name="smooth_l1", arg_names=("input", "target"), class_index=False, converted=("target",),
    draw_inputs=_robust_draw("beta"), tolerance=_smooth_l1_tolerance,
    denominator=_elementwise_denominator, kept=lambda args, kwargs: None,
    valid_call=_elementwise_valid_call, bad_options=_robust_bad_options("beta"),
    options=("beta",),
)


def _bce_draw(draw, dtype):
    x, target = _elementwise_pair(draw, dtype, 0.0, 1.0)
    kwargs = {}
    if x.ndim and draw(st.booleans()):
        shape = draw(hnp.broadcastable_shapes(x.shape, min_dims=0, max_dims=x.ndim, min_side=0))
        kwargs["weight"] = place(draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 10)))
                                 .astype(dtype), draw(st.sampled_from(LAYOUTS))).view
    if x.ndim and draw(st.booleans()):
        kwargs["pos_weight"] = place(draw(hnp.arrays(np.float64, (x.shape[-1],),
                                                     elements=st.floats(0, 10))).astype(dtype),
                                     draw(st.sampled_from(LAYOUTS))).view
    return (x, target), kwargs


def _bce_scales(x, target, weight, pos_weight):
    """|w| (|1 - t| |x| + |l| (|x| + 1)) and |w| (|1 - t| + |l|), l = 1 + (pos_weight - 1) t:
    the sizes of the terms of the loss (1 - t) x + l softplus(-x) and of its gradient."""
    w = 1.0 if weight is None else np.abs(np.asarray(weight, dtype=np.float64))
    pw = 1.0 if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)
    lw = np.abs(1 + (pw - 1) * target)
    ax = np.abs(x)
    return w * (np.abs(1 - target) * ax + lw * (ax + 1)), w * (np.abs(1 - target) + lw)


def _bce_tolerance(args, kwargs, eps):
    x, target = args
    with np.errstate(all="ignore"):
        loss_size, grad_size = _bce_scales(x, target, kwargs.get("weight"), kwargs.get("pos_weight"))
        return (K_ULPS * eps * np.broadcast_to(loss_size, x.shape),
                K_ULPS * eps * np.broadcast_to(grad_size, x.shape))


def _bce_bad_options(args, kwargs):
    shape = args[0].shape
    return _common_bad_options(args, kwargs) + [
        ({"weight": np.ones(shape[:-1] + (shape[-1] + 1,))}, ValueError, "weight"),
        ({"pos_weight": np.ones(shape[-1] + 1)}, ValueError, "pos_weight"),
    ]


BINARY_CROSS_ENTROPY_WITH_LOGITS = LossCase(
    name="binary_cross_entropy_with_logits", arg_names=("logits", "target"), class_index=False,
    converted=("target", "weight", "pos_weight"), draw_inputs=_bce_draw,
    tolerance=_bce_tolerance, denominator=_elementwise_denominator,
    kept=lambda args, kwargs: None, valid_call=_elementwise_valid_call,
    bad_options=_bce_bad_options, options=("weight", "pos_weight"),
)


def _sigmoid_focal_draw(draw, dtype):
    x, target = _elementwise_pair(draw, dtype, 0.0, 1.0)
    kwargs = draw_gamma(draw)
    alpha = draw(st.sampled_from(["default", "value", "off"]))
    if alpha == "value":
        kwargs["alpha"] = draw(st.floats(0, 1))
    elif alpha == "off":
        kwargs["alpha"] = -1.0
    return (x, target), kwargs


def _sigmoid_focal_tolerance(args, kwargs, eps):
    x, target = args
    alpha = kwargs.get("alpha", 0.25)
    gamma = kwargs.get("gamma", 2.0)
    with np.errstate(all="ignore"):
        alpha_t = 1.0 if alpha < 0 else np.abs(alpha * target + (1 - alpha) * (1 - target))
        loss_size, grad_size = _bce_scales(x, target, None, None)
        size = alpha_t * (1 + gamma) ** 2
        return K_ULPS * eps * size * loss_size, K_ULPS * eps * size * (grad_size + loss_size)


def _sigmoid_focal_bad_options(args, kwargs):
    return _common_bad_options(args, kwargs) + [
        ({"gamma": -0.5}, ValueError, "gamma"),
        ({"gamma": -1e-300}, ValueError, "gamma"),
    ]


SIGMOID_FOCAL = LossCase(
    name="sigmoid_focal", arg_names=("logits", "target"), class_index=False,
    converted=("target",), draw_inputs=_sigmoid_focal_draw, tolerance=_sigmoid_focal_tolerance,
    denominator=_elementwise_denominator, kept=lambda args, kwargs: None,
    valid_call=_elementwise_valid_call, bad_options=_sigmoid_focal_bad_options,
    options=("alpha", "gamma"),
)


# ------------------------------------------ class-axis losses (issue 13)

def _multi_margin_draw(draw, dtype):
    n_samples, n_classes = draw_class_shape(draw)
    x = draw_floats(draw, dtype, (n_samples, n_classes))
    target = place(draw_index_target(draw, n_samples, n_classes, -100),
                   draw(st.sampled_from(LAYOUTS))).view
    kwargs = {}
    if draw(st.booleans()):
        kwargs["p"] = draw(st.sampled_from([1, 2, 2, 3]))   # 3: ValueError
    if draw(st.booleans()):
        kwargs["margin"] = draw(st.sampled_from([0.0, 0.5, 2.0, -1.0]))
    weight = draw_class_weight(draw, n_classes, dtype)
    if weight is not None:
        kwargs["weight"] = weight
    return (x, target), kwargs


def _multi_margin_tolerance(args, kwargs, eps):
    x, target = args
    n_classes = x.shape[1]
    p = kwargs.get("p", 1)
    y = np.asarray(target).astype(np.int64)
    valid = (y >= 0) & (y < max(n_classes, 1))
    w = (np.asarray(kwargs["weight"], dtype=np.float64)[np.where(valid, y, 0)]
         if kwargs.get("weight") is not None else np.ones(y.shape))
    with np.errstate(all="ignore"):
        reach = abs(kwargs.get("margin", 1.0)) + 2 * np.max(np.where(np.isfinite(x), np.abs(x), 0),
                                                            axis=1, initial=0) + 1
        size = np.abs(w) * reach ** p
        loss_tol = K_ULPS * eps * size
        grad_tol = np.broadcast_to((K_ULPS * eps * size * (1 + n_classes))[:, None], x.shape)
    return loss_tol, grad_tol


def _multi_margin_bad_options(args, kwargs):
    n_classes = args[0].shape[1]
    return _common_bad_options(args, kwargs) + [
        ({"p": 3}, ValueError, "p"),
        ({"p": 0}, ValueError, "p"),
        ({"margin": math.nan}, ValueError, "margin"),
        ({"weight": np.ones(n_classes + 1)}, ValueError, "weight"),
    ]


MULTI_MARGIN = LossCase(
    name="multi_margin",
    arg_names=("input", "target"),
    class_index=True,
    converted=("weight",),
    draw_inputs=_multi_margin_draw,
    tolerance=_multi_margin_tolerance,
    denominator=lambda args, kwargs: float(np.shape(args[0])[0]),
    kept=lambda args, kwargs: None,
    valid_call=_class_valid_call,
    bad_options=_multi_margin_bad_options,
    options=("p", "margin", "weight"),
)


def _distill_kl_draw(draw, dtype):
    n_samples, n_classes = draw_class_shape(draw)
    x = draw_floats(draw, dtype, (n_samples, n_classes))
    teacher_dtype = draw(st.sampled_from([dtype, dtype, np.float64, np.float32, np.int32]))
    if np.dtype(teacher_dtype).kind == "f":
        teacher = draw_floats(draw, np.dtype(teacher_dtype), (n_samples, n_classes))
    else:
        teacher = draw(hnp.arrays(teacher_dtype, (n_samples, n_classes),
                                  elements=st.integers(-50, 50)))
    teacher = place(teacher, draw(st.sampled_from(LAYOUTS))).view
    kwargs = {}
    if draw(st.booleans()):
        kwargs["temperature"] = draw(st.sampled_from([0.5, 1.0, 4.0, 0.0, -1.0]))
    return (x, teacher), kwargs


def _distill_kl_tolerance(args, kwargs, eps):
    x, t = args
    n_classes = x.shape[1]
    temperature = kwargs.get("temperature", 1.0)
    with np.errstate(all="ignore"):
        reach = 1 + math.log(max(n_classes, 1)) + (_row_spread(x) + _row_spread(t)) / temperature
        loss_tol = K_ULPS * eps * temperature ** 2 * reach
        grad_tol = np.broadcast_to((K_ULPS * eps * temperature * reach)[:, None], x.shape)
    return loss_tol, grad_tol


def _distill_kl_valid_call(rng, dtype, n_elements=None):
    (logits, _), kwargs = _class_valid_call(rng, dtype, n_elements)
    return (logits, rng.standard_normal(logits.shape).astype(dtype)), kwargs


def _distill_kl_bad_options(args, kwargs):
    return _common_bad_options(args, kwargs) + [
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"temperature": -1.0}, ValueError, "temperature"),
        ({"temperature": math.nan}, ValueError, "temperature"),
        ({"reduction": "batchmean"}, ValueError, "reduction"),
    ]


DISTILL_KL = LossCase(
    name="kl_divergence_with_logits",
    arg_names=("logits", "target_logits"),
    class_index=False,
    converted=("target_logits",),
    draw_inputs=_distill_kl_draw,
    tolerance=_distill_kl_tolerance,
    denominator=lambda args, kwargs: float(np.shape(args[0])[0]),
    kept=lambda args, kwargs: None,
    valid_call=_distill_kl_valid_call,
    bad_options=_distill_kl_bad_options,
    options=("temperature",),
)




# ------------------------------------------------------------------ the loss table's rows
#
# The element-wise losses added with the loss table (fastloss/_table.py): inputs and options
# drawn from each row (targets in the row's target domain, options in and now and then out
# of their domains, a weight now and then), and a tolerance from the size of the terms each
# loss adds: the rounding of the input and target (eps |x| and eps |t|) moves the loss by
# the gradient times that, and the gradient by the second derivative times that.

_TARGET_RANGES = {"binary": (0.0, 1.0), "soft": (0.0, 1.0), "probability": (0.0, 1.0),
                  "sign": (-1.0, 1.0), "count": (0.0, 50.0), "regression": (None, None)}


def _table_draw(row):
    from fastloss._table import Param  # noqa: F401 (the row's parameters)

    def draw_inputs(draw, dtype):
        shape = draw_elementwise_shape(draw)
        if row.input_domain is not None:
            x = draw_floats(draw, dtype, shape, regime=draw(st.sampled_from(["moderate", "wild"])),
                            low=row.input_domain[0], high=row.input_domain[1])
        else:
            x = draw_floats(draw, dtype, shape)
        low, high = _TARGET_RANGES[row.target_kind]
        target_dtype = draw(st.sampled_from([dtype, dtype, np.float64]))
        if low is None:
            target = draw_floats(draw, target_dtype, shape)
        else:
            target = draw_floats(draw, target_dtype, shape,
                                 regime=draw(st.sampled_from(["moderate", "wild"])), low=low,
                                 high=high)
        kwargs = {}
        for param in row.params:
            choice = draw(st.sampled_from(["default", "value", "value", "invalid"]))
            if choice == "default":
                continue
            if param.kind == "bool":
                kwargs[param.name] = draw(st.booleans()) if choice == "value" else 1
                continue
            lo = param.low if param.low is not None else -10.0
            hi = param.high if param.high is not None else 10.0
            if choice == "value":
                kwargs[param.name] = draw(st.floats(lo, hi, exclude_min=param.low_open,
                                                    exclude_max=param.high_open))
            else:
                bad = [math.nan] + ([param.low - 1.0] if param.low is not None else [])
                bad += [param.high + 1.0] if param.high is not None else []
                kwargs[param.name] = draw(st.sampled_from(bad))
        if shape and draw(st.booleans()):
            weight_shape = draw(hnp.broadcastable_shapes(shape, min_dims=0, max_dims=len(shape),
                                                         min_side=0))
            kwargs["weight"] = place(draw(hnp.arrays(np.float64, weight_shape,
                                                     elements=st.floats(0, 10))).astype(dtype),
                                     draw(st.sampled_from(LAYOUTS))).view
        return (x, place(target, draw(st.sampled_from(LAYOUTS))).view), kwargs
    return draw_inputs


def _table_tolerance(row):
    def tolerance(args, kwargs, eps):
        x, target = args
        kw = {k: v for k, v in kwargs.items()}
        function = getattr(fastloss.reference, row.name)
        with np.errstate(all="ignore"):
            if row.hessian is not None:
                loss, grad, hess = function(x, target, reduction="none", compute_hess=True, **kw)
            else:
                loss, grad = function(x, target, reduction="none", **kw)
                hess = np.zeros_like(grad)
            ax, at = np.abs(x), np.abs(target)
            w = 1.0 if kw.get("weight") is None else np.abs(np.asarray(kw["weight"], np.float64))
            # the terms the loss adds (t x of the margin losses, exp(x) t of the Poisson/Tweedie
            # ones, t log t of kl_div) all stay below these sizes
            size = np.abs(loss) + (ax + at + 1) * (np.abs(grad) + w * (1 + at))
            if row.name in ("poisson_nll", "tweedie"):
                size = size + w * (at + 1) * ax * np.abs(grad - hess) + np.abs(hess) * (ax + 1)
            grad_size = np.abs(grad) + (ax + at + 1) * (np.abs(hess) + w * (1 + at))
            return (K_ULPS * eps * np.broadcast_to(size, x.shape),
                    K_ULPS * eps * np.broadcast_to(grad_size, x.shape))
    return tolerance


def _table_valid_call(row):
    def valid_call(rng, dtype, n_elements=None):
        shape = (4, 5) if n_elements is None else (n_elements,)
        if row.input_domain is not None:
            x = rng.random(shape, dtype=np.float32).astype(dtype, copy=False)
        else:
            x = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
        target = rng.random(shape, dtype=np.float32).astype(dtype, copy=False)
        return (x, target), {}
    return valid_call


def _table_bad_options(row):
    def bad_options(args, kwargs):
        shape = args[0].shape
        bad = _common_bad_options(args, kwargs) + [
            ({"weight": np.ones(shape[:-1] + (shape[-1] + 1,))}, ValueError, "weight")]
        if "batchmean" not in row.reductions:
            bad.append(({"reduction": "batchmean"}, ValueError, "batchmean"))
        for param in row.params:
            if param.kind == "bool":
                continue
            bad.append(({param.name: math.nan}, ValueError, param.name))
            if param.low is not None:
                bad.append(({param.name: param.low - 1.0}, ValueError, param.name))
            if param.high is not None:
                bad.append(({param.name: param.high + 1.0}, ValueError, param.name))
        return bad
    return bad_options


def _table_cases():
    from fastloss._table import ELEMENTWISE_BY_NAME

    cases = []
    for name in TABLE_LOSSES:
        row = ELEMENTWISE_BY_NAME[name]
        converted = ("target", "weight") + ((row.array_param,) if row.array_param else ())
        cases.append(LossCase(
            name=name, arg_names=(row.input_name, "target"), class_index=False,
            converted=converted, draw_inputs=_table_draw(row), tolerance=_table_tolerance(row),
            denominator=(lambda args, kwargs: float(np.asarray(args[0]).shape[0])
                         if kwargs.get("reduction") == "batchmean" and np.ndim(args[0])
                         else _elementwise_denominator(args, kwargs)),
            kept=lambda args, kwargs: None, valid_call=_table_valid_call(row),
            bad_options=_table_bad_options(row), options=row.options + ("weight",)))
    return tuple(cases)


CASES = (SOFTMAX_CROSS_ENTROPY, BINARY_CROSS_ENTROPY_WITH_LOGITS, HUBER, SMOOTH_L1,
         SIGMOID_FOCAL, SOFTMAX_FOCAL, MULTI_MARGIN, DISTILL_KL) + _table_cases()
CASES_BY_NAME = {case.name: case for case in CASES}


def enrolled() -> list:
    """The registry entries whose loss fastloss has today."""
    return [case for case in CASES if case.available]


def case_params():
    """pytest.param per enrolled loss, with the loss name as its id."""
    import pytest
    return [pytest.param(case, id=case.name) for case in enrolled()]
