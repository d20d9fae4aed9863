"""Result files: ``results.json`` (every number plus provenance), ``config.yaml`` (the resolved
config) and ``results.md`` (tables)."""

from __future__ import annotations

import difflib
import json
import math
import os
import platform
import re
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
    if not (root / "setup.cfg").is_file():  # an installed package: site-packages may sit inside some other checkout
        return "unknown"
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


def finite_json(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """``value`` with every NaN/inf float replaced by ``None``, and the paths of those entries.

    >>> finite_json({"a": 1.0, "b": [float("nan"), 2]})
    ({'a': 1.0, 'b': [None, 2]}, ['b[0]'])
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None, [path or "."]
    if isinstance(value, Mapping):
        out, bad = {}, []
        for k, v in value.items():
            out[k], sub = finite_json(v, f"{path}.{k}" if path else str(k))
            bad += sub
        return out, bad
    if isinstance(value, (list, tuple)):
        items = [finite_json(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in items], [p for _, sub in items for p in sub]
    return value, []


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
    record, non_finite = finite_json(record)
    if non_finite:  # JSON has no NaN/inf: such numbers are written as null and named here
        record["non_finite"] = non_finite
    atomic_write_text(out / "results.json", json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n")
    if isinstance(resolved, dict):
        header = f"# the resolved config of suite {suite} (run with --seed {seed}); `kcrl bench {suite} --config` reads it\n"
        atomic_write_text(out / "config.yaml", header + dump_yaml(resolved))
    header = f"# {suite}\n\nseed {seed} · commit `{record['commit']}` · {record['machine']['cpu']} ({record['machine']['cores']} cores)\n\n"
    if isinstance(resolved, dict):  # the exact sizes, whatever --quick / --config made them
        header += f"Resolved config: [`config.yaml`](config.yaml) (`kcrl bench {suite} --seed {seed} --config config.yaml` reruns it).\n\n"
    atomic_write_text(out / "results.md", header + markdown + "\n")
    return record


# ------------------------------------------------------------------ conclusions computed from the numbers
RESULTS_ROOT = Path(__file__).resolve().parent / "results"
NUMBERS_BLOCK = re.compile(
    r"<!-- numbers (?P<source>[\w.-]+)\n(?P<template>.*?)\n-->\n(?P<rendered>.*?)\n?(?P<end><!-- end numbers -->)", re.S
)
FIELD = re.compile(r"\{(?P<expr>[\w./-]+(?: - [\w./-]+)?)(?::(?P<spec>[^{}]*))?\}")


def _results(source: str, root: Path, cache: dict[str, dict]) -> dict:
    if source not in cache:
        path = root / source / "results.json"
        if not path.is_file():
            known = sorted(p.parent.name for p in root.glob("*/results.json"))
            close = difflib.get_close_matches(source, known, n=3)
            raise KeyError(f"no results file {path}" + (f"; did you mean {', '.join(close)}?" if close else "."))
        cache[source] = json.loads(path.read_text())
    return cache[source]


def lookup(record: Mapping[str, Any], key: str, source: str = "?") -> Any:
    """``key`` in ``record["metrics"]``, else a dotted path from the record's top (``config.seeds``)."""
    metrics = record.get("metrics", {})
    if key in metrics:
        return metrics[key]
    value: Any = record
    for part in key.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            close = difflib.get_close_matches(key, list(metrics), n=3)
            raise KeyError(f"{source}/results.json has no {key!r}" + (f"; did you mean {', '.join(close)}?" if close else "."))
    return value


def fill_numbers(text: str, root: Path = RESULTS_ROOT) -> str:
    """``text`` with every numbers block rendered from the results it names.

    A block is an HTML comment holding a template, the rendered text, and an end marker::

        <!-- numbers paper-text-quick
        | base | {base_test_perplexity_mean:.2f} ± {base_test_perplexity_ci95:.2f} |
        -->
        | base | 11.21 ± 0.42 |
        <!-- end numbers -->

    Fields are ``{key:format}`` (``key`` looked up in ``root/<source>/results.json``'s metrics, else a
    dotted path from its top, list items by index), ``{other-source/key:format}``, or the difference
    of two such references, ``{a_mean - b_mean:+.2f}``. Markdown hides the comment, so the
    page shows the rendered numbers; :func:`check_numbers` says where a page and its results differ.
    """
    cache: dict[str, dict] = {}

    def render(block: re.Match) -> str:
        default = block["source"]

        def operand(ref: str) -> Any:
            source, _, key = ref.rpartition("/")
            source = source or default
            return lookup(_results(source, root, cache), key, source)

        def field(m: re.Match) -> str:
            refs = m["expr"].split(" - ")
            value = operand(refs[0]) if len(refs) == 1 else operand(refs[0]) - operand(refs[1])
            return format(value, m["spec"] or "")

        rendered = FIELD.sub(field, block["template"])
        return f"<!-- numbers {default}\n{block['template']}\n-->\n{rendered}\n{block['end']}"

    return NUMBERS_BLOCK.sub(render, text)


def check_numbers(text: str, root: Path = RESULTS_ROOT) -> list[str]:
    """The lines of ``text``'s numbers blocks that differ from their rendering (``-`` page, ``+`` results)."""
    expected = fill_numbers(text, root)
    if expected == text:
        return []
    return [line for line in difflib.unified_diff(text.splitlines(), expected.splitlines(), "page", "results", lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("---", "+++"))]


def main(argv: list[str] | None = None) -> int:
    """``python -m kcrl.benchmarks.report FILE.md ...``: render the files' numbers blocks in place
    (``--check``: only report the differences, exit 1 if any)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kcrl.benchmarks.report", description=main.__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="report differences, change nothing")
    parser.add_argument("--results", type=Path, default=RESULTS_ROOT, help="folder of <suite>/results.json")
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        text = path.read_text()
        diff = check_numbers(text, args.results)
        if diff and args.check:
            status = 1
            print(f"{path}: numbers differ from their results.json:\n" + "\n".join(diff))
        elif diff:
            atomic_write_text(path, fill_numbers(text, args.results))
            print(f"{path}: {sum(line.startswith('+') for line in diff)} line(s) updated")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
