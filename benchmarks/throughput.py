"""``kcrl bench throughput``: how much the batched tensor env and kcrl's own agent buy.

Two measurements, in one process, one torch thread (``OMP_NUM_THREADS``, recorded):

(a) **Environment steps/s** with uniform-random actions, at each N in ``env_sizes``:
    kcrl's :class:`~kcrl.envs.generation.BatchedGenerationEnv` through its tensor API
    (``step_tensor``, what kcrl's agents call) and through its numpy Gymnasium API (``step``),
    against Gymnasium's ``SyncVectorEnv`` of N single envs
    (``gymnasium.make_vec(ID, num_envs=N, vectorization_mode="sync")``). All three use the
    default NEXT_STEP autoreset, so the same number of (reset) steps is counted.
(b) **Agent tokens/s end to end** (collect + update): kcrl's :class:`~kcrl.agents.soft_pg.SoftPGAgent`
    against Stable-Baselines3 PPO with the *same policy network* (token + position embeddings of
    size 16, flattened, then a 128-128 tanh MLP: identical parameter counts, recorded), under
    several SB3 settings: SB3's default PPO update schedule (10 epochs of minibatches of 64) and a
    lean one (one epoch, one full-rollout batch: the same one gradient pass per token as soft-PG),
    on kcrl's batched env through :class:`~kcrl.agents.sb3.SB3VecEnv` or on SB3's ``DummyVecEnv``
    of single envs. One token = one env step.

Targets (2-core CPU, one thread): batched tensor env >= 100x SyncVectorEnv at N=1024; soft-PG
>= 20x SB3 PPO with its default schedule. Every rate is the median of ``repeats`` timed runs.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from kcrl.benchmarks import suite_config
from kcrl.benchmarks.report import markdown_table, write_results
from kcrl.progress import progress as progress_bar

ENV_TARGET, AGENT_TARGET = 100.0, 20.0


@dataclass
class SB3Setting:
    """One Stable-Baselines3 PPO configuration to time."""

    name: str
    """label in the table"""
    vec_env: str = "adapter"
    """``"adapter"`` (kcrl's SB3VecEnv over the batched env) or ``"dummy"`` (SB3 DummyVecEnv of single envs)"""
    n_envs: int = 64
    """parallel envs"""
    n_steps: int = 32
    """steps per env per rollout"""
    batch_size: int = 64
    """PPO minibatch size"""
    n_epochs: int = 10
    """PPO epochs per rollout"""
    first_task_only: bool = False
    """time it on the first of ``agent_tasks`` only (for the slow DummyVecEnv baselines)"""


def _default_sb3_settings() -> list[SB3Setting]:
    return [
        SB3Setting("SB3 PPO default schedule (10 epochs x minibatch 64), SB3VecEnv, 64 envs"),
        SB3Setting("SB3 PPO default schedule, DummyVecEnv of 64 single envs", vec_env="dummy", first_task_only=True),
        SB3Setting("SB3 PPO lean (1 epoch, batch = rollout 2048), SB3VecEnv, 64 envs", batch_size=2048, n_epochs=1),
        SB3Setting(
            "SB3 PPO lean, DummyVecEnv of 64 single envs", vec_env="dummy", batch_size=2048, n_epochs=1, first_task_only=True
        ),
        SB3Setting(
            "SB3 PPO lean (batch = rollout 4096), SB3VecEnv, 1024 envs", n_envs=1024, n_steps=4, batch_size=4096, n_epochs=1
        ),
    ]


@dataclass
class ThroughputConfig:
    """Configuration of the throughput suite (the defaults are the full size; sizes in
    ``benchmarks/suites/throughput.yaml``)."""

    env_id: str = "TabularSequence-v0"
    """environment of every measurement"""
    env_sizes: tuple[int, ...] = (64, 1024)
    """N for the env steps/s comparison"""
    env_seconds: float = 1.0
    """least wall time of one timed env run"""
    repeats: int = 3
    """timed runs per rate (the median is reported)"""
    agent_tasks: tuple[tuple[int, int], ...] = ((4, 4), (16, 5))
    """(vocab_size, length) of the agent comparison"""
    agent_num_envs: int = 1024
    """soft-PG episodes per update"""
    agent_iterations: int = 15
    """soft-PG updates per timed run"""
    embed_dim: int = 16
    """embedding size of both agents' policies"""
    hidden: int = 128
    """hidden width (two tanh layers) of both agents' policies"""
    sb3_tokens: int = 4096
    """least env steps per timed SB3 run"""
    sb3: list[SB3Setting] = field(default_factory=_default_sb3_settings)
    """the SB3 PPO settings timed against soft-PG"""
    device: str = "cpu"
    """torch device of kcrl's env and agent"""


def _rate(step: Callable[[], int], seconds: float, repeats: int, warmup: int = 2) -> float:
    """Median over ``repeats`` runs of (units returned by ``step``) per second; each run lasts
    at least ``seconds`` and 3 calls."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        units, calls, start = 0, 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < seconds:
            units += step()
            calls += 1
        rates.append(units / (time.perf_counter() - start))
    return statistics.median(rates)


# ---------------------------------------------------------------------------------- (a) env
def env_rates(config: ThroughputConfig, n: int, seed: int) -> dict[str, float]:
    """Random-action steps/s of the three env forms at N = n."""
    batched = gym.make_vec(config.env_id, num_envs=n, vectorization_mode="vector_entry_point", device=config.device)
    batched.reset(seed=seed)
    gen = torch.Generator(batched.device).manual_seed(seed)
    vocab = batched.single_action_space.n

    def tensor_step() -> int:
        batched.step_tensor(torch.randint(0, vocab, (n,), generator=gen, device=batched.device))
        return n

    rng = np.random.default_rng(seed)

    def numpy_step() -> int:
        batched.step(rng.integers(0, vocab, n))
        return n

    sync = gym.make_vec(config.env_id, num_envs=n, vectorization_mode="sync")
    sync.reset(seed=seed)

    def sync_step() -> int:
        sync.step(rng.integers(0, vocab, n))
        return n

    out = {
        "tensor": _rate(tensor_step, config.env_seconds, config.repeats),
        "numpy": _rate(numpy_step, config.env_seconds, config.repeats),
        "sync": _rate(sync_step, config.env_seconds, config.repeats, warmup=1),
    }
    sync.close()
    return out


# ---------------------------------------------------------------------------------- (b) agents
def kcrl_agent_rate(config: ThroughputConfig, vocab: int, length: int, seed: int) -> tuple[float, int]:
    """Soft-PG tokens/s (rollout + update) and its policy's parameter count."""
    from kcrl.agents.soft_pg import SoftPGAgent, SoftPGArgs

    env = gym.make_vec(
        config.env_id, num_envs=config.agent_num_envs, vectorization_mode="vector_entry_point",
        autoreset_mode="Disabled", device=config.device, vocab_size=vocab, length=length,
    )
    args = SoftPGArgs(iterations=10**6, embed_dim=config.embed_dim, hidden=config.hidden, seed=seed)
    agent = SoftPGAgent(env, args)

    def iterations() -> int:
        tokens = 0
        for _ in range(config.agent_iterations):
            rollout = agent.rollout()
            agent.update(rollout)
            tokens += int(rollout.mask.sum().item())
        return tokens

    rate = _rate(iterations, 0.0, config.repeats, warmup=1)
    return rate, sum(p.numel() for p in agent.policy.parameters())


def _sb3_policy_params(model) -> int:
    """Parameters of the SB3 policy head: features extractor, policy MLP, action layer (no critic)."""
    return sum(
        p.numel() for name, p in model.policy.named_parameters()
        if not name.startswith(("mlp_extractor.value_net", "value_net"))
    )


def sb3_rate(config: ThroughputConfig, setting: SB3Setting, vocab: int, length: int, seed: int) -> tuple[float, int]:
    """SB3 PPO tokens/s (``learn``: rollouts + updates) and its policy's parameter count."""
    from kcrl.agents.sb3 import SB3VecEnv, build_ppo, single_env_vec_env

    kwargs = dict(vocab_size=vocab, length=length)
    if setting.vec_env == "adapter":
        venv = SB3VecEnv(gym.make_vec(config.env_id, num_envs=setting.n_envs, vectorization_mode="vector_entry_point", **kwargs))
    else:
        venv = single_env_vec_env(config.env_id, setting.n_envs, **kwargs)
    hp = {
        "n_steps": setting.n_steps, "batch_size": setting.batch_size, "n_epochs": setting.n_epochs, "device": "cpu",
        "policy_kwargs": {
            "features_extractor_class": "TokenFeatureExtractor",
            "features_extractor_kwargs": {"embed_dim": config.embed_dim, "pooling": "flatten"},
            "net_arch": {"pi": [config.hidden] * 2, "vf": [config.hidden] * 2},
            "activation_fn": "tanh",
        },
    }
    model = build_ppo(venv, hp, seed)
    rollout = setting.n_envs * setting.n_steps
    rounds = max(1, -(-config.sb3_tokens // rollout))

    def learn() -> int:
        before = model.num_timesteps
        model.learn(rounds * rollout, reset_num_timesteps=False)
        return model.num_timesteps - before

    model.learn(rollout)  # warm-up: one rollout + update
    rate = _rate(learn, 0.0, config.repeats, warmup=0)
    venv.close()
    return rate, _sb3_policy_params(model)


# ---------------------------------------------------------------------------------- the suite
def _int(value: float) -> str:
    return f"{value:,.0f}"


def _x(value: float) -> str:
    return f"{value:.1f}x"


def run(
    seed: int = 0, out: Path | None = None, quick: bool = False, config: ThroughputConfig | None = None,
    progress: bool = True,
) -> dict:
    config = config or suite_config("throughput", quick)
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    metrics: dict = {"omp_num_threads": threads, "torch_threads": torch.get_num_threads()}
    env_rows, agent_rows = [], []
    jobs = [("env", n) for n in config.env_sizes] + [("agent", task) for task in config.agent_tasks]
    for kind, what in progress_bar(jobs, "throughput", enabled=progress):
        if kind == "env":
            n = what
            rates = env_rates(config, n, seed)
            for api, value in rates.items():
                metrics[f"env_{api}_steps_per_s_n{n}"] = value
            metrics[f"env_tensor_vs_sync_n{n}"] = rates["tensor"] / rates["sync"]
            metrics[f"env_numpy_vs_sync_n{n}"] = rates["numpy"] / rates["sync"]
            env_rows += [
                [n, "BatchedGenerationEnv.step_tensor (tensor API)", _int(rates["tensor"]), _x(rates["tensor"] / rates["sync"])],
                [n, "BatchedGenerationEnv.step (numpy Gymnasium API)", _int(rates["numpy"]), _x(rates["numpy"] / rates["sync"])],
                [n, "gymnasium SyncVectorEnv of single envs", _int(rates["sync"]), _x(1.0)],
            ]
            continue
        vocab, length = what
        tag = f"v{vocab}_t{length}"
        kcrl_rate, kcrl_params = kcrl_agent_rate(config, vocab, length, seed)
        metrics[f"agent_kcrl_tokens_per_s_{tag}"] = kcrl_rate
        metrics[f"agent_kcrl_policy_params_{tag}"] = kcrl_params
        name = f"kcrl SoftPGAgent, {config.agent_num_envs} episodes/update"
        agent_rows.append([f"V={vocab}, T={length}", name, _int(kcrl_rate), kcrl_params, _x(1.0)])
        for i, setting in enumerate(config.sb3):
            if setting.first_task_only and what != config.agent_tasks[0]:
                continue
            rate, params = sb3_rate(config, setting, vocab, length, seed)
            metrics[f"agent_sb3_{i}_tokens_per_s_{tag}"] = rate
            metrics[f"agent_kcrl_vs_sb3_{i}_{tag}"] = kcrl_rate / rate
            metrics[f"agent_sb3_{i}_policy_params_{tag}"] = params
            agent_rows.append([f"V={vocab}, T={length}", setting.name, _int(rate), params, _x(kcrl_rate / rate)])

    largest = max(config.env_sizes)
    default_schedule = [i for i, s in enumerate(config.sb3) if s.n_epochs == 10 and s.batch_size == 64 and s.vec_env == "adapter"]
    env_ratio = metrics[f"env_tensor_vs_sync_n{largest}"]
    agent_ratios = [
        metrics[f"agent_kcrl_vs_sb3_{i}_v{v}_t{t}"] for i in default_schedule for v, t in config.agent_tasks
    ]
    metrics["env_target_ratio"] = env_ratio
    metrics["agent_target_ratio"] = min(agent_ratios) if agent_ratios else None
    metrics["passed"] = bool(
        (largest < 1024 or env_ratio >= ENV_TARGET) and all(r >= AGENT_TARGET for r in agent_ratios)
    )

    table = "\n\n".join(
        [
            f"OMP_NUM_THREADS={threads}, torch threads {torch.get_num_threads()}; "
            f"rates are medians of {config.repeats} timed run(s).",
            "(a) environment steps/s, uniform-random actions, "
            f"{config.env_id}\n\n" + markdown_table(["N", "env", "steps/s", "x SyncVectorEnv"], env_rows),
            "(b) agent tokens/s end to end (collect + update), same policy network\n\n"
            + markdown_table(["task", "agent", "tokens/s", "policy params", "soft-PG speed-up"], agent_rows),
            f"SyncVectorEnv spends {1e6 / metrics[f'env_sync_steps_per_s_n{largest}']:.0f} µs per sub-env step at N={largest}: "
            "kcrl's single env is a batch of one of the same tensor implementation, so each step pays ~60 small "
            "torch calls; a hand-written numpy single env would be cheaper per step, and the ratio smaller.",
            f"targets: batched tensor env >= {ENV_TARGET:g}x SyncVectorEnv at N=1024 (got {env_ratio:.0f}x); "
            f"soft-PG >= {AGENT_TARGET:g}x SB3 PPO default schedule (got "
            + (f"{metrics['agent_target_ratio']:.0f}x" if agent_ratios else "n/a")
            + f"): {'PASS' if metrics['passed'] else 'MISS'}",
        ]
    )
    if out is not None:
        command = f"OMP_NUM_THREADS={threads} kcrl bench throughput --seed {seed}{' --quick' if quick else ''} --out {out}"
        markdown = f"command: `{command}`\n\n" + table
        write_results(out, "throughput", seed, config, metrics, markdown, command=command)
    return {"metrics": metrics, "table": table}
