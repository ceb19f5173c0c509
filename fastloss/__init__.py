"""fastloss: fused forward-and-gradient loss kernels for NumPy arrays.

Every loss function returns ``(loss, grad)`` from one pass over the input. See README.md and
the docstring of each function for the maths; ``fastloss.reference`` holds the plain NumPy
implementations the kernels are tested against.
"""

from . import _kernels
from ._api import LossResult, softmax_cross_entropy
from ._api import (
    binary_cross_entropy_with_logits,
    huber,
    sigmoid_focal,
    smooth_l1,
    softmax_focal,
)
# class-axis losses (issue 13)
from ._class_losses import kl_divergence_with_logits, multi_margin

__version__ = "0.1.0"

__all__ = [
    "LossResult",
    "softmax_cross_entropy",
    "binary_cross_entropy_with_logits",
    "huber",
    "smooth_l1",
    "sigmoid_focal",
    "softmax_focal",
    "multi_margin",
    "kl_divergence_with_logits",
    "openmp_enabled",
    "show_config",
    "simd_level",
]


def openmp_enabled() -> bool:
    """True when the kernels were compiled with OpenMP and can use several threads."""
    return _kernels.openmp_enabled()


def simd_level() -> str:
    """The instruction set the kernels dispatched to: "avx512", "avx2" or "baseline"."""
    return _kernels.active_isa()


def _select_simd_from_environment() -> None:
    """FASTLOSS_SIMD=baseline|avx2|avx512 lowers the dispatched level (for testing or
    comparing); a level the CPU cannot run falls back to the best one that it can."""
    import os
    import warnings

    requested = os.environ.get("FASTLOSS_SIMD", "").strip().lower()
    best = _kernels.best_isa()
    names = [name for name, _, _ in _kernels.isa_levels()]
    if requested and requested in names and names.index(requested) <= names.index(best):
        _kernels.set_isa(requested)
    else:
        if requested:
            warnings.warn(f"FASTLOSS_SIMD={requested!r} is not available here; using {best!r}",
                          RuntimeWarning, stacklevel=2)
        _kernels.set_isa(best)


_select_simd_from_environment()


def show_config(file=None) -> dict:
    """Print (and return) how fastloss was built and what it runs with: OpenMP, compiler
    flags, the SIMD level dispatched to and the levels available, the default thread count."""
    import platform
    import sys

    build = _kernels.build_info()
    levels = _kernels.isa_levels()
    info = {
        "fastloss": __version__,
        "python": sys.version.split()[0],
        "numpy": __import__("numpy").__version__,
        "machine": platform.machine(),
        "openmp": openmp_enabled(),
        "default_n_threads": _kernels.default_n_threads(),
        "simd_level": simd_level(),
        "simd_levels": {name: ("compiled" if built else "not built") + (", CPU supports" if ok else "")
                        for name, built, ok in levels},
        "compile_flags": build["compile_flags"],
        "link_flags": build["link_flags"],
        "compiler": build["compiler"],
        "debug_build": build["debug"],
        "block_elements": _kernels.BLOCK_SIZE_ELEMENTS,
        "serial_below_elements": _kernels.SERIAL_THRESHOLD_ELEMENTS,
    }
    width = max(map(len, info))
    lines = [f"{key:<{width}} : {value}" for key, value in info.items()]
    print("\n".join(lines), file=file if file is not None else sys.stdout)
    return info
