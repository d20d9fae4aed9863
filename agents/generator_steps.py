"""Agents as the generator step of Algorithm 1 (:class:`kcrl.trainer.PRTrainer`).

* :class:`PolicyGenerator` shows a policy (kcrl's agent via :meth:`PolicyGenerator.from_agent`, an
  SB3 model via :func:`kcrl.agents.sb3.policy_generator`, a Tianshou policy via
  :func:`kcrl.agents.tianshou.policy_generator`) to the trainer as a generator p_theta (``sample`` by
  rollouts in the batched env, ``log_prob`` by scoring every prefix).
* :class:`AgentStep` (kcrl's agent), :class:`kcrl.agents.sb3.SB3Step` (any SB3 on-policy algorithm) and
  :class:`kcrl.agents.tianshou.TianshouStep` (Tianshou's PPO) are the generator update: policy-gradient updates in the env whose
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
from torch import nn

from kcrl.agents.soft_pg import SoftPGAgent
from kcrl.checkpoint import CheckpointError
from kcrl.envs.generation import BatchedGenerationEnv
from kcrl.errors import ConfigError

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


def _module_logits(policy: nn.Module) -> LogitsFn:
    return policy  # kcrl's TokenPolicy maps observation tensors to logits
