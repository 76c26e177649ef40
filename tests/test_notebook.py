from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "explore_store.ipynb"


def test_explore_store_notebook_runs_headless(synth_store, tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert "import mvtools" not in code and "from mvtools" not in code  # plain zarr reads the store
    monkeypatch.setenv("MVTOOLS_STORE", str(synth_store))
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "4 complete videos" in text and "4 videos in the index (fresh)" in text and "mean |mv| px" in text
    assert "<xarray.Dataset>" in text and "mean |past mv| of the P-frames" in text
    table = text[text.index("mean |mv| px"):].splitlines()[1:3]
    assert [line.split()[:3] for line in table] == [["left", "2", "80"], ["rotate_cw", "2", "80"]]
    assert sum("image/png" in out.get("data", {}) for out in outputs) == 2  # the frame and the statistics
