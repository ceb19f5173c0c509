"""Cases of the benchmark report: one ``LossEntry`` per loss, its inputs at one size and
dtype (``Case``), and the check of a result against the reference's.

Inputs are drawn from the kinds that the loss table names (``input_kind`` and
``target_kind`` of fastloss._table.ElementwiseLoss), so an element-wise loss gets the
inputs its tests get without a line of its own here."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Optional, Tuple, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .sizes import Size

# Builds a zero-argument call for one case and thread count. May raise NotApplicable.
Builder = Callable[["Case", int], Callable[[], Any]]

LAYOUTS = ("flat", "classes", "rows", "image", "linear")
# the rank of an explicit shape that each layout takes ("flat": any)
LAYOUT_RANKS = {"classes": 2, "rows": 2, "image": 4, "linear": 3}


class NotApplicable(Exception):
    """An implementation that cannot run this row (e.g. jax at a thread limit)."""


# --------------------------------------------------------------------------- inputs

@dataclasses.dataclass(frozen=True)
class Inputs:
    """The positional array arguments of a loss, in order: the differentiated ones first
    (logits or predictions; gaussian_kl's mean and log_var; a penalty's parameters), then
    the target (class indices as int64, or a float array of the input's shape)."""

    arrays: Tuple[np.ndarray, ...]

    @property
    def x(self) -> np.ndarray:
        return self.arrays[0]

    @property
    def target(self) -> Optional[np.ndarray]:
        return self.arrays[1] if len(self.arrays) > 1 else None


def _normal(shape, dtype, rng) -> np.ndarray:
    kind = np.float64 if dtype == np.float64 else np.float32
    return rng.standard_normal(shape, dtype=kind).astype(dtype, copy=False)


def class_inputs(shape, dtype, rng) -> Inputs:
    """(N, C) standard normal logits and uniform class indices."""
    n, c = shape
    return Inputs((_normal(shape, dtype, rng), rng.integers(0, c, n, dtype=np.int64)))


def _draw_input(kind: str, shape, dtype, rng) -> np.ndarray:
    if kind == "normal":
        return _normal(shape, dtype, rng)
    if kind == "probability":        # away from 0 and 1, where the logs are clamped
        return rng.uniform(0.02, 0.98, shape).astype(dtype)
    if kind == "log_probability":
        return np.log(rng.uniform(0.02, 1.0, shape)).astype(dtype)
    if kind == "positive":
        return rng.uniform(0.1, 3.0, shape).astype(dtype)
    raise ValueError(f"unknown input kind {kind!r}")


def _draw_target(kind: str, shape, dtype, rng) -> np.ndarray:
    if kind == "regression":
        return _normal(shape, dtype, rng)
    if kind == "binary":
        return (rng.random(shape) < 0.5).astype(dtype)
    if kind in ("soft", "probability"):
        return rng.random(shape).astype(dtype)
    if kind == "sign":
        return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(dtype)
    if kind == "count":
        return rng.poisson(1.5, shape).astype(dtype)
    raise ValueError(f"unknown target kind {kind!r}")


@functools.lru_cache(maxsize=None)
def table_inputs(input_kind: str, target_kind: str) -> Callable:
    """The input maker of a loss-table row's kinds (one function per pair of kinds, so
    losses with the same kinds share their arrays within a run)."""
    _draw_input(input_kind, (0,), np.float64, np.random.default_rng(0))    # known kinds
    _draw_target(target_kind, (0,), np.float64, np.random.default_rng(0))

    def make(shape, dtype, rng) -> Inputs:
        return Inputs((_draw_input(input_kind, shape, dtype, rng),
                       _draw_target(target_kind, shape, dtype, rng)))
    make.__name__ = f"inputs_{input_kind}_{target_kind}"
    return make


def gaussian_inputs(shape, dtype, rng) -> Inputs:
    """gaussian_kl's (mean, log_var): both standard normal."""
    return Inputs((_normal(shape, dtype, rng), _normal(shape, dtype, rng)))


def parameter_inputs(shape, dtype, rng) -> Inputs:
    """A penalty's parameters: standard normal."""
    return Inputs((_normal(shape, dtype, rng),))


def logit_pair_inputs(shape, dtype, rng) -> Inputs:
    """(N, C) student logits and (N, C) teacher logits, both standard normal
    (kl_divergence_with_logits)."""
    return Inputs((_normal(shape, dtype, rng), _normal(shape, dtype, rng)))


def mask_inputs(shape, dtype, rng) -> Inputs:
    """(N, C, H, W) standard normal logits and independent binary masks per channel (the
    multi-label targets of a sigmoid overlap loss), in the input's dtype."""
    return Inputs((_normal(shape, dtype, rng), (rng.random(shape) < 0.5).astype(dtype)))


def one_hot_inputs(shape, dtype, rng) -> Inputs:
    """(N, C, H, W) standard normal logits and one-hot targets over C (one class per pixel,
    uniform; the targets of a softmax overlap loss), in the input's dtype."""
    n, c = shape[:2]
    labels = rng.integers(0, c, (n,) + tuple(shape[2:]))
    target = (labels[:, None] == np.arange(c).reshape((1, c) + (1,) * (len(shape) - 2)))
    return Inputs((_normal(shape, dtype, rng), target.astype(dtype)))


def triplet_inputs(shape, dtype, rng) -> Inputs:
    """(N, D) anchor, positive and negative embeddings, standard normal."""
    return Inputs(tuple(_normal(shape, dtype, rng) for _ in range(3)))


def pair_inputs(target_kind: str, per_row: bool = True) -> Callable:
    """Inputs x1, x2 (standard normal) and a target in the input's dtype, one entry per
    row (``per_row``: contrastive, cosine_embedding) or per element (margin_ranking):
    "binary" {0, 1} (contrastive: 1 = similar) or "sign" {-1, +1}."""
    def make(shape, dtype, rng) -> Inputs:
        x1, x2 = _normal(shape, dtype, rng), _normal(shape, dtype, rng)
        target_shape = shape[:1] if per_row else shape
        return Inputs((x1, x2, _draw_target(target_kind, target_shape, dtype, rng)))
    make.__name__ = f"pair_inputs_{target_kind}{'' if per_row else '_elementwise'}"
    return make


def linear_inputs(shape, dtype, rng) -> Inputs:
    """linear_cross_entropy's hidden (N, D) standard normal, weight (V, D) normal with
    variance 1/D (so the logits are about standard normal) and (N,) class indices; the
    shape is (N, D, V)."""
    n, d, v = shape
    weight = _normal((v, d), dtype, rng)
    weight *= weight.dtype.type(1.0 / math.sqrt(max(d, 1)))
    return Inputs((_normal((n, d), dtype, rng), weight, rng.integers(0, v, n, dtype=np.int64)))


# --------------------------------------------------------------------------- the entries

FLOORS = ("add", "copy", "io", "gemm")


@dataclasses.dataclass(frozen=True)
class LossEntry:
    """One loss of the report: everything else (rows, checks, suite) is derived from it.

    layout (how a size becomes a shape, ``shape_for``): "flat" (element-wise; an element
    count becomes a 1-D array), "classes" ((N, C) logits with class indices), "rows" ((N, D)
    rows of ``width`` columns: gaussian_kl, the pair and triplet losses), "image" ((N, C, H,
    W), C = ``width``: the overlap losses) or "linear" ((N, D, V): linear_cross_entropy's
    hidden (N, D), weight (V, D) and targets (N,)).
    n_grads: how many of the leading positional arrays are differentiated (the result's
    gradient is a tuple when more than one). grad_slots: the length of that tuple and of
    ``out=`` when it has trailing None entries (linear_cross_entropy's grad_bias without a
    bias); None: n_grads.
    function: the fastloss function (and fastloss.reference function) when it is not
    ``name`` (an entry that runs a function with other options, such as dice_softmax).
    floor: the memory (or compute) floor the loss is measured against, see run.py: "add",
    "copy", "io" or "gemm"; None: "add" for element-wise losses, else "copy"."""

    name: str
    layout: str
    make_inputs: Callable[[tuple, Any, np.random.Generator], Inputs]
    params: Mapping[str, Any]                 # keyword arguments given to every implementation
    peers: Mapping[str, Builder]              # "torch", "torch.compile", "jax", "sklearn", ...
    kernel: Optional[Callable] = None         # None: fastloss.<function>
    reference: Optional[Callable] = None      # None: fastloss.reference.<function>
    n_grads: int = 1
    floor: Optional[str] = None   # "add", "copy", "io" or "gemm"; see above
    function: Optional[str] = None            # None: name
    width: Optional[int] = None               # rows: D (64); image: C (4)
    grad_slots: Optional[int] = None          # None: n_grads
    # the named sizes (tiny, cache, large) count at most this many elements for this loss:
    # a NumPy reference too slow for --quick at the large size (explicit sizes are not capped)
    max_named: Optional[int] = None
    # packages fastloss's own function needs (an optional extra): without them the row is
    # skipped with a note, as a missing peer is: ((module, how to install it), ...)
    needs: Tuple[Tuple[str, str], ...] = ()

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r}: choose from {', '.join(LAYOUTS)}")
        if self.floor is None:
            object.__setattr__(self, "floor", "add" if self.elementwise else "copy")
        if self.floor not in FLOORS:
            raise ValueError(f"floor {self.floor!r}: choose from {', '.join(FLOORS)}")

    @property
    def elementwise(self) -> bool:
        """An element-wise loss (every element has its own term): the a+b floor applies."""
        return self.layout != "classes"

    @property
    def function_name(self) -> str:
        return self.function or self.name

    def resolve_kernel(self) -> Optional[Callable]:
        if self.kernel is not None:
            return self.kernel
        import fastloss
        return getattr(fastloss, self.function_name, None)

    def resolve_reference(self) -> Optional[Callable]:
        if self.reference is not None:
            return self.reference
        from fastloss import reference
        return getattr(reference, self.function_name, None)

    def takes_shape(self, shape: tuple) -> bool:
        """Whether an explicit shape has this layout's rank (any for "flat")."""
        return self.layout == "flat" or len(shape) == LAYOUT_RANKS[self.layout]

    def shape_for(self, size: "Size") -> tuple:
        if size.shape is not None:
            if not self.takes_shape(size.shape):
                rank = LAYOUT_RANKS[self.layout]
                form = {2: "NxC" if self.layout == "classes" else "NxD", 3: "NxDxV",
                        4: "NxCxHxW"}[rank]
                raise ValueError(f"{self.name} needs a {rank}-D size {form}, got "
                                 f"{size.label!r}")
            return size.shape
        n = size.n_elements
        if size.named and self.max_named is not None:
            n = min(n, self.max_named)
        return layout_shape(self.layout, n, self.width)


def layout_shape(layout: str, n: int, width: Optional[int] = None) -> tuple:
    """The shape that an element count becomes in a layout (the rules of the report's
    header, report._SHAPE_RULES):

    * flat: (n,);
    * classes: C = 1000 from 64000 elements on, else max(2, isqrt(n)); N = max(1, n // C);
    * rows: D = min(width, n) (width 64 unless the entry says), N = max(1, n // D);
    * image: C = width (4 unless the entry says), square planes of side H = W, the largest
      power of two with C H W <= n, at most 256; N = max(1, n // (C H W));
    * linear (n counts the (N, V) logits, which linear_cross_entropy never holds):
      V = min(32768, max(2, n // 64)), N = max(1, n // V), D = V // 128 clamped to
      [16, 256].
    """
    if layout == "flat":
        return (n,)
    if layout == "rows":
        columns = min(width or 64, n)
        return (max(1, n // columns), columns)
    if layout == "image":
        channels = width or 4
        side = 1 << (math.isqrt(max(1, n // channels)).bit_length() - 1)
        side = min(256, side)
        return (max(1, n // (channels * side * side)), channels, side, side)
    if layout == "linear":
        classes = min(32768, max(2, n // 64))
        rows = max(1, n // classes)
        return (rows, min(256, max(16, classes // 128)), classes)
    classes = 1000 if n >= 64000 else max(2, math.isqrt(n))
    return (max(1, n // classes), classes)


@dataclasses.dataclass
class Case:
    """One loss at one dtype and shape, with its inputs and the reference's result."""

    entry: LossEntry
    dtype: np.dtype
    shape: tuple
    size_label: str
    inputs: Inputs
    expected: Optional[Tuple[float, Any]] = None   # the reference's (loss, grad)
    expected_grad_max: Optional[Tuple[float, ...]] = None   # max |grad| per gradient

    @property
    def args(self) -> Tuple[np.ndarray, ...]:
        return self.inputs.arrays

    @property
    def x(self) -> np.ndarray:
        return self.inputs.x

    @property
    def target(self) -> Optional[np.ndarray]:
        return self.inputs.target

    @property
    def differentiated(self) -> Tuple[np.ndarray, ...]:
        return self.args[:self.entry.n_grads]

    @property
    def params(self) -> Mapping[str, Any]:
        return self.entry.params

    @property
    def bytes_moved(self) -> int:
        """Inputs read (targets included) + gradients written."""
        return sum(a.nbytes for a in self.args) + sum(a.nbytes for a in self.differentiated)

    @property
    def n_elements(self) -> int:
        """What a size counts: the elements of the (first) differentiated input, or for
        linear_cross_entropy those of the (N, V) logits that it never holds."""
        if self.entry.layout == "linear":
            return self.shape[0] * self.shape[2]
        return int(self.x.size)

    @property
    def n_mean(self) -> int:
        """The denominator of "mean": rows for class losses and gaussian_kl, elements
        otherwise."""
        return self.x.size if self.entry.layout == "flat" else self.x.shape[0]


def make_case(entry: LossEntry, size: "Size", dtype, seed: int = 0,
              inputs: Optional[Inputs] = None) -> Case:
    dtype = np.dtype(dtype)
    shape = entry.shape_for(size)
    if inputs is None:
        inputs = entry.make_inputs(shape, dtype, np.random.default_rng(seed))
    return Case(entry, dtype, shape, size.label, inputs)


# --------------------------------------------------------------------------- checking

def _tolerances(dtype) -> Tuple[float, float]:
    """(rtol, atol relative to the largest gradient entry) for comparing with the reference."""
    return (1e-4, 1e-5) if np.dtype(dtype) == np.float32 else (1e-9, 1e-12)


def _gradients(grad) -> Tuple[np.ndarray, ...]:
    """A gradient, or a tuple of them (several differentiated inputs), as NumPy arrays;
    None entries are left out (linear_cross_entropy's grad_bias without a bias, which a
    peer differentiating only the arrays it is given does not return)."""
    if isinstance(grad, (tuple, list)):
        return tuple(np.asarray(g) for g in grad if g is not None)
    return (np.asarray(grad),)


_CHECK_CHUNK = 1 << 18  # elements compared at a time: the temporaries stay in cache


def check_result(case: Case, result) -> Optional[str]:
    """None when ``result`` = (loss, grad) matches the reference's ``case.expected``, else
    what is wrong: |grad - expected| <= atol + rtol |expected| everywhere (nan never
    matches), with atol scaled by the largest reference gradient entry. ``grad`` is a
    tuple of gradients for a loss of several differentiated inputs."""
    expected_loss, expected_grad = case.expected
    expected_grads = _gradients(expected_grad)
    try:
        loss, grad = result
        loss = float(loss)
        grads = _gradients(grad)
    except Exception as exc:  # noqa: BLE001 - any malformed result is a failure
        return f"result is not (loss, grad): {type(exc).__name__}: {exc}"
    rtol, atol_scale = _tolerances(case.dtype)
    if len(grads) != len(expected_grads):
        return f"{len(grads)} gradient(s), expected {len(expected_grads)}"
    if not math.isclose(loss, expected_loss, rel_tol=rtol, abs_tol=0.0):
        return f"loss {loss!r}, reference {expected_loss!r} (rtol {rtol:g})"
    if case.expected_grad_max is None:
        case.expected_grad_max = tuple(float(np.max(np.abs(e))) if e.size else 0.0
                                       for e in expected_grads)
    for k, (grad, expected, largest) in enumerate(zip(grads, expected_grads,
                                                      case.expected_grad_max)):
        which = "gradient" if len(grads) == 1 else f"gradient {k}"
        if grad.shape != expected.shape:
            return f"{which} shape {grad.shape}, expected {expected.shape}"
        problem = _compare(grad, expected, rtol, atol_scale * largest)
        if problem is not None:
            return f"{which} {problem}"
    return None


def _compare(grad: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> Optional[str]:
    flat_grad, flat_expected = grad.reshape(-1), expected.reshape(-1)

    def mismatches(start):
        # in the arrays' own dtype: its rounding is far below the tolerances
        g = flat_grad[start:start + _CHECK_CHUNK]
        e = flat_expected[start:start + _CHECK_CHUNK]
        return ~(np.abs(g - e) <= atol + rtol * np.abs(e))

    for start in range(0, flat_grad.size, _CHECK_CHUNK):
        bad = mismatches(start)
        if bad.any():
            n_bad = int(bad.sum()) + sum(int(mismatches(rest).sum()) for rest in
                                         range(start + _CHECK_CHUNK, flat_grad.size, _CHECK_CHUNK))
            first = start + int(np.flatnonzero(bad)[0])
            index = tuple(int(i) for i in np.unravel_index(first, grad.shape))
            return (f"differs at {n_bad} of {grad.size} entries; first at {index}: "
                    f"{flat_grad[first]!r}, reference {flat_expected[first]!r} "
                    f"(rtol {rtol:g}, atol {atol:.3g})")
    return None
