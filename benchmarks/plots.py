"""Plots for reports: learning curves with 95% CI bands over seeds, and grids of images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kcrl.stats import _T975


def _save(fig, path: str | Path) -> Path:
    """Lay out, write and close a figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _band(runs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    stack = np.stack(runs)  # (seeds, points)
    mean = stack.mean(0)
    if len(runs) < 2:
        return mean, np.zeros_like(mean)
    t = _T975[len(runs) - 2] if len(runs) - 1 <= len(_T975) else 1.96
    return mean, t * stack.std(0, ddof=1) / np.sqrt(len(runs))


def smoothing_window(points: int) -> int:
    """The moving-average window that fits a curve of ``points`` points: ``max(1, points // 20)``."""
    return max(1, points // 20)


def _smooth(x: np.ndarray, runs: list[np.ndarray], window: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Trailing moving averages over ``window`` points (x: the window's last point); keeps >= 1 point."""
    if window <= 1:
        return x, runs
    kernel = np.ones(window) / window
    return x[window - 1 :], [np.convolve(y, kernel, mode="valid") for y in runs]


def plot_curves(
    curves: dict[str, list[tuple[list[float], list[float]]]],
    path: str | Path,
    ylabel: str,
    title: str = "",
    xlabel: str = "iteration",
    logy: bool = False,
    colors: dict[str, str] | None = None,
    ylim: tuple[float, float] | None = None,
    smooth: int | str | None = "auto",
) -> Path:
    """One line per label: the mean over seeds with a shaded 95% CI band; saves a PNG.

    ``curves[label]`` is a list (one per seed) of ``(x, y)``; runs of one label that stop at
    different points (a wall-clock budget) are cut to the shortest. Each curve is smoothed by a
    trailing moving average whose window fits its own length (``smooth="auto"``:
    :func:`smoothing_window`; an integer: that window, capped at the curve's length; ``None``:
    raw), so a short run is never averaged away. A label with a single point is drawn as a marker
    with its interval, not as a line, and every label in ``curves`` appears in the legend (with
    its seed count and window). ``colors`` keeps a label's colour the same across figures;
    ``ylim`` clips the bands.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, runs in curves.items():
        color = (colors or {}).get(label)
        runs = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for x, y in runs]
        points = min(min(len(x), len(y)) for x, y in runs) if runs else 0
        if points == 0:
            ax.plot([], [], label=f"{label} (no points)", color=color)
            continue
        x = runs[0][0][:points]
        ys = [y[:points] for _, y in runs]
        window = 1 if smooth is None else smoothing_window(points) if smooth == "auto" else max(1, min(int(smooth), points))
        x, ys = _smooth(x, ys, window)
        mean, half = _band(ys)
        low, high = mean - half, mean + half
        if ylim is not None:
            low, high = np.clip(low, *ylim), np.clip(high, *ylim)
        name = f"{label} (n={len(ys)}" + (f", mean of {window} points)" if window > 1 else ")")
        if len(x) == 1:
            ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="o", capsize=4, label=name, color=color)
        else:
            ax.plot(x, mean, label=name, color=color)
            ax.fill_between(x, low, high, alpha=0.2, color=color)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_image_rows(rows: list[tuple[str, "np.ndarray | object"]], path: str | Path, title: str = "") -> Path:
    """A grid of grey images in [0, 1]: one labelled row per ``(label, images (n, H, W))``; saves a PNG.

    Every row must hold the same number of images (tensors or arrays)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = [(label, np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)) for label, images in rows]
    n = arrays[0][1].shape[0]
    if any(a.shape[0] != n for _, a in arrays):
        raise ValueError(f"every row needs {n} images; got {[a.shape[0] for _, a in arrays]}.")
    fig, axes = plt.subplots(len(arrays), n, figsize=(n * 0.9, len(arrays) * 0.95 + 0.3), dpi=100, squeeze=False)
    for r, (label, images) in enumerate(arrays):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(images[c], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)
