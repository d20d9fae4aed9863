"""Importance weights, ESS and log Z against exact answers on an enumerable world."""

import math

import pytest
import torch

from kcrl.envs.tabular import TabularWorld
from kcrl.errors import ConfigError, NonFiniteError, ShapeError
from kcrl.posterior import (
    ExactPosterior,
    ImportanceWeights,
    LowESSWarning,
    effective_sample_size,
    kl_divergence,
    log_importance_weights,
    log_partition_estimate,
)


@pytest.fixture(scope="module")
def world():
    return TabularWorld(vocab_size=3, length=4, world_seed=2, constraint_scale=0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_snis_expectation_within_its_standard_error(world, seed):
    gen = torch.Generator().manual_seed(seed)
    x, _ = world.base.sample(20_000, gen)
    f = world.true_constraint(x)
    values = (x == 1).float().sum(-1)  # count of token 1
    weights = ImportanceWeights.from_scores(f, alpha=1.0)
    exact = ExactPosterior(world.base_log_probs_all(), world.true_constraint(world.sequences()), 1.0)
    exact_value = exact.expectation((world.sequences() == 1).float().sum(-1))
    estimate, stderr = weights.expectation(values), weights.stderr(values)
    assert abs(estimate - exact_value) < 4 * stderr
    assert 0 < stderr < 0.05


def test_log_z_estimate_matches_exact(world):
    gen = torch.Generator().manual_seed(0)
    x, _ = world.base.sample(50_000, gen)
    estimate = log_partition_estimate(world.true_constraint(x), 1.0)
    exact = ExactPosterior(world.base_log_probs_all(), world.true_constraint(world.sequences()), 1.0).log_z
    assert abs(estimate - exact) < 0.02


def test_exact_mode_with_uniform_proposal_recovers_q(world):
    """Weights with log_ratio = log p - log r over the whole space, r uniform, give q exactly."""
    seqs = world.sequences()
    scores, log_p = world.true_constraint(seqs), world.base_log_probs_all()
    log_r = torch.full_like(log_p, -math.log(len(seqs)))
    log_w = log_importance_weights(scores, 1.0, log_ratio=log_p - log_r)
    torch.testing.assert_close(log_w, ExactPosterior(log_p, scores, 1.0).log_q)


def test_ess_matches_its_formula():
    w = torch.tensor([0.1, 2.0, 0.5, 3.0, 0.0001])
    log_w = torch.log(w / w.sum())
    assert effective_sample_size(log_w).item() == pytest.approx((w.sum() ** 2 / (w**2).sum()).item(), rel=1e-6)


def test_extreme_scores_stay_finite():
    scores = torch.tensor([1e4, 0.0, -1e4, 1e4 - 1])
    weights = ImportanceWeights.from_scores(scores, alpha=1.0)
    assert torch.isfinite(weights.log_weights).sum() >= 2 and torch.isfinite(weights.ess) and torch.isfinite(weights.log_z)
    assert weights.weights.sum().item() == pytest.approx(1.0)
    assert weights.weights[0].item() == pytest.approx(1 / (1 + math.exp(-1)), rel=1e-5)
    assert weights.log_z.item() == pytest.approx(1e4 + math.log(1 + math.exp(-1)) - math.log(4), rel=1e-6)
    assert torch.isfinite(weights.expectation(torch.arange(4.0)))


def test_ties_give_uniform_weights_and_full_ess():
    weights = ImportanceWeights.from_scores(torch.full((8,), 3.0), alpha=2.0)
    torch.testing.assert_close(weights.weights, torch.full((8,), 1 / 8))
    assert weights.ess.item() == pytest.approx(8.0)
    assert weights.log_z.item() == pytest.approx(6.0)


def test_single_sample():
    weights = ImportanceWeights.from_scores(torch.tensor([5.0]), alpha=1.0)
    assert weights.weights.item() == 1.0 and weights.ess.item() == 1.0
    assert weights.log_z.item() == pytest.approx(5.0)
    assert weights.stderr(torch.tensor([2.0])).item() == 0.0


def test_grouped_weights_normalise_per_group():
    scores = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    weights = ImportanceWeights.from_scores(scores, alpha=1.5)
    torch.testing.assert_close(weights.weights.sum(-1), torch.ones(4))
    assert weights.ess.shape == (4,)


def test_low_ess_warns():
    with pytest.warns(LowESSWarning, match="ESS/K"):
        ImportanceWeights.from_scores(torch.tensor([0.0, 0.0, 50.0]), alpha=1.0, warn_below=0.5)


def test_bad_inputs_raise_typed_errors():
    with pytest.raises(NonFiniteError, match="NaN or inf"):
        log_importance_weights(torch.tensor([0.0, float("nan")]), 1.0)
    with pytest.raises(ConfigError, match="alpha must be a positive"):
        log_importance_weights(torch.zeros(3), 0.0)
    with pytest.raises(ShapeError, match="at least one sample"):
        log_importance_weights(torch.zeros(0), 1.0)
    with pytest.raises(ShapeError, match="shape"):
        ExactPosterior(torch.zeros(3), torch.zeros(4), 1.0)


def test_kl_divergence_exact():
    a = torch.log(torch.tensor([0.5, 0.5, 0.0]))
    b = torch.log(torch.tensor([0.25, 0.25, 0.5]))
    assert kl_divergence(a, b).item() == pytest.approx(math.log(2))
    assert kl_divergence(a, a).item() == 0.0
