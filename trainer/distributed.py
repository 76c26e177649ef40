"""Across DDP ranks: gathers (with and without gradients) and the check that ranks hold the same model.

Every function is the identity (or trivially true) outside ``torch.distributed``, so methods call them
unconditionally. Gathers need the same shape on every rank (the loop gives every rank the same batch size).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside DDP."""
    return (dist.get_rank(), dist.get_world_size()) if distributed() else (0, 1)


def everywhere(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` holds on every rank (all ranks get the same answer, so they stop together)."""
    if not distributed():
        return flag
    failed = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(failed)
    return failed.item() == 0


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank (rank order), without gradients; ``x`` itself when not distributed."""
    if not distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums, over ranks, the gradient each rank's loss sends to this rank's rows."""

    @staticmethod
    def forward(ctx, x):
        return gather(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        rank, size = world()
        n = len(grad) // size
        return grad[rank * n:(rank + 1) * n]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every rank's ``x`` concatenated, offset of this rank's rows), differentiable.

    Rows of other ranks are not detached: this rank's loss trains them too. With each rank's loss L_r a mean
    over its rows and DDP averaging gradients, parameters receive d(mean_r L_r)/d(theta), the gradient of
    the same loss computed on the global batch in one process.
    """
    if not distributed():
        return x, 0
    rank, _ = world()
    return _GatherWithGrad.apply(x), rank * len(x)


@torch.no_grad()
def rank_mismatches(module: nn.Module, skip: tuple[str, ...] = ()) -> list[str]:
    """Names of the parameters and buffers that differ between ranks (compared with rank 0; [] outside DDP).

    Each tensor is summarised by (sum, sum of squares, sum of x * position) in float64, so a permutation or a
    change of one element shows; names ending in one of ``skip`` are left out (per-rank statistics).
    """
    if not distributed():
        return []
    named = [(n, t) for n, t in (*module.named_parameters(), *module.named_buffers())
             if t.numel() and not n.endswith(skip)]
    if not named:
        return []
    rows = []
    for _, t in named:
        x = t.detach().double().flatten()
        rows.append(torch.stack([x.sum(), x.square().sum(), (x * torch.arange(len(x), device=x.device)).sum()]))
    mine = torch.stack(rows)
    everyone = gather(mine).reshape(dist.get_world_size(), *mine.shape)
    differs = ~torch.isclose(everyone, everyone[:1], rtol=1e-9, atol=1e-12).all(2).all(0)
    return [name for (name, _), bad in zip(named, differs.tolist()) if bad]
