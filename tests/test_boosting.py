"""fastloss.boosting (issue 15): fastloss losses as LightGBM and XGBoost objectives and metrics.

Real boosters on scikit-learn's bundled data sets: breast cancer (binary), digits
(multiclass), diabetes (regression), through the native APIs and the scikit-learn wrappers of
both libraries. Small trees and one thread each: the file runs in well under a minute.

- the BCE, softmax CE and MSE objectives give the built-in objectives' models (predictions to
  close tolerance after 50 rounds), starting from fastloss.boosting.init_score; where
  fastloss's gradient is a and its hessian c times the built-in one's (softmax: c = (k-1)/k
  against LightGBM's, 1/2 against XGBoost's; mse: a = c = 2), the learning rate times c / a
  and the L2 penalty and minimum leaf hessian times c make the two models the same (the
  Newton leaf value is -G / (H + lambda), a split's gain G^2 / (H + lambda));
- a multiclass objective whose (n, k) result is laid out the wrong way fails that comparison;
- focal, label-smoothed CE, Huber, pinball and Tweedie objectives train (the training loss
  falls every few rounds) and their metrics agree with fastloss's loss on the predictions;
- sample weights change the model as the built-in objective's weights do.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from fastloss import boosting

lgb = pytest.importorskip("lightgbm")
xgb = pytest.importorskip("xgboost")
datasets = pytest.importorskip("sklearn.datasets")

# LightGBM 4.7 renamed fit's eval_set to eval_X / eval_y; eval_set works in every 4.x
pytestmark = pytest.mark.filterwarnings("ignore:The argument 'eval_set' is deprecated")

ROUNDS = 50
LGB_PARAMS = {"num_leaves": 7, "learning_rate": 0.1, "num_threads": 1, "verbose": -1,
              "deterministic": True, "force_col_wise": True, "min_data_in_leaf": 5,
              "seed": 0}
XGB_PARAMS = {"max_depth": 3, "eta": 0.1, "nthread": 1, "tree_method": "hist", "seed": 0}


@pytest.fixture(scope="module")
def binary():
    X, y = datasets.load_breast_cancer(return_X_y=True)
    return X, y.astype(np.float64)


@pytest.fixture(scope="module")
def multiclass():
    X, y = datasets.load_digits(return_X_y=True)
    return X, y


@pytest.fixture(scope="module")
def regression():
    X, y = datasets.load_diabetes(return_X_y=True)
    return X, y


def sample_weights(n, seed=0):
    return np.random.default_rng(seed).uniform(0.2, 3.0, n)


# ============================================================== the objective's arrays

def reference_softmax(scores):
    shifted = scores - scores.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    return p / p.sum(axis=1, keepdims=True)


def test_binary_objective_is_the_summed_loss_times_the_weights():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=1000) * 3
    labels = (rng.random(1000) < 0.4).astype(np.float32)
    weights = sample_weights(1000).astype(np.float32)
    _, grad, hess = fastloss.binary_cross_entropy_with_logits(
        scores.astype(np.float32), labels, reduction="sum", compute_hess=True)
    for objective in (boosting.lightgbm_objective("binary_cross_entropy_with_logits"),
                      boosting.xgboost_objective("binary_cross_entropy_with_logits")):
        got_grad, got_hess = objective(labels, scores)
        assert got_grad.dtype == np.float32 and got_grad.shape == (1000,)
        np.testing.assert_array_equal(got_grad, grad)
        np.testing.assert_array_equal(got_hess, hess)
        if isinstance(objective, boosting.LightGBMObjective):
            weighted = objective(labels, scores, weights)
        else:
            weighted = objective(labels, scores, sample_weight=weights)
        np.testing.assert_allclose(weighted[0], grad * weights, rtol=1e-6)
        np.testing.assert_allclose(weighted[1], hess * weights, rtol=1e-6)
    p = 1 / (1 + np.exp(-scores))
    np.testing.assert_allclose(grad, p - labels, atol=1e-6)
    np.testing.assert_allclose(hess, p * (1 - p), atol=1e-6)


@pytest.mark.parametrize("direct", [False, True], ids=["via-C-order", "fortran-in-kernel"])
@pytest.mark.parametrize("order", ["F", "C"])
def test_multiclass_objective_layout(order, direct, monkeypatch):
    """LightGBM hands (n, k) float64 scores in Fortran order and takes (n, k) back; the
    result is p - onehot, p (1 - p) per (sample, class), whatever the order, and with
    result keeps the scores' order on both paths (for LightGBM's, its ravel(order="F") is a
    view)."""
    monkeypatch.setattr(boosting, "KERNEL_READS_FORTRAN_SCORES", direct)
    rng = np.random.default_rng(1)
    n, k = 300, 7
    scores = np.asarray(rng.normal(size=(n, k)) * 2, order=order)
    labels = rng.integers(0, k, n).astype(np.float32)
    weights = sample_weights(n)
    grad, hess = boosting.lightgbm_objective("softmax_cross_entropy")(labels, scores, weights)
    assert grad.shape == hess.shape == (n, k) and grad.dtype == hess.dtype == np.float32
    if order == "F":
        assert grad.flags.f_contiguous and hess.flags.f_contiguous
        assert np.shares_memory(grad.ravel(order="F"), grad)
    else:
        assert grad.flags.c_contiguous and hess.flags.c_contiguous
    p = reference_softmax(scores)
    onehot = np.eye(k)[labels.astype(int)]
    np.testing.assert_allclose(grad, (p - onehot) * weights[:, None], atol=2e-6)
    np.testing.assert_allclose(hess, p * (1 - p) * weights[:, None], atol=2e-6)
    xgb_grad, xgb_hess = boosting.xgboost_objective("softmax_cross_entropy")(
        labels, np.ascontiguousarray(scores, dtype=np.float32), sample_weight=weights)
    assert xgb_grad.flags.c_contiguous
    np.testing.assert_allclose(xgb_grad, grad, atol=1e-6)
    np.testing.assert_allclose(xgb_hess, hess, atol=1e-6)


def test_sigmoid_focal_hessian_forms():
    x = np.linspace(-12, 12, 241).astype(np.float32)
    for t in (np.ones_like(x), np.zeros_like(x)):
        _, grad, exact = fastloss.sigmoid_focal(x, t, reduction="sum", compute_hess=True)
        p = 1 / (1 + np.exp(-x.astype(np.float64)))
        q = np.where(t == 1, 1 - p, p)
        alpha_t = np.where(t == 1, 0.25, 0.75)
        fisher = alpha_t * q ** 2 * p * (1 - p)
        assert exact.min() < 0   # where p_t is small: the reason for the option
        forms = {form: boosting.lightgbm_objective("sigmoid_focal", hessian=form)(t, x)
                 for form in ("exact", "fisher", "floor")}
        for form, (g, _) in forms.items():
            np.testing.assert_array_equal(g, grad)
        np.testing.assert_array_equal(forms["exact"][1], exact)
        np.testing.assert_allclose(forms["fisher"][1], fisher, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(forms["floor"][1], np.maximum(exact, fisher), rtol=1e-5,
                                   atol=1e-12)
        assert (forms["floor"][1] > 0).all()
        default = boosting.lightgbm_objective("sigmoid_focal")(t, x)[1]
        np.testing.assert_array_equal(default, forms["floor"][1])
    # gamma = 0 without alpha: every form is the cross-entropy's p (1 - p)
    t = (x > 1).astype(np.float32)
    bce = fastloss.binary_cross_entropy_with_logits(x, t, reduction="sum", compute_hess=True)
    for form in ("exact", "fisher", "floor"):
        h = boosting.xgboost_objective("sigmoid_focal", alpha=-1, gamma=0.0, hessian=form)(t, x)[1]
        np.testing.assert_allclose(h, bce.hess, rtol=1e-5, atol=1e-12)


def test_softmax_focal_hessian_forms():
    rng = np.random.default_rng(3)
    n, k = 400, 5
    scores = (rng.normal(size=(n, k)) * 4).astype(np.float32)
    labels = rng.integers(0, k, n)
    alpha = np.linspace(0.5, 1.5, k)
    weights = sample_weights(n)
    _, grad, exact = fastloss.softmax_focal(scores, labels, alpha=alpha, gamma=2.0,
                                            sample_weight=weights, reduction="sum",
                                            compute_hess=True)
    p = reference_softmax(scores.astype(np.float64))
    p_y = p[np.arange(n), labels]
    fisher = (alpha[labels] * (1 - p_y) ** 2 * weights)[:, None] * p * (1 - p)
    assert exact.min() < 0   # h_y where p_y is small
    forms = {form: boosting.xgboost_objective("softmax_focal", alpha=alpha, hessian=form)(
        labels.astype(np.float32), scores, sample_weight=weights) for form in HESSIAN_FORMS}
    for g, _ in forms.values():
        np.testing.assert_allclose(g, grad, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(forms["exact"][1], exact, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(forms["fisher"][1], fisher, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(forms["floor"][1], np.maximum(exact, fisher), rtol=1e-5,
                               atol=1e-7)
    assert (forms["floor"][1] > 0).all()
    # LightGBM's Fortran-ordered scores give the same arrays, on both paths
    default = boosting.KERNEL_READS_FORTRAN_SCORES
    for direct in (False, True):
        boosting.KERNEL_READS_FORTRAN_SCORES = direct
        try:
            lightgbm = boosting.lightgbm_objective("softmax_focal", alpha=alpha)(
                labels, np.asfortranarray(scores, dtype=np.float64), weights)
        finally:
            boosting.KERNEL_READS_FORTRAN_SCORES = default
        assert lightgbm[0].flags.f_contiguous and lightgbm[1].flags.f_contiguous
        np.testing.assert_allclose(lightgbm[0], forms["floor"][0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(lightgbm[1], forms["floor"][1], rtol=1e-5, atol=1e-7)


HESSIAN_FORMS = ("exact", "fisher", "floor")


# ============================================================== init scores

def summed_loss(name, options, c, y, w):
    function = getattr(fastloss, name)
    return function(np.full(y.shape, c), y, weight=w, reduction="sum", compute_grad=False,
                    **options)[0]


@pytest.mark.parametrize("name, options", [
    ("mse", {}), ("mae", {}), ("pinball", {"quantile": 0.8}), ("huber", {"delta": 20.0}),
    ("smooth_l1", {"beta": 5.0}), ("log_cosh", {}), ("poisson_nll", {}),
    ("tweedie", {"power": 1.3}),
])
def test_init_score_minimises_the_regression_loss(regression, name, options):
    from scipy.optimize import minimize_scalar

    _, y = regression
    w = sample_weights(len(y))
    score = boosting.init_score(name, y, sample_weight=w, **options)
    log_link = name in ("poisson_nll", "tweedie")
    bounds = (np.log(y.min()), np.log(y.max())) if log_link else (y.min(), y.max())
    best = minimize_scalar(lambda c: summed_loss(name, options, c, y, w), bounds=bounds,
                           method="bounded", options={"xatol": 1e-10})
    value = summed_loss(name, options, score, y, w)
    assert value <= best.fun + 1e-9 * abs(best.fun)
    expected = {"mse": np.average(y, weights=w),
                "poisson_nll": np.log(np.average(y, weights=w)),
                "tweedie": np.log(np.average(y, weights=w))}
    if name in expected:
        assert score == pytest.approx(expected[name], rel=1e-12)


def test_init_score_binary_and_multiclass(binary, multiclass):
    _, y = binary
    w = sample_weights(len(y))
    mean = np.average(y, weights=w)
    score = boosting.init_score("binary_cross_entropy_with_logits", y, sample_weight=w)
    assert score == pytest.approx(np.log(mean / (1 - mean)), rel=1e-12)
    grad = fastloss.binary_cross_entropy_with_logits(np.full(len(y), score), y, weight=w,
                                                     reduction="sum")[1]
    assert abs(grad.sum()) < 1e-9 * len(y)
    focal = boosting.init_score("sigmoid_focal", y, sample_weight=w, gamma=2.0)
    grad = fastloss.sigmoid_focal(np.full(len(y), focal), y, weight=w, reduction="sum")[1]
    assert abs(grad.sum()) < 1e-9 * len(y)
    _, labels = multiclass
    w = sample_weights(len(labels))
    for options in ({}, {"label_smoothing": 0.2}, {"weight": np.linspace(0.5, 2, 10)}):
        score = boosting.init_score("softmax_cross_entropy", labels, sample_weight=w, **options)
        assert score.shape == (10,)
        scores = np.tile(score, (len(labels), 1))
        grad = fastloss.softmax_cross_entropy(scores, labels, sample_weight=w, reduction="sum",
                                              **options)[1]
        np.testing.assert_allclose(grad.sum(axis=0), 0, atol=1e-9 * len(labels))


# ============================================================== errors

def test_errors():
    with pytest.raises(ValueError, match="usable as a boosting objective"):
        boosting.lightgbm_objective("hinge")
    with pytest.raises(ValueError, match="usable as a boosting objective"):
        boosting.xgboost_metric("no_such_loss")
    with pytest.raises(TypeError, match="fastloss loss function"):
        boosting.lightgbm_objective(np.square)
    with pytest.raises(TypeError, match="no option 'delat'"):
        boosting.lightgbm_objective("huber", delat=2.0)
    with pytest.raises(TypeError, match="set by the adapter"):
        boosting.xgboost_objective("mse", weight=np.ones(3))
    with pytest.raises(TypeError, match="set by the adapter"):
        boosting.xgboost_objective("softmax_cross_entropy", reduction="mean")
    with pytest.raises(TypeError, match="focal objectives only"):
        boosting.lightgbm_objective("mse", hessian="fisher")
    with pytest.raises(ValueError, match="hessian must be one of"):
        boosting.lightgbm_objective("sigmoid_focal", hessian="abs")
    with pytest.raises(ValueError, match="delta"):
        boosting.lightgbm_objective("huber", delta=-1.0)
    with pytest.raises(ValueError, match="quantile"):
        boosting.xgboost_metric("pinball", quantile=1.5)
    objective = boosting.xgboost_objective("softmax_cross_entropy")
    with pytest.raises(ValueError, match="class indices"):
        objective(np.array([0.0, 1.5]), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(n, k\) raw scores"):
        objective(np.array([0.0, 1.0]), np.zeros(2, np.float32))
    assert "hessian='floor'" in repr(boosting.lightgbm_objective(fastloss.sigmoid_focal))


def test_metrics_are_the_weighted_mean_loss():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(50, 4))
    labels = rng.integers(0, 4, 50).astype(np.float32)
    w = sample_weights(50)
    expected = fastloss.softmax_cross_entropy(scores, labels.astype(int), sample_weight=w,
                                              reduction="sum")[0] / w.sum()
    name, value, higher_better = boosting.lightgbm_metric("softmax_cross_entropy")(
        labels, np.asfortranarray(scores), w)
    assert (name, higher_better) == ("softmax_cross_entropy", False)
    assert value == pytest.approx(expected, rel=1e-12)
    metric = boosting.xgboost_metric("softmax_cross_entropy")
    assert metric.__name__ == "softmax_cross_entropy"
    assert metric(labels, scores, sample_weight=w) == pytest.approx(expected, rel=1e-12)
    plain = fastloss.huber(scores[:, 0], labels, delta=0.5)[0]
    assert boosting.lightgbm_metric("huber", delta=0.5)(labels, scores[:, 0])[1] == \
        pytest.approx(plain, rel=1e-12)


# ============================================================== training real boosters

TASKS = {  # task: (data fixture, fastloss loss, LightGBM's, XGBoost's built-in objective)
    "binary": ("binary", "binary_cross_entropy_with_logits", "binary", "binary:logistic"),
    "multiclass": ("multiclass", "softmax_cross_entropy", "multiclass", "multi:softprob"),
    "regression": ("regression", "mse", "regression", "reg:squarederror"),
}


def hessian_factors(task, library, k):
    """(a, b): fastloss's gradient and hessian are a and b times the built-in objective's.
    A Newton leaf -G / (H + lambda) is then the built-in one with the learning rate times
    b / a, lambda and the minimum leaf hessian times b, and every split gain a^2 / b times
    the built-in one (the same splits)."""
    if task == "multiclass":   # p (1 - p) against k / (k - 1) p (1 - p), or 2 p (1 - p)
        return 1.0, ((k - 1) / k if library == "lightgbm" else 0.5)
    if task == "regression":   # (x - y)^2 against (x - y)^2 / 2
        return 2.0, 2.0
    return 1.0, 1.0


def lightgbm_raw(api, task, X, y, objective=None, *, weight=None, init=None, factors=(1, 1),
                 feval=None, rounds=ROUNDS, extra=None):
    """Raw scores on X of a LightGBM model trained on (X, y): built-in objective when
    `objective` is None, else the fastloss objective started from `init` (added back)."""
    a, b = factors
    k = int(y.max()) + 1 if task == "multiclass" else 1
    params = dict(LGB_PARAMS, learning_rate=LGB_PARAMS["learning_rate"] * b / a,
                  min_sum_hessian_in_leaf=1e-3 * b, **(extra or {}))
    n = len(y)
    init_array = None
    if objective is not None:
        init_array = np.tile(init, (n, 1)) if task == "multiclass" else np.full(n, init)
    record = {}
    if api == "native":
        params["objective"] = objective if objective is not None else TASKS[task][2]
        params["metric"] = "None"
        if task == "multiclass":
            params["num_class"] = k
        data = lgb.Dataset(X, y, weight=weight, init_score=init_array)
        booster = lgb.train(params, data, rounds, valid_sets=[data], valid_names=["train"],
                            feval=feval, callbacks=[lgb.record_evaluation(record)])
        raw = booster.predict(X, raw_score=True)
    else:
        names = {"num_threads": "n_jobs", "min_data_in_leaf": "min_child_samples",
                 "min_sum_hessian_in_leaf": "min_child_weight", "seed": "random_state",
                 "lambda_l2": "reg_lambda"}
        kwargs = {names.get(key, key): value for key, value in params.items()}
        model_class = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
        model = model_class(objective=objective, n_estimators=rounds, **kwargs)
        model.fit(X, y, sample_weight=weight, init_score=init_array,
                  eval_set=[(X, y)] if feval else None, eval_sample_weight=[weight] if feval
                  else None, eval_init_score=[init_array] if feval else None,
                  eval_metric=feval, callbacks=[lgb.record_evaluation(record)])
        raw = model.predict(X, raw_score=True)
        record = {"train": record.get("training", {})}
    if init is not None and objective is not None:
        raw = raw + init
    return raw, record


def xgboost_raw(api, task, X, y, objective=None, *, weight=None, init=None, factors=(1, 1),
                feval=None, rounds=ROUNDS, extra=None):
    """As lightgbm_raw, for XGBoost; `init` is the base_score (kept in the model)."""
    a, b = factors
    k = int(y.max()) + 1 if task == "multiclass" else 1
    params = dict(XGB_PARAMS, eta=XGB_PARAMS["eta"] * b / a, reg_lambda=1.0 * b,
                  min_child_weight=1.0 * b, **(extra or {}))
    if objective is not None:   # init: XGBoostObjective.base_score (a vector for k classes)
        params["base_score"] = init
    record = {}
    if api == "native":
        if objective is None:
            params["objective"] = TASKS[task][3]
        else:
            params["disable_default_eval_metric"] = 1
        if task == "multiclass":
            params["num_class"] = k
        data = xgb.DMatrix(X, y, weight=weight)
        booster = xgb.train(params, data, rounds, obj=objective, evals=[(data, "train")],
                            evals_result=record, custom_metric=feval, verbose_eval=False)
        raw = booster.predict(xgb.DMatrix(X), output_margin=True)
    else:
        kwargs = {"learning_rate" if key == "eta" else "n_jobs" if key == "nthread"
                  else "random_state" if key == "seed" else key: value
                  for key, value in params.items()}
        model_class = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
        if objective is not None:
            kwargs["objective"] = objective
            kwargs["disable_default_eval_metric"] = 1
        model = model_class(n_estimators=rounds, eval_metric=feval, **kwargs)
        model.fit(X, y, sample_weight=weight, eval_set=[(X, y)] if feval else None,
                  sample_weight_eval_set=[weight] if feval else None, verbose=False)
        raw = model.predict(X, output_margin=True)
        record = {"train": model.evals_result().get("validation_0", {})} if feval else {}
    return raw, record


TRAINERS = {"lightgbm": (lightgbm_raw, boosting.lightgbm_objective, boosting.lightgbm_metric),
            "xgboost": (xgboost_raw, boosting.xgboost_objective, boosting.xgboost_metric)}


def start(objective, library, api, task, y, weight=None):
    """Where the fastloss model starts: LightGBM's init_score; XGBoost's base_score, which
    the binary XGBClassifier reads as a probability (XGBoost 3.2 runs a callable objective
    under objective="binary:logistic" there)."""
    if library == "lightgbm":
        return objective.init_score(y, sample_weight=weight)
    return objective.base_score(y, weight, classifier=api == "sklearn" and task == "binary")


def assert_same_model(custom, builtin):
    """The comparison of the models' raw scores (also the detector of a wrong layout). For k
    classes the scores of a row are compared up to a common shift (the softmax does not see
    it: XGBoost's multi:softprob starts from log priors minus their mean, LightGBM's and
    fastloss's init_score from the log priors)."""
    if custom.ndim == 2:
        custom = custom - custom.mean(axis=1, keepdims=True)
        builtin = builtin - builtin.mean(axis=1, keepdims=True)
    scale = max(1.0, float(np.abs(builtin).max()))
    np.testing.assert_allclose(custom, builtin, rtol=0, atol=TOLERANCE * scale)


TOLERANCE = 1e-5   # measured: <= 6.1e-7 of the largest raw score (float32 rounding)


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
@pytest.mark.parametrize("api", ["native", "sklearn"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_same_model_as_the_builtin_objective(request, library, api, task, weighted):
    X, y = request.getfixturevalue(TASKS[task][0])
    weight = sample_weights(len(y)) if weighted else None
    train, make_objective, _ = TRAINERS[library]
    k = int(y.max()) + 1 if task == "multiclass" else 1
    objective = make_objective(TASKS[task][1])
    init = start(objective, library, api, task, y, weight)
    builtin, _ = train(api, task, X, y, weight=weight)
    custom, _ = train(api, task, X, y, objective, weight=weight, init=init,
                      factors=hessian_factors(task, library, k))
    assert custom.shape == builtin.shape == ((len(y), k) if k > 1 else (len(y),))
    assert_same_model(custom, builtin)
    if weighted:   # the weights changed the built-in model, and ours alike
        unweighted, _ = train(api, task, X, y)
        assert np.abs(unweighted - builtin).max() > 100 * TOLERANCE * max(1, np.abs(builtin).max())


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_a_transposed_multiclass_result_is_detected(multiclass, library):
    """A multiclass objective that hands back its (n, k) arrays in the other memory order
    (the class-major / sample-major confusion of LightGBM#1308) trains a different model, and
    the comparison above fails on it."""
    X, y = multiclass
    train, make_objective, _ = TRAINERS[library]
    objective = make_objective("softmax_cross_entropy")
    init = start(objective, library, "native", "multiclass", y)

    def transposed(first, second, *args, **kwargs):
        grad, hess = objective(first, second, *args, **kwargs)
        n, k = grad.shape
        order = "C" if grad.flags.f_contiguous else "F"   # the other one
        return (np.reshape(grad.ravel(order="K"), (n, k), order=order),
                np.reshape(hess.ravel(order="K"), (n, k), order=order))

    factors = hessian_factors("multiclass", library, 10)
    builtin, _ = train("native", "multiclass", X, y)
    custom, _ = train("native", "multiclass", X, y, objective, init=init, factors=factors)
    assert_same_model(custom, builtin)
    wrong, _ = train("native", "multiclass", X, y, transposed, init=init, factors=factors)
    with pytest.raises(AssertionError):
        assert_same_model(wrong, builtin)


def standardized(y):
    return (y - y.mean()) / y.std()


TRAINING = [  # (task, loss, options, how the regression target is given)
    ("binary", "sigmoid_focal", {"alpha": 0.25, "gamma": 2.0}, None),
    ("binary", "sigmoid_focal", {"alpha": -1, "gamma": 1.0, "hessian": "fisher"}, None),
    ("multiclass", "softmax_cross_entropy", {"label_smoothing": 0.1}, None),
    ("multiclass", "softmax_focal", {"gamma": 2.0}, None),
    ("regression", "huber", {"delta": 1.0}, standardized),
    ("regression", "pinball", {"quantile": 0.8}, standardized),
    ("regression", "tweedie", {"power": 1.5}, None),
]


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
@pytest.mark.parametrize("api", ["native", "sklearn"])
@pytest.mark.parametrize("task, loss, options, transform", TRAINING,
                         ids=[f"{row[1]}-{i}" for i, row in enumerate(TRAINING)])
def test_objectives_train_and_metrics_agree(request, library, api, task, loss, options,
                                            transform):
    X, y = request.getfixturevalue(TASKS[task][0])
    if transform is not None:
        y = transform(y)
    train, make_objective, make_metric = TRAINERS[library]
    objective = make_objective(loss, **options)
    metric = make_metric(loss, **{k: v for k, v in options.items() if k != "hessian"})
    init = start(objective, library, api, task, y)
    raw, record = train(api, task, X, y, objective, init=init, feval=metric)
    values = np.asarray(record["train"][loss])
    assert len(values) == ROUNDS
    every_fifth = values[4::5]
    assert (np.diff(every_fifth) < 0).all(), values
    function = getattr(fastloss, loss)
    plain = {k: v for k, v in options.items() if k != "hessian"}
    if task == "multiclass":
        expected = function(raw, y.astype(int), **plain)[0]
    else:
        expected = function(raw, y, **plain)[0]
    # XGBoost keeps a metric's value as printed (6 decimals); the metric itself is exact
    assert values[-1] == pytest.approx(expected, rel=1e-5, abs=1e-6 if library == "xgboost"
                                       else 0)
    if library == "lightgbm":
        name, value, higher_better = metric(y, raw)
        assert higher_better is False
    else:
        name, value = metric(raw, xgb.DMatrix(X, y))
    assert name == loss and value == pytest.approx(expected, rel=1e-12)


def test_readme_examples_run():
    """The README's "Gradient boosting" examples, run as written."""
    import re
    from pathlib import Path

    threadpoolctl = pytest.importorskip("threadpoolctl")

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Gradient boosting: `fastloss.boosting`", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    namespace = {}
    # one OpenMP thread: the examples take the boosters' default (every core), which on a
    # busy 2-core machine stalls in OpenMP barriers
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        exec(compile(blocks[0], "README (LightGBM)", "exec"), namespace)
        y, raw = namespace["y"], namespace["raw"]
        assert ((raw > 0) == (y == 1)).mean() > 0.95
        exec(compile(blocks[1], "README (XGBoost)", "exec"), namespace)
    probabilities, y = namespace["probabilities"], namespace["y"]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert (probabilities.argmax(axis=1) == y).mean() > 0.95


def test_fortran_copy_by_blocks():
    """_fortran_copy (LightGBM's order for the results) over several blocks and a partial one:
    the values of the C-ordered array, Fortran-ordered, and a view under ravel(order="F")."""
    rng = np.random.default_rng(12)
    for n, k in [(2 * boosting._TRANSPOSE_ROWS + 7, 3), (5, 4), (0, 2)]:
        a = rng.normal(size=(n, k)).astype(np.float32)
        got = boosting._fortran_copy(a)
        assert got.flags.f_contiguous and got.dtype == a.dtype
        np.testing.assert_array_equal(got, a)
        if n:
            assert np.shares_memory(got.ravel(order="F"), got)
