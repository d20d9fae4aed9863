"""The base generator of ``StructuredDigits-v0``: a conditional convolutional encoder-decoder.

``G_theta(c)`` maps a context c = (target silhouette, source image), ``(N, 2, 28, 28)``, to
per-pixel logits of the target image, ``(N, 28, 28)``. Its own objective L(theta) is maximum
likelihood of the target's grey levels under independent Bernoulli pixels
(:func:`bernoulli_nll`, the cross-entropy of the target intensities); the generated image is
the mean, ``sigmoid(logits)``, in [0, 1]. Being differentiable in theta, it is updated later by
Eq. 12's reparameterised gradient ``-alpha grad_theta E[f_phi(G_theta(c), c)]``
(:func:`kcrl.losses.reparameterised_loss`).

Reads top to bottom: arguments, the network, the loss, the training loop, evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kcrl.errors import ShapeError
from kcrl.progress import progress


@dataclass
class ImageGeneratorArgs:
    """Hyperparameters of :class:`ConditionalImageGenerator` and :func:`train_image_generator`."""

    channels: int = 32
    """width of the first convolution (the deeper ones are twice as wide)"""
    epochs: int = 6
    """passes of ``pairs_per_epoch`` freshly drawn (target, source) pairs"""
    pairs_per_epoch: int = 4000
    """training pairs per epoch (the train split has 4,000 targets)"""
    batch: int = 64
    """pairs per update"""
    lr: float = 2e-3
    """Adam learning rate (annealed linearly to a tenth)"""
    seed: int = 0
    """seed of the initialisation and of the pairs drawn"""


class ConditionalImageGenerator(nn.Module):
    """A small U-Net: context ``(N, 2, 28, 28)`` -> logits ``(N, 28, 28)``.

    Encoder 28 -> 14 -> 7 with strided convolutions, decoder back with transposed ones, skip
    connections at 28 and 14 (the silhouette channel is aligned with the target; the source
    is not, and reaches the output through the 7x7 bottleneck's wide receptive field).
    """

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        c = channels
        self.enc1 = nn.Sequential(nn.Conv2d(2, c, 3, padding=1), nn.ReLU())  # (N, c, 28, 28)
        self.enc2 = nn.Sequential(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.ReLU())  # (N, 2c, 14, 14)
        self.enc3 = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.ReLU())  # (N, 2c, 7, 7)
        self.mid = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU())  # (N, 2c, 7, 7)
        self.dec2 = nn.Sequential(nn.ConvTranspose2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.ReLU())  # (N, 2c, 14, 14)
        self.dec1 = nn.Sequential(nn.ConvTranspose2d(4 * c, c, 4, stride=2, padding=1), nn.ReLU())  # (N, c, 28, 28)
        self.out = nn.Conv2d(2 * c, 1, 3, padding=1)  # (N, 1, 28, 28)

    @classmethod
    def from_args(cls, args: ImageGeneratorArgs) -> "ConditionalImageGenerator":
        """A generator initialised with ``args.seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            return cls(args.channels)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits, ``(N, 28, 28)``."""
        if context.dim() != 4 or tuple(context.shape[1:]) != (2, 28, 28):
            raise ShapeError(f"expected contexts of shape (N, 2, 28, 28); got {tuple(context.shape)}.")
        h1 = self.enc1(context)
        h2 = self.enc2(h1)
        h = self.mid(self.enc3(h2))
        h = torch.cat([self.dec2(h), h2], dim=1)  # (N, 4c, 14, 14)
        h = torch.cat([self.dec1(h), h1], dim=1)  # (N, 2c, 28, 28)
        return self.out(h)[:, 0]

    def generate(self, context: torch.Tensor) -> torch.Tensor:
        """The generated image (the Bernoulli means), ``(N, 28, 28)`` in [0, 1]; differentiable."""
        return torch.sigmoid(self(context))


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-log p_theta(target | c)`` per image, nats, ``(N,)``: Bernoulli pixels with soft targets."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum((1, 2))


# (seeds, episodes) -> (contexts (N, 2, 28, 28), targets (N, 28, 28))
PairSampler = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def train_image_generator(
    generator: ConditionalImageGenerator,
    sample_pairs: PairSampler,
    args: ImageGeneratorArgs,
    valid: tuple[torch.Tensor, torch.Tensor] | None = None,
    show_progress: bool = True,
) -> list[dict[str, float]]:
    """Maximum likelihood (the model's own L(theta)) on freshly drawn training pairs.

    Epoch e uses the pairs of episodes ``e * P .. (e+1) * P - 1`` of seed ``args.seed``, so
    the run is a deterministic function of the seed.

    Args:
        generator: the model to train (in place).
        sample_pairs: ``(seeds, episodes) -> (contexts, targets)``, e.g. from
            :class:`kcrl.envs.digits.StructuredDigitsTask`.
        args: the schedule.
        valid: optional fixed ``(contexts, targets)`` scored after every epoch.
        show_progress: draw a progress bar.

    Returns:
        One record per epoch: mean training NLL and (if ``valid``) validation NLL, nats per image.
    """
    device = next(generator.parameters()).device
    optimizer = torch.optim.Adam(generator.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    total_steps, step, history = args.epochs * -(-args.pairs_per_epoch // args.batch), 0, []
    bar = progress(range(args.epochs), "image generator (MLE)", enabled=show_progress)
    for epoch in bar:
        episodes = torch.arange(epoch * args.pairs_per_epoch, (epoch + 1) * args.pairs_per_epoch, device=device)
        contexts, targets = sample_pairs(torch.full_like(episodes, args.seed), episodes)
        order = torch.randperm(args.pairs_per_epoch, generator=gen).to(device)
        losses = []
        generator.train()
        for start in range(0, args.pairs_per_epoch, args.batch):
            for group in optimizer.param_groups:
                group["lr"] = args.lr * (1.0 - 0.9 * step / max(total_steps - 1, 1))
            idx = order[start : start + args.batch]
            loss = bernoulli_nll(generator(contexts[idx]), targets[idx]).mean()  # L(theta), MLE
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        record = {"epoch": epoch, "train_nll": sum(losses) / len(losses)}
        if valid is not None:
            record["valid_nll"] = evaluate_nll(generator, *valid)
        bar.set_postfix(nll=f"{record['train_nll']:.1f}", refresh=False)
        history.append(record)
    generator.eval()
    return history


@torch.no_grad()
def evaluate_nll(generator: ConditionalImageGenerator, contexts: torch.Tensor, targets: torch.Tensor, batch: int = 500) -> float:
    """Mean Bernoulli NLL of ``targets`` given ``contexts``, nats per image."""
    was_training = generator.training
    generator.eval()
    total = sum(bernoulli_nll(generator(contexts[i : i + batch]), targets[i : i + batch]).sum().item() for i in range(0, len(contexts), batch))
    generator.train(was_training)
    return total / len(contexts)


@torch.no_grad()
def generate(generator: ConditionalImageGenerator, contexts: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Generated images ``(N, 28, 28)`` in [0, 1], in batches, no gradient."""
    was_training = generator.training
    generator.eval()
    out = torch.cat([generator.generate(contexts[i : i + batch]) for i in range(0, len(contexts), batch)])
    generator.train(was_training)
    return out
