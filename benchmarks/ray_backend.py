"""The Ray backend of the suite runner: one Ray task per run, on a local instance or a cluster.

The only module of kcrl that imports ``ray`` (an optional dependency: ``pip install 'kcrl[ray]'``),
and only when :func:`map_ray` runs (:func:`kcrl.benchmarks.runner.map_tasks` with ``backend="ray"``).

Before Ray is asked to connect to a cluster (``--ray-address host:port`` or ``ray://host:port``),
:func:`check_reachable` opens one TCP connection to it with a timeout (``KCRL_RAY_CONNECT_TIMEOUT``
seconds, default 10): a dead or mistyped address is a :class:`~kcrl.errors.ClusterConnectionError`
naming it within that time, where Ray itself would retry for minutes.
"""

from __future__ import annotations

import importlib
import os
import socket

from kcrl.benchmarks.runner import run_in_worker
from kcrl.errors import ClusterConnectionError, ConfigError, MissingDependencyError
from kcrl.progress import progress as progress_bar

CONNECT_TIMEOUT_S = 10.0
"""Seconds to wait for a cluster's address to accept a connection (``KCRL_RAY_CONNECT_TIMEOUT``)."""


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


def _endpoint(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a Ray address, or ``None`` where Ray resolves it itself (``auto``)."""
    text = address.strip()
    default_port = 6379
    if text.startswith("ray://"):
        text, default_port = text[len("ray://"):], 10001
    if text in ("auto", "local", ""):
        return None
    host, sep, port = text.rpartition(":")
    if not sep or host.endswith(":"):  # no port, or a bare IPv6 address
        return text.strip("[]"), default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError(
            f"--ray-address {address!r} is not an address: the port {port!r} is not a number. Use host:port, "
            "ray://host:port or auto."
        ) from None


def connect_timeout() -> float:
    """The timeout of :func:`check_reachable` in seconds (``KCRL_RAY_CONNECT_TIMEOUT``, default 10)."""
    text = os.environ.get("KCRL_RAY_CONNECT_TIMEOUT")
    if text is None:
        return CONNECT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ConfigError(f"KCRL_RAY_CONNECT_TIMEOUT must be a positive number of seconds; got {text!r}.")
    return value


def check_reachable(address: str, timeout: float | None = None) -> None:
    """Raise :class:`~kcrl.errors.ClusterConnectionError` unless ``address`` accepts a TCP connection
    within ``timeout`` seconds (default :func:`connect_timeout`); ``auto`` is left to Ray."""
    endpoint = _endpoint(address)
    if endpoint is None:
        return
    timeout = connect_timeout() if timeout is None else timeout
    try:
        socket.create_connection(endpoint, timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ClusterConnectionError(
            f"could not reach the Ray cluster at {address!r} ({endpoint[0]}:{endpoint[1]}: {reason}, waited at most "
            f"{timeout:g} s). Check that the cluster is running and the address is right (`ray status` on the "
            "head node prints it), raise KCRL_RAY_CONNECT_TIMEOUT for a slow network, or leave out --ray-address "
            "to start a local Ray."
        ) from exc


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
            check_reachable(ray_address)  # bounded: Ray's own connection attempts retry for minutes
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
