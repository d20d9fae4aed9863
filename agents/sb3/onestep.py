"""The SB3 ``VecEnv`` over kcrl's one-step envs, where one ``Box`` action is the whole sample.

``GaussianRing-v0`` (a 2-D point) and ``StructuredDigits-v0`` (a 28x28 image given a structure and a
source image) end every episode after one action, with reward ``alpha * f(x, c)``. SB3's PPO/A2C
run on them with their usual ``MlpPolicy`` (a diagonal Gaussian over the action, clipped to the
``Box`` before it reaches the env): :func:`~kcrl.agents.sb3.make_sb3_vec_env` returns this
VecEnv for those ids.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from kcrl.agents.adapter_common import as_onestep_env
from kcrl.agents.sb3.vec_env import SB3VecEnv
from kcrl.envs.onestep import BatchedOneStepEnv
from kcrl.errors import InvalidActionError


class SB3OneStepVecEnv(SB3VecEnv):
    """Stable-Baselines3 ``VecEnv`` view of a kcrl :class:`~kcrl.envs.onestep.BatchedOneStepEnv`.

    Every step ends every episode (``dones`` all True, ``TimeLimit.truncated`` False) and starts
    the next one in the same step, as SB3 expects: the context the action answered is in
    ``infos[i]["terminal_observation"]``, the new one in the returned observations.
    ``infos[i]`` also has ``constraint`` (raw f(x, c)) and ``reward_constraint``.

    Observations are the task's context (``Box``; for ``StructuredDigits-v0`` the target's
    structure and the source image, ``(2, 28, 28)``) or, for a task without one
    (``GaussianRing-v0``), the constant 0 of ``Discrete(1)``. Seeding as :class:`SB3VecEnv`.

    Args:
        env: a ``BatchedOneStepEnv`` (``gymnasium.make_vec(ID, num_envs=N,
            vectorization_mode="vector_entry_point")``), any autoreset mode.
    """

    def __init__(self, env: BatchedOneStepEnv) -> None:
        self.env = as_onestep_env(env, AutoresetMode.SAME_STEP, "SB3OneStepVecEnv")
        self.ids_as_box = False
        super(SB3VecEnv, self).__init__(self.env.num_envs, self.env.single_observation_space, self.env.single_action_space)
        self._actions: torch.Tensor | None = None

    def _obs(self, obs: torch.Tensor) -> VecEnvObs:
        return obs.cpu().numpy()

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        space = self.env.single_action_space
        if isinstance(space, spaces.Box) and actions.dtype.kind != "f":
            raise InvalidActionError(f"actions must be floats of shape (N, {space.shape}); got dtype {actions.dtype}.")
        self._actions = torch.from_numpy(np.ascontiguousarray(actions))

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise gym.error.ResetNeeded("call step_async(actions) before step_wait().")
        out = self.env.step_tensor(self._actions)
        self._actions = None
        dones = (out.terminated | out.truncated).cpu().numpy()
        constraint = out.info["constraint"].cpu().numpy()
        reward_constraint = out.info["reward_constraint"].cpu().numpy()
        final = out.info["final_obs"].cpu().numpy() if "final_obs" in out.info else None
        infos: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            info: dict[str, Any] = {"TimeLimit.truncated": False}
            if dones[i]:
                info["terminal_observation"] = final[i] if final is not None else self._obs(out.obs)[i]
                info["constraint"] = float(constraint[i])
                info["reward_constraint"] = float(reward_constraint[i])
            infos.append(info)
        return self._obs(out.obs), out.reward.cpu().numpy(), dones, infos


__all__ = ["SB3OneStepVecEnv"]
