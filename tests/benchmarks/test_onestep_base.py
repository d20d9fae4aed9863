"""Smoke runs of the ring-base and digits-base suites with tiny budgets."""

from __future__ import annotations

import json

import pytest

from kcrl.models.image_generator import ImageGeneratorArgs
from kcrl.models.implicit_generator import ImplicitGeneratorArgs
from kcrl.benchmarks import SUITES, get_suite
from kcrl.benchmarks.onestep_base import DigitsBaseConfig, RingBaseConfig, run_digits, run_ring


def test_suites_are_registered():
    assert get_suite("ring-base") is run_ring
    assert get_suite("digits-base") is run_digits
    assert {"ring-base", "digits-base"} <= set(SUITES)


def test_ring_base_smoke(tmp_path):
    config = RingBaseConfig(generator=ImplicitGeneratorArgs(steps=20, batch=64), eval_samples=500)
    result = run_ring(seed=1, out=tmp_path, progress=False, config=config)
    m = result["metrics"]
    assert m["data_mode_coverage"] == 8 and m["data_high_quality_share"] > 0.97
    assert m["untrained_mean_reward"] == pytest.approx(-10.0)  # far from the ring: the clipped floor
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["suite"] == "ring-base" and record["seed"] == 1 and record["config"]["generator"]["steps"] == 20
    assert "kcrl bench ring-base --seed 1" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "ring_samples.png").stat().st_size > 1000


def test_digits_base_smoke(tmp_path):
    config = DigitsBaseConfig(
        generator=ImageGeneratorArgs(channels=4, epochs=1, pairs_per_epoch=64, batch=32), test_pairs=50, valid_pairs=50
    )
    result = run_digits(seed=0, out=tmp_path, progress=False, config=config)
    m = result["metrics"]
    assert m["true_target_ssim"] == pytest.approx(1.0)
    assert 0.2 < m["copy_source_ssim"] < 0.5 and 0.2 < m["class_mean_ssim"] < 0.5
    assert m["true_target_constraint"] > m["copy_source_constraint"]
    assert "copy the source image" in result["table"]
    assert "kcrl bench digits-base --seed 0" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "digits_samples.png").stat().st_size > 1000
