"""The worker of tests/test_torch_distributed.py (a module of its own: torch.multiprocessing's
spawn imports the function by name in each child process)."""

import os

import torch
import torch.distributed as dist


# the dtypes of the runs: float64, whose rounding is far below any difference a wrong
# gradient would make, and float32, the usual one
DTYPES = (torch.float64, torch.float32)


def runs(configurations):
    """The (dtype, loss keyword arguments) of each run, in the order rank 0 saves them."""
    return [(dtype, kwargs) for dtype in DTYPES for kwargs in configurations]


def make_problem(dtype=torch.float32, n_samples=64, n_features=12, n_classes=7):
    """The whole batch and the initial model in dtype, the same in every process."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(n_samples, n_features, generator=generator).to(dtype)
    labels = torch.randint(0, n_classes, (n_samples,), generator=generator)
    labels[::9] = -100  # some ignored samples: "mean" counts the kept ones per process
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(n_features, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, n_classes)).to(dtype)
    return features, labels, model


def run_rank(rank, world_size, port, result_path, loss_name, configurations):
    """One DDP backward per dtype (DTYPES) and configuration (the loss module's keyword
    arguments); rank 0 saves the averaged parameter gradients of each, dtype by dtype."""
    import fastloss.torch as flt

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        results = []
        for dtype, loss_kwargs in runs(configurations):
            features, labels, model = make_problem(dtype)
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            criterion = getattr(flt, loss_name)(**loss_kwargs)
            shard = slice(rank, None, world_size)  # an equal share of the batch per process
            loss = criterion(ddp(features[shard]), labels[shard])
            assert "fastloss" in type(loss.grad_fn).__name__
            loss.backward()  # DDP all-reduces (averages) the parameter gradients here
            results.append([p.grad.clone() for p in model.parameters()])
        if rank == 0:
            torch.save(results, result_path)
        # both ranks reach here before either tears gloo down: a rank that closes its pairs
        # while the other is still in a collective aborts the other (SIGABRT, seen in CI)
        dist.barrier()
    finally:
        dist.destroy_process_group()
