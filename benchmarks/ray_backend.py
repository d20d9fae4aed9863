"""The Ray backend of the suite runner: one Ray task per run, on a local instance or a cluster.

The only module of kcrl that imports ``ray`` (an optional dependency: ``pip install 'kcrl[ray]'``),
and only when :func:`map_ray` runs (:func:`kcrl.benchmarks.runner.map_tasks` with ``backend="ray"``).
"""

from __future__ import annotations

import importlib
import os

from kcrl.benchmarks.runner import run_in_worker
from kcrl.errors import ConfigError, MissingDependencyError
from kcrl.progress import progress as progress_bar


def _import_ray():
    """``ray``, or a :class:`~kcrl.errors.MissingDependencyError` naming the extra."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(
            "'ray' is not installed; it is an optional dependency of kcrl. Install it with: pip install 'kcrl[ray]'"
        ) from exc
    return ray


def _probe_worker(module: str) -> str:
    """Imports the suite's module in a Ray worker; returns the kcrl version found there."""
    importlib.import_module(module)
    from importlib.metadata import version

    return version("kcrl")


def map_ray(run_task, task_list: list, jobs: int, ray_address: str | None, show_progress: bool) -> list:
    """Run ``run_task`` on every task as Ray tasks (one CPU each); results in task order."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        runtime_env = {"env_vars": {"OMP_NUM_THREADS": "1"}}
        ray_address = ray_address or os.environ.get("RAY_ADDRESS") or None  # set inside `ray job submit`
        if ray_address is None:  # "local": a fresh instance, even if another one runs on this machine
            ray.init(address="local", num_cpus=jobs, include_dashboard=False, log_to_driver=False,
                     runtime_env=runtime_env)
        else:
            try:
                ray.init(address=ray_address, log_to_driver=False, runtime_env=runtime_env)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                cause = f" ({str(exc.__cause__).splitlines()[-1]})" if exc.__cause__ is not None else ""
                raise ConfigError(
                    f"could not connect to the Ray cluster at {ray_address!r}: {exc}{cause}. Check the address "
                    "(`ray status` on the head node prints it; `auto` finds a cluster started on this machine); "
                    "a cluster with token authentication also needs RAY_AUTH_MODE=token and its token "
                    "(~/.ray/auth_token or RAY_AUTH_TOKEN). Or leave out --ray-address to start a local Ray."
                ) from exc
    try:
        module = getattr(run_task, "__module__", None)
        if module and module != "__main__":
            try:
                remote_version = ray.get(ray.remote(num_cpus=0)(_probe_worker).remote(module))
            except ray.exceptions.RayError as exc:
                raise MissingDependencyError(
                    f"Ray workers cannot import {module!r}: {exc}. Install the same kcrl on every node of the "
                    "cluster (e.g. `pip install -e .` from the same commit), then run again."
                ) from exc
            from importlib.metadata import version

            if remote_version != version("kcrl"):
                raise ConfigError(
                    f"the Ray workers run kcrl {remote_version}, this process runs kcrl {version('kcrl')}; "
                    "install the same version on every node so that results are comparable."
                )
        remote = ray.remote(num_cpus=1)(run_in_worker)
        refs = [remote.remote(run_task, t) for t in task_list]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list = [None] * len(refs)
        pending = list(refs)
        with progress_bar(None, "runs", enabled=show_progress, total=len(refs)) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    results[index[ref]] = ray.get(ref)
                bar.update(len(done))
        return results
    finally:
        if started_here:
            ray.shutdown()
