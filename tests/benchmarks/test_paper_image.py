"""The paper-image suite at a tiny size: the adapter's density is the Bernoulli likelihood, every
variant runs from the same base generator, and the table is complete and in range."""

import json
import math

import pytest
import torch

from kcrl.models.image_generator import ConditionalImageGenerator, ImageGeneratorArgs
from kcrl.benchmarks import SUITES, get_suite, paper_image
from kcrl.errors import ShapeError, UnknownNameError
from kcrl.trainer import PRConfig


def test_adapter_log_prob_is_the_bernoulli_log_likelihood_by_hand():
    generator = ConditionalImageGenerator.from_args(ImageGeneratorArgs(channels=4, seed=1))
    adapter = paper_image.ImageTrainerAdapter(generator)
    context = torch.rand(2, 2, 28, 28, generator=torch.Generator().manual_seed(0))
    x = (torch.rand(2, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    with torch.no_grad():
        probs = torch.sigmoid(generator(context)).double()
    by_hand = [
        sum(math.log(p) if v == 1.0 else math.log(1.0 - p) for p, v in zip(probs[i].flatten().tolist(), x[i].flatten().tolist()))
        for i in range(2)
    ]
    log_p = adapter.log_prob(x, context)
    assert log_p.shape == (2,) and log_p.requires_grad
    assert log_p.tolist() == pytest.approx(by_hand, rel=1e-5)
    # samples are binary and come with their own log-likelihood
    samples, log_q = adapter.sample(2, torch.Generator().manual_seed(2), context)
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(log_q, adapter.log_prob(samples, context))
    with pytest.raises(ShapeError, match="one image per context"):
        adapter.sample(3, None, context)


@pytest.fixture(scope="module")
def tiny():
    config = paper_image.PaperImageConfig(
        base=ImageGeneratorArgs(channels=4, epochs=1, pairs_per_epoch=64, batch=32),
        seeds=2,
        train_pairs=64,
        test_pairs=12,
        trainer=PRConfig(iterations=3, data_batch=8, contexts=2, samples_per_context=4, generator_lr=1e-3,
                         constraint_lr=1e-3, lr_decay=False, checkpoint_every=0, ess_warn_fraction=0.0),
    )
    task_list = paper_image.tasks(seed=0, config=config)
    return task_list, [paper_image.run_task(t) for t in task_list]


def test_registered_and_one_task_per_variant_and_seed_from_one_base(tiny):
    assert "paper-image" in SUITES and get_suite("paper-image") is paper_image.run
    task_list, _ = tiny
    assert [(t["variant"], t["seed"]) for t in task_list] == [(v, s) for v in paper_image.VARIANTS for s in (0, 1)]
    assert all(t["base_state"] is task_list[0]["base_state"] for t in task_list)


def test_table_has_every_variant_and_values_in_range(tiny, tmp_path):
    task_list, results = tiny
    summary = paper_image.aggregate(task_list, results, 0, tmp_path)
    for variant in paper_image.VARIANTS:
        assert f"| {variant} |" in summary["table"]
    for task, r in zip(task_list, results):
        assert -1.0 <= r["ssim"] <= 1.0 and -1.0 <= r["ssim_sample"] <= 1.0
        assert r["constraint"] <= 0.0  # a log-likelihood of the silhouette
        assert r["iterations"] == 3
        if task["variant"] != "base":
            assert 0.0 < r["ess_fraction"] <= 1.0 + 1e-6
        else:
            assert "ess_fraction" not in r  # MLE only: no samples drawn
    m = summary["metrics"]
    assert 0.0 <= m["fixed_ssim_p_vs_base"] <= 1.0 and 0.0 <= m["learned_ssim_p_vs_base"] <= 1.0
    uniform = [r for t, r in zip(task_list, results) if t["variant"] == "uniform"]
    assert all(r["ess_fraction"] == pytest.approx(1.0) and r["constraint_gap"] == pytest.approx(0.0) for r in uniform)
    fixed = [r for t, r in zip(task_list, results) if t["variant"] == "fixed"]
    assert all(r["ess_fraction"] < 0.999 for r in fixed)  # the estimator ranks the samples within a context
    text = (tmp_path / "results.md").read_text()
    assert "kcrl bench paper-image" in text
    for name in ("samples.png", "ess.png", "constraint_gap.png"):  # the image grid and the training curves
        assert (tmp_path / name).stat().st_size > 1000 and f"({name})" in text
    assert all(r["grid"].shape == (paper_image.GRID_PAIRS, 28, 28) for r in results)
    assert [c["iteration"] for c in results[-1]["curve"]] == [1, 2, 3]  # 3 iterations: every one is a point
    saved = json.loads((tmp_path / "results.json").read_text())["metrics"]["per_run"]
    assert "grid" not in saved[0] and "ess_fraction" in saved[-1]["curve"][0]


def test_unknown_variant_is_named(tiny):
    task_list, _ = tiny
    with pytest.raises(UnknownNameError, match="variant"):
        paper_image.run_variant("nope", 0, task_list[0]["config"], task_list[0]["base_state"])
