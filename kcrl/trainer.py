"""Algorithm 1 of Hu et al. (2018): learn the constraint and the generator jointly.

Each iteration:

1. sample K x_i ~ p_theta (per context), no gradient;
2. **constraint step** (the variant decides how f_phi moves):

   ============  ==============================================================  =========
   variant       constraint update                                               paper
   ============  ==============================================================  =========
   ``learned``   Eq. 8 — MaxEnt IRL: data term minus importance-weighted term     full method
   ``mstep``     Eq. 5's M-step — maximise E_q[f_phi] on the model's own samples  baseline
   ``binary_d``  logistic real-vs-generated classifier, f = its logit            GAN-style baseline
   ``fixed``     none (a hand-written or pretrained constraint)                  baseline
   ``base``      none, and no PR term: L(theta) only (MLE by default)            baseline
   ============  ==============================================================  =========

3. **generator step**: its own objective L(theta) (weight ``mle_weight``; MLE on data by default,
   or any ``objective`` such as a GAN loss) plus ``lam`` times the PR term (``generator_update``):

   ================  ================================================  ==================================
   update            PR term                                           needs
   ================  ================================================  ==================================
   ``eq10``          Eq. 10, ``-sum_i w_i log p_theta(x_i)``           ``log_prob`` (an explicit density)
   ``eq12``          Eq. 12 by the score function of ``E_p[alpha f]``  ``log_prob``
   ``eq12_reparam``  Eq. 12 reparameterised, ``-alpha E_z[f(G(z))]``   differentiable samples only
   ================  ================================================  ==================================

   ``eq12_reparam`` is the update of an *implicit* generator x = G_theta(z, c) (one with ``sample``
   but no ``log_prob``, see :class:`ImplicitGenerator`): the constraint step and the importance
   weights need no density, the gradient flows through x into theta.

The trainer takes its parts — generator, constraint, data — as arguments and logs, every
iteration: ESS and ESS/K, the log Z estimate, the constraint gap E_data f - E_q f, an estimate of
KL(p_theta || p_theta_0) to the starting model (only for a generator with ``log_prob``: an implicit
model has no density, and the key is left out rather than filled with a stand-in), and any task
metrics from ``evaluate``. Checkpoints (generator, constraint, optimisers, RNG states, iteration,
history, and the state of a :class:`GeneratorStep` or :class:`GeneratorObjective` that has one) are
atomic; :meth:`PRTrainer.train` with ``resume=True`` continues exactly where a killed run stopped.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from kcrl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from kcrl.constraints import Constraint
from kcrl.errors import ConfigError, NonFiniteError, check_alpha, require_optional
from kcrl.losses import constraint_loss, reparameterised_loss, score_function_loss, weighted_mle_loss
from kcrl.posterior import ImportanceWeights, LowESSWarning
from kcrl.progress import progress

VARIANTS = ("learned", "mstep", "binary_d", "fixed", "base")
GENERATOR_UPDATES = ("eq10", "eq12", "eq12_reparam")
# TensorBoard namespaces of the logged quantities; task metrics from ``evaluate`` go under eval/
NAMESPACES = {
    "ess": "weights/ess", "ess_fraction": "weights/ess_fraction", "log_z": "weights/log_z",
    "constraint_gap": "constraint/gap", "constraint_data": "constraint/data_mean",
    "kl_to_base": "generator/kl_to_base", "nll_data": "generator/nll_data",
    "constraint_loss": "constraint/loss", "generator_loss": "generator/loss",
    "objective": "generator/objective", "d_loss": "objective/d_loss", "g_adversarial": "objective/g_adversarial",
    "reconstruction": "objective/reconstruction",
}


class ExplicitGenerator(Protocol):
    """What the trainer needs of a generator p_theta (an ``nn.Module``)."""

    def sample(self, n: int, generator: torch.Generator | None = None, context: torch.Tensor | None = None):
        """``(x, log p_theta(x))`` for n samples (per row of ``context`` if given)."""

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable ``log p_theta(x | context)``, shape ``(N,)``."""

    # Optional: ``sample_log_prob(x, context)``, the density the PR term raises on the samples when
    # that is not ``log_prob`` (e.g. the density of a sampler that bans tokens).
    # Optional: ``sample`` may return a third item, ``log p(x) - log r(x)`` per sample, when its
    # draws come from a proposal r other than the density p the PR term raises (``sample_log_prob``
    # if present, else ``log_prob``); the importance weights, Eq. 8 and Eq. 10 then target
    # q ∝ p exp(alpha f) by self-normalised importance sampling instead of r exp(alpha f).


class ImplicitGenerator(Protocol):
    """An implicit generator x = G_theta(z, c) (an ``nn.Module``): it can be sampled, has no density.

    ``sample`` returns ``(x, None)`` with x differentiable in theta (reparameterised: the noise z is
    drawn from ``generator``, x is a deterministic function of it). Train it with
    ``generator_update="eq12_reparam"`` and an ``objective`` (L(theta) cannot be MLE).
    """

    def sample(self, n: int, generator: torch.Generator | None = None, context: torch.Tensor | None = None):
        """``(x, None)`` for n samples (per row of ``context`` if given), differentiable in theta."""


class GeneratorObjective(Protocol):
    """The generator's own objective L(theta) when it is not MLE (e.g. a GAN loss).

    ``objective(generator, x, context, rng) -> (loss, stats)``: called once per iteration with the
    data batch ``x (B, ...)`` and its ``context`` (or ``None``) and the trainer's random stream;
    returns L(theta) as a differentiable scalar (the trainer scales it by ``mle_weight``, adds the
    PR term and steps the generator) and a ``dict[str, float]`` that is added to the log line.
    Parts of its own (a discriminator and its optimiser) it updates itself, inside the call.

    Like a :class:`GeneratorStep`, an objective with state should have ``state_dict()`` and
    ``load_state_dict(dict)`` (tensors, numbers, strings and containers only): the trainer saves it
    under ``"objective"`` and refuses resumable checkpoints without them.
    """

    def __call__(
        self, generator: torch.nn.Module, x: torch.Tensor, context: torch.Tensor | None, rng: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


def has_density(generator: Any) -> bool:
    """Whether a generator is explicit, i.e. has a callable ``log_prob``."""
    return callable(getattr(generator, "log_prob", None))


class GeneratorStep(Protocol):
    """A replacement for the Eq. 10/12 PR term: ``step(trainer) -> dict`` of logged numbers.

    Called once per iteration, after the trainer's own L(theta) update, with the trainer (its
    ``constraint``, ``config``, ``iteration``); e.g. :class:`kcrl.agents.generator_steps.AgentStep`.

    A step that keeps state of its own across calls (an optimiser, a random stream, a counter
    that drives a schedule) should also have ``state_dict() -> dict`` and ``load_state_dict(dict)``:
    the trainer then saves that dict in its checkpoint under ``"generator_step"`` and restores it on
    resume. It must hold only tensors, numbers, strings, lists, tuples and dicts (checkpoints are
    read with ``torch.load(weights_only=True)``; store random-generator states as tensors). A step
    without the two methods can still train, but :meth:`PRTrainer.train` refuses to write
    resumable checkpoints with it (see :func:`checkpointable`).
    """

    def __call__(self, trainer: "PRTrainer") -> dict[str, float]: ...


def checkpointable(step: Any) -> bool:
    """Whether a generator step can be saved and restored (has ``state_dict`` and ``load_state_dict``)."""
    return callable(getattr(step, "state_dict", None)) and callable(getattr(step, "load_state_dict", None))


@dataclass
class PRConfig:
    """Configuration of :class:`PRTrainer` (Algorithm 1)."""

    variant: str = "learned"
    """one of learned, mstep, binary_d, fixed, base"""
    generator_update: str = "eq10"
    """eq10 (importance-weighted MLE), eq12 (score function) or eq12_reparam (reparameterised, for
    implicit generators with differentiable samples)"""
    iterations: int = 300
    """number of Algorithm 1 iterations"""
    alpha: float = 1.0
    """constraint weight in q ∝ p_theta exp(alpha f)"""
    lam: float = 1.0
    """lambda, the weight of the PR term in the generator objective"""
    mle_weight: float = 1.0
    """weight of the generator's own objective L(theta) (MLE on data, or the trainer's ``objective``)"""
    samples: int = 1024
    """K, generator samples per iteration (unconditional generators)"""
    contexts: int = 16
    """conditional generators: contexts per iteration for the PR term (taken from the data batch)"""
    samples_per_context: int = 8
    """conditional generators: K samples per context; weights are normalised within each context"""
    length_normalise: bool = False
    """Eq. 10 with per-token log-likelihoods (counters the length bias); needs ``pad_id``"""
    pad_id: int | None = None
    """padding token of sequence samples (for ``length_normalise``)"""
    data_batch: int = 1024
    """data samples per iteration"""
    constraint_steps: int = 1
    """constraint updates per iteration"""
    generator_lr: float = 0.05
    """Adam learning rate of the generator"""
    constraint_lr: float = 0.05
    """Adam learning rate of the constraint"""
    lr_decay: bool = True
    """anneal both learning rates linearly to 0 over ``iterations``"""
    ess_warn_fraction: float = 0.05
    """warn when ESS/K falls below this"""
    checkpoint_every: int = 50
    """iterations between checkpoints (0: only at the end)"""
    eval_every: int = 50
    """iterations between calls of ``evaluate``"""
    seed: int = 0
    """seed of sampling and minibatching"""

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            from kcrl.errors import unknown_name

            raise unknown_name("variant", self.variant, VARIANTS)
        if self.generator_update not in GENERATOR_UPDATES:
            raise ConfigError(
                f"generator_update must be 'eq10', 'eq12' or 'eq12_reparam'; got {self.generator_update!r}."
            )
        check_alpha(self.alpha)
        for name in ("iterations", "samples", "data_batch", "constraint_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1; got {getattr(self, name)}.")
        from kcrl.config import PR_RANGES, check_ranges  # bounds, finiteness of every field (kcrl.config)
        check_ranges(self, PR_RANGES)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PRConfig":
        """Build from a mapping over the defaults (:func:`kcrl.config.from_mapping`): unknown keys
        (with a suggestion) and values of the wrong type are rejected."""
        from kcrl.config import from_mapping

        return from_mapping(cls, values)


class PRTrainer:
    """Algorithm 1 with pluggable parts.

    Args:
        generator: p_theta, an ``nn.Module`` with ``sample`` and ``log_prob`` (see :class:`ExplicitGenerator`),
            or an implicit one with differentiable samples and no ``log_prob`` (see :class:`ImplicitGenerator`;
            needs ``objective`` and ``generator_update="eq12_reparam"``).
        constraint: f_phi; learnable for ``learned``/``mstep``/``binary_d``.
        data: ``(x, context)`` training data (``context`` may be ``None``).
        config: :class:`PRConfig`.
        evaluate: optional ``trainer -> dict[str, float]`` of task metrics (validation data).
        generator_step: optional ``trainer -> dict`` (a :class:`GeneratorStep`) that replaces the Eq. 10/12
            PR term by an agent's updates in the env whose reward is the current constraint (e.g.
            :class:`kcrl.agents.generator_steps.AgentStep`); L(theta) is still applied here. Its
            ``state_dict()``, if it has one, is part of the trainer's checkpoint.
        objective: optional L(theta) other than MLE (a :class:`GeneratorObjective`, e.g.
            :class:`kcrl.models.implicit_image_generator.ConditionalGANObjective`); ``None`` is MLE,
            ``-mle_weight * mean log p_theta(data)``. Its ``state_dict()``, if it has one, is checkpointed.

    Raises:
        ConfigError: a trained variant with a frozen constraint, no data, or a generator without
            ``log_prob`` asked for MLE or for a density-based PR term (eq10, eq12).
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        constraint: Constraint,
        data: tuple[torch.Tensor, torch.Tensor | None],
        config: PRConfig | None = None,
        evaluate: Callable[["PRTrainer"], dict[str, float]] | None = None,
        generator_step: GeneratorStep | None = None,
        objective: GeneratorObjective | None = None,
    ) -> None:
        self.config = config = config or PRConfig()
        _check_density_needs(generator, config, generator_step, objective)
        if config.variant in ("learned", "mstep", "binary_d") and not constraint.learnable:
            raise ConfigError(
                f"variant {config.variant!r} trains the constraint, but {type(constraint).__name__} has no "
                "trainable parameters; use variant='fixed' or pass a learnable constraint."
            )
        self.generator, self.constraint, self.evaluate = generator, constraint, evaluate
        self.generator_step, self.objective = generator_step, objective
        self.data_x, self.data_context = data
        if len(self.data_x) == 0:
            raise ConfigError("PRTrainer needs training data; got an empty data set.")
        self.device = next(generator.parameters()).device
        self.initial_generator = copy.deepcopy(generator).requires_grad_(False)  # p_theta_0, for KL-to-base
        self.generator_optimizer = torch.optim.Adam(generator.parameters(), lr=config.generator_lr)
        params = [p for p in constraint.parameters() if p.requires_grad]
        self.constraint_optimizer = torch.optim.Adam(params, lr=config.constraint_lr) if params else None
        self.rng = torch.Generator(self.device).manual_seed(config.seed)
        self.iteration = 0
        self.history: list[dict[str, float]] = []
        self.constraint_frozen = False
        """True stops the constraint step (e.g. early stopping on held-out data); saved in checkpoints"""

    # ------------------------------------------------------------------ one iteration
    def _data_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = len(self.data_x)
        if self.config.data_batch >= n:
            return self.data_x, self.data_context
        idx = torch.randint(n, (self.config.data_batch,), generator=self.rng, device=self.data_x.device)
        return self.data_x[idx], None if self.data_context is None else self.data_context[idx]

    def _sample(self, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int], torch.Tensor | None]:
        """Generator samples, their grouping (G groups of K, weights normalised per group) and their
        log importance ratio ``log p_theta(x) - log r(x)`` to the sampler r (``None``: r = p_theta).

        The ``contexts`` PR contexts are drawn at random from the data batch (without replacement),
        so every context of the data is reached even when the batch is the whole data set.
        """
        cfg = self.config
        with torch.no_grad():
            if context is None:
                out = self.generator.sample(cfg.samples, generator=self.rng)
                return out[0], None, (1, cfg.samples), sampler_log_ratio(out)
            if len(context) > cfg.contexts:
                context = context[torch.randperm(len(context), generator=self.rng, device=self.rng.device)[: cfg.contexts]]
            context = context.repeat_interleave(cfg.samples_per_context, dim=0)
            out = self.generator.sample(len(context), generator=self.rng, context=context)
            return out[0], context, (len(context) // cfg.samples_per_context, cfg.samples_per_context), sampler_log_ratio(out)

    def _constraint_step(self, x_data, c_data, x_q, c_q, groups: tuple[int, int], log_ratio: torch.Tensor | None) -> float:
        cfg = self.config
        for _ in range(cfg.constraint_steps):
            f_samples = self._global_rows(self._constraint_forward(x_q, c_q)).view(groups)  # (G, K)
            if cfg.variant == "learned":  # Eq. 8
                log_w = ImportanceWeights.from_scores(f_samples.detach(), cfg.alpha, log_ratio).log_weights
                loss = constraint_loss(self._global_rows(self._constraint_forward(x_data, c_data)), f_samples, log_w, cfg.alpha)
            elif cfg.variant == "mstep":  # Eq. 5: phi follows q's own samples, no data anchor
                log_w = ImportanceWeights.from_scores(f_samples.detach(), cfg.alpha, log_ratio).log_weights
                loss = -cfg.alpha * (torch.exp(log_w) * f_samples).sum() / groups[0]
            else:  # binary_d: labels_real_is_one; f is the classifier's logit
                f_data = self._global_rows(self._constraint_forward(x_data, c_data))
                loss = F.binary_cross_entropy_with_logits(f_data, torch.ones_like(f_data)) + \
                    F.binary_cross_entropy_with_logits(f_samples, torch.zeros_like(f_samples))
            self._check(loss, "constraint loss")
            self.constraint_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.constraint_optimizer.step()
        return loss.item()

    def _anneal(self) -> None:
        scale = max(0.0, 1.0 - self.iteration / self.config.iterations) if self.config.lr_decay else 1.0
        for opt, lr in ((self.generator_optimizer, self.config.generator_lr), (self.constraint_optimizer, self.config.constraint_lr)):
            for group in [] if opt is None else opt.param_groups:
                group["lr"] = lr * scale

    def step(self) -> dict[str, float]:
        """One iteration of Algorithm 1; returns its log line."""
        cfg = self.config
        self._anneal()
        x_data, c_data = self._data_batch()
        stats: dict[str, float] = {"iteration": self.iteration + 1}
        if cfg.variant != "base":  # base (MLE only) uses no samples: it spends no time drawing them
            x_q, c_q, groups, log_ratio = self._sample(c_data if self.data_context is not None else None)
            if log_ratio is not None:
                log_ratio = self._global_rows(log_ratio).view(groups)
        if cfg.variant in ("learned", "mstep", "binary_d") and not self.constraint_frozen:
            stats["constraint_loss"] = self._constraint_step(x_data, c_data, x_q, c_q, groups, log_ratio)

        if self.objective is None:
            log_p_data = self._global_rows(self._generator_log_prob(x_data, c_data))
            loss = -cfg.mle_weight * log_p_data.mean()  # L(theta): MLE on data
        else:  # L(theta): the generator's own objective (e.g. a GAN loss), which updates its own parts
            own, own_stats = self.objective(self.generator, x_data, c_data, self.rng)
            stats.update(objective=own.item(), **own_stats)
            loss = cfg.mle_weight * own
        if cfg.variant != "base":
            with torch.no_grad():
                f_q = self._global_rows(self.constraint.predict(x_q, c_q)).view(groups)  # (G, K)
                f_data = self._global_rows(self.constraint.predict(x_data, c_data))
            weights = ImportanceWeights.from_scores(f_q, cfg.alpha, log_ratio)
            ess_fraction = weights.ess_fraction.mean().item()
            if ess_fraction < cfg.ess_warn_fraction:
                warnings.warn(f"iteration {self.iteration + 1}: ESS/K = {ess_fraction:.3f}", LowESSWarning, stacklevel=2)
            stats.update(  # logged whichever generator step follows (Eq. 10, Eq. 12 or an agent's)
                ess=weights.ess.mean().item(),
                ess_fraction=ess_fraction,
                log_z=weights.log_z.mean().item(),
                constraint_gap=(f_data.mean() - weights.expectation(f_q).mean()).item(),
                constraint_data=f_data.mean().item(),
            )
        if cfg.variant != "base" and self.generator_step is None and cfg.generator_update == "eq12_reparam":
            loss = loss + cfg.lam * self._reparameterised_pr_loss(c_q, groups)
        elif cfg.variant != "base" and self.generator_step is None:
            log_p_q = self._global_rows(self._sample_log_prob(x_q, c_q)).view(groups)
            if cfg.generator_update == "eq10":
                lengths = None
                if cfg.length_normalise:
                    if cfg.pad_id is None:
                        raise ConfigError("length_normalise=True needs pad_id, the padding token of the samples.")
                    lengths = (x_q != cfg.pad_id).sum(-1).view(groups)
                pr_loss = weighted_mle_loss(log_p_q, weights.log_weights, lengths)  # Eq. 10
            else:  # Eq. 12, with a leave-one-out baseline within each group
                rewards = cfg.alpha * f_q
                k = groups[1]
                baseline = (rewards.sum(-1, keepdim=True) - rewards) / (k - 1) if k > 1 else torch.zeros_like(rewards)
                pr_loss = score_function_loss(log_p_q.flatten(), rewards.flatten(), baseline=baseline.flatten())
            loss = loss + cfg.lam * pr_loss
        self._check(loss, "generator loss")
        stats["generator_loss"] = loss.item()
        self.generator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.generator_optimizer.step()
        if self.generator_step is not None and cfg.variant != "base":
            stats.update(self.generator_step(self))
        if cfg.variant != "base" and has_density(self.generator):
            with torch.no_grad():  # ≈ KL(p_theta || p_theta_0), on this iteration's samples
                log_ratio = self.generator.log_prob(x_q, c_q) - self.initial_generator.log_prob(x_q, c_q)
                stats["kl_to_base"] = self._global_rows(log_ratio).mean().item()
        if self.objective is None:
            stats["nll_data"] = -log_p_data.mean().item()
        self.iteration += 1
        return stats

    def _reparameterised_pr_loss(self, context: torch.Tensor | None, groups: tuple[int, int]) -> torch.Tensor:
        """Eq. 12, reparameterised: ``-alpha E_z[f_phi(G_theta(z, c))]`` on fresh differentiable samples.

        One sample per row of ``context`` (the PR contexts, each repeated K times; ``None``:
        ``config.samples`` unconditional samples). The gradient is that of KL(p_theta || q) up to
        p_theta's entropy term (which an implicit model cannot evaluate); it reaches theta through
        x, and the constraint's parameters, if trainable, are not moved by it. Samples without a
        gradient are refused; discrete draws whose gradient is zero (``torch.bernoulli``) cannot be
        told apart here and give a zero PR term, so use eq10/eq12 for those.
        """
        n = groups[0] * groups[1]
        if context is None:
            x, _ = self.generator.sample(n, generator=self.rng)
        else:
            x, _ = self.generator.sample(n, generator=self.rng, context=context)  # (G*K, ...), with grad
        if not x.requires_grad:
            raise ConfigError(
                f"generator_update='eq12_reparam' needs samples that are differentiable in theta, but "
                f"{type(self.generator).__name__}.sample returned x without a gradient (detached, or drawn under "
                "no_grad). Use eq10 or eq12 for a generator with a density, or make sample() reparameterised."
            )
        f = self._global_rows(self._constraint_forward(x, context))  # (G*K,)
        return reparameterised_loss(f, self.config.alpha)  # Eq. 12

    # ------------------------------------------------------------------ data-parallel hooks
    # One process uses these defaults. kcrl.distributed.DistributedPRTrainer overrides them: each
    # process then holds a shard of the global batch, ``_global_rows`` all-gathers per-sample values
    # so that every loss above is the global-batch loss, and DDP averages the gradients.
    is_main_process = True
    """whether this process writes checkpoints and result files (rank 0 under torch.distributed)"""

    def _global_rows(self, values: torch.Tensor) -> torch.Tensor:
        """Per-sample values of this process's rows ``(n, ...)`` -> those of the global batch ``(N, ...)``."""
        return values

    def _generator_log_prob(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Differentiable ``log p_theta(x | context)``, shape ``(n,)``."""
        return self.generator.log_prob(x, context)

    def _sample_log_prob(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Differentiable log-density of the generator's own samples under the distribution its
        ``sample`` draws from, for the PR term: ``generator.sample_log_prob`` where the generator
        has one (a sampler that bans tokens, e.g. ``TrainerAdapter(density="proposal")``), else
        ``log_prob``. L(theta) always uses ``log_prob``: the data are not draws of the sampler."""
        sample_log_prob = getattr(self.generator, "sample_log_prob", None)
        return sample_log_prob(x, context) if sample_log_prob is not None else self._generator_log_prob(x, context)

    def _constraint_forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Differentiable ``f_phi(x | context)``, shape ``(n,)``."""
        return self.constraint(x, context)

    def _save(self, path: Path) -> None:
        save_checkpoint(path, self.state_dict())

    def _restore(self, path: Path) -> dict[str, Any] | None:
        """The checkpoint at ``path``, or ``None`` when there is none yet.

        Read onto the CPU: RNG states must stay CPU tensors, and ``load_state_dict`` copies the
        parameters and optimiser states onto the models' device.
        """
        return load_checkpoint(path, "cpu") if path.is_file() else None

    @staticmethod
    def _check(value: torch.Tensor, what: str) -> None:
        if not torch.isfinite(value).all():
            raise NonFiniteError(
                f"{what} became {value.item()} — training stopped before writing a checkpoint. "
                "Lower the learning rates or alpha, or check the constraint's outputs."
            )

    # ------------------------------------------------------------------ loop and checkpoints
    def train(
        self, out: str | Path | None = None, resume: bool = False, show_progress: bool = True,
        stop_after: int | None = None, tensorboard: bool = False,
    ) -> list[dict[str, float]]:
        """Run to ``config.iterations``; checkpoints to ``out/checkpoint.pt`` when ``out`` is given.

        ``stop_after`` ends the call early after that many iterations (the run can be resumed).
        ``tensorboard`` writes namespaced scalars (weights/, constraint/, generator/, eval/) to
        ``out/tensorboard`` (needs the ``tensorboard`` extra).
        """
        cfg = self.config
        path = Path(out) / "checkpoint.pt" if out is not None else None
        resumable = path is not None and bool(cfg.checkpoint_every or resume or stop_after is not None)
        if resumable:
            _refuse_unsavable(self.generator_step, "generator step", "step", "GeneratorStep",
                              "; the final checkpoint then holds the weights only")
            _refuse_unsavable(self.objective, "objective", "objective", "GeneratorObjective", "")
        if resume:
            if path is None:
                raise ConfigError("resume=True needs the run's output folder (out=...).")
            state = self._restore(path)
            if state is not None:
                self.load_state_dict(state)
        todo = range(self.iteration, cfg.iterations if stop_after is None else min(cfg.iterations, self.iteration + stop_after))
        writer = None
        if tensorboard:
            if out is None:
                raise ConfigError("tensorboard=True needs an output folder (out=...).")
            require_optional("tensorboard", "tensorboard")
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(Path(out) / "tensorboard"), purge_step=self.iteration + 1)
        bar = progress(todo, f"Algorithm 1 ({cfg.variant})", enabled=show_progress)
        for _ in bar:
            stats = self.step()
            if self.evaluate is not None and (self.iteration % cfg.eval_every == 0 or self.iteration == cfg.iterations):
                stats.update(self.evaluate(self))
            self.history.append(stats)
            if writer is not None:
                for key, value in stats.items():
                    if key != "iteration":
                        writer.add_scalar(NAMESPACES.get(key, f"eval/{key}"), value, self.iteration)
            if "ess_fraction" in stats:
                bar.set_postfix(ess=f"{stats['ess_fraction']:.2f}", gap=f"{stats['constraint_gap']:.3f}", refresh=False)
            if path is not None and cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0:
                self._save(path)
        if path is not None:
            self._save(path)
        if writer is not None:
            writer.close()
        return self.history

    def state_dict(self) -> dict[str, Any]:
        state = {
            "format": "kcrl.PRTrainer/1",
            "config": asdict(self.config),
            "iteration": self.iteration,
            "generator": self.generator.state_dict(),
            "initial_generator": self.initial_generator.state_dict(),
            "constraint": self.constraint.state_dict(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "constraint_optimizer": None if self.constraint_optimizer is None else self.constraint_optimizer.state_dict(),
            "rng": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "constraint_frozen": self.constraint_frozen,
            # a checkpointable step's own state (None: no step, or one that cannot be saved)
            "generator_step": self.generator_step.state_dict() if checkpointable(self.generator_step) else None,
        }
        if self.objective is not None:  # only with an objective: MLE runs keep their checkpoint layout
            state["objective"] = self.objective.state_dict() if checkpointable(self.objective) else None
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != "kcrl.PRTrainer/1":
            raise CheckpointError(f"not a PRTrainer checkpoint (format {state.get('format')!r}).")
        if state["config"] != asdict(self.config):
            changed = sorted(k for k in state["config"] if state["config"][k] != asdict(self.config).get(k))
            raise CheckpointError(
                f"the checkpoint was written with a different config (differs in {changed}); resume with the "
                "same config, or start a new run in another folder."
            )
        step, step_state = self.generator_step, state.get("generator_step")
        if step is not None and not checkpointable(step):
            raise CheckpointError(
                f"the generator step {type(step).__name__} has no load_state_dict(), so this trainer cannot be "
                "restored exactly from a checkpoint (see kcrl.trainer.GeneratorStep)."
            )
        if (step is None) != (step_state is None):
            saved = "no generator step" if step_state is None else f"a generator step ({dict(step_state).get('format')!r})"
            mine = "none" if step is None else type(step).__name__
            raise CheckpointError(
                f"the checkpoint was written with {saved}, but this trainer's generator step is {mine}; resume "
                "with the same parts, or start a new run in another folder."
            )
        self._check_objective_state(state)
        try:
            self.generator.load_state_dict(state["generator"])
            self.initial_generator.load_state_dict(state["initial_generator"])
            self.constraint.load_state_dict(state["constraint"])
        except RuntimeError as exc:
            raise CheckpointError(f"the checkpoint does not fit these models: {exc}") from exc
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        if self.constraint_optimizer is not None and state["constraint_optimizer"] is not None:
            self.constraint_optimizer.load_state_dict(state["constraint_optimizer"])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        if step is not None:
            step.load_state_dict(step_state)
        if self.objective is not None:
            self.objective.load_state_dict(state["objective"])
        self.iteration = int(state["iteration"])
        self.history = list(state["history"])
        self.constraint_frozen = bool(state.get("constraint_frozen", False))

    def _check_objective_state(self, state: dict[str, Any]) -> None:
        """The checkpoint's objective state fits this trainer's objective (both MLE, or both savable)."""
        objective = self.objective
        if objective is not None and not checkpointable(objective):
            raise CheckpointError(
                f"the objective {type(objective).__name__} has no load_state_dict(), so this trainer cannot be "
                "restored exactly from a checkpoint (see kcrl.trainer.GeneratorObjective)."
            )
        saved = state.get("objective")
        if ("objective" in state) != (objective is not None) or (objective is not None and saved is None):
            if "objective" not in state:
                written = "MLE as L(theta)"
            else:
                written = "an objective without saved state" if saved is None else f"an objective ({dict(saved).get('format')!r})"
            mine = "MLE" if objective is None else type(objective).__name__
            raise CheckpointError(
                f"the checkpoint was written with {written}, but this trainer's L(theta) is {mine}; resume "
                "with the same parts, or start a new run in another folder."
            )


def sampler_log_ratio(sampled: tuple) -> torch.Tensor | None:
    """The third item of ``generator.sample``'s answer, if any: ``log p(x) - log r(x)``, the log
    ratio of the density the PR term raises to the sampler's (see :class:`ExplicitGenerator`)."""
    return sampled[2] if len(sampled) > 2 and sampled[2] is not None else None


def _refuse_unsavable(part: Any, what: str, short: str, protocol: str, weights_note: str) -> None:
    """A resumable run needs every stateful part (the generator step, the objective) to be savable."""
    if part is None or checkpointable(part):
        return
    raise ConfigError(
        f"the {what} {type(part).__name__} has no state_dict()/load_state_dict(), so a checkpoint "
        "cannot hold its state and a resumed run would not continue where it stopped. Run it to the end "
        f"without resumable checkpoints (checkpoint_every=0, no stop_after, no resume{weights_note}), or give the "
        f"{short} both methods (see kcrl.trainer.{protocol})."
    )


def _check_density_needs(generator: Any, config: PRConfig, generator_step: Any, objective: Any) -> None:
    """Refuse the parts of Algorithm 1 that need log p_theta when the generator has none."""
    if has_density(generator):
        return
    name = type(generator).__name__
    if objective is None:
        raise ConfigError(
            f"{name} has no log_prob (an implicit generator), so its L(theta) cannot be the default maximum "
            "likelihood -mle_weight * mean log p_theta(data). Pass objective=... (e.g. "
            "kcrl.models.implicit_image_generator.ConditionalGANObjective)."
        )
    if config.variant != "base" and generator_step is None and config.generator_update != "eq12_reparam":
        raise ConfigError(
            f"generator_update={config.generator_update!r} needs log p_theta of the generator's samples, but "
            f"{name} has no log_prob (an implicit generator). Use generator_update='eq12_reparam', the "
            "reparameterised Eq. 12 gradient through x = G_theta(z)."
        )
