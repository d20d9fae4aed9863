"""kcrl's entropy-regularised policy-gradient agent (batched, device-agnostic).

Reads top to bottom: arguments, the policy network, rollouts, the update, the training loop.
The maths it uses (soft returns, the soft-RL reward) lives in :mod:`kcrl.softrl`.

Objective (max-entropy RL with the env's rewards r_t = log p_theta(a_t|s_t) + [last] alpha f(x)):
``J(pi) = E_pi[sum_t r_t - tau log pi(a_t|s_t)]``; with tau = 1 this is ``log Z - KL(pi || q)``,
maximised by pi = q ∝ p_theta exp(alpha f) (Hu et al. 2018, Eq. 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from torch import nn

from kcrl.envs.generation import BatchedGenerationEnv
from kcrl.progress import progress
from kcrl.errors import ConfigError
from kcrl.softrl import soft_returns

STATE_FORMAT = "kcrl.SoftPGAgent/1"  # the "format" tag of SoftPGAgent.state_dict()


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
    update_epochs: int = 1
    """passes over each rollout; the first uses the log-probabilities kept from sampling, later ones re-score"""
    clip_coef: float | None = None
    """PPO-style ratio clipping (e.g. 0.2) for update_epochs > 1; None: plain policy gradient"""
    amp: bool = False
    """bfloat16 autocast for the policy's forward passes on CUDA (ignored on CPU)"""
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
    observations: list[dict[str, torch.Tensor]] = field(default_factory=list)  # kept only for update_epochs > 1


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
        if self.args.update_epochs < 1:
            raise ConfigError(f"update_epochs must be >= 1; got {self.args.update_epochs}.")
        self.iteration = 0
        self._reset_seed = self.args.seed
        self._autocast = self.args.amp and self.device.type == "cuda"

    def _logits(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
            return self.policy(obs).float()

    def rollout(self, context: torch.Tensor | None = None) -> Rollout:
        """Play one episode in every sub-env, keeping log pi from sampling (no re-scoring).

        ``context`` (``(N, C)``) replaces the contexts the env drew, e.g. to sample for given templates.
        """
        env, t_max = self.env, self.env.task.max_length
        obs = env.reset_tensor(seed=self._reset_seed if self.iteration == 0 else None)
        if context is not None:
            env.context = context.to(self.device).clone()
            obs = env.obs_tensor()
        actions, log_probs, rewards, masks, observations = [], [], [], [], []
        keep_obs = self.args.update_epochs > 1
        constraint = torch.full((env.num_envs,), float("nan"), device=self.device)
        for _ in range(t_max):
            alive = ~env.done
            if keep_obs:
                observations.append(obs)
            log_pi = torch.log_softmax(self._logits(obs), dim=-1)  # (N, V)
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
        return Rollout(stack(actions), stack(log_probs), stack(rewards), stack(masks).float(), constraint, observations)

    def update(self, rollout: Rollout) -> dict[str, float]:
        """Policy-gradient step(s) on a rollout; returns diagnostics.

        Epoch 1 differentiates the log-probabilities kept from sampling (no re-scoring); with
        ``update_epochs > 1`` later epochs re-score the stored observations and use the PPO
        clipped ratio ``min(r A, clip(r, 1-eps, 1+eps) A)`` with ``r = pi / pi_sampling``.
        """
        args = self.args
        returns = soft_returns(rollout.rewards, args.entropy_coef * rollout.log_probs.detach(), rollout.mask)  # (N, T)
        count = rollout.mask.sum(0).clamp(min=1)
        baseline = (returns * rollout.mask).sum(0) / count  # per-step batch mean, (T,)
        advantages = ((returns - baseline) * rollout.mask).detach()
        if args.lr_decay:
            for group in self.optimizer.param_groups:
                group["lr"] = args.lr * max(0.0, 1.0 - self.iteration / args.iterations)
        old_log_probs = rollout.log_probs.detach()
        for epoch in range(args.update_epochs):
            if epoch == 0:
                log_probs = rollout.log_probs
            else:
                log_probs = torch.stack(
                    [torch.log_softmax(self._logits(obs), -1).gather(-1, rollout.actions[:, t, None]).squeeze(-1)
                     for t, obs in enumerate(rollout.observations)], dim=1)
            if args.clip_coef is None:
                surrogate = advantages * log_probs
            else:
                ratio = torch.exp(log_probs - old_log_probs)
                clipped = torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                surrogate = torch.minimum(ratio * advantages, clipped * advantages)
            loss = -(surrogate * rollout.mask).sum(1).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), args.max_grad_norm)
            self.optimizer.step()
        self.iteration += 1
        return {
            "soft_return": returns[:, 0].mean().item(),  # estimates log Z - KL(pi || q)
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

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything the next update depends on, as tensors, numbers and containers (``weights_only``-safe).

        The policy's parameters, the optimiser's moments, the sampling stream, the update counter
        (it drives the learning-rate schedule and whether the next rollout reseeds the env) and the
        env's reset stream (:meth:`~kcrl.envs.generation.TensorVectorEnv.seed_state`). The args,
        the env's task and the reference model are rebuilt from the config, not saved.
        """
        return {
            "format": STATE_FORMAT,
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "iteration": self.iteration,
            "env": self.env.seed_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; the agent then continues exactly where it was saved."""
        from kcrl.checkpoint import CheckpointError

        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"not a SoftPGAgent state (format {found!r}; expected {STATE_FORMAT!r}).")
        try:
            self.policy.load_state_dict(state["policy"])
        except RuntimeError as exc:
            raise CheckpointError(f"the saved agent state does not fit this policy: {exc}") from exc
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.iteration = int(state["iteration"])
        self.env.set_seed_state(state["env"])

    @torch.no_grad()
    def action_log_probs(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``log pi(. | obs)`` for a batch of observations, ``(N, V)``."""
        return torch.log_softmax(self._logits(obs), dim=-1)
