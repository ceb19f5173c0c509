"""pytest-benchmark suite over the table of fastloss.bench (one row per loss).

    pytest benchmarks/ --benchmark-disable      # correctness: every implementation once
    pytest benchmarks/                          # real benchmarks, grouped by loss-dtype-size
    pytest benchmarks/ -m slow                  # also torch.compile (compiles for seconds)

Options: --fastloss-sizes (default tiny,cache with --benchmark-disable, tiny,cache,large
otherwise), --fastloss-dtypes (default float32,float64). Benchmarks run at all threads.
"""
import collections

import pathlib

import pytest

from fastloss import bench


def pytest_addoption(parser):
    group = parser.getgroup("fastloss")
    group.addoption("--fastloss-sizes", default=None,
                    help="comma-separated sizes as for fastloss-bench --sizes")
    group.addoption("--fastloss-dtypes", default="float32,float64",
                    help="comma-separated dtypes (float32, float64)")


def _all_implementation_names(entry):
    """Every implementation of a loss in the table, installed or not (missing peers skip)."""
    return [impl.name for impl in bench.implementations(entry, list(entry.peers))]


def pytest_generate_tests(metafunc):
    if "case_key" not in metafunc.fixturenames:
        return
    config = metafunc.config
    sizes = config.getoption("--fastloss-sizes")
    if sizes is None:
        disabled = config.getoption("benchmark_disable", default=False)
        sizes = "tiny,cache" if disabled else "tiny,cache,large"
    sizes = [bench.parse_size(text) for text in sizes.split(",") if text.strip()]
    dtypes = [d.strip() for d in config.getoption("--fastloss-dtypes").split(",") if d.strip()]
    params = []
    # Implementations vary fastest, so the case (inputs, reference result) is built once.
    for name, entry in bench.LOSSES.items():
        for dtype in dtypes:
            for size in sizes:
                for impl_name in _all_implementation_names(entry):
                    marks = [pytest.mark.slow] if impl_name == "torch.compile" else []
                    params.append(pytest.param((name, dtype, size), impl_name, marks=marks,
                                               id=f"{name}-{dtype}-{size.label}-{impl_name}"))
    metafunc.parametrize("case_key,impl_name", params)


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="torch.compile compiles for seconds per case: "
                                   "run with -m slow to include it")
    here = pathlib.Path(__file__).parent
    for item in items:   # this directory's items only: tests/ has its own slow switch
        if "slow" in item.keywords and here in pathlib.Path(item.path).parents:
            item.add_marker(skip)


class _CaseCache:
    """The last few cases (inputs + the reference's result), so each is made once."""

    def __init__(self, size=2):
        self.size = size
        self.cases = collections.OrderedDict()

    def get(self, key):
        if key not in self.cases:
            name, dtype, size = key
            entry = bench.LOSSES[name]
            if entry.resolve_kernel() is None or entry.resolve_reference() is None:
                self.cases[key] = None
            else:
                case = bench.make_case(entry, size, dtype)
                loss, grad = bench.REFERENCE_IMPL.build(case, 1)()
                case.expected = (float(loss), grad)
                self.cases[key] = case
            while len(self.cases) > self.size:
                self.cases.popitem(last=False)
        return self.cases[key]


@pytest.fixture(scope="session")
def case_cache():
    return _CaseCache()


@pytest.fixture
def case(case_key, case_cache):
    case = case_cache.get(case_key)
    if case is None:
        pytest.skip(f"{case_key[0]} is not in the installed fastloss (or its reference) yet")
    return case


@pytest.fixture
def implementation(case, impl_name):
    """The Implementation row; optional peers skip when their library is not installed."""
    impls = {impl.name: impl for impl in bench.implementations(case.entry, list(case.entry.peers))}
    impl = impls[impl_name]
    if impl.family in bench.PEER_FAMILIES:
        pytest.importorskip(bench.PEER_FAMILIES[impl.family].module)
    return impl


@pytest.fixture(scope="session")
def n_threads():
    return bench._all_threads()
