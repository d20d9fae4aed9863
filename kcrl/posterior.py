"""The posterior q(x) ∝ p_theta(x) exp(alpha f(x)) and its importance weights.

This module is the "q" row of the PR <-> RL <-> IRL table (docs/design.md §1):

=============  =====================================  =======================================
PR             entropy-regularised RL                 MaxEnt IRL
=============  =====================================  =======================================
q, Eq. 3       the soft-optimal ("new") policy        the policy q_phi of the learned reward
Z              exp(soft value of the start state)     the partition function of q_phi
=============  =====================================  =======================================

Samples come from a proposal (usually p_theta itself); q is reached by self-normalised
importance sampling (SNIS) with weights ``w_i = softmax_i(alpha f(x_i) + log p(x_i) - log r(x_i))``
where r is the proposal. When r = p_theta the density of p_theta is not needed:
``w_i = softmax_i(alpha f(x_i))`` (Hu et al. 2018, Sec. 4.1). Everything is in log space.

On a finite sample space, :class:`ExactPosterior` enumerates q and Z exactly; tests check every
estimator here against it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from kcrl.errors import NonFiniteError, ShapeError, check_alpha


class LowESSWarning(UserWarning):
    """The effective sample size of the importance weights fell below a threshold."""


def log_importance_weights(
    scores: torch.Tensor,
    alpha: float,
    log_ratio: torch.Tensor | None = None,
    dim: int = -1,
) -> torch.Tensor:
    """Self-normalised log importance weights of samples towards q ∝ p exp(alpha f).

    Args:
        scores: constraint values f(x_i), shape ``(..., K)`` (K samples along ``dim``).
        alpha: weight of the constraint, > 0.
        log_ratio: optional ``log p(x_i) - log r(x_i)`` when the proposal r is not p itself.
        dim: the sample dimension; weights sum to one along it (e.g. per template).

    Returns:
        ``log w``, same shape as ``scores``; ``logsumexp(log w, dim) == 0``.
    """
    check_alpha(alpha)
    if scores.numel() == 0:
        raise ShapeError("log_importance_weights needs at least one sample; got an empty tensor.")
    if not torch.isfinite(scores).all():
        raise NonFiniteError(
            "constraint scores contain NaN or inf; importance weights would be undefined. "
            "Check the constraint's output (e.g. clamp it or fix its inputs)."
        )
    logits = alpha * scores
    if log_ratio is not None:
        logits = logits + log_ratio
    return torch.log_softmax(logits, dim=dim)


def effective_sample_size(log_weights: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Kish's effective sample size ``1 / sum_i w_i^2`` of normalised weights, in log space."""
    return torch.exp(-torch.logsumexp(2.0 * log_weights, dim=dim))


def log_partition_estimate(
    scores: torch.Tensor, alpha: float, log_ratio: torch.Tensor | None = None, dim: int = -1
) -> torch.Tensor:
    """Unbiased-in-Z estimate of ``log Z = log E_p[exp(alpha f)]`` from proposal samples.

    ``log Z ≈ logsumexp_i(alpha f_i + log p_i - log r_i) - log K``.
    """
    check_alpha(alpha)
    logits = alpha * scores if log_ratio is None else alpha * scores + log_ratio
    return torch.logsumexp(logits, dim=dim) - math.log(scores.shape[dim])


def weighted_mean(values: torch.Tensor, log_weights: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """SNIS estimate of E_q[values] = sum_i w_i values_i."""
    return (torch.exp(log_weights) * values).sum(dim=dim)


def weighted_mean_stderr(
    values: torch.Tensor, log_weights: torch.Tensor, dim: int = -1
) -> torch.Tensor:
    """Delta-method standard error of the SNIS mean: sqrt(sum_i w_i^2 (v_i - mean)^2)."""
    mean = weighted_mean(values, log_weights, dim=dim).unsqueeze(dim)
    return torch.sqrt((torch.exp(2.0 * log_weights) * (values - mean) ** 2).sum(dim=dim))


@dataclass
class ImportanceWeights:
    """Importance weights of K proposal samples towards q, with their diagnostics.

    Attributes:
        log_weights: normalised log weights, shape ``(..., K)``.
        log_z: estimate of ``log Z`` relative to p, shape ``(...)``.
        ess: effective sample size, shape ``(...)``; between 1 and K.
    """

    log_weights: torch.Tensor
    log_z: torch.Tensor
    ess: torch.Tensor

    @classmethod
    def from_scores(
        cls,
        scores: torch.Tensor,
        alpha: float,
        log_ratio: torch.Tensor | None = None,
        warn_below: float | None = None,
    ) -> "ImportanceWeights":
        """Weights along the last dimension; warns when ESS/K falls below ``warn_below``."""
        log_w = log_importance_weights(scores, alpha, log_ratio)
        weights = cls(
            log_weights=log_w,
            log_z=log_partition_estimate(scores, alpha, log_ratio),
            ess=effective_sample_size(log_w),
        )
        if warn_below is not None and weights.ess_fraction.min().item() < warn_below:
            warnings.warn(
                f"importance weights degenerate: ESS/K = {weights.ess_fraction.min().item():.3f} "
                f"< {warn_below}. Lower alpha, rescale the constraint or draw more samples.",
                LowESSWarning,
                stacklevel=2,
            )
        return weights

    @property
    def weights(self) -> torch.Tensor:
        return torch.exp(self.log_weights)

    @property
    def ess_fraction(self) -> torch.Tensor:
        return self.ess / self.log_weights.shape[-1]

    def expectation(self, values: torch.Tensor) -> torch.Tensor:
        """E_q[values] estimated along the sample dimension."""
        return weighted_mean(values, self.log_weights)

    def stderr(self, values: torch.Tensor) -> torch.Tensor:
        return weighted_mean_stderr(values, self.log_weights)


class ExactPosterior:
    """q ∝ p exp(alpha f) on an enumerated, finite sample space.

    Args:
        log_p: log p(x) for every x in the space, shape ``(M,)`` (normalised).
        scores: f(x) for every x, shape ``(M,)``.
        alpha: constraint weight, > 0.

    Example:
        >>> import torch
        >>> q = ExactPosterior(torch.log(torch.tensor([0.5, 0.5])), torch.tensor([0.0, 1.0]), 1.0)
        >>> round(float(q.log_z), 4)  # log((1 + e) / 2)
        0.6201
    """

    def __init__(self, log_p: torch.Tensor, scores: torch.Tensor, alpha: float) -> None:
        alpha = check_alpha(alpha)
        if log_p.shape != scores.shape or log_p.dim() != 1:
            raise ShapeError(
                f"log_p and scores must both have shape (M,); got {tuple(log_p.shape)} "
                f"and {tuple(scores.shape)}."
            )
        logits = log_p + alpha * scores
        self.log_z = torch.logsumexp(logits, dim=0)
        self.log_q = logits - self.log_z
        self.log_p = log_p
        self.alpha = alpha

    @property
    def q(self) -> torch.Tensor:
        return torch.exp(self.log_q)

    def expectation(self, values: torch.Tensor) -> torch.Tensor:
        """E_q[values] exactly; ``values`` has shape ``(M, ...)``."""
        q = self.q.reshape(-1, *([1] * (values.dim() - 1)))
        return (q * values).sum(dim=0)


def kl_divergence(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) = sum_x a(x) (log a(x) - log b(x)) for normalised log-probabilities.

    Terms with a(x) = 0 contribute zero (also where b(x) = 0).
    """
    a = torch.exp(log_a)
    diff = torch.where(a > 0, log_a - log_b, torch.zeros_like(log_a))
    return (a * diff).sum()
