# Type stub for the compiled module fastloss/_kernels.pyx (internal: the public API is in
# fastloss/__init__.py; these functions trust their arguments, see _api.py).
from typing import Any, List, Optional, Tuple

import numpy as np

BLOCK_SIZE_ELEMENTS: int
SERIAL_THRESHOLD_ELEMENTS: int

def _set_serial_threshold(elements: int) -> int: ...

MATH_FUNCTIONS: Tuple[str, ...]

def softmax_cross_entropy(
    logits: np.ndarray,
    target: Optional[np.ndarray],
    target_prob: Optional[np.ndarray],
    weight: Optional[np.ndarray],
    ignore_index: int,
    label_smoothing: float,
    weight_sum: float,
    grad_scale: float,
    grad: Optional[np.ndarray],
    loss_out: Optional[np.ndarray],
    n_threads: int,
) -> float: ...
def softmax_cross_entropy_fast(
    logits: Any,
    target: Any,
    weight: Any,
    ignore_index: Any,
    label_smoothing: Any,
    reduction: Any,
    compute_grad: Any,
    out: Any,
    n_threads: Any,
) -> Optional[Tuple[Any, Optional[np.ndarray]]]: ...
ELEMENTWISE_CHUNK: int
ELEMENTWISE_BCE: int
ELEMENTWISE_HUBER: int
ELEMENTWISE_SMOOTH_L1: int
ELEMENTWISE_SIGMOID_FOCAL: int

def binary_cross_entropy_with_logits(
    logits: np.ndarray,
    target: np.ndarray,
    weight: Optional[np.ndarray],
    weight_period: int,
    pos_weight: Optional[np.ndarray],
    pos_weight_period: int,
    grad_scale: float,
    grad: Optional[np.ndarray],
    loss_out: Optional[np.ndarray],
    n_threads: int,
) -> float: ...
def huber(
    input: np.ndarray,
    target: np.ndarray,
    delta: float,
    loss_scale: float,
    grad_scale: float,
    grad: Optional[np.ndarray],
    loss_out: Optional[np.ndarray],
    n_threads: int,
) -> float: ...
def sigmoid_focal(
    logits: np.ndarray,
    target: np.ndarray,
    alpha: float,
    gamma: float,
    grad_scale: float,
    grad: Optional[np.ndarray],
    loss_out: Optional[np.ndarray],
    n_threads: int,
) -> float: ...
def softmax_focal(
    logits: np.ndarray,
    target: np.ndarray,
    alpha: Optional[np.ndarray],
    alpha_scalar: float,
    gamma: float,
    ignore_index: int,
    grad_scale: float,
    grad: Optional[np.ndarray],
    loss_out: Optional[np.ndarray],
    n_threads: int,
) -> float: ...
def elementwise_fast(
    kind: int,
    input: Any,
    target: Any,
    first: Any,
    second: Any,
    reduction: Any,
    compute_grad: Any,
    out: Any,
    n_threads: Any,
) -> Optional[Tuple[Any, Optional[np.ndarray]]]: ...
def softmax_focal_fast(
    logits: Any,
    target: Any,
    alpha: Any,
    gamma: Any,
    ignore_index: Any,
    reduction: Any,
    compute_grad: Any,
    out: Any,
    n_threads: Any,
) -> Optional[Tuple[Any, Optional[np.ndarray]]]: ...
def check_class_indices(
    target: np.ndarray, n_classes: int, ignore_index: int, weight: Optional[np.ndarray]
) -> Tuple[int, float]: ...
def math_apply(name: str, x: np.ndarray, out: np.ndarray) -> None: ...
def build_info() -> dict: ...
def openmp_enabled() -> bool: ...
def default_n_threads() -> int: ...
def cpu_quota() -> int: ...
def isa_levels() -> List[Tuple[str, bool, bool]]: ...
def best_isa() -> str: ...
def active_isa() -> str: ...
def set_isa(name: str) -> None: ...
def _set_result_type(result_type: type) -> None: ...

# class-axis losses (issue 13)
CLASS_TILE_MAX: int

def class_axis_tile(n_classes: int, inner: int) -> int: ...
def class_axis(
    focal: bool,
    logits: np.ndarray,
    n_samples: int,
    n_classes: int,
    inner: int,
    target: Optional[np.ndarray],
    target_prob: Optional[np.ndarray],
    weight: Optional[np.ndarray],
    sample_weight: Optional[np.ndarray],
    sample_weight_per_position: bool,
    ignore_index: int,
    label_smoothing: float,
    weight_sum: float,
    grad_scale: float,
    z_loss: float,
    softcap: float,
    alpha_scalar: float,
    gamma: float,
    grad: Optional[np.ndarray],
    loss_out: Optional[np.ndarray],
    lse_out: Optional[np.ndarray],
    n_threads: int,
) -> float: ...
def multi_margin(
    input: np.ndarray,
    target: np.ndarray,
    weight: Optional[np.ndarray],
    p: int,
    margin: float,
    grad_scale: float,
    grad: Optional[np.ndarray],
    loss_out: Optional[np.ndarray],
    n_threads: int,
) -> float: ...
def distill_kl(
    logits: np.ndarray,
    target_logits: np.ndarray,
    temperature: float,
    grad_scale: float,
    grad: Optional[np.ndarray],
    loss_out: Optional[np.ndarray],
    n_threads: int,
) -> float: ...
