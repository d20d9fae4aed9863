"""Two writers on one output folder: the second is refused, naming the first; nothing is mixed."""

import os
import time

import pytest

from reliability_common import TABULAR, kcrl, kcrl_popen, write_config
from kcrl.benchmarks.runner import run_suite
from kcrl.benchmarks.train import TrainConfig, evaluate
from kcrl.checkpoint import load_checkpoint
from kcrl.errors import KcrlError, RunLockedError
from kcrl.runlock import LOCK_NAME, RunLock, read_holder


def test_a_second_lock_in_this_process_names_the_holder(tmp_path):
    with RunLock(tmp_path, "kcrl train first.yaml --out x"):
        with pytest.raises(RunLockedError) as info:
            RunLock(tmp_path, "kcrl train second.yaml --out x").acquire()
    text = str(info.value)
    assert f"pid {os.getpid()}" in text and "`kcrl train first.yaml --out x`" in text
    assert "choose another output folder" in text and isinstance(info.value, KcrlError)
    RunLock(tmp_path).acquire().release()  # released with the first: free again
    assert not (tmp_path / LOCK_NAME).exists()  # and the lock file is gone with it


def test_two_kcrl_train_on_one_out(tmp_path):
    """While one `kcrl train` runs, a second on the same --out (another config) exits 2 naming the first."""
    first = write_config(tmp_path, {**TABULAR, "seed": 1}, "first.yaml")
    second = write_config(tmp_path, {**TABULAR, "seed": 2}, "second.yaml")
    out = tmp_path / "run"
    proc = kcrl_popen("train", str(first), "--out", str(out), "--no-progress")
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (read_holder(out) or {}).get("pid") == proc.pid:
            time.sleep(0.05)
        assert read_holder(out)["pid"] == proc.pid
        other = kcrl("train", str(second), "--out", str(out), "--no-progress", "--force")
        assert other.returncode == 2
        assert f"is in use by another kcrl process (pid {proc.pid}" in other.stderr
        assert "first.yaml" in other.stderr and "Traceback" not in other.stderr
    finally:
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    # the folder holds the first run only: its config, its checkpoint, its metrics
    assert TrainConfig.saved(out).seed == 1
    assert load_checkpoint(out / "checkpoint.pt")["config"]["seed"] == 1
    assert evaluate(out)["iteration"] == TABULAR["trainer"]["iterations"]


def test_a_suite_refuses_a_locked_out_before_it_runs(tmp_path, monkeypatch):
    import kcrl.benchmarks.tabular_exact as suite

    monkeypatch.setattr(suite, "run", lambda *a, **k: pytest.fail("the suite ran on a locked folder"))
    with RunLock(tmp_path, "kcrl bench tabular-exact --out x"):
        with pytest.raises(RunLockedError, match="kcrl bench tabular-exact --out x"):
            run_suite("tabular-exact", out=tmp_path, show_progress=False)
