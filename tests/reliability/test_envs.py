"""Envs after errors, reset seeds and constructor arguments."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import kcrl  # noqa: F401  (registers the envs)
from kcrl.constraints import RuleConstraint
from kcrl.errors import ConfigError, NonFiniteError

NAN = RuleConstraint(lambda x, c: torch.full((x.shape[0],), float("nan")))


def _single(env_id="TabularSequence-v0", **kwargs):
    return gym.make(env_id, **kwargs).unwrapped


def _batched(env_id="TabularSequence-v0", n=2, **kwargs):
    return gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **kwargs)


def test_a_non_finite_constraint_leaves_the_env_as_it_was():
    env = _single(length=4)
    env.reset(seed=0)
    env.set_constraint(NAN)
    for token in (0, 1, 2):
        env.step(token)
    before = (env._batched.tokens.clone(), env._batched.lengths.clone(), env._batched.done.clone())
    for _ in range(3):  # the last token's reward is NaN: refused, again and again
        with pytest.raises(NonFiniteError):
            env.step(3)
        assert torch.equal(env._batched.tokens, before[0]) and torch.equal(env._batched.lengths, before[1])
        assert torch.equal(env._batched.done, before[2])
        obs = {"tokens": env._batched.tokens[0].numpy(), "length": int(env._batched.lengths[0])}
        assert env.observation_space.contains(obs) and obs["length"] == 3
    env.set_constraint(env.task.true_constraint)  # the cause fixed: the episode ends normally
    _, _, terminated, _, _ = env.step(3)
    assert terminated


def test_batched_env_after_a_non_finite_constraint():
    env = _batched(n=3, length=2).unwrapped
    env.reset(seed=0)
    env.set_constraint(NAN)
    env.step(np.zeros(3, dtype=np.int64))
    lengths = env.lengths.clone()
    with pytest.raises(NonFiniteError):
        env.step(np.zeros(3, dtype=np.int64))
    assert torch.equal(env.lengths, lengths) and int(env.lengths.max()) <= 2


SEEDS_REFUSED = [1.5, -1, 2**64, True, "3", np.float64(2.0)]
SEEDS_TAKEN = [0, 7, np.int64(7), 2**63, 2**64 - 1]


@pytest.mark.parametrize("env_id", ["TabularSequence-v0", "GaussianRing-v0"])
def test_single_and_batched_envs_take_the_same_seeds(env_id):
    single, batched = gym.make(env_id), _batched(env_id)
    for seed in SEEDS_REFUSED:
        for env in (single, batched):
            with pytest.raises(ConfigError, match=r"reset seed must be an integer in \[0, 2\*\*64\) or None"):
                env.reset(seed=seed)
    for seed in SEEDS_TAKEN:
        single.reset(seed=seed)
        batched.reset(seed=seed)


def test_a_huge_seed_gives_the_same_contexts_single_and_batched():
    """Sub-env i of a batched env seeded s equals a single env seeded s + i, also past 2**63."""
    seed = 2**64 - 2
    env = _batched(n=2)
    env.reset(seed=seed)
    single = gym.make("TabularSequence-v0").unwrapped
    single.reset(seed=seed + 1)
    assert int(env.unwrapped.seeds[1]) % 2**64 == int(single._batched.seeds[0]) % 2**64 == seed + 1


@pytest.mark.parametrize("env_id, kwargs, text", [
    ("GaussianRing-v0", {"radius": float("inf")}, "GaussianRing-v0 argument 'radius' must be a finite number > 0; got inf."),
    ("GaussianRing-v0", {"std": float("nan")}, "GaussianRing-v0 argument 'std' must be a finite number > 0; got nan."),
    ("GaussianRing-v0", {"bound": float("inf")}, "GaussianRing-v0 argument 'bound' must be a finite number > 0; got inf."),
    ("TabularSequence-v0", {"constraint_scale": float("nan")},
     "TabularSequence-v0 argument 'constraint_scale' must be a finite number >= 0; got nan."),
    ("TabularSequence-v0", {"constraint_scale": float("inf")}, "must be a finite number >= 0; got inf."),
    ("TabularSequence-v0", {"alpha": float("nan")}, "alpha must be a positive finite number"),
    ("TabularSequence-v0", {"lenght": 3}, "TabularSequence-v0 got an unknown argument 'lenght'. Did you mean 'length'?"),
    ("TabularSequence-v0", {"vocab_size": "4"}, "TabularSequence-v0 argument 'vocab_size' must be int; got '4' (str)."),
    ("TabularSequence-v0", {"length": 2.0}, "TabularSequence-v0 argument 'length' must be int; got 2.0 (float)."),
    ("OracleSequence-v0", {"hiden_dim": 8}, "OracleSequence-v0 got an unknown argument 'hiden_dim'. Did you mean 'hidden_dim'?"),
    ("OracleSequence-v0", {"length": -1}, "OracleSequence-v0 argument 'length' must be an integer >= 1; got -1."),
    ("StructuredDigits-v0", {"threshold": 1.5}, "StructuredDigits-v0 argument 'threshold' must be a finite number > 0 and < 1"),
    ("StructuredDigits-v0", {"colour": 1}, "StructuredDigits-v0 got an unknown argument 'colour'."),
])
def test_env_kwargs_are_checked_at_make(env_id, kwargs, text):
    with pytest.raises(ConfigError) as info:
        gym.make(env_id, **kwargs)
    assert text in str(info.value)


def test_vector_entry_points_check_their_kwargs_too():
    with pytest.raises(ConfigError, match="TabularSequence-v0 argument 'num_envs' must be an integer >= 1; got 0."):
        _batched(n=0)
    with pytest.raises(ConfigError, match="GaussianRing-v0 argument 'radius' must be a finite number > 0; got inf."):
        _batched("GaussianRing-v0", radius=float("inf"))
    with pytest.raises(ConfigError, match="unknown argument 'colour'"):
        _batched(colour=1)
