"""``kcrl train CONFIG --out DIR [--resume]``: one Algorithm 1 run from a YAML config.

Every key is optional; unknown keys are rejected (with a close name and the known ones), and so
are sections that do not apply to the config's ``task`` / ``generator_step``. The ``trainer``
section (:class:`~kcrl.trainer.PRConfig`) is merged into defaults that depend on the task (see
``TRAINER_DEFAULTS``); its ``variant`` and ``seed`` come from the top-level keys.

``task: tabular`` — TabularSequence-v0's world (:class:`kcrl.envs.tabular.TabularWorld`), small
enough to enumerate. The generator starts at the world's base model; the score is the exact
``KL(p_data || p_theta)``::

    task: tabular
    seed: 0
    data_samples: 5000
    variant: learned          # base | binary_d | mstep | fixed_complete | fixed_incomplete | learned
    world: {vocab_size: 4, length: 4, constraint_scale: 1.0}
    trainer: {iterations: 400, samples: 4096, mle_weight: 0.1, constraint_steps: 5}

``generator_step: agent`` (tabular only) makes the generator kcrl's token policy, distilled to the
base model, and replaces the Eq. 10 step by kcrl's soft-PG agent acting in TabularSequence-v0 with
reward ``alpha f_phi`` and the per-step KL to a frozen copy of the policy
(:class:`~kcrl.agents.generator_steps.AgentStep`; the tabular-joint suite's ``learned_agent``).
``trainer.generator_lr`` is then the learning rate of the MLE step on the policy, ``agent.lr`` that
of its PG step::

    task: tabular
    generator_step: agent     # trainer (default: Eq. 10 / Eq. 12 per trainer.generator_update) | agent
    agent: {lr: 0.003, envs: 1024, updates: 1, distill_steps: 300}
    trainer: {iterations: 400, samples: 4096, mle_weight: 0.1, constraint_steps: 5, generator_lr: 0.003}

``task: oracle`` — OracleSequence-v0's world (:class:`kcrl.envs.oracle.OracleWorld`: SeqGAN's
oracle LSTM) at a small size. The generator is an LSTM pre-trained by MLE on the oracle's
training samples (``oracle.pretrain.epochs: 0`` starts from SeqGAN's untrained initialisation),
the constraint SeqGAN's CNN (:func:`kcrl.models.sequence_scorer.cnn_constraint`), as in the
seqgan-oracle suite; the scores are NLL_oracle, held-out NLL and the entropy rate, in nats per
token (:mod:`kcrl.oracle_metrics`, on ``oracle.eval_samples`` samples)::

    task: oracle
    seed: 0                   # data, pre-training, sampling; the oracle itself is oracle.oracle_seed
    data_samples: 5000        # oracle training samples
    variant: learned          # mle | binary_d | learned | constant
    oracle:
      vocab_size: 100
      length: 10
      embed_dim: 16
      hidden_dim: 16
      test_samples: 1000
      eval_samples: 1000
      pretrain: {epochs: 10, batch_size: 64, lr: 0.01}
      scorer_filter_sizes: [2, 3, 4, 5]
      scorer_num_filters: [32, 32, 32, 32]
    trainer: {iterations: 100, samples: 256, data_batch: 256, constraint_steps: 3, checkpoint_every: 10}

``kcrl sample DIR [-n N]`` prints samples of the trained generator; ``kcrl evaluate DIR`` prints
its metrics. The run writes ``DIR/config.yaml`` (the resolved config), ``DIR/checkpoint.pt``
(atomic, every ``trainer.checkpoint_every`` iterations; with ``generator_step: agent`` it also
holds the agent's optimiser, random stream and counters), ``DIR/metrics.json`` and, for the oracle
task, ``DIR/base-<key>.pt`` (the pre-trained start, reused on resume). With ``--resume`` a killed
run continues from its last checkpoint and ends with the same metrics as an uninterrupted run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from kcrl.agents.generator_steps import AgentStep
from kcrl.benchmarks.parts import (
    ORACLE_PLAN, ORACLE_TRAINED, POLICY_VARIANTS, TABULAR_VARIANTS, OracleGenerator, OracleParts, build_constraint,
    build_policy, check_scorer_shape, build_variant, build_world, ensure_base,
)
from kcrl.checkpoint import atomic_write_text
from kcrl.config import dump_yaml, from_mapping, load_yaml, to_mapping
from kcrl.envs.oracle import ORACLE_SEED
from kcrl.envs.tabular import TabularWorld
from kcrl.errors import ConfigError, did_you_mean, unknown_name
from kcrl.models.lstm_generator import LSTMGenerator, MLEArgs
from kcrl.trainer import PRConfig, PRTrainer

TASKS = ("tabular", "oracle")
GENERATOR_STEPS = ("trainer", "agent")
WORLD_KEYS = ("vocab_size", "length", "constraint_scale", "alpha")
# section -> (the key, the value) it applies with
SECTIONS = {"world": ("task", "tabular"), "oracle": ("task", "oracle"), "agent": ("generator_step", "agent")}
TRAINER_DEFAULTS: dict[tuple[str, str], Callable[[], PRConfig]] = {
    ("tabular", "trainer"): lambda: PRConfig(iterations=400, samples=4096, mle_weight=0.1, constraint_steps=5),
    # the token policy (an MLP) wants a smaller MLE learning rate than the tabular logits
    ("tabular", "agent"): lambda: PRConfig(iterations=400, samples=4096, mle_weight=0.1, constraint_steps=5,
                                           generator_lr=3e-3),
    # the seqgan-oracle suite's settings, fewer iterations
    ("oracle", "trainer"): lambda: PRConfig(
        iterations=100, mle_weight=1.0, samples=256, data_batch=256, constraint_steps=3, generator_lr=1e-3,
        constraint_lr=1e-3, lr_decay=False, checkpoint_every=10, ess_warn_fraction=0.0,
    ),
}
EVAL_SEED = 10_000  # oracle scores: samples drawn with EVAL_SEED + the run's seed


def variants(task: str) -> tuple[str, ...]:
    """The ``variant`` values of a task: the tabular-joint suite's rows on the tabular generator,
    the seqgan-oracle suite's trained rows."""
    if task == "oracle":
        return ORACLE_TRAINED
    return tuple(v for v in TABULAR_VARIANTS if v not in POLICY_VARIANTS)


@dataclass
class AgentArgs:
    """``generator_step: agent``: kcrl's soft-PG agent as the generator step (tabular task)."""

    lr: float = 3e-3
    """Adam learning rate of the agent's PG step on the token policy"""
    envs: int = 1024
    """episodes per PG update (sub-envs of the batched TabularSequence-v0 env)"""
    updates: int = 1
    """PG updates per Algorithm 1 iteration"""
    distill_steps: int = 300
    """steps of exact distillation of the token policy onto the world's base model before training"""


@dataclass
class OracleArgs:
    """``task: oracle``: the oracle's sizes, the data, the pre-trained start and the CNN constraint."""

    vocab_size: int = 100
    """V, the oracle's vocabulary (SeqGAN: 5000)"""
    length: int = 10
    """T, tokens per sequence (SeqGAN: 20)"""
    embed_dim: int = 16
    """embedding size of the oracle and of the generator (SeqGAN: 32)"""
    hidden_dim: int = 16
    """LSTM hidden size of the oracle and of the generator (SeqGAN: 32)"""
    oracle_seed: int = ORACLE_SEED
    """seed of the oracle's random weights"""
    test_samples: int = 1000
    """held-out oracle samples (the held-out NLL)"""
    eval_samples: int = 1000
    """generator samples per NLL_oracle and entropy rate"""
    pretrain: MLEArgs = field(default_factory=lambda: MLEArgs(epochs=10, keep_best=False))
    """MLE of the start on the training samples (epochs 0: untrained N(0, 0.1) weights); its seed is the run's"""
    scorer_embed_dim: int = 32
    """token embedding size of the CNN constraint"""
    scorer_filter_sizes: tuple[int, ...] = (2, 3, 4, 5)
    """convolution widths of the CNN constraint (widths > T are dropped)"""
    scorer_num_filters: tuple[int, ...] = (32, 32, 32, 32)
    """channels per width, one per entry of ``scorer_filter_sizes``"""
    scorer_dropout: float = 0.25
    """dropout of the CNN constraint while it is trained"""


@dataclass
class TrainConfig:
    """A single training run."""

    task: str = "tabular"
    """the world to train on: tabular or oracle"""
    seed: int = 0
    """seed of the world, the data and the trainer"""
    data_samples: int = 5000
    """training-set size drawn from the world's p_data (oracle: oracle samples)"""
    variant: str = "learned"
    """tabular: base, binary_d, mstep, fixed_complete, fixed_incomplete or learned; oracle: mle, binary_d, learned or constant"""
    generator_step: str = "trainer"
    """trainer (the trainer's Eq. 10 / Eq. 12) or agent (kcrl's soft-PG agent; tabular only)"""
    world: dict = field(default_factory=dict)
    """tabular: keyword arguments of the world (vocab_size, length, constraint_scale, alpha)"""
    agent: AgentArgs = field(default_factory=AgentArgs)
    """generator_step: agent: the agent's settings"""
    oracle: OracleArgs = field(default_factory=OracleArgs)
    """task: oracle: the oracle world, the pre-trained start and the constraint"""
    trainer: PRConfig = field(default_factory=TRAINER_DEFAULTS[("tabular", "trainer")])
    """Algorithm 1 settings (keys given here override the task's defaults; its ``variant`` and ``seed`` come from the top-level keys)"""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping (:func:`kcrl.config.from_mapping`): unknown keys, wrong types and
        sections that do not apply to the task or generator step are rejected."""
        if not isinstance(values, dict):
            raise ConfigError(f"a train config must be a mapping of keys to values; got {type(values).__name__}.")
        task, step = values.get("task", "tabular"), values.get("generator_step", "trainer")
        defaults = TRAINER_DEFAULTS.get((task, step)) if isinstance(task, str) and isinstance(step, str) else None
        config = from_mapping(cls, values, base=cls(task=task, generator_step=step, trainer=defaults()) if defaults else None)
        if config.task not in TASKS:
            raise unknown_name("task", config.task, TASKS)
        if config.generator_step not in GENERATOR_STEPS:
            raise unknown_name("generator_step", config.generator_step, GENERATOR_STEPS)
        for section, (key, value) in SECTIONS.items():
            if section in values and getattr(config, key) != value:
                raise ConfigError(
                    f"config key {section!r} applies only with {key}: {value}; this config has {key}: "
                    f"{getattr(config, key)}. Drop it, or set {key}: {value}."
                )
        if config.variant not in variants(config.task):
            raise unknown_name(f"{config.task} variant", config.variant, variants(config.task))
        if config.generator_step == "agent":
            if config.task != "tabular":
                raise ConfigError(
                    f"generator_step: agent is available for task: tabular only (kcrl's token policy on "
                    f"TabularSequence-v0); got task: {config.task}. Use generator_step: trainer."
                )
            if config.variant == "base":
                raise ConfigError(
                    "generator_step: agent needs a variant with a PR term; variant 'base' trains by MLE only and "
                    "never calls the agent. Choose e.g. variant: learned, or generator_step: trainer."
                )
        for key in config.world:
            if key not in WORLD_KEYS:
                raise ConfigError(f"unknown world key {key!r}.{did_you_mean(key, WORLD_KEYS)} Known: {', '.join(WORLD_KEYS)}.")
        if config.task == "oracle":
            _oracle_parts(config, None)  # its own checks: sizes, one channel count per width
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(load_yaml(path) or {})

    def to_dict(self) -> dict[str, Any]:
        """The config as plain YAML-safe values, without the sections its task and step do not use
        (the inverse of :meth:`from_dict`)."""
        values = to_mapping(self)
        for section, (key, value) in SECTIONS.items():
            if getattr(self, key) != value:
                del values[section]
        return values


# ---------------------------------------------------------------------- the parts of a run
@dataclass
class _Parts:
    world: Any
    data: torch.Tensor | None
    generator: torch.nn.Module
    constraint: Any
    variant: str  # PRTrainer's variant
    generator_step: Any = None
    model: Any = None  # oracle: the LSTMGenerator inside the generator


def _oracle_parts(config: TrainConfig, out: str | Path | None) -> OracleParts:
    """What this run's oracle world, pre-trained start and CNN constraint are built from."""
    o = config.oracle
    check_scorer_shape(o.scorer_filter_sizes, o.scorer_num_filters)
    for name, value in (("eval_samples", o.eval_samples), ("test_samples", o.test_samples),
                        ("train_samples", config.data_samples)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1; got {value}.")
    return OracleParts(
        vocab_size=o.vocab_size, length=o.length, embed_dim=o.embed_dim, hidden_dim=o.hidden_dim,
        oracle_seed=o.oracle_seed, data_seed=config.seed, train_samples=config.data_samples,
        test_samples=o.test_samples, base_mle=o.pretrain, base_cache=None if out is None else str(out),
        scorer_embed_dim=o.scorer_embed_dim, scorer_filter_sizes=o.scorer_filter_sizes,
        scorer_num_filters=o.scorer_num_filters, scorer_dropout=o.scorer_dropout,
    )


def _build(config: TrainConfig, out: str | Path | None = None, training: bool = True, show_progress: bool = False) -> _Parts:
    """The world, data and trainer parts a config describes (deterministic in its seed).

    With ``training=False`` (to load a checkpoint into) nothing is pre-trained or distilled and no
    data are drawn.
    """
    if config.task == "oracle":
        return _build_oracle(config, out, training, show_progress)
    torch.manual_seed(config.seed)
    world = TabularWorld(world_seed=config.seed, **config.world)
    data = world.sample_data(config.data_samples, torch.Generator().manual_seed(config.seed))
    generator, constraint, variant = build_variant(world, config.variant)
    if config.generator_step != "agent":
        return _Parts(world, data, generator, constraint, variant)
    a = config.agent
    # the agent's env rewards alpha f with the trainer's alpha (q = p exp(alpha f) / Z in both)
    env_kwargs = {k: v for k, v in config.world.items() if k == "constraint_scale"}
    agent, generator = build_policy(world, config.seed, envs=a.envs, iterations=config.trainer.iterations * a.updates,
                                    lr=a.lr, distill_steps=a.distill_steps if training else 0,
                                    alpha=config.trainer.alpha, **env_kwargs)
    return _Parts(world, data, generator, constraint, variant, AgentStep(agent, updates=a.updates))


def _build_oracle(config: TrainConfig, out: str | Path | None, training: bool, show_progress: bool) -> _Parts:
    suite = _oracle_parts(config, out)
    world = build_world(suite)
    if training:
        path, _ = ensure_base(suite, config.seed, show_progress)  # trained once, into the run's folder
        model = LSTMGenerator.load(path).to(world.device)
    else:
        o = config.oracle
        model = LSTMGenerator(world.vocab_size, o.embed_dim, o.hidden_dim, o.length, world.oracle.start_token).to(world.device)
    torch.manual_seed(config.seed)  # dropout of the CNN constraint
    constraint = build_constraint(config.variant, suite, config.seed)
    data = world.data("train") if training else None
    return _Parts(world, data, OracleGenerator(model).train(), constraint, ORACLE_PLAN[config.variant], model=model)


@torch.no_grad()
def _scores(config: TrainConfig, parts: _Parts, device: torch.device | None = None) -> dict[str, Any]:
    """The task's quality measures of the generator (the same in ``train`` and ``evaluate``)."""
    from kcrl.posterior import kl_divergence

    if config.task == "oracle":
        from kcrl.oracle_metrics import evaluate_generator

        world, model = parts.world, parts.model
        model.eval()
        return evaluate_generator(world.oracle, model, world.data("test"), config.oracle.eval_samples,
                                  EVAL_SEED + config.seed)["T=1"]
    world = parts.world
    device = device or torch.device("cpu")
    log_p = parts.generator.log_prob(world.sequences().to(device)).cpu()
    return {"kl_data_to_generator": kl_divergence(world.data_log_probs(), log_p).item()}


def load_run(out: str | Path):
    """``(config, world, generator, constraint)`` of a finished or interrupted run in ``out``."""
    return _load(out)[:4]


def _load(out: str | Path):
    from kcrl.checkpoint import CheckpointError, load_checkpoint

    out = Path(out)
    config = TrainConfig.from_yaml(out / "config.yaml")
    parts = _build(config, out, training=False)
    state = load_checkpoint(out / "checkpoint.pt")
    try:
        parts.generator.load_state_dict(state["generator"])
        parts.constraint.load_state_dict(state["constraint"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"the checkpoint in {str(out)!r} does not match its config.yaml: {exc}") from exc
    return config, parts.world, parts.generator, parts.constraint, parts, int(state["iteration"])


def evaluate(out: str | Path) -> dict[str, Any]:
    """Metrics of the run in ``out``.

    tabular: the exact ``KL(p_data || p_theta)`` and ``KL(p_data || q_phi)``; oracle: NLL_oracle,
    held-out NLL and entropy rate (as in ``metrics.json``).
    """
    from kcrl.posterior import kl_divergence

    config, world, generator, constraint, parts, iteration = _load(out)
    metrics: dict[str, Any] = {**_scores(config, parts), "iteration": iteration}
    if config.task == "tabular":
        with torch.no_grad():
            q = world.posterior(constraint, config.trainer.alpha) if config.variant != "base" else None
            metrics["kl_data_to_posterior"] = None if q is None else kl_divergence(world.data_log_probs(), q.log_q).item()
    return metrics


def sample(out: str | Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n samples of the run's generator with their log-probabilities and constraint scores."""
    _, _, generator, constraint = load_run(out)
    with torch.no_grad():
        x, log_p = generator.sample(n, torch.Generator().manual_seed(seed))
        f = constraint.predict(x)
    return [{"tokens": xi.tolist(), "log_p": round(lp.item(), 4), "constraint": round(fi.item(), 4)}
            for xi, lp, fi in zip(x, log_p, f)]


def _differences(a: dict[str, Any], b: dict[str, Any], where: str = "") -> list[str]:
    """The dotted keys whose values differ between two config mappings."""
    keys = list(a) + [k for k in b if k not in a]
    out = []
    for key in keys:
        path = f"{where}.{key}" if where else str(key)
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, path)
        elif x != y:
            out.append(path)
    return out


def train(config: TrainConfig, out: str | Path, resume: bool = False, show_progress: bool = True,
          stop_after: int | None = None, tensorboard: bool = False,
          trainer_factory: Callable[..., PRTrainer] = PRTrainer) -> dict[str, Any]:
    """Run (or resume) one training run; returns the final metrics.

    ``trainer_factory(generator, constraint, data, config)`` builds the trainer (e.g. one rank of
    :class:`kcrl.distributed.DistributedPRTrainer`); only its main process writes files.
    """
    out = Path(out)
    if (out / "checkpoint.pt").exists() and not resume:
        raise ConfigError(f"{str(out)!r} already holds a run; pass --resume to continue it or choose another --out.")
    if config.generator_step == "agent" and trainer_factory is not PRTrainer:
        raise ConfigError(
            "generator_step: agent runs in a single process (the agent is not data-parallel); drop --ddp, or use "
            "generator_step: trainer."
        )
    if resume and (out / "config.yaml").is_file():
        changed = _differences(TrainConfig.from_yaml(out / "config.yaml").to_dict(), config.to_dict())
        if changed:
            raise ConfigError(
                f"the run in {str(out)!r} was started with a different config (differs in {', '.join(changed)}); "
                "resume it with its own config.yaml, or start a new run in another folder."
            )
    parts = _build(config, out, show_progress=show_progress)
    cfg = replace(config.trainer, variant=parts.variant, seed=config.seed)
    extra = {} if parts.generator_step is None else {"generator_step": parts.generator_step}
    trainer = trainer_factory(parts.generator, parts.constraint, (parts.data, None), cfg, **extra)
    if trainer.is_main_process:
        atomic_write_text(out / "config.yaml", dump_yaml(config.to_dict()))
    history = trainer.train(out=out, resume=resume, show_progress=show_progress, stop_after=stop_after, tensorboard=tensorboard)
    metrics = {"iteration": trainer.iteration, **_scores(config, parts, trainer.device), "last": history[-1] if history else {}}
    if trainer.is_main_process:
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def train_distributed(config, out: str | Path, resume: bool = False, show_progress: bool = True,
                      sampling: str = "sharded", stop_after: int | None = None, tensorboard: bool = False) -> dict[str, Any]:
    """:func:`train` on every rank of the torchrun job (:mod:`kcrl.distributed`); rank 0 writes the files."""
    import functools
    import warnings

    import torch.distributed as dist

    from kcrl.distributed import DistributedPRTrainer, init_process_group
    from kcrl.posterior import LowESSWarning

    rank, _ = init_process_group()
    if rank != 0:
        warnings.simplefilter("ignore", LowESSWarning)  # every rank sees the same weights; warn once
    factory = functools.partial(DistributedPRTrainer, sampling=sampling)
    try:
        return train(config, out, resume=resume, show_progress=show_progress and rank == 0,
                     stop_after=stop_after, trainer_factory=factory, tensorboard=tensorboard and rank == 0)
    finally:
        dist.destroy_process_group()
