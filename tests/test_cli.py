import json
import os
import subprocess
import sys
from pathlib import Path

MVTOOLS = [str(Path(sys.executable).with_name("mvtools"))]


def run(*args, check_rc=None):
    out = subprocess.run([*MVTOOLS, *map(str, args)], capture_output=True, text=True, env={**os.environ})
    if check_rc is not None:
        assert out.returncode == check_rc, out.stderr
    return out


def test_synth_extract_info_end_to_end(tmp_path):
    run("synth", tmp_path / "v", "--videos", 3, "--seed", 2, "--frames", 20, check_rc=0)
    assert len(list((tmp_path / "v").rglob("*.mp4"))) == 3
    (tmp_path / "v" / "left" / "bad.mp4").write_text("nope")
    out = run("extract", tmp_path / "v", "-o", tmp_path / "s.zarr", "--quiet", check_rc=3)
    assert "3 videos, 60 frames" in out.stdout and "left/bad.mp4" in out.stdout
    summary = json.loads(run("info", tmp_path / "s.zarr", "--json", check_rc=0).stdout)
    assert summary["videos"] == 3 and summary["frames"] == 60 and summary["incomplete"] == []
    assert list(summary["failed"]) == ["left/bad.mp4"] and "cannot open" in summary["failed"]["left/bad.mp4"]
    (tmp_path / "v" / "left" / "bad.mp4").unlink()
    out = run("extract", tmp_path / "v", "-o", tmp_path / "s.zarr", "--quiet", check_rc=0)
    assert "already complete               3" in out.stdout
    text = run("info", tmp_path / "s.zarr", check_rc=0).stdout
    assert "3 complete, 0 failed, 0 pending" in text and "frames    60" in text


def test_usage_errors_exit_2(tmp_path):
    assert run("extract", tmp_path / "missing", "-o", tmp_path / "s.zarr").returncode == 2
    out = run("extract", tmp_path, "-o", tmp_path / "s.zarr", "--modalities", "frames,optical")
    assert out.returncode == 2 and "unknown modality" in out.stderr
    out = run("info", tmp_path / "nothing.zarr")
    assert out.returncode == 2 and "nothing.zarr" in out.stderr and out.stderr.count("\n") == 1


def test_help_documents_exit_codes():
    out = run("extract", "--help", check_rc=0).stdout
    assert "exit codes" in out and "3  some videos failed" in out and "--modalities" in out


def test_dry_run_lists_and_writes_nothing(tmp_path):
    run("synth", tmp_path / "v", "--videos", 4, "--frames", 8, check_rc=0)
    out = run("extract", tmp_path / "v", "-o", tmp_path / "s.zarr", "--dry-run", "--include", "left/*", check_rc=0)
    assert "1 to extract, 0 already complete" in out.stdout
    assert "left/left_0000.mp4 -> videos/left__left_0000" in out.stdout
    assert not (tmp_path / "s.zarr").exists()
    run("extract", tmp_path / "v", "-o", tmp_path / "s.zarr", "--workers", "0", "--quiet", check_rc=0)
    out = run("extract", tmp_path / "v", "-o", tmp_path / "s.zarr", "--dry-run", check_rc=0)
    assert "0 to extract, 4 already complete" in out.stdout
    out = run("extract", tmp_path / "v", "-o", tmp_path / "s.zarr", "--dry-run", "--size", "64")
    assert out.returncode == 2 and "other settings" in out.stderr
