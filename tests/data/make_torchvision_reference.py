"""Write torchvision_video_models.json: torchvision's video models as reference data for tests/test_models.py.

torchvision does not import beside the CPU torch of the test environment, so this runs once, in a venv that has
it, without a network (``weights=None``), and its output is committed::

    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/tvenv/bin/python tests/data/make_torchvision_reference.py

Per model: the parameter count (classifier included, as in torchvision's weight metadata), the state dict's
entries (parameters and buffers) as [name, shape] in order, the classifier's name prefix, and the pooled features
before the classifier (the model with its classifier replaced by the identity) under ``deterministic_`` weights on
``clip(input)``, computed in float64, so the tests check that ours computes the same function, not only the same
names. ``deterministic_`` and ``clip`` are the contract the tests reproduce.

S3D pools ``features(x)`` with a 2 x 7 x 7 window at stride 1 and averages the windows: its forward runs only
where the last map is at least 2 x 7 x 7 (16 x 224 x 224 and up). At the small main input (8 x 64 x 64: a
1 x 2 x 2 map) it raises, which ``forward_error`` records, and ``features`` holds the global mean of the map;
``features_at`` holds torchvision's own forward at a size where the window is smaller than the map on every
axis (24 x 224 x 256: a 3 x 7 x 8 map, so the window's weighting shows on every axis).
"""

import json
import math
from pathlib import Path

import torch
import torchvision
from torchvision.models import video

#: model -> (input (T, H, W), the classifier's name prefix); for S3D, 1 x 2 x 2 cells after the last pool
MODELS = {"r2plus1d_18": ((8, 64, 64), "fc."), "r3d_18": ((8, 64, 64), "fc."), "mc3_18": ((8, 64, 64), "fc."),
          "s3d": ((8, 64, 64), "classifier.")}
#: model -> further inputs where torchvision's own forward runs (features_at)
MORE_INPUTS = {"s3d": [(24, 224, 256)]}


def deterministic_(state: dict[str, torch.Tensor]) -> None:
    """Fill the k-th floating entry (counting every entry) from s_i = sin(0.37 i + 1.3 k), i its flat index:
    running_var 1 + 0.5 (1 + s), BN weight (1-d ``weight``) 1 + 0.25 s, conv / linear weights s sqrt(6 / fan_in),
    everything else (biases, running_mean) 0.1 s; integer entries are left alone."""
    with torch.no_grad():
        for k, (name, t) in enumerate(state.items()):
            if not t.is_floating_point():
                continue
            s = torch.sin(0.37 * torch.arange(t.numel(), dtype=torch.float64) + 1.3 * k).reshape(t.shape)
            if name.endswith("running_var"):
                v = 1 + 0.5 * (1 + s)
            elif name.endswith("weight") and t.dim() == 1:
                v = 1 + 0.25 * s
            elif t.dim() >= 2:
                v = s * math.sqrt(6 / (t.numel() // t.shape[0]))
            else:
                v = 0.1 * s
            t.copy_(v)


def clip(shape) -> torch.Tensor:
    """(1, 3, T, H, W) float64: sin(0.01 j) at flat index j."""
    return torch.sin(0.01 * torch.arange(3 * math.prod(shape), dtype=torch.float64)).reshape(1, 3, *shape)


def features(name: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's forward without its classifier; for S3D where that raises, the global mean of its map."""
    if name == "s3d":
        model.classifier = torch.nn.Identity()
        try:
            return model(x)
        except RuntimeError:
            return model.features(x).mean((2, 3, 4))
    model.fc = torch.nn.Identity()
    return model(x)


def forward_error(model: torch.nn.Module, x: torch.Tensor) -> str | None:
    """The first line of the error torchvision's forward raises on ``x``, or None."""
    try:
        model(x)
    except RuntimeError as e:
        return f"RuntimeError: {str(e).splitlines()[0]}"
    return None


def summary(f: torch.Tensor) -> dict:
    return {"dim": f.numel(), "sum": f.sum().item(), "sumsq": (f * f).sum().item(),
            "values": [float(f"{v:.10g}") for v in f.tolist()]}


def main() -> None:
    out = {"torch": torch.__version__, "torchvision": torchvision.__version__,
           "weights": "deterministic_ in tests/data/make_torchvision_reference.py", "models": {}}
    for name, (shape, classifier) in MODELS.items():
        model = getattr(video, name)(weights=None).double().eval()
        num_params = sum(p.numel() for p in model.parameters())
        state = model.state_dict()
        deterministic_(state)
        with torch.no_grad():
            error = forward_error(model, clip(shape))
            f = features(name, model, clip(shape))[0]
            more = [{"input": list(s), **summary(features(name, model, clip(s))[0])} for s in MORE_INPUTS.get(name, [])]
        out["models"][name] = {
            "num_params": num_params, "classifier": classifier, "input": list(shape), "features": summary(f),
            **({"forward_error": error} if error else {}), **({"features_at": more} if more else {}),
            "state_dict": [[k, list(v.shape)] for k, v in state.items()]}
    path = Path(__file__).with_name("torchvision_video_models.json")
    path.write_text(_one_entry_per_line(out) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def _one_entry_per_line(out: dict) -> str:
    """JSON with one state-dict entry per line: readable diffs, a small file."""
    lines = ["{", f'"torch": {json.dumps(out["torch"])},', f'"torchvision": {json.dumps(out["torchvision"])},',
             f'"weights": {json.dumps(out["weights"])},', '"models": {']
    for m, (name, model) in enumerate(out["models"].items()):
        lines.append(f"{json.dumps(name)}: {{")
        for key, value in model.items():
            if key == "state_dict":
                continue
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)},")
        entries = [f"    {json.dumps(e)}" for e in model["state_dict"]]
        lines += ['  "state_dict": [', ",\n".join(entries), "  ]", "}" + ("," if m < len(out["models"]) - 1 else "")]
    lines += ["}", "}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
