r"""fastloss over Dask arrays chunked along the sample axis: exact losses on a Dask cluster.

``fastloss.dask.<name>(input, target, ...)`` takes the arguments of ``fastloss.<name>``, with
Dask arrays (or NumPy arrays) chunked along axis 0, the sample axis, and returns, lazily,
``LossResult(loss, grad)``:

- ``loss``: a 0-d Dask array of float64 for ``"sum"`` and ``"mean"`` (and ``"batchmean"``
  where the loss has it), a Dask array of per-sample losses in the input's dtype for
  ``"none"`` (shape (N, d1, ..., dK) for the class-axis losses -- the logits' shape without
  the class axis --, the input's shape for the element-wise ones), chunked like the input
  along axis 0;
- ``grad``: a Dask array of the input's shape, dtype and chunks (None with
  ``compute_grad=False``);
- with ``compute_hess=True`` (the losses whose single-machine function takes it),
  ``LossGradHess(loss, grad, hess)``, ``hess`` like ``grad``.

The class-axis losses take K-dim logits (N, C, d1, ..., dK) chunked along N only, and
``sample_weight`` (N,) or of the target's sample shape, chunked with the input.
``gaussian_kl(mean, log_var)`` takes (N, D) rows; both are differentiated, so its gradient
(and hessian) is a pair of Dask arrays with the mean's chunks.

How it is computed
------------------
Every chunk runs fastloss's own kernel on its rows with ``reduction="sum"`` (``"none"`` for
``"none"``), which returns the chunk's loss sum as a double and the unscaled gradient.

- ``"sum"`` and ``"mean"`` add the per-chunk double sums in chunk order, through a tree of
  fixed shape (``SPLIT_EVERY`` children per node, each node adding its children left to
  right in double): the order depends only on the chunking, never on the workers, threads
  or scheduler, so the result is bitwise the same for any cluster. (Dask's own ``sum`` is
  not used: its partial sums go through ``np.sum``'s pairwise order over whatever the tree
  groups, which we do not want to depend on.)
- The ``"mean"`` denominator D is formed over the whole array first (a table row says how:
  the element count, the number of samples, the count of kept class-index targets or the
  sum of their sample weight times class weight); where it depends on the data (ignored
  targets, class or sample weights) it is a first, cheap pass over the targets (and sample
  weights) only, summed in chunk order like the loss. Each chunk's gradient (and hessian)
  is then multiplied by the global ``1 / D`` in the input's dtype, and the loss is
  ``total / D``. As in the single-machine call, D = 0 gives a nan loss, nan gradient rows
  for the kept samples and zero rows for the ignored ones.
- Per-chunk kernels run with ``n_threads=1`` by default: Dask owns the parallelism (one
  task per worker thread). Pass ``n_threads`` to change it (None: OpenMP's default).

Accuracy. Each chunk's per-sample losses and "sum"/"none" gradient are, bit for bit, those of
``fastloss.<name>`` called on that chunk's rows. Against one call on the whole computed array:
the ``"sum"``/``"mean"`` loss differs only in the order its double partial sums are added
(double rounding); per-sample values agree to the rounding of the input's dtype (an
element's last bit can depend on where it sits in the array a SIMD kernel is given: near the
end of a call it may take the scalar tail path, and chunking moves those ends); the
``"mean"`` gradient is the rounded sum gradient multiplied by 1 / D, where the single-machine
kernel folds 1 / D into its terms before it rounds: the two agree to the rounding of the
input's dtype relative to those terms.

Targets and per-sample weights that are chunked differently are rechunked to the input's
chunks along axis 0. Arrays that do not vary along the sample axis (class weights, a weight
along the last axis, pinball's quantile levels, a scalar weight) go whole to every chunk.
Argument errors that do not need the data (dtypes, shapes, options, weight lengths) raise
when the function is called, from the same checks as the single-machine call; errors that
depend on values (a class index out of range) raise at compute time, naming the chunk.

The table
---------
``LOSSES`` has one row (``DaskLoss``) per loss: its fastloss name, its layout (element-wise
or class-axis), which arguments are per-sample arrays chunked with the input, which are
broadcast weights or whole per-class arrays, and how each averaging reduction forms its
denominator. A row whose fastloss function does not exist (in this build) is not exported.
Adding a loss is adding a row.
"""

from __future__ import annotations

import inspect
import itertools
import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np

import dask.array as da  # the Dask package (absolute imports: this module is fastloss.dask)
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

import fastloss
from fastloss import LossGradHess, LossResult

ELEMENTWISE = "elementwise"   # any shape; a loss per element; "none" has the input's shape
CLASS_AXIS = "class_axis"     # (N, C, ...) logits; a loss per sample; "none" drops axis 1
ROWS = "rows"                 # (N, D) rows (gaussian_kl); a loss per row; "none" is (N,)

# children per node of the tree that adds the per-chunk double sums in chunk order
SPLIT_EVERY = 32

# arguments of the single-machine functions that have no meaning here (Dask arrays are
# immutable: no out=, hess_out=) or that this adapter does not support (lse_out)
_NOT_SUPPORTED = frozenset({"out", "hess_out", "lse_out"})


# ================================================================ "mean" denominators

@dataclass(frozen=True)
class ElementCount:
    """The number of elements of the input (element-wise losses' "mean")."""

    def form(self, call: "_Call") -> Union[float, "_DataDenominator"]:
        return float(math.prod(call.input.shape))


@dataclass(frozen=True)
class SampleCount:
    """The number of samples, the input's length along axis 0 (kl_div's "batchmean", the
    "mean" of multi_margin and kl_divergence_with_logits)."""

    def form(self, call: "_Call") -> Union[float, "_DataDenominator"]:
        return float(call.input.shape[0])


@dataclass(frozen=True)
class KeptTargets:
    """The class-axis "mean" (API.md, "Class-axis losses"): over the positions (samples of
    (N, C) logits; (sample, d1, ..., dK) of K-dim ones) whose class-index target is not
    ``ignore_index``, the sum of s_i w_{y_i}: s the ``sample_weight`` (1 without one), w the
    class weight (the argument named ``class_weight``; 1 without one). Probability targets (a
    target with the input's number of axes): the sum of s_i over every position (their
    number without a sample weight), as PyTorch."""

    class_weight: Optional[str] = None

    def form(self, call: "_Call") -> Union[float, "_DataDenominator"]:
        target = call.sample_arrays["target"]
        x = call.input
        probabilities = target.ndim == x.ndim
        sample_weight = "sample_weight" if "sample_weight" in call.sample_arrays else None
        if probabilities and sample_weight is None:
            return float(math.prod(x.shape[:1] + x.shape[2:]))
        weight_name = (self.class_weight if not probabilities
                       and self.class_weight in call.whole_arrays else None)
        part = _KeptTargetsPart(int(call.arguments.get("ignore_index", -100)), int(x.shape[1]),
                                np.dtype(x.dtype), weight_name is not None,
                                sample_weight is not None, probabilities)
        samples = ("target",) + ((sample_weight,) if sample_weight else ())
        return _DataDenominator(part, samples, weight_name)


@dataclass(frozen=True)
class _KeptTargetsPart:
    """One chunk's share of KeptTargets' denominator, in double; also says which of the
    chunk's rows are ignored (they keep a zero gradient when the denominator is 0).
    Called with the chunk's target, then its sample weights (if sample_weighted), then the
    whole class weight (if weighted)."""

    ignore_index: int
    n_classes: int
    dtype: np.dtype
    weighted: bool
    sample_weighted: bool = False
    probabilities: bool = False

    def __call__(self, target: np.ndarray, *rest: np.ndarray) -> float:
        target = np.asarray(target)
        rest = list(rest)
        sample_weight = np.asarray(rest.pop(0)) if self.sample_weighted else None
        class_weight = np.asarray(rest.pop(0)) if self.weighted else None
        if self.probabilities:   # every position counts, with its sample weight
            positions = target.shape[:1] + target.shape[2:]
            s = sample_weight.astype(self.dtype, copy=False).astype(np.float64)
            return float(np.sum(np.broadcast_to(
                s.reshape(s.shape + (1,) * (len(positions) - s.ndim)), positions)))
        # out-of-range indices are left out here; the chunk's kernel call reports them
        kept = (target != self.ignore_index) & (target >= 0) & (target < self.n_classes)
        if not self.weighted and not self.sample_weighted:
            return float(np.count_nonzero(kept))
        # the single-machine call converts the weights to the input's dtype first and
        # multiplies them in double
        factor = np.ones(target.shape, np.float64)
        if self.weighted:
            w = class_weight.astype(self.dtype, copy=False).astype(np.float64)
            factor[kept] = w[target[kept]]
        if self.sample_weighted:
            s = sample_weight.astype(self.dtype, copy=False).astype(np.float64)
            factor = factor * s.reshape(s.shape + (1,) * (target.ndim - s.ndim))
        return float(np.sum(factor[kept], dtype=np.float64))

    def ignored_rows(self, target: np.ndarray) -> np.ndarray:
        target = np.asarray(target)
        if self.probabilities:
            return np.zeros(target.shape[:1] + target.shape[2:], bool)
        return target == self.ignore_index


@dataclass(frozen=True)
class _DataDenominator:
    """A denominator formed from the data: `part` per chunk of the arguments `samples` (in
    order), with the whole array `whole` (or None) as its last argument."""

    part: Callable
    samples: Tuple[str, ...]
    whole: Optional[str]


# ============================================================================ the table

@dataclass(frozen=True)
class DaskLoss:
    """One loss as fastloss.dask runs it.

    name           the fastloss function (fastloss.<name>) and the exported name
    layout         ELEMENTWISE, CLASS_AXIS or ROWS
    sample_args    array arguments with one entry per sample: chunked with the input
    differentiated the sample arguments that are differentiated too (gaussian_kl's log_var):
                   the gradient (and hessian) is then a tuple, the input's first
    broadcast_args arrays broadcastable to the input (element-wise weights, quantile levels):
                   chunked with the input where they vary along the sample axis (they have
                   the input's number of axes and its length N > 1 on axis 0), else whole
    whole_args     per-class arrays (C,) passed whole to every chunk (a scalar value passes
                   as an ordinary option)
    denominators   reduction -> how its denominator is formed ("sum" and "none" have none)
    """

    name: str
    layout: str
    sample_args: Tuple[str, ...] = ("target",)
    differentiated: Tuple[str, ...] = ()
    broadcast_args: Tuple[str, ...] = ()
    whole_args: Tuple[str, ...] = ()
    denominators: Mapping[str, Any] = field(default_factory=lambda: {"mean": ElementCount()})


_WEIGHTED = ("weight",)

LOSSES: Tuple[DaskLoss, ...] = (
    # class-axis losses: (N, C, d1, ..., dK) logits, targets (N, d1, ..., dK) class indices
    # or probabilities of the logits' shape, sample weights (N,) or the target's sample shape
    DaskLoss("softmax_cross_entropy", CLASS_AXIS, sample_args=("target", "sample_weight"),
             whole_args=("weight",), denominators={"mean": KeptTargets(class_weight="weight")}),
    DaskLoss("softmax_focal", CLASS_AXIS, sample_args=("target", "sample_weight"),
             whole_args=("alpha",), denominators={"mean": KeptTargets()}),
    DaskLoss("multi_margin", CLASS_AXIS, whole_args=("weight",),
             denominators={"mean": SampleCount()}),
    DaskLoss("kl_divergence_with_logits", CLASS_AXIS, sample_args=("target_logits",),
             denominators={"mean": SampleCount()}),
    # the VAE's KL term: (N, D) means and log-variances, both differentiated; "mean" over rows
    DaskLoss("gaussian_kl", ROWS, sample_args=("log_var",), differentiated=("log_var",),
             denominators={"mean": SampleCount()}),
    # element-wise losses: "mean" divides by the element count, weighted or not
    DaskLoss("binary_cross_entropy_with_logits", ELEMENTWISE,
             broadcast_args=("weight", "pos_weight")),
    DaskLoss("huber", ELEMENTWISE, broadcast_args=_WEIGHTED),
    DaskLoss("smooth_l1", ELEMENTWISE, broadcast_args=_WEIGHTED),
    DaskLoss("sigmoid_focal", ELEMENTWISE, broadcast_args=_WEIGHTED),
    DaskLoss("mse", ELEMENTWISE, broadcast_args=_WEIGHTED),
    DaskLoss("mae", ELEMENTWISE, broadcast_args=_WEIGHTED),
    DaskLoss("pinball", ELEMENTWISE, broadcast_args=("weight", "quantile")),
    DaskLoss("log_cosh", ELEMENTWISE, broadcast_args=_WEIGHTED),
    DaskLoss("poisson_nll", ELEMENTWISE, broadcast_args=_WEIGHTED),
    DaskLoss("tweedie", ELEMENTWISE, broadcast_args=_WEIGHTED),
    DaskLoss("hinge", ELEMENTWISE, broadcast_args=_WEIGHTED),
    DaskLoss("squared_hinge", ELEMENTWISE, broadcast_args=_WEIGHTED),
    DaskLoss("soft_margin", ELEMENTWISE, broadcast_args=_WEIGHTED),
    DaskLoss("binary_cross_entropy", ELEMENTWISE, broadcast_args=_WEIGHTED),
    DaskLoss("kl_div", ELEMENTWISE, broadcast_args=_WEIGHTED,
             denominators={"mean": ElementCount(), "batchmean": SampleCount()}),
)


# ====================================================================== the chunk tasks

@dataclass(frozen=True)
class _ChunkKernel:
    """The task of one chunk: fastloss.<name> on its rows. Returns (loss sum as a float,
    gradient or None, per-sample losses or None, hessian or None), the gradient and hessian
    scaled by 1 / denominator for the averaging reductions."""

    name: str
    array_names: Tuple[str, ...]   # the keyword names of the array arguments passed
    options: Tuple[Tuple[str, Any], ...]
    kernel_reduction: str          # "sum" or "none"
    compute_grad: bool
    compute_hess: bool
    n_threads: Optional[int]
    averaged: bool                 # the gradient is divided by a denominator
    denominator: Optional[float]   # known before the data; None: passed as the last value
    ignored_rows: Optional[Callable]  # sample-argument rows that keep a zero gradient
    rows: Tuple[int, int]          # the chunk's first and past-the-last sample

    def __call__(self, x, *values):
        values = list(values)
        denominator = self.denominator
        if self.averaged and denominator is None:  # formed from the data: the last value
            denominator = values.pop()
        arrays = dict(zip(self.array_names, values))
        hess_request = {"compute_hess": True} if self.compute_hess else {}
        try:
            result = getattr(fastloss, self.name)(
                x, **arrays, **dict(self.options), reduction=self.kernel_reduction,
                compute_grad=self.compute_grad, n_threads=self.n_threads, **hess_request)
        except (ValueError, TypeError) as error:
            raise type(error)(f"fastloss.dask.{self.name}, chunk of samples "
                              f"{self.rows[0]}:{self.rows[1]}: {error}") from error
        grad = result.grad
        hess = result.hess if self.compute_hess else None
        if self.averaged and grad is not None:
            for array in (grad if isinstance(grad, tuple) else (grad,)) + (
                    () if hess is None else hess if isinstance(hess, tuple) else (hess,)):
                if array.size:
                    _scale_gradient(array, denominator, self.ignored_rows, arrays)
        if self.kernel_reduction == "none":
            return 0.0, grad, result.loss, hess
        return float(result.loss), grad, None, hess


def _scale_gradient(grad: np.ndarray, denominator: float, ignored_rows, arrays) -> None:
    """grad *= 1 / denominator in grad's dtype, in place. A zero denominator (every kept
    sample has weight 0) gives nan rows, except the ignored rows, which stay zero: the
    single-machine kernels' result with grad_scale = nan."""
    if denominator != 0:
        np.multiply(grad, grad.dtype.type(1.0 / denominator), out=grad)
        return
    if ignored_rows is None:
        grad[...] = np.nan
        return
    # the class axis is axis 1: a sample's mask spreads along it
    kept = ~np.expand_dims(ignored_rows(arrays["target"]), 1)
    np.copyto(grad, np.nan, where=kept)


def _ordered_sum(*parts) -> float:
    """Adds the parts left to right in double: the order is the chunk order."""
    total = 0.0
    for part in parts:
        total += part
    return total


def _averaged_loss(total: float, denominator: Optional[float]) -> np.float64:
    if denominator is None:
        return np.float64(total)
    return np.float64(total / denominator if denominator != 0 else math.nan)


def _add_ordered_tree(dsk: dict, name: str, leaves: list) -> tuple:
    """Tasks that add the leaves' values (floats) in order through a tree with SPLIT_EVERY
    children per node; returns the root key. The shape depends only on len(leaves)."""
    level = 0
    keys = leaves
    while True:
        groups = [keys[i:i + SPLIT_EVERY] for i in range(0, len(keys), SPLIT_EVERY)] or [[]]
        keys = []
        for index, group in enumerate(groups):
            key = (f"{name}-level{level}", index)
            dsk[key] = (_ordered_sum,) + tuple(group)
            keys.append(key)
        level += 1
        if len(keys) == 1:
            return keys[0]


# ======================================================================= the call

@dataclass
class _Call:
    """One call's arguments, sorted: the input, its per-sample arrays (Dask, chunked with
    the input), whole arrays (Dask, one chunk), and the other options."""

    loss: DaskLoss
    input_name: str
    input: Any
    arguments: Dict[str, Any]
    sample_arrays: Dict[str, Any] = field(default_factory=dict)
    whole_arrays: Dict[str, Any] = field(default_factory=dict)
    options: Dict[str, Any] = field(default_factory=dict)


def _sample_chunked_input(x, name: str, loss: str):
    if not isinstance(x, da.Array):
        array = np.asarray(x)
        x = da.from_array(array, chunks=array.shape if array.ndim else ())
    if x.ndim == 0:
        raise ValueError(f"fastloss.dask.{loss}: {name} must have a sample axis (axis 0), "
                         f"got a 0-d array")
    if any(math.isnan(size) for sizes in x.chunks for size in sizes):
        raise ValueError(f"fastloss.dask.{loss}: {name} has unknown chunk sizes; call "
                         f"{name}.compute_chunk_sizes() first")
    split = [axis for axis in range(1, x.ndim) if len(x.chunks[axis]) > 1]
    if split:
        raise ValueError(
            f"fastloss.dask.{loss}: {name} must be chunked along the sample axis (axis 0) only, "
            f"got chunks {x.chunks} (split along axis {split[0]}); rechunk with "
            f"{name}.rechunk({{{', '.join(f'{axis}: -1' for axis in split)}}})")
    return x


def _rows_like(array, x, name: str, loss: str):
    """`array` (one entry per sample) as a Dask array chunked like x along axis 0."""
    shape = np.shape(array)
    if len(shape) == 0 or shape[0] != x.shape[0]:
        raise ValueError(f"fastloss.dask.{loss}: {name} must have the input's {x.shape[0]} "
                         f"samples along axis 0, got shape {shape}")
    chunks = (x.chunks[0],) + tuple((size,) for size in shape[1:])
    if not isinstance(array, da.Array):
        return da.from_array(np.asarray(array), chunks=chunks)
    return array.rechunk(chunks) if array.chunks != chunks else array


def _whole(array):
    if not isinstance(array, da.Array):
        array = np.asarray(array)
        return da.from_array(array, chunks=array.shape if array.ndim else ())
    if array.numblocks != (1,) * array.ndim:
        array = array.rechunk(array.shape)
    return array


def _sort_arguments(loss: DaskLoss, input_name: str, arguments: Dict[str, Any]) -> _Call:
    x = _sample_chunked_input(arguments[input_name], input_name, loss.name)
    call = _Call(loss, input_name, x, arguments)
    controls = {input_name, "reduction", "compute_grad", "compute_hess", "n_threads"}
    for name, value in arguments.items():
        if name in controls:
            continue
        if value is None:
            call.options[name] = None
        elif name in loss.sample_args:
            call.sample_arrays[name] = _rows_like(value, x, name, loss.name)
        elif name in loss.broadcast_args and (isinstance(value, da.Array) or np.ndim(value) > 0):
            per_sample = np.ndim(value) == x.ndim and np.shape(value)[0] == x.shape[0] > 1
            if per_sample:
                call.sample_arrays[name] = _rows_like(value, x, name, loss.name)
            else:
                call.whole_arrays[name] = _whole(value)
        elif name in loss.whole_args and (isinstance(value, da.Array) or np.ndim(value) > 0):
            call.whole_arrays[name] = _whole(value)
        elif isinstance(value, da.Array) or np.ndim(value) > 0:
            raise TypeError(f"fastloss.dask.{loss.name} does not support an array for "
                            f"{name!r} (only scalar values)")
        else:
            call.options[name] = value
    return call


def _check_like_single_machine(call: _Call, kernel: Callable, reduction, compute_grad,
                               n_threads, compute_hess=False) -> None:
    """The single-machine checks (dtypes, shapes, options, weight lengths, reduction), run
    on empty stand-ins of the chunks: nothing is computed."""
    x = call.input
    stand_ins = {}
    for name, array in call.sample_arrays.items():
        stand_ins[name] = np.zeros((0,) + array.shape[1:], dtype=array.dtype)
    for name, array in call.whole_arrays.items():
        original = call.arguments[name]
        stand_ins[name] = original if isinstance(original, np.ndarray) or not isinstance(
            original, da.Array) else np.ones(array.shape, dtype=array.dtype)
    try:
        hess_request = {} if compute_hess is False else {"compute_hess": compute_hess}
        kernel(np.zeros((0,) + x.shape[1:], dtype=x.dtype), **stand_ins, **call.options,
               reduction=reduction, compute_grad=compute_grad, n_threads=n_threads,
               **hess_request)
    except (ValueError, TypeError) as error:
        raise type(error)(f"fastloss.dask.{call.loss.name}: {error} (checked on empty "
                          f"stand-ins of the chunks: axis 0 shows as 0)") from error


def _dask_loss(loss: DaskLoss, kernel: Callable, input_name: str,
               arguments: Dict[str, Any]) -> LossResult:
    reduction = arguments["reduction"]
    compute_grad = arguments["compute_grad"]
    compute_hess = arguments.get("compute_hess", False)
    n_threads = arguments["n_threads"]
    call = _sort_arguments(loss, input_name, arguments)
    _check_like_single_machine(call, kernel, reduction, compute_grad, n_threads,
                               compute_hess)
    if reduction not in ("sum", "none") and reduction not in loss.denominators:
        raise ValueError(f"fastloss.dask.{loss.name} does not support reduction={reduction!r}")
    x = call.input
    n_chunks = len(x.chunks[0])
    averaged = reduction not in ("sum", "none")
    denominator = loss.denominators[reduction].form(call) if averaged else None
    data_denominator = denominator if isinstance(denominator, _DataDenominator) else None

    collections = [x, *call.sample_arrays.values(), *call.whole_arrays.values()]
    token = tokenize(loss.name, reduction, compute_grad, compute_hess, n_threads,
                     sorted(call.options.items()),
                     *[(name, array.name) for name, array in
                       itertools.chain(call.sample_arrays.items(), call.whole_arrays.items())],
                     x.name)
    x_keys = [(x.name, i) + (0,) * (x.ndim - 1) for i in range(n_chunks)]

    def chunk_key(array, i):
        return (array.name, i) + (0,) * (array.ndim - 1)

    def whole_key(array):
        return (array.name,) + (0,) * array.ndim

    # -------- the data-dependent denominator: a first pass over the targets
    denominator_array = None
    if data_denominator is not None:
        name = f"{loss.name}-denominator-{token}"
        dsk = {}
        samples = [call.sample_arrays[n] for n in data_denominator.samples]
        whole = call.whole_arrays.get(data_denominator.whole) if data_denominator.whole else None
        leaves = []
        for i in range(n_chunks):
            key = (f"{name}-part", i)
            dsk[key] = ((data_denominator.part, *[chunk_key(a, i) for a in samples])
                        + ((whole_key(whole),) if whole is not None else ()))
            leaves.append(key)
        root = _add_ordered_tree(dsk, name, leaves)
        dsk[(name,)] = (operator.pos, root)
        deps = samples + ([whole] if whole is not None else [])
        denominator_array = da.Array(HighLevelGraph.from_collections(name, dsk, deps), name,
                                     chunks=(), dtype=np.float64, meta=np.empty((), np.float64))
        collections.append(denominator_array)

    # -------- one kernel task per chunk
    kernel_name = f"{loss.name}-chunk-{token}"
    array_names = tuple(call.sample_arrays) + tuple(call.whole_arrays)
    ignored = data_denominator.part.ignored_rows if data_denominator is not None else None
    offsets = np.concatenate([[0], np.cumsum(x.chunks[0])]).astype(int)
    dsk = {}
    for i in range(n_chunks):
        task = _ChunkKernel(
            loss.name, array_names, tuple(sorted(call.options.items())),
            "none" if reduction == "none" else "sum", bool(compute_grad), bool(compute_hess),
            n_threads, averaged,
            None if data_denominator is not None else denominator, ignored,
            (int(offsets[i]), int(offsets[i + 1])))
        args = [x_keys[i]]
        args += [chunk_key(array, i) for array in call.sample_arrays.values()]
        args += [whole_key(array) for array in call.whole_arrays.values()]
        if denominator_array is not None:
            args.append((denominator_array.name,))
        dsk[(kernel_name, i)] = (task, *args)
    # the per-chunk results as a (never computed) 1-d collection: keys (kernel_name, i)
    chunk_results = da.Array(HighLevelGraph.from_collections(kernel_name, dsk, collections),
                             kernel_name, chunks=(x.chunks[0],), dtype=object,
                             meta=np.empty((0,), object))

    # -------- the outputs
    def like_input(what, index, part=None):
        """The chunks' result `index` (or entry `part` of that tuple) as a Dask array like x."""
        name = f"{loss.name}-{what}-{token}"
        dsk = {}
        for i in range(n_chunks):
            item = (operator.getitem, (kernel_name, i), index)
            dsk[(name, i) + (0,) * (x.ndim - 1)] = (
                item if part is None else (operator.getitem, item, part))
        return da.Array(HighLevelGraph.from_collections(name, dsk, [chunk_results]), name,
                        chunks=x.chunks, dtype=x.dtype, meta=np.empty((0,) * x.ndim, x.dtype))

    def per_input(what, index):
        if not loss.differentiated:
            return like_input(what, index)
        return tuple(like_input(f"{what}{part}", index, part)
                     for part in range(1 + len(loss.differentiated)))

    grad = per_input("grad", 1) if compute_grad else None
    hess = per_input("hess", 3) if compute_hess else None

    def result(loss_value):
        return LossGradHess(loss_value, grad, hess) if compute_hess else LossResult(
            loss_value, grad)

    loss_name = f"{loss.name}-loss-{token}"
    if reduction == "none":
        # per sample: the input's shape, without the class axis (axis 1) of class-axis losses
        per_sample_chunks = (x.chunks[:1] + x.chunks[2:] if loss.layout in (CLASS_AXIS, ROWS)
                             else x.chunks)
        dsk = {(loss_name, i) + (0,) * (len(per_sample_chunks) - 1):
               (operator.getitem, (kernel_name, i), 2) for i in range(n_chunks)}
        loss_value = da.Array(HighLevelGraph.from_collections(loss_name, dsk, [chunk_results]),
                              loss_name, chunks=per_sample_chunks, dtype=x.dtype,
                              meta=np.empty((0,) * len(per_sample_chunks), x.dtype))
        return result(loss_value)
    # each chunk's sum split off its result where it is (the tree must not move gradients)
    dsk = {(f"{loss_name}-part", i): (operator.getitem, (kernel_name, i), 0)
           for i in range(n_chunks)}
    root = _add_ordered_tree(dsk, f"{loss_name}-total",
                             [(f"{loss_name}-part", i) for i in range(n_chunks)])
    deps = [chunk_results]
    if denominator_array is not None:
        dsk[(loss_name,)] = (_averaged_loss, root, (denominator_array.name,))
        deps.append(denominator_array)
    else:
        dsk[(loss_name,)] = (_averaged_loss, root, denominator)
    loss_value = da.Array(HighLevelGraph.from_collections(loss_name, dsk, deps), loss_name,
                          chunks=(), dtype=np.float64, meta=np.empty((), np.float64))
    return result(loss_value)


# ==================================================================== the public names

def _make_function(loss: DaskLoss, kernel: Callable) -> Callable:
    signature = inspect.signature(kernel)
    parameters = []
    for parameter in signature.parameters.values():
        if parameter.name in _NOT_SUPPORTED:
            continue
        if parameter.name == "n_threads":
            parameter = parameter.replace(default=1)
        parameters.append(parameter)
    signature = signature.replace(parameters=parameters, return_annotation=LossResult)
    input_name = parameters[0].name

    def function(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return _dask_loss(loss, kernel, input_name, dict(bound.arguments))

    function.__name__ = function.__qualname__ = loss.name
    function.__module__ = __name__
    function.__signature__ = signature
    layout = {CLASS_AXIS: "(N, C) or (N, C, d1, ..., dK) logits, chunked along N",
              ROWS: "(N, D) rows, chunked along N"}.get(
                  loss.layout, "an input of any shape, chunked along axis 0")
    none_shape = {CLASS_AXIS: "(N, d1, ..., dK)", ROWS: "(N,)"}.get(loss.layout,
                                                                   "the input's shape")
    function.__doc__ = (
        f"``fastloss.{loss.name}`` over Dask arrays: {layout}.\n\n"
        f"Arguments, semantics and maths are those of ``fastloss.{loss.name}`` (see its "
        f"docstring), except:\n\n"
        f"- every array may be a Dask array; per-sample arrays ({', '.join(loss.sample_args)}"
        + (f", and {', '.join(loss.broadcast_args)} where they vary along axis 0"
           if loss.broadcast_args else "")
        + ") are rechunked to the input's chunks along axis 0"
        + (f"; {', '.join(loss.whole_args)} go whole to every chunk" if loss.whole_args else "")
        + ";\n"
        f"- ``n_threads`` is the thread count of each chunk's kernel call, 1 by default;\n"
        f"- there is no ``out``: returns ``LossResult(loss, grad)`` of Dask arrays, lazily: a "
        f"0-d float64 loss (per-sample losses of shape {none_shape} for \"none\") and the "
        f"gradient with the input's chunks"
        + (" (``LossGradHess(loss, grad, hess)`` with ``compute_hess=True``)"
           if "compute_hess" in signature.parameters else "") + ".\n\n"
        f"See the module docstring (fastloss.dask) for how the sums and the \"mean\" "
        f"denominator are combined across chunks, bitwise the same for any cluster.\n")
    return function


def _export() -> list:
    names = []
    for loss in LOSSES:
        kernel = getattr(fastloss, loss.name, None)
        if kernel is None:  # not in this build of fastloss (yet): not exported
            continue
        globals()[loss.name] = _make_function(loss, kernel)
        names.append(loss.name)
    return names


__all__ = ["LossResult", "LOSSES", "DaskLoss", "SPLIT_EVERY"] + _export()
