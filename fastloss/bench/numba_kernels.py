"""The numba peer: a ``parallel=True`` kernel per loss.

Each kernel takes the loss's arrays (flattened for element-wise losses), then one
preallocated gradient per differentiated input, then the loss's parameters in the order
its entry names them; it writes the gradient of the *mean* loss (of the sum for the
penalties, which have no reduction) and returns that loss, summed in float64. Written from
the formulas of the losses' docstrings (fastloss/_table.py), in the plainest stable form.
Compiled on first use per dtype."""

from __future__ import annotations

import functools
import math
from typing import Callable, Dict

LOG2 = math.log(2.0)


@functools.lru_cache(maxsize=None)
def numba_kernels() -> Dict[str, Callable]:
    import numba
    from numba import prange

    jit = numba.njit(parallel=True)

    # ----------------------------------------------------------------- class-axis losses

    @jit
    def softmax_cross_entropy(x, y, grad):
        n, c = x.shape
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            m = x[i, 0]
            for j in range(c):
                m = max(m, x[i, j])
            s = 0.0
            for j in range(c):
                e = math.exp(x[i, j] - m)
                grad[i, j] = e
                s += e
            inv = 1.0 / s
            for j in range(c):
                grad[i, j] = grad[i, j] * inv * scale
            grad[i, y[i]] -= scale
            total += math.log(s) - (x[i, y[i]] - m)
        return total * scale

    @jit
    def softmax_focal(x, y, grad, gamma):
        n, c = x.shape
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            m = x[i, 0]
            for j in range(c):
                m = max(m, x[i, j])
            s = 0.0
            for j in range(c):
                e = math.exp(x[i, j] - m)
                grad[i, j] = e
                s += e
            log_pt = (x[i, y[i]] - m) - math.log(s)
            pt = math.exp(log_pt)
            q = 1.0 - pt
            # d/dx_j [-(1-pt)^g log pt] = coef * ([j==y] - p_j)
            coef = gamma * q ** (gamma - 1.0) * pt * log_pt - q ** gamma if q > 0 else 0.0
            total += -(q ** gamma) * log_pt
            inv = 1.0 / s
            for j in range(c):
                grad[i, j] = -coef * grad[i, j] * inv * scale
            grad[i, y[i]] += coef * scale
        return total * scale

    # ----------------------------------------------------------------- the loss table

    @jit
    def binary_cross_entropy_with_logits(z, t, grad):
        n = z.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            e = math.exp(-abs(z[i]))
            total += max(z[i], 0.0) - z[i] * t[i] + math.log1p(e)
            p = 1.0 / (1.0 + e) if z[i] >= 0 else e / (1.0 + e)
            grad[i] = (p - t[i]) * scale
        return total * scale

    @jit
    def sigmoid_focal(z, t, grad, alpha, gamma):
        n = z.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            e = math.exp(-abs(z[i]))
            ce = max(z[i], 0.0) - z[i] * t[i] + math.log1p(e)
            p = 1.0 / (1.0 + e) if z[i] >= 0 else e / (1.0 + e)
            q = 1.0 - (p * t[i] + (1.0 - p) * (1.0 - t[i]))      # 1 - p_t
            w = alpha * t[i] + (1.0 - alpha) * (1.0 - t[i]) if alpha >= 0 else 1.0
            total += w * ce * q ** gamma
            dq = -(2.0 * t[i] - 1.0) * p * (1.0 - p)            # d(1 - p_t)/dz
            dmod = gamma * q ** (gamma - 1.0) * dq if q > 0 else 0.0
            grad[i] = w * ((p - t[i]) * q ** gamma + ce * dmod) * scale
        return total * scale

    @jit
    def huber(x, t, grad, delta):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            d = x[i] - t[i]
            if abs(d) < delta:
                total += 0.5 * d * d
                grad[i] = d * scale
            else:
                total += delta * (abs(d) - 0.5 * delta)
                grad[i] = (delta if d > 0 else -delta) * scale
        return total * scale

    @jit
    def smooth_l1(x, t, grad, beta):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            d = x[i] - t[i]
            if abs(d) < beta:
                total += 0.5 * d * d / beta
                grad[i] = d / beta * scale
            else:
                total += abs(d) - 0.5 * beta
                grad[i] = (1.0 if d > 0 else -1.0) * scale
        return total * scale

    @jit
    def mse(x, t, grad):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            d = x[i] - t[i]
            total += d * d
            grad[i] = 2.0 * d * scale
        return total * scale

    @jit
    def mae(x, t, grad):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            d = x[i] - t[i]
            total += abs(d)
            grad[i] = (scale if d > 0 else -scale) if d != 0 else 0.0
        return total * scale

    @jit
    def pinball(x, t, grad, quantile):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            r = t[i] - x[i]
            if r >= 0:
                total += quantile * r
                grad[i] = -quantile * scale
            else:
                total += (quantile - 1.0) * r
                grad[i] = (1.0 - quantile) * scale
        return total * scale

    @jit
    def log_cosh(x, t, grad):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            d = x[i] - t[i]
            a = abs(d)
            total += a + math.log1p(math.exp(-2.0 * a)) - LOG2
            grad[i] = math.tanh(d) * scale
        return total * scale

    @jit
    def poisson_nll(x, t, grad, log_input, full, eps):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            if log_input:
                e = math.exp(x[i])
                value = e - t[i] * x[i]
                g = e - t[i]
            else:
                value = x[i] - t[i] * math.log(x[i] + eps)
                g = 1.0 - t[i] / (x[i] + eps)
            if full and t[i] > 1:
                value += t[i] * math.log(t[i]) - t[i] + 0.5 * math.log(2.0 * math.pi * t[i])
            total += value
            grad[i] = g * scale
        return total * scale

    @jit
    def tweedie(x, t, grad, power):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            e1 = math.exp((1.0 - power) * x[i])
            e2 = math.exp((2.0 - power) * x[i])
            total += -t[i] * e1 / (1.0 - power) + e2 / (2.0 - power)
            grad[i] = (e2 - t[i] * e1) * scale
        return total * scale

    @jit
    def hinge(x, t, grad, margin):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            z = margin - t[i] * x[i]
            if z > 0:
                total += z
                grad[i] = -t[i] * scale
            else:
                grad[i] = 0.0
        return total * scale

    @jit
    def squared_hinge(x, t, grad, margin):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            z = margin - t[i] * x[i]
            if z > 0:
                total += z * z
                grad[i] = -2.0 * t[i] * z * scale
            else:
                grad[i] = 0.0
        return total * scale

    @jit
    def soft_margin(x, t, grad):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            z = -t[i] * x[i]
            e = math.exp(-abs(z))
            total += max(z, 0.0) + math.log1p(e)
            sigma = (1.0 if z >= 0 else e) / (1.0 + e)
            grad[i] = -t[i] * sigma * scale
        return total * scale

    @jit
    def binary_cross_entropy(x, t, grad):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            total -= (t[i] * max(math.log(x[i]), -100.0)
                      + (1.0 - t[i]) * max(math.log1p(-x[i]), -100.0))
            grad[i] = (x[i] - t[i]) / max(x[i] * (1.0 - x[i]), 1e-12) * scale
        return total * scale

    @jit
    def kl_div(x, t, grad, log_target):
        n = x.size
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            if log_target:
                p = math.exp(t[i])
                total += p * (t[i] - x[i])
            else:
                p = t[i]
                if p > 0:
                    total += p * (math.log(p) - x[i])
            grad[i] = -p * scale
        return total * scale

    # ----------------------------------------------------------------- gaussian KL, penalties

    @jit
    def gaussian_kl(m, v, grad_m, grad_v):
        n, d = m.shape
        scale = 1.0 / n
        total = 0.0
        for i in prange(n):
            row = 0.0
            for j in range(d):
                e = math.exp(v[i, j])
                row += -0.5 * (1.0 + v[i, j] - m[i, j] * m[i, j] - e)
                grad_m[i, j] = m[i, j] * scale
                grad_v[i, j] = 0.5 * (e - 1.0) * scale
            total += row
        return total * scale

    @jit
    def l1_penalty(w, grad, strength):
        total = 0.0
        for i in prange(w.size):
            total += abs(w[i])
            grad[i] = strength if w[i] > 0 else (-strength if w[i] < 0 else 0.0)
        return strength * total

    @jit
    def l2_penalty(w, grad, strength):
        total = 0.0
        for i in prange(w.size):
            total += w[i] * w[i]
            grad[i] = 2.0 * strength * w[i]
        return strength * total

    return {f.__name__: f for f in (
        softmax_cross_entropy, softmax_focal, binary_cross_entropy_with_logits, sigmoid_focal,
        huber, smooth_l1, mse, mae, pinball, log_cosh, poisson_nll, tweedie, hinge,
        squared_hinge, soft_margin, binary_cross_entropy, kl_div, gaussian_kl, l1_penalty,
        l2_penalty)}
