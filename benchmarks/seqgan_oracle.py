"""``kcrl bench seqgan-oracle``: SeqGAN's synthetic oracle, MLE vs binary D vs learned constraint.

Every variant starts from ONE shared MLE base generator (SeqGAN's recipe: LSTM, embedding 32,
hidden 32, N(0, 0.1) initialisation, Adam 0.01, batch 64, 120 epochs on 9,984 oracle samples),
trained once before the runs and cached in a file keyed by its config. Each variant then
continues with :class:`~kcrl.trainer.PRTrainer` (Algorithm 1) for the same number of iterations:

============  ===============  ===============================================================
variant       PRTrainer        constraint f and what moves it
============  ===============  ===============================================================
``base``      (not trained)    the shared start itself, scored at several temperatures
``mle``       ``base``         none: continued MLE only, no PR term
``binary_d``  ``binary_d``     SeqGAN's CNN discriminator, logistic real-vs-generated, f = logit
``learned``   ``learned``      the same CNN, trained by MaxEnt IRL (Eq. 8): the full method
``constant``  ``fixed``        control: f = 0, uniform importance weights ("train on your own
                               samples"; a published report found it as good as the discriminator)
============  ===============  ===============================================================

The generator step is Eq. 10 (importance-weighted MLE on the K samples, explicit density) or
Eq. 12 (score function with reward ``alpha f``), chosen by ``trainer.generator_update``; every
variant keeps SeqGAN's own objective L(theta), MLE on the training data, weighted ``mle_weight``.

Scores of each final generator, in nats per token (:mod:`kcrl.oracle_metrics`): NLL_oracle of
fresh samples at temperature 1, held-out NLL of fresh oracle samples under the generator (it
catches mode collapse, which NLL_oracle rewards), and the generator's entropy rate (self-NLL).
Lower temperature lowers NLL_oracle at the cost of diversity, so a comparison is only fair at
matched entropy rate: the base is also scored at several temperatures, and each variant's row
shows the base's NLL_oracle interpolated at that variant's entropy rate. The trainer's ESS/K and
constraint gap ``E_data f - E_q f`` are averaged over the last quarter of each run. Each
(variant, seed) is one task, so ``--backend ray`` / ``--jobs`` spread them; the seeds vary the PR
sampling, data order, dropout and constraint initialisation, not the shared base.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kcrl.benchmarks import suite_config
from kcrl.benchmarks.oracle_mle import PUBLISHED
from kcrl.benchmarks.parts import (
    ORACLE_PLAN as _PLAN, ORACLE_TRAINED as TRAINED, ORACLE_VARIANTS as VARIANTS, OracleGenerator,
    fresh_generator, build_constraint, build_world, check_scorer_shape, ensure_base,
)
from kcrl.benchmarks.plots import plot_curves
from kcrl.benchmarks.report import group_by_variant, markdown_table, write_results
from kcrl.constraints import Constraint
from kcrl.envs.oracle import ORACLE_SEED, SEQGAN_TRAIN_SAMPLES
from kcrl.errors import ConfigError, unknown_name
from kcrl.models.lstm_generator import LSTMGenerator, MLEArgs
from kcrl.models.sequence_scorer import SEQGAN_FILTER_SIZES, SEQGAN_NUM_FILTERS
from kcrl.oracle_metrics import evaluate_generator, nll_oracle, oracle_floor, uniform_nll_oracle
from kcrl.progress import progress as progress_bar
from kcrl.stats import mean_ci95, permutation_test
from kcrl.trainer import PRConfig, PRTrainer

CURVE_SEED = 7_919  # every learning-curve point scores samples drawn with this seed (common random numbers)
EVAL_SEED = 10_000  # final scores: samples drawn with EVAL_SEED + the run's seed



@dataclass
class SeqGANOracleConfig:
    """Configuration of the seqgan-oracle suite (defaults: SeqGAN's published setting; sizes in ``benchmarks/suites/seqgan-oracle.yaml``).

    Cost at the defaults, one core: the base ~30 min (120 epochs); then 3 seeds x 4 variants x 100
    Algorithm 1 iterations with K = 128 samples and a data batch of 128, where one iteration costs
    ~1-2 s for mle / constant and several seconds for binary_d / learned (SeqGAN's CNN on 2 x 128
    sequences, 3 steps): about an hour more on one core; spread the runs with ``--jobs``.
    """

    vocab_size: int = 5000
    """V, the oracle's vocabulary"""
    length: int = 20
    """T, tokens per sequence"""
    embed_dim: int = 32
    """embedding size of the oracle and of the generator"""
    hidden_dim: int = 32
    """LSTM hidden size of the oracle and of the generator"""
    oracle_seed: int = ORACLE_SEED
    """seed of the oracle (its reference points are in benchmarks/results/oracle-mle)"""
    data_seed: int = 0
    """seed of the oracle data sets (training and held-out)"""
    train_samples: int = SEQGAN_TRAIN_SAMPLES
    """oracle samples to train on: the base's MLE, every variant's L(theta) and E_data f of Eq. 8"""
    test_samples: int = 10_000
    """held-out oracle samples for the held-out NLL"""
    eval_samples: int = 10_000
    """generator (and reference) samples per final NLL_oracle and entropy rate"""
    base_mle: MLEArgs = field(default_factory=lambda: MLEArgs(epochs=120, keep_best=False))
    """MLE of the shared base (SeqGAN: Adam 0.01, batch 64, clip 5, 120 epochs, no early stopping);
    its ``seed`` is set to the suite's seed"""
    base_cache: str | None = None
    """folder of the cached base generators (None: $KCRL_CACHE/seqgan-oracle, default
    ~/.cache/kcrl/seqgan-oracle); on a multi-node Ray cluster it must be a shared folder"""
    seeds: int = 3
    """seeds per trained variant (seed, seed+1, ...): PR sampling, data order, dropout, constraint init"""
    variants: tuple[str, ...] = VARIANTS
    """which rows to run (``base`` is one untrained row; the others are trained over ``seeds``)"""
    trainer: PRConfig = field(
        default_factory=lambda: PRConfig(
            iterations=100, generator_update="eq10", alpha=1.0, lam=1.0, mle_weight=1.0, samples=128,
            data_batch=128, constraint_steps=3, generator_lr=1e-3, constraint_lr=1e-3, lr_decay=False,
            checkpoint_every=0, ess_warn_fraction=0.0,
        )
    )
    """Algorithm 1 settings shared by the variants (``variant``, ``seed`` and ``eval_every`` are set
    per run): ``generator_update`` is eq10 or eq12, ``samples`` is K"""
    scorer_embed_dim: int = 64
    """token embedding size of the CNN constraint (SeqGAN's discriminator: 64)"""
    scorer_filter_sizes: tuple[int, ...] = SEQGAN_FILTER_SIZES
    """convolution widths of the CNN constraint (SeqGAN's twelve; widths > T are dropped)"""
    scorer_num_filters: tuple[int, ...] = SEQGAN_NUM_FILTERS
    """channels per width of the CNN constraint, one per entry of ``scorer_filter_sizes``"""
    scorer_dropout: float = 0.25
    """dropout of the CNN constraint while it is trained (SeqGAN keeps 0.75)"""
    temperatures: tuple[float, ...] = (0.8, 0.9, 1.0, 1.1)
    """temperatures the base is scored at (the matched-diversity control)"""
    curve_every: int = 20
    """iterations between the NLL_oracle points of the learning curves"""
    curve_samples: int = 1_000
    """generator samples per learning-curve point"""
    device: str = "cpu"
    """torch device of the generator, the constraint and the oracle"""

    def __post_init__(self) -> None:
        for v in self.variants:
            if v not in VARIANTS:
                raise unknown_name("seqgan-oracle variant", v, VARIANTS)
        check_scorer_shape(self.scorer_filter_sizes, self.scorer_num_filters)
        for name in ("seeds", "curve_every", "curve_samples", "eval_samples", "test_samples", "train_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1; got {getattr(self, name)}.")
        if not self.temperatures or min(self.temperatures) <= 0:
            raise ConfigError(f"temperatures must be positive and not empty; got {self.temperatures!r}.")

    @property
    def full_spec(self) -> bool:
        """Whether the oracle has SeqGAN's sizes (the published numbers apply only then)."""
        return (self.vocab_size, self.length, self.embed_dim, self.hidden_dim) == (5000, 20, 32, 32)


# ---------------------------------------------------------------------- one run
def score_base(config: SeqGANOracleConfig, path: Path, seed: int) -> dict[str, Any]:
    """The shared base at each temperature, plus the reference points: floor, uniform, untrained."""
    world = build_world(config)
    oracle, n, device = world.oracle, config.eval_samples, world.device
    model = LSTMGenerator.load(path).to(device).eval()
    start = time.perf_counter()
    result: dict[str, Any] = {
        "temperatures": evaluate_generator(oracle, model, world.data("test"), n, EVAL_SEED + seed, config.temperatures),
        "oracle_floor": oracle_floor(oracle, n, torch.Generator(device).manual_seed(seed + 1), config.length),
        "uniform_nll_oracle": uniform_nll_oracle(oracle, n, config.length, torch.Generator(device).manual_seed(seed + 2)),
        "untrained_nll_oracle": nll_oracle(oracle, fresh_generator(config, world, seed), n,
                                           torch.Generator(device).manual_seed(EVAL_SEED + seed)),
        "start_nll_oracle": nll_oracle(oracle, model, config.curve_samples, torch.Generator(device).manual_seed(CURVE_SEED)),
    }
    result["eval_seconds"] = time.perf_counter() - start
    return result


def run_variant(variant: str, seed: int, config: SeqGANOracleConfig, path: Path, progress: bool = False) -> dict[str, Any]:
    """Continue one variant from the shared base for ``trainer.iterations``; its scores and curves."""
    if variant not in VARIANTS:
        raise unknown_name("seqgan-oracle variant", variant, VARIANTS)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"the shared base generator {str(path)!r} is missing. It is trained by tasks() on the driver; on a "
            "multi-node cluster point base_cache (or $KCRL_CACHE) to a folder every node shares."
        )
    if variant == "base":
        return score_base(config, path, seed)
    world = build_world(config)
    oracle, device, train = world.oracle, world.device, world.data("train")
    model = LSTMGenerator.load(path).to(device)
    generator = OracleGenerator(model).train()

    def curve_point(_trainer: PRTrainer | None = None) -> dict[str, float]:
        """NLL_oracle on ``curve_samples`` samples drawn with a fixed seed (the learning curve)."""
        return {"nll_oracle": nll_oracle(oracle, model, config.curve_samples, torch.Generator(device).manual_seed(CURVE_SEED))}

    start_nll = curve_point()["nll_oracle"]  # the shared start: equal for every run
    torch.manual_seed(seed)  # dropout of the CNN constraint
    constraint = build_constraint(variant, config, seed)
    # Algorithm 1: per iteration, K samples of p_theta; the constraint step (Eq. 8 for learned); then
    # -mle_weight * E_data log p_theta + lam * PR term, Eq. 10 (-sum_i w_i log p_theta(x_i),
    # w_i = softmax_i(alpha f(x_i))) or Eq. 12 (score function, reward alpha f), per generator_update.
    cfg = replace(config.trainer, variant=_PLAN[variant], seed=seed, eval_every=config.curve_every)
    trainer = PRTrainer(generator, constraint, (train, None), cfg, evaluate=curve_point)
    start = time.perf_counter()
    history = trainer.train(show_progress=progress)
    train_seconds = time.perf_counter() - start

    model.eval()
    start = time.perf_counter()
    scores = evaluate_generator(oracle, model, world.data("test"), config.eval_samples, EVAL_SEED + seed)["T=1"]
    result: dict[str, Any] = {
        **scores, "start_nll_oracle": start_nll, "iterations": trainer.iteration,
        "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - start,
    }
    if constraint.learnable:
        result.update(constraint_generalisation(constraint, model, train, world.data("test"), config.eval_samples,
                                                EVAL_SEED + seed, oracle))
    tail = history[-max(1, len(history) // 4):]  # the last quarter of the run
    for key in ("ess_fraction", "constraint_gap", "kl_to_base", "nll_data", "log_z"):
        if key in tail[0]:
            result[key] = sum(h[key] for h in tail) / len(tail)
    result["curve"] = [{"iteration": 0, "nll_oracle": start_nll}] + [
        {k: h[k] for k in ("iteration", "nll_oracle", "ess_fraction", "constraint_gap", "kl_to_base", "nll_data") if k in h}
        for h in history
    ]
    return result


@torch.no_grad()
def _predict(constraint: Constraint, x: torch.Tensor, batch: int = 1_000) -> torch.Tensor:
    """``f(x)`` in eval mode, ``(N,)``, a chunk at a time (the CNN's activations are large)."""
    return torch.cat([constraint.predict(chunk) for chunk in x.split(batch)])


@torch.no_grad()
def constraint_generalisation(
    constraint: Constraint, model: LSTMGenerator, train: torch.Tensor, test: torch.Tensor, n: int, seed: int, oracle
) -> dict[str, float]:
    """Did f learn the oracle's structure or the training set? Gaps of f to fresh generator samples.

    ``f_gap_train = E_train f - E_p f`` and ``f_gap_heldout = E_test f - E_p f`` (E_p on n fresh
    samples of the final generator, unweighted); a constraint that only recognises the training
    sequences has a large first gap and a second near 0. ``f_oracle_corr`` is the correlation of f
    with the oracle's log-likelihood on those samples (positive: f points towards the truth).
    """
    m = min(n, len(train), len(test))
    x, _ = model.sample(n, torch.Generator(model.device).manual_seed(seed + 1))
    f_gen = _predict(constraint, x)
    log_p_oracle = torch.cat([oracle.log_prob(chunk) for chunk in x.split(1_000)])
    return {
        "f_gap_train": (_predict(constraint, train[:m]).mean() - f_gen.mean()).item(),
        "f_gap_heldout": (_predict(constraint, test[:m]).mean() - f_gen.mean()).item(),
        "f_oracle_corr": torch.corrcoef(torch.stack([f_gen, log_p_oracle]))[0, 1].item(),
    }


# ---------------------------------------------------------------------- runner protocol
def tasks(seed: int = 0, quick: bool = False, config: SeqGANOracleConfig | None = None, progress: bool = True) -> list[dict]:
    """Train (or find) the shared base once, here on the driver; then one task per (variant, seed).

    Tasks carry the base's file path, so every run starts from the same weights.
    """
    config = config or suite_config("seqgan-oracle", quick)
    path, info = ensure_base(config, seed, progress)
    out = []
    for v in config.variants:
        for i in range(1 if v == "base" else config.seeds):
            out.append({"variant": v, "seed": seed + i, "config": config, "quick": quick, "base_path": str(path),
                        "base_key": info["key"], "base_cached": info["cached"], "base_train_seconds": info["train_seconds"]})
    return out


def run_task(task: dict) -> dict:
    return run_variant(task["variant"], task["seed"], task["config"], Path(task["base_path"]), task.get("progress", False))


def _matched_entropy(base: dict[str, dict[str, float]], entropy: float) -> float | None:
    """The base's NLL_oracle at entropy rate ``entropy``, interpolated over its temperatures (None outside)."""
    points = sorted((s["self_nll"], s["nll_oracle"]) for s in base.values())
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if len(xs) < 2 or not xs[0] <= entropy <= xs[-1]:
        return None
    return float(np.interp(entropy, xs, ys))


COLUMNS = [  # key, header, better
    ("nll_oracle", "NLL_oracle, T=1", "less"),
    ("heldout_nll", "held-out NLL", "less"),
    ("self_nll", "entropy rate (self-NLL)", None),
]


def _cell(values: list[float], fmt: str = "{:.3f}") -> str:
    mean, half = mean_ci95(values)
    return fmt.format(mean) + (f" ± {fmt.format(half)}" if len(values) > 1 else "")


def aggregate(task_list: list[dict], results: list[dict], seed: int, out: Path | None = None) -> dict:
    """The table (mean ± 95% CI over seeds; one-sided permutation test against mle), plots and files."""
    config: SeqGANOracleConfig = task_list[0]["config"]
    quick = task_list[0].get("quick", False)
    by_variant = group_by_variant(task_list, results)
    seeds = sorted({t["seed"] for t in task_list if t["variant"] != "base"})
    published = PUBLISHED if config.full_spec else {}
    base = by_variant.get("base", [None])[0]
    metrics: dict[str, Any] = {"seeds": seeds, "base_key": task_list[0]["base_key"],
                               "base_train_seconds": task_list[0]["base_train_seconds"]}
    header = ["model", *(c[1] for c in COLUMNS), "base NLL_oracle at this entropy", "ESS/K (last 1/4)",
              "constraint gap (last 1/4)", "f gap, train / held-out", "KL to base", "published NLL_oracle"]
    rows: list[list[Any]] = []
    if base is not None:
        metrics.update({k: base[k] for k in ("oracle_floor", "uniform_nll_oracle", "untrained_nll_oracle")})
        metrics["base"] = base["temperatures"]
        blank = [""] * (len(header) - 2)
        rows += [
            ["oracle on its own samples (floor)", f"{base['oracle_floor']:.3f}", *blank[:-1], published.get("floor", "")],
            ["uniform random tokens", f"{base['uniform_nll_oracle']:.3f}", *blank[:-1], published.get("uniform", "")],
            ["untrained generator, T=1", f"{base['untrained_nll_oracle']:.3f}", *blank],
        ]
        for name, s in base["temperatures"].items():
            ref = published.get("MLE", "") if name == "T=1" else ""
            rows.append([f"shared base (MLE, {config.base_mle.epochs} epochs), {name}", f"{s['nll_oracle']:.3f}",
                         f"{s['heldout_nll']:.3f}", f"{s['self_nll']:.3f}", "", "", "", "", "", ref])
    for v in TRAINED:
        rs = by_variant.get(v)
        if not rs:
            continue
        row = [f"{v} ({_PLAN[v]}, {config.trainer.generator_update if v != 'mle' else 'MLE'})"]
        for key, _, better in COLUMNS:
            values = [r[key] for r in rs]
            metrics[f"{v}_{key}_mean"], metrics[f"{v}_{key}_ci95"] = mean_ci95(values)
            cell = _cell(values)
            if better and v != "mle" and "mle" in by_variant:
                p = permutation_test(values, [r[key] for r in by_variant["mle"]], alternative=better)
                metrics[f"{v}_{key}_p_vs_mle"] = p
                cell += f" (p={p:.2f})"
            row.append(cell)
        matched = None if base is None else _matched_entropy(base["temperatures"], metrics[f"{v}_self_nll_mean"])
        metrics[f"{v}_base_nll_oracle_at_matched_entropy"] = matched
        row.append("out of range" if matched is None and base is not None else ("" if matched is None else f"{matched:.3f}"))
        for key in ("ess_fraction", "constraint_gap", "f_gap_train", "f_gap_heldout", "f_oracle_corr", "kl_to_base"):
            values = [r[key] for r in rs if key in r]
            if values:
                metrics[f"{v}_{key}_mean"], metrics[f"{v}_{key}_ci95"] = mean_ci95(values)
        for key, fmt in (("ess_fraction", "{:.2f}"), ("constraint_gap", "{:.3f}"), ("f_gap", "{:.2f}"), ("kl_to_base", "{:.3f}")):
            if key == "f_gap":
                row.append(f"{metrics[f'{v}_f_gap_train_mean']:.2f} / {metrics[f'{v}_f_gap_heldout_mean']:.2f}"
                           if f"{v}_f_gap_train_mean" in metrics else "")
                continue
            values = [r[key] for r in rs if key in r]
            row.append(_cell(values, fmt) if values else "")
        row.append(published.get("SeqGAN", "") if v == "binary_d" else "")
        rows.append(row)
    metrics["per_run"] = [
        {"variant": t["variant"], "seed": t["seed"], **{k: val for k, val in r.items() if k not in ("curve", "temperatures")}}
        for t, r in zip(task_list, results)
    ]
    tr = config.trainer
    table = (
        f"oracle V={config.vocab_size}, T={config.length}, seed {config.oracle_seed}; {config.train_samples} training "
        f"samples; shared base: {config.base_mle.epochs} MLE epochs; then {tr.iterations} Algorithm 1 iterations per run, "
        f"K={tr.samples}, data batch {tr.data_batch}, alpha {tr.alpha}, lambda {tr.lam}, mle_weight {tr.mle_weight}, "
        f"generator lr {tr.generator_lr}, constraint lr {tr.constraint_lr} x {tr.constraint_steps} steps; "
        f"{len(seeds)} seed(s) {seeds}\n\n" + markdown_table(header, rows)
    )
    if out is not None:
        _write(out, config, task_list, results, by_variant, metrics, table, seed, quick)
    return {"metrics": metrics, "table": table}


NOTES = """
Cells: mean ± 95% CI over seeds (Student t); p: one-sided permutation test that the variant's mean
is lower than mle's (with 3 seeds per arm the smallest possible p is 0.05). nats per token. NLL_oracle:
{n} generator samples at temperature 1 scored by the oracle; held-out NLL: {m} fresh oracle samples
scored by the generator; entropy rate: the generator's own samples scored by itself. "base NLL_oracle at
this entropy" interpolates the shared base's (entropy rate, NLL_oracle) points over temperatures
{temps}: a variant only beats temperature tuning if its NLL_oracle is below that number. ESS/K and the
constraint gap E_data f - E_q f are the trainer's, averaged over the last quarter of each run; KL to
base estimates KL(p_theta || shared base) on the run's samples. "f gap, train / held-out": the final
constraint's mean on training sequences and on fresh oracle samples, minus its mean on the final
generator's samples; a constraint that learned the oracle's structure separates both, one that
recognises the training set separates only the first. The published column is SeqGAN's
(AAAI 2017) with its own oracle and protocol (MLE 120 epochs; SeqGAN: 200 adversarial epochs with
Monte-Carlo rollouts): a reference, not the same experiment; it is shown at SeqGAN's sizes only.
"""


def _findings(metrics: dict[str, Any]) -> list[str]:
    """Plain statements read off the numbers (so the notes stay true at any size)."""
    lines = []
    if "mle_nll_oracle_mean" not in metrics:
        return lines
    mle = metrics["mle_nll_oracle_mean"]
    for v in ("binary_d", "learned", "constant"):
        if f"{v}_nll_oracle_mean" not in metrics:
            continue
        mean, p = metrics[f"{v}_nll_oracle_mean"], metrics.get(f"{v}_nll_oracle_p_vs_mle")
        verdict = "lower than" if p is not None and p <= 0.05 else "not significantly lower than"
        line = f"- {v}: NLL_oracle {mean:.3f} vs mle {mle:.3f} ({verdict} mle, p={p:.2f})"
        matched = metrics.get(f"{v}_base_nll_oracle_at_matched_entropy")
        if matched is not None:
            line += f"; the base tuned to the same entropy rate scores {matched:.3f}"
        held, held_mle = metrics[f"{v}_heldout_nll_mean"], metrics["mle_heldout_nll_mean"]
        line += f"; held-out NLL {held:.3f} vs mle {held_mle:.3f}."
        if f"{v}_f_gap_train_mean" in metrics:
            line += (
                f" Its constraint scores training sequences {metrics[f'{v}_f_gap_train_mean']:.2f} above the final "
                f"generator's samples but fresh oracle samples only {metrics[f'{v}_f_gap_heldout_mean']:.2f} above; "
                f"correlation of f with the oracle's log-likelihood on generator samples "
                f"{metrics[f'{v}_f_oracle_corr_mean']:.2f}."
            )
        lines.append(line)
    return lines


def _write(out, config, task_list, results, by_variant, metrics, table, seed, quick) -> None:
    out = Path(out)
    colors = {v: f"C{i}" for i, v in enumerate(TRAINED)}
    curves = {
        v: [([c["iteration"] for c in r["curve"] if "nll_oracle" in c], [c["nll_oracle"] for c in r["curve"] if "nll_oracle" in c])
            for r in rs]
        for v, rs in by_variant.items() if v != "base"
    }
    images = []
    if curves:
        plot_curves(curves, out / "nll_oracle.png", f"NLL_oracle ({config.curve_samples} samples, T=1), nats/token",
                    "Algorithm 1 from the shared MLE base, OracleSequence-v0", colors=colors)
        images.append("![NLL_oracle learning curves](nll_oracle.png)")
    gaps = {
        v: [([c["iteration"] for c in r["curve"][1:]], [c["constraint_gap"] for c in r["curve"][1:]]) for r in rs]
        for v, rs in by_variant.items() if v in ("binary_d", "learned")
    }
    if gaps:
        plot_curves(gaps, out / "constraint_gap.png", "constraint gap E_data f - E_q f", "Constraint learning",
                    colors=colors)
        images.append("![constraint gap](constraint_gap.png)")
    command = "OMP_NUM_THREADS=1 kcrl bench seqgan-oracle" + (" --quick" if quick else "") + (f" --seed {seed}" if seed else "")
    base_note = (f"Shared base: `{Path(task_list[0]['base_path']).name}` ("
                 + ("found in the cache" if task_list[0]["base_cached"] else "trained by this run")
                 + f", {task_list[0]['base_train_seconds']:.0f} s of MLE).")
    seconds = [r.get("train_seconds", 0.0) for r in results]
    findings = _findings(metrics)
    text = (
        f"Command: `{command} --out {out}`\n\n{table}\n\n{base_note} Training {sum(seconds):.0f} s over "
        f"{sum(1 for t in task_list if t['variant'] != 'base')} runs.\n"
        + NOTES.format(n=config.eval_samples, m=config.test_samples, temps=", ".join(f"{t:g}" for t in config.temperatures))
        + ("\nWhat the numbers show:\n\n" + "\n".join(findings) + "\n" if findings else "")
        + ("\n" + "\n\n".join(images) + "\n" if images else "")
    )
    write_results(out, "seqgan-oracle", seed, config, metrics, text, quick=quick,
                  curves={f"{t['variant']}/{t['seed']}": r.get("curve", []) for t, r in zip(task_list, results)})


def run(seed: int = 0, out: Path | None = None, quick: bool = False, progress: bool = True,
        config: SeqGANOracleConfig | None = None) -> dict:
    task_list = tasks(seed, quick, config, progress)
    results = [run_task(t) for t in progress_bar(task_list, "runs", enabled=progress)]
    return aggregate(task_list, results, seed, out)
