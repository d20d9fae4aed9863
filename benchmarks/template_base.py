"""``kcrl bench template-base``: the MLE base generator of ``TemplateSentence-v0`` on IMDB.

Trains :class:`~kcrl.models.text_generator.TemplateGenerator` by maximum likelihood on the
train-split templates (one thread), then scores it on the test split:

* perplexity of the test sentences given their templates (per token, natural log inside,
  ``<eos>`` counted; also without it);
* template accuracy (share of outputs that follow the template exactly), greedy and sampled at
  temperature 1, with ``<unk>`` written at most as often as the template shows it, and again
  with ``<unk>`` allowed anywhere (plus how many ``<unk>`` the outputs then contain);
* corpus BLEU of those outputs against the true sentences (sacrebleu, ``tokenize="none"`` on
  kcrl's lowercased tokens), distinct-1/2, self-BLEU-4 on a fixed-size sample;
* corpus preprocessing times: the first build of the IMDB corpus and templates (in an empty
  cache) and the cached build, plus ``gymnasium.make("TemplateSentence-v0")`` on the cache.

The checkpoint is written to ``out/generator.pt`` when it is under 10 MB.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kcrl.models.text_generator import GeneratorConfig, MLEArgs, TemplateGenerator, train_mle
from kcrl.benchmarks import suite_config
from kcrl.benchmarks.report import markdown_table, write_results
from kcrl.data.corpus import load_corpus
from kcrl.data.templates import MaskingConfig, TemplateRule, prepare_templates
from kcrl.data.vocab import UNK_ID
from kcrl.metrics import corpus_bleu, distinct_n, perplexity, self_bleu, template_accuracy

MAX_CHECKPOINT_BYTES = 10 * 2**20


@dataclass
class TemplateBaseConfig:
    """Configuration of the template-base suite (the defaults are the full size; sizes in
    ``benchmarks/suites/template-base.yaml``)."""

    vocab_size: int = 5000
    """vocabulary size including the 5 specials"""
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """how templates are cut (spans, about half the tokens, 1-3 segments)"""
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    """generator sizes"""
    mle: MLEArgs = field(default_factory=lambda: MLEArgs(steps=2500, batch_size=64, lr=2e-3, time_budget_s=600.0))
    """MLE training (fixed steps; the time budget only guards against a slow machine)"""
    eval_templates: int = 0
    """test templates scored for accuracy/BLEU (0: the whole test split)"""
    self_bleu_samples: int = 500
    """sentences in the self-BLEU sample"""
    max_length: int = 20
    """most tokens per generated sentence (<eos> included)"""
    measure_build: bool = True
    """time a first build of the corpus in an empty cache (about 20 s)"""


def _build_times() -> dict[str, float]:
    """First build (empty cache) and cached build of the IMDB corpus and train templates."""
    import gymnasium as gym

    times: dict[str, float] = {}
    saved = os.environ.get("KCRL_CACHE")
    with tempfile.TemporaryDirectory(prefix="kcrl-cache-") as tmp:
        os.environ["KCRL_CACHE"] = tmp
        try:
            for label in ("first", "cached"):
                start = time.perf_counter()
                load_corpus()
                times[f"corpus_{label}_s"] = time.perf_counter() - start
                start = time.perf_counter()
                prepare_templates(split="train")
                times[f"templates_{label}_s"] = time.perf_counter() - start
            start = time.perf_counter()
            gym.make("TemplateSentence-v0").close()
            times["env_make_cached_s"] = time.perf_counter() - start
        finally:
            if saved is None:
                os.environ.pop("KCRL_CACHE", None)
            else:
                os.environ["KCRL_CACHE"] = saved
    return times


def _decoded(model: TemplateGenerator, ids: torch.Tensor) -> list[list[str]]:
    return [model.vocab.decode(row) for row in ids]


def run(seed: int = 0, out: Path | None = None, quick: bool = False, config: TemplateBaseConfig | None = None, progress: bool = True) -> dict:
    config = config or suite_config("template-base", quick)
    config.mle.seed = seed
    torch.set_num_threads(1)
    metrics: dict = {}
    if config.measure_build:
        metrics.update(_build_times())

    start = time.perf_counter()
    vocab, train = prepare_templates(split="train", vocab_size=config.vocab_size, masking=config.masking)
    _, test = prepare_templates(split="test", vocab_size=config.vocab_size, masking=config.masking)
    metrics["data_load_s"] = time.perf_counter() - start
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TemplateGenerator(vocab, config.generator)
    metrics.update(train_sentences=len(train), test_sentences=len(test), parameters=model.num_parameters())

    start = time.perf_counter()
    history = train_mle(model, train, config.mle, show_progress=progress)
    metrics.update(train_seconds=time.perf_counter() - start, steps_done=history[-1]["step"], final_train_loss=history[-1]["loss"])
    metrics["seconds_per_step"] = metrics["train_seconds"] / metrics["steps_done"]

    model.eval()
    metrics["test_perplexity"] = perplexity(model, test, count_eos=True)
    metrics["test_perplexity_no_eos"] = perplexity(model, test, count_eos=False)
    scored = test if not config.eval_templates else test.subset(slice(0, config.eval_templates))
    references = _decoded(model, scored.sentences)
    rule = TemplateRule()
    gen = torch.Generator().manual_seed(seed)
    ref_len = float(scored.lengths.float().mean())
    for name, samples in (
        ("greedy", model.greedy(scored.templates, max_length=config.max_length)),
        ("sampled", model.sample(scored.templates, temperature=1.0, generator=gen, max_length=config.max_length)),
    ):
        words = _decoded(model, samples.tokens)
        metrics[f"{name}_template_accuracy"] = template_accuracy(samples.tokens, scored.templates)
        metrics[f"{name}_rule_score"] = rule.predict(samples.tokens, scored.templates).mean().item()
        metrics[f"{name}_bleu"] = corpus_bleu(words, references)
        metrics[f"{name}_distinct_1"] = distinct_n(words, 1)
        metrics[f"{name}_distinct_2"] = distinct_n(words, 2)
        metrics[f"{name}_mean_length"] = sum(len(w) for w in words) / len(words)
        metrics[f"{name}_truncated"] = float((samples.tokens[:, -1] != 0).float().mean())
        if name == "sampled":
            metrics["sampled_self_bleu4"] = self_bleu(words, 4, sample_size=config.self_bleu_samples, seed=seed)
    # The same decoding with <unk> allowed anywhere (forbid_unk=False), as unrestricted generators
    # are usually scored: higher accuracy, but <unk> becomes the favourite filler (docs/design.md §5).
    for name, samples in (
        ("greedy", model.greedy(scored.templates, max_length=config.max_length, forbid_unk=False)),
        ("sampled", model.sample(scored.templates, generator=torch.Generator().manual_seed(seed), max_length=config.max_length, forbid_unk=False)),
    ):
        metrics[f"{name}_template_accuracy_unk_allowed"] = template_accuracy(samples.tokens, scored.templates)
        metrics[f"{name}_unk_per_sentence_unk_allowed"] = float((samples.tokens == UNK_ID).sum(1).float().mean())
    metrics["reference_unk_per_sentence"] = float((scored.sentences == UNK_ID).sum(1).float().mean())
    metrics["templates_with_unk"] = float((scored.templates == UNK_ID).any(1).float().mean())
    metrics.update(eval_templates=len(scored), reference_mean_length=ref_len, self_bleu_sample_size=min(config.self_bleu_samples, len(scored)))
    examples = [
        {
            "template": " ".join(model.vocab.decode(scored.templates[i], keep_specials=True)).replace(" <pad>", ""),
            "reference": " ".join(references[i]),
            "greedy": " ".join(model.vocab.decode(model.greedy(scored.templates[i : i + 1]).tokens[0])),
        }
        for i in range(5)
    ]

    table = _table(metrics, quick)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        checkpoint = out / "generator.pt"
        model.save(checkpoint)
        metrics["checkpoint_bytes"] = checkpoint.stat().st_size
        if metrics["checkpoint_bytes"] >= MAX_CHECKPOINT_BYTES:
            checkpoint.unlink()
        command = "kcrl bench template-base" + (" --quick" if quick else "") + (f" --seed {seed}" if seed else "")
        text = (
            f"Command: `OMP_NUM_THREADS=1 {command} --out {out}`\n\n{table}\n\n"
            "Perplexity: per token, natural log, over the test split's sentences given their templates, "
            "`<eos>` counted (without it in the second row). BLEU: sacrebleu corpus BLEU-4, "
            "`tokenize=\"none\"` on kcrl's lowercased tokens, one reference (the true sentence). "
            f"Self-BLEU-4 on {metrics['self_bleu_sample_size']} sampled sentences. Decoding writes `<unk>` at most as "
            "often as the template shows it (`forbid_unk=True`: no `<unk>` filler); the `<unk> allowed` rows decode "
            "without that restriction, as unrestricted generators are usually scored.\n\n"
            "Examples (test templates, greedy):\n\n"
            + "\n".join(f"- `{e['template']}` -> `{e['greedy']}` (true: `{e['reference']}`)" for e in examples)
        )
        write_results(out, "template-base", seed, config, metrics, text, history=history, examples=examples, quick=quick)
    return {"metrics": metrics, "table": table}


def _table(m: dict, quick: bool) -> str:
    rows = [
        ["train sentences / steps done", f"{m['train_sentences']} / {m['steps_done']}"],
        ["parameters", m["parameters"]],
        ["train time (s) / per step", f"{m['train_seconds']:.0f} / {m['seconds_per_step']:.3f}"],
        ["test perplexity (<eos> counted)", m["test_perplexity"]],
        ["test perplexity (no <eos>)", m["test_perplexity_no_eos"]],
        ["template accuracy, greedy", m["greedy_template_accuracy"]],
        ["template accuracy, sampled T=1", m["sampled_template_accuracy"]],
        ["template accuracy, <unk> allowed: greedy / sampled", f"{m['greedy_template_accuracy_unk_allowed']:.4f} / {m['sampled_template_accuracy_unk_allowed']:.4f}"],
        ["<unk> per sentence, <unk> allowed: greedy / sampled / true", f"{m['greedy_unk_per_sentence_unk_allowed']:.2f} / {m['sampled_unk_per_sentence_unk_allowed']:.2f} / {m['reference_unk_per_sentence']:.2f}"],
        ["test templates showing <unk>", m["templates_with_unk"]],
        ["BLEU, greedy / sampled", f"{m['greedy_bleu']:.2f} / {m['sampled_bleu']:.2f}"],
        ["distinct-2, greedy / sampled", f"{m['greedy_distinct_2']:.3f} / {m['sampled_distinct_2']:.3f}"],
        [f"self-BLEU-4, sampled (n={m['self_bleu_sample_size']})", m["sampled_self_bleu4"]],
        ["mean length, greedy / sampled / true", f"{m['greedy_mean_length']:.2f} / {m['sampled_mean_length']:.2f} / {m['reference_mean_length']:.2f}"],
        ["eval templates", m["eval_templates"]],
    ]
    if "corpus_first_s" in m:
        rows += [
            ["corpus build, first / cached (s)", f"{m['corpus_first_s']:.1f} / {m['corpus_cached_s']:.2f}"],
            ["train templates, first / cached (s)", f"{m['templates_first_s']:.1f} / {m['templates_cached_s']:.2f}"],
            ["gym.make on the cache (s)", f"{m['env_make_cached_s']:.2f}"],
        ]
    return markdown_table(["template-base" + (" (quick)" if quick else ""), "value"], rows)
