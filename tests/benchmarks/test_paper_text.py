"""The paper-text suite on a tiny synthetic corpus: every variant runs, the table is complete, and
the importance weights behave (the rule ranks samples; the f = 0 control is uniform)."""

from dataclasses import replace

import pytest
import torch

from kcrl.models.text_generator import GeneratorConfig, MLEArgs, TemplateGenerator, TrainerAdapter, train_mle
from kcrl.benchmarks import SUITES, get_suite, paper_text
from kcrl.data import CorpusConfig
from kcrl.data.templates import prepare_templates
from kcrl.errors import ShapeError, UnknownNameError

SUBJECTS = ["the film", "this movie", "the plot", "the cast", "my friend", "the ending"]
ADJECTIVES = ["great", "awful", "boring", "funny", "long", "short", "strange", "weak"]
ENDINGS = [".", "!", ", honestly .", "to me .", "at first ."]
LINES = [f"{s} {v} {a} {e}" for s in SUBJECTS for v in ("was", "seemed", "felt") for a in ADJECTIVES for e in ENDINGS]
K = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A briefly MLE-trained tiny generator and a suite config around it (one seed, 30 iterations)."""
    corpus_config = CorpusConfig(valid_size=30, test_size=40)
    vocab, train = prepare_templates(LINES, "train", vocab_size=64, corpus_config=corpus_config)
    torch.manual_seed(0)
    model = TemplateGenerator(vocab, GeneratorConfig(embed_dim=16, hidden_dim=32, dropout=0.0))
    train_mle(model, train, MLEArgs(steps=40, batch_size=32, lr=1e-2), show_progress=False)
    path = tmp_path_factory.mktemp("paper-text") / "generator.pt"
    model.save(path)
    trainer = replace(
        paper_text.PaperTextConfig().trainer, iterations=30, data_batch=16, contexts=16, samples_per_context=K, lam=3.0,
        generator_lr=3e-3, constraint_lr=1e-2,
    )
    config = paper_text.PaperTextConfig(
        checkpoint=str(path), corpus=LINES, vocab_size=64, corpus_config=corpus_config, seeds=1, budget_s=None,
        trainer=trainer, max_length=10, examples=2,
    )
    task_list = paper_text.tasks(seed=0, config=config)
    results = [paper_text.run_task(t) for t in task_list]
    return config, task_list, results


def test_suite_is_registered_with_one_task_per_variant_and_seed(tiny):
    assert "paper-text" in SUITES and get_suite("paper-text") is paper_text.run
    _, task_list, _ = tiny
    assert [t["variant"] for t in task_list] == list(paper_text.VARIANTS)


def test_table_has_every_variant_and_sane_values(tiny, tmp_path):
    config, task_list, results = tiny
    summary = paper_text.aggregate(task_list, results, 0, tmp_path)
    for variant in paper_text.VARIANTS:
        assert f"| {variant} |" in summary["table"]
    for task, r in zip(task_list, results):
        for key in ("greedy_accuracy", "sampled_accuracy"):
            assert 0.0 <= r[key] <= 1.0
        assert r["test_perplexity"] > 1.0
        if task["variant"] in ("binary_d", "mstep", "fixed", "learned", "uniform"):
            ess = r["ess_fraction"] * K
            assert 0.0 < ess <= K + 1e-6
            assert r["iterations"] == 30
    uniform = results[paper_text.VARIANTS.index("uniform")]
    assert uniform["ess_fraction"] == pytest.approx(1.0, abs=0.01)  # f = 0: weights = the small p_theta / sampler ratios
    md = (tmp_path / "results.md").read_text()
    assert "kcrl bench paper-text" in md and "template `" in md


def test_rule_weights_rank_the_samples_and_uniform_control_does_not(tiny):
    # The rule spreads the weights within each template (ESS/K < 1); the f = 0 control keeps them uniform.
    _, task_list, results = tiny
    by = {t["variant"]: r for t, r in zip(task_list, results)}
    assert by["fixed"]["ess_fraction"] < 0.99
    assert by["uniform"]["ess_fraction"] == pytest.approx(1.0, abs=0.01)
    assert by["uniform"]["constraint_gap"] == pytest.approx(0.0)


def test_adapter_needs_one_template_per_sample_and_unknown_variant_is_named():
    vocab, _ = prepare_templates(LINES, "train", vocab_size=64, corpus_config=CorpusConfig(valid_size=30, test_size=40))
    adapter = TrainerAdapter(TemplateGenerator(vocab, GeneratorConfig(embed_dim=8, hidden_dim=8)))
    with pytest.raises(ShapeError, match="one template per sample"):
        adapter.sample(3, context=None)
    with pytest.raises(UnknownNameError, match="learned"):
        paper_text.run_variant("learnd", 0, paper_text.PaperTextConfig())
