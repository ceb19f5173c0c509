import numpy as np

import fastloss
from fastloss import reference


def test_softmax_cross_entropy_matches_reference_smoke():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 5))
    y = rng.integers(0, 5, 8)
    loss, grad = fastloss.softmax_cross_entropy(x, y)
    ref_loss, ref_grad = reference.softmax_cross_entropy(x, y)
    assert np.isclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)
