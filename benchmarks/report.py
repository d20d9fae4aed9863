"""Result files: ``results.json`` (every number plus provenance), ``config.yaml`` (the resolved
config) and ``results.md`` (tables)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from kcrl.checkpoint import atomic_write_text
from kcrl.config import dump_yaml, to_mapping


def git_commit() -> str:
    """The commit of the source tree kcrl runs from, with ``-dirty`` if it has changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    """CPU model, cores, GPU (if any), thread settings and library versions."""
    import gymnasium
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": numpy.__version__,
    }


def group_by_variant(task_list: list[dict], results: list) -> dict[str, list]:
    """A suite's results grouped by ``task["variant"]``, in task order."""
    groups: dict[str, list] = {}
    for task, result in zip(task_list, results):
        groups.setdefault(task["variant"], []).append(result)
    return groups


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(
    out: Path, suite: str, seed: int, config: Any, metrics: dict[str, Any], markdown: str, **extra: Any
) -> dict[str, Any]:
    """Write ``out/results.json``, ``out/config.yaml`` and ``out/results.md``; returns the JSON object.

    ``config`` (a config dataclass or a mapping) is embedded in results.json and written as YAML
    to config.yaml, which ``kcrl bench SUITE --config out/config.yaml`` reads back.
    """
    out = Path(out)
    resolved = to_mapping(config) if is_dataclass(config) or isinstance(config, Mapping) else config
    record = {
        "suite": suite,
        "seed": seed,
        "config": resolved,
        "metrics": metrics,
        "commit": git_commit(),
        "machine": machine(),
        **extra,
    }
    atomic_write_text(out / "results.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    if isinstance(resolved, dict):
        header = f"# the resolved config of suite {suite} (run with --seed {seed}); `kcrl bench {suite} --config` reads it\n"
        atomic_write_text(out / "config.yaml", header + dump_yaml(resolved))
    header = f"# {suite}\n\nseed {seed} · commit `{record['commit']}` · {record['machine']['cpu']} ({record['machine']['cores']} cores)\n\n"
    if isinstance(resolved, dict):  # the exact sizes, whatever --quick / --config made them
        header += f"Resolved config: [`config.yaml`](config.yaml) (`kcrl bench {suite} --seed {seed} --config config.yaml` reruns it).\n\n"
    atomic_write_text(out / "results.md", header + markdown + "\n")
    return record
