"""Agents as the generator step of Algorithm 1 (:class:`kcrl.trainer.PRTrainer`).

* :class:`PolicyGenerator` shows a policy (kcrl's agent via :meth:`PolicyGenerator.from_agent`, an
  SB3 model via :meth:`PolicyGenerator.from_sb3`, a Tianshou policy via
  :meth:`PolicyGenerator.from_tianshou`) to the trainer as a generator p_theta (``sample`` by
  rollouts in the batched env, ``log_prob`` by scoring every prefix).
* :class:`AgentStep` (kcrl's agent), :class:`SB3Step` (any SB3 on-policy algorithm) and
  :class:`TianshouStep` (Tianshou's PPO) are the generator update: policy-gradient updates in the env whose
  reward is the *current* constraint, ``alpha f_phi(x)``, plus the per-step KL term to a frozen
  copy of the policy taken at the start of the iteration. Its optimum is
  ``q ∝ pi_old exp(alpha f_phi)`` — the E-step posterior of Eq. 3 — so the agent step moves
  p_theta towards q as Eq. 10 / Eq. 12 do, and Eq. 8's importance weights ``softmax(alpha f)`` over
  the policy's own samples stay consistent.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from gymnasium.vector import AutoresetMode
from torch import nn

from kcrl.agents.adapter_common import as_batched_env
from kcrl.agents.soft_pg import SoftPGAgent
from kcrl.agents.tianshou import tianshou_logits_fn
from kcrl.checkpoint import CheckpointError
from kcrl.envs.generation import BatchedGenerationEnv
from kcrl.errors import ConfigError, require_optional

STEP_FORMAT = "kcrl.AgentStep/1"  # the "format" tag of AgentStep.state_dict()
LogitsFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]  # observation tensors -> (N, V) logits


class PolicyGenerator(nn.Module):
    """A token policy as an explicit-density generator for :class:`~kcrl.trainer.PRTrainer`.

    ``sample`` rolls the policy out in a batched env (autoreset disabled) and returns token
    sequences padded with the env's ``pad_id`` after the episode ends; ``log_prob`` sums
    ``log pi(x_t | x_<t, context)`` over the written tokens.

    Args:
        logits_of: ``policy -> (obs -> (N, V) logits)``, where ``obs`` holds the env's observation
            tensors (a factory, so that a deep copy of the generator scores with its own copy).
        env: the batched env whose observations the policy reads.
        policy: the module holding the policy's parameters (what the trainer optimises).
    """

    def __init__(self, logits_of: Callable[[nn.Module], LogitsFn], env: BatchedGenerationEnv, policy: nn.Module) -> None:
        super().__init__()
        self.logits_of, self.env, self.policy = logits_of, env, policy

    def logits_fn(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.logits_of(self.policy)(obs)

    @classmethod
    def from_agent(cls, agent: SoftPGAgent) -> "PolicyGenerator":
        return cls(_module_logits, agent.env, agent.policy)

    @classmethod
    def from_sb3(cls, model) -> "PolicyGenerator":
        """An SB3 model trained on a :class:`~kcrl.agents.sb3.SB3VecEnv` (or a VecEnv wrapper of one)."""
        venv = sb3_kcrl_env(model)
        env = as_batched_env(venv.env, AutoresetMode.DISABLED, "PolicyGenerator")
        return cls(sb3_logits_fn, env, model.policy)

    @classmethod
    def from_tianshou(cls, policy_or_algorithm, env) -> "PolicyGenerator":
        """A Tianshou ``DiscreteActorPolicy`` (or an algorithm holding one as ``.policy``, e.g. ``PPO``)
        whose ``actor`` is a ``DiscreteActor`` with logits output, acting in ``env``: a
        :class:`~kcrl.agents.tianshou.TianshouVectorEnv` or the kcrl batched env under it."""
        return cls(tianshou_logits_fn, as_batched_env(tianshou_kcrl_env(env), AutoresetMode.DISABLED, "PolicyGenerator"),
                   tianshou_policy(policy_or_algorithm).actor)

    @property
    def pad_id(self) -> int:
        return self.env.task.pad_id

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, context: torch.Tensor | None = None):
        env, t_max = self.env, self.env.task.max_length
        xs, log_ps = [], []
        for start in range(0, n, env.num_envs):
            obs = env.reset_tensor()
            if context is not None:
                chunk = context[start : start + env.num_envs]
                if len(chunk) < env.num_envs:  # pad the last chunk; extra rows are dropped below
                    chunk = torch.cat([chunk, chunk[-1:].expand(env.num_envs - len(chunk), *chunk.shape[1:])])
                env.context = chunk.to(env.device).clone()
                obs = env.obs_tensor()
            log_p = torch.zeros(env.num_envs, device=env.device)
            for _ in range(t_max):
                alive = ~env.done
                log_pi = torch.log_softmax(self.logits_fn(obs), -1)
                action = torch.multinomial(log_pi.exp(), 1, generator=generator).squeeze(-1)
                log_p += torch.where(alive, log_pi.gather(-1, action[:, None]).squeeze(-1), 0.0)
                obs = env.step_tensor(action).obs
                if env.done.all():
                    break
            xs.append(torch.where(torch.arange(t_max, device=env.device) < env.lengths[:, None], env.tokens, self.pad_id))
            log_ps.append(log_p)
        return torch.cat(xs)[:n], torch.cat(log_ps)[:n]

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``log pi(x | context)``, shape ``(N,)``, differentiable."""
        n, t_max = x.shape
        written = x != self.pad_id  # (N, T)
        total = torch.zeros(n, device=x.device)
        positions = torch.arange(t_max, device=x.device)
        for t in range(t_max):
            tokens = torch.where(positions < t, x, torch.full_like(x, self.pad_id))
            obs = {"tokens": tokens, "length": torch.full((n,), t, dtype=torch.long, device=x.device)}
            if context is not None:
                obs["context"] = context
            log_pi = torch.log_softmax(self.logits_fn(obs).float(), -1)  # (N, V)
            safe = x[:, t].clamp(max=log_pi.shape[-1] - 1)
            total = total + torch.where(written[:, t], log_pi.gather(-1, safe[:, None]).squeeze(-1), 0.0)
        return total


def frozen_reference(logits_fn_of: Callable[[nn.Module], LogitsFn], module: nn.Module,
                     clone: Callable[[nn.Module], nn.Module] = copy.deepcopy):
    """``(tokens, lengths, context) -> log pi_old(.|s)`` of a frozen copy of ``module`` (the KL term)."""
    frozen = clone(module).requires_grad_(False)
    logits_fn = logits_fn_of(frozen)

    def reference(tokens, lengths, context):
        obs = {"tokens": tokens, "length": lengths}
        if context is not None:
            obs["context"] = context
        return torch.log_softmax(logits_fn(obs).float(), -1)

    return reference


class AgentStep:
    """Generator step of Algorithm 1 by kcrl's agent: ``updates`` PG updates per iteration.

    The agent's env must be built with ``kl_to_base=True`` (the per-step term becomes the KL to
    the frozen policy copy) and ``autoreset_mode="Disabled"``.

    Checkpointable (:class:`kcrl.trainer.GeneratorStep`): :meth:`state_dict` holds the agent's
    whole state (:meth:`SoftPGAgent.state_dict`: policy, optimiser, sampling stream, update
    counter, the env's reset stream), so :class:`~kcrl.trainer.PRTrainer` resumes it exactly.
    """

    def __init__(self, agent: SoftPGAgent, updates: int = 1) -> None:
        if not isinstance(updates, int) or updates < 1:
            raise ConfigError(f"updates must be a positive integer (PG updates per Algorithm 1 iteration); got {updates!r}.")
        self.agent, self.updates = agent, updates
        self._checked = False

    def _check(self, trainer) -> None:
        """The agent's reward and schedule must agree with the trainer's (checked at the first call)."""
        args, cfg, task = self.agent.args, trainer.config, self.agent.env.task
        if task.alpha != cfg.alpha:
            raise ConfigError(
                f"the agent's env rewards alpha * f with alpha={task.alpha}, but the trainer's importance weights "
                f"use alpha={cfg.alpha}; q = p exp(alpha f) / Z must be the same in both. Build the env with "
                f"alpha={cfg.alpha} or set PRConfig(alpha={task.alpha})."
            )
        needed = (cfg.iterations - trainer.iteration) * self.updates + self.agent.iteration
        if args.lr_decay and args.iterations < needed:
            raise ConfigError(
                f"the agent anneals its learning rate to 0 over SoftPGArgs.iterations={args.iterations} updates, but "
                f"{cfg.iterations} trainer iterations x {self.updates} updates need {needed}; set "
                f"SoftPGArgs(iterations={needed}) or lr_decay=False."
            )
        self._checked = True

    def __call__(self, trainer) -> dict[str, float]:
        if not self._checked:
            self._check(trainer)
        env = self.agent.env
        env.set_constraint(trainer.constraint)
        env.set_reference(frozen_reference(_module_logits, self.agent.policy))
        try:
            stats = [self.agent.update(self.agent.rollout()) for _ in range(self.updates)]
        finally:
            env.set_reference(None)
        return {"agent_soft_return": stats[-1]["soft_return"]}

    def state_dict(self) -> dict[str, Any]:
        """The agent's state (see :meth:`SoftPGAgent.state_dict`) and ``updates``; ``weights_only``-safe."""
        return {"format": STEP_FORMAT, "updates": self.updates, "agent": self.agent.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != STEP_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"the checkpoint's generator step is not an AgentStep (format {found!r}).")
        if state["updates"] != self.updates:
            raise CheckpointError(
                f"the checkpoint's AgentStep made {state['updates']} PG updates per iteration; this one makes "
                f"{self.updates}. Resume with updates={state['updates']}, or start a new run in another folder."
            )
        self.agent.load_state_dict(state["agent"])


def sb3_kcrl_env(model):
    """The :class:`~kcrl.agents.sb3.SB3VecEnv` under an SB3 model's (possibly wrapped) env."""
    from kcrl.agents.sb3 import SB3VecEnv

    venv = model.get_env()
    while not isinstance(venv, SB3VecEnv) and hasattr(venv, "venv"):
        venv = venv.venv
    if not isinstance(venv, SB3VecEnv):
        raise ConfigError(f"the SB3 model must be trained on a kcrl SB3VecEnv; its env is {type(venv).__name__}.")
    return venv


def _module_logits(policy: nn.Module) -> LogitsFn:
    return policy  # kcrl's TokenPolicy maps observation tensors to logits


def sb3_logits_fn(policy: nn.Module) -> LogitsFn:
    """Logits of an SB3 actor-critic policy for kcrl observation tensors (ids as SB3VecEnv shows them).

    Computed from the policy's parts (features, actor latent, action head) so that no distribution
    object holding graph tensors is left on the policy.
    """

    from stable_baselines3.common.preprocessing import preprocess_obs

    def logits(obs: dict[str, torch.Tensor]) -> torch.Tensor:
        sb3_obs = {k: v.to(policy.device) for k, v in obs.items()}
        sb3_obs["length"] = sb3_obs["length"].reshape(-1, 1)
        # the actor's own extractor, shared with the critic or not (SB3's share_features_extractor)
        features = policy.pi_features_extractor(preprocess_obs(sb3_obs, policy.observation_space, policy.normalize_images))
        return policy.action_net(policy.mlp_extractor.forward_actor(features))

    return logits


class SB3Step:
    """Generator step of Algorithm 1 by an SB3 on-policy model (PPO, A2C): ``timesteps`` of ``learn``
    in the env whose reward is the current constraint plus the KL term to the frozen policy.

    Not checkpointable: an SB3 model carries state across ``learn`` calls that no checkpoint of
    kcrl's restores exactly (its rollout's last observations and the episodes in flight in the env,
    the global NumPy stream its minibatches are drawn from, the progress its schedules read), so
    it has no ``state_dict``, and :meth:`kcrl.trainer.PRTrainer.train` refuses resumable
    checkpoints with it (a ``ConfigError``) rather than resume inexactly.
    """

    def __init__(self, model, timesteps: int) -> None:
        self.model, self.timesteps = model, timesteps

    def __call__(self, trainer) -> dict[str, float]:
        venv = sb3_kcrl_env(self.model)
        venv.set_constraint(trainer.constraint)
        venv.env.set_reference(frozen_reference(sb3_logits_fn, self.model.policy, clone=_clone_sb3_policy))
        try:
            self.model.learn(self.timesteps, reset_num_timesteps=False, progress_bar=False)
        finally:
            venv.env.set_reference(None)
            # SB3 leaves the last training batch's distribution (graph tensors) on the policy;
            # drop it so that the policy stays deep-copyable (PRTrainer copies its generator).
            self.model.policy.action_dist.distribution = None
        return {}


def _clone_sb3_policy(policy: nn.Module) -> nn.Module:
    """A copy of an SB3 policy rebuilt from its constructor arguments and state dict."""
    clone = type(policy)(**policy._get_constructor_parameters())
    clone.load_state_dict(policy.state_dict())
    return clone.to(policy.device)


def tianshou_policy(policy_or_algorithm):
    """The Tianshou policy (with an ``actor``) of a policy or of an algorithm (``algorithm.policy``)."""
    policy = getattr(policy_or_algorithm, "policy", policy_or_algorithm)
    if not isinstance(getattr(policy, "actor", None), nn.Module):
        raise ConfigError(
            "expected a Tianshou DiscreteActorPolicy (or an algorithm such as PPO holding one as .policy) with an "
            f"actor module; got {type(policy_or_algorithm).__name__}."
        )
    return policy


def tianshou_kcrl_env(env):
    """The kcrl batched env of a :class:`~kcrl.agents.tianshou.TianshouVectorEnv` (or ``env`` itself)."""
    if isinstance(env, BatchedGenerationEnv):
        return env
    from kcrl.agents.tianshou import TianshouVectorEnv  # needs tianshou (MissingDependencyError otherwise)

    if not isinstance(env, TianshouVectorEnv):
        raise ConfigError(f"expected a kcrl TianshouVectorEnv or BatchedGenerationEnv; got {type(env).__name__}.")
    return env.env


class TianshouStep:
    """Generator step of Algorithm 1 by Tianshou's PPO: ``env_steps`` env steps of collect + update
    in the env whose reward is the current constraint plus the KL term to the frozen policy.

    Each call resets a fresh ``Collector`` on ``venv`` (so the episodes the generator's sampling
    left in the shared batched env are not continued), then runs ``env_steps //
    collection_step_num_env_steps`` rounds of ``collect(n_step=collection_step_num_env_steps)``
    and ``algorithm.update(batch_size, repeat)``, and restores the env's reference afterwards.

    Not checkpointable: a Tianshou run draws actions from torch's global RNG and minibatches from
    NumPy's global stream, and the algorithm keeps state (optimiser, learning-rate schedulers,
    return-scaling statistics) that no checkpoint of kcrl's saves, so it has no ``state_dict``, and
    :meth:`kcrl.trainer.PRTrainer.train` refuses resumable checkpoints with it (a ``ConfigError``)
    rather than resume inexactly.

    Args:
        algorithm: a Tianshou on-policy algorithm (``PPO``) whose ``policy`` is a
            ``DiscreteActorPolicy`` on a ``DiscreteActor`` with logits output.
        venv: the :class:`~kcrl.agents.tianshou.TianshouVectorEnv` it trains in.
        env_steps: env steps (tokens, over all sub-envs) per Algorithm 1 iteration.
        collection_step_num_env_steps: env steps per collect + update round (``None``: ``env_steps``);
            a multiple of the number of sub-envs that divides ``env_steps``.
        batch_size: minibatch size of ``algorithm.update``.
        repeat: passes over each round's buffer.
    """

    def __init__(self, algorithm, venv, env_steps: int, collection_step_num_env_steps: int | None = None,
                 batch_size: int = 256, repeat: int = 4) -> None:
        require_optional("tianshou", "tianshou")
        per_round = env_steps if collection_step_num_env_steps is None else collection_step_num_env_steps
        n = tianshou_kcrl_env(venv).num_envs
        if not isinstance(env_steps, int) or env_steps < 1 or not isinstance(per_round, int) or per_round < 1:
            raise ConfigError(
                "env_steps and collection_step_num_env_steps must be positive integers; "
                f"got {env_steps!r}, {per_round!r}."
            )
        if per_round % n or env_steps % per_round:
            raise ConfigError(
                f"collection_step_num_env_steps ({per_round}) must be a multiple of the {n} sub-envs (every collection "
                f"step advances all of them) and divide env_steps ({env_steps})."
            )
        self.algorithm, self.venv, self.env_steps = algorithm, venv, env_steps
        self.per_round, self.batch_size, self.repeat = per_round, batch_size, repeat
        self.policy = tianshou_policy(algorithm)

    def __call__(self, trainer) -> dict[str, float]:
        from tianshou.data import Collector, VectorReplayBuffer
        from tianshou.utils.torch_utils import policy_within_training_step

        env = tianshou_kcrl_env(self.venv)
        self.venv.set_constraint(trainer.constraint)
        env.set_reference(frozen_reference(tianshou_logits_fn, self.policy.actor))
        try:
            collector = Collector(self.policy, self.venv, VectorReplayBuffer(self.per_round, len(self.venv)))
            collector.reset()
            for _ in range(self.env_steps // self.per_round):
                with policy_within_training_step(self.policy):
                    collector.collect(n_step=self.per_round)
                    self.algorithm.update(buffer=collector.buffer, batch_size=self.batch_size, repeat=self.repeat)
                    collector.reset_buffer(keep_statistics=True)
        finally:
            env.set_reference(None)
        return {}
