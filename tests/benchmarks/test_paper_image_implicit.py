"""The paper-image suite with ``generator: implicit`` at a tiny size: a GAN(+reconstruction) base, the same four
variants, SSIM of G(z, c) with fixed noise, no density-based numbers, and the config's checks."""

import pytest

from kcrl.models.implicit_image_generator import ImplicitImageGeneratorArgs
from kcrl.benchmarks import paper_image, suite_config
from kcrl.errors import ConfigError
from kcrl.trainer import PRConfig


@pytest.fixture(scope="module")
def tiny():
    config = paper_image.PaperImageConfig(
        generator="implicit",
        implicit=ImplicitImageGeneratorArgs(channels=4, noise_dim=3, disc_channels=4, epochs=1, pairs_per_epoch=64, batch=32),
        eval_noise_draws=2,
        seeds=2,
        train_pairs=64,
        test_pairs=12,
        trainer=PRConfig(iterations=3, data_batch=8, contexts=2, samples_per_context=4, generator_lr=1e-3,
                         constraint_lr=1e-3, lr_decay=False, checkpoint_every=0, ess_warn_fraction=0.0),
    )
    task_list = paper_image.tasks(seed=0, config=config)
    return task_list, [paper_image.run_task(t) for t in task_list]


def test_every_variant_runs_from_one_gan_base(tiny):
    task_list, results = tiny
    assert [(t["variant"], t["seed"]) for t in task_list] == [(v, s) for v in paper_image.VARIANTS for s in (0, 1)]
    assert set(task_list[0]["base_state"]) == {"generator", "discriminator"}
    for task, r in zip(task_list, results):
        assert -1.0 <= r["ssim"] <= 1.0 and -1.0 <= r["ssim_z_mean"] <= 1.0
        assert r["z_spread"] >= 0.0 and 0.0 <= r["test_l1"] <= 1.0 and r["constraint"] <= 0.0
        assert r["iterations"] == 3 and {"d_loss", "g_adversarial", "reconstruction"} <= set(r)
        assert "kl_to_base" not in r and "test_nll" not in r and "nll_data" not in r
        assert ("ess_fraction" in r) == (task["variant"] != "base")


def test_table_names_the_implicit_columns(tiny, tmp_path):
    task_list, results = tiny
    summary = paper_image.aggregate(task_list, results, 0, tmp_path)
    table = summary["table"]
    assert "start (GAN base, not continued)" in table and "test SSIM, sample G(z, c), fixed z" in table
    assert "implicit G(z, c), 4 channels" in table and "Eq. 12 reparameterised" in table
    for variant in paper_image.VARIANTS:
        assert f"| {variant} |" in table
    assert 0.0 <= summary["metrics"]["learned_ssim_p_vs_base"] <= 1.0
    assert "no KL to the base (no density)" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "samples.png").exists() and (tmp_path / "ess.png").exists()


def test_generator_option_loads_from_yaml_and_is_checked_in_full(tmp_path):
    path = tmp_path / "implicit.yaml"
    path.write_text("generator: implicit\nimplicit:\n  reconstruction: l1\n")
    config = suite_config("paper-image", quick=True, path=path)
    assert config.generator == "implicit" and config.implicit.reconstruction == "l1" and config.implicit.channels == 16
    assert suite_config("paper-image").generator == "explicit"  # the default keeps every existing result valid
    with pytest.raises(ConfigError) as err:
        paper_image.PaperImageConfig(generator="implict")
    assert str(err.value) == "generator must be 'explicit' or 'implicit'; got 'implict'."
    with pytest.raises(ConfigError) as err:
        paper_image.PaperImageConfig(generator="implicit", trainer=PRConfig(generator_update="eq12"))
    assert str(err.value) == (
        "generator: implicit has no density, so trainer.generator_update 'eq12' (the score function) cannot apply; "
        "its PR term is always Eq. 12 reparameterised: set eq12_reparam or leave the default."
    )
    with pytest.raises(ConfigError) as err:
        paper_image.PaperImageConfig(trainer=PRConfig(generator_update="eq12_reparam"))
    assert str(err.value) == (
        "generator: explicit draws binary Bernoulli images, which are not differentiable, so "
        "trainer.generator_update 'eq12_reparam' cannot apply; use eq10 or eq12, or generator: implicit."
    )
