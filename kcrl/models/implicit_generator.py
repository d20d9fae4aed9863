"""An implicit generator ``x = G_theta(z)``, its own training objective, and its Eq. 12 update.

An implicit model can be sampled but has no density, so Eq. 10 (weighted MLE) does not apply:
PR updates it by Eq. 12, ``grad_theta KL(p_theta || q) = -grad_theta E_{p_theta}[alpha f_phi(x)]``,
which for continuous x and a differentiable f is the reparameterised gradient
``-alpha E_z[grad_theta f_phi(G_theta(z))]`` (:func:`kcrl.losses.reparameterised_loss`).

Its own objective L(theta) here is the squared maximum mean discrepancy (MMD) to the data
with a sum of Gaussian kernels of several bandwidths (generative moment matching; Li, Swersky
and Zemel 2015; Dziugaite, Roy and Ghahramani 2015). MMD is a proper distance between
distributions for characteristic kernels, needs only samples of both sides, and trains without
an adversary: the run is a deterministic function of the seed and needs no balancing of two
players. Small bandwidths resolve the modes' width, large ones move mass between modes.

Reads top to bottom: arguments, the network, the MMD, the training loop, the Eq. 12 step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from kcrl.constraints import Constraint
from kcrl.errors import ConfigError, ShapeError, check_alpha
from kcrl.losses import reparameterised_loss
from kcrl.progress import progress


@dataclass
class ImplicitGeneratorArgs:
    """Hyperparameters of :class:`ImplicitGenerator` and :func:`train_mmd`."""

    noise_dim: int = 4
    """dimension of the Gaussian noise z"""
    hidden: int = 128
    """hidden units per layer"""
    depth: int = 3
    """number of linear layers"""
    steps: int = 3000
    """MMD updates"""
    batch: int = 256
    """generator and data samples per update"""
    lr: float = 1e-3
    """Adam learning rate (annealed linearly to lr_final_fraction * lr)"""
    lr_final_fraction: float = 0.1
    """learning rate at the end, as a fraction of lr"""
    bandwidths: Sequence[float] = field(default_factory=lambda: (0.02, 0.05, 0.2, 0.5, 2.0))
    """Gaussian kernel bandwidths of the MMD"""
    seed: int = 0
    """seed of the initialisation, the noise and the data batches"""


class ImplicitGenerator(nn.Module):
    """``x = G(z)``, z ~ N(0, I): an MLP from noise to samples.

    Shapes: ``z (N, noise_dim) -> x (N, out_dim)``.

    Example:
        >>> import torch
        >>> g = ImplicitGenerator(out_dim=2, noise_dim=4)
        >>> g.sample(5, torch.Generator().manual_seed(0)).shape
        torch.Size([5, 2])
    """

    def __init__(self, out_dim: int = 2, noise_dim: int = 4, hidden: int = 128, depth: int = 3) -> None:
        super().__init__()
        if depth < 1 or noise_dim < 1 or out_dim < 1:
            raise ConfigError(f"need depth, noise_dim, out_dim >= 1; got {depth}, {noise_dim}, {out_dim}.")
        self.out_dim, self.noise_dim = out_dim, noise_dim
        layers, width = [], noise_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    @classmethod
    def from_args(cls, args: ImplicitGeneratorArgs, out_dim: int = 2) -> "ImplicitGenerator":
        """A generator seeded with ``args.seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            return cls(out_dim, args.noise_dim, args.hidden, args.depth)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.noise_dim:
            raise ShapeError(f"expected noise of shape (N, {self.noise_dim}); got {tuple(z.shape)}.")
        return self.net(z)  # (N, out_dim)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples ``(n, out_dim)``, differentiable in theta (reparameterised)."""
        z = torch.randn(n, self.noise_dim, generator=generator, device=self.device)
        return self(z)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float], data_term: bool = True) -> torch.Tensor:
    """Squared MMD between samples ``x (N, D)`` and ``y (M, D)``, unbiased U-statistic.

    Kernel ``k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))``. Zero in expectation iff the two
    distributions are equal (the Gaussian kernel is characteristic). ``data_term=False`` drops
    the y-y term, which does not depend on the generator: the gradient in x is unchanged and
    a training step is about a third cheaper.
    """
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ShapeError(f"the unbiased MMD needs at least 2 samples on each side; got {n} and {m}.")

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        sq = ((a * a).sum(-1)[:, None] + (b * b).sum(-1)[None, :] - 2 * a @ b.T).clamp(min=0)  # (A, B)
        return sum(torch.exp(-sq / (2 * h**2)) for h in bandwidths)  # (A, B)

    k_xx, k_xy = kernel(x, x), kernel(x, y)
    value = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1)) - 2 * k_xy.mean()
    if data_term:
        k_yy = kernel(y, y)
        value = value + (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return value


def train_mmd(
    generator: ImplicitGenerator,
    sample_data: Callable[[int, torch.Generator], torch.Tensor],
    args: ImplicitGeneratorArgs,
    show_progress: bool = True,
) -> list[dict[str, float]]:
    """Fit ``generator`` to the data by minimising MMD^2 (the model's own objective L(theta)).

    Args:
        generator: the implicit model.
        sample_data: ``(n, torch.Generator) -> (n, D)`` data points.
        args: steps, batch, learning rate, bandwidths, seed.
        show_progress: draw a progress bar.

    Returns:
        One record per step with the minibatch ``mmd2_minus_const`` (MMD^2 without its y-y term).
    """
    gen = torch.Generator(generator.device).manual_seed(args.seed)
    optimizer = torch.optim.Adam(generator.parameters(), lr=args.lr)
    history = []
    bar = progress(range(args.steps), "MMD generator", enabled=show_progress)
    for step in bar:
        frac = step / max(args.steps - 1, 1)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * (1.0 - (1.0 - args.lr_final_fraction) * frac)
        x = generator.sample(args.batch, gen)  # (B, D)
        y = sample_data(args.batch, gen)  # (B, D)
        loss = mmd2(x, y, args.bandwidths, data_term=False)  # MMD^2 minus a constant
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"mmd2_minus_const": loss.item()})
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.3e}", refresh=False)
    return history


def reparameterised_step(
    generator: ImplicitGenerator,
    constraint: Constraint,
    optimizer: torch.optim.Optimizer,
    n: int,
    alpha: float = 1.0,
    weight: float = 1.0,
    own_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rng: torch.Generator | None = None,
) -> dict[str, float]:
    """One generator update of Algorithm 1 with Eq. 12, reparameterised.

    Minimises ``L(theta) + weight * (-alpha E_z[f_phi(G(z))])``: the model's own objective
    (``own_loss(x)`` on the same samples, e.g. ``lambda x: mmd2(x, data_batch, bandwidths)``;
    omitted when ``None``) plus lambda = ``weight`` times the Eq. 12 surrogate, whose gradient
    is that of KL(p_theta || q) up to p_theta's entropy. Only the parameters in ``optimizer``
    move; the constraint's gradients are computed but not applied.

    Returns:
        ``{"loss", "constraint"}``: the total loss and the batch mean of f_phi(G(z)).
    """
    alpha = check_alpha(alpha)
    x = generator.sample(n, rng)  # (n, D), differentiable in theta
    f = constraint(x)  # (n,)
    loss = weight * reparameterised_loss(f, alpha)  # Eq. 12: -alpha E_z[f(G(z))]
    if own_loss is not None:
        loss = loss + own_loss(x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "constraint": f.mean().item()}
