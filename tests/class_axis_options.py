"""The option sets of the softmax class-axis tests (tests/test_class_axis.py) and of their
hessians (tests/test_class_hessians.py): keys with "_" steer the makers there ("_sw":
sample weights of shape (N,) or the sample shape, "_target": "prob", "_alpha": per-class
alpha, "weight": True a drawn class weight)."""

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
