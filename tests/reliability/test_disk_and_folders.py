"""Output folders are checked before any compute; a full disk is a typed error that keeps the last
checkpoint; resume refuses what it cannot verify."""

import errno
import os

import pytest

from reliability_common import TINY, kcrl, write_config
from kcrl.benchmarks.runner import run_suite
from kcrl.benchmarks.train import TrainConfig, train
from kcrl.checkpoint import CheckpointError, load_checkpoint, read_json
from kcrl.errors import ConfigError, DiskFullError, OutputFolderError
from kcrl.runlock import check_output_folder

CONFIG = TrainConfig.from_dict(TINY)


@pytest.fixture
def no_compute(monkeypatch):
    """Any build of a run's parts fails the test: the checks must come first."""
    import kcrl.benchmarks.train as train_module

    monkeypatch.setattr(train_module, "_build", lambda *a, **k: pytest.fail("compute started before the folder check"))


def _full_disk_after(monkeypatch, writes: int):
    """Let ``writes`` atomic writes through, then fail every write with ENOSPC."""
    import kcrl.checkpoint as checkpoint

    real_fdopen, count = os.fdopen, {"n": 0}

    class FullFile:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def fdopen(fd, *args, **kwargs):
        count["n"] += 1
        fh = real_fdopen(fd, *args, **kwargs)
        return fh if count["n"] <= writes else FullFile(fh)

    monkeypatch.setattr(checkpoint.os, "fdopen", fdopen)


def test_disk_full_mid_run_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    reference = train(CONFIG, tmp_path / "reference", show_progress=False)
    _full_disk_after(monkeypatch, writes=3)  # config.yaml, the checkpoints at 3 and 6; the one at 9 fails
    with pytest.raises(DiskFullError) as info:
        train(CONFIG, out, show_progress=False)
    text = str(info.value)
    assert "checkpoint.pt" in text and "the disk is full" in text and "is intact" in text
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 6  # the last good one
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()  # space freed
    assert train(CONFIG, out, resume=True, show_progress=False) == reference


def test_disk_full_before_any_compute(tmp_path, monkeypatch, no_compute):
    import kcrl.runlock as runlock

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runlock.tempfile, "mkstemp", full)
    with pytest.raises(DiskFullError, match="is on a full disk"):
        train(CONFIG, tmp_path / "run", show_progress=False)


def test_an_out_that_is_a_file_or_under_one(tmp_path, no_compute):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match="is a file; an output folder must be a directory"):
        train(CONFIG, tmp_path / "file", show_progress=False)
    with pytest.raises(OutputFolderError, match=r"is under '.*file', which is a file"):
        train(CONFIG, tmp_path / "file" / "run", show_progress=False)


def test_an_unwritable_out(tmp_path, monkeypatch, no_compute):
    import kcrl.runlock as runlock

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(runlock.tempfile, "mkstemp", refused)  # (as root, chmod would not stop a write)
    with pytest.raises(OutputFolderError, match=r"cannot be written \(Permission denied\)"):
        check_output_folder(tmp_path / "ro")


def test_bench_checks_out_before_the_suite_runs(tmp_path, monkeypatch):
    import kcrl.benchmarks.tabular_exact as suite

    monkeypatch.setattr(suite, "run", lambda *a, **k: pytest.fail("the suite ran before --out was checked"))
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(OutputFolderError):
            run_suite("tabular-exact", out=out, show_progress=False)
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "results.json").write_text("{}")
    with pytest.raises(OutputFolderError, match="already holds a suite's results.*--force"):
        run_suite("tabular-exact", out=tmp_path / "done", show_progress=False)
    done = kcrl("bench", "tabular-exact", "--out", str(tmp_path / "file"), "--no-progress")
    assert done.returncode == 2 and "is a file" in done.stderr and "Traceback" not in done.stderr


def test_an_out_holding_a_run_needs_resume_or_force(tmp_path):
    out = tmp_path / "run"
    first = train(CONFIG, out, show_progress=False)
    with pytest.raises(OutputFolderError, match=r"already holds files \(checkpoint.pt, config.yaml, metrics.json\)"):
        train(CONFIG, out, show_progress=False)
    other = TrainConfig.from_dict({**TINY, "seed": 5})
    again = train(other, out, show_progress=False, force=True)  # start over
    assert again != first and TrainConfig.saved(out).seed == 5 and read_json(out / "metrics.json") == again


def test_resume_refuses_what_it_cannot_verify(tmp_path, no_compute):
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(OutputFolderError, match="holds no checkpoint.pt, so there is nothing to resume"):
        train(CONFIG, out, resume=True, show_progress=False)
    (out / "checkpoint.pt").mkdir()
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint"):
        train(CONFIG, out, resume=True, show_progress=False)
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint"):
        train(CONFIG, out, resume=True, force=True, show_progress=False)


def test_resume_without_config_yaml(tmp_path):
    out = tmp_path / "run"
    train(CONFIG, out, show_progress=False, stop_after=3)
    (out / "config.yaml").unlink()
    changed = TrainConfig.from_dict({**TINY, "data_samples": 400})
    with pytest.raises(OutputFolderError, match="no config.yaml, so nothing shows that the checkpoint"):
        train(changed, out, resume=True, show_progress=False)
    train(CONFIG, out, resume=True, force=True, show_progress=False)  # told otherwise: resumes
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == TINY["trainer"]["iterations"]


def test_resume_with_force_and_no_checkpoint_starts_fresh(tmp_path):
    out = tmp_path / "run"
    assert train(CONFIG, out, resume=True, force=True, show_progress=False) == train(
        CONFIG, tmp_path / "fresh", show_progress=False)


def test_cli_resume_without_checkpoint(tmp_path):
    config = write_config(tmp_path, TINY)
    done = kcrl("train", str(config), "--out", str(tmp_path / "run"), "--resume", "--no-progress")
    assert done.returncode == 2 and "nothing to resume" in done.stderr and "--force" in done.stderr


def test_changed_config_on_resume_is_refused(tmp_path):
    out = tmp_path / "run"
    train(CONFIG, out, show_progress=False, stop_after=3)
    with pytest.raises(ConfigError, match="differs in data_samples"):
        train(TrainConfig.from_dict({**TINY, "data_samples": 400}), out, resume=True, show_progress=False)
