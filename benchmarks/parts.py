"""The parts of one Algorithm 1 run: worlds, base generators and constraints, by task.

``kcrl train`` (:mod:`kcrl.benchmarks.train`) and the suites that compare the same variants
(``tabular-joint``, ``seqgan-oracle``) build their runs from these, so a single run and a suite's
row are the same experiment.

* TabularSequence-v0: :data:`TABULAR_VARIANTS`, :func:`build_variant` (the tabular generator and
  the constraint of a variant) and :func:`build_policy` (kcrl's token policy distilled to the base).
* OracleSequence-v0: :class:`OracleParts` (what determines the oracle, the shared MLE base and the
  CNN constraint), :func:`build_world`, :func:`ensure_base`, :class:`OracleGenerator`,
  :func:`build_constraint`, and :data:`ORACLE_VARIANTS` with their trainer variants (:data:`ORACLE_PLAN`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kcrl.agents.generator_steps import PolicyGenerator
from kcrl.agents.soft_pg import SoftPGAgent, SoftPGArgs
from kcrl.checkpoint import load_checkpoint, save_checkpoint
from kcrl.constraints import Constraint, TokenPotentialConstraint, zero_constraint
from kcrl.envs.oracle import ORACLE_SEED, SEQGAN_TRAIN_SAMPLES, OracleWorld
from kcrl.envs.tabular import TabularWorld, make_tabular_vec_env
from kcrl.errors import ConfigError, ShapeError
from kcrl.models.lstm_generator import FILE_FORMAT, LSTMGenerator, MLEArgs, train_mle
from kcrl.models.sequence_scorer import SEQGAN_FILTER_SIZES, SEQGAN_NUM_FILTERS, cnn_constraint
from kcrl.models.tabular import TabularAutoregressive

# ---------------------------------------------------------------------- TabularSequence-v0
TABULAR_VARIANTS = ("base", "binary_d", "mstep", "fixed_complete", "fixed_incomplete", "learned", "learned_policy", "learned_agent")
# Variants whose generator is kcrl's token policy (an MLP) rather than the tabular model: the same
# learned constraint with Eq. 10 on that policy, or with kcrl's agent as the generator step.
POLICY_VARIANTS = ("learned_policy", "learned_agent")


def build_variant(world: TabularWorld, variant: str) -> tuple[TabularAutoregressive, TokenPotentialConstraint, str]:
    """The generator (a copy of the world's base model), the constraint and the trainer variant."""
    generator = TabularAutoregressive(world.vocab_size, world.max_length)
    generator.load_state_dict(world.base.state_dict())
    generator.requires_grad_(True)
    if variant.startswith("fixed"):
        rule = TokenPotentialConstraint(world.vocab_size, world.max_length, pairwise=variant == "fixed_complete")
        rule.unary.data.copy_(world.true_constraint.unary)
        if variant == "fixed_complete":
            rule.binary.data.copy_(world.true_constraint.binary)
        return generator, rule.requires_grad_(False), "fixed"
    return generator, TokenPotentialConstraint(world.vocab_size, world.max_length), variant


def build_policy(world: TabularWorld, seed: int, *, envs: int, iterations: int, lr: float, distill_steps: int,
                 **world_kwargs):
    """kcrl's soft-PG agent on TabularSequence-v0 and its policy as a generator, distilled to the base.

    Distillation minimises the exact ``KL(p_base || pi)`` over all V^T sequences, so the policy
    variants start where the tabular ones do (up to the distillation error, reported as the start KL).
    ``envs`` episodes per PG update, ``iterations`` PG updates in all (the agent's schedule), Adam
    learning rate ``lr``, ``distill_steps`` steps of distillation. ``world_kwargs``
    (``constraint_scale``, ``alpha``) go to the agent's env, whose world is built from ``seed`` and
    must equal ``world``; its ``alpha`` must be the trainer's.
    """
    # its world is built from the same seed (and world_kwargs): equal to ``world``
    env = make_tabular_vec_env(envs, world.vocab_size, world.max_length, world_seed=seed,
                               autoreset_mode="Disabled", **world_kwargs)
    agent = SoftPGAgent(env, SoftPGArgs(iterations=iterations, lr=lr, seed=seed))
    generator = PolicyGenerator.from_agent(agent)
    sequences = world.sequences()
    with torch.no_grad():
        log_p_base = world.base.log_prob(sequences)
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-2)
    for _ in range(distill_steps):
        loss = -(log_p_base.exp() * generator.log_prob(sequences)).sum()  # KL(p_base || pi) + const
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return agent, generator


# ---------------------------------------------------------------------- OracleSequence-v0
ORACLE_VARIANTS = ("base", "mle", "binary_d", "learned", "constant")
ORACLE_TRAINED = ORACLE_VARIANTS[1:]
ORACLE_PLAN = {  # variant -> PRTrainer variant, i.e. how f moves in Algorithm 1's constraint step
    "mle": "base",  # no constraint, no PR term: L(theta) only
    "binary_d": "binary_d",  # logistic loss, data labelled 1, samples 0 (labels_real_is_one)
    "learned": "learned",  # Eq. 8: alpha (E_data grad f - E_q grad f), E_q by importance weights
    "constant": "fixed",  # f = 0 never moves: w_i = 1/K, Eq. 10 is MLE on the model's own samples
}
BASE_FORMAT = "kcrl.seqgan-oracle.base/1"


def check_scorer_shape(filter_sizes: tuple[int, ...], num_filters: tuple[int, ...]) -> None:
    """The CNN constraint needs one channel count per convolution width."""
    if len(filter_sizes) != len(num_filters):
        raise ConfigError(
            f"give one channel count per filter width: {len(filter_sizes)} widths but {len(num_filters)} counts."
        )


@dataclass
class OracleParts:
    """What determines an oracle run's world, shared MLE base and CNN constraint (defaults: SeqGAN's
    setting). The builders also accept any config with these fields, such as the seqgan-oracle
    suite's :class:`~kcrl.benchmarks.seqgan_oracle.SeqGANOracleConfig`."""

    vocab_size: int = 5000
    length: int = 20
    embed_dim: int = 32
    hidden_dim: int = 32
    oracle_seed: int = ORACLE_SEED
    data_seed: int = 0
    train_samples: int = SEQGAN_TRAIN_SAMPLES
    test_samples: int = 10_000
    base_mle: MLEArgs = field(default_factory=lambda: MLEArgs(epochs=120, keep_best=False))
    base_cache: str | None = None
    scorer_embed_dim: int = 64
    scorer_filter_sizes: tuple[int, ...] = SEQGAN_FILTER_SIZES
    scorer_num_filters: tuple[int, ...] = SEQGAN_NUM_FILTERS
    scorer_dropout: float = 0.25
    device: str = "cpu"


def build_world(config: OracleParts) -> OracleWorld:
    """The oracle and its data sets (deterministic in the config; the validation split is unused)."""
    return OracleWorld(
        vocab_size=config.vocab_size, length=config.length, embed_dim=config.embed_dim, hidden_dim=config.hidden_dim,
        oracle_seed=config.oracle_seed, data_seed=config.data_seed, train_samples=config.train_samples,
        valid_samples=0, test_samples=config.test_samples,
    ).to(config.device)


def fresh_generator(config: OracleParts, world: OracleWorld, seed: int) -> LSTMGenerator:
    """SeqGAN's untrained generator: N(0, 0.1) parameters drawn from a CPU generator seeded ``seed``."""
    return LSTMGenerator(
        world.vocab_size, config.embed_dim, config.hidden_dim, config.length, world.oracle.start_token,
        init_std=0.1, generator=torch.Generator().manual_seed(seed),
    ).to(world.device)


def base_key(config: OracleParts, seed: int) -> str:
    """The cache key of the shared base: a digest of everything that determines its weights."""
    spec = {
        "format": BASE_FORMAT, "seed": seed, "device": config.device, "mle": asdict(replace(config.base_mle, seed=seed)),
        **{k: getattr(config, k) for k in ("vocab_size", "length", "embed_dim", "hidden_dim", "oracle_seed", "data_seed",
                                           "train_samples")},
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def base_path(config: OracleParts, seed: int) -> Path:
    """Where the shared base of ``(config, seed)`` is cached."""
    if config.base_cache is not None:
        folder = Path(config.base_cache).expanduser()
    else:
        from kcrl.data.corpus import cache_dir

        folder = cache_dir() / "seqgan-oracle"
    return folder / f"base-{base_key(config, seed)}.pt"


def ensure_base(config: OracleParts, seed: int, progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """Train the shared MLE base once (SeqGAN's recipe) or find it in the cache; returns its path and info.

    The file is written atomically (:func:`kcrl.checkpoint.save_checkpoint`) and readable by
    :meth:`LSTMGenerator.load`; ``info`` has ``key``, ``cached`` (found, not trained now),
    ``train_seconds`` and the MLE ``history``.
    """
    path = base_path(config, seed)
    key = base_key(config, seed)
    if path.is_file():
        record = load_checkpoint(path)
        if record.get("key") == key:
            return path, {"key": key, "cached": True, "train_seconds": record["train_seconds"], "history": record["history"]}
    world = build_world(config)
    model = fresh_generator(config, world, seed)
    start = time.perf_counter()
    history = train_mle(model, world.data("train"), None, replace(config.base_mle, seed=seed), show_progress=progress)
    seconds = time.perf_counter() - start
    history = [{k: v for k, v in r.items() if isinstance(v, (int, float))} for r in history]
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"format": FILE_FORMAT, "config": model.config(), "state_dict": state, "key": key,
                           "train_seconds": seconds, "history": history})
    return path, {"key": key, "cached": False, "train_seconds": seconds, "history": history}


class OracleGenerator(nn.Module):
    """:class:`LSTMGenerator` as PRTrainer's unconditional ``ExplicitGenerator``.

    The trainer calls ``sample(n, generator=...)`` and ``log_prob(x, context)``; an LSTM language
    model has no context, and its own ``log_prob``'s second argument means something else
    (``per_token``), so this adapter names both and refuses a context.
    """

    def __init__(self, model: LSTMGenerator) -> None:
        super().__init__()
        self.model = model

    def sample(self, n: int, generator: torch.Generator | None = None, context: torch.Tensor | None = None):
        """``(x, log p_theta(x))``: ``(n, T)`` ids and ``(n,)``."""
        self._no_context(context)
        return self.model.sample(n, generator)

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable sequence log-likelihood ``log p_theta(x)``, ``(N,)``."""
        self._no_context(context)
        return self.model.log_prob(x)

    @staticmethod
    def _no_context(context: torch.Tensor | None) -> None:
        if context is not None:
            raise ShapeError(f"the oracle generator is unconditional; got a context of shape {tuple(context.shape)}.")


def build_constraint(variant: str, config: OracleParts, seed: int) -> Constraint:
    """The constraint of a trained variant: the CNN scorer (binary_d, learned), or f = 0 (mle, constant)."""
    if variant in ("binary_d", "learned"):
        return cnn_constraint(
            config.vocab_size, config.length, embed_dim=config.scorer_embed_dim, filter_sizes=config.scorer_filter_sizes,
            num_filters=config.scorer_num_filters, dropout=config.scorer_dropout, seed=seed,
        ).to(config.device)
    return zero_constraint()  # mle never reads it; constant's uniform weights
