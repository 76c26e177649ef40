"""A store read with no mvtools at all, in venvs of their own (README "Store layout", reading without mvtools):
Python 3.12 with ``pip install zarr imagecodecs-zarr xarray``, and Python 3.11 with ``zarr imagecodecs xarray`` and
the README's codec registration. Every array of every video, the index and an xarray open must equal mvtools' reads.

The venvs are built once under ``.cache/plain-readers/`` (git-ignored) and reused; the tests skip, saying why,
where the interpreter is missing or PyPI cannot be reached.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mvtools import open_store

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "plain-readers"
SCRIPT = Path(__file__).with_name("read_without_mvtools.py")
PACKAGES = {"3.12": ["zarr", "imagecodecs-zarr", "xarray"], "3.11": ["zarr", "imagecodecs", "xarray"]}


def interpreter(version: str) -> str | None:
    """A working ``python<version>``: pyenv's install first (its shims fail for versions not selected), then PATH."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(pyenv.glob(f"{version}.*/bin/python{version}"))
    candidates = [str(p) for p in found[::-1]] + [shutil.which(f"python{version}") or ""]
    for candidate in filter(None, candidates):
        ok = subprocess.run([candidate, "-c", "import venv"], capture_output=True).returncode == 0
        if ok:
            return candidate
    return None


def plain_venv(version: str) -> Path:
    """The cached venv of ``version`` with only PACKAGES[version] (built on first use), or skip."""
    venv = CACHE / f"py{version}"
    marker = venv / "packages.txt"
    wanted = " ".join(PACKAGES[version])
    if marker.exists() and marker.read_text() == wanted:
        return venv
    python = interpreter(version)
    if python is None:
        pytest.skip(f"no python{version} on this machine (pyenv install {version} provides one)")
    building = CACHE / f"py{version}.building"
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(building)], check=True, capture_output=True)
    pip = subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "-q", *PACKAGES[version]],
                         capture_output=True, text=True, timeout=900)
    if pip.returncode:
        shutil.rmtree(building, ignore_errors=True)
        last = (pip.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"pip install {wanted} failed on Python {version} (PyPI unreachable?): {last}")
    (building / "packages.txt").write_text(wanted)
    shutil.rmtree(venv, ignore_errors=True)
    building.rename(venv)  # venvs record absolute paths: rebuilt in place by the next run if that breaks them
    return venv


def readme_codec_snippet() -> str:
    """The README's Python 3.11 code block that registers ``imagecodecs_jpeg``."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = [b for b in blocks if 'register_codec("imagecodecs_jpeg"' in b]
    assert len(found) == 1, "the README should hold exactly one codec registration block"
    return found[0]


def read_plainly(venv: Path, store: Path, tmp_path: Path, prelude: str | None = None) -> tuple[dict, dict]:
    out = tmp_path / "reads.npz"
    args = [str(venv / "bin" / "python"), str(SCRIPT), str(store), str(out)]
    if prelude is not None:
        (tmp_path / "prelude.py").write_text(prelude)
        args.append(str(tmp_path / "prelude.py"))
    # -I would also drop the script's folder; a clean environment and another cwd keep the checkout out of sys.path
    run = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    with np.load(out, allow_pickle=True) as data:
        return {k.replace("|", "/"): data[k] for k in data.files}, report


def assert_same_as_mvtools(reads: dict, store: Path) -> None:
    ours = open_store(store)
    expected = {}
    for key in ours.keys():
        for name in ours[key].arrays():
            expected[f"{key}/{name}"] = ours[key][name][:]
    index = ours.index()
    expected.update({f"index/{name}": column for name, column in index.columns.items()})
    first = ours.keys()[0]
    expected["xarray/frames"], expected["xarray/residual"] = ours[first].frames[:], ours[first].residual[:]
    assert sorted(reads) == sorted([*expected, "xarray/dims"])
    for name, value in expected.items():
        got = reads[name]
        assert got.shape == value.shape and (got.dtype == value.dtype or value.dtype == object), name
        np.testing.assert_array_equal(got, value, err_msg=name)  # bit-identical
    assert reads["xarray/dims"].tolist() == ["time", "cell_y", "cell_x", "mv_channel"]


@pytest.mark.slow
def test_python_3_12_reads_a_store_with_zarr_imagecodecs_zarr_and_xarray_only(synth_store, tmp_path):
    venv = plain_venv("3.12")
    reads, report = read_plainly(venv, synth_store, tmp_path)
    assert report["mvtools_importable"] is False and report["versions"]["python"].startswith("3.12")
    assert report["versions"]["imagecodecs-zarr"] is not None
    assert_same_as_mvtools(reads, synth_store)
    assert report["label"] == open_store(synth_store)[open_store(synth_store).keys()[0]].attrs["label"]


@pytest.mark.slow
def test_python_3_11_reads_a_store_with_the_readme_s_codec_registration(synth_store, tmp_path):
    venv = plain_venv("3.11")
    reads, report = read_plainly(venv, synth_store, tmp_path, prelude=readme_codec_snippet())
    assert report["mvtools_importable"] is False and report["versions"]["imagecodecs-zarr"] is None
    assert_same_as_mvtools(reads, synth_store)
    # Without it (what the README says): the JPEG arrays raise, the others read.
    key = open_store(synth_store).keys()[0]
    code = ("import sys, warnings, zarr; warnings.simplefilter('ignore'); v = zarr.open_group(sys.argv[1], mode='r')"
            f"['videos'][{key!r}]; print(v['mv'][:].shape); v['frames'][0]")
    bare = subprocess.run([str(venv / "bin" / "python"), "-c", code, str(synth_store)], capture_output=True,
                          text=True, cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    assert bare.returncode != 0 and "UnknownCodecError" in bare.stderr and "imagecodecs_jpeg" in bare.stderr
    assert bare.stdout.startswith(f"({len(open_store(synth_store)[key])}, ")

