"""``kcrl bench tabular-exact``: MaxEnt IRL and the soft-PG agent against exact answers.

On ``TabularSequence-v0`` every quantity is enumerable, so the suite reports true KLs, not
estimates: how well Eq. 8 recovers the hidden constraint from data samples
(``irl_kl_nats = KL(p_data || q_phi)``), and how close the agent trained on the *learned*
reward gets to that reward's soft-optimal policy (``agent_kl_nats = KL(pi || q_phi)``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import torch

from kcrl.agents.maxent_irl import MaxEntIRL, MaxEntIRLArgs
from kcrl.agents.soft_pg import SoftPGAgent, SoftPGArgs
from kcrl.benchmarks import suite_config
from kcrl.benchmarks.report import markdown_table, write_results
from kcrl.constraints import TokenPotentialConstraint
from kcrl.envs.tabular import TabularWorld, prefix_observations
from kcrl.posterior import kl_divergence
from kcrl.softrl import sequence_log_probs_from_table

IRL_TARGET, AGENT_TARGET = 0.01, 0.02


@dataclass
class TabularExactConfig:
    """Configuration of the tabular-exact suite (the defaults are the full size; sizes in
    ``benchmarks/suites/tabular-exact.yaml``)."""

    vocab_size: int = 4
    """V"""
    length: int = 4
    """T"""
    constraint_scale: float = 1.0
    """std of the hidden constraint's potentials"""
    data_samples: int = 10_000
    """number of p_data demonstrations given to MaxEnt IRL"""
    num_envs: int = 1024
    """episodes per agent update"""
    irl: MaxEntIRLArgs = field(default_factory=lambda: MaxEntIRLArgs(steps=300))
    """MaxEnt IRL (Eq. 8) settings (``seed`` is set from the run's seed)"""
    agent: SoftPGArgs = field(default_factory=SoftPGArgs)
    """soft-PG agent settings (``seed`` is set from the run's seed)"""
    device: str = "cpu"
    """torch device"""


def policy_log_probs(agent: SoftPGAgent, world: TabularWorld) -> torch.Tensor:
    """log pi(x) of every sequence under the agent's policy, by enumeration."""
    table = agent.action_log_probs(prefix_observations(world))
    return sequence_log_probs_from_table(table, world.sequences())


def run(seed: int = 0, out: Path | None = None, quick: bool = False, config: TabularExactConfig | None = None, progress: bool = True) -> dict:
    config = config or suite_config("tabular-exact", quick)
    config.irl.seed = config.agent.seed = seed
    torch.manual_seed(seed)
    env = gym.make_vec(
        "TabularSequence-v0", num_envs=config.num_envs, vectorization_mode="vector_entry_point",
        autoreset_mode="Disabled", device=config.device, vocab_size=config.vocab_size,
        length=config.length, world_seed=seed, constraint_scale=config.constraint_scale,
    )
    world: TabularWorld = env.task
    gen = torch.Generator(world.device).manual_seed(seed)
    data = world.sample_data(config.data_samples, gen)
    log_p_data = world.data_log_probs()

    # 1. MaxEnt IRL (Eq. 8): learn f_phi from data with importance-weighted p_theta samples.
    start = time.perf_counter()
    learned = TokenPotentialConstraint(config.vocab_size, config.length).to(world.device)
    irl = MaxEntIRL(learned, lambda n, g: (world.base.sample(n, g)[0], None), (data, None), config.irl)
    irl_history = irl.train(show_progress=progress)
    irl_seconds = time.perf_counter() - start
    learned.requires_grad_(False)
    q_learned = world.posterior(learned, config.irl.alpha)

    # 2. The entropy-regularised agent, trained on the learned constraint as reward.
    env.set_constraint(learned)
    start = time.perf_counter()
    agent = SoftPGAgent(env, config.agent)
    agent_history = agent.train(show_progress=progress)
    agent_seconds = time.perf_counter() - start
    log_pi = policy_log_probs(agent, world)

    metrics = {
        "irl_kl_nats": kl_divergence(log_p_data, q_learned.log_q).item(),
        "base_kl_nats": kl_divergence(log_p_data, world.base_log_probs_all()).item(),
        "agent_kl_nats": kl_divergence(log_pi, q_learned.log_q).item(),
        "agent_kl_to_data_nats": kl_divergence(log_pi, log_p_data).item(),
        "irl_final_ess_fraction": irl_history[-1]["ess_fraction"],
        "irl_log_z_estimate": irl_history[-1]["log_z"],
        "irl_log_z_exact": q_learned.log_z.item(),
        "agent_soft_return": agent_history[-1]["soft_return"],
        "irl_seconds": irl_seconds,
        "agent_seconds": agent_seconds,
    }
    rows = [
        ["KL(p_data ‖ p_theta), before learning", metrics["base_kl_nats"], ""],
        ["KL(p_data ‖ q_phi), MaxEnt IRL (Eq. 8)", metrics["irl_kl_nats"], f"< {IRL_TARGET}"],
        ["KL(pi ‖ q_phi), soft-PG agent", metrics["agent_kl_nats"], f"< {AGENT_TARGET}"],
        ["KL(pi ‖ p_data), agent vs truth", metrics["agent_kl_to_data_nats"], ""],
        ["ESS / K at the end of IRL", metrics["irl_final_ess_fraction"], ""],
        ["log Z: IS estimate / exact", f"{metrics['irl_log_z_estimate']:.4f} / {metrics['irl_log_z_exact']:.4f}", ""],
        ["seconds: IRL / agent", f"{irl_seconds:.1f} / {agent_seconds:.1f}", ""],
    ]
    table = markdown_table(["quantity (nats)", "value", "target"], rows)
    passed = metrics["irl_kl_nats"] < IRL_TARGET and metrics["agent_kl_nats"] < AGENT_TARGET
    metrics["passed"] = passed
    if out is not None:
        write_results(out, "tabular-exact", seed, config, metrics, table)
    return {"metrics": metrics, "table": table}
