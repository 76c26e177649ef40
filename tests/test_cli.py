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


def test_info_lists_videos_and_failures_by_name(tmp_path):
    run("synth", tmp_path / "v", "--videos", 3, "--seed", 2, "--frames", 10, check_rc=0)
    sources = sorted(p.relative_to(tmp_path / "v").as_posix() for p in (tmp_path / "v").rglob("*.mp4"))
    for i in range(12):
        (tmp_path / "v" / "bad" / f"b{i:02d}.mp4").parent.mkdir(exist_ok=True)
        (tmp_path / "v" / "bad" / f"b{i:02d}.mp4").write_bytes(b"\0" * i)
    run("extract", tmp_path / "v", "-o", tmp_path / "s.zarr", "--workers", 0, "--quiet", check_rc=3)
    # synth names its videos <class>/<class>_NNNN.mp4: keys are <class>__<class>_NNNN, labels the folders
    expected = [{"key": rel[:-4].replace("/", "__"), "label": rel.split("/")[0], "split": None, "frames": 10}
                for rel in sources]
    summary = json.loads(run("info", tmp_path / "s.zarr", "--videos", "--json", check_rc=0).stdout)
    assert summary["video_list"] == expected and summary["videos"] == 3
    assert sorted(summary["failed"]) == [f"bad/b{i:02d}.mp4" for i in range(12)]
    table = run("info", tmp_path / "s.zarr", "--videos", check_rc=0).stdout.splitlines()
    assert table[0].split() == ["key", "label", "split", "frames"]
    assert [line.split() for line in table[1:]] == [[v["key"], v["label"], "-", "10"] for v in expected]
    failures = run("info", tmp_path / "s.zarr", "--failures", check_rc=0).stdout.splitlines()
    assert [line.split(": ")[0] for line in failures] == sorted(summary["failed"])
    assert all(line.split(": ", 1)[1] == summary["failed"][line.split(": ")[0]] for line in failures)
    text = run("info", tmp_path / "s.zarr", check_rc=0).stdout  # the summary names the first 10 and counts the rest
    assert text.count("  failed: bad/b") == 10 and "... and 2 more (mvtools info" in text


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
    assert out.stdout.startswith(f"dry run: 4 videos under {tmp_path / 'v'}")  # complete ones are counted too
    assert "0 to extract, 4 already complete" in out.stdout
    out = run("extract", tmp_path / "v", "-o", tmp_path / "s.zarr", "--dry-run", "--size", "64")
    assert out.returncode == 2 and "other settings" in out.stderr


def test_startup_imports_no_torch(tmp_path):
    """extract, info and show (masks included; and --help) never load torch: the trainer's commands register
    lazily."""
    run("synth", tmp_path / "v", "--videos", 2, "--frames", 8, check_rc=0)
    run("extract", tmp_path / "v", "-o", tmp_path / "s.zarr", "--workers", "0", "--quiet", check_rc=0)
    code = (
        "import sys\nfrom mvtools.cli import main\n"
        f"store = {str(tmp_path / 's.zarr')!r}\n"
        "for argv in (['info', store, '--json'], ['show', store, 'left__left_0000', '-o', store + '.png'],\n"
        "             ['show', store, 'left__left_0000', '--mask', 'mgm', '-o', store + '.gif']):\n"
        "    assert main(argv) == 0\n"
        "import mvtools.extract, mvtools.pipeline  # noqa\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_trainer_commands_are_registered_with_their_real_names():
    from trainer.cli import CLIP_BACKBONES, method_names
    from trainer.methods import REGISTRY
    from trainer.models import CLIP_BACKBONES as MODEL_BACKBONES

    assert method_names() == sorted(REGISTRY) and CLIP_BACKBONES == MODEL_BACKBONES
    out = run("train", "--help", check_rc=0).stdout
    assert "--method" in out and all(name in out for name in REGISTRY)
