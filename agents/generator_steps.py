"""Agents as the generator step of Algorithm 1 (:class:`kcrl.trainer.PRTrainer`).

* :class:`PolicyGenerator` shows a kcrl agent's policy to the trainer as a generator p_theta
  (``sample`` by rollouts in the batched env, ``log_prob`` by scoring every prefix).
* :class:`AgentStep` is the generator update: a few policy-gradient updates in the env whose
  reward is the *current* constraint, ``alpha f_phi(x)``, plus the per-step KL term to a frozen
  copy of the policy taken at the start of the iteration. Its optimum is
  ``q ∝ pi_old exp(alpha f_phi)`` — the E-step posterior of Eq. 3 — so the agent step moves
  p_theta towards q as Eq. 10 / Eq. 12 do, and Eq. 8's importance weights ``softmax(alpha f)`` over
  the policy's own samples stay consistent.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from kcrl.agents.soft_pg import SoftPGAgent


class PolicyGenerator(nn.Module):
    """The policy of a :class:`SoftPGAgent` as an explicit-density generator.

    ``sample`` returns token sequences padded with the env's ``pad_id`` after the episode ends;
    ``log_prob`` sums ``log pi(x_t | x_<t, context)`` over the written tokens.
    """

    def __init__(self, agent: SoftPGAgent) -> None:
        super().__init__()
        self.agent = agent
        self.policy = agent.policy

    @property
    def pad_id(self) -> int:
        return self.agent.env.task.pad_id

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, context: torch.Tensor | None = None):
        env = self.agent.env
        xs, log_ps = [], []
        for start in range(0, n, env.num_envs):
            chunk = None
            if context is not None:
                chunk = context[start : start + env.num_envs]
                if len(chunk) < env.num_envs:  # pad the last chunk; extra rows are dropped below
                    chunk = torch.cat([chunk, chunk[-1:].expand(env.num_envs - len(chunk), *chunk.shape[1:])])
            rollout = self.agent.rollout(context=chunk)
            x = torch.where(rollout.mask.bool(), rollout.actions, torch.full_like(rollout.actions, self.pad_id))
            if x.shape[1] < env.task.max_length:
                x = torch.nn.functional.pad(x, (0, env.task.max_length - x.shape[1]), value=self.pad_id)
            xs.append(x)
            log_ps.append((rollout.log_probs.detach() * rollout.mask).sum(1))
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
            log_pi = torch.log_softmax(self.agent._logits(obs), -1)  # (N, V)
            safe = x[:, t].clamp(max=log_pi.shape[-1] - 1)
            total = total + torch.where(written[:, t], log_pi.gather(-1, safe[:, None]).squeeze(-1), 0.0)
        return total


class AgentStep:
    """Generator step of Algorithm 1 by a kcrl agent: ``updates`` PG updates per iteration.

    The agent's env must be built with ``kl_to_base=True`` (the per-step term becomes the KL to
    the frozen policy copy) and ``autoreset_mode="Disabled"``.
    """

    def __init__(self, agent: SoftPGAgent, updates: int = 1) -> None:
        self.agent, self.updates = agent, updates

    def __call__(self, trainer) -> dict[str, float]:
        env = self.agent.env
        env.set_constraint(trainer.constraint)
        reference = copy.deepcopy(self.agent.policy).requires_grad_(False)

        def reference_log_probs(tokens, lengths, context):
            obs = {"tokens": tokens, "length": lengths}
            if context is not None:
                obs["context"] = context
            return torch.log_softmax(reference(obs), -1)

        env.set_reference(reference_log_probs)
        try:
            stats = [self.agent.update(self.agent.rollout()) for _ in range(self.updates)]
        finally:
            env.set_reference(None)
        return {"agent_soft_return": stats[-1]["soft_return"]}
