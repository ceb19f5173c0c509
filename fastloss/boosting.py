"""fastloss losses as custom objectives and metrics of LightGBM and XGBoost (issue 15).

    import lightgbm as lgb, xgboost as xgb
    from fastloss import boosting

    objective = boosting.lightgbm_objective("sigmoid_focal", alpha=0.25, gamma=2.0)
    start = objective.init_score(y)                 # custom objectives start from 0
    train_set = lgb.Dataset(X, y, init_score=np.full(len(y), start))
    booster = lgb.train({"objective": objective}, train_set, 100, valid_sets=[train_set],
                        feval=boosting.lightgbm_metric("sigmoid_focal", gamma=2.0))
    raw = booster.predict(X, raw_score=True) + start   # the init score is not in the model

    objective = boosting.xgboost_objective("softmax_cross_entropy", label_smoothing=0.1)
    booster = xgb.train({"num_class": 10, "base_score": objective.base_score(y)},
                        xgb.DMatrix(X, y), 100, obj=objective)
    raw = booster.predict(xgb.DMatrix(X), output_margin=True)      # (n, 10)

What the adapters return
------------------------
``lightgbm_objective(loss, **options)`` and ``xgboost_objective(loss, **options)`` return
callables giving the per-sample gradient and hessian of ``loss`` with respect to the raw
score (the loss's ``"sum"`` reduction: no 1/N), multiplied by the data set's sample weights:
(n,) arrays, or (n, k) for k classes. ``options`` are the loss function's keyword arguments
(``delta``, ``quantile``, ``label_smoothing``, the class ``weight`` of the softmax losses,
``n_threads``, ...), plus ``hessian=`` for the two focal losses (below). The metrics give the
weighted mean loss, sum_i w_i loss_i / sum_i w_i (the plain mean without weights).

The losses that make sense as objectives, by the booster's task:

- binary (labels in [0, 1], raw score = logit): ``binary_cross_entropy_with_logits``,
  ``sigmoid_focal``;
- multiclass (labels 0 .. k-1, k raw scores per sample): ``softmax_cross_entropy`` (label
  smoothing, class weights), ``softmax_focal``;
- regression (raw score = prediction, or the log of the mean for the log-link losses):
  ``mse``, ``huber``, ``smooth_l1``, ``log_cosh``, ``mae``, ``pinball``, ``poisson_nll``,
  ``tweedie``.

Raw scores are not probabilities: boosters pass raw margins to custom objectives and metrics
(LightGBM's and XGBoost's documentation both say so), and ``booster.predict`` returns raw
margins once the objective is custom (LightGBM: ``raw_score=True`` is implied; XGBoost:
``output_margin=True`` gives them). The metrics here read raw margins: give them to a booster
trained with a fastloss objective, not with a built-in one (which passes probabilities).

Facts about the boosters (checked against LightGBM 4.7.0 and XGBoost 3.2.0, their
sources and runs; tests/test_boosting.py trains both)
-------------------------------------------------------------------------------------------
LightGBM 4.7:

- Native API: ``params["objective"] = f`` is called ``f(preds, train_data)``; ``preds`` is
  LightGBM's float64 score buffer (reused every round: do not keep it), (n,) or, for k
  classes, an (n, k) Fortran-ordered view of its class-major buffer (sample i of class j at
  j * n + i). Its ``__boost`` takes (n, k) results, ``ravel(order="F")``s them and casts them
  to contiguous float32: Fortran-ordered float32 (n, k) arrays (what the objectives here
  return for LightGBM's layout) pass through both steps as views, without a copy.
- The native API passes no weights to the objective and does not apply them:
  ``train_data.get_weight()`` (float32, or None; LightGBM drops all-ones weights) is
  multiplied in here. Labels come as float32 from ``train_data.get_label()`` (the same
  array every round).
- With a custom objective training starts from score 0 (``boost_from_average`` runs only for
  built-in objectives): pass ``init_score`` to the Dataset (``init_score`` below). The init
  score is not part of the model: ``predict(X, raw_score=True)`` leaves it out, add it back.
  LightGBM's own starts: binary log(p / (1 - p)) of the weighted mean label; multiclass
  log(max(1e-15, prior_k)); regression the weighted mean: ``init_score`` gives the same.
- scikit-learn wrapper: ``LGBMModel(objective=f)`` counts f's parameters:
  ``f(y_true, y_pred)`` (no weights given, none applied), ``f(y_true, y_pred, weight)``,
  ``f(y_true, y_pred, weight, group)``. The objectives here take three, so the wrapper hands
  them the weights. ``y_pred`` is the same (n, k) Fortran-ordered float64 view. With a
  callable objective ``LGBMClassifier.predict`` and ``predict_proba`` return raw scores (with
  a warning); ``fit(init_score=...)`` starts the model. Metrics: ``feval(preds, eval_data)``
  -> ``(name, value, is_higher_better)``; ``fit(eval_metric=f)`` dispatches on the same count.

XGBoost 3.2:

- Native API: ``xgb.train(params, dtrain, obj=f)`` calls ``f(predt, dtrain)`` with
  ``predt`` the float32 raw margins, (n,) or (n, k) C-ordered (``num_class`` = k in params);
  it takes (n, k) results (a flat (n k,) one is deprecated since 2.1) of any float dtype
  through the array interface. ``dtrain.get_weight()`` is empty without weights and is not
  applied to a custom objective's output: multiplied in here.
- ``base_score`` is not fitted for a custom objective: without an ``objective`` parameter the
  model starts from a margin of 0.5 (the default base_score read through
  ``reg:squarederror``'s identity link), for every class. Pass ``base_score`` =
  ``XGBoostObjective.base_score(y)``: a margin; a (k,) array for k classes (XGBoost 3.x
  keeps a vector intercept; a list of NumPy floats fails to serialise, an ndarray or Python
  floats work). The built-in objectives start from: ``binary:logistic`` the weighted mean
  label (margin: its log-odds), ``multi:softprob`` the log priors minus their mean (softmax
  sees no difference from ``init_score``'s log priors), ``reg:squarederror`` the mean.
- scikit-learn wrapper: ``XGBModel(objective=f)`` calls ``f(y_true, y_pred)``, or
  ``f(y_true, y_pred, sample_weight=w)`` when there are weights (and raises if f has no
  ``sample_weight`` parameter). ``XGBClassifier`` runs a callable objective under
  ``objective="binary:logistic"`` (``"multi:softprob"`` for k > 2): base_score is then read
  as a probability for a binary model (``base_score(y, classifier=True)`` gives
  sigmoid(init)) and as margins for k classes, and ``predict_proba`` applies the sigmoid /
  softmax to the margins, which is right for the binary and softmax losses here.
  ``eval_metric=f`` (a callable) is called ``f(y_true, y_pred[, sample_weight=w])`` and
  returns a number, named by ``f.__name__``; ``custom_metric(predt, dmatrix)`` returns
  ``(name, value)``. XGBoost keeps a metric's value as printed (6 decimals).

Choices made here
-----------------
- Float32. Both boosters store gradients and hessians as float32 (LightGBM's ``score_t``,
  XGBoost's ``GradientPair``); the objectives compute in float32 and return float32 arrays,
  so the boosters take them without a conversion. XGBoost's scores are float32 already;
  LightGBM's float64 scores are cast once per call (the only pass besides the kernel's for
  (n,) scores; for k classes the cast keeps LightGBM's class-major order, and the kernel
  reads it as (1, k, n) K-dimensional logits and writes its results in that order, which
  LightGBM takes as views: see KERNEL_READS_FORTRAN_SCORES). A float64 kernel run on LightGBM's scores would
  read them without the cast but write float64 results, which LightGBM casts to float32:
  two casts instead of one.
- Sample weights go into the kernels (the element-wise losses' ``weight``, the softmax
  losses' ``sample_weight``): the gradient and hessian come out weighted from the same pass.
- The exact second derivative of each loss (fastloss's ``compute_hess=True``): the diagonal
  p_j (1 - p_j) for softmax cross-entropy, where LightGBM's built-in ``multiclass`` uses
  k / (k - 1) p_j (1 - p_j) and XGBoost's ``multi:softprob`` 2 p_j (1 - p_j); ``mse`` is
  (x - y)^2, twice XGBoost's ``reg:squarederror`` (gradient 2 d, hessian 2). A Newton leaf
  value is -G / (H + lambda) and a split's gain G^2 / (H + lambda): where fastloss's
  gradient is a and its hessian c times a built-in objective's, the learning rate times
  c / a, ``lambda_l2`` / ``reg_lambda`` and the minimum hessian of a leaf
  (``min_sum_hessian_in_leaf`` / ``min_child_weight``) times c give the same leaves and the
  same splits (gains a^2 / c times theirs): the built-in model (the tests train both and
  compare: softmax a = 1, c = (k - 1) / k for LightGBM and 1/2 for XGBoost; mse with
  XGBoost a = c = 2; LightGBM's ``regression`` is d^2 / 2 too, and with its default lambda
  0 only the minimum leaf hessian matters).
- ``mae`` and ``pinball`` have a second derivative of 0 almost everywhere; their hessian is
  the weight (1 per unweighted sample), as LightGBM's and scikit-learn's objectives have.
  LightGBM's built-in ``l1`` / ``quantile`` objectives also re-fit each leaf's value to the
  weighted median / quantile of its residuals after the tree is grown, which a custom
  objective cannot ask for: with fastloss's ``mae`` / ``pinball`` each leaf moves by at most
  the learning rate times 1 per round (start from ``init_score``, the median / quantile).
- ``huber`` and ``smooth_l1``: the exact hessian is 0 in the linear zone (|d| >= delta).
  LightGBM's built-in ``huber`` uses 1 everywhere instead. A leaf whose samples are all in
  the linear zone has a hessian sum of 0: keep ``lambda_l2`` / ``reg_lambda`` above 0, or
  choose delta on the scale of the residuals.
- The focal losses: ``hessian="floor"`` (default), ``"exact"`` or ``"fisher"``; see
  ``focal_hessian_forms``.
"""

from __future__ import annotations

import inspect
import math
import sys
import numpy as np

import fastloss
from fastloss import _kernels

__all__ = [
    "lightgbm_objective",
    "xgboost_objective",
    "lightgbm_metric",
    "xgboost_metric",
    "init_score",
    "OBJECTIVES",
]

# the losses served, by the booster task they fit
OBJECTIVES = {
    "binary_cross_entropy_with_logits": "binary",
    "sigmoid_focal": "binary",
    "softmax_cross_entropy": "multiclass",
    "softmax_focal": "multiclass",
    "mse": "regression",
    "huber": "regression",
    "smooth_l1": "regression",
    "log_cosh": "regression",
    "mae": "regression",
    "pinball": "regression",
    "poisson_nll": "regression",
    "tweedie": "regression",
}
# arguments the adapters set themselves: reduction "sum", the gradient and hessian, the
# data set's weights (the element-wise losses' `weight`, the softmax losses' `sample_weight`)
_SET_BY_ADAPTER = ("reduction", "compute_grad", "compute_hess", "out", "hess_out",
                   "sample_weight", "lse_out")
HESSIAN_FORMS = ("floor", "exact", "fisher")
_FOCAL = ("sigmoid_focal", "softmax_focal")
_CLIP = 1e-15   # probabilities and means are clipped to [1e-15, 1 - 1e-15] before a log
# Multiclass scores in LightGBM's Fortran order go to the kernel as they are, as (1, k, n)
# K-dimensional logits (no transpose, results in LightGBM's order, no copy on its side).
# With the K-dim tile kernels of issue 13's speed work (the label's entries selected inside
# the vector passes) that path measured 1.80 ms against 3.66 ms for casting the scores to C
# order (n, k), the 2-D hessian call and copying the results back into LightGBM's order
# (_fortran_copy) (1e5 x 10, float64 scores, one thread, quiet machine; before that work the
# K-dim hessian variant took 38 ms). False turns the C-order path back on
# (tests/test_boosting.py runs both).
KERNEL_READS_FORTRAN_SCORES = True


def focal_hessian_forms():
    r"""The ``hessian=`` option of the focal objectives (documentation only).

    The exact second derivative of the sigmoid focal loss is negative where the sample is
    badly classified: with p_t the probability given to the sample's class, L = -log p_t,
    q = 1 - p_t and gamma the focusing exponent, the exact hessian of -q^gamma log p_t is

        p_t q^gamma [ (2 gamma + 1) q - gamma L (q - gamma p_t) ]

    (for a hard label; fastloss.sigmoid_focal's compute_hess gives it for any target), which
    is below 0 once L is large enough: p_t below 0.058 at gamma = 2. A leaf whose hessian
    sum is negative or near 0 gets a Newton value -G / H of the wrong sign or without bound,
    so the exact form is not usable as it is. The options:

    - ``"exact"``: the exact diagonal, negative values included (for a study, or gamma = 0);
    - ``"fisher"``: the Fisher information (= Gauss-Newton hessian) of the cross-entropy
      weighted by the focal factor held fixed: alpha_t q^gamma p (1 - p) (times the sample
      weight; for softmax focal alpha_y (1 - p_y)^gamma p_j (1 - p_j)). Positive wherever
      p (1 - p) is, equal to the exact form at gamma = 0, and the curvature that IRLS uses
      for a re-weighted logistic loss;
    - ``"floor"`` (default): the exact hessian, floored at the Fisher form:
      max(exact, fisher). Where the exact curvature is the larger (well classified samples:
      there it is about (gamma + 1)^2 times the Fisher form), the Newton step is the true
      one, and never longer than the weighted cross-entropy's where the exact curvature is
      small or negative (badly classified samples). The default because it is positive, it
      is exact where the loss is locally convex enough, and a leaf of hard samples takes the
      bounded step of a weighted logistic regression.

    The cost: "exact" is one kernel pass; "fisher" and "floor" add a NumPy pass for the
    probabilities.
    """


# ----------------------------------------------------------------------------- the loss

def _resolve(loss):
    """(name, function) of a fastloss loss given by name or as the function."""
    if isinstance(loss, str):
        name = loss
    else:
        name = getattr(loss, "__name__", None)
        if not callable(loss) or getattr(fastloss, str(name), None) is not loss:
            raise TypeError(f"loss must be a fastloss loss function or its name, got {loss!r}")
    if name not in OBJECTIVES:
        names = ", ".join(OBJECTIVES)
        raise ValueError(f"loss must be one of the losses usable as a boosting objective "
                         f"({names}), got {name!r}")
    function = getattr(fastloss, name, None)
    if function is None:   # pragma: no cover (every name above is a fastloss function)
        raise ValueError(f"fastloss has no loss {name!r}")
    return name, function


class _Loss:
    """A loss with its options, and the gradient / hessian / loss of a booster's raw score."""

    def __init__(self, loss, options: dict, *, objective: bool):
        self.name, self.function = _resolve(loss)
        self.kind = OBJECTIVES[self.name]
        options = dict(options)
        hessian = options.pop("hessian", None)
        if self.name in _FOCAL:
            hessian = "floor" if hessian is None else hessian
            if not isinstance(hessian, str) or hessian not in HESSIAN_FORMS:
                raise ValueError(f"hessian must be one of {', '.join(map(repr, HESSIAN_FORMS))} "
                                 f"(see fastloss.boosting.focal_hessian_forms), got {hessian!r}")
        elif hessian is not None:
            raise TypeError(f"hessian= is an option of the focal objectives only, not of "
                            f"{self.name}")
        self.hessian = hessian if objective else None
        reserved = [key for key in options if key in _SET_BY_ADAPTER
                    or (key == "weight" and self.kind != "multiclass")]
        if reserved:
            raise TypeError(f"{', '.join(reserved)} is set by the adapter (the data set's "
                            f"weights, reduction \"sum\", gradient and hessian), not an option "
                            f"of the {self.name} objective")
        parameters = inspect.signature(self.function).parameters
        unknown = [key for key in options if key not in parameters
                   or parameters[key].kind is not inspect.Parameter.KEYWORD_ONLY]
        if unknown:
            raise TypeError(f"{self.name} has no option {unknown[0]!r}")
        self.options = options
        if self.kind != "multiclass" and all(np.ndim(v) == 0 for v in options.values()):
            # the options' domains are checked now, not at the first boosting round
            self.function(np.zeros(1), np.ones(1), reduction="sum", compute_grad=False,
                          **options)

    def __repr__(self):
        options = "".join(f", {key}={value!r}" for key, value in self.options.items())
        hessian = f", hessian={self.hessian!r}" if self.hessian else ""
        return f"{self.name!r}{options}{hessian}"

    # -- the gradient and hessian

    def grad_hess(self, raw, label, weight):
        """(grad, hess) of the summed weighted loss at raw scores `raw` (float32 arrays of
        raw's shape and memory order)."""
        raw = np.asarray(raw)
        if self.kind == "multiclass":
            return self._grad_hess_multiclass(raw, label, weight)
        x = np.asarray(raw, dtype=np.float32).reshape(-1)   # (n,); a copy only to cast
        target = _labels(label, x.shape[0])
        if self.name == "sigmoid_focal" and self.hessian == "fisher":
            grad = self.function(x, target, weight=weight, reduction="sum", **self.options)[1]
            hess = _sigmoid_focal_fisher(x, target, weight, self.options)
        else:
            _, grad, hess = self.function(x, target, weight=weight, reduction="sum",
                                          compute_hess=True, **self.options)
            if self.name == "sigmoid_focal" and self.hessian == "floor":
                np.maximum(hess, _sigmoid_focal_fisher(x, target, weight, self.options),
                           out=hess)
        return grad.reshape(raw.shape), hess.reshape(raw.shape)

    def _grad_hess_multiclass(self, raw, label, weight):
        if raw.ndim != 2:
            raise ValueError(f"{self.name}: a multiclass objective needs (n, k) raw scores "
                             f"(num_class / n_classes >= 2 in the booster's parameters), got "
                             f"shape {raw.shape}")
        n, k = raw.shape
        indices = _class_labels(label, n, k)
        if KERNEL_READS_FORTRAN_SCORES and raw.flags.f_contiguous and not raw.flags.c_contiguous:
            # LightGBM's layout: the (n, k) scores are k columns of n. Their transpose is a
            # C-ordered (k, n) array: (1, k, n) logits with the class on axis 1 and the n
            # samples on the position axis, so the kernel reads and writes LightGBM's layout
            # and the (n, k) results come back Fortran-ordered, without a transpose copy.
            x = np.asarray(raw.T, dtype=np.float32)[np.newaxis]        # (1, k, n)
            grad, hess = self._class_axis(x, indices[np.newaxis],
                                          None if weight is None else weight[np.newaxis])
            return grad[0].T, hess[0].T
        fortran = raw.flags.f_contiguous and not raw.flags.c_contiguous
        x = np.asarray(raw, dtype=np.float32, order="C")   # LightGBM's: a transposing cast
        grad, hess = self._class_axis(x, indices, weight)
        if fortran:   # LightGBM's order back, so that its ravel(order="F") is a view
            return _fortran_copy(grad), _fortran_copy(hess)
        return grad, hess

    def _class_axis(self, x, target, sample_weight):
        options = self.options
        if self.hessian == "fisher":
            grad = self.function(x, target, sample_weight=sample_weight, reduction="sum",
                                 **options)[1]
            return grad, _softmax_focal_fisher(x, target, sample_weight, options)
        _, grad, hess = self.function(x, target, sample_weight=sample_weight, reduction="sum",
                                      compute_hess=True, **options)
        if self.hessian == "floor":
            np.maximum(hess, _softmax_focal_fisher(x, target, sample_weight, options), out=hess)
        return grad, hess

    # -- the loss

    def mean_loss(self, raw, label, weight) -> float:
        """sum_i w_i loss_i / sum_i w_i (the plain mean without weights)."""
        raw = np.asarray(raw)
        if self.kind == "multiclass":
            if raw.ndim != 2:
                raise ValueError(f"{self.name}: a multiclass metric needs (n, k) raw scores, "
                                 f"got shape {raw.shape}")
            n, k = raw.shape
            indices = _class_labels(label, n, k)
            x = np.asarray(raw, dtype=np.float64 if raw.dtype == np.float64 else np.float32,
                           order="C")
            total = self.function(x, indices, sample_weight=weight, reduction="sum",
                                  compute_grad=False, **self.options)[0]
        else:
            x = raw.reshape(-1)
            if x.dtype not in (np.float32, np.float64):
                x = x.astype(np.float64)
            total = self.function(x, _labels(label, x.shape[0]), weight=weight,
                                  reduction="sum", compute_grad=False, **self.options)[0]
            n = x.shape[0]
        denominator = float(n) if weight is None else float(np.sum(weight, dtype=np.float64))
        return total / denominator if denominator != 0 else math.nan


def _labels(label, n: int) -> np.ndarray:
    target = np.asarray(label).reshape(-1)
    if target.shape[0] != n:
        raise ValueError(f"the labels ({target.shape[0]}) do not match the raw scores "
                         f"({n} samples)")
    return target


def _class_labels(label, n: int, k: int) -> np.ndarray:
    """Class indices (int64, the kernels' type: no second conversion) from a booster's float
    labels; they must be 0 .. k-1."""
    values = _labels(label, n)
    indices = values.astype(np.int64)
    if values.dtype.kind == "f" and not np.array_equal(indices, values):
        position = int(np.argmax(indices != values))
        raise ValueError(f"multiclass labels must be class indices 0 .. {k - 1}, got "
                         f"{values[position]!r} at position {position}")
    return indices


# rows per block of _fortran_copy: (rows, k) float32 blocks that stay in L1/L2 on both sides
_TRANSPOSE_ROWS = 4096


def _fortran_copy(a: np.ndarray) -> np.ndarray:
    """A Fortran-ordered copy of a C-ordered (n, k) array, by blocks of rows (the k columns
    of a block written as k short runs). NumPy's own transposing copy (ravel(order="F"),
    asfortranarray) walks the whole array once per column: 1.45 ms against 0.46 ms by
    blocks for 1e5 x 10 float32 (one thread)."""
    n, k = a.shape
    out = _kernels.result_empty((k, n), a.dtype)
    for start in range(0, n, _TRANSPOSE_ROWS):
        stop = min(start + _TRANSPOSE_ROWS, n)
        out[:, start:stop] = a[start:stop].T
    return out.T


def _weights(weight, n: int):
    """The data set's weights as an (n,) array, or None (no weights: an empty array or None,
    as the boosters return them)."""
    if weight is None:
        return None
    weight = np.asarray(weight)
    if weight.size == 0:
        return None
    weight = weight.reshape(-1)
    if weight.shape[0] != n:
        raise ValueError(f"the weights ({weight.shape[0]}) do not match the raw scores "
                         f"({n} samples)")
    return weight


# ------------------------------------------------------- the Fisher forms of the focal losses

def _sigmoid_focal_fisher(x, target, weight, options):
    """w alpha_t q^gamma p (1 - p) (focal_hessian_forms), in x's dtype."""
    alpha = float(options.get("alpha", 0.25))
    gamma = float(options.get("gamma", 2.0))
    t = np.asarray(target, dtype=x.dtype)
    e = np.exp(-np.abs(x))
    denominator = 1.0 + e
    p = np.where(x >= 0, 1.0, e) / denominator          # sigma(x)
    s = np.where(x >= 0, e, 1.0) / denominator          # 1 - sigma(x), without cancellation
    fisher = e / (denominator * denominator)            # p (1 - p)
    q = p * (1 - t) + s * t                             # 1 - p_t
    fisher *= q ** gamma
    if alpha >= 0:
        fisher *= alpha * t + (1 - alpha) * (1 - t)
    if weight is not None:
        fisher *= weight
    return fisher.astype(x.dtype, copy=False)


def _softmax_focal_fisher(x, target, sample_weight, options):
    """alpha_y (1 - p_y)^gamma p_j (1 - p_j) times the sample weight, for logits (n, k) or
    (1, k, n) (the class on axis 1). In double, with 1 - p_j = sum_{c != j} e_c / s formed
    as (s - e_j) / s: a float32 1 - p_j would lose its digits where p_j is near 1."""
    gamma = float(options.get("gamma", 2.0))
    alpha = options.get("alpha")
    wide = np.asarray(x, dtype=np.float64)
    exps = np.exp(wide - wide.max(axis=1, keepdims=True))
    total = exps.sum(axis=1, keepdims=True)
    p = exps / total
    rest = (total - exps) / total                        # 1 - p_j
    index = np.expand_dims(target, 1).astype(np.intp)
    factor = np.take_along_axis(rest, index, axis=1) ** gamma   # (1 - p_y)^gamma
    if alpha is not None:
        alpha = np.asarray(alpha, dtype=np.float64)
        factor = factor * (alpha if alpha.ndim == 0 else np.expand_dims(alpha[target], 1))
    if sample_weight is not None:
        factor = factor * np.expand_dims(np.asarray(sample_weight, dtype=np.float64), 1)
    return (p * rest * factor).astype(x.dtype)


# ----------------------------------------------------------------------------- init scores

def init_score(loss, target, *, sample_weight=None, n_classes=None, **options):
    r"""The constant raw score that minimises the weighted loss: where boosting should start.

    With a custom objective neither booster fits a starting score (LightGBM's
    ``boost_from_average`` runs for its built-in objectives only, and XGBoost fits
    ``base_score`` for its built-in objectives only): pass this one as LightGBM's
    ``init_score`` (``np.full(n, s)``, ``np.tile(s, (n, 1))`` for k classes; it is not part
    of the model: add it to ``predict(..., raw_score=True)``) or XGBoost's ``base_score``
    (or ``base_margin`` of the DMatrix for k classes).

    Returns a float, or a (k,) float64 array for the multiclass losses:

    - binary_cross_entropy_with_logits: the log-odds log(B / A) of the weighted mean label,
      A = sum w (1 - t), B = sum w p t with p the pos_weight (the exact minimiser);
    - softmax_cross_entropy: log pi_c with pi_c proportional to sum_i s_i a_ic, a the
      loss's coefficients (class weights, label smoothing); with log pi normalised so that
      the log-sum-exp is 0 it also minimises a z-loss (logit_softcap: c atanh(log pi / c));
    - softmax_focal: the log class priors (cross-entropy's minimiser; focal's own optimum is
      not in closed form: the first rounds correct the difference);
    - mse: the weighted mean; mae: the weighted median; pinball: the weighted q-quantile
      (the smallest y with cumulative weight >= q of the total);
    - poisson_nll: log of the weighted mean (log_input=True), the mean - eps otherwise;
      tweedie: log of the weighted mean (exact for both);
    - huber, smooth_l1, log_cosh, sigmoid_focal: the zero of the summed gradient, by
      bisection (huber, smooth_l1 and log_cosh are convex: the minimiser; for focal, a
      local minimum between the labels' extremes).

    Probabilities and means are clipped to [1e-15, 1 - 1e-15] (positive means to >= 1e-15)
    before a log, so a one-class data set gives a finite score (LightGBM clips alike).

    Parameters
    ----------
    loss : a fastloss loss (function or name) of ``OBJECTIVES``
    target : (n,) labels (class indices 0 .. k-1 for the multiclass losses)
    sample_weight : (n,) non-negative weights, optional
    n_classes : int, the number of classes k (multiclass only; default max(target) + 1)
    options : the loss's keyword arguments (as given to the objective)
    """
    options = {key: value for key, value in options.items() if key != "hessian"}
    name, function = _resolve(loss)
    t = np.asarray(target, dtype=np.float64).reshape(-1)
    n = t.shape[0]
    w = _weights(sample_weight, n)
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    total = float(w.sum())
    if n == 0 or not total > 0:
        raise ValueError("init_score needs at least one sample of positive weight")
    if OBJECTIVES[name] == "multiclass":
        indices = _class_labels(t, n, n_classes or 0).astype(np.intp)
        k = int(n_classes) if n_classes is not None else int(indices.max()) + 1
        if indices.min() < 0 or indices.max() >= k:
            raise ValueError(f"class indices must be in [0, {k}), got {indices.min()} .. "
                             f"{indices.max()}")
        counts = np.bincount(indices, weights=w, minlength=k)
        if name == "softmax_cross_entropy":
            eps = float(options.get("label_smoothing", 0.0))
            class_weight = options.get("weight")
            class_weight = np.ones(k) if class_weight is None else np.asarray(class_weight, float)
            # sum_i s_i a_ic = w_c ((1 - eps) counts_c + eps / k sum_i s_i)
            mass = class_weight * ((1 - eps) * counts + eps / k * total)
        else:
            mass = counts
        prior = np.clip(mass / mass.sum(), _CLIP, None)
        score = np.log(prior / prior.sum())
        cap = options.get("logit_softcap") if name == "softmax_cross_entropy" else None
        if cap is not None:
            score = cap * np.arctanh(np.clip(score / cap, -1 + 1e-7, 1 - 1e-7))
        return score
    if name == "binary_cross_entropy_with_logits":
        pos_weight = options.get("pos_weight")
        p = 1.0 if pos_weight is None else np.broadcast_to(np.asarray(pos_weight, float), t.shape)
        negative = float(np.sum(w * (1 - t)))
        positive = float(np.sum(w * p * t))
        mean = np.clip(positive / (positive + negative), _CLIP, 1 - _CLIP)
        return float(np.log(mean) - np.log1p(-mean))
    if name == "mse":
        return float(np.sum(w * t) / total)
    if name in ("mae", "pinball"):
        level = 0.5 if name == "mae" else options.get("quantile", 0.5)
        if np.ndim(level) != 0:
            raise ValueError("init_score of pinball needs a scalar quantile")
        return _weighted_quantile(t, w, float(level))
    if name in ("tweedie", "poisson_nll"):
        mean = float(np.sum(w * t) / total)
        if name == "poisson_nll" and options.get("log_input", True) is False:
            return mean - float(options.get("eps", 1e-8))
        return float(np.log(max(mean, _CLIP)))
    return _gradient_zero(function, t, w, options)   # huber, smooth_l1, log_cosh, focal


def _weighted_quantile(values, weights, level: float) -> float:
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    position = int(np.searchsorted(cumulative, level * cumulative[-1], side="left"))
    return float(values[order][min(position, len(values) - 1)])


def _gradient_zero(function, t, w, options) -> float:
    """The score c where sum_i w_i dloss(c, t_i)/dc changes sign, by bisection."""
    def slope(c):
        return float(np.sum(function(np.full(t.shape, c), t, weight=w, reduction="sum",
                                     **options)[1]))

    low, high = float(t.min()), float(t.max())
    if low == high:
        low, high = low - 1.0, high + 1.0
    for _ in range(64):   # widen until the slope changes sign (focal: labels 0/1 are logits)
        if slope(low) <= 0 <= slope(high):
            break
        low, high = low - (high - low), high + (high - low)
    else:   # one-sided (all labels alike for focal): the clipped end the slope points to
        return math.log(1 / _CLIP) if slope(high) < 0 else -math.log(1 / _CLIP)
    for _ in range(100):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if slope(middle) <= 0:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


# ----------------------------------------------------------------------------- the adapters

def _module_class(module: str, name: str):
    """The class `module.name` if that library has been imported (else no object can be one
    of its instances)."""
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None


def _is_instance(value, module: str, name: str) -> bool:
    cls = _module_class(module, name)
    return cls is not None and isinstance(value, cls)


class _Adapter:
    _loss: _Loss

    def init_score(self, target, sample_weight=None, n_classes=None):
        """``fastloss.boosting.init_score`` of this loss and its options."""
        return init_score(self._loss.name, target, sample_weight=sample_weight,
                          n_classes=n_classes, **self._loss.options)

    @property
    def loss(self) -> str:
        return self._loss.name

    @property
    def options(self) -> dict:
        return dict(self._loss.options)

    def __repr__(self):
        return f"fastloss.boosting.{self._factory}({self._loss!r})"


class LightGBMObjective(_Adapter):
    """A LightGBM objective: ``params["objective"]`` (called ``f(preds, train_data)``) or
    ``LGBMModel(objective=...)`` (called ``f(y_true, y_pred, weight)``: three parameters, so
    the scikit-learn wrapper passes the weights). Returns (grad, hess), float32, (n,) or
    (n, k) in the order of the scores: Fortran-ordered for LightGBM's own scores (its
    class-major layout: no copy on its side), C-ordered for C-ordered scores."""

    _factory = "lightgbm_objective"

    def __init__(self, loss, options):
        self._loss = _Loss(loss, options, objective=True)

    def __call__(self, preds_or_y_true, train_data_or_y_pred, weight=None):
        if _is_instance(train_data_or_y_pred, "lightgbm", "Dataset"):
            preds, label = preds_or_y_true, train_data_or_y_pred.get_label()
            weight = train_data_or_y_pred.get_weight()
        else:
            label, preds = preds_or_y_true, train_data_or_y_pred
        preds = np.asarray(preds)
        return self._loss.grad_hess(preds, label, _weights(weight, preds.shape[0]))


class XGBoostObjective(_Adapter):
    """An XGBoost objective: ``xgb.train(obj=...)`` (called ``f(predt, dtrain)``) or
    ``XGBModel(objective=...)`` (called ``f(y_true, y_pred, sample_weight=...)``). Returns
    (grad, hess), float32, (n,) or (n, k) C-ordered (XGBoost's layout)."""

    _factory = "xgboost_objective"

    def __init__(self, loss, options):
        self._loss = _Loss(loss, options, objective=True)

    def base_score(self, target, sample_weight=None, *, classifier=False, n_classes=None):
        """XGBoost's ``base_score`` for this objective: the init score, a raw margin, as
        ``xgb.train`` (without an ``objective`` parameter), ``XGBRegressor`` and the
        multiclass ``XGBClassifier`` read it (a (k,) array for k classes: XGBoost 3.x takes
        a vector intercept); with ``classifier=True`` for a binary loss, its probability
        sigmoid(init), since ``XGBClassifier`` runs a callable objective under the
        ``binary:logistic`` parameter and reads base_score as a probability."""
        score = self.init_score(target, sample_weight, n_classes=n_classes)
        if classifier and self._loss.kind == "binary":
            return float(1.0 / (1.0 + math.exp(-score)))
        return score

    def __call__(self, predt_or_y_true, dtrain_or_y_pred, *, sample_weight=None):
        if _is_instance(dtrain_or_y_pred, "xgboost", "DMatrix"):
            predt, label = predt_or_y_true, dtrain_or_y_pred.get_label()
            sample_weight = dtrain_or_y_pred.get_weight()
        else:
            label, predt = predt_or_y_true, dtrain_or_y_pred
        predt = np.asarray(predt)
        return self._loss.grad_hess(predt, label, _weights(sample_weight, predt.shape[0]))


class LightGBMMetric(_Adapter):
    """A LightGBM ``feval`` (``f(preds, eval_data)``) or ``LGBMModel.fit(eval_metric=...)``
    callable (``f(y_true, y_pred, weight)``): ``(name, weighted mean loss, False)``."""

    _factory = "lightgbm_metric"

    def __init__(self, loss, options):
        self._loss = _Loss(loss, options, objective=False)
        self.__name__ = self._loss.name

    def __call__(self, preds_or_y_true, eval_data_or_y_pred, weight=None):
        if _is_instance(eval_data_or_y_pred, "lightgbm", "Dataset"):
            preds, label = preds_or_y_true, eval_data_or_y_pred.get_label()
            weight = eval_data_or_y_pred.get_weight()
        else:
            label, preds = preds_or_y_true, eval_data_or_y_pred
        preds = np.asarray(preds)
        value = self._loss.mean_loss(preds, label, _weights(weight, preds.shape[0]))
        return self._loss.name, value, False


class XGBoostMetric(_Adapter):
    """An XGBoost ``custom_metric`` (``f(predt, dmatrix)`` -> ``(name, value)``) or
    scikit-learn ``eval_metric`` (``f(y_true, y_pred, sample_weight=...)`` -> value, named by
    its ``__name__``): the weighted mean loss."""

    _factory = "xgboost_metric"

    def __init__(self, loss, options):
        self._loss = _Loss(loss, options, objective=False)
        self.__name__ = self._loss.name

    def __call__(self, predt_or_y_true, dmatrix_or_y_pred, *, sample_weight=None):
        if _is_instance(dmatrix_or_y_pred, "xgboost", "DMatrix"):
            predt, label = predt_or_y_true, dmatrix_or_y_pred.get_label()
            weight = _weights(dmatrix_or_y_pred.get_weight(), np.shape(predt)[0])
            return self._loss.name, self._loss.mean_loss(np.asarray(predt), label, weight)
        predt = np.asarray(dmatrix_or_y_pred)
        weight = _weights(sample_weight, predt.shape[0])
        return self._loss.mean_loss(predt, predt_or_y_true, weight)


def lightgbm_objective(loss, **options) -> LightGBMObjective:
    """A LightGBM custom objective from a fastloss loss (see the module docstring)."""
    return LightGBMObjective(loss, options)


def xgboost_objective(loss, **options) -> XGBoostObjective:
    """An XGBoost custom objective from a fastloss loss (see the module docstring)."""
    return XGBoostObjective(loss, options)


def lightgbm_metric(loss, **options) -> LightGBMMetric:
    """A LightGBM feval / eval_metric: (name, weighted mean loss, False)."""
    return LightGBMMetric(loss, options)


def xgboost_metric(loss, **options) -> XGBoostMetric:
    """An XGBoost custom_metric (name, weighted mean loss) / scikit-learn eval_metric."""
    return XGBoostMetric(loss, options)
