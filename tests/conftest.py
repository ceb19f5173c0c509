"""Shared fixtures and the registry-driven parametrization of the test suite."""
import os
import pathlib
import sys
from pathlib import Path

import pytest

# --import-mode=importlib does not put tests/ on sys.path; the helper modules beside the tests
# (reliability_cases.py) are imported by name.
sys.path.insert(0, str(Path(__file__).resolve().parent))


# ------------------------------------------------------------------ hypothesis profiles
# "ci" (the default) is deterministic: the same examples on every run, no example database.
# HYPOTHESIS_PROFILE=explore draws fresh random examples, ten times as many, for hunting bugs.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is in the `test` extra; the tests that need it import it
    pass
else:
    settings.register_profile(
        "ci",
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.register_profile(
        "explore",
        derandomize=False,
        deadline=None,
        print_blob=True,
        max_examples=1000,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ------------------------------------------------------------------ slow tests
# Tests marked @pytest.mark.slow (inputs of more than 2**31 elements, minutes and ~9-18 GB of
# memory) are skipped unless asked for:  pytest --runslow   or   FASTLOSS_RUN_SLOW=1 pytest
def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="run the tests marked slow (large inputs; see docs/reliability.md)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("FASTLOSS_RUN_SLOW", "0") not in ("", "0"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow or FASTLOSS_RUN_SLOW=1")
    here = pathlib.Path(__file__).parent
    for item in items:   # this directory's items only: benchmarks/ has its own slow switch
        if "slow" in item.keywords and here in pathlib.Path(item.path).parents:
            item.add_marker(skip_slow)


# ------------------------------------------------------------------ SIMD levels
def _simd_levels():
    from fastloss import _kernels
    return [name for name, compiled, supported in _kernels.isa_levels() if compiled and supported]


@pytest.fixture(params=_simd_levels())
def simd_level(request):
    """Every instruction-set level this build compiled and this CPU runs: the kernels are
    dispatched to it for the test, and back to the best one after."""
    from fastloss import _kernels
    _kernels.set_isa(request.param)
    yield request.param
    _kernels.set_isa(_kernels.best_isa())


@pytest.fixture
def streaming():
    """The streaming stores at any size (fastloss/_src/fl_stream.inc: the pair losses' rows,
    the softmax overlap layout's gradient), and parallel at any size (several blocks per
    call); both thresholds restored after."""
    from fastloss import _kernels
    previous_stream = _kernels._set_stream_threshold(0)
    previous_serial = _kernels._set_serial_threshold(0)
    yield
    _kernels._set_stream_threshold(previous_stream)
    _kernels._set_serial_threshold(previous_serial)
