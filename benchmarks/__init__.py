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
    "oracle-mle": (
        "SeqGAN's MLE baseline on OracleSequence-v0: NLL_oracle, held-out NLL, floor and uniform references",
        "kcrl.benchmarks.oracle_mle:run",
    ),
}


def get_suite(name: str) -> Callable:
    """The ``run`` function of suite ``name``; unknown names get a "did you mean"."""
    if name not in SUITES:
        raise unknown_name("suite", name, SUITES)
    module, func = SUITES[name][1].split(":")
    return getattr(importlib.import_module(module), func)
