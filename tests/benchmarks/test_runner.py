"""The suite runner: every backend gives the same runs, hence the same table, for the same seeds."""

import importlib.util
import sys

import pytest

from kcrl.benchmarks import tabular_joint
from kcrl.benchmarks.runner import map_tasks, run_suite
from kcrl.errors import ConfigError, MissingDependencyError, UnknownNameError
from kcrl.trainer import PRConfig

HAS_RAY = importlib.util.find_spec("ray") is not None

# Small enough that all four runs take about a second in one process.
TINY = tabular_joint.TabularJointConfig(
    vocab_size=3, length=3, data_samples=500, seeds=2, variants=("base", "learned"),
    trainer=PRConfig(iterations=20, samples=256, data_batch=128, mle_weight=0.1, constraint_steps=2, checkpoint_every=0),
)


@pytest.fixture(scope="module")
def tiny_tasks():
    return tabular_joint.tasks(seed=0, config=TINY)


@pytest.fixture(scope="module")
def in_process(tiny_tasks):
    return [tabular_joint.run_task(t) for t in tiny_tasks]


def test_tiny_suite_has_one_task_per_variant_and_seed(tiny_tasks):
    assert [(t["variant"], t["seed"]) for t in tiny_tasks] == [("base", 0), ("base", 1), ("learned", 0), ("learned", 1)]


def test_local_process_pool_matches_in_process_runs(tiny_tasks, in_process):
    pooled = map_tasks(tabular_joint.run_task, tiny_tasks, backend="local", jobs=2, show_progress=False)
    assert pooled == in_process  # bit for bit: each run seeds itself and uses one thread


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'kcrl[ray]')")
def test_ray_backend_gives_the_same_table_as_local(tiny_tasks, in_process, tmp_path):
    import ray

    assert not ray.is_initialized()
    on_ray = map_tasks(tabular_joint.run_task, tiny_tasks, backend="ray", jobs=2, show_progress=False)
    assert not ray.is_initialized()  # the Ray instance the runner started is shut down again
    assert on_ray == in_process
    local = tabular_joint.aggregate(tiny_tasks, in_process, 0, tmp_path / "local")
    remote = tabular_joint.aggregate(tiny_tasks, on_ray, 0, tmp_path / "ray")
    assert remote["table"] == local["table"]
    assert remote["metrics"] == local["metrics"]
    for name in ("results.json", "results.md"):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "local" / name).read_text()
    assert "| learned |" in remote["table"]


def test_unknown_backend_is_named_with_a_suggestion(tiny_tasks):
    with pytest.raises(UnknownNameError) as info:
        map_tasks(tabular_joint.run_task, tiny_tasks, backend="rey")
    assert str(info.value) == "unknown backend 'rey'. Did you mean 'ray'? Known: local, ray."
    with pytest.raises(UnknownNameError, match="unknown backend 'dask'"):
        run_suite("tabular-joint", backend="dask")


@pytest.mark.parametrize("jobs", [0, -1, 1.5])
def test_jobs_must_be_a_positive_integer(jobs):
    with pytest.raises(ConfigError, match=r"jobs must be a positive integer .*; got"):
        map_tasks(tabular_joint.run_task, [], backend="local", jobs=jobs)


def test_local_pool_needs_an_importable_function():
    with pytest.raises(ConfigError, match="run_task must be a module-level function that worker processes can import"):
        map_tasks(lambda task: task, [1, 2], backend="local", jobs=2)


def test_ray_address_needs_the_ray_backend():
    with pytest.raises(ConfigError, match="ray_address is only used with backend 'ray'"):
        map_tasks(tabular_joint.run_task, [], backend="local", ray_address="auto")


def test_single_unit_suite_rejects_other_backends():
    with pytest.raises(ConfigError, match="runs as a single unit"):
        run_suite("tabular-exact", backend="ray")


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'kcrl\[ray\]'"):
        map_tasks(tabular_joint.run_task, [], backend="ray")
