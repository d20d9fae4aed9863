"""Benchmark suites: each is a ``run(seed, out, quick, progress, config) -> {"metrics", "table"}``.

``kcrl bench --list`` shows them; ``kcrl bench SUITE`` runs one.

A suite's config is a dataclass (the type of its ``run``'s ``config`` argument), the typed schema
with documented fields and the full size as defaults. ``suites/SUITE.yaml`` holds the sizes the
suite runs at, as overrides over those defaults: ``full:`` (usually empty) and ``quick:`` (applied on
top of ``full``). :func:`suite_config` resolves them, then a user's YAML file of overrides (same
keys as the dataclass) on top; ``kcrl bench SUITE --print-config [--quick] [--config FILE]`` shows
the result, and every result folder holds it as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kcrl.errors import ConfigError, did_you_mean, unknown_name

SUITE_DIR = Path(__file__).resolve().parent / "suites"
"""where the suites' YAML files live (installed as package data)"""
SUITE_FILE_KEYS = ("full", "quick")

# name -> (one-line description, "module:function")
SUITES: dict[str, tuple[str, str]] = {
    "tabular-exact": (
        "MaxEnt IRL (Eq. 8) and the soft-PG agent on TabularSequence-v0, scored by exact KLs",
        "kcrl.benchmarks.tabular_exact:run",
    ),
    "tabular-joint": (
        "Algorithm 1 and the paper's baselines on TabularSequence-v0, scored by exact KL(p_data || p_theta)",
        "kcrl.benchmarks.tabular_joint:run",
    ),
    "agent-cost": (
        "one soft-PG training iteration vs the bare forward+backward of the same policy on the same batch",
        "kcrl.benchmarks.agent_cost:run",
    ),
    "throughput": ("env steps/s (batched vs SyncVectorEnv) and soft-PG vs SB3 PPO tokens/s", "kcrl.benchmarks.throughput:run"),
    "ring-base": (
        "GaussianRing-v0 implicit base generator (MMD): mode coverage, high-quality share, exact log-likelihood",
        "kcrl.benchmarks.onestep_base:run_ring",
    ),
    "digits-base": (
        "StructuredDigits-v0 base generator (Bernoulli MLE): test SSIM vs copy-source and class-mean baselines",
        "kcrl.benchmarks.onestep_base:run_digits",
    ),
    "template-base": (
        "MLE base generator of TemplateSentence-v0 on IMDB: test perplexity, template accuracy, BLEU",
        "kcrl.benchmarks.template_base:run",
    ),
    "oracle-mle": (
        "SeqGAN's MLE baseline on OracleSequence-v0: NLL_oracle, held-out NLL, floor and uniform references",
        "kcrl.benchmarks.oracle_mle:run",
    ),
    "paper-text": (
        "the paper's text table: base / binary D / M-step / fixed rule / learned constraint from the MLE checkpoint",
        "kcrl.benchmarks.paper_text:run",
    ),
    "paper-image": (
        "the paper's image comparison on StructuredDigits-v0: base / fixed / learned structure constraint, test SSIM",
        "kcrl.benchmarks.paper_image:run",
    ),
    "seqgan-oracle": (
        "SeqGAN's oracle: MLE vs binary D (SeqGAN-style) vs learned constraint from one MLE base, NLL_oracle over seeds",
        "kcrl.benchmarks.seqgan_oracle:run",
    ),
    "agents": (
        "kcrl's soft-PG agent vs SB3 PPO vs Tianshou PPO on the same env and budget: exact quality and tokens/s",
        "kcrl.benchmarks.agents:run",
    ),
}


def get_suite(name: str) -> Callable:
    """The ``run`` function of suite ``name``; unknown names get a "did you mean"."""
    if name not in SUITES:
        raise unknown_name("suite", name, SUITES)
    module, func = SUITES[name][1].split(":")
    return getattr(importlib.import_module(module), func)


def suite_schema(name: str) -> type | None:
    """The config dataclass of suite ``name`` (the type of its ``run``'s ``config``), or ``None``."""
    run = get_suite(name)
    try:
        hint = typing.get_type_hints(run).get("config")
    except (NameError, TypeError):
        return None
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    schemas = [t for t in options if isinstance(t, type) and dataclasses.is_dataclass(t)]
    return schemas[0] if len(schemas) == 1 else None


def suite_file(name: str) -> Path:
    """``suites/NAME.yaml`` (it may not exist)."""
    return SUITE_DIR / f"{name}.yaml"


def _overrides(schema: type, values: Any, source: str, base: Any = None) -> Any:
    from kcrl.config import from_mapping

    try:
        return from_mapping(schema, {} if values is None else values, base=base)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def suite_config(name: str, quick: bool = False, path: str | Path | None = None) -> Any:
    """The resolved config of suite ``name``: its YAML size (``full``, or ``quick`` on top of it),
    then the overrides in the YAML file ``path`` (same keys as the suite's config dataclass).

    Unknown keys and values of the wrong type raise :class:`~kcrl.errors.ConfigError` naming the
    file and the key's dotted path.
    """
    from kcrl.config import load_yaml

    schema = suite_schema(name)
    if schema is None:
        raise ConfigError(
            f"suite {name!r} has no typed config: its run function needs an argument `config: SomeConfig | None` "
            "annotated with a dataclass, so that --config and --print-config know its keys."
        )
    file = suite_file(name)
    if not file.is_file():
        raise ConfigError(f"suite {name!r} has no sizes file {str(file)!r}; add one with `full:` and `quick:` mappings.")
    doc = load_yaml(file, "suite file")
    if not isinstance(doc, dict) or set(doc) != set(SUITE_FILE_KEYS):
        keys = sorted(map(str, doc)) if isinstance(doc, dict) else type(doc).__name__
        extra = [k for k in (doc if isinstance(doc, dict) else ()) if k not in SUITE_FILE_KEYS]
        hint = did_you_mean(str(extra[0]), SUITE_FILE_KEYS) if extra else ""
        raise ConfigError(
            f"suite file {str(file)!r} must hold exactly the mappings {' and '.join(SUITE_FILE_KEYS)} "
            f"(overrides of {schema.__name__}); got {keys}.{hint}"
        )
    config = _overrides(schema, doc["full"], f"suite file {str(file)!r}, full")
    if quick:
        config = _overrides(schema, doc["quick"], f"suite file {str(file)!r}, quick", base=config)
    if path is not None:
        config = _overrides(schema, load_yaml(path), f"config file {str(path)!r}", base=config)
    return config
