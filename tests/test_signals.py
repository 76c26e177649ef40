"""Stop signals (trainer/signals.py): real signals to real processes. SIGTERM, SIGUSR1 and Ctrl-C finish the step,
checkpoint it, print one line with the command that resumes, exit 75; the resumed run equals an uninterrupted one."""

import csv
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainer.loop import Interrupted, TrainConfig, load_checkpoint, train
from trainer.methods import REGISTRY
from trainer.signals import EXIT_INTERRUPTED, StopRequests, ignore_stop_signals

MVTOOLS = str(Path(sys.executable).with_name("mvtools"))


def rows(run) -> list[dict]:
    with open(Path(run) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_the_first_signal_is_a_request_and_a_second_ctrl_c_stops_at_once():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    with StopRequests() as requests:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert requests.requested and requests.name == "SIGUSR1"
        os.kill(os.getpid(), signal.SIGTERM)  # a later signal changes nothing
        assert requests.name == "SIGUSR1"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert {sig: signal.getsignal(sig) for sig in before} == before  # handlers restored


def test_dataloader_workers_ignore_the_signals_the_loop_handles():
    pid = os.fork()
    if pid == 0:  # a worker: ignores the signals, then waits to be killed
        ignore_stop_signals(0)
        time.sleep(30)
        os._exit(0)
    try:
        time.sleep(0.5)
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            os.kill(pid, sig)
        time.sleep(0.5)
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # still running
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@pytest.fixture
def signalling():
    """A method (a real plug-in) that sends its own process SIGUSR1 during its third step: a signal at a known
    step, as Slurm's --signal sends it."""
    from trainer.methods.rgb import RGB

    class Signalling(RGB):
        name = "signalling"
        calls = 0

        def forward(self, batch):
            Signalling.calls += 1
            if Signalling.calls == 3:
                os.kill(os.getpid(), signal.SIGUSR1)
            return super().forward(batch)

    REGISTRY["signalling"] = Signalling
    yield Signalling
    del REGISTRY["signalling"]


def small(store, out, **kw) -> TrainConfig:
    base = dict(method="rgb", store=str(store), out=str(out), steps=6, batch_size=2, clip_len=4, stride=2, size=32,
                workers=0, checkpoint_every=100, warmup_steps=2, method_args={"queue": 0})
    return TrainConfig(**{**base, **kw})


def test_a_signal_during_a_step_checkpoints_that_step_and_resume_equals_an_uninterrupted_run(
        synth_store, tmp_path, signalling):
    straight = train(small(synth_store, tmp_path / "a"), progress=False)
    with pytest.raises(Interrupted) as stopped:
        train(small(synth_store, tmp_path / "b", method="signalling"), progress=False)
    assert stopped.value.step == 3 and stopped.value.signal_name == "SIGUSR1"
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 3 and len(rows(tmp_path / "b")) == 3
    resumed = train(small(synth_store, tmp_path / "b"), progress=False, resume=True)  # rgb: the same weights
    assert resumed["resumed_from"] == 3 and resumed["last"] == straight["last"]
    assert rows(tmp_path / "b") == rows(tmp_path / "a")


@pytest.mark.slow
def test_sigterm_to_the_process_group_finishes_the_step_and_the_printed_command_resumes(synth_store, tmp_path):
    """As Slurm or ``kill -- -PGID`` sends it: the command and its DataLoader workers get SIGTERM."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: rgb\nclip_len: 4\nsize: 32\nbatch_size: 2\nwarmup_steps: 2\nworkers: 2\n"
                      "checkpoint_every: 100\nmethod_args: {queue: 0}\n")
    run = tmp_path / "run"
    cmd = [MVTOOLS, "train", "--config", str(recipe), "--store", str(synth_store), "--out", str(run), "--steps", "16",
           "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not (
            (run / "metrics.csv").exists() and len(rows(run)) >= 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == EXIT_INTERRUPTED, err[-3000:]
    step = load_checkpoint(run / "checkpoint.pt")["step"]
    assert 3 <= step < 16 and len(rows(run)) == step  # the step in progress, finished and checkpointed
    line = f"mvtools train: stopped by SIGTERM after step {step}: checkpoint {run / 'checkpoint.pt'} (step {step}); "
    assert err.startswith(line) and err.count("\n") == 1, err  # one line: no traceback from workers
    resume = shlex.split(err.split("resume with: ", 1)[1])
    assert resume[0] == "mvtools" and resume[-1] == "--resume"
    done = subprocess.run([MVTOOLS, *resume[1:]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    straight = train(TrainConfig.from_yaml(recipe, store=str(synth_store), out=str(tmp_path / "straight"), steps=16,
                                           workers=0), progress=False)  # batches do not depend on the workers
    assert rows(run) == rows(tmp_path / "straight") and straight["steps"] == 16
    resumed, reference = (load_checkpoint(r / "checkpoint.pt")["model"] for r in (run, tmp_path / "straight"))
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_finetune_stops_the_same_way(synth_store, tmp_path, capsys):
    """SIGTERM to the process while it fine-tunes: exit 75, the checkpoint at the last step, the resume line."""
    import threading

    from mvtools.cli import main

    recipe = tmp_path / "ft.yaml"
    recipe.write_text("clip_len: 4\nsize: 32\nbatch_size: 2\nworkers: 0\ncheckpoint_every: 1000\n")
    out = tmp_path / "ft"

    def signal_after_two_steps():
        deadline = time.time() + 120
        while time.time() < deadline and not ((out / "metrics.csv").exists() and len(rows(out)) >= 2):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=signal_after_two_steps, daemon=True).start()
    args = ["finetune", "--from-scratch", "--store", str(synth_store), "--out", str(out), "--config", str(recipe),
            "--steps", "500", "--quiet"]
    assert main(args) == EXIT_INTERRUPTED
    step = load_checkpoint(out / "checkpoint.pt")["step"]
    err = capsys.readouterr().err
    assert 2 <= step < 500 and len(rows(out)) == step and not (out / "test.json").exists()
    assert err == (f"mvtools finetune: stopped by SIGTERM after step {step}: checkpoint {out / 'checkpoint.pt'} "
                   f"(step {step}); resume with: mvtools {shlex.join(args)} --resume\n")
