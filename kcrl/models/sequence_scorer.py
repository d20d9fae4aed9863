"""A learnable sequence scorer with SeqGAN's discriminator shape, as a knowledge constraint.

The network maps token ids ``(N, T)`` to one real score per sequence ``(N,)``. Wrapped in a
:class:`kcrl.constraints.NeuralConstraint` it serves as

* the binary real/fake discriminator baseline (train ``score`` as a logit with
  ``binary_cross_entropy_with_logits``, ``labels_real_is_one``), and
* the learned constraint f_phi of MaxEnt IRL (Eq. 8, :class:`kcrl.agents.maxent_irl.MaxEntIRL`).

Architecture (SeqGAN, Yu et al. AAAI 2017): token embedding; 1-D convolutions of several
widths, each followed by ReLU and max-pooling over time; a highway layer; dropout; a linear
layer to one score. Widths longer than the sequence are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kcrl.constraints import NeuralConstraint
from kcrl.errors import ConfigError, ShapeError

SEQGAN_FILTER_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20)
SEQGAN_NUM_FILTERS = (100, 200, 200, 200, 200, 100, 100, 100, 100, 100, 160, 160)


class CNNSequenceScorer(nn.Module):
    """Convolutional scorer of fixed-length token sequences, ``(N, T)`` -> ``(N,)``.

    Args:
        vocab_size: V.
        length: T; convolutions wider than T are left out.
        embed_dim: token embedding size (SeqGAN: 64).
        filter_sizes: convolution widths (SeqGAN's twelve by default).
        num_filters: channels per width, one entry per width.
        highway: add a highway layer after pooling (as SeqGAN).
        dropout: dropout probability before the output (SeqGAN keeps 0.75, i.e. drops 0.25).
        seed: seed of the initialisation (torch's global RNG is left untouched).

    Example:
        >>> import torch
        >>> net = CNNSequenceScorer(vocab_size=50, length=8, filter_sizes=(2, 3), num_filters=(4, 4))
        >>> net(torch.zeros(5, 8, dtype=torch.long)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        vocab_size: int,
        length: int,
        embed_dim: int = 64,
        filter_sizes: Sequence[int] = SEQGAN_FILTER_SIZES,
        num_filters: Sequence[int] = SEQGAN_NUM_FILTERS,
        highway: bool = True,
        dropout: float = 0.25,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(filter_sizes) != len(num_filters):
            raise ConfigError(
                f"give one channel count per filter width: {len(filter_sizes)} widths but "
                f"{len(num_filters)} counts."
            )
        kept = [(k, c) for k, c in zip(filter_sizes, num_filters) if k <= length]
        if not kept:
            raise ConfigError(
                f"every filter width {tuple(filter_sizes)} exceeds the sequence length {length}; "
                "give at least one width <= length."
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {dropout!r}.")
        self.vocab_size, self.length = vocab_size, length
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embedding = nn.Embedding(vocab_size, embed_dim)
            self.convs = nn.ModuleList(nn.Conv1d(embed_dim, c, k) for k, c in kept)
            width = sum(c for _, c in kept)
            self.highway = nn.Linear(width, 2 * width) if highway else None
            self.dropout = nn.Dropout(dropout)
            self.score = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.length:
            raise ShapeError(f"CNNSequenceScorer expects token ids of shape (N, {self.length}); got {tuple(x.shape)}.")
        e = self.embedding(x).transpose(1, 2)  # (N, E, T)
        h = torch.cat([torch.relu(conv(e)).amax(dim=-1) for conv in self.convs], dim=-1)  # (N, F)
        if self.highway is not None:
            transform, gate = self.highway(h).chunk(2, dim=-1)  # (N, F) each
            gate = torch.sigmoid(gate)
            h = gate * torch.relu(transform) + (1 - gate) * h
        return self.score(self.dropout(h)).squeeze(-1)  # (N,)


def cnn_constraint(vocab_size: int, length: int, **kwargs) -> NeuralConstraint:
    """A learnable constraint f_phi(x) = :class:`CNNSequenceScorer` (no context)."""
    return NeuralConstraint(CNNSequenceScorer(vocab_size, length, **kwargs), uses_context=False)
