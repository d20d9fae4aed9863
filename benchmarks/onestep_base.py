"""``kcrl bench ring-base`` and ``kcrl bench digits-base``: the one-step tasks' base generators.

These are the starting points that PR (Eq. 10/12 with a fixed or learned constraint) is to
improve, measured with exact or standard metrics:

* ``ring-base`` — the implicit generator x = G(z) of ``GaussianRing-v0`` trained by MMD
  (:mod:`kcrl.models.implicit_generator`), scored by the exact log-likelihood under the true
  mixture, the share of high-quality samples (within 3 std of a mode) and the number of modes
  covered; the true data and the untrained generator are reference rows.
* ``digits-base`` — the conditional encoder-decoder of ``StructuredDigits-v0`` trained by
  Bernoulli maximum likelihood (:mod:`kcrl.models.image_generator`), scored by SSIM against the
  true target on test pairs, next to trivial baselines (copy the source image; the class-mean
  image; the upsampled silhouette itself).

Each writes ``results.json``, ``results.md`` and a PNG (matplotlib).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kcrl.models.image_generator import (
    ConditionalImageGenerator,
    ImageGeneratorArgs,
    evaluate_nll,
    generate,
    train_image_generator,
)
from kcrl.models.implicit_generator import ImplicitGenerator, ImplicitGeneratorArgs, train_mmd
from kcrl.benchmarks import suite_config
from kcrl.benchmarks.plots import plot_image_rows
from kcrl.benchmarks.report import markdown_table, write_results
from kcrl.envs.digits import (
    StructuredDigitsTask,
    evaluate_structure_estimator,
    source_of,
    ssim,
    structure_of,
    upsample_structure,
)
from kcrl.envs.gaussian_ring import GaussianRingTask
from kcrl.envs.onestep import BatchedOneStepEnv

EVAL_SEED = 2018  # the evaluation draws (samples' noise, test pairs) are the same for every run seed


def _plt():
    """matplotlib's pyplot with the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% confidence interval."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(len(values)))


# ---------------------------------------------------------------------- ring-base
@dataclass
class RingBaseConfig:
    """Configuration of the ring-base suite (the defaults are the full size; sizes in
    ``benchmarks/suites/ring-base.yaml``)."""

    n_modes: int = 8
    """K, modes on the ring"""
    radius: float = 2.0
    """radius of the ring"""
    std: float = 0.02
    """std of each mode"""
    generator: ImplicitGeneratorArgs = field(default_factory=lambda: ImplicitGeneratorArgs(steps=5000, noise_dim=8, lr=3e-3))
    """the implicit generator and its MMD training (``--quick``: fewer steps, see ``suites/ring-base.yaml``)"""
    eval_samples: int = 10_000
    """samples scored per row"""
    min_share: float = 0.01
    """a mode is covered when at least this share of samples lies within 3 std of it"""
    device: str = "cpu"
    """torch device"""


def run_ring(seed: int = 0, out: Path | None = None, quick: bool = False, progress: bool = True, config: RingBaseConfig | None = None) -> dict:
    config = config or suite_config("ring-base", quick)
    config.generator.seed = seed
    env = BatchedOneStepEnv(
        GaussianRingTask(config.n_modes, config.radius, config.std), num_envs=config.eval_samples,
        device=config.device, autoreset_mode="Disabled",
    )
    task: GaussianRingTask = env.task
    eval_gen = torch.Generator(task.device).manual_seed(EVAL_SEED)

    generator = ImplicitGenerator.from_args(config.generator).to(task.device)
    with torch.no_grad():
        untrained = generator.sample(config.eval_samples, torch.Generator(task.device).manual_seed(EVAL_SEED))
    start = time.perf_counter()
    history = train_mmd(generator, task.sample_data, config.generator, show_progress=progress)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        samples = generator.sample(config.eval_samples, torch.Generator(task.device).manual_seed(EVAL_SEED))
    data = task.sample_data(config.eval_samples, eval_gen)

    def score(x: torch.Tensor) -> dict:
        metrics = task.metrics(x, config.min_share)
        # the env's reward, alpha * clipped log density, through the batched tensor API
        env.reset_tensor(seed=seed)
        clipped = x.clamp(-task.bound, task.bound)
        metrics["mean_reward"] = env.step_tensor(clipped).reward.mean().item()
        return metrics

    rows_metrics = {"data": score(data), "untrained": score(untrained), "mmd_generator": score(samples)}
    metrics = {
        **{f"{name}_{k}": v for name, m in rows_metrics.items() for k, v in m.items() if k != "n_modes"},
        "n_modes": config.n_modes,
        "train_seconds": seconds,
        "final_mmd2_minus_const": float(np.mean([r["mmd2_minus_const"] for r in history[-100:]])),
    }
    labels = {
        "data": "true data (reference)",
        "untrained": "untrained generator",
        "mmd_generator": f"MMD generator, {config.generator.steps} steps",
    }
    rows = [
        [labels[name], f"{m['mode_coverage']} / {config.n_modes}", m["high_quality_share"], m["log_likelihood"], m["mean_reward"]]
        for name, m in rows_metrics.items()
    ]
    table = markdown_table(
        ["samples", "modes covered", "high-quality share", "log-likelihood (nats)", "mean reward (clipped log p)"], rows
    )
    if out is not None:
        command = f"kcrl bench ring-base --seed {seed} --out {out}" + (" --quick" if quick else "")
        notes = (
            f"{config.eval_samples:,} samples per row (evaluation noise seed {EVAL_SEED}); a mode is covered "
            f"when at least {config.min_share:.0%} of the samples lie within 3 std of it; high quality = within "
            f"3 std of some mode; log-likelihood = mean exact log density under the true mixture. Training: "
            f"{seconds:.0f} s at {torch.get_num_threads()} thread(s).\n\nCommand: `{command}`\n\n"
            "![generated vs data](ring_samples.png)"
        )
        write_results(out, "ring-base", seed, config, metrics, table + "\n\n" + notes, history_every_100=[r["mmd2_minus_const"] for r in history[::100]])
        _plot_ring(Path(out) / "ring_samples.png", data[:2000], samples[:2000], task)
    return {"metrics": metrics, "table": table}


def _plot_ring(path: Path, data: torch.Tensor, samples: torch.Tensor, task: GaussianRingTask) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6), dpi=100, sharex=True, sharey=True)
    lim = task.radius + 0.6
    for ax, points, name, colour in ((axes[0], data, "data", "tab:blue"), (axes[1], samples, "generated", "tab:orange")):
        ax.scatter(*points.cpu().numpy().T, s=2, alpha=0.4, color=colour)
        for centre in task.centres.cpu().numpy():
            ax.add_patch(plt.Circle(centre, 3 * task.std, fill=False, color="black", lw=0.6))
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(f"{len(points):,} {name} points", fontsize=9)
    fig.suptitle("GaussianRing-v0 (circles: 3 std around each mode)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------- digits-base
@dataclass
class DigitsBaseConfig:
    """Configuration of the digits-base suite (the defaults are the full size; sizes in
    ``benchmarks/suites/digits-base.yaml``)."""

    generator: ImageGeneratorArgs = field(default_factory=ImageGeneratorArgs)
    """the encoder-decoder and its MLE schedule (``--quick``: a shorter schedule, see ``suites/digits-base.yaml``)"""
    test_pairs: int = 1000
    """(target, source) test pairs scored (evaluation seed fixed)"""
    valid_pairs: int = 1000
    """validation pairs for the per-epoch NLL"""
    device: str = "cpu"
    """torch device"""


def run_digits(seed: int = 0, out: Path | None = None, quick: bool = False, progress: bool = True, config: DigitsBaseConfig | None = None) -> dict:
    config = config or suite_config("digits-base", quick)
    config.generator.seed = seed
    train = StructuredDigitsTask("train").to(config.device)
    test = StructuredDigitsTask("test").to(config.device)
    valid = StructuredDigitsTask("valid").to(config.device)

    def pairs(task: StructuredDigitsTask, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        episodes = torch.arange(n, device=task.device)
        return task.sample_examples(torch.full_like(episodes, EVAL_SEED), episodes)

    generator = ConditionalImageGenerator.from_args(config.generator).to(train.device)
    start = time.perf_counter()
    history = train_image_generator(generator, train.sample_examples, config.generator, pairs(valid, config.valid_pairs), progress)
    seconds = time.perf_counter() - start

    contexts, targets = pairs(test, config.test_pairs)
    target_idx, _ = test.sample_pairs(torch.full((config.test_pairs,), EVAL_SEED, device=test.device), torch.arange(config.test_pairs, device=test.device))
    candidates = {
        "generator": generate(generator, contexts),
        "copy_source": source_of(contexts),
        "class_mean": train.class_means("train")[test.labels[target_idx]],
        "upsampled_silhouette": upsample_structure(structure_of(contexts)),
        "true_target": targets,
    }
    constraint = test.fixed_constraint
    metrics, rows = {}, []
    labels = {
        "generator": f"base generator (Bernoulli MLE, {config.generator.epochs} epochs)",
        "copy_source": "copy the source image",
        "class_mean": "class-mean image (train split)",
        "upsampled_silhouette": "the silhouette itself, upsampled",
        "true_target": "true target (sanity check)",
    }
    for name, images in candidates.items():
        mean, ci = _mean_ci(ssim(images, targets))
        f = constraint.predict(images, contexts).mean().item()
        metrics[f"{name}_ssim"], metrics[f"{name}_ssim_ci95"], metrics[f"{name}_constraint"] = mean, ci, f
        rows.append([labels[name], f"{mean:.4f} ± {ci:.4f}", f])
    metrics["test_nll"] = evaluate_nll(generator, contexts, targets)
    metrics["train_seconds"] = seconds
    estimator = evaluate_structure_estimator(constraint.estimator, "test", test.threshold)
    metrics["estimator_test_cell_accuracy"] = estimator["cell_accuracy"]
    table = markdown_table(["images", "SSIM vs target (mean ± 95% CI)", "fixed constraint f (mean)"], rows)
    if out is not None:
        command = f"kcrl bench digits-base --seed {seed} --out {out}" + (" --quick" if quick else "")
        notes = (
            f"{config.test_pairs:,} test pairs (target, source of the same class; evaluation seed {EVAL_SEED}); SSIM "
            "by scikit-image `structural_similarity(data_range=1)`, 7x7 window. f = log-likelihood of the "
            "target's 7x7 silhouette under the frozen structure estimator (per-cell accuracy on test "
            f"images {estimator['cell_accuracy']:.4f}). Base generator: test NLL {metrics['test_nll']:.1f} nats "
            f"per image; training {seconds:.0f} s at {torch.get_num_threads()} thread(s).\n\n"
            f"Command: `{command}`\n\n![condition / source / generated / target](digits_samples.png)"
        )
        write_results(out, "digits-base", seed, config, metrics, table + "\n\n" + notes, history=history)
        _plot_digits(Path(out) / "digits_samples.png", contexts[:10], candidates["generator"][:10], targets[:10])
    return {"metrics": metrics, "table": table}


def _plot_digits(path: Path, contexts: torch.Tensor, generated: torch.Tensor, targets: torch.Tensor) -> None:
    rows = [
        ("condition\n(silhouette)", upsample_structure(structure_of(contexts))),
        ("source", source_of(contexts)),
        ("generated", generated),
        ("target", targets),
    ]
    plot_image_rows(rows, path, "StructuredDigits-v0, test pairs")
