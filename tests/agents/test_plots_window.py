"""Learning-curve plots stay informative at every run length: the window fits the run, every label shows."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import kcrl.benchmarks.plots as plots
from kcrl.benchmarks.plots import plot_curves, smoothing_window


@pytest.fixture
def figures(monkeypatch):
    seen = []

    def keep(fig, path):
        ax = fig.axes[0]
        seen.append({
            "legend": [t.get_text() for t in ax.get_legend().get_texts()],
            "lines": {line.get_label(): line.get_xydata() for line in ax.get_lines()},
            "errorbars": [c.get_label() for c in ax.containers],
        })
        import matplotlib.pyplot as plt

        plt.close(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return seen


def run(n: int, seed: int) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    return list(range(1, n + 1)), list(rng.normal(size=n))


def test_window_fits_the_run():
    assert [smoothing_window(n) for n in (1, 8, 19, 20, 68, 400)] == [1, 1, 1, 1, 3, 20]


def test_every_variant_appears_at_the_quick_size(figures, tmp_path):
    # the main job's quick size: base ran 68 iterations, binary_d 8, one seed of mstep a single one
    curves = {
        "base": [run(68, 0), run(70, 1)],
        "binary_d": [run(8, 2), run(9, 3)],
        "mstep": [run(1, 4), run(12, 5)],
    }
    plot_curves(curves, tmp_path / "c.png", "ESS / K")
    fig = figures[0]
    assert [t.split(" (")[0] for t in fig["legend"]] == ["base", "binary_d", "mstep"]
    base = fig["lines"]["base (n=2, mean of 3 points)"]
    assert len(base) == 68 - 3 + 1 and base[0, 0] == 3.0  # trailing window of 3: x is its last point
    assert len(fig["lines"]["binary_d (n=2)"]) == 8  # no smoothing below 20 points: nothing averaged away
    assert fig["errorbars"] == ["mstep (n=2)"]  # one point: a marker with its interval, not a band of width 0


def test_fixed_window_is_capped_and_raw_is_raw(figures, tmp_path):
    plot_curves({"a": [run(8, 0)]}, tmp_path / "a.png", "y", smooth=10)
    plot_curves({"a": [run(8, 0)]}, tmp_path / "b.png", "y", smooth=None)
    assert len(figures[0]["errorbars"]) == 1  # a window of 10 on 8 points: 8, one averaged point
    assert len(figures[1]["lines"]["a (n=1)"]) == 8
