"""Token-by-token generation as a Gymnasium MDP, single and batched (CPU or GPU).

:class:`BatchedGenerationEnv` is the one implementation: N episodes stepped as tensor
operations on ``device``. :class:`GenerationEnv` is the single-environment view of it
(a batch of one), so the two can never disagree.

Reward terms (each reported in ``info``):

* ``reward_constraint`` — ``alpha * f(x, context)`` at the episode's last step (on
  termination *and* on truncation: the written tokens are the sample);
* ``reward_base`` — ``log p_theta(a_t | s_t)`` at every step when ``kl_to_base=True``. With it,
  the soft (max-entropy) optimal policy is q ∝ p_theta exp(alpha f) (see :mod:`kcrl.softrl`).

Autoreset: the Gymnasium-facing API uses ``AutoresetMode.NEXT_STEP`` (Gymnasium's default):
the step after an episode ends resets that sub-environment, ignores its action and returns
reward 0 with both flags False. ``AutoresetMode.DISABLED`` is available for kcrl's own agents
(finished episodes stay finished and pay 0 until ``reset``); ``SAME_STEP`` for adapters that
expect it (the final observation is then in ``info["final_obs"]``). The mode is checked when
the environment is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from kcrl.errors import ConfigError, InvalidActionError
from kcrl.envs.actions import integer_actions
from kcrl.envs.task import SequenceTask


@dataclass
class TensorStep:
    """One batched step, as tensors on the env's device (also used by :mod:`kcrl.envs.onestep`)."""

    obs: dict[str, torch.Tensor] | torch.Tensor  # a dict for token MDPs; the context for one-step tasks
    reward: torch.Tensor  # (N,) float32
    terminated: torch.Tensor  # (N,) bool
    truncated: torch.Tensor  # (N,) bool
    info: dict[str, torch.Tensor]


def observation_space(task: SequenceTask) -> spaces.Dict:
    """The single-env observation space: written tokens, how many, and the context."""
    obs = {
        "tokens": spaces.MultiDiscrete(np.full(task.max_length, task.obs_vocab, dtype=np.int64)),
        "length": spaces.Discrete(task.max_length + 1),
    }
    if task.context_nvec is not None:
        obs["context"] = spaces.MultiDiscrete(np.asarray(task.context_nvec, dtype=np.int64))
    return spaces.Dict(obs)


def check_seed(seed: Any) -> int:
    """A reset seed as every kcrl env takes it: an integer in ``[0, 2**64)`` (NumPy integers too);
    floats, bools, negative and larger numbers raise :class:`~kcrl.errors.ConfigError`."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"reset seed must be an integer in [0, 2**64) or None; got {seed!r} ({type(seed).__name__}).")
    if not 0 <= int(seed) < 2**64:
        raise ConfigError(f"reset seed must be an integer in [0, 2**64) or None; got {seed!r}.")
    return int(seed)


class TensorVectorEnv(VectorEnv):
    """Gymnasium's numpy ``VectorEnv`` API, seeding and resets on top of a tensor core.

    Subclasses call :meth:`_setup` in their constructor and implement ``_reset_where(mask)``,
    ``obs_tensor()`` and ``step_tensor(actions) -> TensorStep``; numpy appears only here, at the edge.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}
    _MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED)

    def _setup(self, task, num_envs: int, device: str | torch.device, autoreset_mode: AutoresetMode | str) -> None:
        """Validate the arguments every batched env shares and allocate the per-sub-env counters."""
        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ConfigError(f"num_envs must be a positive integer; got {num_envs!r}.")
        try:
            autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ConfigError(
                f"autoreset_mode must be one of {[m.value for m in self._MODES]}; got {autoreset_mode!r}."
            ) from None
        self.device = torch.device(device)
        self.task = task.to(self.device)
        self.num_envs = num_envs
        self.autoreset_mode = autoreset_mode
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.context = None  # (N, ...) once reset, if the task has contexts
        self.seeds = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.episodes = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.done = torch.zeros(num_envs, dtype=torch.bool, device=self.device)  # episode over, not yet reset
        self._arange = torch.arange(num_envs, device=self.device)
        self._started = False

    def _autoreset(self, info: dict, resetting: torch.Tensor | None, finished: torch.Tensor):
        """Observations after a step under the autoreset mode (``resetting``: the NEXT_STEP resets due
        now; ``finished``: episodes that ended in this step, reset at once under SAME_STEP)."""
        obs = self.obs_tensor()
        if resetting is not None and resetting.any():
            self._reset_where(resetting)
            obs = self.obs_tensor()
        elif self.autoreset_mode == AutoresetMode.SAME_STEP and finished.any():
            info["final_obs"] = obs
            info["_final_obs"] = finished.clone()
            self._reset_where(finished)
            obs = self.obs_tensor()
        return obs

    def reset_tensor(self, seed: int | None = None, mask: torch.Tensor | None = None):
        """Reset all sub-envs (or those in ``mask``); sub-env i is seeded ``seed + i``.

        ``seed`` is ``None`` or an integer in ``[0, 2**64)``, as the single envs take it
        (:func:`check_seed`); it is stored modulo 2**64 as an int64.
        """
        if seed is not None:
            seed = check_seed(seed)
            self.seeds = (seed - 2**64 if seed >= 2**63 else seed) + self._arange  # int64, wraps modulo 2**64
            self.episodes.zero_()
        elif not self._started:
            base = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
            self.seeds = base + self._arange
        self._started = True
        mask = torch.ones(self.num_envs, dtype=torch.bool, device=self.device) if mask is None else mask
        self._reset_where(mask.to(self.device, torch.bool))
        return self.obs_tensor()

    def seed_state(self) -> dict[str, Any]:
        """What the next resets draw from: per-sub-env seeds, episode counters, whether seeded yet.

        Plain tensors and a bool (checkpoint-safe); :meth:`set_seed_state` restores them, so that a
        restored env's later resets (e.g. the contexts they draw) continue the saved stream.
        """
        return {"seeds": self.seeds.cpu().clone(), "episodes": self.episodes.cpu().clone(), "started": self._started}

    def set_seed_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`seed_state` returned (on this env's device)."""
        seeds, episodes = torch.as_tensor(state["seeds"]), torch.as_tensor(state["episodes"])
        if seeds.shape != (self.num_envs,) or episodes.shape != (self.num_envs,):
            raise ConfigError(
                f"the saved reset state has seeds of shape {tuple(seeds.shape)} and episode counters of shape "
                f"{tuple(episodes.shape)}; this env has {self.num_envs} sub-envs. Restore it into an env with the "
                "same num_envs."
            )
        self.seeds = seeds.to(self.device, torch.long).clone()
        self.episodes = episodes.to(self.device, torch.long).clone()
        self._started = bool(state["started"])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        mask = None
        if options and "reset_mask" in options:
            mask = torch.as_tensor(np.asarray(options["reset_mask"]), dtype=torch.bool, device=self.device)
        obs = self.reset_tensor(seed=seed, mask=mask)
        return _to_numpy(obs), {}

    def step(self, actions):
        out = self.step_tensor(actions)
        info = {k: _to_numpy(v) for k, v in out.info.items()}
        return (
            _to_numpy(out.obs),
            out.reward.cpu().numpy().astype(np.float32),
            out.terminated.cpu().numpy(),
            out.truncated.cpu().numpy(),
            info,
        )

    def set_constraint(self, constraint) -> None:
        """Swap the reward's constraint (e.g. a newly learned one) without rebuilding the env."""
        self.task.set_constraint(constraint)
        constraint.to(self.device)

    def close_extras(self, **kwargs: Any) -> None:
        pass


class BatchedGenerationEnv(TensorVectorEnv):
    """N generation episodes stepped together as tensor operations on ``device``.

    Args:
        task: the world (vocabulary, contexts, base model, constraint).
        num_envs: N.
        device: ``"cpu"`` or ``"cuda"`` (the task's modules are moved there).
        kl_to_base: add ``log p_theta(a_t|s_t)`` to every step's reward.
        autoreset_mode: see the module docstring.
    """

    def __init__(
        self,
        task: SequenceTask,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        kl_to_base: bool = True,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        self._setup(task, num_envs, device, autoreset_mode)
        self.kl_to_base = kl_to_base
        self.single_observation_space = observation_space(task)
        self.single_action_space = spaces.Discrete(task.vocab_size)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

        self.tokens = torch.full((num_envs, task.max_length), task.pad_id, dtype=torch.long, device=self.device)
        self.lengths = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.reference = None  # optional override of the task's base model in the per-step KL term

    # ------------------------------------------------------------------ tensor interface
    def _reset_where(self, mask: torch.Tensor) -> None:
        self.tokens[mask] = self.task.pad_id
        self.lengths[mask] = 0
        self.done[mask] = False
        context = self.task.sample_contexts(self.seeds, self.episodes)
        if context is not None:
            self.context = context if self.context is None else torch.where(mask[:, None], context, self.context)
        self.episodes += mask.long()

    def obs_tensor(self) -> dict[str, torch.Tensor]:
        obs = {"tokens": self.tokens.clone(), "length": self.lengths.clone()}
        if self.context is not None:
            obs["context"] = self.context.clone()
        return obs

    def step_tensor(self, actions: torch.Tensor) -> TensorStep:
        """Write one token per sub-env. ``actions``: ``(N,)`` integer tensor on any device."""
        if not self._started:
            raise gym.error.ResetNeeded("call reset() before step().")
        actions = self._check_actions(actions)
        n, task = self.num_envs, self.task
        resetting = self.done.clone() if self.autoreset_mode == AutoresetMode.NEXT_STEP else None
        active = ~self.done

        reward_base = torch.zeros(n, device=self.device)
        if self.kl_to_base:
            reference = self.reference or task.base_log_probs
            log_probs = reference(self.tokens, self.lengths, self.context)  # (N, V)
            reward_base = torch.where(active, log_probs[self._arange, actions], 0.0).float()

        # the new state is built aside and committed only once the rewards are known to be finite, so
        # that an error (e.g. a NonFiniteError below) leaves the env as it was before this step
        write_at = self.lengths.clamp(max=task.max_length - 1)
        written = torch.where(active, actions, self.tokens[self._arange, write_at])
        tokens = self.tokens.clone()
        tokens[self._arange, write_at] = written
        lengths = self.lengths + active.long()

        full = lengths >= task.max_length
        ended_by_eos = (actions == task.eos_id) & active if task.eos_id is not None else None
        if task.eos_id is None:
            terminated, truncated = active & full, torch.zeros_like(active)
        else:
            terminated, truncated = ended_by_eos, active & full & ~ended_by_eos
        finished = terminated | truncated

        reward_constraint = torch.zeros(n, device=self.device)
        constraint = torch.full((n,), float("nan"), device=self.device)
        if finished.any():
            idx = finished.nonzero().squeeze(-1)
            ctx = None if self.context is None else self.context[idx]
            raw = task.constraint.predict(tokens[idx], ctx).float()
            constraint[idx] = raw
            reward_constraint[idx] = task.alpha * raw
            if not torch.isfinite(raw).all():
                from kcrl.errors import NonFiniteError

                raise NonFiniteError(
                    f"the constraint {type(task.constraint).__name__} returned a non-finite value "
                    "for a finished sample; rewards must be finite."
                )
        self.tokens, self.lengths = tokens, lengths
        self.done |= finished
        reward = reward_base + reward_constraint
        info = {
            "constraint": constraint,
            "_constraint": finished.clone(),
            "reward_constraint": reward_constraint,
            "reward_base": reward_base,
        }
        return TensorStep(self._autoreset(info, resetting, finished), reward, terminated, truncated, info)

    def _check_actions(self, actions: Any) -> torch.Tensor:
        return integer_actions(actions, (self.num_envs,), self.task.vocab_size, self.device)

    def set_reference(self, reference) -> None:
        """Use ``reference(tokens, lengths, context) -> (N, V)`` log-probs instead of the task's base
        model in the per-step ``reward_base`` term (e.g. a frozen copy of the policy: a KL trust
        region); ``None`` restores the base model."""
        self.reference = reference



def _to_numpy(value):
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


class GenerationEnv(gym.Env):
    """The single-environment view of :class:`BatchedGenerationEnv` (a batch of one).

    Stepping a finished episode raises ``gymnasium.error.ResetNeeded``; call ``reset``.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, task: SequenceTask, kl_to_base: bool = True, render_mode: str | None = None) -> None:
        self._batched = BatchedGenerationEnv(
            task, num_envs=1, device="cpu", kl_to_base=kl_to_base, autoreset_mode=AutoresetMode.DISABLED
        )
        self.task = task
        self.observation_space = self._batched.single_observation_space
        self.action_space = self._batched.single_action_space
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            seed = check_seed(seed)  # the same seeds as the batched env
        super().reset(seed=seed)
        if seed is None and not self._batched._started:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        obs = self._batched.reset_tensor(seed=seed)
        return _unbatch(obs), {}

    def step(self, action):
        if self._batched.done[0]:
            raise gym.error.ResetNeeded("the episode is over; call reset() before step().")
        array = np.asarray(action)
        if array.shape not in ((), (1,)):
            raise InvalidActionError(f"expected one token id (a scalar); got shape {array.shape}.")
        out = self._batched.step_tensor(array.reshape(1))  # checked there (range, dtype, NaN)
        info = {"reward_base": float(out.info["reward_base"][0])}
        if bool(out.info["_constraint"][0]):
            info["constraint"] = float(out.info["constraint"][0])
            info["reward_constraint"] = float(out.info["reward_constraint"][0])
        return (
            _unbatch(out.obs),
            float(out.reward[0]),
            bool(out.terminated[0]),
            bool(out.truncated[0]),
            info,
        )

    def set_constraint(self, constraint) -> None:
        self._batched.set_constraint(constraint)

    def render(self):
        if self.render_mode == "ansi":
            n = int(self._batched.lengths[0])
            return " ".join(str(t) for t in self._batched.tokens[0, :n].tolist())
        return None


def _unbatch(obs: dict[str, torch.Tensor]) -> dict[str, np.ndarray | int]:
    out = {k: v[0].cpu().numpy() for k, v in obs.items()}
    out["length"] = int(out["length"])
    return out
