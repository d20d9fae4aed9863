"""SB3 and Tianshou on the one-step Box envs (GaussianRing-v0, StructuredDigits-v0).

The learning checks score the policy's own (stochastic) samples on fresh contexts before and after
a short PPO run; the control is the same run with a learning rate of 0, which must not move.
``GaussianRing-v0`` at its default std 0.02 pays the floor -10 to ~99% of a fresh Gaussian policy's
samples, so the checks use ``std=0.3`` (the same env, wider modes): on the default ring whether a
short run finds a mode at all depends on the seed (one SB3 run of 131,072 samples went -9.99 -> 3.33,
the same budget in one ``learn`` call stayed at -10).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import kcrl  # noqa: F401  (registers the envs)
from kcrl.agents.sb3 import SB3OneStepVecEnv, make_sb3_vec_env

WIDE_RING = {"std": 0.3}


def sb3_score(model, env_id, env_kwargs, n=512, seed=123) -> float:
    venv = make_sb3_vec_env(env_id, num_envs=n, seed=seed, monitor=False, **env_kwargs)
    torch.manual_seed(seed)
    actions, _ = model.predict(venv.reset(), deterministic=False)
    return float(venv.step(actions)[1].mean())


def sb3_run(env_id, env_kwargs, timesteps, lr, arch=(64, 64)):
    venv = make_sb3_vec_env(env_id, num_envs=64, seed=0, **env_kwargs)
    model = PPO("MlpPolicy", venv, n_steps=8, batch_size=128, n_epochs=4, gamma=1.0, learning_rate=lr, seed=0,
                policy_kwargs=dict(net_arch=list(arch)))
    start = sb3_score(model, env_id, env_kwargs)
    model.learn(timesteps)
    return start, sb3_score(model, env_id, env_kwargs)


def test_sb3_one_step_vec_env_follows_sb3_conventions():
    venv = make_sb3_vec_env("StructuredDigits-v0", num_envs=3, seed=0, monitor=False)
    assert isinstance(venv, SB3OneStepVecEnv)
    obs = venv.reset()
    assert obs.shape == (3, 2, 28, 28) and obs.dtype == np.float32
    new_obs, reward, dones, infos = venv.step(np.full((3, 28, 28), 0.5, dtype=np.float32))
    assert dones.all() and reward.shape == (3,)
    assert np.array_equal(infos[0]["terminal_observation"], obs[0])  # the context the image answered
    assert not np.array_equal(new_obs, obs)  # the next episode's context, in the same step
    assert infos[0]["reward_constraint"] == pytest.approx(reward[0]) and not infos[0]["TimeLimit.truncated"]
    ring = make_sb3_vec_env("GaussianRing-v0", num_envs=2, seed=0, monitor=False)
    assert ring.reset().tolist() == [0, 0]
    assert ring.step(np.array([[2.0, 0.0], [0.0, 0.0]], dtype=np.float32))[1].tolist() == pytest.approx([3.907, -10.0], abs=1e-3)


def test_sb3_ppo_raises_the_ring_reward():
    start, end = sb3_run("GaussianRing-v0", WIDE_RING, 32768, lr=3e-3)
    assert end > start + 2.0, (start, end)  # measured: -6.70 -> -1.84
    start0, end0 = sb3_run("GaussianRing-v0", WIDE_RING, 32768, lr=0.0)  # control: no learning, no rise
    assert start0 == pytest.approx(start) and abs(end0 - start0) < 0.5, (start0, end0)


def test_sb3_ppo_raises_the_digits_reward():
    start, end = sb3_run("StructuredDigits-v0", {}, 8192, lr=3e-3)
    assert end > start + 50.0, (start, end)  # the structure log-likelihood; measured -342 -> -179
    start0, end0 = sb3_run("StructuredDigits-v0", {}, 8192, lr=0.0)
    assert abs(end0 - start0) < 10.0, (start0, end0)


# ------------------------------------------------------------------------- Tianshou
def tianshou_score(policy, env_id, env_kwargs, n=512, seed=123) -> float:
    from tianshou.data import Collector

    from kcrl.agents.tianshou import make_tianshou_vec_env

    torch.manual_seed(seed)
    venv = make_tianshou_vec_env(env_id, num_envs=128, seed=seed, **env_kwargs)
    return float(Collector(policy, venv).collect(n_episode=n, reset_before_collect=True).returns.mean())


def tianshou_run(env_id, env_kwargs, timesteps, lr, hidden=(64, 64)):
    from kcrl.agents.tianshou import train_tianshou_ppo

    kw = dict(n_envs=64, collection_step_num_env_steps=512, batch_size=128, update_step_num_repetitions=4,
              gamma=1.0, hidden_sizes=hidden, ent_coef=0.0)
    start = tianshou_score(train_tianshou_ppo(env_kwargs, 0, None, False, env_id, n_timesteps=512, lr=0.0, **kw),
                           env_id, env_kwargs)
    return start, tianshou_score(train_tianshou_ppo(env_kwargs, 0, None, False, env_id, n_timesteps=timesteps, lr=lr, **kw),
                                 env_id, env_kwargs)


def test_tianshou_one_step_env_partial_steps_and_clipping():
    pytest.importorskip("tianshou")
    from kcrl.agents.tianshou import TianshouOneStepVectorEnv, make_tianshou_vec_env

    venv = make_tianshou_vec_env("GaussianRing-v0", num_envs=3, seed=0)
    assert isinstance(venv, TianshouOneStepVectorEnv)
    obs, _ = venv.reset()
    assert obs.shape == (3, 1)
    _, reward, terminated, _, infos = venv.step(np.array([[2.0, 0.0]]), id=[1])
    assert reward == pytest.approx([3.907], abs=1e-3) and terminated.tolist() == [True] and infos[0]["env_id"] == 1
    _, reward, *_ = venv.step(np.array([[9.0, 0.0], [2.0, 0.0]]), id=[0, 2])  # 9 is clipped to the bound 3
    assert reward[1] == pytest.approx(3.907, abs=1e-3) and reward[0] == -10.0
    with pytest.raises(Exception, match="reset"):
        venv.step(np.zeros((1, 2)), id=[1])
    digits = make_tianshou_vec_env("StructuredDigits-v0", num_envs=2, seed=0)
    assert digits.single_action_space.shape == (784,)  # flat, as Tianshou's actors output it
    digits.reset()
    assert digits.step(np.full((2, 784), 0.5))[1].shape == (2,)


def test_tianshou_ppo_raises_the_ring_reward():
    pytest.importorskip("tianshou")
    start, end = tianshou_run("GaussianRing-v0", WIDE_RING, 16384, lr=3e-3)
    assert end > start + 2.0, (start, end)
    start0, end0 = tianshou_run("GaussianRing-v0", WIDE_RING, 16384, lr=0.0)  # control
    assert abs(end0 - start0) < 0.5, (start0, end0)


@pytest.mark.slow
def test_tianshou_ppo_raises_the_digits_reward():
    pytest.importorskip("tianshou")
    start, end = tianshou_run("StructuredDigits-v0", {}, 8192, lr=3e-3)
    assert end > start + 50.0, (start, end)
