"""The losses of Hu et al. (2018), each a surrogate whose autograd gradient is the paper's.

=========  ==========================================  ====================================
equation   what it updates                              surrogate here
=========  ==========================================  ====================================
Eq. 8      the constraint f_phi (MaxEnt IRL)            :func:`constraint_loss`
Eq. 10     an explicit-density generator p_theta        :func:`weighted_mle_loss`
Eq. 12     an implicit generator (score function)       :func:`score_function_loss`
Eq. 12     an implicit generator (reparameterised)      :func:`reparameterised_loss`
=========  ==========================================  ====================================

All losses are to be *minimised*.
"""

from __future__ import annotations

import torch

from kcrl.errors import NonFiniteError, ShapeError, check_alpha


def _check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(value).all():
        raise NonFiniteError(
            f"{name} is not finite ({value.detach().flatten()[:4].tolist()}...). Training stopped "
            "before writing anything; lower the learning rate or alpha, or inspect the constraint."
        )
    return value


def constraint_loss(
    f_data: torch.Tensor,
    f_samples: torch.Tensor,
    log_weights: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """Eq. 8, MaxEnt IRL: ``-(alpha E_data[f] - alpha E_q[f])`` with E_q by importance weights.

    Its gradient is ``-(alpha E_data[grad f] - alpha sum_i w_i grad f(x_i))``: the weights are held
    constant (detached), so this is exactly the negative of Eq. 8's ascent direction, i.e. the
    gradient of ``-E_data[log q_phi(x)]`` with ``grad log Z = alpha E_q[grad f]`` estimated by
    SNIS. With ``log_weights = log q`` on an enumerated space it is the exact gradient.

    Args:
        f_data: f_phi on data samples, shape ``(B,)``.
        f_samples: f_phi on generator samples, shape ``(..., K)``.
        log_weights: normalised log importance weights of those samples, shape ``(..., K)``
            (e.g. :func:`kcrl.posterior.log_importance_weights`).
        alpha: constraint weight, > 0.
    """
    alpha = check_alpha(alpha)
    if f_samples.shape != log_weights.shape:
        raise ShapeError(
            f"f_samples {tuple(f_samples.shape)} and log_weights {tuple(log_weights.shape)} must match."
        )
    weights = torch.exp(log_weights.detach())
    groups = weights.sum() if weights.dim() > 1 else 1.0  # average over groups of samples
    e_q = (weights * f_samples).sum() / groups
    loss = -alpha * (f_data.mean() - e_q)
    return _check_finite("Eq. 8 constraint loss", loss)


def weighted_mle_loss(
    log_p_samples: torch.Tensor,
    log_weights: torch.Tensor,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 10: ``-sum_i w_i log p_theta(x_i)`` (weights constant) — minimises KL(q || p_theta).

    Args:
        log_p_samples: log p_theta(x_i) with gradient, shape ``(..., K)``.
        log_weights: normalised log weights along the last dimension, shape ``(..., K)``.
        lengths: optional sequence lengths; if given, log p is divided by them (per-token
            normalisation, which counters the length bias of sequence log-likelihoods).
    """
    if log_p_samples.shape != log_weights.shape:
        raise ShapeError(
            f"log_p_samples {tuple(log_p_samples.shape)} and log_weights "
            f"{tuple(log_weights.shape)} must match."
        )
    if lengths is not None:
        log_p_samples = log_p_samples / lengths.clamp(min=1).to(log_p_samples.dtype)
    weights = torch.exp(log_weights.detach())
    groups = weights.sum() if weights.dim() > 1 else 1.0
    loss = -(weights * log_p_samples).sum() / groups
    return _check_finite("Eq. 10 weighted MLE loss", loss)


def score_function_loss(
    log_p_samples: torch.Tensor,
    rewards: torch.Tensor,
    baseline: str | torch.Tensor | None = "leave_one_out",
) -> torch.Tensor:
    """Eq. 12 by the score function: gradient ``-E_p[(R - b) grad log p_theta(x)]``.

    ``R`` is typically ``alpha f_phi(x)``; minimising this ascends E_p[R], i.e. descends
    KL(p_theta || q) up to p_theta's entropy term (add it separately if wanted).

    Args:
        log_p_samples: log p_theta(x_i) with gradient, shape ``(N,)``.
        rewards: R(x_i), no gradient needed, shape ``(N,)``.
        baseline: ``"mean"`` (batch mean), ``"leave_one_out"`` (mean of the others; keeps the
            estimator unbiased), ``None``, or a tensor of per-sample baselines.
    """
    rewards = rewards.detach()
    n = rewards.shape[0]
    if isinstance(baseline, torch.Tensor):
        b = baseline.detach()
    elif baseline == "mean":
        b = rewards.mean()
    elif baseline == "leave_one_out":
        b = (rewards.sum() - rewards) / max(n - 1, 1) if n > 1 else torch.zeros_like(rewards)
    elif baseline is None:
        b = 0.0
    else:
        raise ValueError(f"baseline must be 'mean', 'leave_one_out', None or a tensor; got {baseline!r}.")
    loss = -((rewards - b) * log_p_samples).mean()
    return _check_finite("Eq. 12 score-function loss", loss)


def reparameterised_loss(f_of_samples: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 12 for continuous x = G_theta(z) and differentiable f: ``-alpha E_z[f(G(z))]``."""
    alpha = check_alpha(alpha)
    return _check_finite("Eq. 12 reparameterised loss", -alpha * f_of_samples.mean())
