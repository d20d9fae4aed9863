"""The SB3 ``VecEnv`` over kcrl's batched generation envs, and a token feature extractor.

* :class:`SB3VecEnv` — an SB3 ``VecEnv`` over one :class:`~kcrl.envs.generation.BatchedGenerationEnv`
  (all N sub-envs step as one tensor operation; no Python loop over environments).
* :func:`make_sb3_vec_env` — ``gymnasium.make_vec`` + :class:`SB3VecEnv` (+ ``VecMonitor``).
* :class:`TokenFeatureExtractor` — embeds the token-id observations, so PPO/A2C stay small at
  large vocabularies (SB3's default ``CombinedExtractor`` one-hot encodes ``MultiDiscrete`` and
  flattens it: T*(V+1) inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from kcrl.agents.adapter_common import Pooling, TokenEncoder, as_batched_env
from kcrl.envs.generation import BatchedGenerationEnv
from kcrl.errors import ConfigError, InvalidActionError, unknown_name


def _box_of_ids(space: spaces.Space) -> spaces.Box:
    """An integer Box holding the same ids as a (Multi)Discrete space (SB3 then passes ids, not one-hots)."""
    nvec = np.asarray(space.nvec if isinstance(space, spaces.MultiDiscrete) else [space.n], dtype=np.int64)
    return spaces.Box(low=np.zeros_like(nvec), high=nvec - 1, dtype=np.int64)


class SB3VecEnv(VecEnv):
    """Stable-Baselines3 ``VecEnv`` view of a kcrl :class:`BatchedGenerationEnv`.

    SB3's conventions: a finished sub-env is reset in the same step, its last observation is in
    ``infos[i]["terminal_observation"]``, and ``infos[i]["TimeLimit.truncated"]`` is True when the
    episode was cut by the length cap rather than ended by the model (termination). The batched env
    is (re)built with ``autoreset_mode="SameStep"`` over the same task, so every step is one
    tensor operation for all N sub-envs; ``infos[i]`` also carries ``reward_base`` and, at an
    episode's end, ``constraint`` (raw f(x)) and ``reward_constraint``.

    Args:
        env: a ``BatchedGenerationEnv`` (e.g. from ``gymnasium.make_vec(ID, num_envs=N,
            vectorization_mode="vector_entry_point")``), any autoreset mode.
        ids_as_box: expose token, length and context ids as integer ``Box`` spaces (default).
            SB3 one-hot encodes ``Discrete``/``MultiDiscrete`` observations before any features
            extractor sees them (T*(V+1) floats per observation); a ``Box`` passes the ids
            through, and :class:`TokenFeatureExtractor` embeds them. ``False`` keeps the env's
            own spaces (fine for small V; the extractor accepts both).

    Seeding follows SB3: ``venv.seed(s)`` makes the next ``reset()`` seed sub-env i with ``s + i``,
    which draws the same contexts as ``gymnasium.make_vec(...).reset(seed=s)``.
    ``get_attr``/``set_attr``/``env_method`` act on the one shared batched env.
    """

    def __init__(self, env: BatchedGenerationEnv, ids_as_box: bool = True) -> None:
        self.env = as_batched_env(env, AutoresetMode.SAME_STEP, "SB3VecEnv")
        self.ids_as_box = ids_as_box
        single = self.env.single_observation_space
        if ids_as_box:
            single = spaces.Dict({k: _box_of_ids(s) for k, s in single.spaces.items()})
        super().__init__(self.env.num_envs, single, self.env.single_action_space)
        self._actions: torch.Tensor | None = None

    # ------------------------------------------------------------------ observations
    def _obs(self, obs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        out = {k: v.cpu().numpy() for k, v in obs.items()}
        if self.ids_as_box:
            out["length"] = out["length"].reshape(*out["length"].shape, 1)  # Box of shape (1,)
        return out

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> VecEnvObs:
        seeds = self._seeds
        if all(s is None for s in seeds):
            obs = self.env.reset_tensor(seed=None)
        elif all(s is not None for s in seeds) and list(seeds) == [seeds[0] + i for i in range(self.num_envs)]:
            obs = self.env.reset_tensor(seed=int(seeds[0]))
        else:
            raise ConfigError(
                "SB3VecEnv seeds all sub-envs together (sub-env i gets seed + i); got per-env seeds "
                f"{seeds[:4]}... Use venv.seed(seed) with one integer."
            )
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self._obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        if actions.shape == (self.num_envs, 1):  # SB3 sometimes keeps a trailing action axis
            actions = actions[:, 0]
        if actions.dtype.kind not in "iu":
            raise InvalidActionError(f"actions must be integer token ids; got dtype {actions.dtype}.")
        self._actions = torch.from_numpy(actions.astype(np.int64, copy=False))

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise gym.error.ResetNeeded("call step_async(actions) before step_wait().")
        out = self.env.step_tensor(self._actions)
        self._actions = None
        terminated, truncated = out.terminated.cpu().numpy(), out.truncated.cpu().numpy()
        dones = terminated | truncated
        base = out.info["reward_base"].cpu().tolist()
        time_limit = (truncated & ~terminated).tolist()
        infos: list[dict[str, Any]] = [
            {"reward_base": b, "TimeLimit.truncated": t} for b, t in zip(base, time_limit)
        ]
        if dones.any():
            final = self._obs(out.info["final_obs"])
            constraint = out.info["constraint"].cpu().numpy()
            reward_constraint = out.info["reward_constraint"].cpu().numpy()
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = {k: v[i] for k, v in final.items()}
                infos[i]["constraint"] = float(constraint[i])
                infos[i]["reward_constraint"] = float(reward_constraint[i])
        return self._obs(out.obs), out.reward.cpu().numpy(), dones, infos

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The batched env's attribute, once per requested index (all sub-envs share it)."""
        value = getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the shared batched env (only for all sub-envs at once)."""
        self._require_all(indices, "set_attr")
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call a method of the shared batched env once; its result is repeated per index."""
        self._require_all(indices, "env_method")
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in range(self.num_envs)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    def _require_all(self, indices: VecEnvIndices, what: str) -> None:
        if indices is not None and sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ConfigError(
                f"{what} on SB3VecEnv applies to all {self.num_envs} sub-envs at once (they share one "
                f"batched env); got indices={indices!r}. Pass indices=None."
            )

    # ------------------------------------------------------------------ kcrl extras
    def set_constraint(self, constraint) -> None:
        """Swap the reward's constraint (e.g. a newly learned one) in every sub-env."""
        self.env.set_constraint(constraint)


def make_sb3_vec_env(
    env_id: str,
    num_envs: int,
    *,
    seed: int | None = None,
    monitor: bool = True,
    ids_as_box: bool = True,
    **kwargs: Any,
) -> VecEnv:
    """An SB3 ``VecEnv`` of ``num_envs`` copies of a registered kcrl env, stepped as one batch.

    Token envs give an :class:`SB3VecEnv`; the one-step ``Box`` envs (``GaussianRing-v0``,
    ``StructuredDigits-v0``) an :class:`~kcrl.agents.sb3.SB3OneStepVecEnv` (use ``"MlpPolicy"``).

    Args:
        env_id: a kcrl id, e.g. ``"TabularSequence-v0"``.
        num_envs: N.
        seed: seed of the first ``reset()`` (sub-env i gets ``seed + i``); ``None`` for random.
        monitor: wrap in SB3's ``VecMonitor`` so episode returns/lengths are logged.
        ids_as_box: see :class:`SB3VecEnv` (token envs only).
        **kwargs: passed to the env (``device=``, ``kl_to_base=``, ``vocab_size=``, ...).
    """
    if env_id not in gym.registry:
        import kcrl.envs

        raise unknown_name("environment id", env_id, kcrl.envs.ENV_IDS or list(gym.registry))
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", autoreset_mode="SameStep", **kwargs)
    if isinstance(env, BatchedGenerationEnv):
        venv: VecEnv = SB3VecEnv(env, ids_as_box=ids_as_box)
    else:  # a one-step env (GaussianRing-v0, StructuredDigits-v0): one Box action per episode
        from kcrl.agents.sb3.onestep import SB3OneStepVecEnv

        venv = SB3OneStepVecEnv(env)
    if seed is not None:
        venv.seed(seed)
    return VecMonitor(venv) if monitor else venv


class TokenFeatureExtractor(BaseFeaturesExtractor):
    """SB3 features extractor for kcrl's Dict token observations (see :class:`TokenEncoder`).

    Accepts both observation forms SB3 can hand it: raw ids (the ``Box`` spaces of
    :class:`SB3VecEnv` with ``ids_as_box=True``) or SB3's one-hot encoding of ``MultiDiscrete``/
    ``Discrete`` spaces (decoded back to ids by argmax). The output size is
    ``T*E + E (+ C*E)`` with ``pooling="flatten"`` and ``E + E (+ C*E)`` with ``"mean"``,
    independent of the vocabulary size.

    Use with ``PPO("MultiInputPolicy", venv, policy_kwargs=dict(features_extractor_class=
    TokenFeatureExtractor, features_extractor_kwargs=dict(embed_dim=16, pooling="mean")))``.

    Args:
        observation_space: the VecEnv's (single-env) Dict observation space.
        embed_dim: E.
        pooling: ``"flatten"`` or ``"mean"`` (see :class:`TokenEncoder`).
    """

    def __init__(self, observation_space: spaces.Dict, embed_dim: int = 16, pooling: Pooling = "flatten") -> None:
        encoder = TokenEncoder.from_space(observation_space, embed_dim, pooling)
        super().__init__(observation_space, features_dim=encoder.features_dim)
        self.encoder = encoder
        self._spaces = dict(observation_space.spaces)

    def _ids(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """Integer ids ``(B, slots)`` from what SB3's ``preprocess_obs`` produced for ``key``."""
        space = self._spaces[key]
        if isinstance(space, spaces.Box):
            return x.reshape(x.shape[0], -1).round().long()
        if isinstance(space, spaces.Discrete):
            return x.argmax(-1, keepdim=True)  # one-hot (B, n) -> (B, 1)
        nvec = [int(n) for n in space.nvec]
        if len(set(nvec)) == 1:
            return x.reshape(x.shape[0], len(nvec), nvec[0]).argmax(-1)  # (B, slots*n) -> (B, slots)
        return torch.stack([part.argmax(-1) for part in torch.split(x, nvec, dim=1)], dim=1)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = self._ids("tokens", observations["tokens"])  # (B, T)
        length = self._ids("length", observations["length"])[:, 0]  # (B,)
        context = self._ids("context", observations["context"]) if "context" in observations else None
        return self.encoder(tokens, length, context)  # (B, features_dim)


__all__ = ["SB3VecEnv", "TokenFeatureExtractor", "make_sb3_vec_env"]
