"""The soft-RL view: its optimal policy is q, and its return is log Z - KL(pi || q)."""

import pytest
import torch

from kcrl.envs.tabular import TabularWorld
from kcrl.errors import ShapeError
from kcrl.posterior import ExactPosterior
from kcrl.softrl import (
    prefix_index,
    sequence_log_probs_from_table,
    soft_optimal_policy,
    soft_returns,
    step_rewards,
)


@pytest.fixture(scope="module")
def world():
    return TabularWorld(vocab_size=3, length=4, world_seed=5)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 4.0])
def test_soft_optimal_policy_is_q(world, alpha):
    scores = world.true_constraint(world.sequences())
    q_table, log_z = soft_optimal_policy(world.base.log_prob_table(), scores, alpha, world.max_length)
    exact = ExactPosterior(world.base_log_probs_all(), scores, alpha)
    torch.testing.assert_close(sequence_log_probs_from_table(q_table, world.sequences()), exact.log_q, atol=1e-5, rtol=0)
    assert log_z.item() == pytest.approx(exact.log_z.item(), abs=1e-5)


def test_soft_return_of_q_is_log_z_for_every_sample(world):
    """Following q, alpha f(x) + log p(x) - log q(x) = log Z exactly, sample by sample."""
    alpha = 2.0
    scores = world.true_constraint(world.sequences())
    q_table, log_z = soft_optimal_policy(world.base.log_prob_table(), scores, alpha, world.max_length)
    x = world.sequences()[torch.randperm(81, generator=torch.Generator().manual_seed(0))[:20]]
    n, t = x.shape
    base_steps = torch.stack([world.base.log_prob_table()[prefix_index(x, torch.full((n,), i), 3), x[:, i]] for i in range(t)], 1)
    policy_steps = torch.stack([q_table[prefix_index(x, torch.full((n,), i), 3), x[:, i]] for i in range(t)], 1)
    mask = torch.ones(n, t)
    rewards = step_rewards(base_steps, world.true_constraint(x), alpha, mask)
    returns = soft_returns(rewards, policy_steps, mask)
    torch.testing.assert_close(returns[:, 0], torch.full((n,), log_z.item()), atol=1e-5, rtol=0)


def test_step_rewards_pay_constraint_at_last_valid_step():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    rewards = step_rewards(None, torch.tensor([2.0, 3.0]), 0.5, mask)
    torch.testing.assert_close(rewards, torch.tensor([[0, 1.0, 0], [0, 0, 1.5]]))
    returns = soft_returns(rewards, torch.zeros(2, 3), mask)
    torch.testing.assert_close(returns, torch.tensor([[1.0, 1.0, 0], [1.5, 1.5, 1.5]]))
    with pytest.raises(ShapeError):
        soft_returns(rewards, torch.zeros(2, 2), mask)


def test_prefix_index_enumerates_prefix_table():
    tokens = torch.tensor([[0, 0], [2, 0], [1, 2], [2, 2]])
    assert prefix_index(tokens, torch.tensor([0, 1, 1, 1]), 3).tolist() == [0, 3, 2, 3]
    assert prefix_index(tokens, torch.tensor([2, 2, 2, 2]), 3).tolist() == [4, 4 + 6, 4 + 5, 4 + 8]
