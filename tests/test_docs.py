"""Every docstring example in kcrl, and every example in README.md and docs/*.md, runs."""

import doctest
import re
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


# ------------------------------------------------------------------ references to files and names
_SOURCES = [p for p in ROOT.rglob("*") if p.suffix in {".py", ".md", ".yaml", ".cfg"} and p.is_file()
            and not {".git", ".venv", "build", "runs", "results", "__pycache__"} & set(p.relative_to(ROOT).parts)
            and not p.name.endswith(".egg-info")]
_PATH = re.compile(r"(?<![\w/.~$-])((?:[\w.-]+/)+[\w.-]+\.(?:py|md|yaml|cfg|toml|json|pt|txt))\b")
_PLACEHOLDER = re.compile(r"^(?:DIR|OUT|out|runs)/|[A-Z]{3,}\.")  # DIR/config.yaml, suites/SUITE.yaml
_DOTTED = re.compile(r"(?<![\w/.-])(kcrl(?:\.[a-z_]\w*)+(?:\.[A-Za-z_]\w*)*)")
_FORMAT_TAGS = {"kcrl.lstm_lm", "kcrl.seqgan"}  # file-format tags, not import paths
_INSTALLED = {"kcrl/envs/": "envs/", "kcrl/agents/": "agents/", "kcrl/benchmarks/": "benchmarks/"}  # package_dir


def _in_repository(ref: str) -> str:
    """An installed path (under kcrl/envs, kcrl/agents, kcrl/benchmarks) -> where it lives here."""
    for installed, folder in _INSTALLED.items():
        if ref.startswith(installed):
            return folder + ref[len(installed):]
    return ref


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_docs_and_docstrings_name_files_that_exist():
    """Every repository path a doc or docstring names (``benchmarks/train.py``, ``docs/design.md``) exists."""
    missing = sorted(
        f"{path.relative_to(ROOT)}: {ref}"
        for path in _SOURCES for ref in _PATH.findall(path.read_text(errors="replace"))
        if not _PLACEHOLDER.search(ref) and not (ROOT / _in_repository(ref)).exists() and not (path.parent / ref).exists()
    )
    assert missing == []


def test_docs_and_docstrings_name_modules_and_objects_that_exist():
    """Every dotted ``kcrl.…`` name in a doc or docstring imports (a module, or an attribute of one)."""
    missing = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in _SOURCES for name in set(_DOTTED.findall(path.read_text(errors="replace")))
        if name.rstrip(".") not in _FORMAT_TAGS and not name.endswith((".py", ".md", ".yaml", ".pt", ".json"))
        and not _resolves(name.rstrip("."))
    )
    assert missing == []
