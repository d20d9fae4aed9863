"""The Eq. 8 / 10 / 12 surrogates have exactly the paper's gradients (checked by enumeration)."""

import pytest
import torch

from kcrl.constraints import TokenPotentialConstraint
from kcrl.envs.tabular import TabularWorld
from kcrl.models.tabular import TabularAutoregressive
from kcrl.errors import NonFiniteError, ShapeError
from kcrl.losses import constraint_loss, reparameterised_loss, score_function_loss, weighted_mle_loss
from kcrl.posterior import ExactPosterior, log_importance_weights
from kcrl.softrl import all_sequences


@pytest.fixture
def setup():
    torch.manual_seed(0)
    world = TabularWorld(vocab_size=3, length=3, world_seed=4)
    seqs = world.sequences()
    log_p = world.base_log_probs_all().double()
    f_phi = TokenPotentialConstraint(3, 3, init_std=0.7, generator=torch.Generator().manual_seed(1)).double()
    data = world.sample_data(64, torch.Generator().manual_seed(2))
    return seqs, log_p, f_phi, data


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_eq8_surrogate_gradient_equals_exact_log_likelihood_gradient(setup, alpha):
    seqs, log_p, f_phi, data = setup
    # exact: d/dphi mean_i log q_phi(x_i), with q_phi = p exp(alpha f_phi) / Z by enumeration
    index = (data * torch.tensor([9, 3, 1])).sum(-1)
    logits = log_p + alpha * f_phi(seqs)
    exact_objective = (logits - torch.logsumexp(logits, 0))[index].mean()
    exact_grads = torch.autograd.grad(exact_objective, list(f_phi.parameters()))
    # surrogate: weights over the enumerated space are exactly q (uniform proposal, log ratio = log p)
    f_all = f_phi(seqs)
    log_w = log_importance_weights(f_all.detach(), alpha, log_ratio=log_p)
    loss = constraint_loss(f_phi(data), f_all, log_w, alpha)
    grads = torch.autograd.grad(loss, list(f_phi.parameters()))
    for g, e in zip(grads, exact_grads):
        torch.testing.assert_close(g, -e, atol=1e-6, rtol=0)


def test_eq10_gradient_is_kl_q_to_p_gradient(setup):
    seqs, log_p, f_phi, _ = setup
    model = TabularAutoregressive(3, 3, init_std=0.5, generator=torch.Generator().manual_seed(3)).double()
    with torch.no_grad():
        q = ExactPosterior(log_p, f_phi(seqs), 1.0)
    log_p_theta = model.log_prob(seqs)
    loss = weighted_mle_loss(log_p_theta, q.log_q)
    grads = torch.autograd.grad(loss, [model.logits])[0]
    kl = (q.q * (q.log_q - model.log_prob(seqs))).sum()  # KL(q || p_theta)
    torch.testing.assert_close(grads, torch.autograd.grad(kl, [model.logits])[0], atol=1e-10, rtol=0)


def test_eq12_score_function_is_unbiased_for_grad_of_expected_reward():
    model = TabularAutoregressive(3, 2, init_std=0.8, generator=torch.Generator().manual_seed(0))
    reward_table = torch.randn(9, generator=torch.Generator().manual_seed(1))
    seqs = all_sequences(3, 2)
    exact = torch.autograd.grad((model.log_prob(seqs).exp() * reward_table).sum(), [model.logits])[0]
    x, _ = model.sample(200_000, torch.Generator().manual_seed(2))
    rewards = reward_table[x[:, 0] * 3 + x[:, 1]]
    for baseline in [None, "leave_one_out"]:
        loss = score_function_loss(model.log_prob(x), rewards, baseline=baseline)
        estimate = -torch.autograd.grad(loss, [model.logits])[0]
        assert (estimate - exact).abs().max() < 0.02 * exact.abs().max() + 0.01


def test_eq12_reparameterised_gradient_analytic():
    mu = torch.tensor([0.3, -0.2], requires_grad=True)
    z = torch.randn(100_000, 2, generator=torch.Generator().manual_seed(0))
    x = mu + z
    target = torch.tensor([1.0, 1.0])
    loss = reparameterised_loss(-((x - target) ** 2).sum(-1), alpha=2.0)
    (grad,) = torch.autograd.grad(loss, [mu])
    # d/dmu of -2 E[-(mu + z - c)^2] = 4 (mu - c)
    torch.testing.assert_close(grad, 4 * (mu.detach() - target) + 4 * z.mean(0), atol=1e-4, rtol=0)


def test_losses_reject_bad_input():
    with pytest.raises(ShapeError, match="must match"):
        constraint_loss(torch.zeros(2), torch.zeros(3), torch.zeros(4), 1.0)
    with pytest.raises(NonFiniteError, match="not finite"):
        weighted_mle_loss(torch.tensor([float("inf"), 0.0]), torch.log(torch.tensor([0.5, 0.5])))
