"""How batch normalisation is kept from leaking the positive across a contrastive pair (the recipe's ``bn``).

With per-GPU statistics, a query and its positive key are normalised with statistics of the same few samples;
the network can find its positive through them instead of through content (He et al., MoCo, 2020). Modes:

    shuffle   the key encoders run on a random permutation of the global batch across ranks (Shuffle-BN,
              MoCo): ``shuffled(encode, x)``; the query encoders keep per-rank statistics
    sync      every BN layer normalises with the statistics of the global batch (``SyncBatchNorm``;
              SimCLR, the MCD authors' code)
    local     per-rank statistics everywhere (no protection; the only mode a single process has)

With one process, ``shuffle`` and ``sync`` change nothing: there is one batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .distributed import distributed, gather, gather_with_grad, world

BN_MODES = ("shuffle", "sync", "local")


@torch.no_grad()
def shuffled(encode, *xs: torch.Tensor):
    """encode(*xs) computed with Shuffle-BN: the global batch (every rank's rows) is permuted by one permutation
    drawn on rank 0, each rank encodes its share, and the rows are sent back to their owners in their order,
    so the result is this rank's rows as if encoded in place, but with another batch's statistics.

    ``encode`` maps tensors of B rows to a tensor of B rows or a tuple of them (``None`` entries pass through).
    """
    if not distributed():
        return encode(*xs)
    rank, _ = world()
    everything = [gather(x) for x in xs]
    total, n = len(everything[0]), len(xs[0])
    perm = torch.randperm(total, device=xs[0].device) if rank == 0 else \
        torch.empty(total, dtype=torch.long, device=xs[0].device)
    dist.broadcast(perm, 0)
    out = encode(*(x[perm[rank * n:(rank + 1) * n]] for x in everything))

    def restore(y):
        if y is None:
            return None
        rows = gather(y)  # row j encodes global row perm[j]
        back = torch.empty_like(rows)
        back[perm] = rows
        return back[rank * n:(rank + 1) * n]

    return tuple(restore(y) for y in out) if isinstance(out, tuple) else restore(out)


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over the global batch, on any device and backend (gloo included).

    Training under DDP: each rank's per-channel (mean_r, var_r, n_r) are gathered with gradients and combined,
        mean = sum_r n_r mean_r / N,   var = sum_r n_r (var_r + (mean_r - mean)^2) / N,   N = sum_r n_r,
    y = (x - mean) / sqrt(var + eps) * weight + bias; running statistics as BatchNorm's (unbiased var). Otherwise
    it is BatchNorm. Parameter and buffer names are BatchNorm's, so checkpoints load either way.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        n = xf.new_full((1,), x.numel() / x.shape[1])
        local_var, local_mean = torch.var_mean(xf, dim=dims, unbiased=False)
        stats, _ = gather_with_grad(torch.cat([local_mean, local_var, n])[None])
        c = x.shape[1]
        means, variances, counts = stats[:, :c], stats[:, c:2 * c], stats[:, 2 * c:]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        var = (counts * (variances + (means - mean).square())).sum(0) / total
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * total / (total - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm{1,2,3}d in ``module`` by a ``SyncBatchNorm`` sharing its parameters and buffers."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        sync = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats)
        if module.affine:
            sync.weight, sync.bias = module.weight, module.bias
        if module.track_running_stats:
            sync.running_mean, sync.running_var = module.running_mean, module.running_var
            sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
