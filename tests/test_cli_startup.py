"""The ``kcrl`` command starts fast: ``--help`` and ``--version`` answer without importing torch."""

from __future__ import annotations

import subprocess
import sys

import kcrl

PROBE = """
import sys
from kcrl.cli import main
try:
    main({argv!r})
except SystemExit as exc:
    code = exc.code
print("torch loaded" if "torch" in sys.modules else "torch not loaded", code)
"""


def _probe(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, timeout=120)


def test_help_and_version_do_not_import_torch():
    """Control: moving ``import torch`` (or an import that pulls it) above ``parse_args`` in
    ``kcrl.cli.main``, or back into ``kcrl/__init__.py``, makes this fail."""
    for argv in (["--help"], ["--version"], ["bench", "--help"], ["train", "--help"]):
        proc = _probe(argv)
        assert proc.stdout.strip().endswith("torch not loaded 0"), (argv, proc.stdout[-2000:], proc.stderr[-2000:])


def test_import_kcrl_registers_envs_without_torch():
    code = "import sys, gymnasium as gym, kcrl; print('TemplateSentence-v0' in gym.registry, 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["True", "False"], proc.stderr[-2000:]


def test_version_is_the_package_version():
    proc = subprocess.run([sys.executable, "-m", "kcrl.cli", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"kcrl {kcrl.__version__}"


def test_lazy_env_classes_still_import():
    from kcrl.envs import BatchedGenerationEnv, OneStepTask, SequenceTask

    assert BatchedGenerationEnv.__module__ == "kcrl.envs.generation"
    assert OneStepTask.__module__ == "kcrl.envs.onestep" and SequenceTask.__module__ == "kcrl.envs.task"
