"""``GaussianRing-v0``: one action is one 2-D sample; the data are a ring of Gaussians.

The classic mode-collapse benchmark of implicit generative models (a mixture of K = 8
isotropic Gaussians, means evenly spaced on a circle of radius 2, std 0.02). Everything about
the data is known in closed form, so the metrics are exact:

* :func:`mixture_log_density` — log-likelihood of samples under the true mixture;
* :func:`high_quality_share` — share of samples within 3 std of some mode;
* :func:`mode_coverage` — number of modes that hold at least ``min_share`` of the samples
  within 3 std.

Constraints: the fixed one is the true mixture's log density, clipped below
(:class:`RingLogDensityConstraint`, the "knowledge"); the learnable one is an MLP
(:func:`learned_ring_constraint`) trained by MaxEnt IRL (Eq. 8,
:class:`kcrl.agents.maxent_irl.MaxEntIRL`). The base generator is the implicit
``x = G(z)`` of :mod:`kcrl.models.implicit_generator`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from kcrl.constraints import Constraint, NeuralConstraint
from kcrl.envs.onestep import BatchedOneStepEnv, OneStepEnv, OneStepTask
from kcrl.config import Range, check_values
from kcrl.envs.kwargs import VEC_RANGES, checked_kwargs
from kcrl.errors import ConfigError, ShapeError


# ---------------------------------------------------------------------- exact quantities
def ring_centres(n_modes: int = 8, radius: float = 2.0, device: torch.device | str | None = None) -> torch.Tensor:
    """Means of the mixture, ``(K, 2)``: ``radius * (cos, sin)(2 pi k / K)``, k = 0..K-1."""
    angles = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64, device=device) / n_modes
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=-1)).float()


def _check_points(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[1] != 2:
        raise ShapeError(f"expected 2-D points of shape (N, 2); got {tuple(x.shape)}.")
    return x


def mixture_log_density(x: torch.Tensor, centres: torch.Tensor, std: float) -> torch.Tensor:
    """``log (1/K) sum_k N(x; mu_k, std^2 I_2)`` for points ``(N, 2)`` -> ``(N,)``, in log space."""
    x = _check_points(x)
    centres = centres.to(x.device, x.dtype)
    sq = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)  # (N, K)
    log_norm = math.log(2 * math.pi * std**2) + math.log(centres.shape[0])
    return torch.logsumexp(-sq / (2 * std**2), dim=-1) - log_norm


def nearest_mode(x: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance to the nearest mean and its index, each ``(N,)``."""
    x = _check_points(x)
    dist = torch.cdist(x.float(), centres.to(x.device).float())  # (N, K)
    return dist.min(dim=-1)


def high_quality_share(x: torch.Tensor, centres: torch.Tensor, std: float, n_std: float = 3.0) -> float:
    """Share of samples within ``n_std`` standard deviations of some mode (Euclidean distance)."""
    dist, _ = nearest_mode(x, centres)
    return (dist <= n_std * std).float().mean().item()


def mode_coverage(
    x: torch.Tensor, centres: torch.Tensor, std: float, min_share: float = 0.01, n_std: float = 3.0
) -> int:
    """Number of modes with at least ``min_share`` of all samples within ``n_std`` std of them."""
    dist, idx = nearest_mode(x, centres)
    close = dist <= n_std * std
    counts = torch.bincount(idx[close], minlength=centres.shape[0])  # (K,)
    return int((counts >= min_share * x.shape[0]).sum())


# ---------------------------------------------------------------------- constraints
class RingLogDensityConstraint(Constraint):
    """Fixed knowledge: ``f(x) = max(log p_data(x), floor)``, the true mixture's log density.

    The floor keeps rewards finite and bounded far from the ring (it also zeroes the gradient
    there: a reparameterised update, Eq. 12, moves only samples within a few std of a mode).

    Args:
        centres: mixture means, ``(K, 2)``.
        std: mixture std.
        floor: lower clip of the log density (``None``: no clip).
    """

    def __init__(self, centres: torch.Tensor, std: float, floor: float | None = -10.0) -> None:
        super().__init__()
        self.register_buffer("centres", centres.clone().float())
        self.std, self.floor = float(std), floor

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        log_p = mixture_log_density(x, self.centres, self.std)  # (N,)
        return log_p if self.floor is None else log_p.clamp(min=self.floor)

    def extra_repr(self) -> str:
        return f"std={self.std}, floor={self.floor}"


class RingConstraintNet(nn.Module):
    """An MLP energy ``R^2 -> R``: the learnable constraint f_phi for Eq. 8.

    Shapes: ``x (N, 2) -> (N,)``.
    """

    def __init__(self, hidden: int = 128, depth: int = 3) -> None:
        super().__init__()
        layers, width = [], 2
        for _ in range(depth - 1):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).squeeze(-1)  # (N,)


def learned_ring_constraint(hidden: int = 128, depth: int = 3, seed: int = 0) -> NeuralConstraint:
    """A fresh learnable constraint (an MLP, seeded) for Eq. 8 on the ring."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = RingConstraintNet(hidden, depth)
    return NeuralConstraint(net, uses_context=False)


# ---------------------------------------------------------------------- the world
class GaussianRingTask(OneStepTask):
    """The ring's world: data distribution, exact metrics, the fixed constraint.

    Args:
        n_modes: K (>= 1).
        radius: radius of the ring of means (> 0).
        std: std of each Gaussian (> 0).
        alpha: weight of the constraint in the reward.
        log_density_floor: lower clip of the fixed constraint (``None``: no clip; rewards can
            then be very negative far from the ring).
        bound: the action space is ``[-bound, bound]^2``; default ``radius + max(1, 6 std)``.
        constraint: the reward's constraint; defaults to the fixed clipped log density.
    """

    def __init__(
        self,
        n_modes: int = 8,
        radius: float = 2.0,
        std: float = 0.02,
        alpha: float = 1.0,
        log_density_floor: float | None = -10.0,
        bound: float | None = None,
        constraint: Constraint | None = None,
    ) -> None:
        if not (isinstance(n_modes, int) and n_modes >= 1 and radius > 0 and std > 0):
            raise ConfigError(
                f"GaussianRing needs an integer n_modes >= 1, radius > 0 and std > 0; got "
                f"n_modes={n_modes!r}, radius={radius!r}, std={std!r}."
            )
        check_values({"radius": radius, "std": std, "log_density_floor": log_density_floor, "bound": bound},
                     RING_RANGES, label="GaussianRingTask argument")  # finiteness (inf passes the check above)
        self.n_modes, self.radius, self.std = n_modes, float(radius), float(std)
        self.bound = float(bound) if bound is not None else self.radius + max(1.0, 6 * self.std)
        if self.bound <= 0:
            raise ConfigError(f"bound must be positive; got {bound!r}.")
        self.action_space = spaces.Box(-self.bound, self.bound, shape=(2,), dtype=np.float32)
        self.centres = ring_centres(n_modes, radius)  # (K, 2)
        self.true_constraint = RingLogDensityConstraint(self.centres, std, log_density_floor)
        super().__init__(constraint if constraint is not None else self.true_constraint, alpha)

    def to(self, device):
        super().to(device)
        self.true_constraint.to(device)
        self.centres = self.centres.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.centres.device

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p_data(x)``, ``(N,)``, unclipped."""
        return mixture_log_density(x, self.centres, self.std)

    def sample_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n i.i.d. data points, ``(n, 2)``: a uniform mode plus ``std`` Gaussian noise."""
        modes = torch.randint(self.n_modes, (n,), generator=generator, device=self.device)
        noise = torch.randn(n, 2, generator=generator, device=self.device)
        return self.centres[modes] + self.std * noise

    def metrics(self, x: torch.Tensor, min_share: float = 0.01, n_std: float = 3.0) -> dict[str, float]:
        """Exact quality of samples ``(N, 2)``: the three metrics of the module docstring."""
        x = _check_points(x).to(self.device).float()
        return {
            "log_likelihood": self.log_density(x).mean().item(),
            "high_quality_share": high_quality_share(x, self.centres, self.std, n_std),
            "mode_coverage": mode_coverage(x, self.centres, self.std, min_share, n_std),
            "n_modes": self.n_modes,
        }


RING_RANGES: dict[str, Range] = {
    "n_modes": Range(ge=1, integer=True),
    "radius": Range(gt=0),
    "std": Range(gt=0),
    "log_density_floor": Range(),  # finite (or None: no clip)
    "bound": Range(gt=0),
}
"""Value ranges of the task's arguments (GaussianRingTask and both entry points)."""


@checked_kwargs("GaussianRing-v0", RING_RANGES)
def make_gaussian_ring_env(
    n_modes: int = 8,
    radius: float = 2.0,
    std: float = 0.02,
    alpha: float = 1.0,
    log_density_floor: float | None = -10.0,
    bound: float | None = None,
    render_mode: str | None = None,
) -> "GaussianRingEnv":
    """Entry point of ``GaussianRing-v0``; see :class:`GaussianRingEnv`."""
    return GaussianRingEnv(GaussianRingTask(n_modes, radius, std, alpha, log_density_floor, bound), render_mode)


@checked_kwargs("GaussianRing-v0", {**RING_RANGES, **VEC_RANGES})
def make_gaussian_ring_vec_env(
    num_envs: int = 1,
    n_modes: int = 8,
    radius: float = 2.0,
    std: float = 0.02,
    alpha: float = 1.0,
    log_density_floor: float | None = -10.0,
    bound: float | None = None,
    device: str = "cpu",
    autoreset_mode: str = "NextStep",
    max_episode_steps: int | None = None,
) -> BatchedOneStepEnv:
    """Vector entry point of ``GaussianRing-v0`` (``gymnasium.make_vec``)."""
    task = GaussianRingTask(n_modes, radius, std, alpha, log_density_floor, bound)
    return BatchedOneStepEnv(task, num_envs, device, autoreset_mode)


class GaussianRingEnv(OneStepEnv):
    """Place one 2-D point; it is scored by how likely it is under a ring of Gaussians.

    ## Description
    The data are a mixture of ``n_modes`` Gaussians (std ``std``) with means evenly spaced on a
    circle of radius ``radius``. An episode is one sample: the agent (a generator) outputs a
    point x and receives ``alpha * f(x)``. With the default constraint, f is the true mixture's
    log density, clipped below at ``log_density_floor``, so the reward-maximising policy puts
    its mass on the modes and the soft-optimal one is ``q ∝ p_theta exp(alpha f)``.
    ``env.unwrapped.task`` holds the exact data distribution and metrics.

    ## Action Space
    ``Box(-bound, bound, (2,), float32)``, the point; ``bound = radius + max(1, 6 std)`` by
    default (3.0). Points outside raise ``InvalidActionError``.

    ## Observation Space
    ``Discrete(1)``: the task has no context, the observation is always 0.

    ## Rewards
    ``alpha * f(x)``; ``info["constraint"]`` is f(x) and ``info["reward_constraint"]`` the reward.

    ## Starting State
    Nothing is placed yet.

    ## Episode End
    Termination after the one action. There is no truncation.

    ## Arguments
    ``n_modes=8``, ``radius=2.0``, ``std=0.02``, ``alpha=1.0``, ``log_density_floor=-10.0``,
    ``bound=None``. The batched form (``gymnasium.make_vec(..., vectorization_mode=
    "vector_entry_point")``) also takes ``device`` and ``autoreset_mode``.

    ## Example
        >>> import gymnasium as gym, numpy as np, kcrl
        >>> env = gym.make("GaussianRing-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(np.array([2.0, 0.0], dtype=np.float32))
        >>> terminated, round(reward, 3)  # log(1 / (8 * 2 pi 0.02^2)) at a mode's centre
        (True, 3.907)
        >>> venv = gym.make_vec("GaussianRing-v0", num_envs=3, vectorization_mode="vector_entry_point")
        >>> obs, info = venv.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = venv.step(np.zeros((3, 2), dtype=np.float32))
        >>> reward.tolist(), terminated.tolist()  # the centre of the ring is far from every mode
        ([-10.0, -10.0, -10.0], [True, True, True])

    ## Version History
    * v0: initial version.
    """
