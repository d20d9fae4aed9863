"""SB3 and Tianshou policies that start from a kcrl generator: their first action distribution is p_theta's.

Each check compares the policy's next-token distribution with the generator's own on observations
reached by stepping the env, and has a control: a default-initialised policy is far from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import kcrl  # noqa: F401  (registers the envs)
from kcrl.agents.sb3 import GeneratorPolicy, TokenFeatureExtractor, make_sb3_vec_env
from kcrl.models.tabular import TabularAutoregressive

TEMPLATE_BASE = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "template-base" / "generator.pt"


def visited_sb3_obs(venv, steps: int, seed: int = 0) -> list[dict]:
    """Observations after 0..steps random actions (every prefix length the env shows)."""
    rng = np.random.default_rng(seed)
    obs, seen = venv.reset(), []
    for _ in range(steps):
        seen.append({k: v.copy() for k, v in obs.items()})
        obs = venv.step(rng.integers(0, venv.action_space.n, size=venv.num_envs))[0]
    return seen


def sb3_probs(model, obs) -> torch.Tensor:
    with torch.no_grad():
        return model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0]).distribution.probs


def default_sb3(venv, **extractor) -> PPO:
    return PPO("MultiInputPolicy", venv, n_steps=8, batch_size=16, seed=0,
               policy_kwargs=dict(features_extractor_class=TokenFeatureExtractor, features_extractor_kwargs=extractor))


def test_sb3_tabular_policy_starts_at_the_generator():
    venv = make_sb3_vec_env("TabularSequence-v0", num_envs=8, seed=0)
    generator = TabularAutoregressive(4, 4, init_std=2.0, generator=torch.Generator().manual_seed(3))
    model = PPO(GeneratorPolicy, venv, n_steps=8, batch_size=16, seed=0, policy_kwargs=dict(generator=generator))
    control = default_sb3(venv)
    for obs in visited_sb3_obs(venv, 4):
        tokens, length = torch.as_tensor(obs["tokens"]), torch.as_tensor(obs["length"]).reshape(-1)
        p_theta = generator.step_log_probs(tokens, length).exp()
        assert torch.allclose(sb3_probs(model, obs), p_theta, atol=1e-6)
        assert (sb3_probs(control, obs) - p_theta).abs().max() > 0.1  # control: SB3's own init is near uniform


def test_sb3_generator_policy_trains_its_copy_and_clones_exactly():
    from kcrl.agents.sb3.steps import _clone_sb3_policy, sb3_logits_fn

    venv = make_sb3_vec_env("TabularSequence-v0", num_envs=8, seed=0)
    generator = TabularAutoregressive(4, 4, generator=torch.Generator().manual_seed(3))
    before = generator.logits.detach().clone()
    model = PPO(GeneratorPolicy, venv, n_steps=8, batch_size=32, learning_rate=1e-2, seed=0,
                policy_kwargs=dict(generator=generator)).learn(256)
    assert torch.equal(generator.logits, before)  # the caller's generator is not touched
    trained = model.policy.pi_features_extractor.next_token.generator.logits
    assert not torch.allclose(trained, before)  # PPO fine-tunes the policy's copy
    obs = {k: torch.as_tensor(v) for k, v in visited_sb3_obs(venv, 3)[-1].items()}
    clone = _clone_sb3_policy(model.policy)  # what SB3Step freezes as the KL reference
    assert torch.allclose(sb3_logits_fn(clone)(obs), sb3_logits_fn(model.policy)(obs))


def test_sb3_frozen_generator_keeps_p_theta_and_learns_the_residual():
    venv = make_sb3_vec_env("TabularSequence-v0", num_envs=8, seed=0)
    generator = TabularAutoregressive(4, 4, generator=torch.Generator().manual_seed(3))
    model = PPO(GeneratorPolicy, venv, n_steps=8, batch_size=32, learning_rate=1e-2, seed=0,
                policy_kwargs=dict(generator=generator, train_generator=False)).learn(256)
    assert torch.equal(model.policy.pi_features_extractor.next_token.generator.logits, generator.logits)
    assert model.policy.action_net.correction.weight.abs().sum() > 0


@pytest.fixture(scope="module")
def template_venv():
    if not TEMPLATE_BASE.is_file():
        pytest.fail(f"the committed template generator is missing: {TEMPLATE_BASE}")
    return make_sb3_vec_env("TemplateSentence-v0", num_envs=4, seed=0, base=str(TEMPLATE_BASE))


def test_sb3_template_policy_starts_at_the_trained_generator(template_venv):
    task = template_venv.get_attr("task")[0]
    model = PPO(GeneratorPolicy, template_venv, n_steps=4, batch_size=16, seed=0,
                policy_kwargs=dict(generator=task.base, pooling="mean"))
    control = default_sb3(template_venv, pooling="mean")
    for obs in visited_sb3_obs(template_venv, 3):
        t = {k: torch.as_tensor(v).long() for k, v in obs.items()}
        p_theta = task.base_log_probs(t["tokens"], t["length"].reshape(-1), t["context"]).exp()  # the env's p_theta
        assert torch.allclose(sb3_probs(model, obs), p_theta, atol=1e-5)
        entropy = -(p_theta * p_theta.clamp_min(1e-30).log()).sum(-1)
        assert (entropy < np.log(task.vocab_size) - 1.0).all()  # the trained generator is far from uniform ...
        assert (sb3_probs(control, obs) - p_theta).abs().max() > 0.1  # ... and a default policy is not it


def test_sb3_build_ppo_with_generator_policy_takes_the_envs_base(template_venv):
    from kcrl.agents.hyperparams import load_hyperparams
    from kcrl.agents.sb3 import build_ppo

    hp = load_hyperparams("sb3", "TemplateSentence-v0", overrides={"n_envs": 4, "n_steps": 4, "batch_size": 16})
    model = build_ppo(template_venv, hp, seed=0)
    obs = visited_sb3_obs(template_venv, 2)[-1]
    t = {k: torch.as_tensor(v).long() for k, v in obs.items()}
    task = template_venv.get_attr("task")[0]
    p_theta = task.base_log_probs(t["tokens"], t["length"].reshape(-1), t["context"]).exp()
    assert torch.allclose(sb3_probs(model, obs), p_theta, atol=1e-5)


def test_lstm_generator_is_accepted():
    venv = make_sb3_vec_env("OracleSequence-v0", num_envs=2, seed=0)
    task = venv.get_attr("task")[0]
    model = PPO(GeneratorPolicy, venv, n_steps=4, batch_size=8, seed=0, policy_kwargs=dict(generator=task.base, pooling="mean"))
    obs = visited_sb3_obs(venv, 3)[-1]
    t = {k: torch.as_tensor(v).long() for k, v in obs.items()}
    p_theta = task.base.prefix_log_probs(t["tokens"], t["length"].reshape(-1)).exp()
    assert torch.allclose(sb3_probs(model, obs), p_theta, atol=1e-5)


def test_a_network_without_next_token_log_probs_is_refused():
    from kcrl.errors import ConfigError

    venv = make_sb3_vec_env("TabularSequence-v0", num_envs=2, seed=0)
    with pytest.raises(ConfigError, match="step_log_probs"):
        PPO(GeneratorPolicy, venv, policy_kwargs=dict(generator=torch.nn.Linear(2, 2)))
    with pytest.raises(ConfigError, match="needs the generator"):
        PPO(GeneratorPolicy, venv)


# ------------------------------------------------------------------------- Tianshou
def test_tianshou_actor_starts_at_the_generator():
    pytest.importorskip("tianshou")
    from tianshou.utils.net.discrete import DiscreteActor

    from kcrl.agents.tianshou import GeneratorActor, TokenNet, make_tianshou_vec_env

    venv = make_tianshou_vec_env("TabularSequence-v0", num_envs=8, seed=0)
    generator = TabularAutoregressive(4, 4, init_std=2.0, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    actor = GeneratorActor(generator, TokenNet(venv.dict_observation_space, (32,)))
    control = DiscreteActor(preprocess_net=TokenNet(venv.dict_observation_space, (32,)), action_shape=4, softmax_output=False)
    obs, _ = venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(4):
        tokens, length = torch.as_tensor(obs["tokens"]), torch.as_tensor(obs["length"])
        p_theta = generator.step_log_probs(tokens, length).exp()
        assert torch.allclose(torch.softmax(actor(obs)[0], -1), p_theta, atol=1e-6)
        assert (torch.softmax(control(obs)[0], -1) - p_theta).abs().max() > 0.1
        obs = venv.step(rng.integers(0, 4, size=8))[0]


def test_tianshou_template_actor_starts_at_the_trained_generator():
    pytest.importorskip("tianshou")
    from kcrl.agents.tianshou import build_tianshou_ppo, make_tianshou_vec_env

    venv = make_tianshou_vec_env("TemplateSentence-v0", num_envs=4, seed=0, base=str(TEMPLATE_BASE))
    task = venv.env.task
    with_base = build_tianshou_ppo(venv, hidden_sizes=(32,), init_from_base=True).policy.actor
    default = build_tianshou_ppo(venv, hidden_sizes=(32,)).policy.actor  # control
    obs, _ = venv.reset()
    for action in (7, 9):
        t = {k: torch.as_tensor(v).long() for k, v in obs.items()}
        p_theta = task.base_log_probs(t["tokens"], t["length"], t["context"]).exp()
        assert torch.allclose(torch.softmax(with_base(obs)[0], -1), p_theta, atol=1e-5)
        assert (torch.softmax(default(obs)[0], -1) - p_theta).abs().max() > 0.1
        obs = venv.step(np.full(4, action))[0]
