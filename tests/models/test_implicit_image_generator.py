"""The implicit image generator x = G(z, c) and its conditional GAN objective: shapes, gradients that
reach theta through the samples, a discriminator that learns, and a state that round-trips."""

import pytest
import torch

from kcrl.models.implicit_image_generator import (
    ConditionalDiscriminator,
    ConditionalGANObjective,
    ImplicitImageGenerator,
    ImplicitImageGeneratorArgs,
    generate_samples,
)
from kcrl.envs.digits import upsample_structure
from kcrl.errors import ConfigError, ShapeError


def toy_batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Contexts ``(n, 2, 28, 28)`` (a 7x7 silhouette, a random source) and targets ``(n, 28, 28)``:
    the silhouette itself, so that real images are easy to tell from an untrained generator's."""
    gen = torch.Generator().manual_seed(seed)
    structure = (torch.rand(n, 7, 7, generator=gen) > 0.5).float()
    target = upsample_structure(structure)  # (n, 28, 28)
    context = torch.stack([target, torch.rand(n, 28, 28, generator=gen)], dim=1)
    return context, target


def small_generator(seed: int = 0) -> ImplicitImageGenerator:
    return ImplicitImageGenerator.from_args(ImplicitImageGeneratorArgs(channels=4, noise_dim=3, seed=seed))


def test_sample_is_reparameterised_differentiable_and_seeded():
    g = small_generator()
    context, _ = toy_batch(5)
    x, log_p = g.sample(5, torch.Generator().manual_seed(0), context=context)
    assert x.shape == (5, 28, 28) and log_p is None
    assert bool(((x >= 0) & (x <= 1)).all())
    x.sum().backward()  # the gradient reaches theta through x, noise projection included
    assert g.enc1[0].weight.grad.abs().sum() > 0 and g.noise.weight.grad.abs().sum() > 0
    again, _ = g.sample(5, torch.Generator().manual_seed(0), context=context)
    other, _ = g.sample(5, torch.Generator().manual_seed(1), context=context)
    assert torch.equal(x, again) and not torch.equal(x, other)  # a function of the seeded noise
    assert torch.equal(generate_samples(g, context, seed=0), x.detach())


def test_sample_and_forward_reject_bad_shapes_in_full():
    g = small_generator()
    context, _ = toy_batch(2)
    with pytest.raises(ShapeError) as err:
        g.sample(3, None, context=context)
    assert str(err.value) == (
        "ImplicitImageGenerator samples one image per context: expected 3 contexts (n, 2, 28, 28), got (2, 2, 28, 28)."
    )
    with pytest.raises(ShapeError) as err:
        g(context, torch.zeros(2, 5))
    assert str(err.value) == "expected noise of shape (2, 3) for 2 contexts; got (2, 5)."
    with pytest.raises(ShapeError) as err:
        g(context[:, :1], torch.zeros(2, 3))
    assert str(err.value) == "ImplicitImageGenerator expected contexts of shape (N, 2, 28, 28); got (2, 1, 28, 28)."


def test_gan_objective_trains_the_discriminator_and_not_through_the_generator_loss():
    g = small_generator()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        objective = ConditionalGANObjective(ConditionalDiscriminator(channels=4), lr=2e-3, recon_weight=2.0, reconstruction="l1")
    context, target = toy_batch(16)
    rng = torch.Generator().manual_seed(0)
    d_losses = []
    for _ in range(40):  # the generator is not stepped: D only has to separate real from fixed fakes
        loss, stats = objective(g, target, context, rng)
        d_losses.append(stats["d_loss"])
    assert d_losses[0] == pytest.approx(2 * 0.6931, abs=0.1)  # log 2 per term at chance
    assert d_losses[-1] < 0.5 * d_losses[0], d_losses
    # L(theta) = non-saturating GAN loss + recon_weight * L1, with gradient into theta only
    assert loss.item() == pytest.approx(stats["g_adversarial"] + 2.0 * stats["reconstruction"], rel=1e-5)
    d_grads = [p.grad.clone() for p in objective.discriminator.parameters()]
    loss.backward()
    assert all(torch.equal(p.grad, before) for p, before in zip(objective.discriminator.parameters(), d_grads))
    assert g.out.weight.grad.abs().sum() > 0
    assert all(p.requires_grad for p in objective.discriminator.parameters())


def test_gan_objective_state_round_trips_exactly():
    args = ImplicitImageGeneratorArgs(channels=4, noise_dim=3, disc_channels=4, recon_weight=1.0)
    g = small_generator()
    first = ConditionalGANObjective.from_args(args)
    context, target = toy_batch(8)
    for _ in range(3):
        first(g, target, context, torch.Generator().manual_seed(0))
    second = ConditionalGANObjective.from_args(args)
    second.load_state_dict(first.state_dict())
    a = first(g, target, context, torch.Generator().manual_seed(5))
    b = second(g, target, context, torch.Generator().manual_seed(5))
    assert a[1] == b[1] and torch.equal(a[0], b[0])
    with pytest.raises(ConfigError) as err:
        second.load_state_dict({"format": "something else"})
    assert str(err.value) == (
        "not a ConditionalGANObjective state (format 'something else', expected 'kcrl.ConditionalGANObjective/1')."
    )


def test_gan_objective_rejects_bad_settings_in_full():
    d = ConditionalDiscriminator(channels=2)
    with pytest.raises(ConfigError) as err:
        ConditionalGANObjective(d, recon_weight=-1.0)
    assert str(err.value) == "recon_weight must be >= 0 (0: GAN loss only); got -1.0."
    with pytest.raises(ConfigError) as err:
        ConditionalGANObjective(d, reconstruction="l3")
    assert str(err.value) == "reconstruction must be 'l1', 'l2' or 'bce'; got 'l3'."
    with pytest.raises(ConfigError) as err:
        ConditionalGANObjective(d, d_steps=0)
    assert str(err.value) == "d_steps must be >= 1 (discriminator updates per call); got 0."
    with pytest.raises(ShapeError) as err:
        ConditionalGANObjective(d)(small_generator(), torch.zeros(2, 28, 28), None)
    assert str(err.value) == "ConditionalGANObjective expected contexts of shape (N, 2, 28, 28); got None."
