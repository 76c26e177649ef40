"""Loss terms and their parts, independent of any model: InfoNCE, a key queue, EMA updates, DDP gathers.

Embeddings are L2-normalised by the caller. InfoNCE with temperature t:
    nce(q, k+, N) = -log( exp(q.k+/t) / (exp(q.k+/t) + sum_{n in N} exp(q.n/t)) )
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import gather, gather_with_grad


def info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None,
             temperature: float = 0.1, own_negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of nce(q_i, k_i, N + N_i): ``query``, ``positive`` (B, D); ``negatives`` (K, D) shared
    by every query (a queue); ``own_negatives`` (B, K', D), query i's own (hard negatives)."""
    logits = [(query * positive).sum(-1, keepdim=True)]
    if own_negatives is not None:
        logits.append(torch.einsum("bd,bkd->bk", query, own_negatives))
    if negatives is not None:
        logits.append(query @ negatives.T)
    return F.cross_entropy(torch.cat(logits, 1) / temperature,
                           torch.zeros(len(query), dtype=torch.long, device=query.device))


def queue_nce(query: torch.Tensor, positive: torch.Tensor, queue: Queue | None, temperature: float = 0.1
              ) -> torch.Tensor:
    """``info_nce`` against the queue's keys, or ``batch_nce`` (in-batch negatives) when there is no queue."""
    if queue is None:
        return batch_nce(query, positive, temperature)
    return info_nce(query, positive, queue.keys.clone(), temperature)


def multi_positive_nce(similarity: torch.Tensor, positive: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Mean over rows with at least one positive of -log( sum_{j in P_i} e^{s_ij/t} / sum_j e^{s_ij/t} ).

    ``similarity`` (N, M) cosine similarities; ``positive`` (N, M) bool. Rows without a positive are skipped
    (0 when no row has one).
    """
    logits = similarity / temperature
    has = positive.any(1)
    if not has.any():
        return similarity.sum() * 0.0
    log_all = torch.logsumexp(logits[has], 1)
    log_pos = torch.logsumexp(logits[has].masked_fill(~positive[has], float("-inf")), 1)
    return (log_all - log_pos).mean()


def batch_nce(query: torch.Tensor, keys: torch.Tensor, temperature: float = 0.1,
              extra_negatives: torch.Tensor | None = None) -> torch.Tensor:
    """In-batch InfoNCE: key i is query i's positive, every other key (and ``extra_negatives``) a negative.

    With DDP, ``keys`` are gathered from every rank with gradients (``gather_with_grad``): the negatives are
    the global batch's and trained as in one process on that batch.
    """
    rank_keys, offset = gather_with_grad(keys)
    logits = query @ rank_keys.T
    if extra_negatives is not None:
        logits = torch.cat([logits, query @ extra_negatives.T], 1)
    target = torch.arange(len(query), device=query.device) + offset
    return F.cross_entropy(logits / temperature, target)


class Queue(nn.Module):
    """A FIFO of ``size`` normalised keys (D each), kept as buffers so checkpoints carry it.

    ``per_sample``: keys a sample pushes (2 for two views); the queue then spans ``size / per_sample`` samples.
    """

    def __init__(self, dim: int, size: int, per_sample: int = 2):
        super().__init__()
        self.per_sample = per_sample
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor) -> None:
        keys = gather(keys.detach())
        size, n = len(self.keys), len(keys)
        kept = keys[-size:]  # more keys than room: the oldest of them would be overwritten at once
        idx = (self.ptr + n - len(kept) + torch.arange(len(kept), device=keys.device)) % size
        self.keys[idx] = kept
        self.ptr.copy_((self.ptr + n) % size)


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """theta_target <- m theta_target + (1 - m) theta_online; buffers (BN statistics) are copied."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(m).add_(o.detach(), alpha=1 - m)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


def gradcam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of a clip feature map: relu(sum_c w_ct A_ct), w_ct = mean_{h,w} dS/dA_ct.

    ``activation``, ``gradient`` (B, C, T, H, W) -> (B, T, H, W). Differentiable in both (for double backprop).
    """
    weights = gradient.mean(dim=(3, 4), keepdim=True)
    return F.relu((weights * activation).sum(1))


def alignment_similarities(attention: torch.Tensor, motion: torch.Tensor, eps: float = 1e-8
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MCL's three cosine similarities between an attention map and a motion map, each (B,).

    ``attention``, ``motion`` (B, T, H, W), non-negative.
      s_st = sum_t softmax_t(sum_hw M) cos(A_t, M_t)    space-time: per frame, frames weighted by their motion
      s_t  = cos(sum_hw A, sum_hw M)                     time: the temporal profiles
      s_s  = cos(mean_t A, mean_t M)                     space: the time-averaged maps
    """
    a, m = attention.flatten(2), motion.flatten(2)
    per_frame = F.cosine_similarity(a, m, dim=2, eps=eps)
    s_st = (per_frame * torch.softmax(m.sum(2), dim=1)).sum(1)
    s_t = F.cosine_similarity(a.sum(2), m.sum(2), dim=1, eps=eps)
    s_s = F.cosine_similarity(a.mean(1), m.mean(1), dim=1, eps=eps)
    return s_st, s_t, s_s


def motion_alignment_loss(attention: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """L_MAL = 3 - s_st - s_t - s_s, averaged over the batch (0 when the maps are proportional)."""
    return sum(1 - s for s in alignment_similarities(attention, motion)).mean()
