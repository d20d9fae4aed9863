"""``kcrl train CONFIG --out DIR [--resume]``: one Algorithm 1 run from a YAML config.

Example config (every key optional; unknown keys are rejected)::

    task: tabular
    seed: 0
    data_samples: 5000
    variant: learned          # base | binary_d | mstep | fixed_complete | fixed_incomplete | learned
    world: {vocab_size: 4, length: 4, constraint_scale: 1.0}
    trainer: {iterations: 400, samples: 4096, mle_weight: 0.1, constraint_steps: 5}

``kcrl sample DIR [-n N]`` prints samples of the trained generator; ``kcrl evaluate DIR`` prints
its exact metrics. The run writes ``DIR/config.yaml`` (the resolved config), ``DIR/checkpoint.pt`` (atomic, every
``trainer.checkpoint_every`` iterations) and ``DIR/metrics.json``. With ``--resume`` a killed run
continues from its last checkpoint and ends with the same metrics as an uninterrupted run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from kcrl.checkpoint import atomic_write_text
from kcrl.config import dump_yaml, from_mapping, load_yaml
from kcrl.errors import ConfigError, did_you_mean, unknown_name
from kcrl.trainer import PRConfig, PRTrainer

TASKS = ("tabular",)
WORLD_KEYS = ("vocab_size", "length", "constraint_scale", "alpha")


@dataclass
class TrainConfig:
    """A single training run."""

    task: str = "tabular"
    """the world to train on"""
    seed: int = 0
    """seed of the world, the data and the trainer"""
    data_samples: int = 5000
    """training-set size drawn from the world's p_data"""
    variant: str = "learned"
    """base, binary_d, mstep, fixed_complete, fixed_incomplete or learned"""
    world: dict = field(default_factory=dict)
    """keyword arguments of the world (vocab_size, length, constraint_scale, alpha)"""
    trainer: PRConfig = field(default_factory=lambda: PRConfig(iterations=400, samples=4096, mle_weight=0.1, constraint_steps=5))
    """Algorithm 1 settings (keys given here override these defaults; its ``variant`` and ``seed`` come from the top-level keys)"""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping (:func:`kcrl.config.from_mapping`): unknown keys and wrong types are rejected."""
        if not isinstance(values, dict):
            raise ConfigError(f"a train config must be a mapping of keys to values; got {type(values).__name__}.")
        config = from_mapping(cls, values)
        if config.task not in TASKS:
            raise unknown_name("task", config.task, TASKS)
        for key in config.world:
            if key not in WORLD_KEYS:
                raise ConfigError(f"unknown world key {key!r}.{did_you_mean(key, WORLD_KEYS)} Known: {', '.join(WORLD_KEYS)}.")
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(load_yaml(path) or {})


def _build(config: TrainConfig):
    """The world, data and trainer parts a config describes (deterministic in its seed)."""
    from kcrl.benchmarks.tabular_joint import POLICY_VARIANTS, VARIANTS, build_variant
    from kcrl.envs.tabular import TabularWorld

    variants = tuple(v for v in VARIANTS if v not in POLICY_VARIANTS)  # the tabular generator's variants
    if config.variant not in variants:
        raise unknown_name("variant", config.variant, variants)
    torch.manual_seed(config.seed)
    world = TabularWorld(world_seed=config.seed, **config.world)
    data = world.sample_data(config.data_samples, torch.Generator().manual_seed(config.seed))
    generator, constraint, variant = build_variant(world, config.variant)
    return world, data, generator, constraint, variant


def load_run(out: str | Path):
    """``(config, world, generator, constraint)`` of a finished or interrupted run in ``out``."""
    from kcrl.checkpoint import CheckpointError, load_checkpoint

    out = Path(out)
    config = TrainConfig.from_yaml(out / "config.yaml")
    world, _, generator, constraint, _ = _build(config)
    state = load_checkpoint(out / "checkpoint.pt")
    try:
        generator.load_state_dict(state["generator"])
        constraint.load_state_dict(state["constraint"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"the checkpoint in {str(out)!r} does not match its config.yaml: {exc}") from exc
    return config, world, generator, constraint


def evaluate(out: str | Path) -> dict[str, Any]:
    """Exact metrics of the run in ``out``: KL(p_data || p_theta) and KL(p_data || q_phi)."""
    from kcrl.posterior import kl_divergence

    config, world, generator, constraint = load_run(out)
    with torch.no_grad():
        log_p = generator.log_prob(world.sequences())
        log_data = world.data_log_probs()
        q = world.posterior(constraint, config.trainer.alpha) if config.variant != "base" else None
        return {
            "kl_data_to_generator": kl_divergence(log_data, log_p).item(),
            "kl_data_to_posterior": None if q is None else kl_divergence(log_data, q.log_q).item(),
            "iteration": int(torch.load(Path(out) / "checkpoint.pt", weights_only=True)["iteration"]),
        }


def sample(out: str | Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n samples of the run's generator with their log-probabilities and constraint scores."""
    _, _, generator, constraint = load_run(out)
    with torch.no_grad():
        x, log_p = generator.sample(n, torch.Generator().manual_seed(seed))
        f = constraint.predict(x)
    return [{"tokens": xi.tolist(), "log_p": round(lp.item(), 4), "constraint": round(fi.item(), 4)}
            for xi, lp, fi in zip(x, log_p, f)]


def train(config: TrainConfig, out: str | Path, resume: bool = False, show_progress: bool = True,
          stop_after: int | None = None, tensorboard: bool = False,
          trainer_factory: Callable[..., PRTrainer] = PRTrainer) -> dict[str, Any]:
    """Run (or resume) one training run; returns the final metrics.

    ``trainer_factory(generator, constraint, data, config)`` builds the trainer (e.g. one rank of
    :class:`kcrl.distributed.DistributedPRTrainer`); only its main process writes files.
    """
    from kcrl.posterior import kl_divergence

    out = Path(out)
    if (out / "checkpoint.pt").exists() and not resume:
        raise ConfigError(f"{str(out)!r} already holds a run; pass --resume to continue it or choose another --out.")
    world, data, generator, constraint, variant = _build(config)
    trainer = trainer_factory(generator, constraint, (data, None), replace(config.trainer, variant=variant, seed=config.seed))
    if trainer.is_main_process:
        atomic_write_text(out / "config.yaml", dump_yaml(config))
    history = trainer.train(out=out, resume=resume, show_progress=show_progress, stop_after=stop_after, tensorboard=tensorboard)
    with torch.no_grad():
        kl = kl_divergence(world.data_log_probs(), generator.log_prob(world.sequences().to(trainer.device)).cpu()).item()
    metrics = {"iteration": trainer.iteration, "kl_data_to_generator": kl, "last": history[-1] if history else {}}
    if trainer.is_main_process:
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
