"""Every loss of fastloss.bench.LOSSES x dtype x size x implementation: the result is checked
against the NumPy reference (floors: against the exact copy / sum), then benchmarked."""
from fastloss import bench


def test_loss(benchmark, case, implementation, n_threads):
    benchmark.group = f"{case.entry.name}-{case.dtype}-{case.size_label}"
    benchmark.extra_info.update(shape=list(case.shape), bytes_moved=case.bytes_moved,
                                threads=n_threads if implementation.threaded else 1)
    with bench.thread_limit(n_threads if implementation.threaded else 1):
        call = implementation.build(case, n_threads)
        result = call()
        if implementation.check is not None:
            problem = implementation.check(case, result)
            assert problem is None, f"{implementation.name}: {problem}"
        del result
        benchmark(call)
