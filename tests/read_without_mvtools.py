"""Run by tests/test_plain_readers.py with the Python of a venv that has no mvtools (zarr, imagecodecs[-zarr],
xarray only): read every array of every video, the index and one video through xarray, and save them for the test
to compare with mvtools' own reads.

    python read_without_mvtools.py STORE OUT.npz [PRELUDE.py]

PRELUDE.py (optional) runs first: the README's codec registration for Python 3.11. Prints one JSON line: the
versions it ran with and whether mvtools could have been imported.
"""

import importlib.metadata
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import numpy as np

warnings.simplefilter("ignore")  # zarr notes that numcodecs codecs are outside the v3 spec
store, out = sys.argv[1], sys.argv[2]
if len(sys.argv) > 3:
    exec(compile(Path(sys.argv[3]).read_text(), sys.argv[3], "exec"))

import xarray as xr  # noqa: E402
import zarr  # noqa: E402

root = zarr.open_group(store, mode="r")
arrays = {}
for key in sorted(root["videos"].group_keys()):
    for name, array in root["videos"][key].arrays():
        arrays[f"{key}/{name}"] = array[:]
for name, column in root["index"].arrays():
    arrays[f"index/{name}"] = np.asarray(column[:], dtype=object if column.dtype.kind in "OTU" else None)
first = sorted(root["videos"].group_keys())[0]
ds = xr.open_zarr(store, group=f"videos/{first}", consolidated=False)
arrays["xarray/frames"], arrays["xarray/residual"] = ds["frames"].values, ds["residual"].values
arrays["xarray/dims"] = np.array(ds["mv"].dims)
np.savez(out, **{k.replace("/", "|"): v for k, v in arrays.items()})
versions = {"python": sys.version.split()[0]}
for package in ("zarr", "imagecodecs", "imagecodecs-zarr", "xarray", "numpy"):
    try:
        versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        versions[package] = None
print(json.dumps({"versions": versions, "mvtools_importable": importlib.util.find_spec("mvtools") is not None,
                  "label": ds.attrs.get("label")}))
