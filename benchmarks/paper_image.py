"""``kcrl bench paper-image``: the paper's image comparison (Hu et al. 2018, §5.2) on StructuredDigits-v0.

One base generator (:class:`~kcrl.models.image_generator.ConditionalImageGenerator`) is trained
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

``generator: implicit`` runs the same four variants with an implicit model instead,
:class:`~kcrl.models.implicit_image_generator.ImplicitImageGenerator` x = G_theta(z, c): its base is
pretrained by its own L(theta), a conditional GAN loss plus ``implicit.recon_weight`` times a
reconstruction term (``implicit.reconstruction``: l1, l2 or bce; bce by default, as l1 and l2 saturate
the sigmoid to black images on these digits)
(:class:`~kcrl.models.implicit_image_generator.ConditionalGANObjective`, which the trainer keeps
applying as L(theta), discriminator included); the PR term is Eq. 12 reparameterised
(``generator_update="eq12_reparam"``, ``-alpha E_z[f(G(z, c), c)]``), and ``base`` is GAN(+reconstruction) only.
It has no density, so no test NLL and no KL to the base are reported; it is scored by the SSIM of
one sample G(z, c) per test context with fixed evaluation noise, the SSIM averaged over
``eval_noise_draws`` noise draws, the fixed f and the L1 error of the fixed-noise sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from kcrl.models.image_generator import (
    ConditionalImageGenerator,
    ImageGeneratorArgs,
    bernoulli_nll,
    evaluate_nll,
    generate,
    train_image_generator,
)
from kcrl.models.implicit_image_generator import (
    ConditionalGANObjective,
    ImplicitImageGenerator,
    ImplicitImageGeneratorArgs,
    generate_samples,
    train_implicit_image_generator,
)
from kcrl.benchmarks import suite_config
from kcrl.benchmarks.plots import plot_curves, plot_image_rows
from kcrl.benchmarks.report import group_by_variant, markdown_table, write_results
from kcrl.constraints import Constraint, zero_constraint
from kcrl.envs.digits import (
    StructuredDigitsTask,
    fixed_structure_constraint,
    learned_structure_constraint,
    source_of,
    ssim,
    structure_of,
    upsample_structure,
)
from kcrl.errors import ConfigError, ShapeError, unknown_name
from kcrl.stats import mean_ci95, permutation_test
from kcrl.trainer import PRConfig, PRTrainer

VARIANTS = ("base", "fixed", "learned", "uniform")
CURVE_POINTS = 50  # points per training curve in results.json and the plots
CURVE_KEYS = ("ess_fraction", "constraint_gap")  # the trainer's log keys that are plotted over training
GRID_PAIRS = 10  # test contexts shown in samples.png
GENERATORS = ("explicit", "implicit")
EVAL_SEED = 2018  # test pairs and the evaluation Bernoulli noise (or z) are the same for every run


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

    generator: str = "explicit"
    """explicit (Bernoulli pixels, MLE base, Eq. 10 or eq12 per trainer.generator_update) or implicit
    (x = G(z, c), GAN(+reconstruction) base and L(theta), always Eq. 12 reparameterised: trainer.generator_update
    is then set to eq12_reparam)"""
    base: ImageGeneratorArgs = field(default_factory=lambda: ImageGeneratorArgs(epochs=6, pairs_per_epoch=4000))
    """the explicit base generator and its MLE schedule (trained once per suite run, seed = the suite seed)"""
    implicit: ImplicitImageGeneratorArgs = field(default_factory=ImplicitImageGeneratorArgs)
    """the implicit generator, its GAN(+reconstruction) objective and pretraining schedule (generator: implicit)"""
    eval_noise_draws: int = 4
    """implicit: noise draws per test context for the z-averaged SSIM (the first is the fixed one)"""
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

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise ConfigError(f"generator must be 'explicit' or 'implicit'; got {self.generator!r}.")
        update = self.trainer.generator_update
        if self.generator == "implicit" and update == "eq12":
            raise ConfigError(
                "generator: implicit has no density, so trainer.generator_update 'eq12' (the score function) "
                "cannot apply; its PR term is always Eq. 12 reparameterised: set eq12_reparam or leave the default."
            )
        if self.generator == "explicit" and update == "eq12_reparam":
            raise ConfigError(
                "generator: explicit draws binary Bernoulli images, which are not differentiable, so "
                "trainer.generator_update 'eq12_reparam' cannot apply; use eq10 or eq12, or generator: implicit."
            )
        if self.eval_noise_draws < 1:
            raise ConfigError(f"eval_noise_draws must be >= 1; got {self.eval_noise_draws}.")


def _pairs(task: StructuredDigitsTask, seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    episodes = torch.arange(n, device=task.device)
    return task.sample_examples(torch.full_like(episodes, seed), episodes)


def _cpu(module: nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def train_base(config: PaperImageConfig, seed: int, show_progress: bool = False) -> tuple[dict, float]:
    """The shared base generator and its training seconds: the explicit model's CPU state dict (MLE),
    or for ``generator: implicit`` ``{"generator": ..., "discriminator": ...}`` after GAN(+reconstruction) pretraining."""
    torch.set_num_threads(1)
    train = StructuredDigitsTask("train").to(config.device)
    if config.generator == "implicit":
        args = replace(config.implicit, seed=seed)
        generator = ImplicitImageGenerator.from_args(args).to(config.device)
        objective = ConditionalGANObjective.from_args(args).to(config.device)
        start = time.perf_counter()
        train_implicit_image_generator(generator, objective, train.sample_examples, args, show_progress=show_progress)
        state = {"generator": _cpu(generator), "discriminator": _cpu(objective.discriminator)}
        return state, time.perf_counter() - start
    args = replace(config.base, seed=seed)
    generator = ConditionalImageGenerator.from_args(args).to(config.device)
    start = time.perf_counter()
    train_image_generator(generator, train.sample_examples, args, show_progress=show_progress)
    return _cpu(generator), time.perf_counter() - start


def build_generator(config: PaperImageConfig, base_state: dict) -> nn.Module:
    """The base generator of ``config.generator`` with the suite's base weights, on ``config.device``."""
    if config.generator == "implicit":
        generator = ImplicitImageGenerator(config.implicit.channels, config.implicit.noise_dim)
        generator.load_state_dict(base_state["generator"])
    else:
        generator = ConditionalImageGenerator(config.base.channels)
        generator.load_state_dict(base_state)
    return generator.to(config.device)


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


def evaluate_implicit_images(generator: ImplicitImageGenerator, test: StructuredDigitsTask, n: int, draws: int) -> dict:
    """Test SSIM of one sample G(z, c) per context (fixed z), the SSIM averaged over ``draws`` z, the
    per-pixel spread of the samples over z, f and the L1 error of the fixed-z samples."""
    contexts, targets = _pairs(test, EVAL_SEED, n)
    samples = [generate_samples(generator, contexts, EVAL_SEED + d) for d in range(draws)]  # draws x (n, 28, 28)
    x = samples[0]  # the fixed evaluation noise
    with torch.no_grad():
        f = test.fixed_constraint.predict(x, contexts)
    spread = torch.stack(samples).std(0).mean().item() if draws > 1 else 0.0
    return {
        "ssim": float(ssim(x, targets).mean()),
        "ssim_z_mean": sum(float(ssim(s, targets).mean()) for s in samples) / draws,
        "z_spread": spread,
        "constraint": f.mean().item(),
        "test_l1": (x - targets).abs().mean().item(),
    }


def evaluate_generator(config: PaperImageConfig, generator: nn.Module, test: StructuredDigitsTask) -> dict:
    """The test metrics of ``config.generator``'s kind (see :data:`COLUMNS` and :data:`IMPLICIT_COLUMNS`)."""
    if config.generator == "implicit":
        return evaluate_implicit_images(generator, test, config.test_pairs, config.eval_noise_draws)
    return evaluate_images(generator, test, config.test_pairs)


def build_trainer(variant: str, seed: int, config: PaperImageConfig, generator: nn.Module, base_state: dict,
                  constraint: Constraint, data: tuple[torch.Tensor, torch.Tensor]) -> PRTrainer:
    """PRTrainer for one run: Eq. 10 on the Bernoulli adapter (explicit), or Eq. 12 reparameterised with the
    GAN(+reconstruction) objective, its discriminator continued from the base's (implicit)."""
    trainer_config = replace(config.trainer, variant="fixed" if variant == "uniform" else variant, seed=seed)
    if config.generator == "explicit":
        return PRTrainer(ImageTrainerAdapter(generator).train(), constraint, data, trainer_config)
    objective = ConditionalGANObjective.from_args(config.implicit).to(config.device)
    objective.discriminator.load_state_dict(base_state["discriminator"])
    return PRTrainer(generator.train(), constraint, data, replace(trainer_config, generator_update="eq12_reparam"),
                     objective=objective)


def run_variant(variant: str, seed: int, config: PaperImageConfig, base_state: dict) -> dict:
    """Continue the base generator for one (variant, seed); returns its test metrics and log summary."""
    if variant not in VARIANTS:
        raise unknown_name("variant", variant, VARIANTS)
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    train = StructuredDigitsTask("train").to(config.device)
    test = StructuredDigitsTask("test").to(config.device)
    generator = build_generator(config, base_state)
    constraint = build_constraint(variant).to(config.device)
    contexts, targets = _pairs(train, seed, config.train_pairs)
    trainer = build_trainer(variant, seed, config, generator, base_state, constraint, (targets, contexts))
    history, start = [], time.perf_counter()
    while trainer.iteration < trainer.config.iterations:
        history.append(trainer.step())
    result: dict = {"iterations": trainer.iteration, "train_seconds": time.perf_counter() - start}
    tail = history[-max(1, len(history) // 4):]
    for key in ("ess_fraction", "constraint_gap", "kl_to_base", "nll_data", "d_loss", "g_adversarial", "reconstruction"):
        if key in tail[0]:
            result[key] = sum(h[key] for h in tail) / len(tail)
    every = max(1, len(history) // CURVE_POINTS)
    result["curve"] = [{k: h[k] for k in CURVE_KEYS + ("iteration",) if k in h} for h in history[every - 1::every]]
    result.update(evaluate_generator(config, generator, test))
    result["grid"] = grid_images(config, generator, test)  # drawn in samples.png, not kept in results.json
    return result


def grid_images(config: PaperImageConfig, generator: nn.Module, test: StructuredDigitsTask) -> torch.Tensor:
    """The generated images of the first ``GRID_PAIRS`` test contexts, ``(GRID_PAIRS, 28, 28)`` on the CPU:
    mean images (explicit) or samples with the fixed evaluation noise (implicit), as scored."""
    contexts, _ = _pairs(test, EVAL_SEED, GRID_PAIRS)
    if config.generator == "implicit":
        return generate_samples(generator, contexts, EVAL_SEED).cpu()
    return generate(generator, contexts).cpu()


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
IMPLICIT_COLUMNS = [
    ("ssim", "test SSIM, sample G(z, c), fixed z", "{:.4f}", "greater"),
    ("ssim_z_mean", "test SSIM, mean over z draws", "{:.4f}", "greater"),
    ("constraint", "fixed f on samples", "{:.3f}", "greater"),
    ("test_l1", "test L1 (per pixel)", "{:.4f}", "less"),
    ("z_spread", "pixel std over z", "{:.4f}", "greater"),
]


def aggregate(task_list: list[dict], results: list[dict], seed: int, out: Path | None = None) -> dict:
    """The table (mean ± 95% CI over seeds; permutation-test p against base) and the result files."""
    config: PaperImageConfig = task_list[0]["config"]
    quick = task_list[0].get("quick", False)
    by_variant = group_by_variant(task_list, results)
    seeds = sorted({t["seed"] for t in task_list})
    test = StructuredDigitsTask("test").to(config.device)
    implicit = config.generator == "implicit"
    columns = IMPLICIT_COLUMNS if implicit else COLUMNS
    start = build_generator(config, task_list[0]["base_state"])  # the shared base, not continued
    start_metrics = evaluate_generator(config, start, test)
    metrics: dict = {"seeds": seeds, "base_train_seconds": task_list[0]["base_seconds"],
                     **{f"start_{k}": v for k, v in start_metrics.items()}}
    start_name = "start (GAN base, not continued)" if implicit else "start (MLE base, not continued)"
    rows = [[start_name] + [fmt.format(start_metrics[k]) for k, _, fmt, _ in columns] + ["0", "", "", ""]]
    for v, rs in by_variant.items():
        row = [v]
        for key, _, fmt, better in columns:
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
    table = _table_heading(config, seeds) + markdown_table(
        ["variant"] + [c[1] for c in columns] + ["iterations", "train s", "ESS/K (last 1/4)", "constraint gap (last 1/4)"], rows
    )
    metrics["per_run"] = [
        {"variant": t_["variant"], "seed": t_["seed"], **{k: x for k, x in r.items() if k != "grid"}}
        for t_, r in zip(task_list, results)
    ]
    if out is not None:
        command = "kcrl bench paper-image" + (" --quick" if quick else "") + (f" --seed {seed}" if seed else "")
        figures = plot_report(Path(out), config, start, by_variant, test)
        text = f"Command: `OMP_NUM_THREADS=1 {command} --out {out}`\n\n{table}\n\n" + (_IMPLICIT_NOTES if implicit else _EXPLICIT_NOTES)
        text += "".join(f"\n\n![{caption}]({name})" for name, caption in figures)
        write_results(out, "paper-image", seed, config, metrics, text, quick=quick)
    return {"metrics": metrics, "table": table}


def plot_report(out: Path, config: PaperImageConfig, start: nn.Module, by_variant: dict[str, list],
                test: StructuredDigitsTask) -> list[tuple[str, str]]:
    """``samples.png`` (test contexts, targets, the start and the first seed of every variant) and the
    training curves over seeds (``ess.png``, ``constraint_gap.png``); returns ``(file, caption)`` pairs."""
    contexts, targets = _pairs(test, EVAL_SEED, GRID_PAIRS)
    start_images = grid_images(config, start, test)
    kind = "sample G(z, c), fixed z" if config.generator == "implicit" else "mean image"
    rows = [("silhouette", upsample_structure(structure_of(contexts))), ("source", source_of(contexts)),
            ("target", targets), ("start", start_images)] + [(v, rs[0]["grid"]) for v, rs in by_variant.items()]
    plot_image_rows(rows, out / "samples.png", f"StructuredDigits-v0 test pairs; generated: {kind}, first seed of each variant")
    figures = [("samples.png", "test contexts, targets and generated images of each variant")]
    for key, label in (("ess_fraction", "ESS / K"), ("constraint_gap", "constraint gap E_data f - E_q f")):
        curves = {
            v: [([c["iteration"] for c in r["curve"]], [c[key] for c in r["curve"]]) for r in rs]
            for v, rs in by_variant.items() if rs[0]["curve"] and key in rs[0]["curve"][0]
        }
        if curves:
            name = "ess.png" if key == "ess_fraction" else "constraint_gap.png"
            plot_curves(curves, out / name, label, title=f"paper-image: {label} over training (mean, 95% CI over seeds)")
            figures.append((name, f"{label} over training"))
    return figures


def _table_heading(config: PaperImageConfig, seeds: list[int]) -> str:
    t = config.trainer
    if config.generator == "implicit":
        a = config.implicit
        base = (f"base: implicit G(z, c), {a.channels} channels, noise dim {a.noise_dim}, {a.epochs} epoch(s) x "
                f"{a.pairs_per_epoch} pairs of conditional GAN + {a.recon_weight} x {a.reconstruction} reconstruction")
        update = f"Eq. 12 reparameterised, L(theta) weight {t.mle_weight}"
    else:
        base = f"base: {config.base.channels} channels, {config.base.epochs} epoch(s) x {config.base.pairs_per_epoch} pairs of MLE"
        update = f"MLE weight {t.mle_weight}"
    return (
        f"{len(seeds)} seed(s) {seeds}; {base}; then {t.iterations} iterations per run (data batch {t.data_batch}, "
        f"{t.contexts} contexts x K={t.samples_per_context} per PR step, alpha {t.alpha}, lambda {t.lam}, "
        f"{update}); {config.test_pairs} test pairs\n\n"
    )


_EXPLICIT_NOTES = (
    "Cells: mean ± 95% CI over seeds (Student t); p: one-sided permutation test against base. SSIM: "
    "scikit-image, `data_range=1`, 7x7 window, of the generated mean image sigmoid(logits) against the true "
    "target (the PR samples x are binary Bernoulli draws, whose SSIM is shown for reference only). "
    "f: the frozen pretrained structure constraint (log-likelihood of the condition's 7x7 silhouette; 0 is "
    "perfect) on the mean images. ESS/K and the constraint gap (E_data f - E_q f, with the run's own f) are "
    "the trainer's, averaged over the last quarter of each run. All runs start from the same base generator, "
    "so seeds vary the PR sampling, minibatches and training pairs, not the MLE start."
)
_IMPLICIT_NOTES = (
    "Cells: mean ± 95% CI over seeds (Student t); p: one-sided permutation test against base. Generator: implicit, "
    "x = G(z, c) with no density, L(theta) = non-saturating conditional GAN loss + a reconstruction term (its "
    "discriminator continues from the base's), PR term Eq. 12 reparameterised. SSIM: scikit-image, `data_range=1`, 7x7 window, of one sample "
    "G(z, c) per test context with a fixed evaluation noise seed, and averaged over the z draws; pixel std over z: "
    "how much the samples vary with the noise (0: the generator ignores z). f: the frozen pretrained structure "
    "constraint (0 is perfect) on the fixed-z samples. ESS/K and the constraint gap (E_data f - E_q f, with the run's "
    "own f) are the trainer's, averaged over the last quarter of each run; no KL to the base (no density). All runs "
    "start from the same base, so seeds vary the PR sampling, minibatches and training pairs, not the pretraining."
)


def run(seed: int = 0, out: Path | None = None, quick: bool = False, progress: bool = True, config: PaperImageConfig | None = None) -> dict:
    task_list = tasks(seed, quick, config)
    return aggregate(task_list, [run_task(t) for t in task_list], seed, out)
