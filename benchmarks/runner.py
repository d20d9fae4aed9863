"""Runs a suite on a backend: in this process, in local processes, or as Ray tasks.

A suite module either exposes ``run(seed, out, quick, progress)`` only (it runs as one unit), or
also ``tasks(seed, quick) -> list`` of independent runs, ``run_task(task) -> dict`` and
``aggregate(tasks, results, seed, out) -> {"metrics", "table"}``. Then the runs are spread over the
backend, and the table is the same whatever the backend, because each run is seeded on its own.
"""

from __future__ import annotations

import importlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from kcrl.benchmarks import SUITES, get_suite
from kcrl.errors import ConfigError, require_optional
from kcrl.progress import progress as progress_bar

BACKENDS = ("local", "ray")


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def map_tasks(run_task, task_list: list, backend: str = "local", jobs: int = 1, ray_address: str | None = None,
              show_progress: bool = True) -> list:
    """``[run_task(t) for t in task_list]`` on the chosen backend, results in task order."""
    if backend == "local":
        if jobs <= 1:
            return [run_task(t) for t in progress_bar(task_list, "runs", enabled=show_progress)]
        with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker) as pool:
            return list(pool.map(run_task, task_list))
    if backend == "ray":
        ray = require_optional("ray", "ray")
        if not ray.is_initialized():
            ray.init(address=ray_address, num_cpus=None if ray_address else max(jobs, 1),
                     include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        remote = ray.remote(num_cpus=1)(run_task)
        return ray.get([remote.remote(t) for t in task_list])
    raise ConfigError(f"backend must be one of {list(BACKENDS)}; got {backend!r}.")


def run_suite(name: str, seed: int = 0, out: Path | None = None, quick: bool = False, show_progress: bool = True,
              backend: str = "local", jobs: int = 1, ray_address: str | None = None) -> dict:
    """Run suite ``name`` and return ``{"metrics", "table"}`` (files written to ``out``)."""
    run = get_suite(name)
    module = importlib.import_module(SUITES[name][1].split(":")[0])
    if not hasattr(module, "tasks"):
        if backend != "local" or jobs > 1:
            raise ConfigError(f"suite {name!r} runs as a single unit; it supports only --backend local without --jobs.")
        return run(seed=seed, out=out, quick=quick, progress=show_progress)
    task_list = module.tasks(seed, quick)
    results = map_tasks(module.run_task, task_list, backend, jobs, ray_address, show_progress)
    return module.aggregate(task_list, results, seed, out)
