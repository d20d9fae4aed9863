"""What pyproject.toml says about the slow tier is what CI does (``.ci/run`` -> ``make test``)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _recipe(makefile: str, target: str) -> str:
    match = re.search(rf"^{target}:.*\n((?:\t.*\n?)*)", makefile, re.M)
    assert match, f"no {target} target in the Makefile"
    return match.group(1)


def test_ci_runs_every_slow_test_as_the_marker_says():
    """Control: a -k / --deselect / -m "slow and ..." filter in make test-slow, or CI not running make
    test, fails this while the marker's text says all slow tests run in CI."""
    marker = next(m for m in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
                  if m.startswith("slow:"))
    assert "CI runs all of them" in marker
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: .*\btest-fast\b.*\btest-slow\b", makefile, re.M)
    slow = _recipe(makefile, "test-slow")
    assert re.search(r"pytest -m slow\b", slow) and not re.search(r"\s(-k|--deselect|--ignore)\b|-m \"slow and", slow), slow
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)
