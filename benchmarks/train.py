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
(atomic and hashed, every ``trainer.checkpoint_every`` iterations; with ``generator_step: agent``
it also holds the agent's optimiser, random stream and counters), ``DIR/metrics.json`` (hashed)
and, for the oracle task, ``DIR/base-<key>.pt`` (the pre-trained start, reused on resume). With
``--resume`` a killed run continues from its last checkpoint and ends with the same metrics as an
uninterrupted run.

Nothing is lost and nothing fails silently:

- ``DIR`` is checked before any compute (a file in its place, a read-only folder, a full disk)
  and locked while the run writes (:class:`kcrl.runlock.RunLock`; a second ``kcrl train`` on it
  is refused, naming the first). A ``DIR`` that already holds a run needs ``--resume`` (continue)
  or ``--force`` (start over: its checkpoint, config and metrics are deleted).
- ``--resume`` refuses a folder without a checkpoint, or without the ``config.yaml`` that shows the
  checkpoint belongs to this config; ``--force`` starts fresh, or resumes on the given config.
- SIGINT, SIGTERM and SIGHUP stop the run after its current iteration: it writes a checkpoint,
  prints the command that resumes it and exits with 130, 143 or 129. Temp files of atomic writes
  that a SIGKILL left behind are removed when the next run takes the lock.
"""

from __future__ import annotations

import contextlib
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
from kcrl.checkpoint import CheckpointError, atomic_write_text, remove_stale_temps, write_json
from kcrl.config import MLE_RANGES, SEED_RANGE, RangeError, check_ranges, dump_yaml, from_mapping, load_yaml, ranged, to_mapping
from kcrl.envs.oracle import ORACLE_SEED
from kcrl.envs.tabular import TabularWorld, check_world_kwargs
from kcrl.errors import ConfigError, OutputFolderError, RunInterrupted, did_you_mean, unknown_name
from kcrl.runlock import LOCK_NAME, RunLock, StopSignals, check_output_folder
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
# trainer keys a kcrl train config does not take: the top-level keys set them, or no task uses them
TRAINER_UNUSED = {
    "variant": "set the top-level variant",
    "seed": "set the top-level seed",
    "contexts": "both tasks are unconditional (trainer.samples sets K)",
    "samples_per_context": "both tasks are unconditional (trainer.samples sets K)",
}
RUN_FILES = ("checkpoint.pt", "config.yaml", "metrics.json")  # what --force deletes
MAX_SAMPLES = 1_000_000  # kcrl sample -n


def variants(task: str) -> tuple[str, ...]:
    """The ``variant`` values of a task: the tabular-joint suite's rows on the tabular generator,
    the seqgan-oracle suite's trained rows."""
    if task == "oracle":
        return ORACLE_TRAINED
    return tuple(v for v in TABULAR_VARIANTS if v not in POLICY_VARIANTS)


@dataclass
class AgentArgs:
    """``generator_step: agent``: kcrl's soft-PG agent as the generator step (tabular task)."""

    lr: float = ranged(3e-3, ge=0)
    """Adam learning rate of the agent's PG step on the token policy"""
    envs: int = ranged(1024, ge=1)
    """episodes per PG update (sub-envs of the batched TabularSequence-v0 env)"""
    updates: int = ranged(1, ge=1)
    """PG updates per Algorithm 1 iteration"""
    distill_steps: int = ranged(300, ge=0)
    """steps of exact distillation of the token policy onto the world's base model before training"""

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class OracleArgs:
    """``task: oracle``: the oracle's sizes, the data, the pre-trained start and the CNN constraint."""

    vocab_size: int = ranged(100, ge=2)
    """V, the oracle's vocabulary (SeqGAN: 5000)"""
    length: int = ranged(10, ge=1)
    """T, tokens per sequence (SeqGAN: 20)"""
    embed_dim: int = ranged(16, ge=1)
    """embedding size of the oracle and of the generator (SeqGAN: 32)"""
    hidden_dim: int = ranged(16, ge=1)
    """LSTM hidden size of the oracle and of the generator (SeqGAN: 32)"""
    oracle_seed: int = ranged(ORACLE_SEED, ge=SEED_RANGE.ge, lt=SEED_RANGE.lt)
    """seed of the oracle's random weights"""
    test_samples: int = ranged(1000, ge=1)
    """held-out oracle samples (the held-out NLL)"""
    eval_samples: int = ranged(1000, ge=1)
    """generator samples per NLL_oracle and entropy rate"""
    pretrain: MLEArgs = field(default_factory=lambda: MLEArgs(epochs=10, keep_best=False))
    """MLE of the start on the training samples (epochs 0: untrained N(0, 0.1) weights); its seed is the run's"""
    scorer_embed_dim: int = ranged(32, ge=1)
    """token embedding size of the CNN constraint"""
    scorer_filter_sizes: tuple[int, ...] = ranged((2, 3, 4, 5), ge=1)
    """convolution widths of the CNN constraint (widths > T are dropped)"""
    scorer_num_filters: tuple[int, ...] = ranged((32, 32, 32, 32), ge=1)
    """channels per width, one per entry of ``scorer_filter_sizes``"""
    scorer_dropout: float = ranged(0.25, ge=0, lt=1)
    """dropout of the CNN constraint while it is trained"""

    def __post_init__(self) -> None:
        check_ranges(self)
        try:
            check_ranges(self.pretrain, MLE_RANGES)
        except RangeError as exc:
            raise exc.at("pretrain") from None


@dataclass
class TrainConfig:
    """A single training run."""

    task: str = "tabular"
    """the world to train on: tabular or oracle"""
    seed: int = ranged(0, ge=SEED_RANGE.ge, lt=SEED_RANGE.lt)
    """seed of the world, the data and the trainer"""
    data_samples: int = ranged(5000, ge=1)
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

    def __post_init__(self) -> None:
        check_ranges(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping (:func:`kcrl.config.from_mapping`): unknown keys, wrong types and
        sections that do not apply to the task or generator step are rejected."""
        if not isinstance(values, dict):
            raise ConfigError(f"a train config must be a mapping of keys to values; got {type(values).__name__}.")
        trainer_values = values.get("trainer")
        for key in TRAINER_UNUSED if isinstance(trainer_values, dict) else ():
            if key in trainer_values:
                raise ConfigError(
                    f"config key 'trainer.{key}' is not used by kcrl train ({TRAINER_UNUSED[key]}); got "
                    f"{trainer_values[key]!r}. Drop it."
                )
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
        check_world_kwargs(config.world, where="world")  # types and ranges, as TabularSequence-v0 checks them
        if config.task == "oracle":
            _oracle_parts(config, None)  # its own checks: sizes, one channel count per width
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(load_yaml(path) or {})

    @classmethod
    def saved(cls, out: str | Path) -> "TrainConfig":
        """The config a run saved in ``out/config.yaml`` (one written before :data:`TRAINER_UNUSED`
        was refused still reads: those keys held defaults that nothing used)."""
        path = Path(out) / "config.yaml"
        if not path.is_file():
            raise ConfigError(
                f"{str(out)!r} holds no config.yaml, so it is not (or no longer) a kcrl train run folder; "
                "pass the --out folder of a kcrl train run."
            )
        values = load_yaml(path, "the run's config file") or {}
        if isinstance(values, dict) and isinstance(values.get("trainer"), dict):
            values = {**values, "trainer": {k: v for k, v in values["trainer"].items() if k not in TRAINER_UNUSED}}
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain YAML-safe values, without the sections its task and step do not use
        and the trainer keys it does not take (the inverse of :meth:`from_dict`)."""
        values = to_mapping(self)
        for section, (key, value) in SECTIONS.items():
            if getattr(self, key) != value:
                del values[section]
        for key in TRAINER_UNUSED:
            values["trainer"].pop(key, None)
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
    from kcrl.checkpoint import load_checkpoint

    out = Path(out)
    config = TrainConfig.saved(out)
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


METRIC_DESCRIPTIONS = {
    "iteration": "Algorithm 1 iterations done (those of the checkpoint).",
    "kl_data_to_generator": "KL(p_data || p_theta) in nats, exact over every sequence: how far the trained generator is "
                            "from the data distribution (0: equal). The number to judge the run by.",
    "kl_data_to_posterior": "KL(p_data || q_phi) in nats, exact, q_phi = p_theta exp(alpha f_phi) / Z with the trained "
                            "p_theta: the learned constraint applied once more on top of the generator it already "
                            "trained, so it counts its correction twice; above kl_data_to_generator is expected, not a "
                            "failure (null for variant base, which has no constraint).",
    "nll_oracle": "NLL_oracle in nats/token: the oracle LSTM's NLL of the generator's samples at T=1 (lower: samples the "
                  "true distribution finds likely); colder, less diverse samples also lower it, so read it with self_nll.",
    "nll_oracle_ci95": "half-width of the 95% sampling interval of nll_oracle over the evaluation samples.",
    "heldout_nll": "the generator's NLL of held-out oracle data in nats/token (lower: it covers the data).",
    "self_nll": "the generator's NLL of its own samples in nats/token, its entropy rate (diversity); compare nll_oracle "
                "between runs at similar values.",
}
"""what each number of :func:`evaluate` means (``kcrl evaluate`` prints it beside the JSON)"""


def sample(out: str | Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n samples of the run's generator with their log-probabilities and constraint scores."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
        raise ConfigError(f"the number of samples (-n) must be an integer from 1 to {MAX_SAMPLES:,}; got {n!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ConfigError(f"the sampling seed (--seed) must be an integer in [0, 2**64); got {seed!r}.")
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


class _StopRequested(BaseException):
    """Raised at the start of a step once a stop signal has arrived (caught in :func:`train`)."""


def _run_entries(out: Path) -> list[str]:
    """What ``out`` holds besides the lock, temp files and pre-trained starts (``base-*.pt``, reusable)."""
    return sorted(p.name for p in out.iterdir()
                  if p.name != LOCK_NAME and not (p.name.startswith(".") and p.name.endswith(".tmp"))
                  and not (p.name.startswith("base-") and p.name.endswith(".pt")))


def _check_run_folder(config: TrainConfig, out: Path, resume: bool, force: bool) -> bool:
    """Apply the folder rules of the module docstring before any compute; returns whether to resume."""
    checkpoint, saved = out / "checkpoint.pt", out / "config.yaml"
    if checkpoint.exists() and not checkpoint.is_file():
        raise CheckpointError(
            f"{str(checkpoint)!r} is a directory, not a checkpoint; the run could neither resume from it nor save to "
            "it. Move it away, then run again."
        )
    if resume:
        if not checkpoint.is_file():
            if not force:
                raise OutputFolderError(
                    f"--resume: {str(out)!r} holds no checkpoint.pt, so there is nothing to resume. Drop --resume to "
                    "start a new run there, or add --force to start one anyway."
                )
            resume = False
        elif not saved.is_file():
            if not force:
                raise OutputFolderError(
                    f"--resume: {str(out)!r} holds a checkpoint but no config.yaml, so nothing shows that the "
                    "checkpoint was trained with this config (other data_samples or seed would resume on other "
                    "data). Restore config.yaml, or add --force to resume with this config anyway."
                )
        else:
            changed = _differences(TrainConfig.saved(out).to_dict(), config.to_dict())
            if changed:
                raise ConfigError(
                    f"the run in {str(out)!r} was started with a different config (differs in {', '.join(changed)}); "
                    "resume it with its own config.yaml, or start a new run in another folder."
                )
            return True
    present = _run_entries(out)
    if present and not force:
        listed = ", ".join(present[:5]) + (f" and {len(present) - 5} more" if len(present) > 5 else "")
        raise OutputFolderError(
            f"{str(out)!r} already holds files ({listed}); pass --resume to continue the run there, --force to "
            "start over (its checkpoint.pt, config.yaml and metrics.json are deleted), or choose another --out."
        )
    if force:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    return resume


def _interrupted(out: Path, signum: int, iteration: int, total: int) -> RunInterrupted:
    import shlex
    import signal

    name = signal.Signals(signum).name
    folder = shlex.quote(str(out))
    return RunInterrupted(
        f"training stopped by {name} after iteration {iteration} of {total}; {out / 'checkpoint.pt'} holds it. "
        f"Resume with: kcrl train {folder}/config.yaml --out {folder} --resume", signum,
    )


def train(config: TrainConfig, out: str | Path, resume: bool = False, show_progress: bool = True,
          stop_after: int | None = None, tensorboard: bool = False,
          trainer_factory: Callable[..., PRTrainer] = PRTrainer, force: bool = False,
          handle_signals: bool = True, writes: bool = True) -> dict[str, Any]:
    """Run (or resume) one training run; returns the final metrics.

    ``trainer_factory(generator, constraint, data, config)`` builds the trainer (e.g. one rank of
    :class:`kcrl.distributed.DistributedPRTrainer`); only its main process writes files. The output
    folder is checked and locked first (rules in the module docstring; ``force`` is ``--force``).
    With ``handle_signals`` (in the main thread) SIGINT, SIGTERM and SIGHUP end the run after the
    current iteration with a checkpoint and a :class:`~kcrl.errors.RunInterrupted` (``exit_code``
    130, 143, 129). ``writes=False`` (ranks other than 0) skips the folder checks and the lock.
    """
    out = Path(out)
    if config.generator_step == "agent" and trainer_factory is not PRTrainer:
        raise ConfigError(
            "generator_step: agent runs in a single process (the agent is not data-parallel); drop --ddp, or use "
            "generator_step: trainer."
        )
    lock = None
    if writes:
        check_output_folder(out)
        lock = RunLock(out).acquire()
    try:
        if writes:
            remove_stale_temps(out)
            resume = _check_run_folder(config, out, resume, force)
        stop = StopSignals() if handle_signals else None
        with stop if stop is not None else contextlib.nullcontext():
            parts = _build(config, out, show_progress=show_progress)
            cfg = replace(config.trainer, variant=parts.variant, seed=config.seed)
            extra = {} if parts.generator_step is None else {"generator_step": parts.generator_step}
            if tensorboard:  # the task's quality measures (those of metrics.json) under eval/, every eval_every iterations
                extra["evaluate"] = lambda tr: _scores(config, parts, tr.device)
            trainer = trainer_factory(parts.generator, parts.constraint, (parts.data, None), cfg, **extra)
            if trainer.is_main_process:
                atomic_write_text(out / "config.yaml", dump_yaml(config.to_dict()))
            if stop is not None:
                step = trainer.step

                def step_unless_stopped():
                    if stop.received is not None:
                        raise _StopRequested
                    return step()

                trainer.step = step_unless_stopped
            try:
                history = trainer.train(out=out, resume=resume, show_progress=show_progress, stop_after=stop_after,
                                        tensorboard=tensorboard)
            except _StopRequested:
                if trainer.is_main_process:
                    trainer._save(out / "checkpoint.pt")
                raise _interrupted(out, stop.received, trainer.iteration, cfg.iterations) from None
        metrics = {"iteration": trainer.iteration, **_scores(config, parts, trainer.device), "last": history[-1] if history else {}}
        if trainer.is_main_process:
            write_json(out / "metrics.json", metrics, "the run's metrics")
        return metrics
    finally:
        if lock is not None:
            lock.release()


def train_distributed(config, out: str | Path, resume: bool = False, show_progress: bool = True,
                      sampling: str = "sharded", stop_after: int | None = None, tensorboard: bool = False,
                      force: bool = False) -> dict[str, Any]:
    """:func:`train` on every rank of the torchrun job (:mod:`kcrl.distributed`); rank 0 checks, locks and
    writes the output folder. Signals are left to torchrun (a rank that stopped alone would hang the others)."""
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
        return train(config, out, resume=resume, show_progress=show_progress and rank == 0, stop_after=stop_after,
                     trainer_factory=factory, tensorboard=tensorboard and rank == 0, force=force,
                     handle_signals=False, writes=rank == 0)
    finally:
        dist.destroy_process_group()
