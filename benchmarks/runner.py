"""Runs a suite on a backend: in this process, in local processes, or as Ray tasks.

A suite module either exposes ``run(seed, out, quick, progress, config)`` only (it runs as one
unit), or also ``tasks(seed, quick, config) -> list`` of independent runs, ``run_task(task) -> dict``
and ``aggregate(tasks, results, seed, out) -> {"metrics", "table"}``. ``config`` is the suite's
resolved config (:func:`kcrl.benchmarks.suite_config`: its YAML size, then a user's overrides);
``quick`` only labels the output. Then the runs are spread over the
backend, and the table is the same whatever the backend, because each run is seeded on its own
and every worker computes with one thread.

Backends:

- ``local`` with ``jobs=1``: in this process, one run after the other.
- ``local`` with ``jobs=N``: N fresh worker processes (``spawn``, so nothing of this process's
  torch or CUDA state is inherited).
- ``ray``: one Ray task (1 CPU) per run. Without ``ray_address`` a local Ray instance with ``jobs``
  CPUs is started and shut down again at the end; with ``ray_address`` (``"auto"``,
  ``"ray://host:10001"`` or ``"host:6379"``; or the ``RAY_ADDRESS`` variable, which ``ray job submit``
  sets) an existing cluster is used and left running. Every
  node must have the same kcrl installed (``pip install -e .`` or the same wheel): the workers
  import the suite module by name. If Ray is already initialised in this process, that instance
  is used and left running.

The output folder is checked before any run starts (a file in its place, a path under a file, a
folder that cannot be written, a full disk; one that holds a finished suite's ``results.json``
needs ``force``) and locked until the results are written (:class:`kcrl.runlock.RunLock`), so that
two suites never write one folder and no compute is lost to a folder that cannot hold its results.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import pickle
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from kcrl.benchmarks import SUITES, get_suite, suite_config, suite_schema
from kcrl.errors import ConfigError, OutputFolderError, unknown_name
from kcrl.progress import progress as progress_bar
from kcrl.runlock import RunLock, check_output_folder

BACKENDS = ("local", "ray")


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def run_in_worker(run_task: Callable[[Any], Any], task: Any) -> Any:
    """One run in a worker process (local pool or Ray): one thread, like the in-process runs."""
    _init_worker()
    return run_task(task)


def _check_jobs(jobs: int) -> int:
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"jobs must be a positive integer (the number of parallel runs); got {jobs!r}.")
    return jobs


def _map_local_pool(run_task, task_list: list, jobs: int, show_progress: bool) -> list:
    try:  # worker processes receive the function and the tasks by pickle
        pickle.dumps(run_task)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ConfigError(
            f"run_task must be a module-level function that worker processes can import; got {run_task!r} "
            f"({exc}). Define it at the top level of a module, or use jobs=1."
        ) from exc
    results: list = [None] * len(task_list)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, max(len(task_list), 1)), mp_context=context,
                             initializer=_init_worker) as pool:
        futures = {pool.submit(run_in_worker, run_task, t): i for i, t in enumerate(task_list)}
        for future in progress_bar(as_completed(futures), "runs", enabled=show_progress, total=len(futures)):
            results[futures[future]] = future.result()
    return results


def map_tasks(run_task: Callable[[Any], Any], task_list: list, backend: str = "local", jobs: int = 1,
              ray_address: str | None = None, show_progress: bool = True) -> list:
    """``[run_task(t) for t in task_list]`` on the chosen backend, results in task order.

    ``run_task`` must be a module-level function (workers import it by name) and each task
    picklable. ``jobs`` is the number of parallel workers (local processes, or CPUs of a local Ray).
    """
    if backend not in BACKENDS:
        raise unknown_name("backend", backend, BACKENDS)
    jobs = _check_jobs(jobs)
    if ray_address is not None and backend != "ray":
        raise ConfigError(f"ray_address is only used with backend 'ray'; got backend {backend!r}. Add --backend ray.")
    if backend == "local":
        if jobs == 1:
            return [run_task(t) for t in progress_bar(task_list, "runs", enabled=show_progress)]
        return _map_local_pool(run_task, task_list, jobs, show_progress)
    from kcrl.benchmarks.ray_backend import map_ray  # needs ray (MissingDependencyError otherwise)

    return map_ray(run_task, task_list, jobs, ray_address, show_progress)


def check_suite_folder(out: Path, force: bool = False) -> Path:
    """``out`` created and proven writable (:func:`kcrl.runlock.check_output_folder`); one that holds a
    finished suite's results is refused unless ``force`` (``kcrl bench --force``)."""
    out = check_output_folder(out)
    if (out / "results.json").exists() and not force:
        raise OutputFolderError(
            f"--out {str(out)!r} already holds a suite's results (results.json); pass --force to replace them, or "
            "choose another --out."
        )
    return out


def run_suite(name: str, seed: int = 0, out: Path | None = None, quick: bool = False, show_progress: bool = True,
              backend: str = "local", jobs: int = 1, ray_address: str | None = None, config: Any = None,
              force: bool = False) -> dict:
    """Run suite ``name`` and return ``{"metrics", "table"}`` (files written to ``out``).

    ``config`` is the suite's config (default: :func:`~kcrl.benchmarks.suite_config` of ``name`` and
    ``quick``). A suite whose ``run`` takes no typed config runs without one. ``out`` is checked
    (:func:`check_suite_folder`; ``force`` replaces earlier results) and locked before anything runs.
    """
    run = get_suite(name)
    if backend not in BACKENDS:
        raise unknown_name("backend", backend, BACKENDS)
    module = importlib.import_module(SUITES[name][1].split(":")[0])
    if config is None and suite_schema(name) is not None:
        config = suite_config(name, quick)
    with_config = {} if config is None else {"config": config}
    if not hasattr(module, "tasks") and (backend != "local" or jobs != 1 or ray_address is not None):
        raise ConfigError(f"suite {name!r} runs as a single unit; it supports only --backend local without --jobs.")
    lock = None
    if out is not None:
        out = check_suite_folder(Path(out), force)
        lock = RunLock(out).acquire()
    try:
        if not hasattr(module, "tasks"):
            return run(seed=seed, out=out, quick=quick, progress=show_progress, **with_config)
        task_list = module.tasks(seed, quick, **with_config)
        results = map_tasks(module.run_task, task_list, backend, jobs, ray_address, show_progress)
        return module.aggregate(task_list, results, seed, out)
    finally:
        if lock is not None:
            lock.release()
