"""The buffer cache of the arrays fastloss returns: its cap, from the environment or
``fastloss.set_buffer_cache`` (issue 18).

A gradient returned by a call without ``out=`` (and the per-sample losses of
``reduction="none"``) is allocated through a NumPy memory handler (NEP 49) that keeps a few
recently freed buffers, so that a training loop calling ``loss, grad = fl.some_loss(x, y)``
reuses the previous step's memory instead of faulting in fresh pages every step. The arrays
are ordinary ndarrays that own their data; their memory comes back to the cache only when
NumPy frees them (the array and all its views gone). The allocator is
fastloss/_src/fl_buffers.c; the NumPy side is fastloss/_buffers.pxi.
"""

from __future__ import annotations

import operator
import os
import re
import warnings

from . import _kernels

ENVIRONMENT_VARIABLE = "FASTLOSS_BUFFER_CACHE"
_DEFAULT_CAP = 1 << 30  # 1 GiB, or an eighth of the physical memory if that is less
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_origin = "default"  # where the cap in force came from, for show_config()


def default_cap() -> int:
    """The cap without the environment variable: 1 GiB, or 1/8 of the physical memory if
    that is smaller (enough for one gradient of the sizes where the cache matters)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return _DEFAULT_CAP
    return min(_DEFAULT_CAP, physical // 8) if physical > 0 else _DEFAULT_CAP


def parse_size(text: str) -> int:
    """Bytes from "0", "off", "268435456", "512M", "512MiB", "1G", "1.5GB" (units are binary:
    K = 2^10, M = 2^20, G = 2^30, T = 2^40); ValueError for anything else."""
    value = text.strip().lower()
    if value in ("off", "no", "false", "none", "disabled"):
        return 0
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?", value)
    if match is None:
        raise ValueError(f"{text!r} is not a size in bytes (e.g. 0, off, 268435456, 512M, 1G)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit]) if "." in number else int(number) * _UNITS[unit]


def set_buffer_cache(max_bytes: int) -> int:
    """Set the most memory, in bytes, that fastloss keeps in idle buffers for the arrays it
    returns; 0 turns the cache off. Idle buffers beyond the new cap are freed before this
    returns. Returns the previous cap.

    The cache holds buffers of returned arrays that have been freed (at most 32 of them, each
    at least 128 KiB), and hands them out again to later calls. The default is 1 GiB (or 1/8
    of the physical memory, if less); the environment variable ``FASTLOSS_BUFFER_CACHE``
    (bytes, or with a binary unit: ``512M``, ``2G``; ``0`` or ``off`` to disable) sets it at
    import. Results are identical with and without the cache.
    """
    if isinstance(max_bytes, bool):
        raise TypeError("max_bytes must be an int (bytes), got a bool")
    try:
        value = operator.index(max_bytes)
    except TypeError:
        raise TypeError(f"max_bytes must be an int (bytes), got {type(max_bytes).__name__}") from None
    if value < 0:
        raise ValueError(f"max_bytes must be >= 0 (0 turns the cache off), got {value}")
    global _origin
    _origin = "set_buffer_cache()"
    return _kernels._buffer_cache_set_max(min(value, 2**64 - 1))


def _configure_from_environment() -> None:
    global _origin
    text = os.environ.get(ENVIRONMENT_VARIABLE)
    cap = default_cap()
    if text is not None and text.strip():
        try:
            cap = parse_size(text)
            _origin = f"{ENVIRONMENT_VARIABLE}={text.strip()}"
        except ValueError as error:
            warnings.warn(f"{ENVIRONMENT_VARIABLE}: {error}; using the default cap of "
                          f"{cap} bytes", RuntimeWarning, stacklevel=3)
    _kernels._buffer_cache_set_max(cap)


def describe() -> str:
    """One line for show_config(): the cap, where it came from, what is held now."""
    stats = _kernels._buffer_cache_stats()
    cap = stats["max_bytes"]
    setting = "off" if cap == 0 else f"cap {cap / 2**20:.0f} MiB"
    return (f"{setting} (from {_origin}); holding {stats['cached_buffers']} buffers, "
            f"{stats['cached_bytes'] / 2**20:.1f} MiB; {stats['hits']} hits, "
            f"{stats['misses']} misses")


_configure_from_environment()
