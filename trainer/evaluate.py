"""Evaluation of a pretrained encoder: frozen features, a linear probe and nearest-neighbour retrieval.

Features: the encoder's pooled output on ``clips`` evenly spaced centre crops per video, averaged, L2-normalised.
Linear probe: multinomial logistic regression on standardised train features, top-1 on test.
Retrieval (UCF101 protocol): each test video queries the train videos by cosine similarity; recall@k is the
fraction of queries with a same-class video among the k nearest; ``knn_top1`` = recall@1.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .data import ClipDataset, ClipSpec, DataError, list_videos, split_keys, worker_context
from .loop import build_method, load_checkpoint

RECALL_AT = (1, 5, 10, 20)


@torch.no_grad()
def embed(method, dataset: ClipDataset, batch_size: int = 16, workers: int = 2,
          device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(features (V, D) normalised, labels (V,)), clip features averaged per video."""
    method.eval().to(device)
    context = worker_context(dataset.store_path) if workers else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         multiprocessing_context=context)
    sums: dict[int, torch.Tensor] = {}
    labels: dict[int, int] = {}
    for batch in loader:
        view = {k: v.to(device) for k, v in batch["views"][0].items()}
        feats = method.embed(view).float().cpu()
        for f, vid, lab in zip(feats, batch["video"].tolist(), batch["label"].tolist()):
            sums[vid] = sums.get(vid, 0) + f
            labels[vid] = lab
    order = sorted(sums)
    return (F.normalize(torch.stack([sums[v] for v in order]), dim=1),
            torch.tensor([labels[v] for v in order]))


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, weight_decay: float = 1e-3, iterations: int = 200, seed: int = 0) -> float:
    """Top-1 of an L-BFGS-trained linear classifier on z-scored features (statistics from train)."""
    torch.manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    clf = torch.nn.Linear(xtr.shape[1], num_classes)
    opt = torch.optim.LBFGS(clf.parameters(), lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(clf(xtr), train_y) + weight_decay * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (clf(xte).argmax(1) == test_y).float().mean().item()


def retrieval(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
              ks=RECALL_AT) -> dict[str, float]:
    """recall@k of test -> train cosine retrieval, and knn_top1 (the nearest train video's label)."""
    order = (test_x @ train_x.T).argsort(dim=1, descending=True)
    hits = train_y[order] == test_y[:, None]
    out = {"knn_top1": hits[:, 0].float().mean().item()}
    for k in ks:
        out[f"recall@{k}"] = hits[:, : min(k, hits.shape[1])].any(1).float().mean().item()
    return out


def evaluate(checkpoint: str | os.PathLike, store: str | os.PathLike, *, clips: int = 4, batch_size: int = 16,
             workers: int = 2, device: str | None = None, storage_options: dict | None = None,
             clip_len: int | None = None, stride: int | None = None, size: int | None = None) -> dict:
    """Linear probe and retrieval of a checkpoint's encoder on a store's train/test split (clips of the run's
    length, stride and size unless given)."""
    state = load_checkpoint(checkpoint)
    config = state["config"]
    method = build_method(config)
    method.load_state_dict(state["model"])
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    videos = list_videos(os.fspath(store), storage_options)
    if not videos:
        raise DataError(f"{store}: no complete videos")
    train_keys, test_keys, source = split_keys(videos)
    if not train_keys or not test_keys:
        raise DataError(f"{store}: the {'train' if not train_keys else 'test'} split is empty ({source})")
    spec = ClipSpec(clip_len or config["clip_len"], stride or config["stride"], size or config["size"],
                    mv_per_frame=config.get("mv_per_frame", False))
    feats = {}
    for name, keys in (("train", train_keys), ("test", test_keys)):
        ds = ClipDataset(store, modalities=method.eval_modalities, train=False, clips_per_video=clips, keys=keys,
                         spec=spec, storage_options=storage_options)
        feats[name] = embed(method, ds, batch_size, workers, device)
    classes = ds.classes
    (xtr, ytr), (xte, yte) = feats["train"], feats["test"]
    result = {"linear_top1": linear_probe(xtr, ytr, xte, yte, len(classes)), **retrieval(xtr, ytr, xte, yte),
              "method": config["method"], "backbone": config["backbone"], "step": int(state["step"]),
              "train_videos": len(train_keys), "test_videos": len(test_keys), "classes": len(classes),
              "split": source}
    return result

