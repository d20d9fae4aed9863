"""Shared pieces of the adapter tests: a tiny task with an end token and a context."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kcrl.constraints import RuleConstraint
from kcrl.envs.generation import BatchedGenerationEnv
from kcrl.envs.task import SequenceTask
from kcrl.rng import counter_randint


class EosContextTask(SequenceTask):
    """V=5 tokens, token 0 ends the episode (termination), at most T=3 tokens (truncation),
    one context entry in {0, 1, 2}; uniform base model; f(x, c) = number of tokens equal to c + 1."""

    vocab_size, max_length, eos_id, pad_id, obs_vocab = 5, 3, 0, 5, 6
    context_nvec = np.array([3])

    def __init__(self) -> None:
        rule = RuleConstraint(lambda x, c: (x == c[:, :1] + 1).float().sum(-1), name="count-context")
        super().__init__(rule, alpha=2.0)

    def sample_contexts(self, seeds, episodes):
        return counter_randint(seeds, episodes, 3)[:, None]  # (N, 1)

    def base_log_probs(self, tokens, lengths, context):
        return torch.full((tokens.shape[0], self.vocab_size), -math.log(self.vocab_size))


@pytest.fixture
def eos_context_env():
    """``make(num_envs, autoreset_mode)`` -> a batched env of :class:`EosContextTask`."""

    def make(num_envs: int = 4, autoreset_mode: str = "NextStep") -> BatchedGenerationEnv:
        return BatchedGenerationEnv(EosContextTask(), num_envs, "cpu", True, autoreset_mode)

    return make


@pytest.fixture
def random_policy_returns():
    """``f(n_episodes, seed, **env_kwargs)`` -> returns of the uniform-random policy on
    TabularSequence-v0, played on the batched env (the baseline a learner must beat)."""

    def run(n_episodes: int, seed: int, **env_kwargs) -> np.ndarray:
        import gymnasium as gym

        env = gym.make_vec(
            "TabularSequence-v0", num_envs=n_episodes, vectorization_mode="vector_entry_point",
            autoreset_mode="Disabled", **env_kwargs,
        )
        env.reset_tensor(seed=seed)
        gen = torch.Generator().manual_seed(seed)
        total = torch.zeros(n_episodes)
        while not env.done.all():
            actions = torch.randint(0, env.single_action_space.n, (n_episodes,), generator=gen)
            total += env.step_tensor(actions).reward
        return total.numpy()

    return run
