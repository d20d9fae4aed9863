"""GaussianRing-v0: exact densities and metrics, the env's reward, and short learning checks."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import kcrl  # noqa: F401  (registers the envs)
from kcrl.models.implicit_generator import (
    ImplicitGenerator,
    ImplicitGeneratorArgs,
    mmd2,
    reparameterised_step,
    train_mmd,
)
from kcrl.agents.maxent_irl import MaxEntIRL, MaxEntIRLArgs
from kcrl.envs.gaussian_ring import (
    GaussianRingTask,
    RingLogDensityConstraint,
    high_quality_share,
    learned_ring_constraint,
    mixture_log_density,
    mode_coverage,
    nearest_mode,
    ring_centres,
)
from kcrl.errors import ConfigError, InvalidActionError, ShapeError
from kcrl.posterior import ImportanceWeights


# ---------------------------------------------------------------------- exact quantities
def test_ring_centres():
    c = ring_centres(4, 2.0)
    np.testing.assert_allclose(c.numpy(), [[2, 0], [0, 2], [-2, 0], [0, -2]], atol=1e-6)
    assert torch.allclose(ring_centres(8, 3.0).norm(dim=-1), torch.full((8,), 3.0))


def test_mixture_log_density_matches_scipy():
    centres, std = ring_centres(8, 2.0), 0.3
    x = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.1, 1.3], [-2.5, 0.4], [0.2, -1.9]], dtype=torch.float64)
    expected = np.log(
        sum(multivariate_normal(mean=m, cov=std**2 * np.eye(2)).pdf(x.numpy()) for m in centres.double().numpy()) / 8
    )
    np.testing.assert_allclose(mixture_log_density(x, centres.double(), std).numpy(), expected, rtol=1e-10)


def test_mixture_log_density_by_hand_at_a_mode_and_far_away():
    centres, std = ring_centres(8, 2.0), 0.02
    at_mode = mixture_log_density(torch.tensor([[2.0, 0.0]]), centres, std).item()
    assert at_mode == pytest.approx(-math.log(8 * 2 * math.pi * std**2), abs=1e-4)  # other modes add ~e^-3000
    origin = mixture_log_density(torch.zeros(1, 2), centres, std).item()  # all 8 modes at distance 2
    assert origin == pytest.approx(-4 / (2 * std**2) - math.log(2 * math.pi * std**2), rel=1e-6)


def test_metrics_on_hand_made_points():
    centres, std = ring_centres(4, 1.0), 0.1  # modes (1,0), (0,1), (-1,0), (0,-1); 3 std = 0.3
    x = torch.tensor(
        [[1.0, 0.0], [1.2, 0.0], [1.29, 0.0], [0.0, 1.1], [0.0, 0.0], [-1.31, 0.0], [0.0, -0.65], [0.5, 0.5]]
    )
    dist, idx = nearest_mode(x, centres)
    assert idx[:4].tolist() == [0, 0, 0, 1]
    assert high_quality_share(x, centres, std) == pytest.approx(4 / 8)  # (-1.31, 0) is 0.31 away: out
    assert mode_coverage(x, centres, std, min_share=0.1) == 2  # mode 0: 3/8, mode 1: 1/8
    assert mode_coverage(x, centres, std, min_share=0.25) == 1
    assert mode_coverage(x, centres, std, min_share=0.5) == 0
    with pytest.raises(ShapeError, match=r"\(N, 2\)"):
        nearest_mode(torch.zeros(3, 3), centres)


def test_data_samples_have_the_stated_metrics():
    task = GaussianRingTask()
    x = task.sample_data(20_000, torch.Generator().manual_seed(0))
    m = task.metrics(x)
    assert m["mode_coverage"] == 8
    assert m["high_quality_share"] == pytest.approx(1 - math.exp(-4.5), abs=0.003)  # P(|N(0, I_2)| <= 3)
    # E log p_data = -H(p_data) = -(log 8 + log(2 pi e std^2)) when modes do not overlap
    assert m["log_likelihood"] == pytest.approx(-(math.log(8) + math.log(2 * math.pi * math.e * 0.02**2)), abs=0.03)


def test_fixed_constraint_is_clipped_log_density():
    task = GaussianRingTask(log_density_floor=-10.0)
    x = torch.tensor([[2.0, 0.0], [0.0, 0.0], [2.05, 0.0]])
    f = task.true_constraint.predict(x)
    exact = task.log_density(x)
    assert f[0] == pytest.approx(exact[0].item()) and f[1] == -10.0
    assert f[2] == pytest.approx(max(exact[2].item(), -10.0))
    unclipped = RingLogDensityConstraint(task.centres, task.std, floor=None).predict(x)
    torch.testing.assert_close(unclipped, exact)
    assert not task.true_constraint.learnable and learned_ring_constraint().learnable


# ---------------------------------------------------------------------- the env
def test_env_reward_is_alpha_times_log_density():
    env = gym.make("GaussianRing-v0", alpha=2.0, std=0.1)
    env.reset(seed=0)
    point = np.array([1.9, 0.1], dtype=np.float32)
    _, reward, terminated, truncated, info = env.step(point)
    task = env.unwrapped.task
    f = task.log_density(torch.from_numpy(point)[None]).item()
    assert info["constraint"] == pytest.approx(f, abs=1e-5)
    assert reward == pytest.approx(2.0 * f, abs=1e-5)
    assert (terminated, truncated) == (True, False)


def test_env_action_space_and_bound_errors():
    env = gym.make("GaussianRing-v0")
    assert env.action_space == gym.spaces.Box(-3.0, 3.0, (2,), np.float32)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="bounds"):
        env.unwrapped.step(np.array([3.5, 0.0], dtype=np.float32))
    with pytest.raises(ConfigError, match="std > 0"):
        GaussianRingTask(std=0.0)


def test_vector_entry_point_matches_single_envs():
    venv = gym.make_vec("GaussianRing-v0", num_envs=3, vectorization_mode="vector_entry_point", device="cpu", std=0.1)
    venv.reset(seed=4)
    points = np.array([[2.0, 0.0], [1.0, 1.0], [-1.4, 1.4]], dtype=np.float32)
    _, reward, terminated, _, _ = venv.step(points)
    assert terminated.all()
    for i, p in enumerate(points):
        env = gym.make("GaussianRing-v0", std=0.1)
        env.reset(seed=4 + i)
        assert env.step(p)[1] == pytest.approx(float(reward[i]), abs=1e-5)


# ---------------------------------------------------------------------- learning checks
def test_mmd_is_zero_for_equal_samples_and_positive_otherwise():
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    y = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    bw = (0.5, 1.0)
    k = lambda a, b: sum(torch.exp(-torch.cdist(a, b) ** 2 / (2 * h**2)) for h in bw)  # noqa: E731
    by_hand = (k(x, x).sum() - 64 * 2) / (64 * 63) + (k(y, y).sum() - 64 * 2) / (64 * 63) - 2 * k(x, y).mean()
    assert mmd2(x, y, bw).item() == pytest.approx(by_hand.item(), abs=1e-5)
    assert mmd2(x, y + 3.0, bw) > 10 * abs(mmd2(x, y, bw))


def test_mmd_training_moves_samples_onto_the_ring():
    task = GaussianRingTask()
    args = ImplicitGeneratorArgs(steps=300, batch=128, noise_dim=8, lr=3e-3)
    g = ImplicitGenerator.from_args(args)
    before = task.metrics(g.sample(4000, torch.Generator().manual_seed(1)).detach())
    train_mmd(g, task.sample_data, args, show_progress=False)
    x = g.sample(4000, torch.Generator().manual_seed(1)).detach()
    after = task.metrics(x)
    assert after["log_likelihood"] > before["log_likelihood"] + 2000
    assert x.norm(dim=-1).median().item() == pytest.approx(2.0, abs=0.25)


def test_eq12_reparameterised_update_seeks_a_mode():
    wide = GaussianRingTask(std=0.1, log_density_floor=None)
    g = ImplicitGenerator.from_args(ImplicitGeneratorArgs(noise_dim=8))
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    rng = torch.Generator().manual_seed(0)
    before = wide.metrics(g.sample(2000, torch.Generator().manual_seed(1)).detach())
    for _ in range(150):
        stats = reparameterised_step(g, wide.true_constraint, opt, 256, alpha=1.0, rng=rng)
    after = wide.metrics(g.sample(2000, torch.Generator().manual_seed(1)).detach())
    assert before["high_quality_share"] == 0.0 and after["high_quality_share"] > 0.9
    assert stats["constraint"] > before["log_likelihood"] + 100


def test_eq8_learns_a_constraint_that_tilts_the_proposal_to_the_ring():
    wide = GaussianRingTask(std=0.1)
    data = wide.sample_data(2000, torch.Generator().manual_seed(0))

    def proposal(n, gen):
        return 1.5 * torch.randn(n, 2, generator=gen), None

    constraint = learned_ring_constraint(hidden=64)
    MaxEntIRL(constraint, proposal, (data, None), MaxEntIRLArgs(steps=250, lr=1e-2, proposal_samples=2048)).train(
        show_progress=False
    )
    x, _ = proposal(20_000, torch.Generator().manual_seed(5))
    weights = ImportanceWeights.from_scores(constraint.predict(x), 1.0)  # q ∝ p exp(f)
    near = (nearest_mode(x, wide.centres)[0] <= 3 * wide.std).float()
    assert near.mean().item() < 0.1  # the proposal p rarely lands within 3 std of a mode
    assert weights.expectation(near).item() > 0.3  # q, through the learned constraint, does
