"""The result types every loss returns."""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import numpy as np

Array = np.ndarray
Gradient = Union[Optional[Array], Tuple[Optional[Array], ...]]


class LossResult(NamedTuple):
    """``(loss, grad)``: loss is a float for "mean"/"sum" and an ndarray for "none"; grad is
    the derivative of the returned loss (of ``loss.sum()`` for "none"), or None; a tuple in
    argument order for a loss with several differentiated inputs."""

    loss: Union[float, Array]
    grad: Gradient


class LossGradHess(NamedTuple):
    """``(loss, grad, hess)`` of a call with ``compute_hess=True``: hess has the gradient's
    shape and holds the diagonal of the Hessian of the returned loss, scaled like the
    gradient (a tuple where grad is one)."""

    loss: Union[float, Array]
    grad: Gradient
    hess: Gradient
