"""Write videomae_reference.json: Hugging Face transformers' VideoMAE as reference data for tests/test_vit.py.

transformers is not a dependency of mvtools, so this runs once, in a venv that has it, without a network (models
built from configs, never downloaded), and its output is committed::

    python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch==2.13.0 transformers
    /tmp/hfvenv/bin/python tests/data/make_videomae_reference.py

It records, for the ViT-S/16 and ViT-B/16 configurations of VideoMAE (16 x 224 x 224 clips), the state dicts'
entries as [name, shape] in order: ``VideoMAEForPreTraining`` (``use_mean_pooling=False``, the form of the Hub's
pretraining checkpoints such as MCG-NJU/videomae-base: its encoder ``videomae.*`` ends in ``layernorm``) and
``VideoMAEForVideoClassification`` (``use_mean_pooling=True``, the fine-tuned form: no ``layernorm``, ``fc_norm``
after mean pooling, then ``classifier``), and the encoder's parameter count. Then, for a small configuration, the
function under fixed weights (``deterministic_``, the k-th floating entry of the state dict from
s_i = sin(0.37 i + 1.3 k)) on ``clips()``, in float64: the pretraining model's encoder output (mean over tokens)
without a mask and with ``MASK``, its reconstruction logits and loss (``norm_pix_loss``), and the classification
model's logits. ``deterministic_``, ``clips`` and ``MASK`` are the contract the tests reproduce.
"""

import json
import math
from pathlib import Path

import torch
import transformers
from transformers import VideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification

#: VideoMAE's ViT-S/16 and ViT-B/16 with their pretraining decoders
CONFIGS = {
    "vit_s16": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                    decoder_hidden_size=192, decoder_num_hidden_layers=4, decoder_num_attention_heads=3,
                    decoder_intermediate_size=768),
    "vit_b16": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                    decoder_hidden_size=384, decoder_num_hidden_layers=4, decoder_num_attention_heads=6,
                    decoder_intermediate_size=1536),
}
#: the small configuration whose function is recorded: 2 x 3 x 3 tokens
SMALL = dict(image_size=48, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=24, num_hidden_layers=2,
             num_attention_heads=3, intermediate_size=48, decoder_hidden_size=12, decoder_num_hidden_layers=1,
             decoder_num_attention_heads=2, decoder_intermediate_size=24)
#: masked tokens of the two clips (12 of 18 each, different places)
MASK = [[i % 3 != 0 for i in range(18)], [i % 3 != 1 for i in range(18)]]
CLASSES = 5


def deterministic_(state: dict[str, torch.Tensor]) -> None:
    """Fill the k-th floating entry (counting every entry) from s_i = sin(0.37 i + 1.3 k), i its flat index:
    1-d ``weight`` (norms) 1 + 0.25 s, entries of 2 or more dimensions s sqrt(6 / fan_in), the rest 0.1 s."""
    with torch.no_grad():
        for k, (name, t) in enumerate(state.items()):
            if not t.is_floating_point():
                continue
            s = torch.sin(0.37 * torch.arange(t.numel(), dtype=torch.float64) + 1.3 * k).reshape(t.shape)
            if name.endswith("weight") and t.dim() == 1:
                v = 1 + 0.25 * s
            elif t.dim() >= 2:
                v = s * math.sqrt(6 / (t.numel() // t.shape[0]))
            else:
                v = 0.1 * s
            t.copy_(v)


def clips(shape=(3, 4, 48, 48), batch: int = 2) -> torch.Tensor:
    """(batch, C, T, H, W) float64, mvtools' layout: clip b is sin(0.01 j + 0.5 b) at flat index j."""
    j = torch.arange(math.prod(shape), dtype=torch.float64)
    return torch.stack([torch.sin(0.01 * j + 0.5 * b).reshape(shape) for b in range(batch)])


def entries(model: torch.nn.Module) -> list:
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def values(t: torch.Tensor) -> list[float]:
    return [float(f"{v:.12g}") for v in t.flatten().tolist()]


def small_function() -> dict:
    pre = VideoMAEForPreTraining(VideoMAEConfig(**SMALL, use_mean_pooling=False, norm_pix_loss=True)).double().eval()
    cls = VideoMAEForVideoClassification(VideoMAEConfig(**SMALL, use_mean_pooling=True, num_labels=CLASSES))
    cls = cls.double().eval()
    for model in (pre, cls):
        state = model.state_dict()
        deterministic_(state)
        model.load_state_dict(state)
    x = clips()
    pixel_values = x.permute(0, 2, 1, 3, 4)  # transformers takes (B, T, C, H, W)
    mask = torch.tensor(MASK)
    with torch.no_grad():
        encoded = pre.videomae(pixel_values).last_hidden_state
        visible = pre.videomae(pixel_values, bool_masked_pos=mask).last_hidden_state
        out = pre(pixel_values, bool_masked_pos=mask)
        logits = cls(pixel_values).logits
    return {
        "config": SMALL, "mask": MASK, "classes": CLASSES,
        "pretraining_state_dict": entries(pre), "classification_state_dict": entries(cls),
        "encoder_mean": values(encoded.mean(1)),
        "visible_tokens": {"shape": list(visible.shape), "sum": visible.sum().item(),
                           "sumsq": (visible * visible).sum().item(), "first": values(visible[0, 0])},
        "reconstruction": {"shape": list(out.logits.shape), "sum": out.logits.sum().item(),
                           "sumsq": (out.logits * out.logits).sum().item(), "first": values(out.logits[1, 0, :16])},
        "loss": out.loss.item(),
        "classification_logits": values(logits),
    }


def main() -> None:
    out = {"torch": torch.__version__, "transformers": transformers.__version__,
           "weights": "deterministic_ in tests/data/make_videomae_reference.py", "models": {}}
    for name, config in CONFIGS.items():
        pre = VideoMAEForPreTraining(VideoMAEConfig(**config, use_mean_pooling=False))
        cls = VideoMAEForVideoClassification(VideoMAEConfig(**config, use_mean_pooling=True, num_labels=400))
        out["models"][name] = {
            "encoder_params": sum(p.numel() for p in pre.videomae.parameters()),
            "VideoMAEForPreTraining": entries(pre), "VideoMAEForVideoClassification": entries(cls)}
    out["small"] = small_function()
    path = Path(__file__).with_name("videomae_reference.json")
    path.write_text(_compact(out) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def _compact(value, indent: str = "") -> str:
    """JSON with one state-dict entry ([name, shape]) per line: readable diffs, a small file."""
    if isinstance(value, dict):
        inner = indent + " "
        return "{\n" + ",\n".join(f"{inner}{json.dumps(k)}: {_compact(v, inner)}" for k, v in value.items()) + \
            "\n" + indent + "}"
    if isinstance(value, list) and value and all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                                 for e in value):
        return "[\n" + ",\n".join(indent + " " + json.dumps(e) for e in value) + "\n" + indent + "]"
    return json.dumps(value)


if __name__ == "__main__":
    main()
