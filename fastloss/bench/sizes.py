"""Sizes of the benchmark report: named sizes (tiny, cache, large), element counts and
explicit shapes (NxC, NxDxV, NxCxHxW)."""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional


@dataclasses.dataclass(frozen=True)
class Size:
    label: str
    n_elements: Optional[int] = None
    shape: Optional[tuple] = None
    named: bool = False   # tiny, cache or large (an entry may cap these: LossEntry.max_named)


def _cache_sizes() -> Dict[str, int]:
    """{"L1d": bytes, "L2": bytes, "L3": bytes} from Linux sysfs (per instance), else {}."""
    sizes: Dict[str, int] = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(base)):
            path = os.path.join(base, index)
            with open(os.path.join(path, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(path, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(path, "size")) as f:
                text = f.read().strip()
            if kind == "Instruction":
                continue
            factor = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:], 1)
            value = int(text.rstrip("KMG")) * factor
            sizes["L1d" if level == "1" else f"L{level}"] = value
    except (OSError, ValueError):
        pass
    return sizes


def _memory_bytes() -> int:
    """The machine's RAM in bytes (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 0


def named_sizes() -> Dict[str, int]:
    """tiny, cache and large as counts of elements of the differentiated input. large: 2^24,
    doubled while it is below twice the LLC in float32 (up to 2^27), and halved while a
    float64 array of it is more than 1/32 of the RAM (the NumPy reference of a loss holds a
    dozen temporaries of the input's size; never below 2^24; on a 23 GiB machine with a 480
    MiB LLC this makes large 2^26)."""
    llc = max(_cache_sizes().values(), default=32 * 1024 ** 2)
    large = 1 << 24
    while large * 4 < 2 * llc and large < (1 << 27):  # twice the LLC in float32
        large <<= 1
    memory = _memory_bytes()
    while memory and large * 8 * 32 > memory and large > (1 << 24):
        large >>= 1
    return {"tiny": 4096, "cache": 1 << 17, "large": large}


def parse_size(text: str) -> Size:
    """"tiny" | "cache" | "large" | an element count ("100000", "1e6") | a shape of 2 to 4
    positive integers: "NxC" (class losses, rows), "NxDxV" (linear_cross_entropy) or
    "NxCxHxW" (the overlap losses); an element-wise loss takes any of them."""
    text = text.strip().lower()
    names = named_sizes()
    if text in names:
        return Size(text, n_elements=names[text], named=True)
    if "x" in text:
        parts = text.split("x")
        if 2 <= len(parts) <= 4 and all(p.isdigit() and int(p) > 0 for p in parts):
            shape = tuple(int(p) for p in parts)
            return Size("x".join(map(str, shape)), shape=shape)
        raise ValueError(f"size {text!r}: a shape is 2 to 4 positive integers, NxC (e.g. "
                         "4096x1000), NxDxV or NxCxHxW")
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise ValueError(f"unknown size {text!r}: use {', '.join(names)}, an element count "
                         "or a shape NxC") from None
    if not value.is_integer() or value < 1:
        raise ValueError(f"size {text!r}: an element count must be a positive integer")
    return Size(str(int(value)), n_elements=int(value))
