"""One test module over every registered kcrl id: a new env is tested the moment it is registered.

Gymnasium's and SB3's env checkers, same-seed determinism, a pickle round trip, and
batched-vs-single equivalence (the batched env against Gymnasium's SyncVectorEnv of the single
env, same seeds and actions, NEXT_STEP autoreset on both sides).
"""

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import kcrl  # noqa: F401  (registers the envs)
from kcrl.envs import ENV_IDS

STEPS = 24


def _rollout(env, seed, steps=STEPS):
    """Obs/reward/flags of a rollout with actions from a seeded action space; resets on done."""
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        trace += [obs, reward, terminated, truncated]
        if terminated or truncated:
            obs, _ = env.reset()
            trace.append(obs)
    return trace


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    else:
        np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-5, atol=1e-5)


def test_all_ids_registered():
    assert "TabularSequence-v0" in ENV_IDS
    for env_id in ENV_IDS:
        assert env_id in gym.registry


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_checker(env_id):
    env = gym.make(env_id)
    gym_check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_checker(env_id):
    sb3_check_env(gym.make(env_id), warn=False)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_rollout(env_id):
    for a, b in zip(_rollout(gym.make(env_id), 3), _rollout(gym.make(env_id), 3)):
        _assert_same(a, b)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickle_round_trip(env_id):
    env = gym.make(env_id)
    env.action_space.seed(0)
    env.reset(seed=1)
    env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(STEPS):
        action = env.action_space.sample()
        out_a, out_b = env.step(action), clone.step(action)
        for a, b in zip(out_a[:4], out_b[:4]):
            _assert_same(a, b)
        if out_a[2] or out_a[3]:
            _assert_same(env.reset()[0], clone.reset()[0])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_batched_matches_single_envs(env_id):
    n, seed = 3, 11
    batched = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
    singles = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync")
    assert batched.metadata["autoreset_mode"] == singles.metadata["autoreset_mode"]
    _assert_same(batched.reset(seed=seed)[0], singles.reset(seed=seed)[0])
    singles.action_space.seed(seed)
    for _ in range(STEPS):
        actions = singles.action_space.sample()
        out_b, out_s = batched.step(actions), singles.step(actions)
        for a, b in zip(out_b[:4], out_s[:4]):
            _assert_same(a, b)
