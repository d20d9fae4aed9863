import gymnasium as gym
import pytest
import torch

import kcrl  # noqa: F401
from kcrl.agents.soft_pg import SoftPGAgent, SoftPGArgs
from kcrl.benchmarks.tabular_exact import policy_log_probs
from kcrl.errors import ConfigError
from kcrl.posterior import kl_divergence


def _env(n=64, **kwargs):
    return gym.make_vec("TabularSequence-v0", num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode="Disabled", **kwargs)


def test_rollout_keeps_sampling_log_probs_and_matches_env_rewards():
    env = _env()
    agent = SoftPGAgent(env)
    rollout = agent.rollout()
    assert rollout.log_probs.requires_grad and rollout.observations == []
    # the kept log-probs equal a fresh scoring of the same actions
    x = rollout.actions
    world = env.task
    base = world.base.log_prob(x)
    total_reward = rollout.rewards.sum(1)
    torch.testing.assert_close(total_reward, base + world.true_constraint(x), atol=1e-5, rtol=0)
    assert torch.isfinite(rollout.constraint).all()


def test_ppo_epochs_rescore_and_clip():
    env = _env()
    agent = SoftPGAgent(env, SoftPGArgs(update_epochs=3, clip_coef=0.1, lr=0.05))
    before = [p.detach().clone() for p in agent.policy.parameters()]
    rollout = agent.rollout()
    assert len(rollout.observations) == 4
    stats = agent.update(rollout)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert any((p - b).abs().max() > 0 for p, b in zip(agent.policy.parameters(), before))


def test_bad_epochs():
    with pytest.raises(ConfigError, match="update_epochs must be >= 1; got 0."):
        SoftPGAgent(_env(4), SoftPGArgs(update_epochs=0))


@pytest.mark.slow
def test_ppo_style_agent_reaches_soft_optimal_policy():
    env = _env(1024, world_seed=0)
    agent = SoftPGAgent(env, SoftPGArgs(iterations=250, update_epochs=4, clip_coef=0.2, lr=5e-3))
    agent.train(show_progress=False)
    assert kl_divergence(policy_log_probs(agent, env.task), env.task.posterior().log_q).item() < 0.02
