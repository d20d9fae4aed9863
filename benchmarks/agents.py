"""``kcrl bench agents``: kcrl's soft-PG agent vs SB3 PPO vs Tianshou PPO, scored exactly.

Three agents train on ``TabularSequence-v0`` with the **same budget of env tokens** (one token =
one env step), their hyperparameters read from the rl-zoo-style files of
:mod:`kcrl.agents.hyperparams`:

* ``kcrl``: :class:`~kcrl.agents.soft_pg.SoftPGAgent` on the batched tensor env;
* ``sb3``: ``stable_baselines3.PPO`` on :class:`~kcrl.agents.sb3.SB3VecEnv`;
* ``tianshou``: Tianshou's PPO on :class:`~kcrl.agents.tianshou.TianshouVectorEnv`
  (:func:`train_tianshou_ppo`, a plain collect-update loop like Tianshou's ``OnPolicyTrainer``).

The env pays ``log p_theta(a_t|s_t)`` per token and ``alpha f(x)`` at the end, so the soft return
``E_pi[R - log pi] = log Z - KL(pi || q)`` with ``q ∝ p_theta exp(alpha f)`` (Eq. 3). Every one
of the V^T sequences is enumerated through each library's own policy network (every prefix's
logits, chained), so ``KL(pi || q)``, the soft return and ``log Z`` are exact, not sampled.

Also reported, per agent, the *KL floor of its own objective*: the exact KL to q of the policy
its update is stationary at. For soft-PG with ``entropy_coef = 1`` that is q itself (0). PPO's
entropy bonus ``c H(pi(.|s))`` is added per state but is not part of the return its advantages
use, so (with gamma = 1 and unnormalised advantages) PPO is stationary where
``pi(a|s) ∝ exp(Q_hard(s, a) / c)``, Q_hard the value of the *reward alone*: a policy sharper
than q at every step but the last (:func:`objective_optimum`).

Speed: env tokens per second of training wall time (collect + update; the exact evaluations are
paused out of the clock), each run one torch thread, and its ratio to SB3 PPO on the same seed
in the same invocation. Over seeds: mean ± 95% CI (:func:`kcrl.stats.mean_ci95`) and one-sided
permutation tests (:func:`kcrl.stats.permutation_test`) of the hypotheses stated before the runs:
kcrl's agent ends with a lower KL than each PPO, and runs more tokens/s. The uniform-random
policy is the reference row.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from kcrl.agents.hyperparams import LIBRARIES, ZOO_KEYS, known_hyperparameters, load_hyperparams, rounds_in_budget
from kcrl.benchmarks import suite_config
from kcrl.benchmarks.plots import plot_curves
from kcrl.benchmarks.report import group_by_variant, markdown_table, write_results
from kcrl.benchmarks.tabular_exact import policy_log_probs
from kcrl.envs.tabular import TabularWorld, prefix_observations
from kcrl.errors import ConfigError, unknown_name
from kcrl.posterior import kl_divergence
from kcrl.progress import progress as progress_bar
from kcrl.progress import progress_label
from kcrl.softrl import prefix_offsets, sequence_log_probs_from_table
from kcrl.stats import mean_ci95, permutation_test

ENV_ID = "TabularSequence-v0"
AGENTS = LIBRARIES  # ("kcrl", "sb3", "tianshou"): one agent per hyperparameter file
LABELS = {"kcrl": "kcrl SoftPGAgent", "sb3": "SB3 PPO", "tianshou": "Tianshou PPO"}
COLORS = {"kcrl": "C0", "sb3": "C1", "tianshou": "C2"}


@dataclass
class AgentsConfig:
    """Configuration of the agents suite."""

    vocab_size: int = 4
    """V of TabularSequence-v0"""
    length: int = 4
    """T of TabularSequence-v0 (V^T sequences are enumerated)"""
    constraint_scale: float = 1.0
    """std of the hidden constraint's potentials (how far q is from p_theta)"""
    agents: tuple[str, ...] = AGENTS
    """which agents run: kcrl, sb3, tianshou"""
    seeds: int = 5
    """runs per agent (seed, seed+1, ...); each seed also draws its own world"""
    env_tokens: int | None = None
    """budget of env tokens per agent; None: the files' n_timesteps, which must agree"""
    eval_points: int = 8
    """exact evaluations along each run (the learning curves), evenly spaced in tokens"""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """per-agent hyperparameter overrides, e.g. {"sb3": {"n_epochs": 2}} (checked like the files)"""


# ------------------------------------------------------------------------- exact quantities
@torch.no_grad()
def exact_log_probs(logits_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], world: TabularWorld) -> torch.Tensor:
    """log pi(x) of every sequence, ``(V^T,)``, from a policy's logits at every prefix.

    ``logits_fn`` maps kcrl observation tensors (``tokens (N, T)``, ``length (N,)``) to ``(N, V)``.
    """
    table = torch.log_softmax(logits_fn(prefix_observations(world)).float(), dim=-1)  # (n_prefixes, V)
    return sequence_log_probs_from_table(table, world.sequences())


def sb3_log_probs(model, world: TabularWorld) -> torch.Tensor:
    """log pi(x) of every sequence under an SB3 policy (trained on an SB3VecEnv)."""
    from kcrl.agents.sb3 import sb3_logits_fn

    return exact_log_probs(sb3_logits_fn(model.policy), world)


def tianshou_log_probs(actor: torch.nn.Module, world: TabularWorld) -> torch.Tensor:
    """log pi(x) of every sequence under a Tianshou ``DiscreteActor`` (logits output) on TokenNet."""
    import kcrl.agents.tianshou as adapter

    return exact_log_probs(adapter.tianshou_logits_fn(actor), world)


@torch.no_grad()
def objective_optimum(world: TabularWorld, coef: float, soft: bool) -> torch.Tensor:
    """log pi*(x) of the policy an entropy-regularised update is stationary at, by backward recursion.

    Rewards: ``log p_theta(a|s)`` per step, ``alpha f(x)`` at the end. At every prefix s,
    ``pi*(a|s) = softmax_a(Q(s, a) / coef)`` with ``Q(s, a) = log p_theta(a|s) + V(s a)`` and, at
    complete x, ``V(x) = alpha f(x)``.

    * ``soft=True`` (entropy inside the return, kcrl's soft-PG): ``V(s) = coef logsumexp(Q / coef)``.
      With ``coef = 1`` this is q (Eq. 3; :func:`kcrl.softrl.soft_optimal_policy`).
    * ``soft=False`` (entropy bonus per state only, PPO's ``ent_coef`` with gamma = 1, unnormalised
      advantages): ``V(s) = sum_a pi*(a|s) Q(s, a)``, the value of the reward alone.

    Returns ``(V^T,)`` in :func:`kcrl.softrl.all_sequences` order.
    """
    vocab, length = world.vocab_size, world.max_length
    offsets = prefix_offsets(vocab, length)
    base = world.base.log_prob_table()  # (n_prefixes, V)
    table = torch.empty_like(base)
    values = world.alpha * world.constraint.predict(world.sequences()).to(base.dtype)  # (V^T,)
    for t in range(length - 1, -1, -1):
        rows = slice(offsets[t], offsets[t + 1])
        q_values = base[rows] + values.reshape(vocab**t, vocab)  # (V^t, V)
        log_pi = torch.log_softmax(q_values / coef, dim=-1)
        table[rows] = log_pi
        if soft:
            values = coef * torch.logsumexp(q_values / coef, dim=-1)
        else:
            values = (log_pi.exp() * q_values).sum(-1)
    return sequence_log_probs_from_table(table, world.sequences())


@torch.no_grad()
def exact_scores(log_pi: torch.Tensor, world: TabularWorld) -> dict[str, float]:
    """KL(pi || q), the soft return ``E_pi[log p_theta + alpha f - log pi]`` and log Z, all exact."""
    posterior = world.posterior()
    reward = world.base_log_probs_all() + world.alpha * world.constraint.predict(world.sequences())  # (V^T,)
    pi = log_pi.exp()
    return {
        "kl": kl_divergence(log_pi, posterior.log_q).item(),
        "soft_return": (pi * (reward - log_pi)).sum().item(),
        "log_z": posterior.log_z.item(),
        "total_prob": pi.sum().item(),
    }


class TrainingClock:
    """Times a training run and takes exact snapshots of its policy at token marks.

    The snapshots' own time is paused out: ``seconds`` is collect + update only.

    Args:
        budget: tokens the run will consume.
        points: snapshots after the start, at ``budget * k / points`` tokens (k = 1..points).
    """

    def __init__(self, budget: int, points: int) -> None:
        self.marks = [budget * k // points for k in range(1, points + 1)]
        self.curve: list[dict[str, float]] = []
        self.tokens, self.seconds = 0, 0.0
        self._next, self._paused, self._start = 0, 0.0, 0.0

    def start(self, world: TabularWorld, log_probs: Callable[[], torch.Tensor]) -> None:
        """Snapshot the untrained policy, then start the clock."""
        self.world, self.log_probs = world, log_probs
        self.curve = [self._snapshot(0)]
        self._paused, self._start = 0.0, time.perf_counter()

    def start_logits(self, world: TabularWorld, logits_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor]) -> None:
        """:meth:`start` for a policy given by its logits at kcrl observation tensors."""
        self.start(world, lambda: exact_log_probs(logits_fn, world))

    def _snapshot(self, tokens: int) -> dict[str, float]:
        return {"tokens": tokens, **exact_scores(self.log_probs(), self.world)}

    def tick(self, tokens: int) -> None:
        """Called after each update with the tokens consumed so far; snapshots when a mark is passed."""
        if self._next < len(self.marks) and tokens >= self.marks[self._next]:
            paused = time.perf_counter()
            self.curve.append(self._snapshot(tokens))
            while self._next < len(self.marks) and tokens >= self.marks[self._next]:
                self._next += 1
            self._paused += time.perf_counter() - paused

    def stop(self, tokens: int) -> None:
        self.seconds = time.perf_counter() - self._start - self._paused
        self.tokens = tokens
        if self.curve[-1]["tokens"] != tokens:
            self.curve.append(self._snapshot(tokens))


def _params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


# ------------------------------------------------------------------------- the three trainers
def train_soft_pg(env_kwargs: dict[str, Any], seed: int, hp: dict[str, Any], clock: TrainingClock,
                  progress: bool = False) -> dict[str, Any]:
    """kcrl's SoftPGAgent for ``hp["n_timesteps"]`` tokens (``iterations`` derived from the budget)."""
    from kcrl.agents.soft_pg import SoftPGAgent, SoftPGArgs

    env = gym.make_vec(ENV_ID, num_envs=hp["n_envs"], vectorization_mode="vector_entry_point",
                       autoreset_mode="Disabled", **env_kwargs)
    world = env.task
    rounds = rounds_in_budget("kcrl", hp["n_timesteps"], hp["n_envs"] * world.max_length, "n_envs * length")
    args = SoftPGArgs(**{k: v for k, v in hp.items() if k not in ZOO_KEYS}, iterations=rounds, seed=seed)
    agent = SoftPGAgent(env, args)
    clock.start(world, lambda: policy_log_probs(agent, world))
    tokens = 0
    for _ in progress_bar(range(rounds), "kcrl soft-PG updates", enabled=progress):
        rollout = agent.rollout()
        agent.update(rollout)
        tokens += int(rollout.mask.sum().item())
        clock.tick(tokens)
    clock.stop(tokens)
    return {"policy_params": _params(agent.policy), "gradient_steps": rounds * args.update_epochs}


def train_sb3_ppo(env_kwargs: dict[str, Any], seed: int, hp: dict[str, Any], clock: TrainingClock,
                  progress: bool = False) -> dict[str, Any]:
    """Stable-Baselines3 PPO (one ``learn`` call; a callback takes the snapshots between rollouts)."""
    from kcrl.agents.sb3 import build_ppo, learn_with_snapshots, make_sb3_vec_env, sb3_kcrl_env

    venv = make_sb3_vec_env(ENV_ID, hp["n_envs"], seed=seed, **env_kwargs)
    model = build_ppo(venv, hp, seed)
    rollout = model.n_steps * model.n_envs
    rounds = rounds_in_budget("sb3", hp["n_timesteps"], rollout, "n_envs * n_steps")
    world = sb3_kcrl_env(model).env.task
    bar = progress_bar(None, "SB3 PPO env tokens", enabled=progress, total=hp["n_timesteps"])

    def snapshot(tokens: int) -> None:  # the policy has been updated on `tokens` tokens
        clock.tick(tokens)
        bar.n = tokens
        bar.refresh()

    clock.start(world, lambda: sb3_log_probs(model, world))
    learn_with_snapshots(model, hp["n_timesteps"], snapshot)
    clock.stop(model.num_timesteps)
    bar.close()
    policy = model.policy
    actor = [policy.pi_features_extractor, policy.mlp_extractor.policy_net, policy.action_net]
    steps = rounds * model.n_epochs * math.ceil(rollout / model.batch_size)
    return {"policy_params": _params(*actor), "gradient_steps": steps}


def _train_tianshou(env_kwargs: dict[str, Any], seed: int, hp: dict[str, Any], clock: TrainingClock,
                    progress: bool = False) -> dict[str, Any]:
    from kcrl.agents.tianshou import train_tianshou_ppo

    policy = train_tianshou_ppo(env_kwargs, seed, clock, progress, ENV_ID, **hp)
    defaults = known_hyperparameters("tianshou")
    collection, batch, repeat = (hp.get(k, defaults[k]) for k in
                                 ("collection_step_num_env_steps", "batch_size", "update_step_num_repetitions"))
    steps = hp["n_timesteps"] // collection * repeat * math.ceil(collection / batch)
    return {"policy_params": _params(policy.actor), "gradient_steps": steps}


TRAINERS: dict[str, Callable[..., dict[str, Any]]] = {"kcrl": train_soft_pg, "sb3": train_sb3_ppo, "tianshou": _train_tianshou}


def objective_floor(agent: str, hp: dict[str, Any], world: TabularWorld) -> float | None:
    """Exact KL(pi* || q) of the policy ``agent``'s update is stationary at; None where it is not known
    in closed form (discounting, normalised advantages, no entropy bonus)."""
    log_q = world.posterior().log_q
    if agent == "kcrl":
        optimum = objective_optimum(world, hp.get("entropy_coef", 1.0), soft=True)
        return max(0.0, kl_divergence(optimum, log_q).item())  # 0 up to rounding at entropy_coef = 1
    defaults = {"sb3": (0.99, True, 0.0), "tianshou": (0.99, True, 0.01)}[agent]
    normalise_key = "normalize_advantage" if agent == "sb3" else "advantage_normalization"
    gamma, normalised, coef = hp.get("gamma", defaults[0]), hp.get(normalise_key, defaults[1]), hp.get("ent_coef", defaults[2])
    if gamma != 1.0 or normalised or coef <= 0:
        return None
    return kl_divergence(objective_optimum(world, coef, soft=False), log_q).item()


# ------------------------------------------------------------------------- the suite protocol
def resolve_hyperparams(config: AgentsConfig) -> dict[str, dict[str, Any]]:
    """Each agent's checked hyperparameters, with the overrides and the common budget applied."""
    for agent in (*config.agents, *config.overrides):
        if agent not in AGENTS:
            raise unknown_name("agent", agent, AGENTS)
    if not isinstance(config.seeds, int) or config.seeds < 1 or not isinstance(config.eval_points, int) or config.eval_points < 1:
        raise ConfigError(f"seeds and eval_points must be positive integers; got {config.seeds!r} and {config.eval_points!r}.")
    budget = {} if config.env_tokens is None else {"n_timesteps": config.env_tokens}
    resolved = {a: load_hyperparams(a, ENV_ID, {**config.overrides.get(a, {}), **budget}) for a in config.agents}
    budgets = {a: hp["n_timesteps"] for a, hp in resolved.items()}
    if len(set(budgets.values())) > 1:
        listed = ", ".join(f"{a} {b}" for a, b in budgets.items())
        raise ConfigError(
            f"every agent must get the same budget of env tokens; the hyperparameters give {listed}. "
            "Set the same n_timesteps in every file, or AgentsConfig.env_tokens."
        )
    return resolved


def tasks(seed: int = 0, quick: bool = False, config: AgentsConfig | None = None) -> list[dict]:
    """The independent runs: one per (agent, seed). Hyperparameters are checked here, before any run."""
    config = config or suite_config("agents", quick)
    hyperparams = resolve_hyperparams(config)
    return [
        {"variant": agent, "seed": seed + i, "config": config, "hyperparams": hyperparams[agent], "quick": quick}
        for agent in config.agents for i in range(config.seeds)
    ]


def run_task(task: dict) -> dict[str, Any]:
    """Train one agent on one seed's world; returns its exact learning curve, tokens and seconds."""
    config: AgentsConfig = task["config"]
    agent, seed, hp = task["variant"], task["seed"], task["hyperparams"]
    env_kwargs = dict(vocab_size=config.vocab_size, length=config.length, world_seed=seed,
                      constraint_scale=config.constraint_scale)
    torch.manual_seed(seed)
    clock = TrainingClock(hp["n_timesteps"], config.eval_points)
    with progress_label(f"agents {agent} seed {seed}"):
        extra = TRAINERS[agent](env_kwargs, seed, hp, clock, task.get("progress", True))
    world = clock.world
    uniform = torch.full((world.vocab_size**world.max_length,), -world.max_length * math.log(world.vocab_size))
    return {
        "agent": agent,
        "seed": seed,
        "tokens": clock.tokens,
        "seconds": clock.seconds,
        "tokens_per_s": clock.tokens / clock.seconds,
        "final": clock.curve[-1],
        "start": clock.curve[0],
        "curve": clock.curve,
        "floor_kl": objective_floor(agent, hp, world),
        "uniform": exact_scores(uniform, world),
        **extra,
    }


def _pm(values: Sequence[float], digits: int = 4) -> str:
    mean, half = mean_ci95(list(values))
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _rate(values: Sequence[float]) -> str:
    mean, half = mean_ci95(list(values))
    return f"{mean:,.0f} ± {half:,.0f}"


def aggregate(task_list: list[dict], results: list[dict], seed: int, out: Path | None = None) -> dict:
    """Table (mean ± 95% CI over seeds), permutation tests, learning-curve plot and result files."""
    config: AgentsConfig = task_list[0]["config"]
    quick = task_list[0].get("quick", False)
    by_agent = {a: sorted(rs, key=lambda r: r["seed"]) for a, rs in group_by_variant(task_list, results).items()}
    seeds = sorted({r["seed"] for r in results})
    uniform = {r["seed"]: r["uniform"] for r in results}
    log_z = [uniform[s]["log_z"] for s in seeds]
    sb3_rate = {r["seed"]: r["tokens_per_s"] for r in by_agent.get("sb3", [])}
    budget = task_list[0]["hyperparams"]["n_timesteps"]
    metrics: dict[str, Any] = {
        "env_id": ENV_ID, "seeds": seeds, "env_tokens": budget, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(), "log_z_mean": mean_ci95(log_z)[0],
        "uniform_kl_mean": mean_ci95([uniform[s]["kl"] for s in seeds])[0],
        "per_seed": by_agent,
    }
    rows = []
    for agent, rs in by_agent.items():
        kl = [r["final"]["kl"] for r in rs]
        rates = [r["tokens_per_s"] for r in rs]
        ratios = [r["tokens_per_s"] / sb3_rate[r["seed"]] for r in rs if r["seed"] in sb3_rate]
        floors = [r["floor_kl"] for r in rs]
        tokens = sorted({r["tokens"] for r in rs})
        metrics.update({
            f"{agent}_kl_mean": mean_ci95(kl)[0], f"{agent}_kl_ci95": mean_ci95(kl)[1],
            f"{agent}_soft_return_mean": mean_ci95([r["final"]["soft_return"] for r in rs])[0],
            f"{agent}_start_kl_mean": mean_ci95([r["start"]["kl"] for r in rs])[0],
            f"{agent}_tokens_per_s_mean": mean_ci95(rates)[0], f"{agent}_tokens_per_s_ci95": mean_ci95(rates)[1],
            f"{agent}_tokens": tokens,
            f"{agent}_floor_kl_mean": None if None in floors else mean_ci95(floors)[0],
            f"{agent}_policy_params": rs[0]["policy_params"],
            f"{agent}_gradient_steps": rs[0]["gradient_steps"],
        })
        if ratios:
            metrics[f"{agent}_speed_vs_sb3_mean"], metrics[f"{agent}_speed_vs_sb3_ci95"] = mean_ci95(ratios)
        rows.append([
            LABELS[agent], _pm(kl), _pm([r["start"]["kl"] for r in rs], 3), _pm([r["final"]["soft_return"] for r in rs], 3),
            "n/a" if None in floors else _pm(floors), ", ".join(f"{t:,}" for t in tokens), _rate(rates),
            f"{_pm(ratios, 2)}x" if ratios else "n/a", rs[0]["gradient_steps"], rs[0]["policy_params"],
        ])
    rows.append([
        "uniform random policy (reference)", _pm([uniform[s]["kl"] for s in seeds]), "", _pm([uniform[s]["soft_return"] for s in seeds], 3),
        "", "", "", "", "", "",
    ])
    table_main = markdown_table(
        ["agent", "KL(π ‖ q) at the end", "KL(π ‖ q) untrained", "soft return E_π[R − log π]", "KL floor of its objective",
         "env tokens", "tokens/s", "speed vs SB3 PPO", "gradient steps", "policy params"], rows,
    )

    tests = []
    final = {a: [r["final"]["kl"] for r in rs] for a, rs in by_agent.items()}
    rates = {a: [r["tokens_per_s"] for r in rs] for a, rs in by_agent.items()}
    for other in ("sb3", "tianshou"):
        if "kcrl" in by_agent and other in by_agent:
            p_kl = permutation_test(final["kcrl"], final[other], alternative="less")
            p_rate = permutation_test(rates["kcrl"], rates[other], alternative="greater")
            metrics[f"p_kl_kcrl_lt_{other}"], metrics[f"p_rate_kcrl_gt_{other}"] = p_kl, p_rate
            tests += [[f"kcrl vs {LABELS[other]}", "final KL lower", f"{p_kl:.3f}"],
                      [f"kcrl vs {LABELS[other]}", "tokens/s higher", f"{p_rate:.3f}"]]
    table = "\n\n".join(filter(None, [
        f"{ENV_ID} (V={config.vocab_size}, T={config.length}, constraint scale {config.constraint_scale:g}): "
        f"{budget:,} env tokens per agent, {len(seeds)} seeds (seed s also draws world s); every one of the "
        f"{config.vocab_size ** config.length} sequences enumerated through each policy, so every number is exact. "
        f"log Z (the optimum of the soft return) = {_pm(log_z, 3)} nats; soft return = log Z − KL(π ‖ q). "
        f"Mean ± 95% CI over seeds; OMP_NUM_THREADS={metrics['omp_num_threads']}, one torch thread per run.",
        table_main,
        ("one-sided permutation tests over seeds (hypotheses fixed before the runs)\n\n"
         + markdown_table(["comparison", "hypothesis", "p"], tests)) if tests else "",
    ]))
    metrics["notes"] = _what_it_shows(by_agent, metrics)
    if out is not None:
        out = Path(out)
        curves = {LABELS[a]: [([c["tokens"] for c in r["curve"]], [c["kl"] for c in r["curve"]]) for r in rs]
                  for a, rs in by_agent.items()}
        plot_curves(curves, out / "kl_curves.png", "KL(π ‖ q), nats (exact)", f"{ENV_ID}: same token budget per agent",
                    xlabel="env tokens", logy=True, colors={LABELS[a]: COLORS[a] for a in AGENTS},
                    ylim=(1e-3, 1e3))  # a band's lower edge below 0 is cut at the axis
        threads = metrics["omp_num_threads"] or "1"
        command = f"OMP_NUM_THREADS={threads} kcrl bench agents --seed {seed}{' --quick' if quick else ''} --out {out}"
        markdown = (f"command: `{command}`\n\nhyperparameters: `agents/hyperparams/{{kcrl,sb3,tianshou}}.yaml` "
                    "(the resolved values are in results.json)\n\n"
                    f"{table}\n\n![KL(π ‖ q) vs env tokens](kl_curves.png)\n\n"
                    f"## What it shows\n\n{metrics['notes']}\n")
        hyper = {a: t["hyperparams"] for a, t in {t["variant"]: t for t in task_list}.items()}
        write_results(out, "agents", seed, asdict(config), metrics, markdown, command=command, hyperparams=hyper)
    return {"metrics": metrics, "table": table}


def _what_it_shows(by_agent: dict[str, list[dict]], metrics: dict[str, Any]) -> str:
    parts = []
    agents = list(by_agent)
    kl = {a: metrics[f"{a}_kl_mean"] for a in agents}
    best = min(agents, key=kl.get)
    parts.append(
        f"At the same budget of {metrics['env_tokens']:,} env tokens, {LABELS[best]} ends closest to the soft-optimal "
        "policy q: " + ", ".join(f"{LABELS[a]} {kl[a]:.4f}" for a in agents)
        + f" nats of KL(π ‖ q), against {metrics['uniform_kl_mean']:.3f} for the uniform-random policy. "
        "The same tokens buy different numbers of gradient steps: "
        + ", ".join(f"{LABELS[a]} {metrics[f'{a}_gradient_steps']:,}" for a in agents)
        + " (PPO reuses each rollout for several epochs of minibatches; soft-PG takes one step per batch, and its "
        "learning rate anneals to 0 over the budget)."
    )
    floors = {a: metrics[f"{a}_floor_kl_mean"] for a in agents if a != "kcrl"}
    if any(v is not None for v in floors.values()):
        parts.append(
            "PPO's entropy bonus is paid per state and not carried in the return its advantages use, so even fully "
            "converged it would stop at the policy ∝ exp(Q_reward / ent_coef), not at q: the 'KL floor' column "
            "(" + ", ".join(f"{LABELS[a]} {v:.4f}" for a, v in floors.items() if v is not None)
            + " nats). A PPO KL above its floor is optimisation left to do; the floor itself is the price of its objective. "
            "kcrl's soft-PG puts -log π inside the return, so its floor is 0."
        )
    speeds = {a: metrics.get(f"{a}_speed_vs_sb3_mean") for a in agents}
    if speeds.get("kcrl") is not None:
        parts.append(
            "Speed (training wall time, exact evaluations excluded, one thread): "
            + ", ".join(f"{LABELS[a]} {metrics[f'{a}_tokens_per_s_mean']:,.0f} tokens/s" for a in agents)
            + "; relative to SB3 PPO on the same seed: "
            + ", ".join(f"{LABELS[a]} {s:.2f}x" for a, s in speeds.items() if s is not None) + ". "
            "PPO also trains a critic and makes several passes over each rollout; soft-PG makes one gradient step per "
            "batch and has no critic. Runs spread over parallel workers (--jobs) share cores, so compare rates from "
            "one-job invocations."
        )
    return " ".join(parts)


def run(seed: int = 0, out: Path | None = None, quick: bool = False, progress: bool = True,
        config: AgentsConfig | None = None) -> dict:
    """Every (agent, seed) run in this process, then :func:`aggregate`."""
    task_list = [dict(t, progress=progress) for t in tasks(seed, quick, config)]
    results = [run_task(t) for t in progress_bar(task_list, "agents: runs", enabled=progress)]
    return aggregate(task_list, results, seed, out)
