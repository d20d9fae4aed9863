"""Every docstring example in kcrl, and every example in README.md and docs/*.md, runs."""

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import kcrl

ROOT = Path(__file__).resolve().parent.parent
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules():
    names = ["kcrl"]
    for info in pkgutil.walk_packages(kcrl.__path__, prefix="kcrl."):
        names.append(info.name)
    for pkg in ("kcrl.envs", "kcrl.agents", "kcrl.benchmarks"):
        module = importlib.import_module(pkg)
        names += [pkg] + [info.name for info in pkgutil.walk_packages(module.__path__, prefix=pkg + ".")]
    return sorted(set(names))


@pytest.mark.parametrize("name", _modules())
def test_module_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS, verbose=False)
    assert result.failed == 0


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_markdown_examples(path):
    result = doctest.testfile(str(path), module_relative=False, optionflags=FLAGS, verbose=False)
    assert result.failed == 0
