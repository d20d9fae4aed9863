"""A training run killed with SIGKILL part-way and resumed: the reliability tests' common part."""

import os
import signal
import subprocess
import sys
import time

import yaml

from kcrl.checkpoint import load_checkpoint
from kcrl.benchmarks.train import TrainConfig, train


def kill_and_resume(tmp_path, values: dict, kill_after: int):
    """Run ``kcrl train`` on config ``values`` uninterrupted (in process) and as a subprocess that is
    SIGKILLed once its checkpoint reaches ``kill_after`` iterations, then resumed with ``--resume``.

    Returns ``(reference_dir, resumed_dir, killed_at)``; both directories hold finished runs.
    """
    iterations = values["trainer"]["iterations"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    train(TrainConfig.from_dict(values), tmp_path / "reference", show_progress=False)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "kcrl.cli", "train", str(path), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "checkpoint.pt").exists() and load_checkpoint(out / "checkpoint.pt")["iteration"] >= kill_after:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(out / "checkpoint.pt")["iteration"]
    assert kill_after <= killed_at < iterations and not (out / "metrics.json").exists()
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return tmp_path / "reference", out, killed_at
