import gymnasium as gym
import numpy as np
import pytest
import torch

import kcrl  # noqa: F401  (registers the envs)
from kcrl.constraints import RuleConstraint
from kcrl.envs.tabular import TabularWorld, prefix_observations
from kcrl.errors import ConfigError, InvalidActionError


def test_exact_distributions_are_normalised_and_sampled_correctly():
    world = TabularWorld(vocab_size=3, length=3, world_seed=1)
    for log_probs in (world.base_log_probs_all(), world.data_log_probs()):
        assert torch.logsumexp(log_probs, 0).item() == pytest.approx(0.0, abs=1e-6)
    x, log_p = world.base.sample(5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(log_p, world.base.log_prob(x))
    data = world.sample_data(40_000, torch.Generator().manual_seed(0))
    freq = torch.bincount((data * torch.tensor([9, 3, 1])).sum(-1), minlength=27).float() / len(data)
    assert (freq - world.data_log_probs().exp()).abs().max() < 0.01


def test_episode_return_is_log_p_plus_alpha_f():
    env = gym.make("TabularSequence-v0", alpha=2.0)
    world = env.unwrapped.task
    env.reset(seed=0)
    total, actions = 0.0, [3, 1, 1, 0]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        total += reward
    x = torch.tensor([actions])
    expected = world.base.log_prob(x).item() + 2.0 * world.true_constraint(x).item()
    assert terminated and not truncated and total == pytest.approx(expected, abs=1e-5)
    assert info["constraint"] == pytest.approx(world.true_constraint(x).item(), abs=1e-6)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


def test_constraint_swaps_at_run_time():
    env = gym.make_vec("TabularSequence-v0", num_envs=2, vectorization_mode="vector_entry_point", kl_to_base=False)
    env.reset(seed=0)
    env.set_constraint(RuleConstraint(lambda x, c: (x == 2).float().sum(-1)))
    for _ in range(4):
        _, reward, *_ = env.step(np.array([2, 0]))
    assert reward.tolist() == [4.0, 0.0]


def test_next_step_autoreset():
    env = gym.make_vec("TabularSequence-v0", num_envs=2, vectorization_mode="vector_entry_point", length=2)
    env.reset(seed=0)
    env.step(np.array([0, 1]))
    _, _, terminated, _, _ = env.step(np.array([0, 1]))
    assert terminated.all()
    obs, reward, terminated, truncated, _ = env.step(np.array([3, 3]))  # resets; actions ignored
    assert obs["length"].tolist() == [0, 0] and reward.tolist() == [0.0, 0.0]
    assert not terminated.any() and not truncated.any()


@pytest.mark.parametrize(
    "action, message",
    [(7, r"token ids in \[0, 4\)"), (-1, r"token ids in \[0, 4\)"), (float("nan"), "NaN"), ([1, 2], "one token id"), (1.5, "integer")],
)
def test_invalid_actions(action, message):
    env = gym.make("TabularSequence-v0")
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=message):
        env.step(action)


def test_bad_configuration():
    with pytest.raises(ConfigError, match="vocab_size\\*\\*length <= 2\\*\\*20"):
        gym.make("TabularSequence-v0", vocab_size=50, length=10)
    with pytest.raises(ConfigError, match="alpha must be"):
        gym.make("TabularSequence-v0", alpha=0)
    with pytest.raises(ConfigError, match="autoreset_mode"):
        gym.make_vec("TabularSequence-v0", num_envs=2, vectorization_mode="vector_entry_point", autoreset_mode="sometimes")


def test_prefix_observations_cover_the_tree():
    world = TabularWorld(vocab_size=2, length=3)
    obs = prefix_observations(world)
    assert obs["tokens"].shape == (1 + 2 + 4, 3) and obs["length"].tolist() == [0, 1, 1, 2, 2, 2, 2]
