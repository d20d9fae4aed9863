"""What a run logs: kcrl train's TensorBoard has the task's quality metrics, kcrl evaluate explains its numbers."""

from __future__ import annotations

import json

import pytest

from kcrl.benchmarks.train import METRIC_DESCRIPTIONS, TrainConfig, train


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig.from_dict({"seed": 1, "data_samples": 500, "trainer": {"iterations": 4, "samples": 128}})
    metrics = train(config, out, show_progress=False, tensorboard=True, handle_signals=False)
    return out, metrics


def test_tensorboard_has_the_tasks_quality_metric(tabular_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, metrics = tabular_run
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "eval/kl_data_to_generator" in tags  # the task's measure, not only the trainer's scalars
    last = events.Scalars("eval/kl_data_to_generator")[-1]
    assert last.step == 4 and last.value == pytest.approx(metrics["kl_data_to_generator"], rel=1e-5)
    assert any(t.startswith("weights/") for t in tags)


def test_evaluate_explains_every_number(tabular_run, capsys):
    from kcrl.cli import main

    out, _ = tabular_run
    assert main(["evaluate", str(out)]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)  # stdout stays JSON
    lines = dict(line.split(": ", 1) for line in captured.err.strip().splitlines())
    assert set(lines) == set(metrics) == {"iteration", "kl_data_to_generator", "kl_data_to_posterior"}
    assert "not a failure" in lines["kl_data_to_posterior"]
    assert all(lines[k] == METRIC_DESCRIPTIONS[k] for k in metrics)


def test_oracle_metrics_have_descriptions():
    from kcrl.oracle_metrics import evaluate_generator  # noqa: F401  (the keys below are its own)

    assert {"nll_oracle", "nll_oracle_ci95", "heldout_nll", "self_nll"} <= set(METRIC_DESCRIPTIONS)
