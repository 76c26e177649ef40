"""Training on labels after pretraining: an encoder, dropout and a linear classifier, trained with cross-entropy.

One ``Method`` serves both downstream protocols, through the same loop as pretraining (resume, DDP, metrics.csv,
TensorBoard): fine-tuning (every layer trained; ``mvtools finetune``) and the linear protocol of MCL and FIMA
(``freeze=True``: the encoder is frozen, batch-norm statistics included, and only the classifier learns on
augmented clips; ``mvtools eval --protocol linear-sgd``).

    logits = W dropout(n(f(x))) + b,   loss ``ce`` = cross-entropy(logits, soft targets)

``n`` is VideoMAE's ``fc_norm`` (a LayerNorm after mean pooling) for a ViT in its ``mean_pooling`` form, else the
identity. VideoMAE's fine-tuning knobs: ``label_smoothing``, ``mixup`` / ``cutmix`` (``trainer.mixup``; batches are
mixed in training only), ``layer_decay`` (layer-wise learning-rate decay: a ViT's parameters at depth l of L learn
at lr x layer_decay^(L + 1 - l), the embeddings at depth 0, the classifier at L + 1) and the backbone's
``drop_path`` (``backbone_args``). ``motion_modules`` fine-tunes HCML's network whole: the backbone with the motion
modules the pretraining embedded in it (``HCML.encoder_args``), level 0 from the store where it was pretrained so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .methods.base import Method, motion_input
from .methods.hcml import HierarchicalNet
from .mixup import mix, smoothed_targets, soft_cross_entropy
from .models import Backbone, build
from .vit import ViT


def build_encoder(backbone: str, backbone_args: dict | None = None, motion_modules: dict | None = None) -> Backbone:
    """The backbone, or with ``motion_modules`` ({"level0", "motion_width"}) HCML's network around it (its motion
    modules embedded after every stage, as the paper has them)."""
    encoder = build(backbone, 3, **(backbone_args or {}))
    return HierarchicalNet(encoder, **motion_modules) if motion_modules else encoder


class Supervised(Method):
    name = "supervised"
    modalities = ("rgb",)
    views = 1
    bn = "local"  # no key encoder: nothing to leak

    def __init__(self, backbone: str = "tiny", backbone_args: dict | None = None, classes: int = 2,
                 dropout: float = 0.5, freeze: bool = False, label_smoothing: float = 0.0, mixup: float = 0.0,
                 cutmix: float = 0.0, switch_prob: float = 0.5, layer_decay: float = 1.0,
                 motion_modules: dict | None = None):
        super().__init__()
        if not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must lie in (0, 1], got {layer_decay}")
        self.backbone = build_encoder(backbone, backbone_args, motion_modules)
        self.motion_modules = motion_modules
        self.level0 = motion_modules.get("level0", "framediff") if motion_modules else "framediff"
        if self.level0 != "framediff":  # HCML's level 0 read from the store
            if mixup or cutmix:
                raise ValueError("mixup and cutmix mix RGB clips only; an encoder fed stored motion takes neither")
            self.modalities = ("rgb", self.level0)
        pooled_norm = isinstance(self.backbone, ViT) and self.backbone.mean_pooling
        self.fc_norm = nn.LayerNorm(self.backbone.out_dim) if pooled_norm else None  # transformers' fc_norm
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.backbone.out_dim, classes)
        self.freeze, self.classes = freeze, classes
        self.label_smoothing, self.mixup, self.cutmix, self.switch_prob = label_smoothing, mixup, cutmix, switch_prob
        self.layer_decay = layer_decay
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

    def encoder_args(self) -> dict:
        return {"motion_modules": self.motion_modules} if self.motion_modules else {}

    def logits(self, rgb: torch.Tensor, **motion: torch.Tensor) -> torch.Tensor:
        """Class scores of clips (and of their stored level-0 motion, for HCML's network fed ``mv`` / ``residual``)."""
        level0 = () if self.level0 == "framediff" else (motion_input(motion[self.level0], self.level0),)
        features = self.backbone(rgb, *level0)
        if self.fc_norm is not None:
            features = self.fc_norm(features)
        return self.fc(self.dropout(features))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["label"]
        if bool((labels < 0).any()):
            raise ValueError("a clip without a label reached the classifier")
        x = batch["views"][0]["rgb"]
        if not (self.mixup or self.cutmix) or not self.training:
            motion = {k: v for k, v in batch["views"][0].items() if k != "rgb"}
            return {"ce": F.cross_entropy(self.logits(x, **motion), labels, label_smoothing=self.label_smoothing)}
        targets = smoothed_targets(labels, self.classes, self.label_smoothing)
        x, targets = mix(x, targets, self.mixup, self.cutmix, self.switch_prob)
        return {"ce": soft_cross_entropy(self.logits(x), targets)}

    def param_groups(self, weight_decay: float) -> list[dict]:
        """``Method.param_groups``, split by depth with ``lr_scale`` = layer_decay^(L + 1 - l) for a backbone that
        knows its parameters' depths (a ViT's ``layer_of``); the classifier's group first."""
        layer_of = getattr(self.backbone, "layer_of", None)
        if self.layer_decay == 1.0 or layer_of is None:
            return super().param_groups(weight_decay)
        top = self.backbone.depth + 1
        groups: dict[tuple[int, bool], dict] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            layer = layer_of(name.removeprefix("backbone.")) if name.startswith("backbone.") else top
            decay = p.ndim > 1 and name.rsplit(".", 1)[-1] not in self.no_weight_decay
            group = groups.setdefault((layer, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                                       "lr_scale": self.layer_decay ** (top - layer)})
            group["params"].append(p)
        return [groups[k] for k in sorted(groups, key=lambda k: (-k[0], not k[1]))]
