"""``kcrl bench agent-cost``: one training iteration of kcrl's agent vs the bare model cost.

The baseline is the bare forward + backward of the *same* policy network on the *same* batch
(all N x T observations of an iteration in one call, with a log-likelihood loss), measured in the
same process. An iteration of :class:`~kcrl.agents.soft_pg.SoftPGAgent` adds to that the
autoregressive rollout in the batched env (T sequential steps, sampling, rewards) and the soft
returns; the target is at most 1.3x.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch

from kcrl.agents.soft_pg import SoftPGAgent, SoftPGArgs
from kcrl.benchmarks import suite_config
from kcrl.benchmarks.report import markdown_table, write_results

TARGET = 1.3


@dataclass
class AgentCostConfig:
    """Configuration of the agent-cost suite (the defaults are the full size; sizes in
    ``benchmarks/suites/agent-cost.yaml``)."""

    sizes: tuple[tuple[int, int, int, int], ...] = ((1024, 4, 4, 128), (1024, 16, 5, 256), (256, 16, 5, 512))
    """sizes measured: (num_envs, vocab_size, length, hidden)"""
    repeats: int = 21
    """timed (iteration, bare) pairs per size, interleaved, after 3 warm-ups; medians are reported"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """torch device (default: cuda when a GPU is visible)"""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(num_envs: int, vocab_size: int, length: int, hidden: int, repeats: int, device: str) -> dict[str, float]:
    env = gym.make_vec("TabularSequence-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
                       autoreset_mode="Disabled", vocab_size=vocab_size, length=length, device=device)
    agent = SoftPGAgent(env, SoftPGArgs(hidden=hidden, iterations=10**6))
    gen = torch.Generator(agent.device).manual_seed(0)
    n = num_envs * length
    obs = {"tokens": torch.randint(0, vocab_size + 1, (n, length), generator=gen, device=agent.device),
           "length": torch.randint(0, length, (n,), generator=gen, device=agent.device)}
    actions = torch.randint(0, vocab_size, (n, 1), generator=gen, device=agent.device)

    def bare() -> None:
        loss = -torch.log_softmax(agent.policy(obs), -1).gather(-1, actions).mean()
        agent.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def timed(fn) -> float:
        _sync(agent.device)
        start = time.perf_counter()
        fn()
        _sync(agent.device)
        return time.perf_counter() - start

    for _ in range(3):
        agent.update(agent.rollout())
        bare()
    # interleaved, so that a change in the machine's load hits both sides alike; medians
    pairs = [(timed(lambda: agent.update(agent.rollout())), timed(bare)) for _ in range(repeats)]
    iteration = statistics.median(p[0] for p in pairs)
    bare_seconds = statistics.median(p[1] for p in pairs)
    return {"iteration_ms": 1e3 * iteration, "bare_ms": 1e3 * bare_seconds, "ratio": iteration / bare_seconds,
            "tokens_per_s": num_envs * length / iteration}


def run(seed: int = 0, out: Path | None = None, quick: bool = False, progress: bool = True,
        config: AgentCostConfig | None = None) -> dict:
    config = config or suite_config("agent-cost", quick)
    torch.manual_seed(seed)
    sizes = config.sizes
    rows, metrics = [], {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "sizes": []}
    for n, v, t, h in sizes:
        m = measure(n, v, t, h, config.repeats, config.device)
        metrics["sizes"].append({"num_envs": n, "vocab_size": v, "length": t, "hidden": h, **m})
        rows.append([f"N={n} V={v} T={t} hidden={h}", f"{m['iteration_ms']:.1f}", f"{m['bare_ms']:.1f}",
                     f"{m['ratio']:.2f}x", f"{m['tokens_per_s']:.0f}"])
    worst = max(s["ratio"] for s in metrics["sizes"])
    metrics["worst_ratio"], metrics["passed"] = worst, worst <= TARGET
    table = markdown_table(["size", "agent iteration (ms)", "bare fwd+bwd (ms)", "ratio", "tokens/s"], rows)
    table += f"\n\ndevice {config.device}; target: ratio <= {TARGET}x"
    if out is not None:
        write_results(out, "agent-cost", seed, config, metrics, table + "\n\nCommand: `OMP_NUM_THREADS=1 kcrl bench agent-cost --out benchmarks/results/agent-cost`")
    return {"metrics": metrics, "table": table}
