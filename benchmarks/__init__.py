"""Benchmark suites: each is a ``run(seed, out, quick, progress) -> {"metrics", "table"}``.

``kcrl bench --list`` shows them; ``kcrl bench SUITE`` runs one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from kcrl.errors import unknown_name

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
}


def get_suite(name: str) -> Callable:
    """The ``run`` function of suite ``name``; unknown names get a "did you mean"."""
    if name not in SUITES:
        raise unknown_name("suite", name, SUITES)
    module, func = SUITES[name][1].split(":")
    return getattr(importlib.import_module(module), func)
