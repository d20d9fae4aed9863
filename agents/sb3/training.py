"""Building and running Stable-Baselines3 PPO on kcrl envs from a hyperparameter entry.

* :func:`build_ppo` — ``PPO`` from a checked ``sb3.yaml`` entry
  (:func:`kcrl.agents.hyperparams.load_hyperparams` ``("sb3", env_id)``), names resolved to classes.
* :func:`learn_with_snapshots` — ``model.learn`` that calls back before every rollout with the
  tokens consumed so far (the policy has then been updated on exactly that many).
* :func:`single_env_vec_env` — SB3's own ``DummyVecEnv`` over single Gymnasium envs (the
  per-env Python loop that :class:`~kcrl.agents.sb3.SB3VecEnv` avoids; a speed baseline).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from kcrl.agents.hyperparams import ZOO_KEYS
from kcrl.agents.sb3.generator_policy import GeneratorPolicy
from kcrl.agents.sb3.hyperparams import POLICIES, policy_class, sb3_policy_kwargs


def build_ppo(venv: VecEnv, hp: dict[str, Any], seed: int) -> PPO:
    """PPO on ``venv`` with the hyperparameters ``hp`` (the zoo keys ``n_envs``/``n_timesteps`` are the caller's).

    ``policy: GeneratorPolicy`` starts the policy at the env's base generator (``venv``'s
    ``task.base``, the model the per-step KL-to-base reward uses) unless ``policy_kwargs`` holds
    another ``generator``.
    """
    kwargs = {k: v for k, v in hp.items() if k not in (*ZOO_KEYS, "policy", "policy_kwargs")}
    name = hp.get("policy", "MultiInputPolicy")
    policy_kwargs = sb3_policy_kwargs(hp.get("policy_kwargs") or {}, name)
    policy = policy_class(name) if name in POLICIES else name
    if policy is GeneratorPolicy and "generator" not in policy_kwargs:
        policy_kwargs["generator"] = venv.get_attr("task")[0].base
    return PPO(policy, venv, seed=seed, policy_kwargs=policy_kwargs, **kwargs)


class _BeforeRollout(BaseCallback):
    def __init__(self, on_rollout_start: Callable[[int], None]) -> None:
        super().__init__()
        self.before_rollout = on_rollout_start  # (BaseCallback.on_rollout_start is SB3's own hook)

    def _on_rollout_start(self) -> None:
        self.before_rollout(self.model.num_timesteps)

    def _on_step(self) -> bool:
        return True


def learn_with_snapshots(model: PPO, timesteps: int, on_rollout_start: Callable[[int], None]) -> PPO:
    """``model.learn(timesteps)``, calling ``on_rollout_start(num_timesteps)`` before every rollout."""
    return model.learn(timesteps, callback=_BeforeRollout(on_rollout_start))


def single_env_vec_env(env_id: str, num_envs: int, **kwargs: Any) -> DummyVecEnv:
    """SB3's ``DummyVecEnv`` of ``num_envs`` single ``gym.make(env_id, **kwargs)`` envs."""
    return DummyVecEnv([lambda: gym.make(env_id, **kwargs) for _ in range(num_envs)])
