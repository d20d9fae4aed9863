"""The one-step env layer: rewards, autoreset modes, batched-vs-single equivalence, action errors."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from kcrl.constraints import Constraint, RuleConstraint
from kcrl.envs.onestep import BatchedOneStepEnv, OneStepEnv, OneStepTask
from kcrl.errors import ConfigError, InvalidActionError, NonFiniteError
from kcrl.rng import counter_uniform, counter_randint


def neg_sq_distance(x, context):
    return -((x - (0.0 if context is None else context)) ** 2).sum(-1)


def matches(x, context):
    return (x == context).float().sum(-1)


class PointTask(OneStepTask):
    """Box samples in [-1, 1]^3, a Box context (a target point); f = -|x - c|^2."""

    def __init__(self, alpha=1.0, constraint=None):
        self.action_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.context_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        super().__init__(constraint or RuleConstraint(neg_sq_distance), alpha)

    def sample_contexts(self, seeds, episodes):
        cols = [counter_uniform(seeds, episodes, stream=k) for k in range(3)]
        return (2 * torch.stack(cols, -1) - 1).float()


class TokensTask(OneStepTask):
    """A whole token sequence at once (MultiDiscrete); f = number of tokens equal to the context's."""

    def __init__(self, alpha=1.0):
        self.action_space = spaces.MultiDiscrete([3, 4, 5])
        self.context_space = spaces.MultiDiscrete([3, 4, 5])
        super().__init__(RuleConstraint(matches), alpha)

    def sample_contexts(self, seeds, episodes):
        return torch.stack([counter_randint(seeds, episodes, n, stream=k) for k, n in enumerate([3, 4, 5])], -1)


class FreeTask(OneStepTask):
    """No context: the observation is the constant 0."""

    def __init__(self):
        self.action_space = spaces.Box(-2.0, 2.0, (2,), np.float32)
        super().__init__(RuleConstraint(neg_sq_distance))


class NaNConstraint(Constraint):
    def forward(self, x, context=None):
        return torch.full((x.shape[0],), float("nan"))


# ---------------------------------------------------------------------- rewards and episodes
def test_reward_is_alpha_times_constraint_and_episode_terminates():
    env = OneStepEnv(PointTask(alpha=2.5))
    obs, info = env.reset(seed=7)
    assert obs.shape == (3,) and obs.dtype == np.float32 and info == {}
    action = np.array([0.5, -0.25, 0.0], dtype=np.float32)
    obs2, reward, terminated, truncated, info = env.step(action)
    f = -float(((action - obs) ** 2).sum())
    assert info["constraint"] == pytest.approx(f, abs=1e-6)
    assert reward == pytest.approx(2.5 * f, abs=1e-5)
    assert info["reward_constraint"] == pytest.approx(reward)
    assert (terminated, truncated) == (True, False)
    np.testing.assert_array_equal(obs2, obs)  # the terminal observation is the context
    with pytest.warns(UserWarning, match="finished episode"):
        obs3, reward, terminated, truncated, info = env.step(action)
    np.testing.assert_array_equal(obs3, obs)
    assert (reward, terminated, truncated, info["reward_constraint"]) == (0.0, True, False, 0.0)
    assert np.isnan(info["constraint"])
    with pytest.raises(InvalidActionError, match="bounds"):  # still validated
        env.step(np.full(3, 5.0, np.float32))


def test_multidiscrete_task_rewards_count_matches():
    env = BatchedOneStepEnv(TokensTask(alpha=1.0), num_envs=4)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 3) and obs.dtype == np.int64
    actions = obs.copy()
    actions[1, 0] = (actions[1, 0] + 1) % 3
    _, reward, terminated, _, info = env.step(actions)
    np.testing.assert_array_equal(reward, [3.0, 2.0, 3.0, 3.0])
    assert terminated.all() and info["_constraint"].all()


def test_context_free_task_observes_zero():
    env = OneStepEnv(FreeTask())
    assert env.observation_space == spaces.Discrete(1)
    obs, _ = env.reset(seed=0)
    assert obs == 0
    venv = BatchedOneStepEnv(FreeTask(), num_envs=3)
    obs, _ = venv.reset(seed=0)
    np.testing.assert_array_equal(obs, [0, 0, 0])
    _, reward, _, _, _ = venv.step(np.array([[0, 0], [1, 0], [1, 1]], dtype=np.float32))
    np.testing.assert_allclose(reward, [0.0, -1.0, -2.0])


def test_contexts_are_deterministic_and_differ_between_episodes():
    env = OneStepEnv(PointTask())
    first = [env.reset(seed=3)[0]] + [None]
    env.step(np.zeros(3, np.float32))
    first[1] = env.reset()[0]
    again = OneStepEnv(PointTask())
    np.testing.assert_array_equal(again.reset(seed=3)[0], first[0])
    again.step(np.zeros(3, np.float32))
    np.testing.assert_array_equal(again.reset()[0], first[1])
    assert not np.array_equal(first[0], first[1])


# ---------------------------------------------------------------------- batched vs single
def test_batched_equals_single_envs_over_episodes():
    n, seed, episodes = 5, 11, 3
    venv = BatchedOneStepEnv(PointTask(alpha=1.5), num_envs=n, autoreset_mode="Disabled")
    singles = [OneStepEnv(PointTask(alpha=1.5)) for _ in range(n)]
    rng = np.random.default_rng(0)
    for episode in range(episodes):
        obs, _ = venv.reset(seed=seed) if episode == 0 else venv.reset()
        single_obs = [env.reset(seed=seed + i)[0] if episode == 0 else env.reset()[0] for i, env in enumerate(singles)]
        np.testing.assert_array_equal(obs, np.stack(single_obs))
        actions = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
        _, reward, terminated, _, info = venv.step(actions)
        for i, env in enumerate(singles):
            _, r, t, _, single_info = env.step(actions[i])
            assert r == pytest.approx(float(reward[i]), abs=1e-6)
            assert t == bool(terminated[i])
            assert single_info["constraint"] == pytest.approx(float(info["constraint"][i]), abs=1e-6)


def test_next_step_autoreset_draws_the_next_episode():
    venv = BatchedOneStepEnv(PointTask(), num_envs=2)  # NEXT_STEP by default
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs0, _ = venv.reset(seed=5)
    zeros = np.zeros((2, 3), np.float32)
    obs1, reward, terminated, truncated, _ = venv.step(zeros)
    np.testing.assert_array_equal(obs1, obs0)
    assert terminated.all() and not truncated.any()
    obs2, reward, terminated, truncated, info = venv.step(np.ones((2, 3), np.float32))  # ignored: resets
    np.testing.assert_array_equal(reward, [0.0, 0.0])
    assert not terminated.any() and not truncated.any() and not info["_constraint"].any()
    reference = BatchedOneStepEnv(PointTask(), num_envs=2, autoreset_mode="Disabled")
    reference.reset(seed=5)
    reference.step(zeros)
    np.testing.assert_array_equal(obs2, reference.reset()[0])  # episode 1 of the same seeds
    _, reward, terminated, _, _ = venv.step(zeros)
    assert terminated.all()
    np.testing.assert_allclose(reward, -(obs2**2).sum(-1), rtol=1e-6)


def test_same_step_autoreset_returns_final_obs():
    venv = BatchedOneStepEnv(PointTask(), num_envs=3, autoreset_mode="SameStep")
    obs0, _ = venv.reset(seed=1)
    obs1, reward, terminated, _, info = venv.step(np.zeros((3, 3), np.float32))
    assert terminated.all() and info["_final_obs"].all()
    np.testing.assert_array_equal(info["final_obs"], obs0)
    assert not np.array_equal(obs1, obs0)
    np.testing.assert_allclose(reward, -(obs0**2).sum(-1), rtol=1e-6)


def test_disabled_autoreset_pays_zero_until_reset_and_reset_mask():
    venv = BatchedOneStepEnv(PointTask(), num_envs=3, autoreset_mode="Disabled")
    obs0, _ = venv.reset(seed=2)
    venv.step(np.zeros((3, 3), np.float32))
    obs, reward, terminated, _, _ = venv.step(np.zeros((3, 3), np.float32))
    np.testing.assert_array_equal(reward, 0.0)
    assert not terminated.any()
    np.testing.assert_array_equal(obs, obs0)
    obs, _ = venv.reset(options={"reset_mask": np.array([True, False, False])})
    np.testing.assert_array_equal(obs[1:], obs0[1:])
    assert not np.array_equal(obs[0], obs0[0])
    _, reward, terminated, _, _ = venv.step(np.zeros((3, 3), np.float32))
    assert terminated.tolist() == [True, False, False] and reward[1] == 0.0


def test_tensor_api_matches_numpy_api():
    a = BatchedOneStepEnv(PointTask(), num_envs=4)
    b = BatchedOneStepEnv(PointTask(), num_envs=4)
    obs_t = a.reset_tensor(seed=9)
    obs_n, _ = b.reset(seed=9)
    assert isinstance(obs_t, torch.Tensor) and obs_t.shape == (4, 3)
    np.testing.assert_array_equal(obs_t.numpy(), obs_n)
    actions = torch.linspace(-1, 1, 12).view(4, 3)
    out = a.step_tensor(actions)
    _, reward, terminated, truncated, info = b.step(actions.numpy())
    np.testing.assert_array_equal(out.reward.numpy(), reward)
    np.testing.assert_array_equal(out.terminated.numpy(), terminated)
    assert reward.dtype == np.float32 and terminated.dtype == bool


def test_set_constraint_swaps_the_reward():
    env = OneStepEnv(PointTask())
    env.reset(seed=0)
    env.set_constraint(RuleConstraint(matches))
    _, reward, *_ = env.step(np.zeros(3, np.float32))
    assert reward == 0.0
    with pytest.raises(ConfigError, match="kcrl.constraints.Constraint"):
        env.set_constraint(lambda x, c: x)


def test_non_finite_constraint_raises():
    env = BatchedOneStepEnv(PointTask(constraint=NaNConstraint()), num_envs=2)
    env.reset(seed=0)
    with pytest.raises(NonFiniteError, match="non-finite"):
        env.step(np.zeros((2, 3), np.float32))


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "actions, message",
    [
        (np.zeros((2, 2), np.float32), r"expected actions of shape \(2, 3\).*got shape \(2, 2\)"),
        (np.full((2, 3), np.nan, np.float32), "NaN or inf"),
        (np.full((2, 3), 1.5, np.float32), r"bounds \[low, high\].*1\.5"),
        (np.zeros((2, 3), bool), "real numbers"),
        (np.array([["a", "b", "c"]] * 2), "real numbers"),
        (torch.zeros(2, 3, dtype=torch.complex64), "real numbers"),
    ],
)
def test_invalid_box_actions(actions, message):
    env = BatchedOneStepEnv(PointTask(), num_envs=2)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=message):
        env.step(actions)


def test_integer_box_actions_are_accepted():
    env = BatchedOneStepEnv(PointTask(), num_envs=2)
    env.reset(seed=0)
    _, _, terminated, _, _ = env.step(np.zeros((2, 3), np.int64))
    assert terminated.all()


@pytest.mark.parametrize(
    "actions, message",
    [
        (np.array([[0, 0, 5]]), r"in \[0, nvec\) with nvec=\[3, 4, 5\]"),
        (np.array([[0, -1, 0]]), "nvec"),
        (np.array([[0.5, 0, 0]]), "non-integral"),
        (np.array([[0, 0]]), r"shape \(1, 3\)"),
        (np.array([["x", "y", "z"]]), "must be integers"),
    ],
)
def test_invalid_multidiscrete_actions(actions, message):
    env = BatchedOneStepEnv(TokensTask(), num_envs=1)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=message):
        env.step(actions)


def test_single_env_errors():
    env = OneStepEnv(PointTask())
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        BatchedOneStepEnv(PointTask(), num_envs=2).step_tensor(torch.zeros(2, 3))
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"one sample of shape \(3,\).*got shape \(1, 3\)"):
        env.step(np.zeros((1, 3), np.float32))
    with pytest.raises(InvalidActionError, match="NaN"):
        env.step(np.array([0.0, np.inf, 0.0]))


def test_configuration_errors():
    with pytest.raises(ConfigError, match="num_envs"):
        BatchedOneStepEnv(PointTask(), num_envs=0)
    with pytest.raises(ConfigError, match="autoreset_mode"):
        BatchedOneStepEnv(PointTask(), autoreset_mode="sometimes")

    class NoSpace(OneStepTask):
        def __init__(self):
            self.action_space = spaces.Discrete(3)
            super().__init__(RuleConstraint(matches))

    with pytest.raises(ConfigError, match="Box or MultiDiscrete"):
        NoSpace()


def test_checkers_and_pickle():
    for task in (PointTask(), TokensTask(), FreeTask()):
        env = OneStepEnv(task)
        check_env(env, skip_render_check=True)
        clone = pickle.loads(pickle.dumps(env))
        np.testing.assert_array_equal(np.asarray(clone.reset(seed=4)[0]), np.asarray(env.reset(seed=4)[0]))
