"""The loss table: one row per element-wise loss.

A row names a loss and says everything about it that is not its per-element maths: its
public name and first argument, its keyword parameters with their domains and defaults,
which C kernel computes it (and how its options become that kernel's scalars), whether the
kernel needs loop fission, what its second derivative is, the reference whose semantics it
follows, and the prose of its docstring. The maths is written once, in C, as inline
functions of fastloss/_src/fl_elementwise.inc (``<kernel>_eval``, and ``<kernel>_pre`` for a
kernel with loop fission).

Derived from this table:
- at build time (setup.py): fastloss/_src/fl_elementwise_list.h, the X-macro list from which
  fl_elementwise.inc stamps out one block worker per kernel and fl_kernels.c fills the kernel
  table (``KERNELS`` below gives the order);
- at import (fastloss/_elementwise.py): the public function of every row, with its
  signature, argument validation and error messages, the C-level fast path, and the
  docstring (summary and maths from the row, the argument section generated);
- the README's table of losses (``markdown_table``), the test registry entries
  (tests/cases.py) and the benchmark report's rows (fastloss/bench).

This module imports nothing from fastloss, so setup.py can read it before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple


@dataclass(frozen=True)
class Kernel:
    """One C block worker of fl_elementwise.inc.

    chunk: "generic" (one loop over a chunk from <name>_eval), "fission" (a <name>_pre pass
    over the chunk, then the <name>_eval loop; for elements that need several
    transcendental functions, PERFORMANCE.md item 7) or "custom" (a hand-written
    <name>_chunk). per_element: the kernel reads one parameter per element from a periodic
    buffer (pos_weight, quantile levels), filled with scalar[0] when none is given.
    """

    name: str
    chunk: str = "generic"
    per_element: bool = False


# The kernels, in kernel-table order (their index is the `kind` the Cython driver takes).
KERNELS: Tuple[Kernel, ...] = (
    Kernel("bce_logits", "custom", per_element=True),
    Kernel("huber"),
    Kernel("smooth_l1"),
    Kernel("sigmoid_focal", "custom"),
    Kernel("mse"),
    Kernel("mae"),
    Kernel("pinball", per_element=True),
    Kernel("log_cosh"),
    Kernel("poisson_log"),
    Kernel("poisson_linear"),
    Kernel("tweedie"),
    Kernel("hinge"),
    Kernel("squared_hinge"),
    Kernel("soft_margin"),
    Kernel("bce_probability", "fission"),
    Kernel("kl_div"),
    Kernel("kl_div_log_target"),
)
KERNEL_INDEX: Dict[str, int] = {kernel.name: index for index, kernel in enumerate(KERNELS)}
MAX_SCALARS = 4   # scalar parameters a kernel receives (fl_elementwise_args.scalar)


@dataclass(frozen=True)
class Param:
    """A scalar keyword parameter: a real number in its domain (or a bool when `kind` is
    "bool"). low/high None: unbounded; *_open: the end itself is excluded."""

    name: str
    default: object
    doc: str
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    kind: str = "real"   # "real" or "bool"

    def interval(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        left = "(" if self.low is None or self.low_open else "["
        right = ")" if self.high is None or self.high_open else "]"
        return f"{left}{low}, {high}{right}"


@dataclass(frozen=True)
class ElementwiseLoss:
    """One element-wise loss: `name(input_name, target, *, <params>, weight=None, ...)`.

    kernel(options) -> (kernel name, scalars): the C kernel and its scalar parameters for
    validated options (a dict of the Param values). array_param: the name of an option that
    may also be an array read per element (broadcast along the last axis or to the input's
    shape) by a per_element kernel. hessian: "exact", "scale" (the loss is piecewise linear:
    the hessian returned is the weight times the gradient's scale, everywhere, as
    scikit-learn's and LightGBM's objectives do) or None (not available yet).
    """

    name: str
    input_name: str
    summary: str
    maths: str
    reference: str
    kernel: Callable[[dict], Tuple[str, Tuple[float, ...]]]
    params: Tuple[Param, ...] = ()
    array_param: Optional[str] = None
    array_param_doc: str = ""
    hessian: Optional[str] = "exact"
    reductions: Tuple[str, ...] = ("mean", "sum", "none")
    input_domain: Optional[Tuple[float, float]] = None   # checked: ValueError outside
    # for the tests and the benchmark: how inputs and targets are drawn
    input_kind: str = "normal"      # normal | probability | log_probability | positive
    target_kind: str = "regression"  # regression | binary | soft | sign | count | probability
    memory_bound: bool = False      # no transcendental function per element
    torch_name: Optional[str] = None  # the torch.nn.functional function of the same loss
    extra_doc: str = ""

    @property
    def options(self) -> Tuple[str, ...]:
        return tuple(p.name for p in self.params)


def _plain(kernel: str, *names: str):
    """kernel(options): `kernel` with the named options as its scalars, in order."""
    return lambda options: (kernel, tuple(float(options[n]) for n in names))


ELEMENTWISE: Tuple[ElementwiseLoss, ...] = (
    ElementwiseLoss(
        name="binary_cross_entropy_with_logits", input_name="logits",
        summary="Binary cross-entropy on logits and its gradient with respect to the logits.",
        reference="torch.nn.functional.binary_cross_entropy_with_logits",
        kernel=lambda options: ("bce_logits", (1.0,)),
        array_param="pos_weight",
        array_param_doc=("pos_weight : array broadcastable to logits' shape, optional\n"
                         "    Factor p of the positive term, usually one per class along the last\n"
                         "    axis (all 1 when None)."),
        maths="""\
Per element, with sigma the logistic function and softplus(z) = log(1 + exp(z)),

    loss = w [ p t softplus(-x) + (1 - t) softplus(x) ]
    dloss/dx = w [ (1 - t) sigma(x) - p t sigma(-x) ]     (= w (sigma(x) - t) for p = 1)
    d2loss/dx2 = w ((1 - t) + p t) sigma(x) sigma(-x)

Stable form: with e = exp(-|x|), which never overflows, and a = 1 - t, b = p t,

    loss = w [a max(x, 0) + b max(-x, 0) + (a + b) log1p(e)]
    dloss/dx = w (P - M) / (1 + e),  P = a (x >= 0 ? 1 : e),  M = b (x >= 0 ? e : 1)

so the gradient keeps its digits where sigma(x) rounds to 1 (no sigma(x) - t
cancellation), and logits of any finite magnitude give finite results. w multiplies the
finished loss and gradient (a subnormal w rounds once).""",
        input_kind="normal", target_kind="soft", torch_name="binary_cross_entropy_with_logits",
    ),
    ElementwiseLoss(
        name="huber", input_name="input",
        summary="Huber loss and its gradient with respect to the input.",
        reference="torch.nn.functional.huber_loss",
        kernel=_plain("huber", "delta"),
        params=(Param("delta", 1.0, "where the loss turns from quadratic to linear",
                      low=0.0, low_open=True),),
        maths="""\
With d = input - target and c = min(|d|, delta),

    loss = c (|d| - c / 2)      = d^2 / 2                  for |d| < delta
                                = delta (|d| - delta / 2)  for |d| >= delta
    dloss/d input = clamp(d, -delta, delta)
    d2loss/d input2 = 1 for |d| < delta, else 0

No transcendental functions: the kernel runs at memory speed.""",
        memory_bound=True, torch_name="huber_loss",
    ),
    ElementwiseLoss(
        name="smooth_l1", input_name="input",
        summary="Smooth L1 loss and its gradient with respect to the input.",
        reference="torch.nn.functional.smooth_l1_loss",
        kernel=_plain("smooth_l1", "beta"),
        params=(Param("beta", 1.0, "where the loss turns from quadratic to linear",
                      low=0.0, low_open=True),),
        maths="""\
Smooth L1 is the Huber loss with delta = beta, divided by beta. With d = input - target,

    loss = d^2 / (2 beta)   for |d| < beta,     |d| - beta / 2   for |d| >= beta
    dloss/d input = clamp(d, -beta, beta) / beta
    d2loss/d input2 = 1 / beta for |d| < beta, else 0

computed as (c / beta) (|d| - c / 2), c = min(|d|, beta), so it never overflows where its
value is finite.""",
        memory_bound=True, torch_name="smooth_l1_loss",
    ),
    ElementwiseLoss(
        name="sigmoid_focal", input_name="logits",
        summary="Sigmoid focal loss (Lin et al., 2017) and its gradient with respect to the logits.",
        reference="torchvision.ops.sigmoid_focal_loss (whose default reduction is \"none\")",
        kernel=_plain("sigmoid_focal", "alpha", "gamma"),
        params=(Param("alpha", 0.25, "weight of the positive class; alpha < 0 turns the alpha "
                      "factor off"),
                Param("gamma", 2.0, "focusing exponent; 0, 1 and 2 use no power function",
                      low=0.0)),
        maths="""\
With p = sigma(x), ce = -t log p - (1 - t) log(1 - p) (BCE with logits),
q = 1 - p_t = p (1 - t) + (1 - p) t and alpha_t = alpha t + (1 - alpha)(1 - t)
(alpha_t = 1 when alpha < 0):

    loss = alpha_t ce q^gamma
    dloss/dx = alpha_t q^gamma [ (p - t) + gamma ce (1 - 2t) p (1 - p) / q ]

using dq/dx = (1 - 2t) p (1 - p). The ratio r = p (1 - p) / q lies in [0, 1] and tends
to max(p, 1 - p) where q -> 0, so the gradient is finite for every gamma >= 0, including
gamma < 1 where torchvision's q^(gamma - 1) p (1 - p) evaluates to 0 * inf = nan once q
rounds to 0: this function returns the true (finite) value there.

Stable form: with e = exp(-|x|), P = (1 - t) (x >= 0 ? 1 : e), M = t (x >= 0 ? e : 1):
p - t = (P - M) / (1 + e), q = (P + M) / (1 + e), r = e / ((1 + e)(P + M)) and
ce = (1 - t) max(x, 0) + t max(-x, 0) + log1p(e): no cancellation for any finite x.

The second derivative, with s = p (1 - p) = d2ce/dx2, u = 1 - 2t and m = 1 - 2p:

    d2loss/dx2 = alpha_t q^gamma [ s + gamma u r (2 (p - t) + ce ((gamma - 1) u r + m)) ]

(gamma = 0: alpha_t s, the weighted BCE's). It is the exact value, and it is negative
where p_t is small and gamma > 0 (below p_t of about 0.058 at gamma = 2, t = 1): a
Newton step needs it floored or replaced (fastloss.boosting does that).""",
        target_kind="binary",
    ),
    ElementwiseLoss(
        name="mse", input_name="input",
        summary="Mean squared error and its gradient with respect to the input.",
        reference="torch.nn.functional.mse_loss",
        kernel=_plain("mse"),
        maths="""\
With d = input - target:

    loss = d^2,    dloss/d input = 2 d,    d2loss/d input2 = 2""",
        memory_bound=True, torch_name="mse_loss",
    ),
    ElementwiseLoss(
        name="mae", input_name="input",
        summary="Mean absolute error (L1 loss) and its gradient with respect to the input.",
        reference="torch.nn.functional.l1_loss",
        kernel=_plain("mae"),
        hessian="scale",
        maths="""\
With d = input - target:

    loss = |d|,    dloss/d input = sign(d)  (0 at d = 0, and where d is nan, as torch)

The second derivative is 0 almost everywhere; compute_hess returns the weight times the
gradient's scale everywhere instead (1 per element for "sum"), as scikit-learn's and
LightGBM's objectives do.""",
        memory_bound=True, torch_name="l1_loss",
    ),
    ElementwiseLoss(
        name="pinball", input_name="input",
        summary="Pinball (quantile) loss and its gradient with respect to the input.",
        reference="scikit-learn's PinballLoss (sklearn._loss)",
        kernel=lambda options: ("pinball", (float(options["quantile"]),)),
        params=(Param("quantile", 0.5, "the quantile level q in (0, 1)", low=0.0, high=1.0,
                      low_open=True, high_open=True),),
        array_param="quantile",
        array_param_doc=("quantile : float in (0, 1), or a 1-D array of Q levels in (0, 1)\n"
                         "    A 1-D array is broadcast along the last axis (multi-quantile\n"
                         "    regression: input (..., Q), target of the same shape)."),
        hessian="scale",
        maths="""\
With r = target - input and q the quantile level of the element:

    loss = q r            for r >= 0,      (q - 1) r   for r < 0
    dloss/d input = -q    for r >= 0 (at r = 0 too, as scikit-learn),   1 - q  for r < 0

At nan the loss is nan and the gradient 1 - q (the false branch, as torch.where's). The
second derivative is 0 almost everywhere; compute_hess returns the
weight times the gradient's scale everywhere instead, as scikit-learn's and LightGBM's
quantile objectives do.""",
        memory_bound=True,
    ),
    ElementwiseLoss(
        name="log_cosh", input_name="input",
        summary="Log-cosh loss and its gradient with respect to the input.",
        reference="optax.log_cosh",
        kernel=_plain("log_cosh"),
        maths="""\
With d = input - target:

    loss = log(cosh(d)),   dloss/d input = tanh(d),   d2loss/d input2 = 1 - tanh(d)^2

Stable form, finite for every finite d: with a = |d|, e = exp(-2a) and m = 1 - e (from
expm1, exact near 0), tanh(a) = m / (1 + e); the loss is -log1p(-tanh(a)^2) / 2 for a < 1
(no cancellation near 0, where it is d^2 / 2) and a + log1p(e) - log 2 beyond (no
overflow); 1 - tanh^2 = 4 e / (1 + e)^2.""",
    ),
    ElementwiseLoss(
        name="poisson_nll", input_name="input",
        summary="Poisson negative log-likelihood and its gradient with respect to the input.",
        reference="torch.nn.functional.poisson_nll_loss",
        kernel=lambda options: ("poisson_log" if options["log_input"] else "poisson_linear",
                                (float(options["eps"]), 1.0 if options["full"] else 0.0)),
        params=(Param("log_input", True, "input is the log of the rate (True) or the rate",
                      kind="bool"),
                Param("full", False, "add the Stirling approximation of log(target!)",
                      kind="bool"),
                Param("eps", 1e-8, "added to the rate inside the log when log_input is False",
                      low=0.0, low_open=True)),
        maths="""\
With x = input and t = target:

    log_input=True:   loss = exp(x) - t x,            dloss/dx = exp(x) - t,   d2 = exp(x)
    log_input=False:  loss = x - t log(x + eps),      dloss/dx = 1 - t / (x + eps),
                      d2 = t / (x + eps)^2

full=True adds t log t - t + log(2 pi t) / 2 where t > 1 (a constant in x). As torch, a
large score overflows exp(x) to inf.""",
        input_kind="normal", target_kind="count", torch_name="poisson_nll_loss",
    ),
    ElementwiseLoss(
        name="tweedie", input_name="input",
        summary="Tweedie deviance (log link) and its gradient with respect to the raw score.",
        reference="LightGBM's tweedie objective (its gradient and hessian)",
        kernel=_plain("tweedie", "power"),
        params=(Param("power", 1.5, "the variance power p in (1, 2)", low=1.0, high=2.0,
                      low_open=True, high_open=True),),
        maths="""\
With x = input (a raw score, the log of the mean) and t = target >= 0:

    loss = -t exp((1 - p) x) / (1 - p) + exp((2 - p) x) / (2 - p)
    dloss/dx = -t exp((1 - p) x) + exp((2 - p) x)
    d2loss/dx2 = -t (1 - p) exp((1 - p) x) + (2 - p) exp((2 - p) x)

the gradient and hessian of LightGBM's objective. As there, large scores overflow the
exponentials to inf.""",
        target_kind="count",
    ),
    ElementwiseLoss(
        name="hinge", input_name="input",
        summary="Hinge loss and its gradient with respect to the input.",
        reference="scikit-learn's Hinge(threshold=margin), optax.hinge_loss",
        kernel=_plain("hinge", "margin"),
        params=(Param("margin", 1.0, "the margin m"),),
        hessian="scale",
        maths="""\
With x = input, t = target (any real, used as given: pass labels as +-1) and z = m - t x:

    loss = max(0, z),    dloss/dx = -t where z > 0, else 0 (0 at the kink, as torch's relu)

At nan the loss is nan and the gradient -t (as torch's relu backward). The second derivative
is 0 almost everywhere; compute_hess returns the weight times the gradient's scale
everywhere instead.""",
        memory_bound=True, target_kind="sign",
    ),
    ElementwiseLoss(
        name="squared_hinge", input_name="input",
        summary="Squared hinge loss and its gradient with respect to the input.",
        reference="Keras SquaredHinge (per element; t used as given, no 0/1 to +-1 conversion)",
        kernel=_plain("squared_hinge", "margin"),
        params=(Param("margin", 1.0, "the margin m"),),
        maths="""\
With x = input, t = target (used as given) and z = m - t x:

    loss = max(0, z)^2,   dloss/dx = -2 t max(0, z),   d2loss/dx2 = 2 t^2 where z > 0, else 0""",
        memory_bound=True, target_kind="sign",
    ),
    ElementwiseLoss(
        name="soft_margin", input_name="input",
        summary="Soft margin (logistic) loss and its gradient with respect to the input.",
        reference="torch.nn.functional.soft_margin_loss",
        kernel=_plain("soft_margin"),
        maths="""\
With x = input, t = target (+-1) and z = -t x:

    loss = log(1 + exp(z)),  dloss/dx = -t sigma(z),  d2loss/dx2 = t^2 sigma(z) sigma(-z)

Stable for every finite x: with e = exp(-|z|), loss = max(z, 0) + log1p(e) and
sigma(z) = (z >= 0 ? 1 : e) / (1 + e). (torch's log1p(exp(z)) overflows to inf for
z > 88 in float32; this is finite.)""",
        target_kind="sign", torch_name="soft_margin_loss",
    ),
    ElementwiseLoss(
        name="binary_cross_entropy", input_name="input",
        summary="Binary cross-entropy on probabilities and its gradient with respect to them.",
        reference="torch.nn.functional.binary_cross_entropy",
        kernel=_plain("bce_probability"),
        input_domain=(0.0, 1.0),
        maths="""\
With x = input in [0, 1] (outside, nan included: ValueError) and t = target:

    loss = -[t max(log x, -100) + (1 - t) max(log1p(-x), -100)]
    dloss/dx = (x - t) / max(x (1 - x), 1e-12)
    d2loss/dx2 = t / x^2 + (1 - t) / (1 - x)^2  (1e12 where x (1 - x) <= 1e-12)

each log clamped at -100 and the gradient's denominator at 1e-12, as torch.""",
        input_kind="probability", target_kind="soft", torch_name="binary_cross_entropy",
    ),
    ElementwiseLoss(
        name="kl_div", input_name="input",
        summary="Kullback-Leibler divergence on log-probabilities and its gradient.",
        reference="torch.nn.functional.kl_div",
        kernel=lambda options: ("kl_div_log_target" if options["log_target"] else "kl_div", ()),
        params=(Param("log_target", False, "target holds log-probabilities", kind="bool"),),
        reductions=("mean", "sum", "none", "batchmean"),
        maths="""\
With x = input (log-probabilities) and t = target (probabilities, or their logs):

    log_target=False:  loss = t (log t - x)  (0 where t = 0),   dloss/dx = -t
    log_target=True:   loss = exp(t) (t - x),                    dloss/dx = -exp(t)

The second derivative is 0 (the loss is linear in x). "batchmean" divides the sum by
input.shape[0] (the mathematically correct KL per sample), "mean" by the number of
elements, as torch.""",
        input_kind="log_probability", target_kind="probability", torch_name="kl_div",
    ),
)

ELEMENTWISE_BY_NAME: Dict[str, ElementwiseLoss] = {row.name: row for row in ELEMENTWISE}


def kernel_list_header() -> str:
    """fl_elementwise_list.h: the kernels as an X-macro, X(name, chunk, per_element)."""
    lines = ["/* Generated by setup.py from fastloss/_table.py (KERNELS): do not edit; not",
             " * committed. X(name, chunk kind, reads a per-element parameter) per kernel. */",
             "#ifndef FASTLOSS_FL_ELEMENTWISE_LIST_H", "#define FASTLOSS_FL_ELEMENTWISE_LIST_H",
             f"#define FL_ELEMENTWISE_COUNT {len(KERNELS)}",
             f"#define FL_ELEMENTWISE_SCALARS {MAX_SCALARS}",
             "#define FL_ELEMENTWISE_KERNELS(X) \\"]
    for kernel in KERNELS:
        lines.append(f"    X({kernel.name}, {kernel.chunk}, {int(kernel.per_element)}) \\")
    lines += ["", "#endif", ""]
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's table of element-wise losses."""
    rows = ["| function | options | reference semantics | hessian |", "|---|---|---|---|"]
    for row in ELEMENTWISE:
        options = ", ".join(f"`{p.name}={p.default!r}`" for p in row.params) or "-"
        hess = {"exact": "exact", "scale": "weight x scale", None: "-"}[row.hessian]
        rows.append(f"| `{row.name}({row.input_name}, target, ...)` | {options} | "
                    f"{row.reference} | {hess} |")
    return "\n".join(rows)
