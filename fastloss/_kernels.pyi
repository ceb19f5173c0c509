# Type stub for the compiled module fastloss/_kernels.pyx (internal: the public API is in
# fastloss/__init__.py; these functions trust their arguments, see _api.py).
from typing import Any, List, Optional, Tuple

import numpy as np

BLOCK_SIZE_ELEMENTS: int
SERIAL_THRESHOLD_ELEMENTS: int

def _set_serial_threshold(elements: int) -> int: ...
def _set_stream_threshold(nbytes: int) -> int: ...

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
SOFTMAX_PLAIN_WIDE_BYTES: int
OVERLAP_STASH_BYTES: int
OVERLAP_STREAM_MIN_CLASSES: int
ELEMENTWISE_KERNEL_COUNT: int

def elementwise(
    kind: int,
    input: np.ndarray,
    target: np.ndarray,
    weight: Optional[np.ndarray],
    weight_period: int,
    param: Optional[np.ndarray],
    param_period: int,
    scalars: Tuple[float, ...],
    grad_scale: float,
    grad: Optional[np.ndarray],
    hess: Optional[np.ndarray],
    loss_out: Optional[np.ndarray],
    n_threads: int,
) -> float: ...
def penalty(params: np.ndarray, grad: np.ndarray, strength: float, squared: bool,
            accumulate: bool, n_threads: int) -> float: ...
def penalty_fast(params: Any, strength: Any, out: Any, accumulate: Any, n_threads: Any,
                 squared: bool) -> Optional[Tuple[float, np.ndarray]]: ...
def gaussian_kl(mean: np.ndarray, log_var: np.ndarray, grad_scale: float,
                grad_mean: Optional[np.ndarray], grad_log_var: Optional[np.ndarray],
                hess_mean: Optional[np.ndarray], hess_log_var: Optional[np.ndarray],
                loss_out: Optional[np.ndarray], n_threads: int) -> float: ...
def count_outside(values: np.ndarray, low: float, high: float, n_threads: int) -> int: ...
def _register_domains(kind: int, domains: List[Tuple[Optional[float], Optional[float], bool, bool]],
                      input_domain: Optional[Tuple[float, float]] = ...) -> None: ...
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
    scalars: Tuple[Any, ...],
    n_checked: int,
    reduction: Any,
    compute_grad: Any,
    out: Any,
    n_threads: Any,
) -> Optional[Any]: ...
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

# the buffer cache of returned arrays (issue 18; fastloss/_buffers.pxi)
BUFFER_MIN_BYTES: int
BUFFER_SLOTS: int

def result_empty(shape: Any, dtype: Any) -> np.ndarray: ...
def _buffer_cache_set_max(max_bytes: int) -> int: ...
def _buffer_cache_stats() -> dict: ...
# ---- sets and pairs (issue 14)
ACTIVATIONS: dict
OVERLAP_DICE: int
OVERLAP_JACCARD: int
OVERLAP_TVERSKY: int
PAIR_TRIPLET: int
PAIR_CONTRASTIVE: int
PAIR_COSINE: int
PAIR_RANKING: int
NORM_2: int
NORM_1: int
NORM_INF: int
NORM_GENERAL: int

def overlap(
    input: np.ndarray,
    target: Optional[np.ndarray],
    target_index: Optional[np.ndarray],
    weight: np.ndarray,
    activation: int,
    kind: int,
    squared: bool,
    batch: bool,
    first_class: int,
    smooth: float,
    alpha: float,
    beta: float,
    grad_scale: float,
    grad: Optional[np.ndarray],
    n_threads: int,
) -> Tuple[float, np.ndarray]: ...
def pairs(
    kind: int,
    x1: np.ndarray,
    x2: np.ndarray,
    x3: Optional[np.ndarray],
    target: Optional[np.ndarray],
    g1: Optional[np.ndarray],
    g2: Optional[np.ndarray],
    g3: Optional[np.ndarray],
    loss_out: Optional[np.ndarray],
    norm: int,
    swap: bool,
    p: float,
    eps: float,
    margin: float,
    grad_scale: float,
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
    hess: Optional[np.ndarray] = ...,   # issue 15: the with_hess kernels
) -> float: ...
def multi_margin(
    input: np.ndarray,
    target: np.ndarray,
    weight: Optional[np.ndarray],
    p: int,
    margin: float,
    grad_scale: float,
    grad: Optional[np.ndarray],
    hess: Optional[np.ndarray],
    loss_out: Optional[np.ndarray],
    n_threads: int,
) -> float: ...
def distill_kl(
    logits: np.ndarray,
    target_logits: np.ndarray,
    temperature: float,
    grad_scale: float,
    grad: Optional[np.ndarray],
    hess: Optional[np.ndarray],
    loss_out: Optional[np.ndarray],
    n_threads: int,
) -> float: ...
