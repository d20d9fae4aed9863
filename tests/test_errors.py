"""The text of every user-facing error: what was wrong, what arrived, how to fix it."""

import subprocess
import sys
from dataclasses import fields

import gymnasium as gym
import numpy as np
import pytest
import torch

import kcrl  # noqa: F401
from kcrl.benchmarks import get_suite
from kcrl.checkpoint import CheckpointError, load_checkpoint
from kcrl.constraints import RuleConstraint
from kcrl.envs.generation import BatchedGenerationEnv
from kcrl.envs.tabular import TabularWorld
from kcrl.errors import (
    ConfigError,
    InvalidActionError,
    KcrlError,
    MissingDependencyError,
    NonFiniteError,
    UnknownNameError,
    require_optional,
)
from kcrl.benchmarks.train import TrainConfig
from kcrl.trainer import PRConfig


def message(exc_type, fn, *args, **kwargs):
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, KcrlError) or exc_type is gym.error.NameNotFound
    return str(info.value)


def test_alpha_must_be_positive():
    assert message(ConfigError, TabularWorld, alpha=-2.0) == (
        "alpha must be a positive finite number (it scales the constraint in q ∝ p exp(alpha f)); "
        "got -2.0. Use e.g. alpha=1.0."
    )


def test_invalid_actions():
    env = gym.make_vec("TabularSequence-v0", num_envs=2, vectorization_mode="vector_entry_point")
    env.reset(seed=0)
    assert message(InvalidActionError, env.step, np.array([0, 9])) == "actions must be token ids in [0, 4); got [9] at positions [1]."
    assert message(InvalidActionError, env.step, np.array([0])) == "expected actions of shape (2,) (leading dimension: one per sub-env); got shape (1,)."
    assert message(InvalidActionError, env.step, np.array([0.0, np.nan])) == "actions contain NaN or inf: array([ 0., nan]); expected token ids."
    assert message(InvalidActionError, env.step, np.array([0.5, 1.0])) == "actions must be integer token ids; got non-integral floats array([0.5, 1. ])."
    assert message(InvalidActionError, env.step, np.array(["a", "b"])) == "actions must be integers; got dtype <U1."
    single = gym.make("TabularSequence-v0")
    single.reset(seed=0)
    assert message(InvalidActionError, single.step, [1, 2]) == "expected one token id (a scalar); got shape (2,)."


def test_bad_env_configuration():
    world = TabularWorld()
    assert message(ConfigError, BatchedGenerationEnv, world, num_envs=0) == "num_envs must be a positive integer; got 0."
    assert message(ConfigError, BatchedGenerationEnv, world, autoreset_mode="often") == (
        "autoreset_mode must be one of ['NextStep', 'SameStep', 'Disabled']; got 'often'."
    )
    assert message(ConfigError, world.set_constraint, lambda x, c: x) == (
        "constraint must be a kcrl.constraints.Constraint; got function. Wrap a function with "
        "RuleConstraint(fn) or a network with NeuralConstraint(net)."
    )
    assert "vocab_size**length <= 2**20" in message(ConfigError, TabularWorld, vocab_size=100, length=5)


def test_non_finite_constraint_output():
    env = gym.make_vec("TabularSequence-v0", num_envs=1, vectorization_mode="vector_entry_point", length=1)
    env.reset(seed=0)
    env.set_constraint(RuleConstraint(lambda x, c: torch.full((x.shape[0],), float("inf"))))
    assert message(NonFiniteError, env.step, np.array([0])) == (
        "the constraint RuleConstraint returned a non-finite value for a finished sample; rewards must be finite."
    )


def test_unknown_names_suggest_close_ones():
    text = message(UnknownNameError, get_suite, "tabular-exakt")
    assert text.startswith("unknown suite 'tabular-exakt'. Did you mean 'tabular-exact'? Known: ")
    assert "tabular-exact, tabular-joint" in text
    with pytest.raises(gym.error.NameNotFound, match="Did you mean: `TabularSequence`"):
        gym.make("TabularSequnce-v0")
    assert message(ConfigError, TrainConfig.from_dict, {"trainer": {"iteratons": 5}}) == (
        "unknown config key 'trainer.iteratons'. Did you mean 'iterations'? Known keys of trainer (PRConfig): "
        + ", ".join(sorted(f.name for f in fields(PRConfig))) + "."
    )


def test_cli_reports_errors_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "kcrl.cli", "bench", "tabluar-exact"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("kcrl: error: unknown suite 'tabluar-exact'. Did you mean 'tabular-exact'?")
    assert "Traceback" not in proc.stderr


def test_checkpoint_errors(tmp_path):
    assert message(CheckpointError, load_checkpoint, tmp_path / "missing.pt") == (
        f"no checkpoint at {str(tmp_path / 'missing.pt')!r}; check the path or start without --resume."
    )


def test_missing_optional_dependency_names_the_extra():
    assert message(MissingDependencyError, require_optional, "kcrl_not_a_module", "ray") == (
        "'kcrl_not_a_module' is not installed; it is an optional dependency of kcrl. Install it with: pip install 'kcrl[ray]'"
    )


def test_corpus_errors(tmp_path):
    from kcrl.data.corpus import CorpusError, load_corpus

    missing = tmp_path / "nope.txt"
    assert message(CorpusError, load_corpus, missing, cache=False) == (
        f"corpus file {str(missing)!r} does not exist (expected one sentence per line)."
    )
    assert message(CorpusError, load_corpus, ["a fine sentence .", 3], cache=False) == (
        "a corpus list must hold sentence strings; got elements of type ['int']."
    )
    assert message(CorpusError, load_corpus, 12, cache=False) == (
        "corpus must be None/'imdb', a path to a text file, or a list of strings; got int."
    )
    too_long = ["word " * 60 + "."] * 3  # every sentence is longer than the maximum length
    text = message(CorpusError, load_corpus, too_long, cache=False)
    assert text.startswith("no usable sentence in ") and "widen CorpusConfig(min_tokens=..., max_tokens=...)" in text
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert "0 non-empty" in message(CorpusError, load_corpus, empty, cache=False)


def test_template_without_mask():
    from kcrl.data.templates import TemplateError, check_templates, parse_template

    assert message(TemplateError, parse_template, "no mask here") == (
        "template 'no mask here' has no <mask>: there is nothing to fill in. Mark each segment to generate "
        "with <mask>, e.g. 'the <mask> was great .'."
    )
    text = message(TemplateError, check_templates, torch.tensor([[5, 6, 7]]))
    assert text.startswith("1 template(s) have no <mask>") and "rows [0]" in text


def test_vocabulary_mismatch():
    from kcrl.data.vocab import Vocabulary, VocabularyMismatchError

    a = Vocabulary.build([["the", "film", "."]], size=8)
    b = Vocabulary.build([["a", "film", "."]], size=8)
    text = message(VocabularyMismatchError, a.check_same, b)
    assert text.startswith("vocabulary mismatch with the checkpoint: sizes 8 vs 8, first difference at id ")
    assert text.endswith("or train a new base generator.")


def test_actions_beyond_int64_are_reported_as_given():
    env = gym.make("TabularSequence-v0")
    env.reset(seed=0)
    assert message(InvalidActionError, env.step, 2**63) == "actions must be token ids in [0, 4); got [9223372036854775808]."


def test_config_errors_name_the_key_and_the_fix(tmp_path, monkeypatch, capsys):
    import kcrl.benchmarks as benchmarks
    from kcrl.agents.maxent_irl import MaxEntIRLArgs
    from kcrl.benchmarks import suite_config
    from kcrl.benchmarks.throughput import ThroughputConfig
    from kcrl.cli import main
    from kcrl.config import from_mapping

    assert message(ConfigError, TrainConfig.from_dict, {"trainer": {"iterations": "5"}}) == (
        "config key 'trainer.iterations' must be int; got '5' (str)."
    )
    assert message(ConfigError, TrainConfig.from_dict, {"sed": 3}) == (
        "unknown config key 'sed'. Did you mean 'seed'? Known keys of TrainConfig: "
        "agent, data_samples, generator_step, oracle, seed, task, trainer, variant, world."
    )
    assert message(ConfigError, from_mapping, ThroughputConfig, {"agent_tasks": [[4, 4, 4]]}) == (
        "config key 'agent_tasks[0]' must be a list of 2 items (int, int); got 3 item(s): [4, 4, 4]."
    )
    assert message(ConfigError, from_mapping, ThroughputConfig, {"sb3": [{"n_envs": 8}]}) == (
        "config key 'sb3[0].name' is required (SB3Setting has no default for it)."
    )
    path = tmp_path / "over.yaml"
    path.write_text("irl: {stepz: 3}\n")
    assert message(ConfigError, suite_config, "tabular-exact", path=path) == (
        f"config file {str(path)!r}: unknown config key 'irl.stepz'. Did you mean 'steps'? Known keys of irl "
        "(MaxEntIRLArgs): " + ", ".join(sorted(f.name for f in fields(MaxEntIRLArgs))) + "."
    )
    assert message(ConfigError, suite_config, "tabular-exact", path=tmp_path / "nope.yaml") == (
        f"config file {str(tmp_path / 'nope.yaml')!r} does not exist."
    )
    monkeypatch.setitem(benchmarks.SUITES, "untyped", ("a suite without a config", "kcrl.benchmarks.report:git_commit"))
    assert message(ConfigError, suite_config, "untyped") == (
        "suite 'untyped' has no typed config: its run function needs an argument `config: SomeConfig | None` "
        "annotated with a dataclass, so that --config and --print-config know its keys."
    )
    monkeypatch.setattr(benchmarks, "SUITE_DIR", tmp_path)
    (tmp_path / "tabular-exact.yaml").write_text("full: {}\nquik: {}\n")
    assert message(ConfigError, suite_config, "tabular-exact") == (
        f"suite file {str(tmp_path / 'tabular-exact.yaml')!r} must hold exactly the mappings full and quick "
        "(overrides of TabularExactConfig); got ['full', 'quik']. Did you mean 'quick'?"
    )
    (tmp_path / "tabular-exact.yaml").write_text("full: {num_envs: many}\nquick: {}\n")
    assert message(ConfigError, suite_config, "tabular-exact") == (
        f"suite file {str(tmp_path / 'tabular-exact.yaml')!r}, full: config key 'num_envs' must be int; got 'many' (str)."
    )
    assert main(["bench", "--print-config"]) == 2
    assert capsys.readouterr().err == (
        "kcrl: error: --print-config and --config need a SUITE: kcrl bench SUITE --print-config (see kcrl bench --list).\n"
    )


def test_agent_step_must_agree_with_the_trainer():
    from kcrl.agents.generator_steps import AgentStep, PolicyGenerator
    from kcrl.agents.soft_pg import SoftPGAgent, SoftPGArgs
    from kcrl.constraints import TokenPotentialConstraint
    from kcrl.trainer import PRTrainer

    assert message(ConfigError, AgentStep, None, updates=0) == \
        "updates must be a positive integer (PG updates per Algorithm 1 iteration); got 0."
    env = gym.make_vec("TabularSequence-v0", num_envs=8, vectorization_mode="vector_entry_point", autoreset_mode="Disabled", alpha=2.0)
    data = env.task.sample_data(16, torch.Generator().manual_seed(0))

    def first_step(agent_args, alpha):
        agent = SoftPGAgent(env, agent_args)
        trainer = PRTrainer(PolicyGenerator.from_agent(agent), TokenPotentialConstraint(4, 4), (data, None),
                            PRConfig(iterations=10, samples=8, data_batch=8, alpha=alpha, checkpoint_every=0),
                            generator_step=AgentStep(agent, updates=3))
        trainer.step()

    assert message(ConfigError, first_step, SoftPGArgs(iterations=30), 1.0) == (
        "the agent's env rewards alpha * f with alpha=2.0, but the trainer's importance weights use alpha=1.0; "
        "q = p exp(alpha f) / Z must be the same in both. Build the env with alpha=1.0 or set PRConfig(alpha=2.0).")
    assert message(ConfigError, first_step, SoftPGArgs(iterations=20), 2.0) == (
        "the agent anneals its learning rate to 0 over SoftPGArgs.iterations=20 updates, but 10 trainer iterations "
        "x 3 updates need 30; set SoftPGArgs(iterations=30) or lr_decay=False.")
    first_step(SoftPGArgs(iterations=20, lr_decay=False), 2.0)  # no schedule: any number of updates


def test_train_config_sections_follow_the_task():
    assert message(ConfigError, TrainConfig.from_dict, {"task": "oracle", "world": {"vocab_size": 3}}) == (
        "config key 'world' applies only with task: tabular; this config has task: oracle. Drop it, or set task: tabular."
    )
    assert message(ConfigError, TrainConfig.from_dict, {"oracle": {"length": 5}}) == (
        "config key 'oracle' applies only with task: oracle; this config has task: tabular. Drop it, or set task: oracle."
    )
    assert message(ConfigError, TrainConfig.from_dict, {"agent": {"envs": 8}}) == (
        "config key 'agent' applies only with generator_step: agent; this config has generator_step: trainer. "
        "Drop it, or set generator_step: agent."
    )
    assert message(UnknownNameError, TrainConfig.from_dict, {"generator_step": "agnet"}) == (
        "unknown generator_step 'agnet'. Did you mean 'agent'? Known: agent, trainer."
    )
    assert message(UnknownNameError, TrainConfig.from_dict, {"task": "oracle", "variant": "base"}) == (
        "unknown oracle variant 'base'. Known: binary_d, constant, learned, mle."
    )
    assert message(ConfigError, TrainConfig.from_dict, {"task": "oracle", "generator_step": "agent"}) == (
        "generator_step: agent is available for task: tabular only (kcrl's token policy on TabularSequence-v0); "
        "got task: oracle. Use generator_step: trainer."
    )
    assert message(ConfigError, TrainConfig.from_dict, {"generator_step": "agent", "variant": "base"}) == (
        "generator_step: agent needs a variant with a PR term; variant 'base' trains by MLE only and never calls "
        "the agent. Choose e.g. variant: learned, or generator_step: trainer."
    )
    assert message(ConfigError, TrainConfig.from_dict, {"task": "oracle", "oracle": {"scorer_num_filters": [4]}}) == (
        "give one channel count per filter width: 4 widths but 1 counts."
    )


def test_train_resume_and_ddp_errors(tmp_path):
    from kcrl.benchmarks.train import train

    config = TrainConfig.from_dict({"data_samples": 100, "trainer": {"iterations": 2, "samples": 16}})
    train(config, tmp_path / "run", show_progress=False, stop_after=1)
    other = TrainConfig.from_dict({"data_samples": 200, "trainer": {"iterations": 3, "samples": 16}})
    assert message(ConfigError, train, other, tmp_path / "run", resume=True, show_progress=False) == (
        f"the run in {str(tmp_path / 'run')!r} was started with a different config (differs in data_samples, "
        "trainer.iterations); resume it with its own config.yaml, or start a new run in another folder."
    )
    agent = TrainConfig.from_dict({"generator_step": "agent"})
    assert message(ConfigError, train, agent, tmp_path / "ddp", trainer_factory=lambda *a, **k: None) == (
        "generator_step: agent runs in a single process (the agent is not data-parallel); drop --ddp, or use "
        "generator_step: trainer."
    )


def _agent_trainer(updates=1, with_step=True, num_envs=8):
    from kcrl.agents.generator_steps import AgentStep, PolicyGenerator
    from kcrl.agents.soft_pg import SoftPGAgent, SoftPGArgs
    from kcrl.constraints import TokenPotentialConstraint
    from kcrl.trainer import PRTrainer

    env = gym.make_vec("TabularSequence-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", autoreset_mode="Disabled")
    agent = SoftPGAgent(env, SoftPGArgs(iterations=8 * updates))
    data = env.task.sample_data(16, torch.Generator().manual_seed(0))
    return PRTrainer(PolicyGenerator.from_agent(agent), TokenPotentialConstraint(4, 4), (data, None),
                     PRConfig(iterations=4, samples=8, data_batch=8, checkpoint_every=1),
                     generator_step=AgentStep(agent, updates=updates) if with_step else None)


def test_generator_step_checkpoint_errors(tmp_path):
    from stable_baselines3 import PPO

    from kcrl.agents.sb3 import SB3Step, policy_generator
    from kcrl.agents.sb3 import TokenFeatureExtractor, make_sb3_vec_env
    from kcrl.constraints import TokenPotentialConstraint
    from kcrl.trainer import PRTrainer

    venv = make_sb3_vec_env("TabularSequence-v0", num_envs=8, seed=0)
    model = PPO("MultiInputPolicy", venv, n_steps=8, batch_size=64, n_epochs=1, seed=0,
                policy_kwargs=dict(features_extractor_class=TokenFeatureExtractor))
    data = venv.env.task.sample_data(16, torch.Generator().manual_seed(0))

    def sb3_trainer(**overrides):
        return PRTrainer(policy_generator(model), TokenPotentialConstraint(4, 4), (data, None),
                         PRConfig(iterations=2, samples=8, data_batch=8, **overrides), generator_step=SB3Step(model, 64))

    assert message(ConfigError, sb3_trainer().train, out=tmp_path / "sb3", show_progress=False) == (
        "the generator step SB3Step has no state_dict()/load_state_dict(), so a checkpoint cannot hold its state and "
        "a resumed run would not continue where it stopped. Run it to the end without resumable checkpoints "
        "(checkpoint_every=0, no stop_after, no resume; the final checkpoint then holds the weights only), or give "
        "the step both methods (see kcrl.trainer.GeneratorStep)."
    )
    assert not (tmp_path / "sb3").exists()  # refused before training
    sb3_trainer(checkpoint_every=0).train(out=tmp_path / "sb3", show_progress=False)  # to the end: allowed
    state = load_checkpoint(tmp_path / "sb3" / "checkpoint.pt")
    assert state["iteration"] == 2 and state["generator_step"] is None
    assert message(CheckpointError, sb3_trainer(checkpoint_every=0).load_state_dict, state) == (
        "the generator step SB3Step has no load_state_dict(), so this trainer cannot be restored exactly from a "
        "checkpoint (see kcrl.trainer.GeneratorStep)."
    )

    _agent_trainer().train(out=tmp_path / "agent", show_progress=False, stop_after=1)
    state = load_checkpoint(tmp_path / "agent" / "checkpoint.pt")
    assert message(CheckpointError, _agent_trainer(with_step=False).load_state_dict, state) == (
        "the checkpoint was written with a generator step ('kcrl.AgentStep/1'), but this trainer's generator step "
        "is none; resume with the same parts, or start a new run in another folder."
    )
    assert message(CheckpointError, _agent_trainer().load_state_dict, {**state, "generator_step": None}) == (
        "the checkpoint was written with no generator step, but this trainer's generator step is AgentStep; resume "
        "with the same parts, or start a new run in another folder."
    )
    assert message(CheckpointError, _agent_trainer(updates=2).load_state_dict, state) == (
        "the checkpoint's AgentStep made 1 PG updates per iteration; this one makes 2. Resume with updates=1, or "
        "start a new run in another folder."
    )
    step_state = state["generator_step"]
    assert message(CheckpointError, _agent_trainer().generator_step.load_state_dict, {**step_state, "format": "x"}) == (
        "the checkpoint's generator step is not an AgentStep (format 'x')."
    )
    agent = _agent_trainer().generator_step.agent
    assert message(CheckpointError, agent.load_state_dict, {"format": "kcrl.PRTrainer/1"}) == (
        "not a SoftPGAgent state (format 'kcrl.PRTrainer/1'; expected 'kcrl.SoftPGAgent/1')."
    )
    other = _agent_trainer(num_envs=4).generator_step.agent
    assert message(ConfigError, other.env.set_seed_state, step_state["agent"]["env"]) == (
        "the saved reset state has seeds of shape (8,) and episode counters of shape (8,); this env has 4 sub-envs. "
        "Restore it into an env with the same num_envs."
    )
