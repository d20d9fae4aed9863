"""Algorithm 1 on TabularSequence-v0: exact KLs, baselines, checkpoints that survive SIGKILL."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import yaml

from killrun import kill_and_resume
from kcrl.benchmarks.tabular_joint import TabularJointConfig, run_variant
from kcrl.checkpoint import CheckpointError, load_checkpoint
from kcrl.constraints import RuleConstraint, TokenPotentialConstraint
from kcrl.models.tabular import TabularAutoregressive
from kcrl.errors import ConfigError, NonFiniteError, UnknownNameError
from kcrl.benchmarks.train import TrainConfig, train
from kcrl.trainer import PRConfig, PRTrainer


@pytest.fixture(scope="module")
def config():
    return TabularJointConfig()


@pytest.fixture(scope="module")
def learned(config):
    return run_variant("learned", 0, config)


def test_joint_trainer_reaches_p_data(learned):
    assert learned["kl_start"] > 0.3
    assert learned["kl_final"] < 0.02, learned


def test_mstep_variant_drifts(config, learned):
    short = replace(config, trainer=replace(config.trainer, iterations=200))
    mstep = run_variant("mstep", 0, short)
    assert mstep["kl_final"] > 10 * learned["kl_final"]
    assert mstep["log_z"] > 50  # the unanchored constraint grows without bound


def test_learned_beats_incomplete_fixed_rule(config, learned):
    fixed = run_variant("fixed_incomplete", 0, replace(config, trainer=replace(config.trainer, iterations=200)))
    assert fixed["kl_final"] > learned["kl_final"] + 0.1


def _tiny_trainer(seed=0, iterations=40):
    torch.manual_seed(seed)
    gen = TabularAutoregressive(3, 3, generator=torch.Generator().manual_seed(1))
    data = TabularAutoregressive(3, 3, generator=torch.Generator().manual_seed(2)).sample(500, torch.Generator().manual_seed(3))[0]
    cfg = PRConfig(iterations=iterations, samples=256, data_batch=128, checkpoint_every=10, seed=seed)
    return PRTrainer(gen, TokenPotentialConstraint(3, 3), (data, None), cfg)


def test_resume_in_process_is_exact(tmp_path):
    full = _tiny_trainer()
    full_history = full.train(show_progress=False)
    part = _tiny_trainer()
    part.train(out=tmp_path, show_progress=False, stop_after=20)
    resumed = _tiny_trainer()
    history = resumed.train(out=tmp_path, resume=True, show_progress=False)
    assert history == full_history
    torch.testing.assert_close(resumed.generator.logits, full.generator.logits, rtol=0, atol=0)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    config = {"seed": 5, "variant": "learned", "data_samples": 2000,
              "trainer": {"iterations": 150, "samples": 1024, "checkpoint_every": 10}}
    reference, out, _ = kill_and_resume(tmp_path, config, kill_after=30)
    assert json.loads((out / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())
    assert json.loads((reference / "metrics.json").read_text())["iteration"] == 150


def test_same_seed_same_metrics(tmp_path):
    config = TrainConfig.from_dict({"seed": 2, "data_samples": 500, "trainer": {"iterations": 15, "samples": 256}})
    a = train(config, tmp_path / "a", show_progress=False)
    b = train(config, tmp_path / "b", show_progress=False)
    assert a == b


def test_non_finite_constraint_stops_before_writing(tmp_path):
    gen = TabularAutoregressive(3, 3)
    nan_rule = RuleConstraint(lambda x, c: torch.full((x.shape[0],), float("nan")))
    trainer = PRTrainer(gen, nan_rule, (torch.zeros(10, 3, dtype=torch.long), None), PRConfig(variant="fixed", samples=16))
    with pytest.raises(NonFiniteError):
        trainer.train(out=tmp_path, show_progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_config_and_checkpoint_errors(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'iterations'"):
        TrainConfig.from_dict({"trainer": {"iteratons": 3}})
    with pytest.raises(ConfigError, match="unknown config key 'sed'"):
        TrainConfig.from_dict({"sed": 3})
    with pytest.raises(UnknownNameError, match="unknown variant 'lerned'. Did you mean 'learned'"):
        PRConfig(variant="lerned")
    with pytest.raises(ConfigError, match="no trainable parameters"):
        PRTrainer(TabularAutoregressive(3, 3), RuleConstraint(lambda x, c: x.sum(-1).float()), (torch.zeros(2, 3, dtype=torch.long), None))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not read checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    trainer = _tiny_trainer(iterations=10)
    trainer.train(out=tmp_path / "run", show_progress=False)
    other = _tiny_trainer(iterations=20)
    with pytest.raises(CheckpointError, match="different config"):
        other.train(out=tmp_path / "run", resume=True, show_progress=False)


def test_tensorboard_scalars_are_namespaced(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = _tiny_trainer(iterations=5)
    trainer.train(out=tmp_path, show_progress=False, tensorboard=True)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"weights/ess_fraction", "weights/log_z", "constraint/gap", "generator/kl_to_base", "generator/nll_data"} <= tags
    assert [e.step for e in events.Scalars("constraint/gap")] == [1, 2, 3, 4, 5]


def test_cli_sample_and_evaluate(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"seed": 1, "data_samples": 500, "trainer": {"iterations": 10, "samples": 256}}))
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "kcrl.cli"]
    assert subprocess.run(cli + ["train", str(path), "--out", str(run), "--no-progress"], capture_output=True).returncode == 0
    evaluated = json.loads(subprocess.run(cli + ["evaluate", str(run)], capture_output=True, text=True, check=True).stdout)
    trained = json.loads((run / "metrics.json").read_text())
    assert evaluated["kl_data_to_generator"] == pytest.approx(trained["kl_data_to_generator"], abs=1e-6)
    assert evaluated["iteration"] == 10
    lines = subprocess.run(cli + ["sample", str(run), "-n", "4"], capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 4 and all(len(r["tokens"]) == 4 and r["log_p"] < 0 for r in rows)
