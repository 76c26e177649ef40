"""The wheel as a new user gets it: build it from the checkout, install it into a fresh venv outside the checkout
(torch pinned first), and from an empty folder run synth -> extract -> info -> train by recipe name -> eval ->
finetune by recipe name -> export, then check everything the README tells a user to type
(tests/readme_commands.py) against the installed package. Exit 1 on the first failure, with the command and its
output.

    python3 .ci/wheel_smoke.py            # `make test` runs it after the test suite; about 2-3 min, most of it pip

Needs git (the wheel is built from the files git tracks or would track, as a clean clone has them) and PyPI or a
pip cache for the dependencies. TORCH (default torch==2.13.0, the local CPU build here) is installed before the
wheel so that pip never resolves an unpinned torch (GBs of CUDA wheels).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCH = os.environ.get("TORCH", "torch==2.13.0")


def step(what: str, args: list, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run one command; print it with its time; stop everything if it fails."""
    start = time.perf_counter()
    out = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, **kwargs)
    print(f"[{time.perf_counter() - start:6.1f} s] {what}", flush=True)
    if out.returncode:
        print(f"FAILED (exit {out.returncode}): {' '.join(map(str, args))}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
        sys.exit(1)
    return out


def source_tree(destination: Path) -> None:
    """The checkout's files as a clean clone (plus uncommitted edits) would have them: no venv, caches or builds."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():  # tracked but deleted in the working tree: left out, as a commit would
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)


def expect(condition: bool, message: str) -> None:
    if not condition:
        print(f"FAILED: {message}")
        sys.exit(1)


def main() -> int:
    total = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mvtools-wheel-") as tmp:
        tmp = Path(tmp)
        source_tree(tmp / "src")
        venv, work = tmp / "venv", tmp / "work"
        step("python -m venv", [sys.executable, "-m", "venv", venv], tmp)
        python, mvtools = venv / "bin" / "python", venv / "bin" / "mvtools"
        step(f"pip install {TORCH} (pinned before the wheel)", [python, "-m", "pip", "install", "-q", TORCH], tmp)
        step("pip wheel (the project)", [python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist",
                                         tmp / "src"], tmp)
        (wheel,) = (tmp / "dist").glob("mvtools-*.whl")
        step(f"pip install {wheel.name}", [python, "-m", "pip", "install", "-q", wheel], tmp)
        work.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        where = step("import mvtools", [python, "-c", "import mvtools, trainer; print(mvtools.__file__)"], work,
                     env=env).stdout.strip()
        expect(Path(where).is_relative_to(venv), f"mvtools came from {where}, not the wheel's venv")
        run = [mvtools]
        step("mvtools synth", [*run, "synth", "videos", "--videos", 16, "--frames", 20, "--seed", 0], work, env=env)
        step("mvtools extract (local Ray)", [*run, "extract", "videos", "-o", "store.zarr", "--quiet"], work, env=env)
        step("mvtools info", [*run, "info", "store.zarr"], work, env=env)
        listing = json.loads(step("mvtools info --videos --json", [*run, "info", "store.zarr", "--videos", "--json"],
                                  work, env=env).stdout)
        expect(len(listing["video_list"]) == 16, f"16 videos expected, info lists {len(listing['video_list'])}")
        step("mvtools train --config rgb_tiny", [*run, "train", "--config", "rgb_tiny", "--store", "store.zarr",
                                                 "--out", "runs/rgb", "--steps", 3, "--quiet"], work, env=env)
        probe = json.loads(step("mvtools eval (linear probe)", [*run, "eval", "--checkpoint", "runs/rgb/checkpoint.pt",
                                "--store", "store.zarr", "--clips", 1, "--json"], work, env=env).stdout)
        expect(probe["test_videos"] == 8, f"8 test videos expected, eval used {probe['test_videos']}")
        step("mvtools finetune --config ucf101_tiny",
             [*run, "finetune", "--config", "ucf101_tiny", "--checkpoint", "runs/rgb/checkpoint.pt", "--store",
              "store.zarr", "--out", "runs/ft", "--steps", 3, "--batch-size", 4, "--set", "test_clips=1",
              "--set", "test_crops=1", "--quiet"], work, env=env)
        test = json.loads((work / "runs" / "ft" / "test.json").read_text(),
                          parse_constant=lambda c: expect(False, f"test.json holds {c}"))
        expect(test["test_videos"] == 8, f"8 test videos expected, test.json has {test['test_videos']}")
        step("mvtools export", [*run, "export", "--checkpoint", "runs/ft/checkpoint.pt", "-o", "encoder.pt"], work,
             env=env)
        shown = step("mvtools recipes show rgb_tiny", [*run, "recipes", "show", "rgb_tiny"], work, env=env).stdout
        expect(shown == (REPO / "pipelines" / "train" / "rgb_tiny.yaml").read_text(), "recipes show differs")
        step("mvtools examples copy", [*run, "examples", "copy", "notebooks"], work, env=env)
        expect((work / "notebooks" / "explore_store.ipynb").exists(), "the notebook was not copied")
        readme = step("README: every command parses, every recipe and notebook resolves",
                      [python, tmp / "src" / "tests" / "readme_commands.py", tmp / "src" / "README.md"], work, env=env)
        print("  " + readme.stdout.strip().splitlines()[0])
    print(f"wheel smoke test passed in {time.perf_counter() - total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
