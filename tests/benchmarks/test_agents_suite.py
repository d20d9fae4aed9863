"""The agents suite: registration, exact scoring through each library's policy, a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import kcrl  # noqa: F401  (registers the envs)
from kcrl.agents.hyperparams import load_hyperparams
from kcrl.benchmarks import SUITES, agents, get_suite, suite_config
from kcrl.benchmarks.agents import AgentsConfig, TrainingClock, exact_scores, objective_optimum
from kcrl.envs.tabular import TabularWorld
from kcrl.errors import ConfigError, UnknownNameError
from kcrl.posterior import kl_divergence
from kcrl.softrl import all_sequences, prefix_index, sequence_log_probs_from_table, soft_optimal_policy

# V=3, T=3 (27 sequences) and budgets of a few thousand tokens: each run takes about a second
TINY_OVERRIDES = {
    "kcrl": {"n_envs": 64},
    "sb3": {"n_envs": 16, "n_steps": 8, "batch_size": 64, "n_epochs": 2},
    "tianshou": {"n_envs": 16, "collection_step_num_env_steps": 128, "batch_size": 64, "update_step_num_repetitions": 2},
}


def tiny_config(**kwargs) -> AgentsConfig:
    defaults = dict(vocab_size=3, length=3, seeds=2, env_tokens=3072, eval_points=2, overrides=TINY_OVERRIDES)
    return AgentsConfig(**{**defaults, **kwargs})


def test_suite_is_registered_with_the_runner_protocol():
    assert "agents" in SUITES
    assert get_suite("agents") is agents.run
    assert all(callable(getattr(agents, name)) for name in ("tasks", "run_task", "aggregate"))


def test_tasks_are_agent_seed_pairs_with_one_budget():
    task_list = agents.tasks(seed=5, config=tiny_config(seeds=3))
    assert [(t["variant"], t["seed"]) for t in task_list] == [(a, 5 + i) for a in ("kcrl", "sb3", "tianshou") for i in range(3)]
    assert {t["hyperparams"]["n_timesteps"] for t in task_list} == {3072}
    # the full and quick sizes resolve (the shipped files fit every budget) without running anything
    assert {t["hyperparams"]["n_timesteps"] for t in agents.tasks(0)} == {load_hyperparams("kcrl", agents.ENV_ID)["n_timesteps"]}
    assert {t["hyperparams"]["n_timesteps"] for t in agents.tasks(0, quick=True)} == {suite_config("agents", quick=True).env_tokens}


def test_config_errors():
    with pytest.raises(UnknownNameError, match=r"unknown agent 'sb2'\. Did you mean 'sb3'\? Known: kcrl, sb3, tianshou\."):
        agents.tasks(config=tiny_config(agents=("kcrl", "sb2")))
    overrides = {**TINY_OVERRIDES, "sb3": {**TINY_OVERRIDES["sb3"], "n_timesteps": 1024}}
    with pytest.raises(ConfigError) as info:
        agents.tasks(config=tiny_config(env_tokens=None, overrides=overrides))
    budget = load_hyperparams("kcrl", agents.ENV_ID)["n_timesteps"]
    assert str(info.value) == (
        f"every agent must get the same budget of env tokens; the hyperparameters give kcrl {budget}, sb3 1024, "
        f"tianshou {budget}. Set the same n_timesteps in every file, or AgentsConfig.env_tokens."
    )
    task = agents.tasks(config=tiny_config(env_tokens=1000, agents=("sb3",), seeds=1))[0]
    with pytest.raises(ConfigError) as info:
        agents.run_task(task)
    assert str(info.value) == (
        "the sb3 agent consumes 128 tokens per update (n_envs * n_steps); the budget of 1000 tokens is not a multiple "
        "of it. Choose n_timesteps (or AgentsConfig.env_tokens) as a multiple of 128."
    )


# ------------------------------------------------------------------------- exact maths
def test_soft_objective_optimum_is_q():
    world = TabularWorld(3, 3, world_seed=1)
    log_q = world.posterior().log_q
    torch.testing.assert_close(objective_optimum(world, 1.0, soft=True), log_q, atol=1e-5, rtol=0)
    table, _ = soft_optimal_policy(world.base.log_prob_table(), world.constraint.predict(world.sequences()), world.alpha, 3)
    torch.testing.assert_close(sequence_log_probs_from_table(table, world.sequences()), log_q, atol=1e-5, rtol=0)


def test_entropy_bonus_fixed_point_is_stationary_and_not_q():
    """PPO's fixed point, checked against Q values computed by brute force over whole sequences:
    pi*(a|s) = softmax(Q_reward(s, a) / c) with Q_reward(s, a) = E_{pi*}[reward-to-go | s, a]."""
    world, coef = TabularWorld(3, 3, world_seed=2), 0.7
    log_pi = objective_optimum(world, coef, soft=False)  # (27,)
    seqs = all_sequences(3, 3)
    base_step = world.base.log_prob_table()
    step_rewards = torch.stack(
        [base_step[prefix_index(seqs, torch.full((27,), t), 3), seqs[:, t]] for t in range(3)], dim=1)  # (27, 3)
    final = world.alpha * world.constraint.predict(seqs)
    pi = log_pi.exp()
    for t in range(3):
        for prefix in all_sequences(3, t).tolist():
            match = (seqs[:, :t] == torch.tensor(prefix, dtype=torch.long)).all(1) if t else torch.ones(27, dtype=torch.bool)
            q_values = []
            for a in range(3):
                rows = match & (seqs[:, t] == a)
                to_go = step_rewards[rows, t:].sum(1) + final[rows]
                q_values.append((pi[rows] * to_go).sum() / pi[rows].sum())
            q_values = torch.stack(q_values)
            mass = torch.stack([pi[match & (seqs[:, t] == a)].sum() for a in range(3)]) / pi[match].sum()
            torch.testing.assert_close(mass, torch.softmax(q_values / coef, 0), atol=1e-5, rtol=0)
    assert kl_divergence(objective_optimum(world, 1.0, soft=False), world.posterior().log_q).item() > 1e-3


def test_exact_scores_soft_return_is_log_z_minus_kl():
    world = TabularWorld(3, 3, world_seed=0)
    log_pi = torch.log_softmax(torch.randn(27, generator=torch.Generator().manual_seed(0)), 0)
    s = exact_scores(log_pi, world)
    assert s["total_prob"] == pytest.approx(1.0, abs=1e-5)
    assert s["soft_return"] == pytest.approx(s["log_z"] - s["kl"], abs=1e-4)
    assert exact_scores(world.posterior().log_q, world)["kl"] == pytest.approx(0.0, abs=1e-5)


def test_clock_snapshots_at_the_marks():
    world = TabularWorld(3, 3)
    clock = TrainingClock(budget=100, points=4)
    clock.start(world, lambda: world.posterior().log_q)
    for tokens in range(10, 101, 10):
        clock.tick(tokens)
    clock.stop(100)
    assert [c["tokens"] for c in clock.curve] == [0, 30, 50, 80, 100]
    assert clock.seconds >= 0 and clock.tokens == 100


# ------------------------------------------------------------------------- each library's enumeration
def _histogram(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    index = (tokens * vocab ** torch.arange(tokens.shape[1] - 1, -1, -1)).sum(1)
    return torch.bincount(index, minlength=vocab ** tokens.shape[1]).double() / len(tokens)


def _sharpen(linear: torch.nn.Linear, seed: int) -> None:
    """Random action-head weights: a policy far from uniform that depends on the prefix."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        linear.weight.copy_(0.3 * torch.randn(linear.weight.shape, generator=gen))
        linear.bias.copy_(torch.randn(linear.bias.shape, generator=gen))


def test_sb3_enumeration_matches_the_policy_s_own_sampling():
    from stable_baselines3 import PPO

    from kcrl.agents.sb3 import sb3_policy_kwargs
    from kcrl.agents.sb3 import make_sb3_vec_env

    kwargs = dict(vocab_size=3, length=3, world_seed=0)
    venv = make_sb3_vec_env("TabularSequence-v0", 2000, seed=0, **kwargs)
    model = PPO("MultiInputPolicy", venv, seed=0, policy_kwargs=sb3_policy_kwargs({"net_arch": [32]}))
    _sharpen(model.policy.action_net, 0)
    world = TabularWorld(**kwargs)
    exact = agents.sb3_log_probs(model, world).exp().double()
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-5)
    finals = []
    for _ in range(10):
        obs = venv.reset()
        for _ in range(3):
            actions, _ = model.predict(obs, deterministic=False)
            obs, _, dones, infos = venv.step(actions)
        assert dones.all()
        finals.append(torch.as_tensor(np.stack([info["terminal_observation"]["tokens"] for info in infos])))
    empirical = _histogram(torch.cat(finals).long(), 3)
    assert (exact - 1 / 27).abs().max() > 0.05  # far from uniform, so the comparison means something
    assert 0.5 * (empirical - exact).abs().sum().item() < 0.04  # total variation; ~0.015 expected at 20,000 samples


def test_tianshou_enumeration_matches_the_collector_s_sampling():
    pytest.importorskip("tianshou")
    from tianshou.data import Collector, VectorReplayBuffer

    from kcrl.agents.tianshou import make_tianshou_vec_env, train_tianshou_ppo

    kwargs = dict(vocab_size=3, length=3, world_seed=0)
    policy = train_tianshou_ppo(kwargs, 0, n_envs=4, n_timesteps=12, collection_step_num_env_steps=12,
                              batch_size=12, update_step_num_repetitions=1, hidden_sizes=(32,))
    _sharpen([m for m in policy.actor.modules() if isinstance(m, torch.nn.Linear)][-1], 1)
    world = TabularWorld(**kwargs)
    exact = agents.tianshou_log_probs(policy.actor, world).exp().double()
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-5)
    venv = make_tianshou_vec_env("TabularSequence-v0", 500, seed=0, **kwargs)
    collector = Collector(policy, venv, VectorReplayBuffer(500 * 96, 500))  # room for every step: nothing is overwritten
    collector.reset()
    collector.collect(n_episode=5_000)
    buffer = collector.buffer
    stored = buffer.sample_indices(0)  # every filled slot of every sub-buffer
    tokens = torch.as_tensor(buffer.obs_next.tokens[stored[buffer.done[stored]]]).long()
    assert len(tokens) >= 5_000
    empirical = _histogram(tokens, 3)
    assert (exact - 1 / 27).abs().max() > 0.05
    # total variation: ~0.02 expected at 5,000 samples; ~0.4 with the length feature off by one
    assert 0.5 * (empirical - exact).abs().sum().item() < 0.07


# ------------------------------------------------------------------------- end to end
def test_tiny_run_writes_results_with_a_row_per_agent(tmp_path):
    result = agents.run(seed=0, out=tmp_path, config=tiny_config(), progress=False)
    m = result["metrics"]
    for name in ("results.json", "results.md", "kl_curves.png"):
        assert (tmp_path / name).is_file(), name
    table = result["table"]
    for label in ("kcrl SoftPGAgent", "SB3 PPO", "Tianshou PPO", "uniform random policy (reference)"):
        assert f"| {label} |" in table
    for agent in ("kcrl", "sb3", "tianshou"):
        assert m[f"{agent}_tokens"] == [3072]  # the same budget, spent exactly
        assert m[f"{agent}_tokens_per_s_mean"] > 0
        for run in m["per_seed"][agent]:
            assert run["final"]["total_prob"] == pytest.approx(1.0, abs=1e-5)
            assert run["final"]["soft_return"] == pytest.approx(run["final"]["log_z"] - run["final"]["kl"], abs=1e-4)
            assert [c["tokens"] for c in run["curve"]] == [0, 1536, 3072]
            assert run["final"]["kl"] < run["start"]["kl"]  # every library's agent learns something
    # 3072 tokens: kcrl 16 batches of 64 x 3 tokens; each PPO 24 rollouts of 128 x 2 epochs x 2 minibatches
    assert (m["kcrl_gradient_steps"], m["sb3_gradient_steps"], m["tianshou_gradient_steps"]) == (16, 96, 96)
    assert m["sb3_speed_vs_sb3_mean"] == pytest.approx(1.0)
    assert m["kcrl_floor_kl_mean"] == pytest.approx(0.0, abs=1e-5) and m["sb3_floor_kl_mean"] > 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["suite"] == "agents" and record["command"].startswith("OMP_NUM_THREADS=")
    assert set(record["hyperparams"]) == {"kcrl", "sb3", "tianshou"}
    markdown = (tmp_path / "results.md").read_text()
    assert "kcrl bench agents --seed 0" in markdown and "## What it shows" in markdown and "kl_curves.png" in markdown


def test_runs_are_reproducible_whatever_the_global_rng_state():
    """The basis of --jobs / --backend ray giving the in-process table: a run depends on its seed only."""
    for task in agents.tasks(seed=0, config=tiny_config(seeds=1, env_tokens=1536)):
        np.random.seed(1), torch.manual_seed(1)
        first = agents.run_task(task)["curve"]
        np.random.seed(2), torch.manual_seed(2)  # another global RNG state, as in another worker
        assert agents.run_task(task)["curve"] == first, task["variant"]


def test_kcrl_agent_ends_far_below_its_untrained_kl():
    config = AgentsConfig(vocab_size=3, length=3, agents=("kcrl",), seeds=1, env_tokens=64 * 3 * 60, eval_points=1,
                          overrides={"kcrl": {"n_envs": 64}})
    run = agents.run_task(agents.tasks(seed=0, config=config)[0])
    assert run["start"]["kl"] > 1.0
    assert run["final"]["kl"] < 0.2 * run["start"]["kl"]
    assert run["final"]["kl"] < run["uniform"]["kl"]


@pytest.mark.slow
def test_kcrl_agent_with_the_shipped_hyperparameters_gets_close_to_q():
    """The full budget of kcrl.yaml (about 20 s): a stated KL to the exact optimum."""
    run = agents.run_task(agents.tasks(seed=0, config=AgentsConfig(agents=("kcrl",), seeds=1, eval_points=1))[0])
    assert run["final"]["kl"] < 0.05
