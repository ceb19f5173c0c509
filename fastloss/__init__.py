"""fastloss: fused forward-and-gradient loss kernels for NumPy arrays.

Every loss function returns ``(loss, grad)`` from one pass over the input. See README.md and
the docstring of each function for the maths; ``fastloss.reference`` holds the plain NumPy
implementations the kernels are tested against.
"""

def _import_kernels():
    """The compiled module, or one clear ImportError when this is an unbuilt source tree
    (rather than a circular-import traceback: see setup.py, BuildExt._copy_into_source_tree)."""
    import glob
    import os

    try:
        from . import _kernels
    except ImportError:
        here = os.path.dirname(os.path.abspath(__file__))
        if glob.glob(os.path.join(here, "_kernels*.so")) + glob.glob(os.path.join(here, "_kernels*.pyd")):
            raise  # built but broken: the original error says why
        raise ImportError(
            f"fastloss is being imported from its source tree ({here}), where its compiled "
            f"kernels are not built: run `pip install .` in {os.path.dirname(here)} (it builds "
            f"them there too), or run Python from another directory to use an installed fastloss"
        ) from None
    return _kernels


_kernels = _import_kernels()

from ._api import LossGradHess, LossResult, softmax_cross_entropy, softmax_focal
from ._elementwise import FUNCTIONS as _ELEMENTWISE_FUNCTIONS
from ._elementwise import gaussian_kl, l1_penalty, l2_penalty

# the element-wise losses of the loss table (fastloss/_table.py), each a function made there
globals().update(_ELEMENTWISE_FUNCTIONS)
# class-axis losses (issue 13)
from ._class_losses import kl_divergence_with_logits, multi_margin  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "LossResult",
    "LossGradHess",
    "softmax_cross_entropy",
    "softmax_focal",
    *_ELEMENTWISE_FUNCTIONS,
    "gaussian_kl",
    "l1_penalty",
    "l2_penalty",
    "multi_margin",
    "kl_divergence_with_logits",
    "openmp_enabled",
    "show_config",
    "simd_level",
    # the buffer cache of returned arrays (issue 18)
    "set_buffer_cache",
]

# the buffer cache of returned arrays (issue 18); its cap is read from the environment here
from . import _buffers
from ._buffers import set_buffer_cache
# issue 17, large vocabularies: linear_cross_entropy (the LM head without the (N, V) logits)
from ._linear_ce import linear_cross_entropy  # noqa: E402

__all__ += ["linear_cross_entropy"]


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
        # the buffer cache of returned arrays (issue 18)
        "buffer_cache": _buffers.describe(),
    }
    width = max(map(len, info))
    lines = [f"{key:<{width}} : {value}" for key, value in info.items()]
    print("\n".join(lines), file=file if file is not None else sys.stdout)
    return info

# ---- sets and pairs (issue 14): the overlap losses and the pair and triplet losses
from ._sets_pairs import (  # noqa: E402
    contrastive,
    cosine_embedding,
    dice,
    jaccard,
    margin_ranking,
    triplet_margin,
    tversky,
)

__all__ += ["dice", "jaccard", "tversky", "triplet_margin", "contrastive", "cosine_embedding",
            "margin_ranking"]
