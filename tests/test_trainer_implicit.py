"""Algorithm 1 with an implicit generator: L(theta) a GAN objective, the PR term Eq. 12 reparameterised.

The constraint step and the importance weights need no density, so ESS, log Z and the constraint
gap are logged as for an explicit model; KL to the base is not (there is no density to compute it).
"""

from dataclasses import replace

import pytest
import torch
from torch import nn

from kcrl.models.implicit_image_generator import (
    ConditionalGANObjective,
    ImplicitImageGenerator,
    ImplicitImageGeneratorArgs,
)
from kcrl.checkpoint import CheckpointError
from kcrl.constraints import RuleConstraint
from kcrl.envs.digits import fixed_structure_constraint, learned_structure_constraint, upsample_structure
from kcrl.errors import ConfigError
from kcrl.trainer import PRConfig, PRTrainer

ARGS = ImplicitImageGeneratorArgs(channels=4, noise_dim=3, disc_channels=4, recon_weight=1.0, d_lr=1e-3)
CONFIG = PRConfig(generator_update="eq12_reparam", iterations=4, data_batch=8, contexts=2, samples_per_context=4,
                  generator_lr=1e-3, constraint_lr=1e-3, lr_decay=False, checkpoint_every=0, ess_warn_fraction=0.0)


def digits_like(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(targets (n, 28, 28), contexts (n, 2, 28, 28))``: a blocky target, its silhouette and a random source."""
    gen = torch.Generator().manual_seed(seed)
    structure = (torch.rand(n, 7, 7, generator=gen) > 0.6).float()
    target = upsample_structure(structure)
    return target, torch.stack([target, torch.rand(n, 28, 28, generator=gen)], dim=1)


def implicit_trainer(variant: str, **changes) -> PRTrainer:
    constraint = learned_structure_constraint() if variant == "learned" else fixed_structure_constraint()
    generator = ImplicitImageGenerator.from_args(ARGS)
    return PRTrainer(generator, constraint, digits_like(), replace(CONFIG, variant=variant, **changes),
                     objective=ConditionalGANObjective.from_args(ARGS))


@pytest.mark.parametrize("variant", ["learned", "fixed", "base"])
def test_implicit_generator_runs_algorithm_1_and_logs_no_kl(variant):
    trainer = implicit_trainer(variant)
    before = [p.detach().clone() for p in trainer.generator.parameters()]
    history = [trainer.step() for _ in range(3)]
    for stats in history:
        assert {"objective", "d_loss", "g_adversarial", "reconstruction", "generator_loss"} <= set(stats)
        assert "kl_to_base" not in stats and "nll_data" not in stats  # no density: nothing made up
        if variant == "base":
            assert "ess" not in stats and "constraint_gap" not in stats
        else:
            assert {"ess", "ess_fraction", "log_z", "constraint_gap", "constraint_data"} <= set(stats)
            assert 1.0 <= stats["ess"] <= 4.0 + 1e-5 and torch.isfinite(torch.tensor(stats["log_z"]))
        assert ("constraint_loss" in stats) == (variant == "learned")
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.generator.parameters()))


class ShiftScale(nn.Module):
    """x = mu + sigma * z, z ~ N(0, I): the smallest implicit generator, ``(n, D)``."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.tensor([0.5, -1.0, 2.0][:dim]))
        self.sigma = nn.Parameter(torch.ones(dim))

    def sample(self, n, generator=None, context=None):
        z = torch.randn(n, len(self.mu), generator=generator)
        return self.mu + self.sigma * z, None


def no_objective(generator, x, context, rng):
    return torch.zeros(()), {}


def test_eq12_reparameterised_gradient_is_the_analytic_one():
    # f(x) = a . x is linear, so E_z[f(mu + sigma z)] = a . mu and the Eq. 12 surrogate
    # -alpha mean_i f(x_i) has gradient -alpha a in mu and -alpha mean_i a * z_i in sigma
    a = torch.tensor([1.0, -2.0, 0.5])
    alpha, lam, k = 2.0, 0.5, 64
    config = PRConfig(variant="fixed", generator_update="eq12_reparam", alpha=alpha, lam=lam, samples=k,
                      data_batch=10, lr_decay=False, checkpoint_every=0, ess_warn_fraction=0.0, seed=3)
    generator = ShiftScale()
    trainer = PRTrainer(generator, RuleConstraint(lambda x, c: x @ a, name="linear"), (torch.zeros(10, 3), None),
                        config, objective=no_objective)
    stats = trainer.step()
    rng = torch.Generator().manual_seed(3)
    torch.randn(k, 3, generator=rng)  # the no-grad samples of the weights and the constraint step
    z = torch.randn(k, 3, generator=rng)  # the reparameterised samples of the generator step
    assert torch.allclose(generator.mu.grad, -lam * alpha * a)
    assert torch.allclose(generator.sigma.grad, -lam * alpha * a * z.mean(0), atol=1e-6)
    assert {"ess", "log_z", "constraint_gap"} <= set(stats) and "kl_to_base" not in stats


def test_density_needs_are_refused_in_full():
    generator = ImplicitImageGenerator.from_args(ARGS)
    data, constraint = digits_like(), fixed_structure_constraint()
    with pytest.raises(ConfigError) as err:
        PRTrainer(generator, constraint, data, replace(CONFIG, variant="fixed", generator_update="eq10"),
                  objective=ConditionalGANObjective.from_args(ARGS))
    assert str(err.value) == (
        "generator_update='eq10' needs log p_theta of the generator's samples, but ImplicitImageGenerator has no "
        "log_prob (an implicit generator). Use generator_update='eq12_reparam', the reparameterised Eq. 12 "
        "gradient through x = G_theta(z)."
    )
    with pytest.raises(ConfigError) as err:
        PRTrainer(generator, constraint, data, replace(CONFIG, variant="fixed"))
    assert str(err.value) == (
        "ImplicitImageGenerator has no log_prob (an implicit generator), so its L(theta) cannot be the default "
        "maximum likelihood -mle_weight * mean log p_theta(data). Pass objective=... (e.g. "
        "kcrl.models.implicit_image_generator.ConditionalGANObjective)."
    )
    with pytest.raises(ConfigError) as err:
        PRConfig(generator_update="eq13")
    assert str(err.value) == "generator_update must be 'eq10', 'eq12' or 'eq12_reparam'; got 'eq13'."
    # a sampler that detaches its draws cannot take the reparameterised step
    class Detached(ShiftScale):
        def sample(self, n, generator=None, context=None):
            return super().sample(n, generator)[0].detach(), None

    trainer = PRTrainer(Detached(), RuleConstraint(lambda x, c: x.sum(-1)), (torch.zeros(4, 3), None),
                        PRConfig(variant="fixed", generator_update="eq12_reparam", samples=8, checkpoint_every=0),
                        objective=no_objective)
    with pytest.raises(ConfigError) as err:
        trainer.step()
    assert str(err.value) == (
        "generator_update='eq12_reparam' needs samples that are differentiable in theta, but Detached.sample "
        "returned x without a gradient (detached, or drawn under no_grad). Use eq10 or eq12 for a generator with "
        "a density, or make sample() reparameterised."
    )


def test_gan_objective_is_checkpointed_and_a_resumed_run_is_exact(tmp_path):
    full = implicit_trainer("learned", checkpoint_every=1)
    full_history = full.train(show_progress=False)
    part = implicit_trainer("learned", checkpoint_every=1)
    part.train(tmp_path, show_progress=False, stop_after=2)
    resumed = implicit_trainer("learned", checkpoint_every=1)
    history = resumed.train(tmp_path, resume=True, show_progress=False)
    assert history == full_history
    for a, b in zip(full.objective.discriminator.parameters(), resumed.objective.discriminator.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(full.generator.parameters(), resumed.generator.parameters()):
        assert torch.equal(a, b)
    state = resumed.state_dict()
    assert state["objective"]["format"] == "kcrl.ConditionalGANObjective/1"
    del state["objective"]
    with pytest.raises(CheckpointError) as err:
        implicit_trainer("learned", checkpoint_every=1).load_state_dict(state)
    assert str(err.value) == (
        "the checkpoint was written with MLE as L(theta), but this trainer's L(theta) is ConditionalGANObjective; "
        "resume with the same parts, or start a new run in another folder."
    )


def test_objective_without_state_refuses_resumable_checkpoints_in_full(tmp_path):
    def gan_like(generator, x, context, rng):
        fake, _ = generator.sample(len(x), generator=rng, context=context)
        return (fake - x).abs().mean(), {}

    generator = ImplicitImageGenerator.from_args(ARGS)
    trainer = PRTrainer(generator, fixed_structure_constraint(), digits_like(),
                        replace(CONFIG, variant="fixed", checkpoint_every=2), objective=gan_like)
    with pytest.raises(ConfigError) as err:
        trainer.train(tmp_path, show_progress=False)
    assert str(err.value) == (
        "the objective function has no state_dict()/load_state_dict(), so a checkpoint cannot hold its state and "
        "a resumed run would not continue where it stopped. Run it to the end without resumable checkpoints "
        "(checkpoint_every=0, no stop_after, no resume), or give the objective both methods (see "
        "kcrl.trainer.GeneratorObjective)."
    )
