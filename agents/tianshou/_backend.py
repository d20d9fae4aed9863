"""The Tianshou-dependent half of :mod:`kcrl.agents.tianshou` (imported only on first use)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from tianshou.data import Batch
from tianshou.env import BaseVectorEnv
from tianshou.utils.net.common import ModuleWithVectorOutput
from tianshou.utils.net.discrete import DiscreteActor
from torch import nn

from kcrl.agents.adapter_common import NextTokenLogProbs, Pooling, TokenEncoder, as_batched_env, as_onestep_env, id_cardinalities
from kcrl.errors import ConfigError, InvalidActionError, ShapeError


class TianshouVectorEnv(BaseVectorEnv):
    """Tianshou ``BaseVectorEnv`` over one kcrl :class:`~kcrl.envs.generation.BatchedGenerationEnv`.

    All N sub-envs live in one batched env (built, or rebuilt over the same task, with
    ``autoreset_mode="Disabled"``), so there are no workers: ``step(action, id)`` advances only
    the sub-envs in ``id`` (the others are frozen for that call) and ``reset(env_id)`` restarts
    only those, which is what Tianshou's ``Collector`` does when episodes end at different times.
    A sub-env whose episode ended must be reset before it is stepped again.

    Observations: a ``Batch(tokens=(R, T), length=(R,)[, context=(R, C)])`` of integer arrays, or
    with ``flatten_obs=True`` one integer array ``(R, T + 1 + C)`` laid out as
    ``[tokens, length, context]`` (for Tianshou's plain ``Net``/``MLP`` modules). :class:`TokenNet`
    reads either. Each step's ``info[i]`` holds ``env_id``, ``reward_base``, ``reward_constraint``
    and ``constraint`` (raw f(x); 0 unless ``has_constraint``, i.e. unless the episode ended).

    Args:
        env: a ``BatchedGenerationEnv`` (any autoreset mode).
        flatten_obs: return flat integer arrays instead of ``Batch`` observations.
    """

    def __init__(self, env: Any, flatten_obs: bool = False) -> None:
        # No call to BaseVectorEnv.__init__: it builds one worker per env factory, and here one
        # batched env serves every index. The attributes its methods rely on are set instead.
        self.env = as_batched_env(env, AutoresetMode.DISABLED, "TianshouVectorEnv")
        self.flatten_obs = flatten_obs
        self.env_num = self.wait_num = self.env.num_envs
        self.timeout = None
        self.is_async = False
        self.workers: list = []
        self.waiting_conn: list = []
        self.waiting_id: list[int] = []
        self.ready_id = list(range(self.env_num))
        self.is_closed = False
        self.dict_observation_space: spaces.Dict = self.env.single_observation_space
        self.single_action_space: spaces.Discrete = self.env.single_action_space
        if flatten_obs:
            keys = [k for k in ("tokens", "length", "context") if k in self.dict_observation_space.spaces]
            nvec = np.concatenate([id_cardinalities(self.dict_observation_space[k], k) for k in keys])
            self.single_observation_space: spaces.Space = spaces.MultiDiscrete(nvec)
        else:
            self.single_observation_space = self.dict_observation_space
        # One action space per index, so Collector(random=True) and seed() work as with workers.
        self._action_spaces = [copy.deepcopy(self.single_action_space) for _ in range(self.env_num)]
        self._pending_seed: int | None = None

    # ------------------------------------------------------------------ attributes
    def get_env_attr(self, key: str, id: int | list[int] | np.ndarray | None = None) -> list[Any]:
        self._assert_is_not_closed()
        ids = self._wrap_id(id)
        if key == "action_space":
            return [self._action_spaces[j] for j in ids]
        if key == "observation_space":
            return [self.single_observation_space for _ in ids]
        value = getattr(self.env, key)
        return [value for _ in ids]

    def set_env_attr(self, key: str, value: Any, id: int | list[int] | np.ndarray | None = None) -> None:
        self._assert_is_not_closed()
        if id is not None and sorted(self._wrap_id(id)) != list(range(self.env_num)):
            raise ConfigError(
                f"set_env_attr applies to all {self.env_num} sub-envs at once (they share one batched env); "
                f"got id={id!r}. Pass id=None."
            )
        setattr(self.env, key, value)

    # ------------------------------------------------------------------ reset / step
    def _index(self, id: int | list[int] | np.ndarray | None) -> np.ndarray:
        ids = np.asarray(self._wrap_id(id), dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.env_num):
            raise ConfigError(f"env ids must be in [0, {self.env_num}); got {ids.tolist()}.")
        if len(np.unique(ids)) != len(ids):
            raise ConfigError(f"env ids must be distinct; got {ids.tolist()}.")
        return ids

    def _obs(self, obs: dict[str, torch.Tensor], ids: np.ndarray) -> Batch | np.ndarray:
        rows = torch.as_tensor(ids, device=self.env.device)
        arrays = {k: v[rows].cpu().numpy() for k, v in obs.items()}
        if self.flatten_obs:
            parts = [arrays["tokens"], arrays["length"][:, None]]
            if "context" in arrays:
                parts.append(arrays["context"])
            return np.concatenate(parts, axis=1)  # (R, T + 1 + C)
        return Batch(arrays)

    def reset(
        self,
        env_id: int | list[int] | np.ndarray | None = None,
        seed: int | None = None,
        options: dict | None = None,
        **kwargs: Any,
    ) -> tuple[Batch | np.ndarray, np.ndarray]:
        """Reset all sub-envs (``env_id=None``; sub-env i seeded ``seed + i``) or those in ``env_id``."""
        self._assert_is_not_closed()
        ids = self._index(env_id)
        everything = len(ids) == self.env_num
        if seed is None and everything:
            seed, self._pending_seed = self._pending_seed, None
        if seed is not None and not everything:
            raise ConfigError(
                "a seed applies to all sub-envs at once (sub-env i gets seed + i); got a seed with "
                f"env_id={ids.tolist()}. Reset all sub-envs to seed them."
            )
        if everything:
            obs = self.env.reset_tensor(seed=seed)
        else:
            mask = torch.zeros(self.env_num, dtype=torch.bool, device=self.env.device)
            mask[torch.as_tensor(ids, device=self.env.device)] = True
            obs = self.env.reset_tensor(mask=mask)
        return self._obs(obs, ids), np.array([{} for _ in ids], dtype=object)

    def step(
        self,
        action: np.ndarray | torch.Tensor | None,
        id: int | list[int] | np.ndarray | None = None,
    ) -> tuple[Batch | np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Advance the sub-envs in ``id`` (default: all) by one token each; the others stay as they are."""
        self._assert_is_not_closed()
        if action is None:
            raise InvalidActionError("action must not be None (this vector env is synchronous).")
        env, dev = self.env, self.env.device
        ids = self._index(id)
        action = torch.as_tensor(np.asarray(action.cpu() if isinstance(action, torch.Tensor) else action)).reshape(-1)
        if action.shape[0] != len(ids):
            raise InvalidActionError(f"got {action.shape[0]} actions for {len(ids)} env ids {ids.tolist()}.")
        if not env._started:
            raise gym.error.ResetNeeded("call reset() before step().")
        rows = torch.as_tensor(ids, device=dev)
        if env.done[rows].any():
            ended = ids[env.done[rows].cpu().numpy()].tolist()
            raise gym.error.ResetNeeded(f"the episodes of sub-envs {ended} are over; call reset(env_id={ended}) first.")
        full = torch.zeros(self.env_num, dtype=action.dtype)
        full[torch.as_tensor(ids)] = action
        if len(ids) == self.env_num:
            out = env.step_tensor(full)
        else:
            selected = torch.zeros(self.env_num, dtype=torch.bool, device=dev)
            selected[rows] = True
            was_done = env.done.clone()
            env.done |= ~selected  # a finished sub-env is not advanced: freeze the others
            try:
                out = env.step_tensor(full)
            finally:
                env.done = torch.where(selected, env.done, was_done)
        finished = out.info["_constraint"][rows].cpu().numpy()
        constraint = torch.nan_to_num(out.info["constraint"][rows], nan=0.0).cpu().tolist()
        base = out.info["reward_base"][rows].cpu().tolist()
        rc = out.info["reward_constraint"][rows].cpu().tolist()
        infos = np.array(
            [
                {"env_id": int(j), "reward_base": b, "reward_constraint": r, "constraint": c, "has_constraint": bool(f)}
                for j, b, r, c, f in zip(ids, base, rc, constraint, finished)
            ],
            dtype=object,
        )
        return (
            self._obs(out.obs, ids),
            out.reward[rows].cpu().numpy(),
            out.terminated[rows].cpu().numpy(),
            out.truncated[rows].cpu().numpy(),
            infos,
        )

    def seed(self, seed: int | list[int] | None = None) -> list[list[int] | None]:
        """Seed the action-space samplers now and the sub-envs at the next full ``reset()``."""
        self._assert_is_not_closed()
        if isinstance(seed, Sequence):
            seeds = list(seed)
            if seeds != [seeds[0] + i for i in range(self.env_num)]:
                raise ConfigError(f"sub-env i is seeded seed + i; pass one integer, got {seeds[:4]}...")
            seed = seeds[0]
        self._pending_seed = seed
        return [space.seed(None if seed is None else seed + i) for i, space in enumerate(self._action_spaces)]

    def render(self, **kwargs: Any) -> list[Any]:
        return [None for _ in range(self.env_num)]

    def close(self) -> None:
        self._assert_is_not_closed()
        self.env.close()
        self.is_closed = True

    def set_constraint(self, constraint) -> None:
        """Swap the reward's constraint (e.g. a newly learned one) in every sub-env."""
        self.env.set_constraint(constraint)


class TokenNet(ModuleWithVectorOutput):
    """A Tianshou preprocessing net for kcrl observations: :class:`TokenEncoder` then an MLP.

    ``forward(obs, state=None, info=None) -> (features (B, output_dim), state)``, the signature
    Tianshou's ``DiscreteActor``/``DiscreteCritic`` expect of ``preprocess_net``. ``obs`` may be a
    ``Batch``/dict of id arrays or the flat ``(B, T + 1 + C)`` arrays of
    ``TianshouVectorEnv(flatten_obs=True)``; numpy or torch, on any device.

    Args:
        observation_space: the env's Dict observation space (``venv.dict_observation_space``).
        hidden_sizes: MLP widths after the encoder (``()``: the encoder's features themselves).
        embed_dim: E of the embeddings.
        pooling: ``"flatten"`` or ``"mean"`` (see :class:`TokenEncoder`).
        activation: activation module class between layers.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        hidden_sizes: Sequence[int] = (128, 128),
        embed_dim: int = 16,
        pooling: Pooling = "flatten",
        activation: type[nn.Module] = nn.Tanh,
    ) -> None:
        encoder = TokenEncoder.from_space(observation_space, embed_dim, pooling)
        layers: list[nn.Module] = []
        width = encoder.features_dim
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), activation()]
            width = h
        super().__init__(output_dim=width)
        self.encoder, self.mlp = encoder, nn.Sequential(*layers)
        self.context_size = 0 if encoder.context_embed is None else len(observation_space["context"].nvec)

    def ids(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(tokens (B, T), length (B,), context (B, C) | None)`` long tensors of either observation form."""
        device = self.encoder.pos_embed.device
        as_long = lambda x: torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, device=device).long()  # noqa: E731
        t = self.encoder.max_length
        if isinstance(obs, (Batch, dict)):
            tokens, length = as_long(obs["tokens"]), as_long(obs["length"]).reshape(-1)
            context = as_long(obs["context"]) if self.context_size else None
        else:
            flat = as_long(obs)
            if flat.dim() != 2 or flat.shape[1] != t + 1 + self.context_size:
                raise ShapeError(
                    f"flat observations must have shape (B, {t + 1 + self.context_size}) = [tokens, length, "
                    f"context]; got {tuple(flat.shape)}."
                )
            tokens, length = flat[:, :t], flat[:, t]
            context = flat[:, t + 1 :] if self.context_size else None
        return tokens, length, context

    def forward(self, obs: Any, state: Any = None, info: Any = None) -> tuple[torch.Tensor, Any]:
        return self.mlp(self.encoder(*self.ids(obs))), state  # (B, output_dim)


class GeneratorActor(DiscreteActor):
    """A Tianshou ``DiscreteActor`` that starts at a trained kcrl generator's next-token distribution.

    ``logits(s) = log p_theta(. | s) + last(TokenNet(s))`` with ``last`` zero at the start, so the
    policy equals the generator exactly until PPO's first update (which fine-tunes the generator's
    copy too unless ``train_generator=False``). Use it where ``DiscreteActor(preprocess_net=TokenNet(...),
    softmax_output=False)`` would go: ``DiscreteActorPolicy(actor=GeneratorActor(G, TokenNet(space)), ...)``.

    Args:
        generator: a kcrl generator (see :class:`~kcrl.agents.adapter_common.NextTokenLogProbs`),
            e.g. ``venv.env.task.base``.
        preprocess_net: the :class:`TokenNet` whose features feed the residual.
        action_shape: V (default: the generator's ``vocab_size``).
        train_generator: fine-tune the generator's copy.
    """

    def __init__(self, generator: nn.Module, preprocess_net: TokenNet, action_shape: int | None = None,
                 train_generator: bool = True) -> None:
        next_token = NextTokenLogProbs(generator, trainable=train_generator)
        n = action_shape if action_shape is not None else next_token.vocab_size
        if n is None:
            raise ConfigError("pass action_shape (the number of tokens): the generator has no vocab_size.")
        super().__init__(preprocess_net=preprocess_net, action_shape=int(n), softmax_output=False)
        self.next_token = next_token
        last = [m for m in self.last.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, obs: Any, state: Any = None, info: Any = None) -> tuple[torch.Tensor, Any]:
        tokens, length, context = self.preprocess.ids(obs)
        features = self.preprocess.mlp(self.preprocess.encoder(tokens, length, context))
        log_p = self.next_token(tokens, length, context)  # (B, V)
        if log_p.shape[-1] != self.output_dim:
            raise ConfigError(
                f"the generator scores {log_p.shape[-1]} tokens but the actor has {self.output_dim} actions; "
                "use the generator trained on this env's vocabulary."
            )
        return log_p + self.last(features), state  # (B, V) logits


class TianshouOneStepVectorEnv(BaseVectorEnv):
    """Tianshou ``BaseVectorEnv`` over a kcrl one-step env (``GaussianRing-v0``, ``StructuredDigits-v0``).

    One ``Box`` action is the whole sample and ends the episode (reward ``alpha * f(x, c)``). As
    :class:`TianshouVectorEnv`: one batched env (``autoreset_mode="Disabled"``) serves every index,
    ``step(action, id)`` advances only the listed sub-envs and ``reset(env_id)`` restarts only those.
    Observations are float arrays: the task's context (``(R, *context_shape)``), or ``(R, 1)`` zeros
    for a task without one (so Tianshou's ``Net`` has an input). Actions are flat (an image of
    28x28 is a vector of 784, Tianshou's actor output) and, with ``clip_actions`` (default), clipped
    to the ``Box`` before the env sees them, as SB3 does with Gaussian policies (the env refuses
    actions outside it). ``info[i]``: ``env_id``, ``constraint`` (raw f) and ``reward_constraint``.

    Args:
        env: a ``BatchedOneStepEnv`` (any autoreset mode).
        clip_actions: clip actions to the action space (``False``: pass them as they are).
    """

    def __init__(self, env: Any, clip_actions: bool = True) -> None:
        self.env = as_onestep_env(env, AutoresetMode.DISABLED, "TianshouOneStepVectorEnv")
        self.clip_actions = clip_actions
        self.env_num = self.wait_num = self.env.num_envs
        self.timeout = None
        self.is_async = False
        self.workers: list = []
        self.waiting_conn: list = []
        self.waiting_id: list[int] = []
        self.ready_id = list(range(self.env_num))
        self.is_closed = False
        context = self.env.task.context_space
        self.single_observation_space = (
            spaces.Box(0.0, 0.0, shape=(1,), dtype=np.float32) if context is None
            else spaces.Box(np.asarray(context.low, np.float32), np.asarray(context.high, np.float32), dtype=np.float32)
        )
        box = self.env.single_action_space
        self.sample_shape = box.shape
        self.single_action_space = spaces.Box(np.asarray(box.low, np.float32).reshape(-1),
                                              np.asarray(box.high, np.float32).reshape(-1), dtype=np.float32)
        self._low = torch.as_tensor(self.single_action_space.low)
        self._high = torch.as_tensor(self.single_action_space.high)
        self._action_spaces = [copy.deepcopy(self.single_action_space) for _ in range(self.env_num)]
        self._pending_seed: int | None = None

    get_env_attr = TianshouVectorEnv.get_env_attr
    set_env_attr = TianshouVectorEnv.set_env_attr
    _index = TianshouVectorEnv._index
    seed = TianshouVectorEnv.seed
    render = TianshouVectorEnv.render
    close = TianshouVectorEnv.close
    set_constraint = TianshouVectorEnv.set_constraint

    def _obs(self, obs: torch.Tensor, ids: np.ndarray) -> np.ndarray:
        rows = torch.as_tensor(ids, device=self.env.device)
        if self.env.task.context_space is None:
            return np.zeros((len(ids), 1), dtype=np.float32)
        return obs[rows].float().cpu().numpy()

    def reset(self, env_id: int | list[int] | np.ndarray | None = None, seed: int | None = None,
              options: dict | None = None, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Reset all sub-envs (``env_id=None``; sub-env i seeded ``seed + i``) or those in ``env_id``."""
        self._assert_is_not_closed()
        ids = self._index(env_id)
        everything = len(ids) == self.env_num
        if seed is None and everything:
            seed, self._pending_seed = self._pending_seed, None
        if seed is not None and not everything:
            raise ConfigError("a seed applies to all sub-envs at once (sub-env i gets seed + i); reset all sub-envs to seed them.")
        if everything:
            obs = self.env.reset_tensor(seed=seed)
        else:
            mask = torch.zeros(self.env_num, dtype=torch.bool, device=self.env.device)
            mask[torch.as_tensor(ids, device=self.env.device)] = True
            obs = self.env.reset_tensor(mask=mask)
        return self._obs(obs, ids), np.array([{} for _ in ids], dtype=object)

    def step(self, action: np.ndarray | torch.Tensor | None, id: int | list[int] | np.ndarray | None = None):
        """One whole sample for each sub-env in ``id`` (default: all); the others stay as they are."""
        self._assert_is_not_closed()
        if action is None:
            raise InvalidActionError("action must not be None (this vector env is synchronous).")
        env, dev = self.env, self.env.device
        ids = self._index(id)
        action = torch.as_tensor(np.asarray(action.cpu() if isinstance(action, torch.Tensor) else action), dtype=torch.float32)
        if action.shape[0] != len(ids):
            raise InvalidActionError(f"got {action.shape[0]} actions for {len(ids)} env ids {ids.tolist()}.")
        if not env._started:
            raise gym.error.ResetNeeded("call reset() before step().")
        rows = torch.as_tensor(ids, device=dev)
        if env.done[rows].any():
            ended = ids[env.done[rows].cpu().numpy()].tolist()
            raise gym.error.ResetNeeded(f"the episodes of sub-envs {ended} are over; call reset(env_id={ended}) first.")
        action = action.reshape(len(ids), -1)
        if self.clip_actions:
            action = torch.maximum(torch.minimum(action, self._high), self._low)
        full = self._low.expand(self.env_num, -1).clone()
        full[torch.as_tensor(ids)] = action
        full = full.reshape(self.env_num, *self.sample_shape)
        selected = torch.zeros(self.env_num, dtype=torch.bool, device=dev)
        selected[rows] = True
        was_done = env.done.clone()
        env.done |= ~selected  # the others are not advanced
        try:
            out = env.step_tensor(full)
        finally:
            env.done = torch.where(selected, env.done, was_done)
        constraint = out.info["constraint"][rows].cpu().tolist()
        rc = out.info["reward_constraint"][rows].cpu().tolist()
        infos = np.array([{"env_id": int(j), "constraint": c, "reward_constraint": r} for j, c, r in zip(ids, constraint, rc)],
                         dtype=object)
        return (self._obs(out.obs, ids), out.reward[rows].cpu().numpy(), out.terminated[rows].cpu().numpy(),
                out.truncated[rows].cpu().numpy(), infos)
