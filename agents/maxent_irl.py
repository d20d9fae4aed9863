"""MaxEnt inverse RL of a knowledge constraint (Hu et al. 2018, Eq. 8).

The learned reward f_phi defines q_phi ∝ p_theta exp(alpha f_phi). Maximising the data's
log-likelihood under q_phi has gradient ``alpha E_data[grad f] - alpha E_q[grad f]`` (Eq. 8);
E_q is estimated by self-normalised importance sampling from p_theta's samples, with weights
``softmax(alpha f_phi(x_i))`` — no density of p_theta is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from kcrl.constraints import Constraint
from kcrl.progress import progress
from kcrl.errors import ConfigError, check_alpha
from kcrl.losses import constraint_loss
from kcrl.posterior import ImportanceWeights

Sampler = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class MaxEntIRLArgs:
    """Hyperparameters of :class:`MaxEntIRL`."""

    steps: int = 400
    """number of Eq. 8 updates"""
    lr: float = 0.05
    """Adam learning rate (annealed linearly to 0 when ``lr_decay``)"""
    lr_decay: bool = True
    """anneal the learning rate over ``steps``"""
    alpha: float = 1.0
    """constraint weight in q ∝ p exp(alpha f)"""
    data_batch: int = 0
    """data samples per step (0: the whole data set)"""
    proposal_samples: int = 4096
    """p_theta samples per step for the importance-weighted E_q term"""
    weight_decay: float = 0.0
    """L2 penalty on the constraint's parameters"""
    seed: int = 0
    """seed of minibatching and proposal sampling"""


class MaxEntIRL:
    """Learns a constraint from data by Eq. 8.

    Args:
        constraint: the learnable f_phi (a :class:`~kcrl.constraints.Constraint` with parameters).
        sample_proposal: ``(n, generator) -> (x, context)``, draws from the generator p_theta.
        data: ``(x, context)`` demonstrations (context may be ``None``).
        args: :class:`MaxEntIRLArgs`.
    """

    def __init__(
        self,
        constraint: Constraint,
        sample_proposal: Sampler,
        data: tuple[torch.Tensor, torch.Tensor | None],
        args: MaxEntIRLArgs | None = None,
    ) -> None:
        self.args = args or MaxEntIRLArgs()
        check_alpha(self.args.alpha)
        if not constraint.learnable:
            raise ConfigError(
                f"MaxEntIRL needs a constraint with trainable parameters; {type(constraint).__name__} has none."
            )
        self.constraint, self.sample_proposal = constraint, sample_proposal
        self.data_x, self.data_context = data
        if len(self.data_x) == 0:
            raise ConfigError("MaxEntIRL needs at least one data sample; got an empty data set.")
        self.optimizer = torch.optim.Adam(constraint.parameters(), lr=self.args.lr, weight_decay=self.args.weight_decay)
        device = next(constraint.parameters()).device
        self.generator = torch.Generator(device).manual_seed(self.args.seed)
        self.iteration = 0

    def step(self) -> dict[str, float]:
        """One Eq. 8 update; returns loss, ESS fraction, log Z estimate and the constraint gap."""
        args = self.args
        if args.data_batch and args.data_batch < len(self.data_x):
            idx = torch.randint(len(self.data_x), (args.data_batch,), generator=self.generator, device=self.data_x.device)
            x_data = self.data_x[idx]
            c_data = None if self.data_context is None else self.data_context[idx]
        else:
            x_data, c_data = self.data_x, self.data_context
        x_q, c_q = self.sample_proposal(args.proposal_samples, self.generator)

        f_data = self.constraint(x_data, c_data)
        f_samples = self.constraint(x_q, c_q)
        weights = ImportanceWeights.from_scores(f_samples.detach(), args.alpha)
        loss = constraint_loss(f_data, f_samples, weights.log_weights, args.alpha)  # Eq. 8
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.lr_decay:
            for group in self.optimizer.param_groups:
                group["lr"] = args.lr * max(0.0, 1.0 - self.iteration / args.steps)
        self.optimizer.step()
        self.iteration += 1
        e_q = weights.expectation(f_samples.detach())
        return {
            "loss": loss.item(),
            "ess_fraction": weights.ess_fraction.item(),
            "log_z": weights.log_z.item(),
            "gap": (f_data.mean() - e_q).item(),  # E_data f - E_q f, -> 0 at the optimum
        }

    def train(self, steps: int | None = None, show_progress: bool = True) -> list[dict[str, float]]:
        history = []
        bar = progress(range(steps or self.args.steps), "MaxEnt IRL", enabled=show_progress)
        for _ in bar:
            stats = self.step()
            history.append(stats)
            bar.set_postfix(gap=f"{stats['gap']:.3f}", ess=f"{stats['ess_fraction']:.2f}", refresh=False)
        return history
