"""The import contracts in ``.importlinter`` hold, and break when a layer is crossed.

``envs/``, ``agents/`` and ``benchmarks/`` install as ``kcrl.envs``, ``kcrl.agents`` and
``kcrl.benchmarks`` (setuptools ``package_dir``), so the checks run on the tree as it installs,
assembled here from the mapping in ``setup.cfg``.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / ".importlinter"


def _installed_tree(dest: Path) -> Path:
    """``dest/kcrl`` laid out as the installed package (sources only)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    mapping = dict(
        line.split("=", 1) for line in cfg["options"]["package_dir"].strip().splitlines() if "=" in line
    )
    mapping = {k.strip(): v.strip() for k, v in mapping.items()}
    ignore = shutil.ignore_patterns("__pycache__", "results", "*.pt")
    shutil.copytree(ROOT / mapping["kcrl"], dest / "kcrl", ignore=ignore)
    for package, folder in mapping.items():
        if package != "kcrl":
            shutil.copytree(ROOT / folder, dest / package.replace(".", "/"), ignore=ignore)
    return dest


def _lint(site: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(lint), str(CONTRACTS), "--no-cache"], cwd=site, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return _installed_tree(tmp_path_factory.mktemp("site"))


def test_the_contracts_hold(site):
    proc = _lint(site)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("kcrl/constraints.py", "import stable_baselines3", "The core and the models import no RL library BROKEN"),
    ("kcrl/envs/oracle.py", "import kcrl.agents.soft_pg", "The environments import no agent and no RL learner library BROKEN"),
    ("kcrl/benchmarks/paper_text.py", "import tianshou", "Only kcrl.agents.tianshou imports tianshou BROKEN"),
    ("kcrl/models/tabular.py", "import kcrl.envs.tabular", "Layers: cli > benchmarks (suites, single runs) > agents > envs > models > core BROKEN"),
])
def test_a_crossed_layer_breaks_its_contract(tmp_path, module, line, contract):
    """Controls: one added import makes lint-imports fail, naming the contract."""
    broken = _installed_tree(tmp_path)
    path = broken / module
    path.write_text(path.read_text() + f"\n{line}  # a deliberate violation\n")
    proc = _lint(broken)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert contract in " ".join(proc.stdout.split()), proc.stdout[-3000:]


def test_every_package_is_listed_for_the_wheel():
    """A package folder missing from setup.cfg's ``packages`` would be absent from a plain ``pip install``."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    folders = {"kcrl": "kcrl", "kcrl.envs": "envs", "kcrl.agents": "agents", "kcrl.benchmarks": "benchmarks"}
    found = set()
    for package, folder in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            name = ".".join((package, *relative))
            if not (package == "kcrl" and relative and relative[0] in ("envs", "agents", "benchmarks")):
                found.add(name)
    assert found - listed == set()
