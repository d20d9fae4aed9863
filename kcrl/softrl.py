"""The entropy-regularised RL view of the PR E-step (docs/design.md §1, the "RL" column).

An episode writes x = (a_0, ..., a_{T-1}) one token per step. With

* per-step reward ``log p_theta(a_t | s_t)`` (the KL-to-reference term),
* terminal reward ``alpha f(x)`` (the knowledge constraint), and
* the entropy bonus ``-log pi(a_t | s_t)`` (the max-entropy objective),

the expected return is ``E_pi[alpha f(x) + log p_theta(x) - log pi(x)] = log Z - KL(pi || q)``
with ``q ∝ p_theta exp(alpha f)`` — Eq. 3 of Hu et al. (2018). Its unique maximiser is
pi = q, and the soft value of the start state is log Z. :func:`soft_optimal_policy` computes
that optimum exactly by backward recursion on a full prefix tree; agents are tested against it.
"""

from __future__ import annotations

import itertools

import torch

from kcrl.errors import ShapeError, check_alpha


def step_rewards(
    base_step_log_probs: torch.Tensor | None,
    terminal_scores: torch.Tensor,
    alpha: float,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Environment rewards r_t (without the policy's entropy bonus), shape ``(N, T)``.

    Args:
        base_step_log_probs: ``log p_theta(a_t | s_t)``, shape ``(N, T)``, or ``None`` to leave
            out the KL-to-reference term.
        terminal_scores: f(x), shape ``(N,)``; paid at each episode's last valid step.
        alpha: constraint weight, > 0.
        mask: 1 where step t belongs to the episode, shape ``(N, T)``.
    """
    alpha = check_alpha(alpha)
    mask = mask.to(terminal_scores.dtype)
    rewards = torch.zeros_like(mask)
    if base_step_log_probs is not None:
        rewards = rewards + base_step_log_probs * mask
    last = (mask.sum(-1).long() - 1).clamp(min=0)  # (N,)
    rewards[torch.arange(mask.shape[0], device=mask.device), last] += alpha * terminal_scores
    return rewards


def soft_returns(
    rewards: torch.Tensor, policy_step_log_probs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Soft reward-to-go ``G_t = sum_{t' >= t} (r_t' - log pi(a_t' | s_t'))``, shape ``(N, T)``."""
    if rewards.shape != policy_step_log_probs.shape:
        raise ShapeError(
            f"rewards {tuple(rewards.shape)} and policy log-probs "
            f"{tuple(policy_step_log_probs.shape)} must match."
        )
    mask = mask.to(rewards.dtype)
    soft = (rewards - policy_step_log_probs) * mask
    return torch.flip(torch.cumsum(torch.flip(soft, [-1]), -1), [-1]) * mask


def all_sequences(vocab_size: int, length: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Every sequence of ``length`` tokens over ``vocab_size`` ids, lexicographic, ``(V^T, T)``."""
    rows = list(itertools.product(range(vocab_size), repeat=length))
    return torch.tensor(rows, dtype=torch.long, device=device).reshape(len(rows), length)


def prefix_offsets(vocab_size: int, length: int) -> list[int]:
    """Index of the first prefix of each length 0..T in a prefix table (lengths grouped, lexicographic)."""
    offsets, total = [], 0
    for t in range(length + 1):
        offsets.append(total)
        total += vocab_size**t
    return offsets


def prefix_index(tokens: torch.Tensor, lengths: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Row of each prefix ``tokens[:, :lengths]`` in a prefix table, shape ``(N,)``.

    Rows are grouped by prefix length (0, 1, ..., T-1), lexicographic within a length.
    """
    t_max = tokens.shape[1]
    positions = torch.arange(t_max, device=tokens.device)
    digits = torch.where(positions < lengths.unsqueeze(1), tokens.clamp(min=0, max=vocab_size - 1), 0)  # (N, T)
    full = (digits * vocab_size ** (t_max - 1 - positions)).sum(-1)  # the prefix zero-padded to T digits
    code = torch.div(full, vocab_size ** (t_max - lengths), rounding_mode="floor")  # drop the padding digits
    offsets = (vocab_size**lengths - 1) // (vocab_size - 1)  # rows of all shorter prefixes
    return offsets + code


def sequence_log_probs_from_table(table: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
    """log pi(x) = sum_t table[prefix(x_<t), x_t] for full sequences ``(M, T)``; returns ``(M,)``."""
    m, t_max = sequences.shape
    vocab_size = table.shape[1]
    total = torch.zeros(m, dtype=table.dtype, device=table.device)
    for t in range(t_max):
        rows = prefix_index(sequences, torch.full((m,), t, device=sequences.device), vocab_size)
        total = total + table[rows, sequences[:, t]]
    return total


def soft_optimal_policy(
    base_table: torch.Tensor, terminal_scores: torch.Tensor, alpha: float, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact soft-optimal policy q(a | prefix) on a full V-ary prefix tree.

    Soft Bellman backup from the leaves: ``V(x) = alpha f(x)`` for complete x, and
    ``V(s) = log sum_a p_theta(a|s) exp(V(s a))``; then ``q(a|s) = p_theta(a|s) exp(V(s a) - V(s))``.

    Args:
        base_table: ``log p_theta(a | prefix)``, shape ``(n_prefixes, V)`` in :func:`prefix_index` order.
        terminal_scores: f(x) for every complete sequence in :func:`all_sequences` order, ``(V^T,)``.
        alpha: constraint weight, > 0.
        length: T.

    Returns:
        ``(log q(a|prefix) table of shape (n_prefixes, V), log Z)``.
    """
    alpha = check_alpha(alpha)
    vocab_size = base_table.shape[1]
    offsets = prefix_offsets(vocab_size, length)
    if base_table.shape[0] != offsets[length]:
        raise ShapeError(
            f"base_table must have one row per prefix of length < {length}: "
            f"{offsets[length]} rows; got {base_table.shape[0]}."
        )
    q_table = torch.empty_like(base_table)
    values = alpha * terminal_scores.to(base_table.dtype)  # V at level T, (V^T,)
    for t in range(length - 1, -1, -1):
        rows = slice(offsets[t], offsets[t + 1])
        logits = base_table[rows] + values.reshape(vocab_size**t, vocab_size)  # (V^t, V)
        values = torch.logsumexp(logits, dim=-1)  # (V^t,)
        q_table[rows] = logits - values.unsqueeze(-1)
    return q_table, values[0]
