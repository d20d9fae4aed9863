"""A plain ``pip install`` of the built wheel has everything the package reads at run time.

The slow test builds the wheel, installs it into a fresh virtual environment (torch pinned by
constraints.txt, so the CPU build), and from a folder outside the repository runs the README's
TemplateSentence-v0 example, ``kcrl --version`` / ``--help`` and a tiny ``kcrl bench paper-text
--quick`` (the main job with a few seconds of training), all on the default IMDB corpus and the
shipped generator checkpoint, with an empty corpus cache.
"""

from __future__ import annotations

import configparser
import fnmatch
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"kcrl.envs": "envs", "kcrl.agents": "agents", "kcrl.benchmarks": "benchmarks", "kcrl": "kcrl"}
# Module-level paths the package opens by default at run time; each must be shipped as package data.
RUNTIME_FILES = ["kcrl.benchmarks.paper_text:DEFAULT_CHECKPOINT", "kcrl.envs.digits:DEFAULT_ESTIMATOR"]


def _package_data() -> list[tuple[str, str]]:
    """(package folder relative to the repository, glob) for every package_data entry of setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    entries = []
    for package, globs in cfg["options.package_data"].items():
        top = next(p for p in FOLDERS if package == p or package.startswith(p + "."))
        folder = "/".join([FOLDERS[top], *package[len(top):].strip(".").split(".")]).rstrip("/")
        entries += [(folder, g.strip()) for g in globs.split(",") if g.strip()]
    return entries


def _shipped(path: Path) -> bool:
    relative = path.resolve().relative_to(ROOT).as_posix()
    return any(fnmatch.fnmatch(relative, f"{folder}/{glob}") for folder, glob in _package_data())


def _defaults() -> list[tuple[str, Path]]:
    found = []
    for ref in RUNTIME_FILES:
        module, name = ref.split(":")
        found.append((ref, Path(getattr(importlib.import_module(module), name))))
    for prefix, folder in (("kcrl.envs", "envs"), ("kcrl.benchmarks", "benchmarks")):  # and any other DEFAULT_* file path
        for source in (ROOT / folder).glob("*.py"):
            for name in re.findall(r"^(DEFAULT_\w+) = Path\(__file__\)", source.read_text(), re.M):
                ref = f"{prefix}.{source.stem}:{name}"
                if ref not in RUNTIME_FILES:
                    found.append((ref, Path(getattr(importlib.import_module(f"{prefix}.{source.stem}"), name))))
    return found


def test_default_checkpoints_are_package_data():
    """Control: dropping a checkpoint's line from setup.cfg's [options.package_data] fails this."""
    defaults = _defaults()
    assert len(defaults) >= 2
    for ref, path in defaults:
        assert path.is_file(), f"{ref}: {path} is missing"
        assert _shipped(path), f"{ref}: {path} is not in setup.cfg's [options.package_data], so a pip install lacks it"


def test_control_an_unlisted_file_is_not_shipped():
    assert not _shipped(ROOT / "benchmarks" / "results" / "paper-text" / "results.json")
    assert _shipped(ROOT / "benchmarks" / "suites" / "paper-text.yaml")


def _readme_template_example() -> str:
    """The README's TemplateSentence-v0 example, as a doctest file."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if 'gym.make("TemplateSentence-v0"' in b)


TINY_MAIN_JOB = "budget_s: 2.0\neval_templates: 8\nseeds: 1\nexamples: 1\nvariants: [checkpoint, base, fixed]\n"


@pytest.mark.slow
def test_wheel_installs_and_runs_the_readme_and_the_main_job(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", KCRL_CACHE=str(tmp_path / "cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)

    def run(*cmd, cwd=tmp_path, timeout=900):
        proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    build = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp_path / "dist", ROOT)
    warnings = [line for line in (build.stdout + build.stderr).splitlines() if re.search(r"Warning:|warning:", line)]
    assert warnings == [], "the build warns:\n" + "\n".join(warnings)
    wheel = next((tmp_path / "dist").glob("kcrl-*.whl"))

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python, kcrl = venv / "bin" / "python", venv / "bin" / "kcrl"
    run(python, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", wheel)
    where = run(python, "-c", "import kcrl, torch; print(kcrl.__file__); print(torch.__version__)").stdout.split()
    assert where[0].startswith(str(venv)) and "+cu" not in where[1], where  # the installed copy, the CPU build

    assert run(kcrl, "--version").stdout.strip() == f"kcrl {importlib.import_module('kcrl').__version__}"
    assert "paper-text" in run(kcrl, "bench", "--list").stdout
    assert "--quick" in run(kcrl, "bench", "paper-text", "--quick", "--help").stdout

    example = tmp_path / "readme_example.txt"
    example.write_text(_readme_template_example())
    run(python, "-m", "doctest", "-o", "ELLIPSIS", "-o", "NORMALIZE_WHITESPACE", example)

    config = run(kcrl, "bench", "paper-text", "--quick", "--print-config").stdout
    assert f"checkpoint: {venv}" in config  # the shipped generator, inside the installed package
    (tmp_path / "tiny.yaml").write_text(TINY_MAIN_JOB)
    out = run(kcrl, "bench", "paper-text", "--quick", "--config", "tiny.yaml", "--out", "main-job", "--no-progress").stdout
    assert "| fixed |" in out and (tmp_path / "main-job" / "results.json").is_file()
