"""Property-based tests (hypothesis) over env inputs and importance-weight inputs."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kcrl  # noqa: F401
from kcrl.errors import InvalidActionError
from kcrl.posterior import ImportanceWeights

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(scores=st.lists(finite, min_size=1, max_size=64), alpha=st.floats(min_value=1e-3, max_value=1.0))
def test_importance_weights_are_a_distribution(scores, alpha):
    f = torch.tensor(scores, dtype=torch.float64)
    w = ImportanceWeights.from_scores(f, alpha)
    assert torch.isfinite(w.log_z) and torch.isfinite(w.ess)
    assert w.weights.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert 1.0 - 1e-9 <= w.ess.item() <= len(scores) + 1e-9
    # log Z is bracketed by the max term and the mean term
    top = alpha * max(scores)
    assert top - math.log(len(scores)) - 1e-6 <= w.log_z.item() <= top + 1e-6
    # the weighted mean of f lies within [min f, max f]
    assert min(scores) - 1e-6 <= w.expectation(f).item() <= max(scores) + 1e-6


@settings(max_examples=100, deadline=None)
@given(value=finite, n=st.integers(1, 50))
def test_ties_are_uniform(value, n):
    w = ImportanceWeights.from_scores(torch.full((n,), value, dtype=torch.float64), 1.0)
    assert w.ess.item() == pytest.approx(n)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), actions=st.lists(st.integers(0, 3), min_size=1, max_size=12))
def test_env_accepts_every_valid_action_sequence(seed, actions):
    env = gym.make("TabularSequence-v0")
    obs, _ = env.reset(seed=seed)
    for a in actions:
        assert env.observation_space.contains(obs)
        obs, reward, terminated, truncated, info = env.step(a)
        assert math.isfinite(reward)
        if terminated:
            assert obs["length"] == 4 and math.isfinite(info["constraint"])
            obs, _ = env.reset()


@settings(max_examples=100, deadline=None)
@given(action=st.one_of(st.integers(max_value=-1), st.integers(min_value=4), st.floats(allow_nan=True).filter(lambda v: not float(v).is_integer() if math.isfinite(v) else True)))
def test_env_rejects_every_invalid_action(action):
    env = gym.make("TabularSequence-v0")
    env.reset(seed=0)
    with pytest.raises(InvalidActionError):
        env.step(action)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 16), bad_index=st.integers(0, 15), bad=st.sampled_from([-5, 4, 99]))
def test_batched_env_rejects_any_bad_entry(n, bad_index, bad):
    env = gym.make_vec("TabularSequence-v0", num_envs=n, vectorization_mode="vector_entry_point")
    env.reset(seed=0)
    actions = np.zeros(n, dtype=np.int64)
    actions[bad_index % n] = bad
    with pytest.raises(InvalidActionError, match=str(bad)):
        env.step(actions)
    with pytest.raises(InvalidActionError, match="shape"):
        env.step(np.zeros(n + 1, dtype=np.int64))
