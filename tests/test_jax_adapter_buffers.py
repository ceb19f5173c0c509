"""fastloss.jax: XLA's output buffers (issue 16's speed). A large output gets transparent huge
pages before the kernel writes it (fastloss.jax._advise_huge_pages), and the results are the
kernel's, bit for bit."""

from __future__ import annotations

import mmap
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import fastloss  # noqa: E402
import fastloss.jax as flj  # noqa: E402

LARGE = 1 << 20  # float32 elements: a 4 MiB gradient, the advice's threshold


def _vma_flags(address):
    """The VmFlags of the mapping holding `address` (/proc/self/smaps)."""
    start = end = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(v, 16) for v in head.split("-"))
            elif head == "VmFlags:" and start <= address < end:
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not sys.platform.startswith("linux") or flj._MADVISE is None,
                    reason="madvise(MADV_HUGEPAGE) is Linux's")
def test_advice_marks_the_whole_pages_of_a_large_buffer_only():
    size = 8 << 20
    with mmap.mmap(-1, size + 2 * mmap.PAGESIZE) as region:  # fresh memory, no advice yet
        base = np.frombuffer(region, dtype=np.uint8)
        address = base.ctypes.data
        assert "hg" not in _vma_flags(address + mmap.PAGESIZE)
        small = base[mmap.PAGESIZE + 8:mmap.PAGESIZE + 8 + (1 << 22) - 16]  # < 4 MiB
        flj._advise_huge_pages(small)
        assert "hg" not in _vma_flags(address + 2 * mmap.PAGESIZE)
        buffer = base[100:100 + size]  # not page-aligned: its first partial page is left alone
        flj._advise_huge_pages(buffer)
        assert "hg" in _vma_flags(address + mmap.PAGESIZE)
        assert "hg" in _vma_flags(address + size - mmap.PAGESIZE)
        assert "hg" not in _vma_flags(address)
        del base, small, buffer


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_large_outputs_are_advised_and_exact(reduction, monkeypatch):
    advised = []
    advise = flj._advise_huge_pages
    monkeypatch.setattr(flj, "_advise_huge_pages",
                        lambda array: (advised.append(array.nbytes), advise(array)))
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(LARGE) * 3).astype(np.float32)
    t = rng.standard_normal(LARGE).astype(np.float32)
    value, vjp = jax.vjp(jax.jit(lambda a: flj.huber(a, t, reduction=reduction)), jnp.asarray(x))
    grad = vjp(jnp.ones_like(value))[0]
    expected = fastloss.huber(x, t, reduction=reduction)
    np.testing.assert_array_equal(value, np.asarray(expected.loss, np.float32))
    np.testing.assert_array_equal(grad, expected.grad)
    # the gradient, and the per-sample losses of "none", are advised before the kernel runs
    assert advised == [4 * LARGE] * (2 if reduction == "none" else 1)
