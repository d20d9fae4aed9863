"""Progress lines name the run (suite, variant, seed), say i/total and give an ETA."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest

import kcrl.progress as progress_module
from kcrl.progress import LogProgress, current_label, progress, progress_label


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progress_module.time, "monotonic", fake)
    return fake


def test_log_lines_carry_label_count_and_eta(clock):
    out = io.StringIO()
    with progress_label("tabular-joint learned seed 1"):
        bar = LogProgress(range(10), progress_module._full_desc("Algorithm 1 (learned)", None), file=out, log_interval=35)
    items = iter(bar)
    for _ in range(4):
        next(items)
        clock.now += 10.0  # 10 s per iteration
    next(items)  # the 5th: 40 s since the last line -> one line
    lines = out.getvalue().splitlines()
    assert lines[0] == "tabular-joint learned seed 1 · Algorithm 1 (learned): 0/10 (0%), 0:00 elapsed, ETA unknown"
    assert lines[1] == "tabular-joint learned seed 1 · Algorithm 1 (learned): 4/10 (40%), 0:40 elapsed, ETA 1:00"
    list(items)
    assert out.getvalue().splitlines()[-1].endswith("10/10 (100%), 0:40 elapsed, done")


def test_lines_are_throttled(clock):
    out = io.StringIO()
    bar = LogProgress(None, "SB3 PPO env tokens", total=1000, file=out, log_interval=30)
    for tokens in range(0, 1000, 100):
        bar.n = tokens
        bar.refresh()
        clock.now += 1.0  # 10 updates within 10 s: no line between the first and the last
    bar.close()
    assert len(out.getvalue().splitlines()) == 2


def test_labels_nest_and_end_with_their_block():
    with progress_label("paper-text"):
        with progress_label("fixed seed 2"):
            assert current_label() == "paper-text fixed seed 2"
            assert progress_module._full_desc("MLE", "x") == "paper-text fixed seed 2 x · MLE"
        assert current_label() == "paper-text"
    assert current_label() == "" and progress_module._full_desc("MLE", None) == "MLE"


def test_progress_off_writes_nothing(capsys):
    for _ in progress(range(3), "quiet", enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_tabular_joint_names_variant_and_seed(capsys):
    from kcrl.benchmarks import suite_config
    from kcrl.benchmarks.tabular_joint import run_variant

    config = suite_config("tabular-joint", quick=True)
    config = replace(config, trainer=replace(config.trainer, iterations=3, samples=64), eval_every=1, data_samples=200)
    run_variant("learned", 4, config, progress=True)
    err = capsys.readouterr().err
    assert "tabular-joint learned seed 4 · Algorithm 1 (learned): 0/3" in err
    assert "3/3 (100%)" in err
    run_variant("learned", 4, config, progress=False)  # control: off means no line
    assert capsys.readouterr().err == ""
