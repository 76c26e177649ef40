"""Testing a classifier as the papers do: N clips x K crops per video, softmax averaged per video.

Each test video gives ``clips`` uniformly spaced clips (start = round((F - span) (i + 1/2) / N)) times ``crops``
squares of the short side along the long side (``trainer.data.crop_view``; 10 x 3 by default, the usual
protocol of the fine-tuning tables). The video's score is p = mean over its N x K views of softmax(logits), and

    top-1 = mean_v [argmax p_v = y_v],  top-5 = mean_v [y_v among the 5 largest p_v],
    per-class accuracy of class c = top-1 over the videos of class c,  mean class accuracy = their mean
    (over the classes the test split holds),  confusion[y, argmax p] counted per video (rows: truth).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from .data import ClipDataset, worker_context


@torch.no_grad()
def video_scores(logits_of, dataset: ClipDataset, *, batch_size: int = 16, workers: int = 2,
                 device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(p (V, C): softmax of ``logits_of(rgb, **other modalities)`` averaged over each video's views, labels (V,)) in
    video order."""
    context = worker_context(dataset.store_path) if workers else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         multiprocessing_context=context)
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    labels: dict[int, int] = {}
    for batch in loader:
        view = {k: v.to(device) for k, v in batch["views"][0].items()}
        probs = F.softmax(logits_of(view.pop("rgb"), **view).float(), dim=1).cpu()
        for p, video, label in zip(probs, batch["video"].tolist(), batch["label"].tolist()):
            sums[video] = sums.get(video, 0) + p
            counts[video] = counts.get(video, 0) + 1
            labels[video] = label
    order = sorted(sums)
    return torch.stack([sums[v] / counts[v] for v in order]), torch.tensor([labels[v] for v in order])


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """top1, top5, mean_class_accuracy, per_class {class: accuracy} and confusion (rows: truth) of video scores."""
    predicted = scores.argmax(1)
    k = min(5, scores.shape[1])
    top5 = (scores.topk(k, dim=1).indices == labels[:, None]).any(1)
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (labels.numpy(), predicted.numpy()), 1)
    per_class = {classes[c]: float(confusion[c, c] / confusion[c].sum())
                 for c in range(len(classes)) if confusion[c].sum()}
    return {"top1": float((predicted == labels).float().mean()), "top5": float(top5.float().mean()),
            "mean_class_accuracy": float(np.mean(list(per_class.values()))), "per_class": per_class,
            "confusion": confusion.tolist(), "classes": list(classes)}


def plot_confusion(confusion, classes: list[str], path: str | os.PathLike, title: str = "") -> None:
    """The confusion matrix as a PNG: rows are the true class, columns the predicted one, cells row-normalised."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(confusion, np.float64)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    side = 2.5 + 0.32 * len(classes)
    fig = Figure(figsize=(side + 1.2, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    small = len(classes) > 30
    ax.set_xticks(ticks, [] if small else classes, rotation=90, fontsize=7)
    ax.set_yticks(ticks, [] if small else classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the class's videos")
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=120)
