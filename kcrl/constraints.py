"""Knowledge constraints f_phi(x, context) -> one score per sample.

A constraint is, at once (docs/design.md §1, the "f" row):

=====================  ========================  ==================  ==============
PR                     entropy-regularised RL    MaxEnt IRL          energy GAN
=====================  ========================  ==================  ==============
constraint f_phi(x)    reward R (terminal)       learned reward      discriminator
=====================  ========================  ==================  ==============

Sign convention: ``higher_is_satisfied`` — a larger f means the sample follows the knowledge
better. Three tiers, as for reward nets:

* :meth:`Constraint.forward` — differentiable scores, used to *train* a learnable constraint
  (Eq. 8);
* :meth:`Constraint.predict` — no-grad scores in eval mode, used as the raw reward;
* :meth:`Constraint.reward` — ``alpha * predict``, checked to be finite: what an MDP consumes.

Shapes: ``x`` is ``(N, ...)`` (token ids ``(N, T)`` or continuous samples ``(N, D)``); the
optional ``context`` has leading dimension N; the result is ``(N,)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from kcrl.errors import ConfigError, NonFiniteError, ShapeError, check_alpha


class Constraint(nn.Module):
    """Abstract base: subclasses implement :meth:`forward`."""

    higher_is_satisfied = True

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    @property
    def learnable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    @torch.no_grad()
    def predict(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Scores without gradient, in eval mode (dropout etc. off), shape ``(N,)``."""
        was_training = self.training
        self.eval()
        try:
            scores = self(x, context)
        finally:
            self.train(was_training)
        if scores.shape != (x.shape[0],):
            raise ShapeError(
                f"{type(self).__name__} must return one score per sample, shape ({x.shape[0]},); "
                f"got {tuple(scores.shape)}."
            )
        return scores

    def reward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, alpha: float = 1.0
    ) -> torch.Tensor:
        """The processed reward ``alpha * f(x, context)`` that an MDP consumes, shape ``(N,)``."""
        scores = alpha * self.predict(x, context)
        if not torch.isfinite(scores).all():
            bad = int((~torch.isfinite(scores)).sum())
            raise NonFiniteError(
                f"{type(self).__name__} returned {bad} non-finite value(s) out of {scores.numel()}; "
                "a reward must be finite. Check the constraint's inputs and parameters."
            )
        return scores


class RuleConstraint(Constraint):
    """A fixed, hand-written constraint from a function ``fn(x, context) -> (N,)``.

    Example:
        >>> import torch
        >>> even = RuleConstraint(lambda x, c: (x % 2 == 0).float().mean(-1), name="even")
        >>> even.predict(torch.tensor([[0, 2], [1, 2]])).tolist()
        [1.0, 0.5]
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
        name: str = "rule",
    ) -> None:
        super().__init__()
        self.fn = fn
        self.name = name

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(x, context)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def _zero_score(x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    return torch.zeros(x.shape[0], device=x.device)


def zero_constraint() -> RuleConstraint:
    """f = 0 for every sample: uniform importance weights, i.e. the PR term "trains on the model's
    own samples" (the uniform / constant-reward control of the suites). Picklable.

    Example:
        >>> import torch
        >>> zero_constraint().predict(torch.ones(3, 2)).tolist()
        [0.0, 0.0, 0.0]
    """
    return RuleConstraint(_zero_score, name="zero")


class NeuralConstraint(Constraint):
    """A learnable constraint from any ``nn.Module`` mapping ``(x, context)`` to ``(N,)``.

    The network is trained with the Eq. 8 surrogate (:func:`kcrl.losses.constraint_loss`).
    """

    def __init__(self, network: nn.Module, uses_context: bool = True) -> None:
        super().__init__()
        self.network = network
        self.uses_context = uses_context

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.network(x, context) if self.uses_context else self.network(x)


class SumConstraint(Constraint):
    """``f(x) = sum_k weight_k * f_k(x)``: e.g. a fixed rule plus a learned residual.

    Example:
        >>> import torch
        >>> one = RuleConstraint(lambda x, c: torch.ones(x.shape[0]))
        >>> SumConstraint([one, one], weights=[2.0, 0.5]).predict(torch.zeros(3, 1)).tolist()
        [2.5, 2.5, 2.5]
    """

    def __init__(self, terms: Sequence[Constraint], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if len(terms) == 0:
            raise ConfigError("SumConstraint needs at least one term; got none.")
        weights = [1.0] * len(terms) if weights is None else list(weights)
        if len(weights) != len(terms):
            raise ConfigError(
                f"SumConstraint got {len(terms)} terms but {len(weights)} weights; give one weight per term."
            )
        self.terms = nn.ModuleList(terms)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        total = 0.0
        for weight, term in zip(self.weights, self.terms):
            total = total + weight * term(x, context)
        return total


class TokenPotentialConstraint(Constraint):
    """A learnable log-linear constraint over token sequences of fixed length T.

    ``f(x) = sum_t u[t, x_t] + sum_{t<T-1} b[t, x_t, x_{t+1}]``: unary (position, token) and
    pairwise (position, bigram) potentials. Rich enough to express the hidden constraint of
    ``TabularSequence-v0`` exactly, small enough that MaxEnt IRL identifies it from samples.

    Args:
        vocab_size: V, the number of token ids.
        length: T, the sequence length.
        pairwise: include the bigram potentials.
        init_std: standard deviation of the initial potentials (0 starts at f = 0).
        generator: RNG for the initial potentials.
    """

    def __init__(
        self,
        vocab_size: int,
        length: int,
        pairwise: bool = True,
        init_std: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.vocab_size, self.length, self.pairwise = vocab_size, length, pairwise
        self.unary = nn.Parameter(init_std * torch.randn(length, vocab_size, generator=generator))
        n_pairs = max(length - 1, 0) if pairwise else 0
        self.binary = nn.Parameter(
            init_std * torch.randn(n_pairs, vocab_size, vocab_size, generator=generator)
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.length:
            raise ShapeError(
                f"TokenPotentialConstraint expects token ids of shape (N, {self.length}); "
                f"got {tuple(x.shape)}."
            )
        positions = torch.arange(self.length, device=x.device)
        score = self.unary[positions, x].sum(-1)  # (N,)
        if self.pairwise and self.length > 1:
            pair_pos = positions[:-1]
            score = score + self.binary[pair_pos, x[:, :-1], x[:, 1:]].sum(-1)
        return score


def scaled(constraint: Constraint, alpha: float) -> SumConstraint:
    """``alpha * constraint`` as a constraint (e.g. to fold a per-term alpha into a sum)."""
    return SumConstraint([constraint], weights=[check_alpha(alpha)])
