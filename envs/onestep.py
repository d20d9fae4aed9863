"""One-step generation as a Gymnasium MDP: the whole sample is ONE action. Single and batched.

The counterpart of :mod:`kcrl.envs.generation` for tasks whose sample is not written token by
token: a 2-D point, an image, or a whole token sequence chosen at once. An episode is

    reset -> observe the context c (a condition; constant when the task has none)
    step(x) -> reward alpha * f_phi(x, c), terminated=True

so the soft (max-entropy) optimal policy relative to a reference p_theta is the PR posterior
q(x|c) ∝ p_theta(x|c) exp(alpha f_phi(x, c)) (Hu et al. 2018, Eq. 3). There is no per-step base
reward: one-step generators are typically implicit (x = G(z)), trained by Eq. 12.

:class:`BatchedOneStepEnv` is the one implementation: N episodes as tensor operations on
``device``, the constraint evaluated on the whole batch at once. :class:`OneStepEnv` is the
single-environment view of it (a batch of one), so the two can never disagree.

``info`` after a step: ``constraint`` (the raw f_phi(x, c), NaN for sub-envs that did not finish
an episode on this step, with the Gymnasium mask ``_constraint``) and ``reward_constraint``.

Autoreset works exactly as in :class:`~kcrl.envs.generation.BatchedGenerationEnv`:
``NEXT_STEP`` (default; the step after an episode ends resets that sub-env, ignores its action
and returns reward 0 with both flags False, so with one-step episodes every other step is a
reset step), ``DISABLED`` (finished episodes stay finished and pay 0 until ``reset``; what
kcrl's own agents use: reset, step once, repeat) and ``SAME_STEP`` (reset in the same step; the
final observation is in ``info["final_obs"]``). Actions are validated on every step, also
those that a reset step ignores.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from kcrl.constraints import Constraint
from kcrl.envs.actions import box_actions, integer_actions
from kcrl.envs.generation import TensorStep, TensorVectorEnv, check_seed
from kcrl.envs.task import ConstrainedTask
from kcrl.errors import ConfigError, InvalidActionError, NonFiniteError

#: Observation space of tasks without a context: a single constant observation, 0.
NO_CONTEXT_SPACE = spaces.Discrete(1)


class OneStepTask(ConstrainedTask):
    """Abstract world of a one-step generation MDP.

    Subclasses set ``action_space`` (and ``context_space`` when samples are conditional) before
    calling ``super().__init__(constraint, alpha)``, and override :meth:`sample_contexts` when
    they have a context, and :meth:`to` when they hold tensors.

    Attributes:
        action_space: the space of one sample x: ``Box`` (continuous samples, images) or
            ``MultiDiscrete`` (a token sequence written at once).
        context_space: the space of the condition c (``Box`` or ``MultiDiscrete``), or ``None``
            for unconditional tasks (the observation is then the constant ``0`` of
            ``Discrete(1)``).
        constraint: f_phi(x, c), a :class:`~kcrl.constraints.Constraint` (swap it with
            :meth:`set_constraint`).
        alpha: weight of the constraint in the reward ``alpha * f(x, c)``.
    """

    action_space: spaces.Box | spaces.MultiDiscrete
    context_space: spaces.Box | spaces.MultiDiscrete | None = None

    def __init__(self, constraint: Constraint, alpha: float = 1.0) -> None:
        if not isinstance(getattr(self, "action_space", None), (spaces.Box, spaces.MultiDiscrete)):
            raise ConfigError(
                f"{type(self).__name__}.action_space must be a gymnasium Box or MultiDiscrete; got "
                f"{getattr(self, 'action_space', None)!r}. Set it before calling OneStepTask.__init__."
            )
        if self.context_space is not None and not isinstance(self.context_space, (spaces.Box, spaces.MultiDiscrete)):
            raise ConfigError(
                f"{type(self).__name__}.context_space must be a Box, a MultiDiscrete or None; got {self.context_space!r}."
            )
        super().__init__(constraint, alpha)

    def sample_contexts(self, seeds: torch.Tensor, episodes: torch.Tensor) -> torch.Tensor | None:
        """Contexts for each (seed, episode) pair, ``(N, *context_space.shape)``, or ``None``.

        Must be a deterministic function of its inputs (use :mod:`kcrl.rng`), so that a batched
        env seeded s and single envs seeded s, s+1, ... see the same contexts. Float32 for a
        ``Box`` context, int64 for a ``MultiDiscrete`` one, on the task's device.
        """
        return None


class BatchedOneStepEnv(TensorVectorEnv):
    """N one-step generation episodes stepped together as tensor operations on ``device``.

    ## Description
    The generic batched one-step MDP: each sub-env observes a context, takes one whole sample
    as its action and is paid ``alpha * f_phi(x, c)``; the constraint scores all finishing
    sub-envs in one batch. The tensor interface (:meth:`reset_tensor`, :meth:`step_tensor`)
    is for kcrl's own agents; ``reset``/``step`` are the numpy Gymnasium ``VectorEnv`` API on
    top of it. Concrete tasks: ``GaussianRing-v0``, ``StructuredDigits-v0``.

    ## Action Space
    ``batch_space(task.action_space, N)``: ``Box`` or ``MultiDiscrete``, leading dimension N.

    ## Observation Space
    ``batch_space(task.context_space, N)``, or ``MultiDiscrete([1] * N)`` (all zeros) for tasks
    without a context.

    ## Rewards
    ``alpha * f_phi(x, c)`` on the step that ends an episode, 0 on reset steps.
    ``info``: ``constraint`` (raw f, NaN where no episode ended; mask ``_constraint``) and
    ``reward_constraint``.

    ## Starting State
    Sub-env i draws its context from ``(seed + i, episode)`` by ``task.sample_contexts``.

    ## Episode End
    Termination after the one action; no truncation. Autoreset as in the module docstring.

    ## Arguments
    ``task`` (a :class:`OneStepTask`), ``num_envs=1``, ``device="cpu"``,
    ``autoreset_mode="NextStep"`` (or ``"SameStep"``, ``"Disabled"``).

    ## Example
        >>> import torch
        >>> from kcrl.envs.gaussian_ring import GaussianRingTask
        >>> env = BatchedOneStepEnv(GaussianRingTask(alpha=0.5), num_envs=2, autoreset_mode="Disabled")
        >>> obs = env.reset_tensor(seed=0)
        >>> out = env.step_tensor(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
        >>> [round(r, 3) for r in out.reward.tolist()], [round(f, 3) for f in out.info["constraint"].tolist()]
        ([1.953, -5.0], [3.907, -10.0])
        >>> out.terminated.tolist(), out.truncated.tolist()
        ([True, True], [False, False])

    ## Version History
    * v0: initial version.
    """

    def __init__(
        self,
        task: OneStepTask,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        self._setup(task, num_envs, device, autoreset_mode)
        self.single_observation_space = task.context_space if task.context_space is not None else NO_CONTEXT_SPACE
        self.single_action_space = task.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

        n, dev = num_envs, self.device
        space = task.action_space
        self._action_shape = (n, *space.shape)
        if isinstance(space, spaces.Box):
            self._low = torch.as_tensor(space.low, device=dev, dtype=torch.float32)
            self._high = torch.as_tensor(space.high, device=dev, dtype=torch.float32)
        else:
            self._nvec = torch.as_tensor(space.nvec, device=dev, dtype=torch.long)

    # ------------------------------------------------------------------ tensor interface
    def _reset_where(self, mask: torch.Tensor) -> None:
        self.done[mask] = False
        context = self.task.sample_contexts(self.seeds, self.episodes)
        if context is not None:
            if self.context is None:
                self.context = context
            else:
                keep = mask.view(-1, *([1] * (context.dim() - 1)))
                self.context = torch.where(keep, context, self.context)
        self.episodes += mask.long()

    def obs_tensor(self) -> torch.Tensor:
        """The current observations: the contexts, or ``(N,)`` zeros for a context-free task."""
        if self.context is None:
            return torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        return self.context.clone()

    def step_tensor(self, actions: torch.Tensor) -> TensorStep:
        """Take one whole sample per sub-env. ``actions``: ``(N, *action_shape)`` on any device."""
        if not self._started:
            raise gym.error.ResetNeeded("call reset() before step().")
        actions = self.check_actions(actions)
        n, task = self.num_envs, self.task
        resetting = self.done.clone() if self.autoreset_mode == AutoresetMode.NEXT_STEP else None
        finished = ~self.done  # every active episode ends with its one action

        reward = torch.zeros(n, device=self.device)
        constraint = torch.full((n,), float("nan"), device=self.device)
        if finished.any():
            idx = finished.nonzero().squeeze(-1)
            ctx = None if self.context is None else self.context[idx]
            raw = task.constraint.predict(actions[idx], ctx).float()  # f_phi(x, c), one batch
            if not torch.isfinite(raw).all():
                raise NonFiniteError(
                    f"the constraint {type(task.constraint).__name__} returned a non-finite value "
                    "for a sample; rewards must be finite (clip the constraint, e.g. a log density)."
                )
            constraint[idx] = raw
            reward[idx] = task.alpha * raw  # alpha * f_phi(x, c)
        terminated = finished.clone()
        truncated = torch.zeros_like(finished)
        self.done |= finished
        info = {"constraint": constraint, "_constraint": finished.clone(), "reward_constraint": reward.clone()}
        return TensorStep(self._autoreset(info, resetting, finished), reward, terminated, truncated, info)

    def check_actions(self, actions: Any) -> torch.Tensor:
        """Validate a batch of actions and return it as a tensor on ``device``.

        Raises :class:`~kcrl.errors.InvalidActionError` on a wrong shape or dtype, NaN/inf or
        values outside the action space.
        """
        if isinstance(self.task.action_space, spaces.Box):
            return box_actions(actions, self._action_shape, self._low, self._high, self.device)
        return integer_actions(actions, self._action_shape, self._nvec, self.device, what="action ids")


class OneStepEnv(gym.Env):
    """The single-environment view of :class:`BatchedOneStepEnv` (a batch of one, on CPU).

    ## Description
    The generic one-step MDP for one episode at a time; concrete environments
    (:class:`~kcrl.envs.gaussian_ring.GaussianRingEnv`,
    :class:`~kcrl.envs.digits.StructuredDigitsEnv`) subclass it only to document themselves.

    ## Action Space
    ``task.action_space``: one whole sample (``Box`` or ``MultiDiscrete``).

    ## Observation Space
    ``task.context_space``, or ``Discrete(1)`` (always 0) for tasks without a context.

    ## Rewards
    ``alpha * f_phi(x, c)``; ``info`` has ``constraint`` (raw f) and ``reward_constraint``.

    ## Starting State
    A context drawn from ``(seed, episode)``; the same as sub-env 0 of a batched env with
    that seed.

    ## Episode End
    Termination after the one action; no truncation. Stepping a finished episode (undefined
    behaviour in Gymnasium) warns and returns the terminal observation, reward 0 and
    ``terminated=True`` again, as Gymnasium's classic-control environments do; call ``reset``.

    ## Arguments
    ``task`` (a :class:`OneStepTask`), ``render_mode=None`` (no render modes).

    ## Example
        >>> import numpy as np
        >>> from kcrl.envs.gaussian_ring import GaussianRingTask
        >>> env = OneStepEnv(GaussianRingTask())
        >>> env.reset(seed=0)
        (0, {})
        >>> obs, reward, terminated, truncated, info = env.step(np.array([0.0, 2.0], dtype=np.float32))
        >>> round(reward, 3), terminated, truncated  # log(1 / (8 * 2 pi 0.02^2)) at a mode
        (3.907, True, False)

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(self, task: OneStepTask, render_mode: str | None = None) -> None:
        self._batched = BatchedOneStepEnv(task, num_envs=1, device="cpu", autoreset_mode=AutoresetMode.DISABLED)
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
        return self._unbatch(obs), {}

    def step(self, action):
        if isinstance(action, torch.Tensor):
            action = action.detach().cpu().numpy()
        array = np.asarray(action)
        expected = self.action_space.shape
        if array.shape != expected:
            raise InvalidActionError(
                f"expected one sample of shape {expected} (the action space {self.action_space}); "
                f"got shape {array.shape}."
            )
        if self._batched.done[0]:
            # As Gymnasium's classic environments do: warn, and stay in the terminal state with reward 0.
            gym.logger.warn(
                "step() called on a finished episode: a one-step episode ends after its one action. "
                "Call reset() after terminated=True; this step is ignored and pays 0."
            )
            self._batched.check_actions(array[None])
            info = {"constraint": float("nan"), "reward_constraint": 0.0}
            return self._unbatch(self._batched.obs_tensor()), 0.0, True, False, info
        out = self._batched.step_tensor(array[None])
        info = {
            "constraint": float(out.info["constraint"][0]),
            "reward_constraint": float(out.info["reward_constraint"][0]),
        }
        return self._unbatch(out.obs), float(out.reward[0]), bool(out.terminated[0]), bool(out.truncated[0]), info

    def _unbatch(self, obs: torch.Tensor):
        if self.task.context_space is None:
            return 0
        return obs[0].cpu().numpy()

    def set_constraint(self, constraint: Constraint) -> None:
        """Swap the reward's constraint without rebuilding the env."""
        self._batched.set_constraint(constraint)
