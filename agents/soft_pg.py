"""kcrl's entropy-regularised policy-gradient agent (batched, device-agnostic).

Reads top to bottom: arguments, the policy network, rollouts, the update, the training loop.
The maths it uses (soft returns, the soft-RL reward) lives in :mod:`kcrl.softrl`.

Objective (max-entropy RL with the env's rewards r_t = log p_theta(a_t|s_t) + [last] alpha f(x)):
``J(pi) = E_pi[sum_t r_t - tau log pi(a_t|s_t)]``; with tau = 1 this is ``log Z - KL(pi || q)``,
maximised by pi = q ∝ p_theta exp(alpha f) (Hu et al. 2018, Eq. 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from torch import nn

from kcrl.envs.generation import BatchedGenerationEnv
from kcrl.progress import progress
from kcrl.errors import ConfigError
from kcrl.softrl import soft_returns


@dataclass
class SoftPGArgs:
    """Hyperparameters of :class:`SoftPGAgent`."""

    iterations: int = 500
    """number of updates; each uses one batch of episodes (one per sub-env)"""
    lr: float = 1e-2
    """Adam learning rate"""
    lr_decay: bool = True
    """anneal the learning rate linearly to 0 over ``iterations``"""
    entropy_coef: float = 1.0
    """tau, the weight of -log pi; 1 makes q the optimum"""
    embed_dim: int = 16
    """token embedding size"""
    hidden: int = 128
    """hidden units of the policy MLP"""
    max_grad_norm: float = 1.0
    """gradient-norm clip"""
    seed: int = 0
    """seed of the policy's initialisation and sampling"""


class TokenPolicy(nn.Module):
    """pi(a | tokens, length, context): position-wise embeddings, flattened, then an MLP.

    Shapes: tokens ``(N, T)``, length ``(N,)``, context ``(N, C)`` -> logits ``(N, V)``.
    """

    def __init__(self, observation_space: spaces.Dict, n_actions: int, embed_dim: int = 16, hidden: int = 128):
        super().__init__()
        token_space = observation_space["tokens"]
        self.length = len(token_space.nvec)
        self.token_embed = nn.Embedding(int(token_space.nvec.max()), embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(self.length, embed_dim))
        self.len_embed = nn.Embedding(self.length + 1, embed_dim)
        in_dim = (self.length + 1) * embed_dim
        self.context_embed = None
        if "context" in observation_space.spaces:
            nvec = observation_space["context"].nvec
            self.context_embed = nn.Embedding(int(nvec.max()), embed_dim)
            in_dim += len(nvec) * embed_dim
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, n_actions))

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.token_embed(obs["tokens"]) + self.pos_embed  # (N, T, E)
        parts = [x.flatten(1), self.len_embed(obs["length"])]
        if self.context_embed is not None:
            parts.append(self.context_embed(obs["context"]).flatten(1))
        return self.mlp(torch.cat(parts, dim=-1))  # (N, V)


@dataclass
class Rollout:
    """A batch of finished episodes. Shapes ``(N, T)`` unless stated."""

    actions: torch.Tensor
    log_probs: torch.Tensor  # log pi(a_t|s_t), with gradient, kept from sampling
    rewards: torch.Tensor
    mask: torch.Tensor  # 1 while the episode runs
    constraint: torch.Tensor  # (N,) raw f(x)
    extras: dict = field(default_factory=dict)


class SoftPGAgent:
    """Entropy-regularised REINFORCE with per-step soft returns and a per-step batch baseline.

    Args:
        env: a :class:`BatchedGenerationEnv` built with ``autoreset_mode="Disabled"``; its
            ``num_envs`` is the batch of episodes per update.
        args: :class:`SoftPGArgs`.
    """

    def __init__(self, env: BatchedGenerationEnv, args: SoftPGArgs | None = None) -> None:
        env = getattr(env, "unwrapped", env)
        if not isinstance(env, BatchedGenerationEnv):
            raise ConfigError(
                f"SoftPGAgent needs a kcrl BatchedGenerationEnv (gymnasium.make_vec(..., "
                f"vectorization_mode='vector_entry_point')); got {type(env).__name__}."
            )
        if env.autoreset_mode != AutoresetMode.DISABLED:
            raise ConfigError(
                "SoftPGAgent rolls out whole episodes in lockstep and needs autoreset disabled; "
                f"got autoreset_mode={env.autoreset_mode.value!r}. Build the env with "
                "gymnasium.make_vec(ID, num_envs=N, vectorization_mode='vector_entry_point', autoreset_mode='Disabled')."
            )
        self.env, self.args = env, args or SoftPGArgs()
        self.device = env.device
        torch.manual_seed(self.args.seed)
        self.policy = TokenPolicy(
            env.single_observation_space, env.single_action_space.n, self.args.embed_dim, self.args.hidden
        ).to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.args.lr)
        self.generator = torch.Generator(self.device).manual_seed(self.args.seed)
        self.iteration = 0
        self._reset_seed = self.args.seed

    def rollout(self) -> Rollout:
        """Play one episode in every sub-env, keeping log pi from sampling (no re-scoring)."""
        env, t_max = self.env, self.env.task.max_length
        obs = env.reset_tensor(seed=self._reset_seed if self.iteration == 0 else None)
        actions, log_probs, rewards, masks = [], [], [], []
        constraint = torch.full((env.num_envs,), float("nan"), device=self.device)
        for _ in range(t_max):
            alive = ~env.done
            log_pi = torch.log_softmax(self.policy(obs), dim=-1)  # (N, V)
            action = torch.multinomial(log_pi.exp(), 1, generator=self.generator).squeeze(-1)
            step = env.step_tensor(action)
            actions.append(action)
            log_probs.append(log_pi.gather(-1, action[:, None]).squeeze(-1))
            rewards.append(step.reward)
            masks.append(alive)
            finished = step.info["_constraint"]
            constraint = torch.where(finished, step.info["constraint"], constraint)
            obs = step.obs
            if env.done.all():
                break
        stack = lambda xs: torch.stack(xs, dim=1)  # noqa: E731
        return Rollout(stack(actions), stack(log_probs), stack(rewards), stack(masks).float(), constraint)

    def update(self, rollout: Rollout) -> dict[str, float]:
        """One policy-gradient step on a rollout; returns diagnostics."""
        tau = self.args.entropy_coef
        returns = soft_returns(rollout.rewards, tau * rollout.log_probs.detach(), rollout.mask)  # (N, T)
        count = rollout.mask.sum(0).clamp(min=1)
        baseline = (returns * rollout.mask).sum(0) / count  # per-step batch mean, (T,)
        advantages = (returns - baseline) * rollout.mask
        loss = -(advantages.detach() * rollout.log_probs).sum(1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), self.args.max_grad_norm)
        if self.args.lr_decay:
            for group in self.optimizer.param_groups:
                group["lr"] = self.args.lr * max(0.0, 1.0 - self.iteration / self.args.iterations)
        self.optimizer.step()
        self.iteration += 1
        soft_return = returns[:, 0].mean().item()
        return {
            "soft_return": soft_return,  # estimates log Z - KL(pi || q)
            "constraint": rollout.constraint.nanmean().item(),
            "grad_norm": float(grad_norm),
            "loss": loss.item(),
        }

    def train(self, iterations: int | None = None, show_progress: bool = True) -> list[dict[str, float]]:
        """Run ``iterations`` rollout+update rounds; returns the per-iteration diagnostics."""
        history = []
        bar = progress(range(iterations or self.args.iterations), "soft-PG", enabled=show_progress)
        for _ in bar:
            stats = self.update(self.rollout())
            history.append(stats)
            bar.set_postfix(soft_return=f"{stats['soft_return']:.3f}", refresh=False)
        return history

    @torch.no_grad()
    def action_log_probs(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``log pi(. | obs)`` for a batch of observations, ``(N, V)``."""
        return torch.log_softmax(self.policy(obs), dim=-1)
