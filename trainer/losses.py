"""Loss terms and their parts, independent of any model: InfoNCE, a key queue, EMA updates, DDP gathers.

Embeddings are L2-normalised by the caller. InfoNCE with temperature t:
    nce(q, k+, N) = -log( exp(q.k+/t) / (exp(q.k+/t) + sum_{n in N} exp(q.n/t)) )
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None,
             temperature: float = 0.1) -> torch.Tensor:
    """Mean over the batch of nce(q_i, k_i, N): ``query``, ``positive`` (B, D); ``negatives`` (K, D), shared."""
    pos = (query * positive).sum(-1, keepdim=True)
    logits = pos if negatives is None else torch.cat([pos, query @ negatives.T], 1)
    return F.cross_entropy(logits / temperature, torch.zeros(len(query), dtype=torch.long, device=query.device))


def batch_nce(query: torch.Tensor, keys: torch.Tensor, temperature: float = 0.1,
              extra_negatives: torch.Tensor | None = None) -> torch.Tensor:
    """In-batch InfoNCE: key i is query i's positive, every other key (and ``extra_negatives``) a negative.

    With DDP, ``keys`` are gathered from every rank (with gradients for the local part) so the negatives
    are the global batch's.
    """
    rank_keys, offset = gather_with_grad(keys)
    logits = query @ rank_keys.T
    if extra_negatives is not None:
        logits = torch.cat([logits, query @ extra_negatives.T], 1)
    target = torch.arange(len(query), device=query.device) + offset
    return F.cross_entropy(logits / temperature, target)


class Queue(nn.Module):
    """A FIFO of ``size`` normalised keys (D each), kept as buffers so checkpoints carry it."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor) -> None:
        keys = gather(keys.detach())
        size, n = len(self.keys), len(keys)
        idx = (self.ptr + torch.arange(n, device=keys.device)) % size
        self.keys[idx] = keys[-size:] if n > size else keys
        self.ptr.copy_((self.ptr + n) % size)


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """theta_target <- m theta_target + (1 - m) theta_online; buffers (BN statistics) are copied."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(m).add_(o.detach(), alpha=1 - m)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every DDP rank (rank order); ``x`` itself when not distributed."""
    if not _distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every rank's ``x`` concatenated, offset of this rank's rows); gradients flow to the local rows."""
    if not _distributed():
        return x, 0
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    rank = dist.get_rank()
    parts[rank] = x
    return torch.cat(parts), rank * len(x)
