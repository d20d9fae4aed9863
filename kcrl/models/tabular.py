"""A tabular autoregressive model: one row of logits per prefix of a V^T world.

The generator p_theta of ``TabularSequence-v0`` (:mod:`kcrl.envs.tabular`): small enough that
``log p(x)`` of every sequence is one table look-up, so estimators can be checked exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from kcrl.softrl import prefix_index, prefix_offsets, sequence_log_probs_from_table


class TabularAutoregressive(nn.Module):
    """An explicit-density autoregressive model with one row of logits per prefix.

    ``p(a | prefix) = softmax(logits[prefix_index(prefix)])``. Fully expressive over V^T
    sequences; trainable (e.g. by Eq. 10).

    Args:
        vocab_size: V.
        length: T.
        init_std: std of the initial logits (0 gives the uniform model).
        generator: RNG for the initial logits.
    """

    def __init__(self, vocab_size: int, length: int, init_std: float = 1.0, generator: torch.Generator | None = None):
        super().__init__()
        self.vocab_size, self.length = vocab_size, length
        n_prefixes = prefix_offsets(vocab_size, length)[length]
        self.logits = nn.Parameter(init_std * torch.randn(n_prefixes, vocab_size, generator=generator))

    def log_prob_table(self) -> torch.Tensor:
        """``log p(a | prefix)`` for every prefix, ``(n_prefixes, V)``."""
        return torch.log_softmax(self.logits, dim=-1)

    def step_log_probs(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``log p(. | tokens[:, :lengths])``, ``(N, V)``."""
        rows = prefix_index(tokens, lengths.clamp(max=self.length - 1), self.vocab_size)
        return torch.log_softmax(self.logits[rows], dim=-1)  # only the rows needed

    def log_prob(self, sequences: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(x)`` of complete sequences ``(N, T)`` -> ``(N,)``, differentiable (no context)."""
        return sequence_log_probs_from_table(self.log_prob_table(), sequences)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n sequences; returns ``(x of shape (n, T), log p(x) of shape (n,))`` (no context)."""
        device = self.logits.device
        tokens = torch.zeros(n, self.length, dtype=torch.long, device=device)
        log_p = torch.zeros(n, device=device)
        table = self.log_prob_table()
        for t in range(self.length):
            rows = prefix_index(tokens, torch.full((n,), t, device=device), self.vocab_size)
            step = table[rows]
            tokens[:, t] = torch.multinomial(step.exp(), 1, generator=generator).squeeze(-1)
            log_p += step.gather(-1, tokens[:, t : t + 1]).squeeze(-1)
        return tokens, log_p
