"""DP-SGD across processes (torch.distributed): each rank its shard, clipped sums added up, one noise draw per step.

Opacus' distributed semantics (``DPDDP`` with ``DistributedDPOptimizer``):
every rank holds the whole data set and Poisson-samples *its shard* (records
``rank, rank + W, ...``) at the global rate q, so each record is in a logical
batch with probability q independently of all others, exactly as in one
process. Per-record clipping happens on the rank that holds the record; the
clipped sums are added up by ``all_reduce`` after rank 0 alone has added one
Gaussian draw (std sigma * C) to its own sum, so the released update is
``(sum of clipped gradients + N(0, sigma^2 C^2)) / E[B]``, the very quantity of
the single-process run. The accounting (q, sigma, steps) therefore does not
depend on the world size. The other ranks never see the noise apart from the
sum, nor a clean aggregate.

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``; :func:`init_from_env`
opens the process group from them (gloo on CPU, NCCL with GPUs) when the
caller has not.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

from genguard.guardrails.privacy.errors import PrivacyError


def world() -> tuple[int, int, str | None]:
    """``(rank, world size, backend)``: ``(0, 1, None)`` outside an initialised process group."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return 0, 1, None
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1, None
    return dist.get_rank(), dist.get_world_size(), str(dist.get_backend())


def init_from_env() -> bool:
    """Open the default process group from torchrun's environment when there is one and none is open yet."""
    import torch
    import torch.distributed as dist

    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise PrivacyError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None
    if size <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend=backend)
    return True


def shard(n: int, rank: int, world_size: int) -> Any:
    """The record indices rank ``rank`` samples from: ``rank, rank + W, ...`` (disjoint, covering 0..n-1)."""
    import torch

    return torch.arange(rank, n, world_size)


def sum_across_ranks(tensors: Iterable[Any]) -> None:
    """Add the tensors up over all ranks, in place, in one collective (flattened: one message, not one per tensor)."""
    import torch
    import torch.distributed as dist

    ts = list(tensors)
    if not ts:
        return
    flat = torch.cat([t.reshape(-1) for t in ts])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in ts:
        k = t.numel()
        t.copy_(flat[offset:offset + k].view_as(t))
        offset += k


def broadcast_state(modules: Iterable[Any], src: int = 0) -> None:
    """Every parameter and buffer of ``modules`` set to rank ``src``'s values (the replicas start and stay equal)."""
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for m in modules:
            for t in list(m.parameters()) + list(m.buffers()):
                dist.broadcast(t.data, src=src)


def check_supported(poisson_sampling: bool, mode: str) -> None:
    """Refuse what the distributed engine does not implement, before any step."""
    if not poisson_sampling:
        raise PrivacyError("distributed DP-SGD samples each rank's shard by Poisson sampling; "
                           "train with poisson_sampling=True")
    if mode == "opacus":
        raise PrivacyError("distributed DP-SGD runs on genguard's engine (grad_sample_mode auto, ghost, hooks or "
                           "functorch), not on the stock opacus PrivacyEngine")
