"""What a sequence-generation task provides to the environments: the "world".

A :class:`SequenceTask` holds the vocabulary, the lengths, how contexts are drawn, the base
model p_theta (for the optional per-step KL-to-base reward) and the constraint f_phi (the
terminal reward). Environments (:mod:`kcrl.envs.generation`) own only the episode state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from kcrl.constraints import Constraint
from kcrl.errors import ConfigError, check_alpha


class ConstrainedTask:
    """What every task has: a swappable constraint f_phi and its weight alpha.

    Shared by :class:`SequenceTask` (token-by-token MDPs) and
    :class:`kcrl.envs.onestep.OneStepTask` (one action is the whole sample).
    """

    def __init__(self, constraint: Constraint, alpha: float = 1.0) -> None:
        self.alpha = check_alpha(alpha)
        self.set_constraint(constraint)

    def set_constraint(self, constraint: Constraint) -> None:
        """Swap the constraint used as reward (fixed, learned, or being learned)."""
        if not isinstance(constraint, Constraint):
            raise ConfigError(
                f"constraint must be a kcrl.constraints.Constraint; got {type(constraint).__name__}. "
                "Wrap a function with RuleConstraint(fn) or a network with NeuralConstraint(net)."
            )
        self.constraint = constraint

    def to(self, device: torch.device | str) -> "ConstrainedTask":
        """Move the task's tensors (base model, constraint) to ``device``; returns self."""
        self.constraint.to(device)
        return self


class SequenceTask(ConstrainedTask, ABC):
    """Abstract world of a token-by-token generation MDP.

    Attributes:
        vocab_size: number of actions (token ids ``0..V-1``).
        max_length: T, the most tokens an episode writes.
        eos_id: token that ends an episode (termination), or ``None`` for fixed-length tasks,
            whose episodes terminate after exactly T tokens.
        pad_id: id shown in observation slots not yet written.
        obs_vocab: number of distinct ids in an observation's token slots (> every id used).
        context_nvec: sizes of the context's entries (``MultiDiscrete``), or ``None``.
        alpha: weight of the constraint in the terminal reward ``alpha * f(x, context)``.
    """

    vocab_size: int
    max_length: int
    eos_id: int | None = None
    pad_id: int
    obs_vocab: int
    context_nvec: np.ndarray | None = None

    def sample_contexts(self, seeds: torch.Tensor, episodes: torch.Tensor) -> torch.Tensor | None:
        """Contexts for each (seed, episode) pair, ``(N, C)`` long, or ``None`` without context.

        Must be a deterministic function of its inputs (see :mod:`kcrl.rng`).
        """
        return None

    @abstractmethod
    def base_log_probs(
        self, tokens: torch.Tensor, lengths: torch.Tensor, context: torch.Tensor | None
    ) -> torch.Tensor:
        """``log p_theta(. | prefix, context)`` for each prefix, ``(N, V)``."""
