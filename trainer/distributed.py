"""Across DDP ranks: gathers (with and without gradients) and the check that ranks hold the same model.

Every function is the identity (or trivially true) outside ``torch.distributed``, so methods call them
unconditionally. Gathers need the same shape on every rank (the loop gives every rank the same batch size).
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside DDP."""
    return (dist.get_rank(), dist.get_world_size()) if distributed() else (0, 1)


def sum_over_ranks(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Each value summed over every rank, in one all-reduce (the loop's per-step agreement: non-finite losses,
    stop requests, replaced clips); ``values`` itself outside DDP."""
    if not distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def init_distributed(backend: str, timeout: float) -> None:
    """``init_process_group`` for a process started by torchrun (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``), with ``timeout`` seconds for every collective (a rank that stops answering ends the run).

    torchrun's agent shares its TCP store with the workers (``TORCHELASTIC_USE_AGENT_STORE``) and keeps it across
    elastic restarts, so the keys of a dead attempt are still there: a restarted group can read the old address of
    a rank and hang or fail in ``init_process_group`` (pytorch/pytorch#135712; ``TORCHELASTIC_RESTART_COUNT`` is
    counted per node, so it cannot name the attempt). Each attempt therefore agrees on a fresh key prefix first
    (``session_prefix``) and builds its process group under it.
    """
    limit = timedelta(seconds=timeout)
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend, timeout=limit)
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size=world,
                          is_master=False, timeout=limit)
    prefix = session_prefix(agent, rank, world, timeout)
    dist.init_process_group(backend, store=dist.PrefixStore(prefix, agent), rank=rank, world_size=world,
                            timeout=limit)


def session_prefix(store: dist.Store, rank: int, world: int, timeout: float, poll: float = 0.02) -> str:
    """A key prefix that every rank of this attempt agrees on and no earlier attempt used, over a store that may
    hold any earlier attempt's keys. Rank r > 0 posts a fresh random ``hello/r`` until ``ack/r`` echoes it with
    rank 0's fresh session id, then confirms that id; rank 0 acknowledges whatever ``hello/r`` holds until every
    rank has confirmed its session. A stale hello, ack or confirm never matches a fresh nonce or session."""
    deadline = time.monotonic() + timeout
    mine = uuid.uuid4().hex
    if rank == 0:
        waiting = set(range(1, world))
        while waiting:
            for r in sorted(waiting):
                if _read(store, f"mvtools/confirm/{r}") == mine:
                    waiting.discard(r)
                elif (hello := _read(store, f"mvtools/hello/{r}")) is not None:
                    store.set(f"mvtools/ack/{r}", f"{hello} {mine}")
            _wait(waiting, deadline, poll, "ranks " + ", ".join(map(str, sorted(waiting))))
        return f"mvtools/session/{mine}/"
    while True:
        store.set(f"mvtools/hello/{rank}", mine)
        nonce, _, session = (_read(store, f"mvtools/ack/{rank}") or "").partition(" ")
        if nonce == mine:
            store.set(f"mvtools/confirm/{rank}", session)
            return f"mvtools/session/{session}/"
        _wait(True, deadline, poll, "rank 0")


def _read(store: dist.Store, key: str) -> str | None:
    return store.get(key).decode() if store.check([key]) else None


def _wait(pending, deadline: float, poll: float, who: str) -> None:
    if pending and time.monotonic() > deadline:
        raise TimeoutError(f"{who} did not join the process group in time (--dist-timeout)")
    if pending:
        time.sleep(poll)


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
