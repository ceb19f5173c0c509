"""fastloss.torch under torch.distributed: DDP over two real CPU processes (gloo backend,
127.0.0.1 only) gives the parameter gradients of the single-process run on the whole batch."""

import socket

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import fastloss.torch as flt  # noqa: E402
import torch_ddp_worker  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# DDP averages the parameter gradients over the processes. With "mean" that equals the
# whole-batch mean's gradient when every process keeps as many samples (torch_ddp_worker's
# labels keep 28 in each of the two shards); with "sum" it is the whole-batch sum's / 2.
CONFIGURATIONS = [{"label_smoothing": 0.1}, {"reduction": "sum"},
                  {"weight": None, "ignore_index": -100, "reduction": "mean"}]


def test_ddp_two_processes_equal_single_process(tmp_path):
    world_size = 2
    result_path = tmp_path / "rank0.pt"
    for attempt in range(2):
        try:   # (one rank aborted with SIGABRT once in CI, cause not found: one retry)
            mp.spawn(torch_ddp_worker.run_rank,
                     args=(world_size, free_port(), str(result_path), "CrossEntropyLoss",
                           CONFIGURATIONS),
                     nprocs=world_size, join=True)
            break
        except mp.ProcessExitedException:
            if attempt == 1:
                raise
    distributed = torch.load(result_path)
    runs = torch_ddp_worker.runs(CONFIGURATIONS)
    assert len(distributed) == len(runs)

    for (dtype, loss_kwargs), ddp_grads in zip(runs, distributed):
        features, labels, model = torch_ddp_worker.make_problem(dtype)
        kept = [int((labels[rank::world_size] != -100).sum()) for rank in range(world_size)]
        assert kept[0] == kept[1]
        flt.CrossEntropyLoss(**loss_kwargs)(model(features), labels).backward()
        scale = 1.0 / world_size if loss_kwargs.get("reduction") == "sum" else 1.0
        for single, ddp in zip(model.parameters(), ddp_grads):
            expected = single.grad * scale
            assert ddp.dtype == dtype
            # The two runs add the same terms in another order (each process's half batch,
            # then the all-reduce), so they differ by the rounding of those sums, which
            # scales with the terms, not with an entry that cancels down to near 0: an
            # absolute tolerance relative to the tensor's largest entry. (A fixed 1e-7 failed
            # in float32 on an AMD Zen 4 host: 1.3e-7 off an entry of 5.9e-4. Measured there,
            # the largest difference in a tensor is 1.5-4.6e-7 of its largest entry in
            # float32 and 2-7e-16 in float64; a wrong scale or a lost shard is >= 1e-2.)
            size = float(expected.abs().max())
            if dtype == torch.float64:
                torch.testing.assert_close(ddp, expected, rtol=1e-10, atol=1e-12 * size)
            else:
                torch.testing.assert_close(ddp, expected, rtol=1e-5, atol=1e-5 * size)
