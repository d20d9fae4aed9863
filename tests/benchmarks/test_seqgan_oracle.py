"""The seqgan-oracle suite on a tiny oracle: one shared base, every variant and seed in the table,
the importance weights behave (the learned constraint separates data from samples; the f = 0
control stays uniform), and bad names are caught."""

from dataclasses import replace

import pytest
import torch

from kcrl.models.lstm_generator import LSTMGenerator, MLEArgs
from kcrl.benchmarks import SUITES, get_suite, parts, seqgan_oracle
from kcrl.errors import ShapeError, UnknownNameError
from kcrl.trainer import PRConfig

SEEDS = 3
ITERATIONS = 16


def tiny_config(cache, **changes) -> seqgan_oracle.SeqGANOracleConfig:
    """V=40, T=6: the whole suite (base, 4 variants x 3 seeds) runs in a few seconds."""
    config = seqgan_oracle.SeqGANOracleConfig(
        vocab_size=40, length=6, embed_dim=8, hidden_dim=16, train_samples=400, test_samples=400, eval_samples=400,
        base_mle=MLEArgs(epochs=4, keep_best=False), base_cache=str(cache), seeds=SEEDS,
        trainer=PRConfig(iterations=ITERATIONS, samples=64, data_batch=64, constraint_steps=3, generator_lr=1e-3,
                         constraint_lr=3e-3, lr_decay=False, checkpoint_every=0, ess_warn_fraction=0.0),
        scorer_embed_dim=8, scorer_filter_sizes=(1, 2, 3), scorer_num_filters=(8, 8, 8),
        temperatures=(0.8, 1.0), curve_every=4, curve_samples=200,
    )
    return replace(config, **changes)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("seqgan-cache")
    config = tiny_config(cache)
    task_list = seqgan_oracle.tasks(seed=0, config=config, progress=False)
    results = [seqgan_oracle.run_task(t) for t in task_list]
    return config, task_list, results


def test_suite_is_registered_with_one_task_per_variant_and_seed(tiny):
    assert "seqgan-oracle" in SUITES and get_suite("seqgan-oracle") is seqgan_oracle.run
    _, task_list, _ = tiny
    expected = [("base", 0)] + [(v, s) for v in seqgan_oracle.TRAINED for s in range(SEEDS)]
    assert [(t["variant"], t["seed"]) for t in task_list] == expected


def test_base_is_trained_once_and_shared(tiny):
    config, task_list, results = tiny
    assert len({t["base_path"] for t in task_list}) == 1 and not task_list[0]["base_cached"]
    # every run starts from the same weights: the same start NLL_oracle (same curve samples)
    starts = {round(r["start_nll_oracle"], 9) for r in results}
    assert len(starts) == 1
    # asking again finds the cached file instead of training a second time
    again = seqgan_oracle.tasks(seed=0, config=config, progress=False)
    assert again[0]["base_cached"] and again[0]["base_path"] == task_list[0]["base_path"]
    # another seed (or another base config) is another base
    assert parts.base_key(config, 1) != parts.base_key(config, 0)
    assert parts.base_key(replace(config, base_mle=MLEArgs(epochs=5)), 0) != parts.base_key(config, 0)
    assert isinstance(LSTMGenerator.load(task_list[0]["base_path"]), LSTMGenerator)


def test_trained_variants_beat_the_untrained_generator_and_weights_behave(tiny):
    _, task_list, results = tiny
    base = results[0]
    assert base["oracle_floor"] < base["temperatures"]["T=1"]["nll_oracle"] < base["untrained_nll_oracle"]
    by = {}
    for t, r in zip(task_list[1:], results[1:]):
        by.setdefault(t["variant"], []).append(r)
        assert r["nll_oracle"] < base["untrained_nll_oracle"]
        assert r["iterations"] == ITERATIONS and r["heldout_nll"] > 0 and r["self_nll"] > 0
        points = [c["iteration"] for c in r["curve"] if "nll_oracle" in c]
        assert points == [0, 4, 8, 12, 16]  # the NLL_oracle learning curve, from the shared start
    for r in by["mle"]:
        assert "ess_fraction" not in r  # MLE only: no samples, no weights
    for r in by["constant"]:  # f = 0: every weight 1/K, no gap
        assert r["ess_fraction"] == pytest.approx(1.0) and r["constraint_gap"] == pytest.approx(0.0)
    for r in by["learned"] + by["binary_d"]:
        # the constraint was trained: the weights are no longer uniform and f separates data from samples
        first, last = r["curve"][1], r["curve"][-1]
        assert last["ess_fraction"] < 1.0 - 1e-4
        assert last["constraint_gap"] > first["constraint_gap"] and last["constraint_gap"] > 0
        for key in ("f_gap_train", "f_gap_heldout", "f_oracle_corr"):
            assert abs(r[key]) < float("inf")


def test_aggregate_writes_table_files_and_plots(tiny, tmp_path):
    _, task_list, results = tiny
    summary = seqgan_oracle.aggregate(task_list, results, 0, tmp_path)
    table = summary["table"]
    for v in seqgan_oracle.TRAINED:
        assert f"| {v} (" in table
    assert "shared base (MLE, 4 epochs), T=0.8" in table and "untrained generator" in table
    assert "(p=" in table and "published" in table and "f gap, train / held-out" in table
    metrics = summary["metrics"]
    assert metrics["seeds"] == [0, 1, 2]
    assert {(r["variant"], r["seed"]) for r in metrics["per_run"]} == {(t["variant"], t["seed"]) for t in task_list}
    for v in ("binary_d", "learned", "constant"):
        assert 0.0 <= metrics[f"{v}_nll_oracle_p_vs_mle"] <= 1.0
    for name in ("results.json", "results.md", "nll_oracle.png", "constraint_gap.png"):
        assert (tmp_path / name).stat().st_size > 0
    md = (tmp_path / "results.md").read_text()
    assert "kcrl bench seqgan-oracle" in md and "What the numbers show" in md and "nll_oracle.png" in md
    assert "9.038" not in table and "8.736" not in table  # published numbers only at SeqGAN's sizes


def test_run_end_to_end_with_eq12(tmp_path):
    config = tiny_config(tmp_path / "cache", seeds=1, variants=("base", "mle", "learned"),
                         trainer=replace(tiny_config(tmp_path).trainer, generator_update="eq12", iterations=4))
    summary = seqgan_oracle.run(seed=5, out=tmp_path / "out", config=config, progress=False)
    assert summary["metrics"]["seeds"] == [5]
    assert "| learned (learned, eq12) |" in summary["table"]
    assert (tmp_path / "out" / "results.json").is_file()


def test_unknown_variant_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(UnknownNameError, match=r"unknown seqgan-oracle variant 'learnd'. Did you mean 'learned'\?"):
        tiny_config(tmp_path, variants=("mle", "learnd"))
    with pytest.raises(UnknownNameError, match="binary_d"):
        seqgan_oracle.run_variant("binary-d", 0, tiny_config(tmp_path), tmp_path / "missing.pt")


def test_generator_adapter_is_unconditional():
    model = LSTMGenerator(vocab_size=5, length=3, generator=torch.Generator().manual_seed(0))
    adapter = parts.OracleGenerator(model)
    x, log_p = adapter.sample(4, torch.Generator().manual_seed(1))
    assert torch.allclose(adapter.log_prob(x), log_p)
    with pytest.raises(ShapeError, match="unconditional"):
        adapter.log_prob(x, context=torch.zeros(4, 1))
