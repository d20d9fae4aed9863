"""Every docstring example in kcrl, and every example in README.md and docs/*.md, runs and checks its output."""

import copy
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


def _examples(name: str) -> list[doctest.DocTest]:
    return [t for t in doctest.DocTestFinder().find(importlib.import_module(name)) if t.examples]


MODULES = _modules()
WITH_EXAMPLES = [name for name in MODULES if _examples(name)]
MARKDOWN = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if ">>> " in p.read_text()]


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name):
    """Every module of the installed package imports (optional extras are imported only where used)."""
    assert importlib.import_module(name).__name__ == name


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_module_docstring_examples(name):
    """The module's examples run and their printed results are compared (at least one example has one)."""
    result = doctest.testmod(importlib.import_module(name), optionflags=FLAGS, verbose=False)
    assert result.attempted > 0 and result.failed == 0
    assert any(e.want.strip() for t in _examples(name) for e in t.examples), f"{name}'s examples check no output"


def test_every_env_module_has_a_checked_example():
    """STYLE: each environment's docstring carries an example run as a doctest, with an output checked."""
    import gymnasium as gym

    from kcrl.envs import ENV_IDS

    modules = {gym.spec(env_id).entry_point.split(":")[0] for env_id in ENV_IDS}
    missing = sorted(m for m in modules if m not in WITH_EXAMPLES)
    assert missing == []


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.name)
def test_markdown_examples(path):
    result = doctest.testfile(str(path), module_relative=False, optionflags=FLAGS, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_readme_and_adapters_doc_have_examples():
    assert {"README.md", "adapters.md"} <= {p.name for p in MARKDOWN}


def _fails_with_a_changed_output(test: doctest.DocTest) -> bool:
    """Run ``test`` with its first checked output replaced: True when doctest reports the failure."""
    test = copy.copy(test)
    test.examples = [copy.copy(e) for e in test.examples]
    first = next(e for e in test.examples if e.want.strip())
    first.want = "'not this output'\n"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=lambda _: None)
    return runner.summarize(verbose=False).failed == 1


def test_control_a_changed_output_fails():
    """Controls: with the flags used here (ELLIPSIS, NORMALIZE_WHITESPACE) outputs are still compared:
    one changed expected output in the README, or in a module's docstring, fails its doctest."""
    readme = (ROOT / "README.md").read_text()
    assert _fails_with_a_changed_output(doctest.DocTestParser().get_doctest(readme, {}, "README.md", "README.md", 0))
    checked = next(t for t in _examples("kcrl.envs.tabular") if any(e.want.strip() for e in t.examples))
    assert _fails_with_a_changed_output(checked)


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
