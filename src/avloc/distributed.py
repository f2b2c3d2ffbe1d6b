"""Distributed training under ``torchrun``: the process group, ranks, reductions and data shards.

``torchrun --nproc-per-node N -m avloc train ...`` starts N processes and gives each
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
:func:`process_group` joins them: NCCL when CUDA is available (process ``LOCAL_RANK`` on GPU
``LOCAL_RANK``), gloo on CPU. Without ``WORLD_SIZE`` nothing is set up and every helper here
answers for a single process at no cost (no process group, no communication); so do the
reductions, the barrier and :func:`wrap` in a group of one (``--nproc-per-node 1``).

Data are sharded by global batch (:class:`ShardedBatchSampler`): N processes with batches of
B / N see, step for step, exactly the samples one process sees with batches of B.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from avloc.types import AvlocError


def is_distributed() -> bool:
    """Whether this process belongs to an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def communicates() -> bool:
    """Whether there are other processes to talk to: a process group of two or more.

    ``torchrun --nproc-per-node 1`` makes a group of one; every collective there would be a
    round trip through the backend that changes nothing, so the helpers below skip it.
    """
    return is_distributed() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 in a single process)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes files and shows progress: rank 0 of the process group, or,
    outside one, a single process or torchrun's ``RANK`` 0."""
    return rank() == 0 if is_distributed() else _env_int("RANK", 0) == 0


def device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` under NCCL, otherwise the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", _env_int("LOCAL_RANK", 0))
    return torch.device("cpu")


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AvlocError(f"torchrun environment: {name}={value!r} is not an integer") from None


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Join torchrun's process group for the duration of the block, then leave it.

    A no-op without ``WORLD_SIZE`` in the environment, or when the caller has joined a group
    already (the caller then owns its teardown).

    Raises:
        AvlocError: the torchrun variables are malformed or the rendezvous fails.
    """
    if "WORLD_SIZE" not in os.environ or is_distributed():
        yield
        return
    world, rank_, local = _env_int("WORLD_SIZE"), _env_int("RANK"), _env_int("LOCAL_RANK", 0)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    try:
        dist.init_process_group(backend, rank=rank_, world_size=world)  # env://: MASTER_ADDR, MASTER_PORT
    except (ValueError, RuntimeError) as error:
        raise AvlocError(f"cannot join the torchrun process group ({str(error).splitlines()[0]})") from None
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    if communicates():
        dist.barrier()


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums of ``values`` over all processes, in float64 (``values`` in a single process)."""
    if not communicates():
        return [float(v) for v in values]
    summed = torch.tensor(values, dtype=torch.float64, device=device())
    dist.all_reduce(summed)
    return summed.tolist()


def wrap(model: nn.Module) -> nn.Module:
    """``model`` in DistributedDataParallel when there are other processes, else ``model`` itself
    (DDP in a group of one would all-reduce every gradient for nothing).

    On GPU its BatchNorm layers become SyncBatchNorm (statistics of the global batch);
    SyncBatchNorm does not run on CPU, so under gloo each process normalises its own share of
    the batch. Buffers are synced from rank 0 at the start only, not at every step:
    :func:`average_buffers` averages them before they are used (validation, checkpoints).
    """
    if not communicates():
        return model
    if device().type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device().index], forward_sync_buffers=False)
    return DistributedDataParallel(model, forward_sync_buffers=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (checkpoints store its state_dict)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def average_buffers(model: nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) over all processes.

    A running mean is a moving average, linear in the batch means, so the processes' average is
    the running mean of the global batches' means (shares of equal size); the averaged running
    variance misses the spread of the shares' means around each other (small for shares of one
    shuffled batch). Under SyncBatchNorm the processes hold the same values already.
    """
    if not communicates():
        return
    for buffer in unwrap(model).buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world_size())


class ShardedBatchSampler(Sampler[list[int]]):
    """This process's share of every global batch of a seeded shuffle.

    Every process draws the same permutation of ``range(num_samples)`` from ``generator``
    (the caller reseeds it every epoch), cuts it into global batches of ``batch_size`` and
    takes positions ``rank::world_size`` of each. With one process this is a shuffled
    DataLoader's order (the same ``torch.randperm`` draw). A last global batch smaller than the
    number of processes is dropped, since some process would get no sample.

    Args:
        num_samples: dataset length.
        batch_size: the global batch size.
        generator: the shuffle's random generator.
        drop_last: drop a last global batch smaller than ``batch_size``.
        shard: ``(rank, world_size)`` of the share to serve (default: this process's).
    """

    def __init__(self, num_samples: int, batch_size: int, generator: torch.Generator, drop_last: bool = False,
                 shard: tuple[int, int] | None = None):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.generator = generator
        self.drop_last = drop_last
        self.rank, self.world_size = shard if shard is not None else (rank(), world_size())

    def _global_sizes(self) -> list[int]:
        full, rest = divmod(self.num_samples, self.batch_size)
        keep_rest = rest >= self.world_size and not self.drop_last  # rest = 0 never passes: world_size >= 1
        return [self.batch_size] * full + ([rest] if keep_rest else [])

    def __len__(self) -> int:
        return len(self._global_sizes())

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.num_samples, generator=self.generator).tolist()
        start = 0
        for size in self._global_sizes():
            yield order[start:start + size][self.rank::self.world_size]
            start += size


def sequential_shard(num_samples: int, batch_size: int, shard: tuple[int, int] | None = None) -> list[list[int]]:
    """Batches ``rank::world_size`` of the consecutive batches of ``range(num_samples)``.

    ``shard`` is ``(rank, world_size)``, by default this process's.
    """
    index, count = shard if shard is not None else (rank(), world_size())
    batches = [list(range(start, min(start + batch_size, num_samples))) for start in range(0, num_samples, batch_size)]
    return batches[index::count]
