"""What the reliability tests share: small configs and ``kcrl`` in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

# a tabular run that takes a few seconds: long enough to be signalled mid-run
TABULAR = {"seed": 1, "data_samples": 500, "world": {"vocab_size": 3, "length": 3},
           "trainer": {"iterations": 200, "samples": 128, "data_batch": 64, "checkpoint_every": 5}}
# the same, a few iterations (to build checkpoints quickly)
TINY = {**TABULAR, "trainer": {**TABULAR["trainer"], "iterations": 12, "checkpoint_every": 3}}


def write_config(folder: Path, values: dict, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(values))
    return path


def kcrl(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``kcrl ARGS`` in a fresh process (one thread), its output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "kcrl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def kcrl_popen(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "kcrl.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
