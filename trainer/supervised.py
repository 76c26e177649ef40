"""Training on labels after pretraining: an encoder, dropout and a linear classifier, trained with cross-entropy.

One ``Method`` serves both downstream protocols, through the same loop as pretraining (resume, DDP, metrics.csv,
TensorBoard): fine-tuning (every layer trained; ``mvtools finetune``) and the linear protocol of MCL and FIMA
(``freeze=True``: the encoder is frozen, batch-norm statistics included, and only the classifier learns on
augmented clips; ``mvtools eval --protocol linear-sgd``).

    logits = W dropout(f(x)) + b,   loss ``ce`` = cross-entropy(logits, label)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .methods.base import Method
from .models import Backbone, build


class Supervised(Method):
    name = "supervised"
    modalities = ("rgb",)
    views = 1
    bn = "local"  # no key encoder: nothing to leak

    def __init__(self, backbone: str = "tiny", backbone_args: dict | None = None, classes: int = 2,
                 dropout: float = 0.5, freeze: bool = False):
        super().__init__()
        self.backbone = build(backbone, 3, **(backbone_args or {}))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.backbone.out_dim, classes)
        self.freeze = freeze
        if freeze:
            self.backbone.requires_grad_(False)

    @property
    def encoder(self) -> Backbone:
        return self.backbone

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.backbone.eval()  # a frozen encoder keeps its batch-norm statistics
        return self

    def logits(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.backbone(rgb)))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["label"]
        if bool((labels < 0).any()):
            raise ValueError("a clip without a label reached the classifier")
        return {"ce": F.cross_entropy(self.logits(batch["views"][0]["rgb"]), labels)}
