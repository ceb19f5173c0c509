"""The option sets of the softmax class-axis tests (tests/test_class_axis.py) and of their
hessians (tests/test_class_hessians.py): keys with "_" steer the makers there ("_sw":
sample weights of shape (N,) or the sample shape, "_target": "prob", "_alpha": per-class
alpha, "weight": True a drawn class weight), and the maker, ids and comparison both use."""

import numpy as np

import cases

CE_OPTIONS = [
    {},
    {"weight": True},
    {"ignore_index": 1, "label_smoothing": 0.2},
    {"_sw": "sample"},
    {"_sw": "full", "weight": True, "ignore_index": 0},
    {"z_loss": 0.05},
    {"logit_softcap": 3.0},
    {"weight": True, "ignore_index": 2, "label_smoothing": 0.1, "_sw": "full",
     "z_loss": 0.01, "logit_softcap": 2.5},
    {"_target": "prob"},
    {"_target": "prob", "weight": True, "label_smoothing": 0.3, "_sw": "sample",
     "z_loss": 0.02, "logit_softcap": 4.0},
]
FOCAL_OPTIONS = [
    {},
    {"gamma": 0.0},
    {"gamma": 1.0, "alpha": 0.25, "ignore_index": 1},
    {"_alpha": True, "gamma": 2.5, "_sw": "full"},
    {"_sw": "sample", "gamma": 0.5, "ignore_index": 0},
]


def option_id(value):
    """A test id: a name as it is, an option set as key=value pairs."""
    if isinstance(value, str):
        return value
    return "-".join(f"{k.lstrip('_')}={v}" if v is not True else k.lstrip("_")
                    for k, v in value.items()) or "default"


def make(rng, dtype, shape, option, scale=3.0):
    """(logits, target, kwargs) of an (N, C) or K-dim call with `option` (keys with "_" steer
    the maker; about 30 % of the targets are ignore_index where the option has one)."""
    n, c = shape[:2]
    sample_shape = (n,) + tuple(shape[2:])
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    kwargs = {k: v for k, v in option.items() if not k.startswith("_")}
    if kwargs.get("weight") is True:
        kwargs["weight"] = rng.uniform(0.2, 2.0, c).astype(dtype)
    if option.get("_alpha"):
        kwargs["alpha"] = rng.uniform(0.2, 2.0, c).astype(dtype)
    if option.get("_target") == "prob":
        target = np.moveaxis(rng.dirichlet(np.ones(c), sample_shape), -1, 1).astype(dtype)
    else:
        target = rng.integers(0, c, sample_shape)
        if "ignore_index" in kwargs:
            target[rng.random(sample_shape) < 0.3] = kwargs["ignore_index"]
    if option.get("_sw") == "sample":
        kwargs["sample_weight"] = rng.uniform(0.0, 2.0, n).astype(dtype)
    elif option.get("_sw") == "full":
        kwargs["sample_weight"] = rng.uniform(0.0, 2.0, sample_shape).astype(dtype)
    return x, target, kwargs


def assert_close(actual, expected, dtype, what=""):
    cases.assert_close(actual, expected, dtype, what, float32=(3e-5, 3e-6))
