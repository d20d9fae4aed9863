"""SIGINT, SIGTERM and SIGHUP mid-run: a checkpoint, exit 130/143/129, a resume command; the
resumed run equals an uninterrupted one bit for bit. Temp files a SIGKILL left are removed."""

import json
import os
import shlex
import signal
import time

import pytest
import torch

from reliability_common import TABULAR, kcrl, kcrl_popen, write_config
from kcrl.benchmarks.train import TrainConfig, train
from kcrl.checkpoint import load_checkpoint, read_json
from kcrl.errors import RunInterrupted
from kcrl.trainer import PRTrainer

LONG = {**TABULAR, "trainer": {**TABULAR["trainer"], "iterations": 150, "checkpoint_every": 2}}


def _identical(a, b, where="checkpoint"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("signals") / "reference"
    train(TrainConfig.from_dict(LONG), out, show_progress=False)
    return out


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_mid_run_then_resume_equals_uninterrupted(tmp_path, reference, signum, code):
    config = write_config(tmp_path, LONG)
    out = tmp_path / "run"
    proc = kcrl_popen("train", str(config), "--out", str(out), "--no-progress")
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if (out / "checkpoint.pt").is_file() and load_checkpoint(out / "checkpoint.pt")["iteration"] >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it was signalled"
    os.kill(proc.pid, signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert f"training stopped by {signal.Signals(signum).name} after iteration" in stderr and "Traceback" not in stderr
    stopped = load_checkpoint(out / "checkpoint.pt")["iteration"]
    assert 4 <= stopped < LONG["trainer"]["iterations"] and not (out / "metrics.json").exists()
    command = shlex.split(stderr.split("Resume with: ")[1].strip())
    assert command[:2] == ["kcrl", "train"] and command[-1] == "--resume"
    if signum == signal.SIGTERM:  # the printed command, as a user would run it
        done = kcrl(*command[1:], "--no-progress")
        assert done.returncode == 0, done.stderr
    else:  # the same in this process (quicker)
        train(TrainConfig.from_yaml(command[2]), command[4], resume=True, show_progress=False)
    assert json.loads((out / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())
    _identical(load_checkpoint(out / "checkpoint.pt"), load_checkpoint(reference / "checkpoint.pt"))


def test_in_process_sigterm_at_a_known_iteration(tmp_path, reference):
    """The signal arrives during iteration 7: iteration 7 finishes, the checkpoint holds 7."""
    def factory(*args, **kwargs):
        trainer = PRTrainer(*args, **kwargs)
        step = trainer.step

        def step_and_signal():
            stats = step()
            if trainer.iteration == 7:
                os.kill(os.getpid(), signal.SIGTERM)
            return stats

        trainer.step = step_and_signal
        return trainer

    config = TrainConfig.from_dict(LONG)
    handler = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or one an earlier test (e.g. Ray's) installed
    with pytest.raises(RunInterrupted) as info:
        train(config, tmp_path / "run", show_progress=False, trainer_factory=factory)
    assert info.value.exit_code == 143 and "after iteration 7 of 150" in str(info.value)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 7
    assert signal.getsignal(signal.SIGTERM) == handler  # the handlers are restored
    resumed = train(config, tmp_path / "run", resume=True, show_progress=False)
    assert resumed == read_json(reference / "metrics.json")
    _identical(load_checkpoint(tmp_path / "run" / "checkpoint.pt"), load_checkpoint(reference / "checkpoint.pt"))


def test_stale_temp_files_are_removed_by_the_next_run(tmp_path):
    config = TrainConfig.from_dict({**TABULAR, "trainer": {**TABULAR["trainer"], "iterations": 6}})
    out = tmp_path / "run"
    train(config, out, show_progress=False, stop_after=3)
    stale = [out / ".checkpoint.pt.k1l2m3.tmp", out / ".metrics.json.a9b8c7.tmp"]
    for path in stale:
        path.write_bytes(b"half a file a SIGKILL left behind")
    train(config, out, resume=True, show_progress=False)
    assert not any(path.exists() for path in stale)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
