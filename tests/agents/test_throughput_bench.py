"""Smoke run of the throughput suite at a tiny size (the real numbers are in benchmarks/results)."""

from __future__ import annotations

import json

from kcrl.benchmarks import SUITES, get_suite
from kcrl.benchmarks.throughput import SB3Setting, ThroughputConfig


def test_throughput_suite_writes_results(tmp_path):
    assert "throughput" in SUITES
    config = ThroughputConfig(
        env_sizes=(8,), env_seconds=0.0, repeats=1, agent_tasks=((4, 2),), agent_num_envs=16, agent_iterations=1,
        sb3_tokens=32, sb3=[SB3Setting("lean", n_envs=8, n_steps=4, batch_size=32, n_epochs=1)],
    )
    result = get_suite("throughput")(seed=0, out=tmp_path, config=config, progress=False)
    m = result["metrics"]
    for key in ("env_tensor_steps_per_s_n8", "env_numpy_steps_per_s_n8", "env_sync_steps_per_s_n8",
                "agent_kcrl_tokens_per_s_v4_t2", "agent_sb3_0_tokens_per_s_v4_t2"):
        assert m[key] > 0, key
    # same policy network on both sides
    assert m["agent_kcrl_policy_params_v4_t2"] == m["agent_sb3_0_policy_params_v4_t2"]
    assert m["omp_num_threads"] is not None
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["suite"] == "throughput" and record["command"].startswith("OMP_NUM_THREADS=")
    assert "kcrl bench throughput" in (tmp_path / "results.md").read_text()
