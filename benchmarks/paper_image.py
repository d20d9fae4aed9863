"""``kcrl bench paper-image``: the paper's image comparison (Hu et al. 2018, §5.2) on StructuredDigits-v0.

One base generator (:class:`~kcrl.agents.image_generator.ConditionalImageGenerator`) is trained
by Bernoulli maximum likelihood once per suite run; every (variant, seed) then continues from it
for the same number of Algorithm 1 iterations with :class:`~kcrl.trainer.PRTrainer`, through
:class:`ImageTrainerAdapter` (contexts = the env's ``(2, 28, 28)`` context tensors, x = binary
images drawn from the per-pixel Bernoulli distribution, ``log_prob`` = their Bernoulli
log-likelihood; importance weights are normalised within each context):

============  ===========================================================================
variant       constraint and update
============  ===========================================================================
``base``      continued MLE only (the generator's own L(theta))
``fixed``     Eq. 10 with the frozen pretrained structure estimator (``fixed_structure_constraint``)
``learned``   Eq. 8 on the same estimator, initialised from the pretrained weights, + Eq. 10
``uniform``   control: the Eq. 10 term with f = 0 (uniform weights), i.e. "train on your own samples";
              it draws samples exactly as fixed/learned do, so it separates the constraint's effect
              from that of the sampling (which also changes the trainer's minibatch sequence)
============  ===========================================================================

Scores on test pairs (fixed evaluation seed): SSIM of the generated *mean* image
``sigmoid(logits)`` against the true target (a Bernoulli sample is far too noisy for SSIM; its SSIM
is reported next to it), and the frozen structure constraint's mean f on the mean images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from kcrl.agents.image_generator import (
    ConditionalImageGenerator,
    ImageGeneratorArgs,
    bernoulli_nll,
    evaluate_nll,
    generate,
    train_image_generator,
)
from kcrl.benchmarks import suite_config
from kcrl.benchmarks.report import group_by_variant, markdown_table, write_results
from kcrl.constraints import Constraint, zero_constraint
from kcrl.envs.digits import StructuredDigitsTask, fixed_structure_constraint, learned_structure_constraint, ssim
from kcrl.errors import ShapeError, unknown_name
from kcrl.stats import mean_ci95, permutation_test
from kcrl.trainer import PRConfig, PRTrainer

VARIANTS = ("base", "fixed", "learned", "uniform")
EVAL_SEED = 2018  # test pairs and the evaluation Bernoulli noise are the same for every run



def build_constraint(variant: str) -> Constraint:
    """The constraint of a variant: frozen estimator (base, fixed), trainable copy (learned) or f = 0 (uniform)."""
    if variant == "learned":
        return learned_structure_constraint()
    if variant == "uniform":
        return zero_constraint()
    return fixed_structure_constraint()


class ImageTrainerAdapter(nn.Module):
    """The trainer's generator protocol on top of :class:`ConditionalImageGenerator`.

    ``x`` is a binary image ``(N, 28, 28)``, drawn pixel by pixel from ``Bernoulli(sigmoid(logits))``;
    ``log_prob(x, c) = sum_pixels log Bernoulli(x | sigmoid(G_theta(c)))``, ``(N,)``, differentiable.

    >>> import torch
    >>> adapter = ImageTrainerAdapter(ConditionalImageGenerator(channels=4))
    >>> x, log_p = adapter.sample(3, torch.Generator().manual_seed(0), torch.zeros(3, 2, 28, 28))
    >>> x.shape, log_p.shape, bool(torch.allclose(log_p, adapter.log_prob(x, torch.zeros(3, 2, 28, 28))))
    (torch.Size([3, 28, 28]), torch.Size([3]), True)
    """

    def __init__(self, generator: ConditionalImageGenerator) -> None:
        super().__init__()
        self.generator = generator

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None or context.shape[0] != x.shape[0]:
            got = None if context is None else tuple(context.shape)
            raise ShapeError(f"ImageTrainerAdapter needs one context (2, 28, 28) per image; got x {tuple(x.shape)} and context {got}.")
        return -bernoulli_nll(self.generator(context), x)  # (N,)

    def sample(self, n: int, generator: torch.Generator | None = None, context: torch.Tensor | None = None):
        if context is None or context.shape[0] != n:
            got = None if context is None else tuple(context.shape)
            raise ShapeError(f"ImageTrainerAdapter samples one image per context: expected {n} contexts, got {got}.")
        logits = self.generator(context)  # (N, 28, 28)
        x = torch.bernoulli(torch.sigmoid(logits), generator=generator)  # (N, 28, 28) in {0, 1}
        return x, -bernoulli_nll(logits, x)


@dataclass
class PaperImageConfig:
    """Configuration of the paper-image suite (the defaults are the full size; sizes in
    ``benchmarks/suites/paper-image.yaml``)."""

    base: ImageGeneratorArgs = field(default_factory=lambda: ImageGeneratorArgs(epochs=6, pairs_per_epoch=4000))
    """the base generator and its MLE schedule (trained once per suite run, seed = the suite seed)"""
    seeds: int = 3
    """seeds per variant (seed, seed+1, ...): PR sampling, data order, Bernoulli noise"""
    variants: tuple[str, ...] = VARIANTS
    """the variants compared (see ``VARIANTS``)"""
    train_pairs: int = 4000
    """training pairs (target, source) the trainer draws its minibatches from"""
    test_pairs: int = 1000
    """test pairs scored"""
    trainer: PRConfig = field(
        default_factory=lambda: PRConfig(
            iterations=300, alpha=1.0, lam=1.0, mle_weight=1.0, data_batch=64, contexts=16, samples_per_context=8,
            generator_lr=2e-4, constraint_lr=1e-4, lr_decay=False, checkpoint_every=0, eval_every=10**9,
            ess_warn_fraction=0.0,
        )
    )
    """Algorithm 1 settings shared by the variants (``variant`` and ``seed`` are set per run)"""
    device: str = "cpu"
    """torch device"""


def _pairs(task: StructuredDigitsTask, seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    episodes = torch.arange(n, device=task.device)
    return task.sample_examples(torch.full_like(episodes, seed), episodes)


def train_base(config: PaperImageConfig, seed: int, show_progress: bool = False) -> tuple[dict, float]:
    """The shared MLE base generator: its CPU state dict and training seconds."""
    torch.set_num_threads(1)
    args = replace(config.base, seed=seed)
    train = StructuredDigitsTask("train").to(config.device)
    generator = ConditionalImageGenerator.from_args(args).to(config.device)
    start = time.perf_counter()
    train_image_generator(generator, train.sample_examples, args, show_progress=show_progress)
    return {k: v.detach().cpu() for k, v in generator.state_dict().items()}, time.perf_counter() - start


def evaluate_images(generator: ConditionalImageGenerator, test: StructuredDigitsTask, n: int) -> dict:
    """Test SSIM of the mean image and of one Bernoulli sample, f on the mean images, and the test NLL."""
    contexts, targets = _pairs(test, EVAL_SEED, n)
    means = generate(generator, contexts)  # (n, 28, 28)
    samples = torch.bernoulli(means, generator=torch.Generator(means.device).manual_seed(EVAL_SEED))
    with torch.no_grad():
        f = test.fixed_constraint.predict(means, contexts)
    return {
        "ssim": float(ssim(means, targets).mean()),
        "ssim_sample": float(ssim(samples, targets).mean()),
        "constraint": f.mean().item(),
        "test_nll": evaluate_nll(generator, contexts, targets),
    }


def run_variant(variant: str, seed: int, config: PaperImageConfig, base_state: dict) -> dict:
    """Continue the base generator for one (variant, seed); returns its test metrics and log summary."""
    if variant not in VARIANTS:
        raise unknown_name("variant", variant, VARIANTS)
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    train = StructuredDigitsTask("train").to(config.device)
    test = StructuredDigitsTask("test").to(config.device)
    generator = ConditionalImageGenerator(config.base.channels).to(config.device)
    generator.load_state_dict(base_state)
    constraint = build_constraint(variant).to(config.device)
    contexts, targets = _pairs(train, seed, config.train_pairs)
    trainer = PRTrainer(ImageTrainerAdapter(generator).train(), constraint, (targets, contexts), replace(config.trainer, variant="fixed" if variant == "uniform" else variant, seed=seed))
    history, start = [], time.perf_counter()
    while trainer.iteration < trainer.config.iterations:
        history.append(trainer.step())
    result: dict = {"iterations": trainer.iteration, "train_seconds": time.perf_counter() - start}
    tail = history[-max(1, len(history) // 4):]
    for key in ("ess_fraction", "constraint_gap", "kl_to_base", "nll_data"):
        if key in tail[0]:
            result[key] = sum(h[key] for h in tail) / len(tail)
    result.update(evaluate_images(generator, test, config.test_pairs))
    return result


def tasks(seed: int = 0, quick: bool = False, config: PaperImageConfig | None = None) -> list[dict]:
    """Trains the shared base generator, then one task per (variant, seed) starting from it.
    ``config`` defaults to the suite's resolved config (:func:`~kcrl.benchmarks.suite_config`)."""
    config = config or suite_config("paper-image", quick)
    base_state, base_seconds = train_base(config, seed)
    return [
        {"variant": v, "seed": seed + i, "config": config, "quick": quick, "base_state": base_state, "base_seconds": base_seconds}
        for v in config.variants
        for i in range(config.seeds)
    ]


def run_task(task: dict) -> dict:
    return run_variant(task["variant"], task["seed"], task["config"], task["base_state"])


COLUMNS = [
    ("ssim", "test SSIM, mean image", "{:.4f}", "greater"),
    ("ssim_sample", "test SSIM, Bernoulli sample", "{:.4f}", "greater"),
    ("constraint", "fixed f on mean images", "{:.3f}", "greater"),
    ("test_nll", "test NLL (nats/image)", "{:.1f}", "less"),
]


def aggregate(task_list: list[dict], results: list[dict], seed: int, out: Path | None = None) -> dict:
    """The table (mean ± 95% CI over seeds; permutation-test p against base) and the result files."""
    config: PaperImageConfig = task_list[0]["config"]
    quick = task_list[0].get("quick", False)
    by_variant = group_by_variant(task_list, results)
    seeds = sorted({t["seed"] for t in task_list})
    test = StructuredDigitsTask("test").to(config.device)
    base_generator = ConditionalImageGenerator(config.base.channels).to(config.device)
    base_generator.load_state_dict(task_list[0]["base_state"])
    start_metrics = evaluate_images(base_generator, test, config.test_pairs)
    metrics: dict = {"seeds": seeds, "base_train_seconds": task_list[0]["base_seconds"],
                     **{f"start_{k}": v for k, v in start_metrics.items()}}
    rows = [["start (MLE base, not continued)"] + [fmt.format(start_metrics[k]) for k, _, fmt, _ in COLUMNS] + ["0", "", "", ""]]
    for v, rs in by_variant.items():
        row = [v]
        for key, _, fmt, better in COLUMNS:
            values = [r[key] for r in rs]
            mean, half = mean_ci95(values)
            metrics[f"{v}_{key}_mean"], metrics[f"{v}_{key}_ci95"] = mean, half
            cell = fmt.format(mean) + (f" ± {fmt.format(half)}" if len(values) > 1 else "")
            if v != "base" and "base" in by_variant:
                p = permutation_test(values, [r[key] for r in by_variant["base"]], alternative=better)
                metrics[f"{v}_{key}_p_vs_base"] = p
                cell += f" (p={p:.2f})"
            row.append(cell)
        for key in ("iterations", "train_seconds", "ess_fraction", "constraint_gap", "kl_to_base"):
            values = [r[key] for r in rs if key in r]
            if values:
                metrics[f"{v}_{key}_mean"] = mean_ci95(values)[0]
        row += [
            f"{metrics[f'{v}_iterations_mean']:.0f}",
            f"{metrics[f'{v}_train_seconds_mean']:.0f}",
            f"{metrics[f'{v}_ess_fraction_mean']:.2f}" if f"{v}_ess_fraction_mean" in metrics else "",
            f"{metrics[f'{v}_constraint_gap_mean']:.3f}" if f"{v}_constraint_gap_mean" in metrics else "",
        ]
        rows.append(row)
    t = config.trainer
    table = (
        f"{len(seeds)} seed(s) {seeds}; base: {config.base.channels} channels, {config.base.epochs} epoch(s) x "
        f"{config.base.pairs_per_epoch} pairs of MLE; then {t.iterations} iterations per run (data batch {t.data_batch}, "
        f"{t.contexts} contexts x K={t.samples_per_context} per PR step, alpha {t.alpha}, lambda {t.lam}, "
        f"MLE weight {t.mle_weight}); {config.test_pairs} test pairs\n\n"
        + markdown_table(
            ["variant"] + [c[1] for c in COLUMNS] + ["iterations", "train s", "ESS/K (last 1/4)", "constraint gap (last 1/4)"], rows
        )
    )
    metrics["per_run"] = [
        {"variant": t_["variant"], "seed": t_["seed"], **r} for t_, r in zip(task_list, results)
    ]
    if out is not None:
        command = "kcrl bench paper-image" + (" --quick" if quick else "") + (f" --seed {seed}" if seed else "")
        text = (
            f"Command: `OMP_NUM_THREADS=1 {command} --out {out}`\n\n{table}\n\n"
            "Cells: mean ± 95% CI over seeds (Student t); p: one-sided permutation test against base. SSIM: "
            "scikit-image, `data_range=1`, 7x7 window, of the generated mean image sigmoid(logits) against the true "
            "target (the PR samples x are binary Bernoulli draws, whose SSIM is shown for reference only). "
            "f: the frozen pretrained structure constraint (log-likelihood of the condition's 7x7 silhouette; 0 is "
            "perfect) on the mean images. ESS/K and the constraint gap (E_data f - E_q f, with the run's own f) are "
            "the trainer's, averaged over the last quarter of each run. All runs start from the same base generator, "
            "so seeds vary the PR sampling, minibatches and training pairs, not the MLE start."
        )
        write_results(out, "paper-image", seed, config, metrics, text, quick=quick)
    return {"metrics": metrics, "table": table}


def run(seed: int = 0, out: Path | None = None, quick: bool = False, progress: bool = True, config: PaperImageConfig | None = None) -> dict:
    task_list = tasks(seed, quick, config)
    return aggregate(task_list, [run_task(t) for t in task_list], seed, out)
