"""TemplateSentence-v0: spaces, rewards, the rule/learned constraints, base models, determinism."""

import pickle
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import kcrl  # noqa: F401  (registers the environments)
from kcrl.models.text_generator import GeneratorConfig, MLEArgs, TemplateGenerator, train_mle
from kcrl.constraints import NeuralConstraint, RuleConstraint, SumConstraint
from kcrl.data import CorpusConfig, Vocabulary, VocabularyMismatchError
from kcrl.data.templates import TemplateRule
from kcrl.data.vocab import BOS_ID, EOS_ID, MASK_ID, PAD_ID
from kcrl.envs.template import TemplateConstraintNet, TemplateWorld, make_template_constraint
from kcrl.errors import ConfigError
from kcrl.metrics import template_accuracy

SUBJECTS = ["the film", "this movie", "the plot", "the cast", "my friend", "the ending", "the music", "her sister"]
VERBS = ["was", "seemed", "looked", "felt"]
ADJECTIVES = ["great", "awful", "boring", "funny", "long", "short", "strange", "wonderful", "weak"]
ENDINGS = [".", "!", ", honestly .", "to me .", "at first ."]
LINES = [f"{s} {v} {a} {e}" for s in SUBJECTS for v in VERBS for a in ADJECTIVES for e in ENDINGS]  # 1,440
SMALL = dict(corpus=LINES, vocab_size=64, corpus_config=CorpusConfig(valid_size=40, test_size=40))


def small_env(**kwargs):
    return gym.make("TemplateSentence-v0", **{**SMALL, **kwargs})


def reference_for(world: TemplateWorld, context) -> list[int]:
    """A true infill of the template ``context`` (some corpus sentence it was cut from)."""
    context = torch.as_tensor(np.asarray(context))
    row = (world.templates == context).all(-1).nonzero()[0, 0]
    n = int(world.template_set.lengths[row])
    return world.template_set.sentences[row, :n].tolist()


def test_spaces_and_a_true_infill_scores_the_maximum():
    env = small_env(alpha=2.0)
    world = env.unwrapped.task
    assert env.action_space == gym.spaces.Discrete(len(world.vocab)) and len(world.vocab) == 5 + 33  # 33 words < 64
    assert env.observation_space["context"].shape == (15,) and env.observation_space["tokens"].shape == (20,)
    assert env.spec.max_episode_steps == 20
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs["length"] == 0 and (obs["tokens"] == PAD_ID).all()
    assert (obs["context"] == MASK_ID).any()
    total = 0.0
    for token in reference_for(world, obs["context"]) + [EOS_ID]:
        obs, reward, terminated, truncated, info = env.step(token)
        total += reward
    assert terminated and not truncated
    assert info["constraint"] == 2.0 and info["reward_constraint"] == 4.0
    assert world.decode(obs["tokens"]) in LINES
    with pytest.raises(gym.error.ResetNeeded):
        env.unwrapped.step(5)


def test_a_sentence_that_breaks_the_template_scores_less():
    env = small_env()
    obs, _ = env.reset(seed=1)
    world = env.unwrapped.task
    reference = reference_for(world, obs["context"])
    for token in reference[:1] + [BOS_ID] + reference[1:] + [EOS_ID]:  # a stray <bos>: one insertion
        obs, reward, terminated, truncated, info = env.step(token)
    assert terminated and 0.0 < info["constraint"] < 1.0
    expected = TemplateRule().predict(torch.as_tensor(obs["tokens"])[None], torch.as_tensor(obs["context"])[None])
    assert info["constraint"] == pytest.approx(expected.item())


def test_max_length_truncates():
    env = small_env(max_length=6, max_episode_steps=6)
    env.reset(seed=0)
    for step in range(6):
        _, _, terminated, truncated, info = env.step(10)
        assert not terminated
    assert truncated and "constraint" in info
    vec = gym.make_vec("TemplateSentence-v0", num_envs=2, vectorization_mode="vector_entry_point", max_length=30, **SMALL)
    assert vec.single_observation_space["tokens"].shape == (20,)  # capped by the registered max_episode_steps


def test_decoder_cache_matches_recomputing_every_prefix():
    vec = gym.make_vec("TemplateSentence-v0", num_envs=6, vectorization_mode="vector_entry_point", **SMALL)
    world = vec.task
    vec.reset_tensor(seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(45):
        before = vec.obs_tensor()
        active = ~vec.done.clone()
        actions = torch.where(torch.rand(6, generator=gen) < 0.2, EOS_ID, torch.randint(5, world.vocab_size, (6,), generator=gen))
        out = vec.step_tensor(actions)
        expected = world.base.step_log_probs(before["tokens"], before["length"], before["context"])[torch.arange(6), actions]
        torch.testing.assert_close(out.info["reward_base"][active], expected[active], rtol=1e-5, atol=1e-5)


def test_batched_and_single_envs_draw_the_same_templates():
    vec = gym.make_vec("TemplateSentence-v0", num_envs=4, vectorization_mode="vector_entry_point", **SMALL)
    obs, _ = vec.reset(seed=7)
    for i in range(4):
        single, _ = small_env().reset(seed=7 + i)
        np.testing.assert_array_equal(single["context"], obs["context"][i])
    assert len({tuple(c) for c in obs["context"]}) > 1


def test_checkers_pickle_and_render():
    env = small_env(render_mode="ansi")
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(small_env(), warn=False)
    env.reset(seed=2)
    env.step(7)
    clone = pickle.loads(pickle.dumps(env))
    for action in [8, 9, EOS_ID]:
        a, b = env.step(action), clone.step(action)
        assert a[1] == pytest.approx(b[1]) and a[2:4] == b[2:4]
        np.testing.assert_array_equal(a[0]["tokens"], b[0]["tokens"])
    text = env.render()
    assert text.startswith("template: ") and "<mask>" in text and "sentence: " in text


def test_constraint_choices():
    world = small_env(constraint="learned").unwrapped.task
    assert isinstance(world.constraint, SumConstraint) and world.constraint.learnable
    part = world.template_set.subset(slice(0, 8))
    x, t = part.targets(20), part.templates
    torch.testing.assert_close(world.constraint.predict(x, t), TemplateRule().predict(x, t))  # residual starts at 0
    net = world.constraint.terms[1]
    assert isinstance(net, NeuralConstraint) and isinstance(net.network, TemplateConstraintNet)
    with torch.no_grad():
        net.network.head[-1].bias.fill_(0.25)
    torch.testing.assert_close(world.constraint.predict(x, t), TemplateRule().predict(x, t) + 0.25)
    neural = make_template_constraint("neural", len(world.vocab))
    assert torch.equal(neural.predict(x, t), torch.zeros(8))
    neural(x, t).sum().backward()  # trainable end to end (Eq. 8 needs grad f)
    assert all(p.grad is not None for p in neural.parameters() if p.requires_grad)
    custom = RuleConstraint(lambda x, c: torch.ones(x.shape[0]), name="one")
    assert small_env(constraint=custom).unwrapped.task.constraint is custom
    with pytest.raises(ConfigError, match="constraint must be one of"):
        small_env(constraint="rules")


def test_content_masking_and_other_splits():
    world = small_env(masking="content", split="test").unwrapped.task
    assert len(world.template_set) == 40 and world.masking.strategy == "content"
    with pytest.raises(ConfigError, match="masking strategy must be one of"):
        small_env(masking="random")
    with pytest.raises(ConfigError, match="max_length must be"):
        small_env(max_length=1)


def test_base_generator_from_checkpoint_and_vocabulary_mismatch(tmp_path):
    world = small_env().unwrapped.task
    model = TemplateGenerator(world.vocab, GeneratorConfig(embed_dim=16, hidden_dim=16))
    model.save(tmp_path / "g.pt")
    loaded = small_env(base=str(tmp_path / "g.pt")).unwrapped.task.base
    torch.testing.assert_close(loaded.embed.weight, model.embed.weight)
    other = TemplateGenerator(Vocabulary(["x", "y"]), GeneratorConfig(embed_dim=8, hidden_dim=8))
    other.save(tmp_path / "other.pt")
    with pytest.raises(VocabularyMismatchError, match="vocabulary mismatch with checkpoint"):
        small_env(base=tmp_path / "other.pt")
    with pytest.raises(VocabularyMismatchError):
        small_env(base=other)
    with pytest.raises(ConfigError, match="base must be None"):
        small_env(base=42)


def test_default_imdb_env_constructs_quickly_once_cached():
    gym.make("TemplateSentence-v0").close()  # builds the cache on first use
    start = time.perf_counter()
    env = gym.make("TemplateSentence-v0")
    assert time.perf_counter() - start < 2.0
    world = env.unwrapped.task
    assert len(world.vocab) == 5000 and len(world.template_set) > 90_000
    obs, _ = env.reset(seed=0)
    assert (obs["context"] == MASK_ID).any()


def test_user_corpus_end_to_end(tmp_path, monkeypatch):
    """A user's text file -> env -> a briefly trained base generator -> template accuracy."""
    monkeypatch.setenv("KCRL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "my_corpus.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    config = CorpusConfig(valid_size=100, test_size=100)
    env = gym.make("TemplateSentence-v0", corpus=str(path), vocab_size=64, corpus_config=config)
    world = env.unwrapped.task
    torch.manual_seed(0)
    model = TemplateGenerator(world.vocab, GeneratorConfig(embed_dim=32, hidden_dim=64))
    history = train_mle(model, world.template_set, MLEArgs(steps=300, batch_size=32, lr=1e-2, seed=0), show_progress=False, log_every=10)
    assert history[-1]["loss"] < 0.3 * history[0]["loss"]
    model.save(tmp_path / "base.pt")

    test_env = gym.make("TemplateSentence-v0", corpus=str(path), vocab_size=64, corpus_config=config, split="test", base=tmp_path / "base.pt")
    test = test_env.unwrapped.task.template_set
    samples = test_env.unwrapped.task.base.sample(test.templates, generator=torch.Generator().manual_seed(0))
    greedy = test_env.unwrapped.task.base.greedy(test.templates)
    assert template_accuracy(greedy.tokens, test.templates) > 0.9
    assert template_accuracy(samples.tokens, test.templates) > 0.6
