"""`kcrl train` on every task and generator step: a stopped or SIGKILLed run resumes exactly.

Exact on CPU: the resumed run's metrics, history, parameters, optimiser moments and random
streams (the agent's too) equal those of an uninterrupted run with the same seed, bit for bit.
"""

import json

import pytest
import torch
import yaml

from killrun import kill_and_resume
from kcrl.checkpoint import load_checkpoint
from kcrl.benchmarks.train import TrainConfig, evaluate, sample, train

# kcrl's soft-PG agent as the generator step on a 3 x 3 tabular world
AGENT = {"seed": 4, "generator_step": "agent", "data_samples": 500, "world": {"vocab_size": 3, "length": 3},
         "agent": {"envs": 64, "distill_steps": 20},
         "trainer": {"iterations": 12, "samples": 256, "data_batch": 128, "checkpoint_every": 3}}
# a tiny SeqGAN oracle: LSTM generator pre-trained one epoch, CNN constraint learned by Eq. 8
ORACLE = {"task": "oracle", "seed": 3, "data_samples": 256, "variant": "learned",
          "oracle": {"vocab_size": 20, "length": 6, "embed_dim": 8, "hidden_dim": 8, "test_samples": 128,
                     "eval_samples": 128, "pretrain": {"epochs": 1}, "scorer_embed_dim": 8,
                     "scorer_filter_sizes": [2, 3], "scorer_num_filters": [8, 8]},
          "trainer": {"iterations": 12, "samples": 64, "data_batch": 64, "constraint_steps": 1, "checkpoint_every": 3}}


def assert_identical(a, b, where="checkpoint"):
    """Nested checkpoint contents equal exactly (tensors bit for bit, same dtype and shape)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.mark.parametrize("values", [AGENT, ORACLE], ids=["tabular-agent", "oracle"])
def test_stop_then_resume_matches_uninterrupted_run(tmp_path, values):
    config = TrainConfig.from_dict(values)
    full = train(config, tmp_path / "full", show_progress=False)
    train(config, tmp_path / "part", show_progress=False, stop_after=6)
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["iteration"] == 6
    resumed = train(config, tmp_path / "part", resume=True, show_progress=False)
    assert resumed == full and full["iteration"] == 12
    final = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    assert_identical(load_checkpoint(tmp_path / "part" / "checkpoint.pt"), final)
    if config.generator_step == "agent":
        assert final["generator_step"]["agent"]["iteration"] == 12  # the agent's own counter, saved and restored
    assert evaluate(tmp_path / "part") == evaluate(tmp_path / "full")
    assert sample(tmp_path / "part", 3) == sample(tmp_path / "full", 3)


def test_resume_without_the_agent_state_would_diverge(tmp_path, monkeypatch):
    """The agent's state matters: skipping its restore changes the run (so the test above can fail)."""
    from kcrl.agents.generator_steps import AgentStep

    config = TrainConfig.from_dict(AGENT)
    full = train(config, tmp_path / "full", show_progress=False)
    train(config, tmp_path / "part", show_progress=False, stop_after=6)
    monkeypatch.setattr(AgentStep, "load_state_dict", lambda self, state: None)
    resumed = train(config, tmp_path / "part", resume=True, show_progress=False)
    assert resumed["kl_data_to_generator"] != full["kl_data_to_generator"]


def test_oracle_config_round_trips_and_keeps_only_its_sections(tmp_path):
    config = TrainConfig.from_dict(ORACLE)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert "world" not in config.to_dict() and "agent" not in config.to_dict()
    assert config.trainer.lr_decay is False and config.trainer.generator_lr == 1e-3  # the oracle task's defaults
    assert TrainConfig.from_dict(AGENT).trainer.generator_lr == 3e-3  # the token policy's default
    assert TrainConfig.from_dict({}).trainer.generator_lr == 0.05


def test_sigkill_then_resume_on_the_oracle_task(tmp_path):
    values = {**ORACLE, "trainer": {**ORACLE["trainer"], "iterations": 80, "checkpoint_every": 5}}
    reference, out, _ = kill_and_resume(tmp_path, values, kill_after=15)
    assert json.loads((out / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())
    assert json.loads((reference / "metrics.json").read_text())["iteration"] == 80
    assert_identical(load_checkpoint(out / "checkpoint.pt"), load_checkpoint(reference / "checkpoint.pt"))


def test_module_docstring_yaml_examples_are_valid_configs():
    """Every YAML block of kcrl.benchmarks.train's docstring builds a TrainConfig (the documented keys exist)."""
    import re

    import kcrl.benchmarks.train

    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", kcrl.benchmarks.train.__doc__)
    assert len(blocks) == 3
    for block in blocks:
        values = yaml.safe_load("\n".join(line[4:] for line in block.splitlines()))
        config = TrainConfig.from_dict(values)
        assert TrainConfig.from_dict(config.to_dict()) == config
