"""fastloss inside PyTorch: the fused kernels as drop-in loss functions and modules.

::

    import fastloss.torch as flt
    loss = flt.cross_entropy(logits, labels)             # torch.nn.functional's name and arguments
    criterion = flt.CrossEntropyLoss(label_smoothing=0.1) # torch.nn's name and constructor
    loss = flt.sigmoid_focal(logits, targets, gamma=2.0)  # fastloss's name where torch has none
    loss = flt.triplet_margin_loss(anchor, positive, negative)  # a gradient for each input

Every name is derived from one table, ``LOSSES``: one row per loss (the fastloss function, the
``torch.nn.functional`` and ``torch.nn`` names when torch has the loss, the arguments that are
tensors, how many inputs are differentiated, the shape of its per-sample losses). A row whose
fastloss function does not exist in
the installed fastloss is not exported; adding a loss to fastloss is adding its row here.

How a call runs
---------------
The forward pass calls the fastloss kernel once and gets the loss and its gradient with respect
to the input; the gradient is kept, and the backward pass returns it multiplied by
``grad_output`` (or as it is when ``grad_output`` is the usual 1, in eager mode). Tensors and
arrays share memory both ways (``tensor.detach().numpy()``, ``torch.from_numpy``): no copy of a
contiguous input, target or gradient. When no gradient is wanted (``torch.no_grad()``, or an
input that does not require grad) the kernel is asked for none. A reduced loss is a 0-d tensor
of the input's dtype made from NumPy's scalar array (``torch.from_numpy``, as the gradient is).
The plain ``cross_entropy`` call (class indices, no class or sample weight, no z-loss or cap)
calls the kernel's compiled fast path directly; every other call goes through
``fastloss.softmax_cross_entropy`` (same results, bit for bit).

The time of a call beyond the kernel's is PyTorch's autograd machinery and the adapter's
Python: ~40-60 microseconds per forward + backward when it runs in a loop of its own, but
several times that right after a kernel pass that streams more memory than the core's L2
cache (4096x100 float32 logits and gradient: 3.2 MB against 2 MB here), which evicts it all
(``scripts/adapter_cold_cache.py`` measures it: a native ``x.sum().backward()`` on 8x10 costs
about 7x more right after such a pass).

Each loss is registered as a ``torch.library.custom_op`` (``torch.ops.fastloss.<name>``) with
``register_fake`` and ``register_autograd``, so ``torch.compile(fullgraph=True)`` traces it
without a graph break. Outside ``torch.compile`` the same forward and backward run through a
``torch.autograd.Function``, whose call costs a fraction of the custom op's dispatcher path
(tens of microseconds per call in PyTorch 2.13): the results are the same either way.

The kernels use ``torch.get_num_threads()`` threads (``torch.set_num_threads`` governs them,
as it governs PyTorch's own CPU kernels); inputs too small to profit run on one thread.

What goes to PyTorch's own implementation
-----------------------------------------
The kernels take CPU tensors of dtype float32 or float64. Everything else is computed by PyTorch
(``torch.nn.functional``, or the same formula in torch operations for fastloss's own losses),
with PyTorch's results, errors and warnings:

- an input on another device (CUDA, MPS, meta), of another dtype (float16, bfloat16, ...) or
  layout (sparse), or a target / weight on another device;
- a floating target or weight whose dtype is not the input's (PyTorch decides what that means);
- an element-wise loss's target of another shape than the input (PyTorch broadcasts it) or
  of an integer dtype;
- a target or weight that requires grad while grad mode is on (the kernels differentiate with
  respect to the inputs only; ``linear_bias`` is differentiated);
- an argument the fastloss function does not (yet) take, given a value other than its default;
- a ``weight`` of another shape than the input for ``mse_loss``, ``l1_loss`` and
  ``huber_loss`` (PyTorch 2.13 raises its ``ValueError``; fastloss would broadcast it; a row's
  ``same_shape``).

fastloss's own element-wise losses (``sigmoid_focal``, ``pinball``, ``log_cosh``, ``tweedie``,
``hinge``, ``squared_hinge``; modules ``SigmoidFocalLoss``, ``PinballLoss``, ``LogCoshLoss``,
``TweedieLoss``, ``HingeLoss``, ``SquaredHingeLoss``) take fastloss's keyword options and
``weight``, with fastloss's semantics (the weighted ``"mean"`` divides by the number of
elements). ``pinball``'s ``quantile`` is a float or a tensor of levels along the last axis; a
float becomes a 0-d tensor of the input's dtype (in float32 the level is rounded to float32).

The names
---------
torch's: ``cross_entropy``, ``binary_cross_entropy_with_logits``, ``huber_loss``,
``smooth_l1_loss``, ``mse_loss``, ``l1_loss``, ``poisson_nll_loss``, ``soft_margin_loss``,
``binary_cross_entropy``, ``kl_div``, ``multi_margin_loss``, ``triplet_margin_loss``,
``cosine_embedding_loss``, ``margin_ranking_loss``, ``linear_cross_entropy`` (torch 2.13's
``(input, linear_weight, target, *, linear_bias=None, weight=None, ...)``, ``weight`` the class
weight), each with the ``torch.nn`` module of the same name (``LinearCrossEntropyLoss`` owns
its linear layer, as torch's). fastloss's own: ``sigmoid_focal``, ``softmax_focal``,
``pinball``, ``log_cosh``, ``tweedie``, ``hinge``, ``squared_hinge``,
``kl_divergence_with_logits``, ``gaussian_kl``, ``contrastive``, ``dice``, ``jaccard``,
``tversky``; modules ``SigmoidFocalLoss``, ``SoftmaxFocalLoss``, ``PinballLoss``,
``LogCoshLoss``, ``TweedieLoss``, ``HingeLoss``, ``SquaredHingeLoss``,
``KLDivergenceWithLogitsLoss``, ``GaussianKLLoss``, ``ContrastiveLoss``, ``DiceLoss``,
``JaccardLoss``, ``TverskyLoss``, whose constructors take the function's keyword options.

``cross_entropy`` (and ``linear_cross_entropy``) also take fastloss's class-axis options as
keyword-only arguments after torch's own: ``sample_weight`` (``cross_entropy`` only),
``z_loss`` and ``logit_softcap`` (fastloss.softmax_cross_entropy's semantics). Without them the
signature and the semantics are torch's.

The penalties ``l1_penalty`` / ``l2_penalty`` are not here: they are not losses of a prediction.
In PyTorch a penalty on parameters is the optimizer's ``weight_decay`` (no autograd at all), or
``strength * w.square().sum()`` whose two light passes autograd already fuses into the
parameter's ``.grad``; fastloss's gain there, ``accumulate=True`` adding the penalty's gradient
into an existing gradient buffer in the same pass, is what autograd does not let a function
do (it owns ``.grad`` and its accumulation).

Several differentiated inputs
-----------------------------
``triplet_margin_loss`` (3), ``cosine_embedding_loss``, ``margin_ranking_loss``,
``contrastive``, ``gaussian_kl`` (2) and ``linear_cross_entropy`` (``input``, ``linear_weight``
and ``linear_bias``) get every gradient from the one kernel pass (fastloss returns them as a
tuple in argument order); the custom op returns the loss and one gradient per differentiated
input, and each input that requires grad gets its own. The kernel computes them all when any
is wanted.

``reduction="none"`` of ``dice``, ``jaccard``, ``tversky`` and ``linear_cross_entropy`` is
computed by PyTorch (the torch formula): their per-sample losses share inputs (the softmax over
the classes, ``batch=True``, the linear weight), so the kernel's gradient of their sum cannot
be rescaled by a grad_output that differs between samples. ``"mean"`` and ``"sum"`` run the
kernel.

Double backward (``create_graph=True`` through a fastloss loss) recomputes that loss with
PyTorch's implementation inside the backward pass, so second derivatives are PyTorch's; the
first derivative is still fastloss's. ``torch.compile`` does not trace double backward.

Inputs with more than two dimensions (N, C, d1, ..., dK) of ``cross_entropy`` and
``softmax_focal`` go to the kernel as they are (it takes K-dimensional inputs: no transpose, no
copy; ``sample_weight`` of shape (N,) or (N, d1, ..., dK)); a 1-D unbatched input (C,) becomes
(1, C) (a view). ``multi_margin_loss`` takes (N, C) and (C,) as torch does. Unbatched (D,)
inputs of the pair and triplet losses, and K-dimensional ``linear_weight``, go to PyTorch.

``size_average`` and ``reduce``, deprecated in PyTorch, are accepted and turned into
``reduction`` as PyTorch does. Where PyTorch's ``"mean"`` of a weighted loss divides by the
sum of the weights (``mse_loss``, ``l1_loss`` in PyTorch 2.13; a row's ``mean_divides_by``),
the kernel computes the ``"sum"`` and the adapter divides it by that sum.

A loss computed by the kernel has a ``grad_fn`` named ``fastloss_<name>Backward`` in eager
mode (the custom op's autograd node under ``torch.compile``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

import fastloss
from fastloss import _kernels
from fastloss import _torch_formulas as _formulas

__all__ = ["LOSSES", "LossRow"]

# fastloss arguments that are the adapter's business, never a user's option here
_MACHINERY = frozenset({"compute_grad", "out", "n_threads", "compute_hess", "hess_out",
                        "lse_out"})
# torch's deprecated reduction switches: folded into `reduction` before anything else
_LEGACY = ("size_average", "reduce")
_KERNEL_DTYPES = (torch.float32, torch.float64)


# ------------------------------------------------------------ the same losses in torch ops
# fastloss's own losses have no torch.nn.functional counterpart; these are their formulas in
# torch operations (the maths is in fastloss.sigmoid_focal / fastloss.softmax_focal), used for
# what the kernels do not take (CUDA, half precision, double backward).

def _torch_sigmoid_focal(logits, target, alpha=0.25, gamma=2.0, reduction="mean",
                         weight=None):
    """torchvision.ops.sigmoid_focal_loss's formula (alpha < 0: no alpha factor), times an
    element weight."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    if weight is not None:
        loss = loss * weight
    return _formulas.reduce(loss, reduction, loss.numel())


def _times_weight(loss, weight):
    return loss if weight is None else loss * weight


def _torch_pinball(input, target, quantile=0.5, weight=None, reduction="mean"):
    """scikit-learn's PinballLoss: q r where r = target - input >= 0, else (q - 1) r."""
    r = target - input
    loss = torch.where(r >= 0, quantile * r, (quantile - 1) * r)
    return _formulas.reduce(_times_weight(loss, weight), reduction, loss.numel())


def _torch_log_cosh(input, target, weight=None, reduction="mean"):
    """log(cosh(d)) as logaddexp(d, -d) - log 2 (finite for every finite d)."""
    d = input - target
    loss = torch.logaddexp(d, -d) - 0.6931471805599453
    return _formulas.reduce(_times_weight(loss, weight), reduction, loss.numel())


def _torch_tweedie(input, target, power=1.5, weight=None, reduction="mean"):
    """LightGBM's tweedie objective (log link) as a loss of the raw score."""
    loss = (-target * torch.exp((1 - power) * input) / (1 - power)
            + torch.exp((2 - power) * input) / (2 - power))
    return _formulas.reduce(_times_weight(loss, weight), reduction, loss.numel())


def _torch_hinge(input, target, margin=1.0, weight=None, reduction="mean"):
    loss = F.relu(margin - target * input)
    return _formulas.reduce(_times_weight(loss, weight), reduction, loss.numel())


def _torch_squared_hinge(input, target, margin=1.0, weight=None, reduction="mean"):
    loss = F.relu(margin - target * input) ** 2
    return _formulas.reduce(_times_weight(loss, weight), reduction, loss.numel())


# ------------------------------------------------------------------------------ the table

@dataclass(frozen=True)
class LossRow:
    """One loss of the adapter.

    fastloss: the fastloss function's name.
    functional, module: torch.nn.functional's and torch.nn's names when torch has the loss
        (the adapter then takes torch's arguments); functional None for fastloss's own losses,
        exported under the fastloss name with a module of the name `module`.
    tensor_options: the options that are tensors (weights). An option whose default is None
        is a tensor too unless it is named in optional_scalars; the others are Python scalars.
    class_axis: a (N, C) input with per-sample losses (N,) under "none" (else element-wise).
    renamed: torch argument name -> fastloss argument name, where the two differ.
    torch_formula: for fastloss's own losses, the same loss in torch operations (PyTorch's
        implementation for what the kernels do not take); for a torch loss with `extra`
        options, the loss with those options in torch operations.
    inputs: how many leading positional tensors are differentiated (the kernel returns their
        gradients as a tuple in argument order when there are several).
    has_target: a target tensor follows the differentiated inputs.
    grad_options: tensor options that are differentiated too (linear_cross_entropy's bias:
        the kernel's gradient tuple holds them after the inputs').
    per: the shape of "none": "element" (the input's), "class" ((N, d1, ..., dK) of an
        (N, C, d1, ..., dK) input), "row" ((N,)) or "overlap" ((N, C') or (C',)).
    target: which targets the kernel takes ("element": a floating target of the input's
        shape; "class": integer class indices, or probabilities of the input's shape; "any":
        the kernel's own checks).
    input_ndim: the kernel takes differentiated inputs of this many dimensions only (for
        torch's names the others, unbatched (D,) inputs say, go to PyTorch).
    unbatched: a 1-D input (C,) is one sample (1, C) (torch's unbatched class-axis inputs).
    k_dim: the kernel takes (N, C, d1, ..., dK) inputs (else PyTorch does, or raises).
    none_by_torch: reduction="none" is computed by PyTorch: the gradient the kernel gives is
        that of the sum of the per-sample losses, and where these share parameters (the
        weight of linear_cross_entropy, the softmax over the classes or batch=True of the
        overlap losses) a grad_output that differs between samples cannot rescale it.
    none_means: the kernel's value of an option whose torch value None means a default
        (torch's linear_cross_entropy ignore_index=None is -100).
    extra: fastloss options added to torch's signature, keyword-only after torch's own
        arguments (cross_entropy's sample_weight, z_loss, logit_softcap).
    module_forward: forward(module, function, *tensors) of a module whose forward is not
        function(*tensors, **options) (torch's LinearCrossEntropyLoss owns its linear layer).
    """

    fastloss: str
    functional: Optional[str]
    module: str
    tensor_options: Tuple[str, ...] = ()
    class_axis: bool = False
    renamed: Dict[str, str] = field(default_factory=dict)
    torch_formula: Optional[Callable] = None
    optional_scalars: Tuple[str, ...] = ("logit_softcap",)
    # torch's "mean" of this loss divides by the sum of this (element-weight) option, not by
    # the number of elements (torch 2.13: mse_loss and l1_loss; huber_loss divides by N)
    mean_divides_by: Optional[str] = None
    # tensor options that torch takes only of the input's exact shape (torch 2.13's weight of
    # mse_loss, l1_loss, huber_loss: ValueError otherwise); another shape goes to PyTorch,
    # which raises its error (fastloss would broadcast it)
    same_shape: Tuple[str, ...] = ()
    inputs: int = 1
    has_target: bool = True
    grad_options: Tuple[str, ...] = ()
    per: str = "element"
    target: str = "element"
    input_ndim: Optional[int] = None
    unbatched: bool = False
    k_dim: bool = False
    none_by_torch: bool = False
    none_means: Dict[str, object] = field(default_factory=dict)
    extra: Tuple[str, ...] = ()
    module_forward: Optional[Callable] = None


def _linear_ce_module_forward(module, function, input, target):
    """torch.nn.LinearCrossEntropyLoss.forward with fastloss.torch.linear_cross_entropy."""
    weight = module.linear.weight.reshape(
        (module.num_classes, *module.out_features, module.linear.in_features))
    bias = module.linear.bias
    if bias is not None:
        bias = bias.reshape((module.num_classes, *module.out_features))
    return function(input, weight, target, linear_bias=bias, weight=module.weight,
                    reduction=module.reduction, ignore_index=module.ignore_index,
                    label_smoothing=module.label_smoothing, options=module.options)


_CLASS = dict(class_axis=True, per="class", target="class")
_ROWS = dict(per="row", target="any", input_ndim=2)
_OVERLAP = dict(per="overlap", target="any", none_by_torch=True)

LOSSES: Tuple[LossRow, ...] = (
    LossRow("softmax_cross_entropy", "cross_entropy", "CrossEntropyLoss", ("weight",),
            unbatched=True, k_dim=True, extra=("sample_weight", "z_loss", "logit_softcap"),
            torch_formula=_formulas.cross_entropy, **_CLASS),
    LossRow("binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits",
            "BCEWithLogitsLoss", ("weight", "pos_weight")),
    LossRow("huber", "huber_loss", "HuberLoss", ("weight",), same_shape=("weight",)),
    LossRow("smooth_l1", "smooth_l1_loss", "SmoothL1Loss", ("weight",)),
    LossRow("mse", "mse_loss", "MSELoss", ("weight",), mean_divides_by="weight",
            same_shape=("weight",)),
    LossRow("mae", "l1_loss", "L1Loss", ("weight",), mean_divides_by="weight",
            same_shape=("weight",)),
    LossRow("poisson_nll", "poisson_nll_loss", "PoissonNLLLoss", ("weight",)),
    LossRow("soft_margin", "soft_margin_loss", "SoftMarginLoss", ("weight",)),
    LossRow("binary_cross_entropy", "binary_cross_entropy", "BCELoss", ("weight",)),
    LossRow("kl_div", "kl_div", "KLDivLoss"),
    LossRow("sigmoid_focal", None, "SigmoidFocalLoss", ("weight",),
            torch_formula=_torch_sigmoid_focal),
    LossRow("softmax_focal", None, "SoftmaxFocalLoss", ("alpha", "sample_weight"),
            unbatched=True, k_dim=True, torch_formula=_formulas.softmax_focal, **_CLASS),
    # fastloss's own element-wise losses (the loss table's rows without a torch function);
    # pinball's quantile is a tensor option: a float, or one level per element of the last
    # axis (a Python float becomes a 0-d tensor of the input's dtype)
    LossRow("pinball", None, "PinballLoss", ("weight", "quantile"),
            torch_formula=_torch_pinball),
    LossRow("log_cosh", None, "LogCoshLoss", ("weight",), torch_formula=_torch_log_cosh),
    LossRow("tweedie", None, "TweedieLoss", ("weight",), torch_formula=_torch_tweedie),
    LossRow("hinge", None, "HingeLoss", ("weight",), torch_formula=_torch_hinge),
    LossRow("squared_hinge", None, "SquaredHingeLoss", ("weight",),
            torch_formula=_torch_squared_hinge),
    # issue 16, the rest: class-axis, pair, overlap and large-vocabulary losses
    LossRow("multi_margin", "multi_margin_loss", "MultiMarginLoss", ("weight",),
            unbatched=True, **_CLASS),
    LossRow("kl_divergence_with_logits", None, "KLDivergenceWithLogitsLoss",
            torch_formula=_formulas.kl_divergence_with_logits,
            **dict(_CLASS, target="element")),
    LossRow("triplet_margin", "triplet_margin_loss", "TripletMarginLoss", inputs=3,
            has_target=False, **_ROWS),
    LossRow("cosine_embedding", "cosine_embedding_loss", "CosineEmbeddingLoss", inputs=2,
            **_ROWS),
    LossRow("margin_ranking", "margin_ranking_loss", "MarginRankingLoss", inputs=2,
            **dict(_ROWS, input_ndim=1)),
    LossRow("contrastive", None, "ContrastiveLoss", inputs=2,
            torch_formula=_formulas.contrastive, **_ROWS),
    LossRow("gaussian_kl", None, "GaussianKLLoss", inputs=2, has_target=False,
            torch_formula=_formulas.gaussian_kl, **_ROWS),
    LossRow("dice", None, "DiceLoss", ("weight",), torch_formula=_formulas.dice, **_OVERLAP),
    LossRow("jaccard", None, "JaccardLoss", ("weight",), torch_formula=_formulas.jaccard,
            **_OVERLAP),
    LossRow("tversky", None, "TverskyLoss", torch_formula=_formulas.tversky, **_OVERLAP),
    LossRow("linear_cross_entropy", "linear_cross_entropy", "LinearCrossEntropyLoss",
            ("bias", "class_weight"), inputs=2, grad_options=("bias",), per="row",
            target="any", input_ndim=2, none_by_torch=True,
            renamed={"linear_bias": "bias", "weight": "class_weight"},
            none_means={"ignore_index": -100}, module_forward=_linear_ce_module_forward,
            extra=("z_loss", "logit_softcap"), torch_formula=_formulas.linear_cross_entropy),
)


# ------------------------------------------------------------------- one pass, both paths

class _Spec:
    """What a row resolves to against the installed fastloss and torch: the kernel, the
    options passed to it (fastloss names, in the custom op's order) and their schema types,
    the user-facing signature."""

    def __init__(self, row: LossRow):
        self.row = row
        self.kernel = getattr(fastloss, row.fastloss)
        kernel_params = inspect.signature(self.kernel).parameters
        self.n_positional = row.inputs + row.has_target
        self.kernel_positional = tuple(kernel_params)[:self.n_positional]
        if row.functional is not None:
            self.torch_function = getattr(F, row.functional)
            self.signature = inspect.signature(self.torch_function)
            if row.extra:  # fastloss's options, keyword-only after torch's arguments
                self.signature = self.signature.replace(parameters=[
                    *self.signature.parameters.values(),
                    *(kernel_params[name].replace(kind=inspect.Parameter.KEYWORD_ONLY)
                      for name in row.extra)])
        else:
            self.torch_function = None
            self.signature = inspect.signature(self.kernel).replace(parameters=[
                p for p in kernel_params.values() if p.name not in _MACHINERY],
                return_annotation=torch.Tensor)
        user_params = list(self.signature.parameters.values())
        self.name = row.functional or row.fastloss
        self.user_names = tuple(p.name for p in user_params)
        self.positional = tuple(p.name for p in user_params
                                if p.kind == p.POSITIONAL_OR_KEYWORD)
        n = self.n_positional
        self.defaults = {p.name: p.default for p in user_params[n:]}
        # options passed to the kernel: (user name, fastloss name); the other user options
        # must be at their default for the kernel to run (else PyTorch computes the loss)
        self.options = []
        self.torch_only = []
        for p in user_params[n:]:
            if p.name in _LEGACY:
                continue
            fl_name = row.renamed.get(p.name, p.name)
            if fl_name in kernel_params and fl_name not in self.kernel_positional:
                self.options.append((p.name, fl_name))
            else:
                self.torch_only.append(p.name)
        self.option_names = tuple(fl for _, fl in self.options)
        self.reduction_index = self.option_names.index("reduction")
        self.tensor_options = tuple(
            name for name in self.option_names
            if name in row.tensor_options or (kernel_params[name].default is None
                                              and name not in row.optional_scalars))
        self.float_options = tuple(
            name for name in self.option_names
            if name not in self.tensor_options
            and _schema_type(kernel_params[name].default) in ("float", "float?"))
        self.grad_option_indices = tuple(self.option_names.index(name)
                                         for name in row.grad_options)
        # the tensor options that are not differentiated (weights): checked like a target
        self.weight_indices = tuple(
            index for index, name in enumerate(self.option_names)
            if name in self.tensor_options and index not in self.grad_option_indices)
        self.to_torch_names = {fl: user for user, fl in self.options}
        self.extra_defaults = {name: kernel_params[name].default for name in row.extra}
        self.kernel_forward = _make_kernel_forward(self)

    def schema(self) -> str:
        params = inspect.signature(self.kernel).parameters
        fields = [f"Tensor {name}" for name in self.kernel_positional]
        for name in self.option_names:
            kind = ("Tensor?" if name in self.tensor_options
                    else _schema_type(params[name].default))
            fields.append(f"{kind} {name}")
        fields.append("bool compute_grad")
        outputs = ", ".join(["Tensor"] * (1 + self.row.inputs + len(self.row.grad_options)))
        return "(" + ", ".join(fields) + ") -> (" + outputs + ")"

    def loss_shape(self, positional, options):
        """The shape of the loss for these inputs and options (the fake kernel's)."""
        if options[self.reduction_index] != "none":
            return ()
        shape = tuple(positional[0].shape)
        per = self.row.per
        if per == "class":
            return shape[:1] + shape[2:]
        if per == "row":
            return shape[:1]
        if per == "overlap":
            named = dict(zip(self.option_names, options))
            n_classes = shape[1]
            kept = n_classes - (0 if named["include_background"] or n_classes == 1 else 1)
            return (kept,) if named["batch"] else (shape[0], kept)
        return shape

    def differentiated(self, positional, options):
        """The differentiated tensors, in the kernel's gradient order (None: an absent
        option)."""
        return (*positional[:self.row.inputs],
                *(options[index] for index in self.grad_option_indices))

    def torch_loss(self, positional, options):
        """The loss by PyTorch's implementation, from the kernel's options (fastloss names)."""
        named = dict(zip(self.option_names, options))
        if self.torch_function is not None and not any(
                not _is_default(named[name], default)
                for name, default in self.extra_defaults.items()):
            named = {self.to_torch_names[k]: v for k, v in named.items()
                     if k not in self.extra_defaults}
            return self.torch_function(*positional, **named)
        return self.row.torch_formula(*positional, **named)


def _is_default(value, default) -> bool:
    return value is default or (not isinstance(value, torch.Tensor) and value == default)


_PLAIN_SCALARS = (int, float, str, bool)


def _schema_type(default) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "str"
    if default is None:
        return "float?"
    raise TypeError(f"no custom-op schema type for a default of {default!r}")


def _make_kernel_forward(spec: _Spec):
    """spec.kernel_forward(positional, options, compute_grad): one fastloss pass, (loss
    tensor, tuple of gradient tensors (None for an absent differentiated option) or None),
    memory shared between tensors and arrays both ways. The row's constants (the option
    names, which options are tensors, one or several gradients) are bound here; the kernel
    is spec.kernel at call time."""
    names = spec.option_names
    tensor_indices = tuple(index for index, name in enumerate(names)
                           if name in spec.tensor_options)
    several = spec.row.inputs + len(spec.row.grad_options) > 1
    from_numpy, array = torch.from_numpy, np.array
    n_threads = torch.get_num_threads
    fast_lane = _FAST_LANES.get(spec.row.fastloss)
    fast_lane = fast_lane(spec) if fast_lane is not None else None

    def kernel_forward(positional, options, compute_grad):
        # numpy(force=True): the memory as an array, detached (no copy: the kernel takes CPU
        # strided float32 / float64 and integer tensors only, which have no conjugate or
        # negative bit). The gradient array is NumPy's (allocated by the kernel call):
        # fastloss's buffer cache serves the large ones again without fresh pages, and NumPy
        # asks for huge pages (a 64 MB gradient from torch.empty measured 1.5-1.7x slower)
        if len(positional) == 2:   # (input, target): without a comprehension's frame
            arrays = [positional[0].numpy(force=True), positional[1].numpy(force=True)]
        else:
            arrays = [t.numpy(force=True) for t in positional]
        result = None
        if fast_lane is not None:
            result = fast_lane(arrays, options, compute_grad, n_threads())
        if result is None:
            if tensor_indices:
                options = list(options)
                for index in tensor_indices:
                    value = options[index]
                    if value is not None:
                        options[index] = value.numpy(force=True)
            result = spec.kernel(*arrays, **dict(zip(names, options)),
                                 compute_grad=compute_grad, n_threads=n_threads())
        loss, grad = result
        # a reduced loss (a Python float) becomes a 0-d tensor through NumPy, the path the
        # gradient takes (torch.scalar_tensor is a dispatcher call: more code run per call,
        # and slow when a large kernel pass has just evicted it from the caches)
        loss = from_numpy(array(loss, arrays[0].dtype) if loss.__class__ is float else loss)
        if not compute_grad:
            return loss, None
        if not several:  # one differentiated input
            return loss, (from_numpy(grad),)
        return loss, tuple(None if g is None else from_numpy(g) for g in grad)

    return kernel_forward


def _softmax_ce_fast_lane(spec: _Spec):
    """fastloss.softmax_cross_entropy's Cython fast path called directly for the plain call
    (no class weight, sample weight, z-loss or cap: the common one), without the Python
    wrapper's keyword arguments; None when the call is not plain (the fast path's own rule:
    it returns None for anything it does not take, and the full call then validates)."""
    index = spec.option_names.index
    weight, ignore_index, reduction = index("weight"), index("ignore_index"), index("reduction")
    smoothing, sample_weight = index("label_smoothing"), index("sample_weight")
    z_loss, softcap = index("z_loss"), index("logit_softcap")
    fast = _kernels.softmax_cross_entropy_fast

    def lane(arrays, options, compute_grad, n_threads):
        z = options[z_loss]
        if (options[weight] is not None or options[sample_weight] is not None
                or options[softcap] is not None or z.__class__ is not float or z != 0.0):
            return None
        return fast(arrays[0], arrays[1], None, options[ignore_index], options[smoothing],
                    options[reduction], compute_grad, None, n_threads)

    return lane


def _plain_ce_function(spec: _Spec, eager_function, plain_options):
    """eager_function for the plain softmax CE call, f(input, target) with every option at
    its default: a subclass (the same name, so the same backward node name, and the same
    backward) whose forward takes the two tensors alone and calls the kernel's fast path
    itself, without kernel_forward's and the lane's frames and argument tuples. In a training
    step the loss's forward runs cold (the model's forward has just moved the caches'
    contents), where each Python frame and object it touches costs a miss: measured, digits
    MLP step (batch 256), the loss's forward 18-20 us less with no layer between the
    Function and the kernel than through module, function, Function, kernel_forward and lane.
    Anything the fast path does not take (it returns None) goes through kernel_forward, which
    validates and raises as the general call does. What is left is PyTorch's own: forward +
    backward of an (8, 100) input, warm, medians (AMD Zen 4 host): x.sum().backward() 22.7
    us, an autograd.Function that does nothing 29.8 us, F.cross_entropy 33.7 us, this path
    39.1 us (of which the kernel ~1.2 us, the two arrays' views ~1.8 us, the loss and
    gradient tensors ~1.4 us)."""
    index = spec.option_names.index
    ignore_index = plain_options[index("ignore_index")]
    smoothing = plain_options[index("label_smoothing")]
    reduction = plain_options[index("reduction")]
    fast = _kernels.softmax_cross_entropy_fast
    kernel_forward = spec.kernel_forward
    from_numpy, array, n_threads = torch.from_numpy, np.array, torch.get_num_threads

    def forward(ctx, input, target):
        result = fast(input.numpy(force=True), target.numpy(force=True), None, ignore_index,
                      smoothing, reduction, True, None, n_threads())
        if result is None:
            loss, (grad,) = kernel_forward((input, target), plain_options, True)
        else:
            loss, grad = result   # a Python float: the reduction is "mean"
            loss = from_numpy(array(loss, grad.dtype))
            grad = from_numpy(grad)
        ctx.save_for_backward(grad)
        ctx.state = ((input, target), plain_options, (input._version, target._version))
        return loss

    return type(eager_function.__name__, (eager_function,), {
        "forward": staticmethod(forward), "__module__": __name__})


# fastloss name -> lane(spec): a direct call of the kernel's fast path for the common call
# (lane(arrays, options, compute_grad, n_threads) -> (loss, grad) or None)
_FAST_LANES = {"softmax_cross_entropy": _softmax_ce_fast_lane}


def _scaled(grad, reduction, grad_loss, eager):
    """The saved gradient times grad_output (per sample for "none")."""
    if reduction == "none":
        if grad.dim() > grad_loss.dim():  # (N, d...) losses of (N, C, d...) / (N, D) inputs
            ones = (1,) * (grad.dim() - grad_loss.dim())
            grad_loss = grad_loss.reshape(grad_loss.shape[:1] + ones + grad_loss.shape[1:])
        return grad * grad_loss
    if eager and type(grad_loss) is torch.Tensor and grad_loss.item() == 1.0:
        # d(loss)/d(loss): the saved gradient is the answer, without a pass over it
        # (autograd copies it before accumulating it while the graph still holds it, as with
        # retain_graph=True). Only in eager mode: a traced backward cannot branch on a value.
        return grad
    return grad * grad_loss


def _kernel_backward(spec: _Spec, grads, positional, options, reduction, grad_loss,
                     eager=False):
    """The differentiated tensors' gradients (in the kernel's order; None where absent): the
    saved gradients times grad_output. With grad mode on (create_graph=True) PyTorch's
    implementation gives differentiable ones (double backward)."""
    if torch.is_grad_enabled():
        wanted = [t for t in spec.differentiated(positional, options)]
        needed = [t for t in wanted if t is not None and t.requires_grad]
        with torch.enable_grad():
            loss = spec.torch_loss(positional, options)
            results = iter(torch.autograd.grad(loss, needed, grad_loss, create_graph=True,
                                               allow_unused=True))
        return tuple(next(results) if t is not None and t.requires_grad else None
                     for t in wanted)
    if reduction == "none" and spec.row.none_by_torch:
        # per-sample losses that share inputs: PyTorch's backward of the same loss (the
        # adapter computes these with PyTorch; the custom op, called directly, gets here)
        positional, options = list(positional), list(options)
        leaves = []
        slots = [(positional, i) for i in range(spec.row.inputs)] + [
            (options, i) for i in spec.grad_option_indices]
        for container, index in slots:
            if container[index] is not None:
                container[index] = container[index].detach().requires_grad_()
            leaves.append(container[index])
        present = [t for t in leaves if t is not None]
        with torch.enable_grad():
            results = iter(torch.autograd.grad(spec.torch_loss(positional, options), present,
                                               grad_loss, allow_unused=True))
        return tuple(None if t is None else next(results) for t in leaves)
    if len(grads) == 1:
        return (_scaled(grads[0], reduction, grad_loss, eager),)
    return tuple(None if g is None else _scaled(g, reduction, grad_loss, eager) for g in grads)


def _op_forward(spec: _Spec, args):
    positional, options = args[:spec.n_positional], args[spec.n_positional:-1]
    compute_grad = args[-1]
    loss, grads = spec.kernel_forward(positional, options, compute_grad)
    empty = positional[0].new_empty((0,))
    if grads is None:
        grads = (None,) * (spec.row.inputs + len(spec.row.grad_options))
    return (loss, *(empty if g is None else g for g in grads))


def _register_custom_op(spec: _Spec):
    n = spec.n_positional
    op = torch.library.custom_op(f"fastloss::{spec.row.fastloss}", mutates_args=(),
                                 schema=spec.schema())(lambda *args: _op_forward(spec, args))

    @op.register_fake
    def _fake(*args):
        positional, options, compute_grad = args[:n], args[n:-1], args[-1]
        first = positional[0]
        loss = first.new_empty(spec.loss_shape(positional, options))
        grads = [first.new_empty(t.shape if compute_grad and t is not None else (0,))
                 for t in spec.differentiated(positional, options)]
        return (loss, *grads)

    def setup_context(ctx, inputs, output):
        positional, options = inputs[:n], inputs[n:-1]
        tensors = [o for o in options if isinstance(o, torch.Tensor)]
        ctx.tensor_slots = [isinstance(o, torch.Tensor) for o in options]
        ctx.scalars = [o for o in options if not isinstance(o, torch.Tensor)]
        ctx.n_grads = len(output) - 1
        ctx.save_for_backward(*output[1:], *positional, *tensors)
        ctx.reduction = options[spec.reduction_index]
        ctx.mark_non_differentiable(*output[1:])

    def backward(ctx, grad_loss, *_grads_of_grads):
        saved = ctx.saved_tensors
        grads, positional = saved[:ctx.n_grads], saved[ctx.n_grads:ctx.n_grads + n]
        tensors, scalars = iter(saved[ctx.n_grads + n:]), iter(ctx.scalars)
        options = [next(tensors) if slot else next(scalars) for slot in ctx.tensor_slots]
        grads = tuple(None if t is None else g for g, t in
                      zip(grads, spec.differentiated(positional, options)))
        results = _kernel_backward(spec, grads, positional, options, ctx.reduction, grad_loss)
        inputs_grads = (*results[:spec.row.inputs], *(None,) * spec.row.has_target)
        option_grads = [None] * len(spec.option_names)
        for index, result in zip(spec.grad_option_indices, results[spec.row.inputs:]):
            option_grads[index] = result
        return (*inputs_grads, *option_grads, None)

    op.register_autograd(backward, setup_context=setup_context)
    return op


def _make_eager_function(spec: _Spec):
    """The same forward and backward as the custom op, as a torch.autograd.Function (its
    backward node is named after the loss: `<fastloss name>Backward`). apply takes the
    positional tensors, the differentiated options (linear_cross_entropy's bias), then every
    option as one tuple. Only the gradients are saved tensors; the inputs, needed by a double
    backward alone, are kept as they are (their version is checked then): the fewer arguments
    and saved tensors, the cheaper a call."""
    n, n_inputs = spec.n_positional, spec.row.inputs
    n_target = int(spec.row.has_target)
    kernel_forward, reduction_index = spec.kernel_forward, spec.reduction_index
    # one differentiated input and a reduced loss (the usual case): the backward below
    # returns its gradient without _kernel_backward's general machinery
    simple = n_inputs == 1 and not spec.row.grad_options
    none_after = (None,) * n_target + (None,)  # the target's and the options' gradients
    is_grad_enabled = torch.is_grad_enabled

    def forward(ctx, *args):
        positional, options = args[:n], args[-1]
        loss, grads = kernel_forward(positional, options, True)
        ctx.save_for_backward(*grads)
        ctx.state = (positional, options, (positional[0]._version, positional[1]._version)
                     if len(positional) == 2 else tuple([t._version for t in positional]))
        return loss

    def backward(ctx, grad_loss):
        grads = ctx.saved_tensors
        positional, options, versions = ctx.state
        reduction = options[reduction_index]
        if is_grad_enabled():  # create_graph=True: PyTorch's loss, differentiable
            if tuple([t._version for t in positional]) != versions:
                raise RuntimeError(
                    f"fastloss.torch.{spec.name}: an input or the target was modified in "
                    "place after the loss was computed; a double backward (create_graph=True) "
                    "needs them as they were")
        elif simple and reduction != "none":
            return (_scaled(grads[0], reduction, grad_loss, True), *none_after)
        results = _kernel_backward(spec, grads, positional, options, reduction,
                                   grad_loss, eager=True)
        return (*results[:n_inputs], *(None,) * n_target, *results[n_inputs:], None)

    return type(f"fastloss_{spec.row.fastloss}", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(backward),
        "__module__": __name__})


# --------------------------------------------------------------------- the public function

def _kernel_takes(spec: _Spec, positional, options) -> bool:
    """Whether the fastloss kernel takes these arguments (else PyTorch computes the loss)."""
    row = spec.row
    for tensor in positional:
        if not isinstance(tensor, torch.Tensor):
            return False
    first = positional[0]
    dtype = first.dtype
    if dtype not in _KERNEL_DTYPES:
        return False
    grad_mode = torch.is_grad_enabled()
    for tensor in positional[:row.inputs]:
        if not tensor.is_cpu or tensor.layout != torch.strided or tensor.dtype != dtype:
            return False
    for index in spec.grad_option_indices:
        tensor = options[index]
        if tensor is not None and (not isinstance(tensor, torch.Tensor) or not tensor.is_cpu
                                   or tensor.layout != torch.strided or tensor.dtype != dtype):
            return False
    for index in spec.weight_indices:
        value = options[index]
        if isinstance(value, torch.Tensor) and not _other_takes(value, dtype, grad_mode):
            return False
    if row.input_ndim is not None and any(
            t.dim() != row.input_ndim for t in positional[:row.inputs]):
        return False
    if not row.has_target:
        return True
    target = positional[row.inputs]
    if not _other_takes(target, dtype, grad_mode):
        return False
    if row.target == "class":
        if first.dim() > 2 and not row.k_dim:
            return False
        return not target.is_floating_point() or target.shape == first.shape
    if row.target == "element":  # PyTorch's rules for other target dtypes and broadcast shapes
        return target.shape == first.shape and target.is_floating_point()
    return True


def _other_takes(tensor, dtype, grad_mode) -> bool:
    """A target or weight the kernel takes: CPU, strided, not differentiated, a float of the
    input's dtype or an integer."""
    return (tensor.is_cpu and tensor.layout == torch.strided
            and not (grad_mode and tensor.requires_grad)
            and not (tensor.dtype != dtype and tensor.is_floating_point()))


def _fast_apply(function_class):
    """function_class.apply without torch.autograd.Function.apply's Python layer (its
    functorch unwrapping and setup_context binding: this function is called outside functorch
    transforms only, and has no setup_context), ~5 microseconds less per call; the public
    apply where PyTorch's internals differ."""
    try:
        return torch._C._FunctionBase.__dict__["apply"].__get__(None, function_class)
    except (AttributeError, KeyError, TypeError):  # pragma: no cover - other PyTorch versions
        return function_class.apply


def _make_function(spec: _Spec, custom_op, eager_function):
    row = spec.row
    positional, user_names, defaults = spec.positional, spec.user_names, spec.defaults
    n_positional = spec.n_positional
    positional_names = user_names[:n_positional]
    max_positional = len(positional)
    # the kernel's options in the custom op's order, at their defaults; a call overwrites
    # the ones it gives (slot: user name -> (index, is a tensor option, is a float option))
    default_options = [row.none_means.get(fl, defaults[user]) if defaults[user] is None
                       else defaults[user] for user, fl in spec.options]
    slots = {user: (index, fl in spec.tensor_options, fl in spec.float_options,
                    row.none_means.get(fl))
             for index, (user, fl) in enumerate(spec.options)}
    torch_only = frozenset(spec.torch_only) | frozenset(_LEGACY)
    reduction_index = spec.reduction_index
    mean_slot = slots[row.mean_divides_by][0] if row.mean_divides_by in slots else None
    same_shape_slots = tuple(slots[name][0] for name in row.same_shape if name in slots)
    # tensor options with a scalar default (pinball's quantile): a 0-d tensor when not given
    scalar_default_slots = tuple(
        index for index, (user, fl) in enumerate(spec.options)
        if fl in spec.tensor_options and defaults[user] is not None)
    grad_option_indices = spec.grad_option_indices
    extras = {name: spec.extra_defaults[name] for name in row.extra}
    apply = _fast_apply(eager_function)
    single_input = row.inputs == 1 and not grad_option_indices
    none_by_torch, row_unbatched = row.none_by_torch, row.unbatched
    # bound once: each is a lookup chain per call otherwise (the same function objects, so
    # torch.compile still recognises is_compiling)
    is_grad_enabled, is_compiling = torch.is_grad_enabled, torch.compiler.is_compiling
    functorch_active = torch._C._are_functorch_transforms_active

    def by_torch(values, args=()):
        if values is None:  # a call of the positional tensors alone
            values = dict(zip(positional, args))
        values = {k: v for k, v in values.items() if k not in _LEGACY or v is not None}
        if spec.torch_function is None:
            return row.torch_formula(**values)
        if any(not _is_default(values.get(name, default), default)
               for name, default in extras.items()):
            named = {row.renamed.get(k, k): v for k, v in values.items()}
            return row.torch_formula(**named)
        return spec.torch_function(**{k: v for k, v in values.items() if k not in extras})

    # issue 16: the plain softmax CE call with a gradient, f(input, target) on a (N, C)
    # float input and (N,) int64 class indices, goes straight to the autograd Function: the
    # checks of run / _kernel_takes that decide it, in one frame (fewer Python layers run cold
    # after the forward's matmuls in a training step). Anything else takes run.
    plain_options = tuple(default_options)
    plain = row.fastloss == "softmax_cross_entropy" and n_positional == 2
    plain_apply = (_fast_apply(_plain_ce_function(spec, eager_function, plain_options))
                   if plain else None)
    strided, int64 = torch.strided, torch.int64

    def loss_function(*args, **kwargs):
        if not kwargs and len(args) == n_positional:
            # the common call, f(input, target): every option at its default (the arguments
            # by name are built only if PyTorch computes the loss)
            if plain and not is_compiling() and not functorch_active():
                input, target = args
                if (input.__class__ is torch.Tensor and target.__class__ is torch.Tensor
                        and input.requires_grad and input.dtype in _KERNEL_DTYPES
                        and target.dtype is int64 and input.dim() == 2 and target.dim() == 1
                        and input.is_cpu and target.is_cpu and input.layout is strided
                        and target.layout is strided and is_grad_enabled()):
                    return plain_apply(input, target)
            return run(list(args), default_options.copy(), None, args)
        if len(args) > max_positional:
            raise TypeError(f"{spec.name}() takes at most {max_positional} positional "
                            f"arguments ({len(args)} given)")
        values = dict(zip(positional, args))
        if kwargs:
            for key in kwargs:
                if key not in defaults and key not in positional_names:
                    raise TypeError(f"{spec.name}() got an unexpected keyword argument {key!r}")
                if key in values:
                    raise TypeError(f"{spec.name}() got multiple values for argument {key!r}")
            values.update(kwargs)
        try:
            tensors = [values[name] for name in positional_names]
        except KeyError as missing:
            raise TypeError(f"{spec.name}() missing required argument {missing}") from None

        options = default_options.copy()
        if len(values) > n_positional:
            if (values.get("size_average") is not None or values.get("reduce") is not None):
                values["reduction"] = torch.nn._reduction.legacy_get_string(
                    values.pop("size_average", None), values.pop("reduce", None))
            for key, value in values.items():
                slot = slots.get(key)
                if slot is None:
                    if key in torch_only and value is not defaults.get(key) and (
                            isinstance(value, torch.Tensor) or value != defaults[key]):
                        return by_torch(values)  # an option the kernel does not take
                    continue
                index, is_tensor, is_float, none_means = slot
                if value is None and none_means is not None:
                    value = none_means
                elif is_tensor and value is not None:
                    if not isinstance(value, torch.Tensor):  # a Python scalar (alpha)
                        value = torch.tensor(value, dtype=getattr(tensors[0], "dtype", None))
                elif is_float and value is not None:
                    value = float(value)
                options[index] = value
        return run(tensors, options, values, args)

    def run(tensors, options, values, args):
        """The loss from the parsed call: the kernel's, or PyTorch's (values: the arguments
        by name, None for a call of the positional tensors alone)."""
        if none_by_torch and options[reduction_index] == "none":
            return by_torch(values, args)
        if not _kernel_takes(spec, tensors, options):
            return by_torch(values, args)
        input = tensors[0]
        for index in same_shape_slots:
            if options[index] is not None and options[index].shape != input.shape:
                return by_torch(values, args)  # PyTorch's error: it does not broadcast it
        for index in scalar_default_slots:
            if not isinstance(options[index], torch.Tensor):
                options[index] = torch.tensor(options[index], dtype=input.dtype)
        divisor = None
        if mean_slot is not None and options[reduction_index] == "mean" \
                and options[mean_slot] is not None:
            divisor = options[mean_slot]
            options[reduction_index] = "sum"  # torch's "mean": the sum / the weights' sum

        unbatched = row_unbatched and input.dim() == 1
        if unbatched:  # one sample (C,): (1, C)
            tensors = [t.unsqueeze(0) for t in tensors]
        if single_input:
            compute_grad = input.requires_grad and is_grad_enabled()
        else:
            compute_grad = is_grad_enabled() and any(
                t is not None and t.requires_grad
                for t in spec.differentiated(tensors, options))
        if is_compiling() or functorch_active():
            loss = custom_op(*tensors, *options, compute_grad)[0]
        elif compute_grad:
            if grad_option_indices:
                loss = apply(*tensors, *[options[index] for index in grad_option_indices],
                             tuple(options))
            else:
                loss = apply(*tensors, tuple(options))
        else:
            loss = spec.kernel_forward(tensors, options, False)[0]
        if unbatched and loss.dim() == 1:
            loss = loss[0]
        if divisor is not None:
            loss = loss / divisor.sum()
        return loss

    loss_function.__name__ = loss_function.__qualname__ = spec.name
    loss_function.__signature__ = spec.signature
    loss_function.__module__ = __name__
    source = (f"torch.nn.functional.{spec.name}" if spec.torch_function is not None
              else f"fastloss.{row.fastloss}")
    extra = (f" The keyword-only {', '.join(row.extra)} are fastloss.{row.fastloss}'s "
             f"options (torch has none of them)." if row.extra else "")
    loss_function.__doc__ = (
        f"{source} computed by fastloss.{row.fastloss}'s fused kernel (loss and gradient in "
        f"one pass); arguments and semantics of {source}.{extra} Inputs the kernel does not "
        f"take go to PyTorch's implementation (see fastloss.torch).\n\n"
        f"The maths: fastloss.{row.fastloss}.__doc__.")
    return loss_function


# ----------------------------------------------------------------------------- the modules

def _make_module(spec: _Spec, function):
    row = spec.row
    if spec.torch_function is not None:
        base = getattr(torch.nn, row.module)
        init_parameters = inspect.signature(base.__init__).parameters
        module_args = [name for name in init_parameters
                       if name in spec.defaults and name not in _LEGACY]
        # each default as the object torch's __init__ stores when the argument is not given
        # (its own default), so that an option left alone is its default by identity, the
        # forward's first and cheapest test (-100 and 0.0 are other objects in our table)
        module_defaults = tuple(
            (name, init_parameters[name].default
             if type(init_parameters[name].default) is type(spec.defaults[name])
             and _is_default(init_parameters[name].default, spec.defaults[name])
             else spec.defaults[name])
            for name in module_args)

        if row.module_forward is not None:
            def forward(self, *tensors):
                return row.module_forward(self, function, *tensors)
        else:
            def forward(self, *tensors):
                # only the options off their default: a module at its defaults makes the
                # function's call of the positional tensors alone (its fast path). The
                # options are read from the instance's dict and its buffers (a tensor option,
                # None or not, is a buffer of torch's module) without nn.Module.__getattr__.
                changed = None
                attributes, buffers = self.__dict__, self._buffers
                for name, default in module_defaults:
                    if name in attributes:
                        value = attributes[name]
                    elif name in buffers:
                        value = buffers[name]
                    else:  # a property or a parameter (a subclass's): the general lookup
                        value = getattr(self, name)
                    # the default itself, or a Python scalar of its type equal to it (a
                    # tensor or an array never counts, so `==` is never elementwise here);
                    # written out here: a call per option costs a frame per call
                    if value is not default and not (
                            value.__class__ is default.__class__
                            and value.__class__ in _PLAIN_SCALARS and value == default):
                        if changed is None:
                            changed = {}
                        changed[name] = value
                if changed is None:
                    return function(*tensors)
                return function(*tensors, **changed)

        doc = (f"torch.nn.{row.module} whose forward is fastloss.torch.{spec.name} (the fused "
               f"kernel of fastloss.{row.fastloss}); same constructor, buffers and state_dict.")
        return type(row.module, (base,), {"forward": forward, "__doc__": doc,
                                          "__module__": __name__})

    option_names = tuple(spec.defaults)

    def __init__(self, *args, **kwargs):
        torch.nn.Module.__init__(self)
        bound = init_signature.bind(None, *args, **kwargs)
        bound.apply_defaults()
        for name in option_names:
            value = bound.arguments[name]
            if name in spec.tensor_options and isinstance(value, torch.Tensor):
                self.register_buffer(name, value)
            else:
                setattr(self, name, value)

    def forward(self, *tensors):
        return function(*tensors, **{name: getattr(self, name) for name in option_names})

    def extra_repr(self):
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in option_names
                         if not isinstance(getattr(self, name), torch.Tensor))

    init_signature = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
           for name, default in spec.defaults.items()])
    __init__.__signature__ = init_signature
    arguments = ", ".join(spec.user_names[:spec.n_positional])
    doc = (f"fastloss.{row.fastloss} as a torch.nn.Module: the constructor takes the "
           f"function's options {option_names}; forward({arguments}) returns "
           f"fastloss.torch.{spec.name}({arguments}, **options).")
    return type(row.module, (torch.nn.Module,), {
        "__init__": __init__, "forward": forward, "extra_repr": extra_repr, "__doc__": doc,
        "__module__": __name__})


# ------------------------------------------------------------------------------- export

#: the rows exported by this fastloss (a row whose fastloss function does not exist yet, or
#: whose torch.nn.functional function this torch lacks, is skipped)
EXPORTED: Tuple[LossRow, ...] = tuple(
    row for row in LOSSES
    if hasattr(fastloss, row.fastloss)
    and (row.functional is None or (hasattr(F, row.functional) and hasattr(torch.nn, row.module))))

#: fastloss name -> the torch.library custom op (torch.ops.fastloss.<name>)
CUSTOM_OPS: Dict[str, object] = {}
_SPECS: Dict[str, _Spec] = {}

for _row in EXPORTED:
    _spec = _Spec(_row)
    _SPECS[_row.fastloss] = _spec
    CUSTOM_OPS[_row.fastloss] = _register_custom_op(_spec)
    _function = _make_function(_spec, CUSTOM_OPS[_row.fastloss], _make_eager_function(_spec))
    globals()[_spec.name] = _function
    globals()[_row.module] = _make_module(_spec, _function)
    __all__.extend((_spec.name, _row.module))
del _row, _spec, _function


def functional_name(row: LossRow) -> str:
    """The adapter's function name of a row: torch's where torch has the loss."""
    return row.functional or row.fastloss


def kernel_option_names(row: LossRow) -> Tuple[str, ...]:
    """The fastloss options the adapter passes to the kernel for an exported row, and the
    torch argument name of each: ((fastloss name, torch name), ...)."""
    spec = _SPECS[row.fastloss]
    return tuple((fl, user) for user, fl in spec.options)


__all__ += ["EXPORTED", "CUSTOM_OPS", "functional_name", "kernel_option_names"]
