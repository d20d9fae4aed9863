"""An implicit generator for ``StructuredDigits-v0``, x = G_theta(z, c), and its conditional GAN objective.

The generator maps a context c = (target silhouette, source image), ``(N, 2, 28, 28)``, and
Gaussian noise z, ``(N, noise_dim)``, to an image ``(N, 28, 28)`` in [0, 1]. It can be sampled
but has no density: Algorithm 1 updates it by Eq. 12's reparameterised gradient
``-alpha grad_theta E_z[f_phi(G_theta(z, c), c)]`` (``PRConfig(generator_update="eq12_reparam")``),
and its own objective L(theta) cannot be maximum likelihood. Here L(theta) is a conditional GAN
loss (:class:`ConditionalGANObjective`):

* a conditional discriminator D(x, c) (a logit, ``labels_real_is_one``) trained by the logistic
  real-vs-generated loss ``-log sigmoid(D(x_real, c)) - log(1 - sigmoid(D(G(z, c), c)))`` with
  its own Adam optimiser, one or more steps per call;
* the generator's non-saturating loss ``-log sigmoid(D(G(z, c), c))``;
* optionally ``recon_weight`` times a reconstruction error to the true target, per pixel: the
  absolute error (``"l1"``), the squared error (``"l2"``) or the Bernoulli cross-entropy
  (``"bce"``). The paper's pose-conditional person generator (Hu et al. 2018, §5.2, after Ma et
  al. 2017) combines an L1 and an adversarial loss. On these digits, though, L1 and L2 through the
  sigmoid output fall into a trap: most pixels are black, the first updates push every output
  towards 0, the sigmoid saturates and the gradient of |x - t| or (x - t)^2 vanishes with it (the
  images stay black; measured on the quick size). The cross-entropy's gradient in the logits,
  x - t, does not vanish, so the paper-image suite uses ``"bce"``.

Pretraining the base with this objective (:func:`train_implicit_image_generator`) is the implicit
model's counterpart of the explicit model's MLE base.

Reads top to bottom: arguments, the generator, the discriminator, the objective, the pretraining
loop, evaluation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kcrl.models.image_generator import PairSampler
from kcrl.errors import ConfigError, ShapeError
from kcrl.progress import progress

SIDE = 28  # image side; contexts are (2, SIDE, SIDE)


@dataclass
class ImplicitImageGeneratorArgs:
    """Hyperparameters of :class:`ImplicitImageGenerator`, :class:`ConditionalGANObjective` and
    :func:`train_implicit_image_generator`."""

    channels: int = 32
    """width of the generator's first convolution (the deeper ones are twice as wide)"""
    noise_dim: int = 8
    """dimension of the Gaussian noise z"""
    disc_channels: int = 16
    """width of the discriminator's first convolution"""
    reconstruction: str = "bce"
    """reconstruction term in L(theta), per pixel: l1 (|x - target|), l2 (squared error) or bce
    (Bernoulli cross-entropy; l1 and l2 saturate the sigmoid to black images on these digits)"""
    recon_weight: float = 10.0
    """weight of the reconstruction term in L(theta); 0: GAN loss only"""
    epochs: int = 6
    """pretraining passes of ``pairs_per_epoch`` freshly drawn (target, source) pairs"""
    pairs_per_epoch: int = 4000
    """training pairs per pretraining epoch"""
    batch: int = 64
    """pairs per pretraining update"""
    lr: float = 5e-4
    """Adam learning rate of the generator during pretraining (constant)"""
    d_lr: float = 2e-4
    """Adam learning rate of the discriminator (pretraining and Algorithm 1)"""
    d_steps: int = 1
    """discriminator updates per call of the objective"""
    seed: int = 0
    """seed of the initialisation, the pairs drawn and the noise"""


class ImplicitImageGenerator(nn.Module):
    """``x = G_theta(z, c)``: a small U-Net on the context with the noise injected at its 7x7 bottleneck.

    Shapes: ``context (N, 2, 28, 28)``, ``z (N, noise_dim)`` -> ``x (N, 28, 28)`` in [0, 1]
    (a sigmoid output). Encoder 28 -> 14 -> 7, decoder back, skips at 28 and 14; z is mapped by
    a linear layer to ``c`` feature maps of 7x7 and concatenated to the bottleneck.

    :meth:`sample` follows the trainer's protocol for an implicit model
    (:class:`kcrl.trainer.ImplicitGenerator`): it returns ``(x, None)`` — there is no log-density —
    with x differentiable in theta (reparameterised).

    Example:
        >>> import torch
        >>> g = ImplicitImageGenerator(channels=4, noise_dim=2)
        >>> x, log_p = g.sample(3, torch.Generator().manual_seed(0), context=torch.zeros(3, 2, 28, 28))
        >>> x.shape, log_p, x.requires_grad, bool(((0 <= x) & (x <= 1)).all())
        (torch.Size([3, 28, 28]), None, True, True)
    """

    def __init__(self, channels: int = 32, noise_dim: int = 8) -> None:
        super().__init__()
        if channels < 1 or noise_dim < 1:
            raise ConfigError(f"ImplicitImageGenerator needs channels >= 1 and noise_dim >= 1; got {channels} and {noise_dim}.")
        c, self.noise_dim = channels, noise_dim
        self.enc1 = nn.Sequential(nn.Conv2d(2, c, 3, padding=1), nn.ReLU())  # (N, c, 28, 28)
        self.enc2 = nn.Sequential(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.ReLU())  # (N, 2c, 14, 14)
        self.enc3 = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.ReLU())  # (N, 2c, 7, 7)
        self.noise = nn.Linear(noise_dim, c * 7 * 7)  # z -> (N, c, 7, 7)
        self.mid = nn.Sequential(nn.Conv2d(3 * c, 2 * c, 3, padding=1), nn.ReLU())  # (N, 2c, 7, 7)
        self.dec2 = nn.Sequential(nn.ConvTranspose2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.ReLU())  # (N, 2c, 14, 14)
        self.dec1 = nn.Sequential(nn.ConvTranspose2d(4 * c, c, 4, stride=2, padding=1), nn.ReLU())  # (N, c, 28, 28)
        self.out = nn.Conv2d(2 * c, 1, 3, padding=1)  # (N, 1, 28, 28)

    @classmethod
    def from_args(cls, args: ImplicitImageGeneratorArgs) -> "ImplicitImageGenerator":
        """A generator initialised with ``args.seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            return cls(args.channels, args.noise_dim)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, context: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The image ``G_theta(z, c)``, ``(N, 28, 28)`` in [0, 1]; differentiable in theta (and z)."""
        _check_context(context, "ImplicitImageGenerator")
        if z.shape != (context.shape[0], self.noise_dim):
            raise ShapeError(f"expected noise of shape ({context.shape[0]}, {self.noise_dim}) for {context.shape[0]} contexts; got {tuple(z.shape)}.")
        h1 = self.enc1(context)
        h2 = self.enc2(h1)
        h = torch.cat([self.enc3(h2), self.noise(z).view(len(z), -1, 7, 7)], dim=1)  # (N, 3c, 7, 7)
        h = torch.cat([self.dec2(self.mid(h)), h2], dim=1)  # (N, 4c, 14, 14)
        h = torch.cat([self.dec1(h), h1], dim=1)  # (N, 2c, 28, 28)
        return torch.sigmoid(self.out(h)[:, 0])  # (N, 28, 28)

    def sample(self, n: int, generator: torch.Generator | None = None, context: torch.Tensor | None = None):
        """``(x, None)``: one image per context, ``x (n, 28, 28)``, z ~ N(0, I) drawn from ``generator``."""
        if context is None or context.shape[0] != n:
            got = None if context is None else tuple(context.shape)
            raise ShapeError(f"ImplicitImageGenerator samples one image per context: expected {n} contexts (n, 2, 28, 28), got {got}.")
        z = torch.randn(n, self.noise_dim, generator=generator, device=context.device)  # (n, noise_dim)
        return self(context, z), None


class ConditionalDiscriminator(nn.Module):
    """``D(x, c)``: the logit that image x is a real target for context c (``labels_real_is_one``).

    Shapes: ``x (N, 28, 28)``, ``context (N, 2, 28, 28)`` -> ``(N,)``. Two strided convolutions
    on the stacked ``(x, c)`` (28 -> 14 -> 7) with leaky ReLUs and a linear read-out.
    """

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (N, c, 14, 14)
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (N, 2c, 7, 7)
            nn.Flatten(), nn.Linear(2 * c * 7 * 7, 1),  # (N, 1)
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        _check_context(context, "ConditionalDiscriminator")
        if x.shape != (context.shape[0], SIDE, SIDE):
            raise ShapeError(f"ConditionalDiscriminator needs images ({context.shape[0]}, 28, 28) for its contexts; got {tuple(x.shape)}.")
        return self.net(torch.cat([x[:, None], context], dim=1))[:, 0]  # (N,)


def _check_context(context: torch.Tensor | None, who: str) -> None:
    if context is None or context.dim() != 4 or tuple(context.shape[1:]) != (2, SIDE, SIDE):
        got = None if context is None else tuple(context.shape)
        raise ShapeError(f"{who} expected contexts of shape (N, 2, 28, 28); got {got}.")


RECONSTRUCTIONS = ("l1", "l2", "bce")


class ConditionalGANObjective:
    """L(theta) of an implicit conditional generator: non-saturating GAN loss (+ optional reconstruction).

    Each call (a :class:`kcrl.trainer.GeneratorObjective`) draws ``x_fake = G(z, c)`` for the
    batch's contexts, updates D ``d_steps`` times by the logistic loss on (real, detached fake),
    then returns, with gradient in theta only (D's parameters are not in the graph),

    ``L(theta) = mean_i -log sigmoid(D(x_fake_i, c_i)) + recon_weight * mean_{i,pixels} r(x_fake, x_real)``

    (r = ``|x - t|`` for ``"l1"``, ``(x - t)^2`` for ``"l2"``, ``-t log x - (1 - t) log(1 - x)`` for
    ``"bce"``) and the log entries ``d_loss``, ``g_adversarial``, ``reconstruction``. Its state (D and D's optimiser)
    round-trips through :meth:`state_dict` / :meth:`load_state_dict`, so trainer checkpoints
    resume exactly.

    Args:
        discriminator: D(x, c), e.g. :class:`ConditionalDiscriminator`.
        lr: Adam learning rate of D.
        betas: Adam betas of D (0.5 for the first moment, as is usual for GANs).
        recon_weight: weight of the reconstruction term, >= 0 (0: GAN loss only).
        reconstruction: ``"l1"``, ``"l2"`` or ``"bce"``.
        d_steps: D updates per call, >= 1.
    """

    format = "kcrl.ConditionalGANObjective/1"

    def __init__(
        self, discriminator: nn.Module, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999),
        recon_weight: float = 0.0, reconstruction: str = "l1", d_steps: int = 1,
    ) -> None:
        if not recon_weight >= 0.0:
            raise ConfigError(f"recon_weight must be >= 0 (0: GAN loss only); got {recon_weight!r}.")
        if reconstruction not in RECONSTRUCTIONS:
            raise ConfigError(f"reconstruction must be 'l1', 'l2' or 'bce'; got {reconstruction!r}.")
        if d_steps < 1:
            raise ConfigError(f"d_steps must be >= 1 (discriminator updates per call); got {d_steps!r}.")
        self.discriminator, self.d_steps = discriminator, int(d_steps)
        self.recon_weight, self.reconstruction = float(recon_weight), reconstruction
        self.optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)

    @classmethod
    def from_args(cls, args: ImplicitImageGeneratorArgs) -> "ConditionalGANObjective":
        """A :class:`ConditionalDiscriminator` initialised with ``args.seed + 1`` and its objective."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed + 1)
            discriminator = ConditionalDiscriminator(args.disc_channels)
        return cls(discriminator, lr=args.d_lr, recon_weight=args.recon_weight, reconstruction=args.reconstruction,
                   d_steps=args.d_steps)

    def to(self, device: str | torch.device) -> "ConditionalGANObjective":
        """Moves D (in place, so its optimiser keeps the same parameters); returns self."""
        self.discriminator.to(device)
        return self

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Logistic real-vs-generated loss of D: ``mean -log sigmoid(D(real)) + mean -log(1 - sigmoid(D(fake)))``."""
        return F.softplus(-self.discriminator(real, context)).mean() + F.softplus(self.discriminator(fake, context)).mean()

    def __call__(
        self, generator: nn.Module, x: torch.Tensor, context: torch.Tensor | None, rng: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``(L(theta), log entries)`` for the data batch ``x (B, 28, 28)`` with contexts ``(B, 2, 28, 28)``."""
        _check_context(context, "ConditionalGANObjective")
        fake, _ = generator.sample(len(x), generator=rng, context=context)  # (B, 28, 28), with grad in theta
        for _ in range(self.d_steps):
            d_loss = self.discriminator_loss(x, fake.detach(), context)
            self.optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            self.optimizer.step()
        flags = [p.requires_grad for p in self.discriminator.parameters()]
        self.discriminator.requires_grad_(False)  # the generator loss reaches theta only
        try:
            g_adversarial = F.softplus(-self.discriminator(fake, context)).mean()  # -log D(G(z, c), c), non-saturating
        finally:
            for p, flag in zip(self.discriminator.parameters(), flags):
                p.requires_grad_(flag)
        recon = reconstruction_error(fake, x, self.reconstruction)
        loss = g_adversarial + self.recon_weight * recon if self.recon_weight else g_adversarial
        return loss, {"d_loss": d_loss.item(), "g_adversarial": g_adversarial.item(), "reconstruction": recon.item()}

    def state_dict(self) -> dict:
        return {"format": self.format, "discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != self.format:
            raise ConfigError(f"not a ConditionalGANObjective state (format {state.get('format')!r}, expected {self.format!r}).")
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))  # Adam would alias the given tensors


def reconstruction_error(x: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean per-pixel reconstruction error of images ``x`` against ``target``, both ``(B, 28, 28)`` in [0, 1]."""
    if kind == "l1":
        return (x - target).abs().mean()
    if kind == "l2":
        return (x - target).square().mean()
    return F.binary_cross_entropy(x, target)  # "bce"; its gradient in the logits is x - target


def train_implicit_image_generator(
    generator: ImplicitImageGenerator,
    objective: ConditionalGANObjective,
    sample_pairs: PairSampler,
    args: ImplicitImageGeneratorArgs,
    show_progress: bool = True,
) -> list[dict[str, float]]:
    """Pretrain the base by its own L(theta), the conditional GAN (+ reconstruction) loss, on freshly drawn pairs.

    Epoch e uses the pairs of episodes ``e * P .. (e+1) * P - 1`` of seed ``args.seed``; the
    minibatch order and the noise come from one generator seeded with ``args.seed``, so the run is
    a deterministic function of the seed. The generator's Adam uses betas (0.5, 0.999), as D's.

    Args:
        generator: the model to train (in place).
        objective: its GAN objective (D is trained in place too).
        sample_pairs: ``(seeds, episodes) -> (contexts, targets)``, e.g. from
            :class:`kcrl.envs.digits.StructuredDigitsTask`.
        args: the schedule.
        show_progress: draw a progress bar.

    Returns:
        One record per epoch: the means of ``d_loss``, ``g_adversarial`` and ``reconstruction``.
    """
    device = generator.device
    optimizer = torch.optim.Adam(generator.parameters(), lr=args.lr, betas=(0.5, 0.999))
    rng = torch.Generator(device).manual_seed(args.seed)
    history = []
    bar = progress(range(args.epochs), "implicit image generator (GAN)", enabled=show_progress)
    for epoch in bar:
        episodes = torch.arange(epoch * args.pairs_per_epoch, (epoch + 1) * args.pairs_per_epoch, device=device)
        contexts, targets = sample_pairs(torch.full_like(episodes, args.seed), episodes)
        order = torch.randperm(args.pairs_per_epoch, generator=rng, device=device)
        sums: dict[str, float] = {}
        steps = 0
        for start in range(0, args.pairs_per_epoch, args.batch):
            idx = order[start : start + args.batch]
            loss, stats = objective(generator, targets[idx], contexts[idx], rng)  # L(theta), GAN (+ reconstruction)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
            steps += 1
        record = {"epoch": epoch, **{key: value / steps for key, value in sums.items()}}
        bar.set_postfix(recon=f"{record['reconstruction']:.3f}", d=f"{record['d_loss']:.2f}", refresh=False)
        history.append(record)
    return history


@torch.no_grad()
def generate_samples(generator: ImplicitImageGenerator, contexts: torch.Tensor, seed: int, batch: int = 500) -> torch.Tensor:
    """Samples ``G(z, c)`` ``(N, 28, 28)``, one per context, with z drawn from a generator seeded ``seed``; no gradient."""
    rng = torch.Generator(contexts.device).manual_seed(seed)
    return torch.cat([generator.sample(len(c), rng, context=c)[0] for c in contexts.split(batch)])
