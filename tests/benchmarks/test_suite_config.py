"""Declarative suite sizes: benchmarks/suites/SUITE.yaml over the config dataclasses, user overrides,
``kcrl bench --print-config`` / ``--config``, and the resolved config saved with every result."""

from __future__ import annotations

import importlib
import json
from dataclasses import replace

import pytest
import yaml

from kcrl.benchmarks import SUITE_DIR, SUITES, suite_config, suite_file, suite_schema
from kcrl.benchmarks.report import write_results
from kcrl.cli import main
from kcrl.config import from_mapping, to_mapping

WITH_YAML = sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))


def _module(name: str):
    return importlib.import_module(SUITES[name][1].split(":")[0])


def test_every_suite_has_a_sizes_file():
    assert set(WITH_YAML) == set(SUITES)


def test_a_suite_without_sizes_file_is_refused(tmp_path, monkeypatch):
    import kcrl.benchmarks as benchmarks
    from kcrl.errors import ConfigError

    monkeypatch.setattr(benchmarks, "SUITE_DIR", tmp_path)
    with pytest.raises(ConfigError) as info:
        suite_config("tabular-exact")
    assert str(info.value) == (f"suite 'tabular-exact' has no sizes file {str(tmp_path / 'tabular-exact.yaml')!r}; "
                               "add one with `full:` and `quick:` mappings.")


@pytest.mark.parametrize("name", WITH_YAML)
@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_suite_config_loads_and_round_trips(name, quick):
    config = suite_config(name, quick)
    schema = suite_schema(name)
    assert type(config) is schema
    plain = to_mapping(config)
    assert from_mapping(schema, plain) == config
    assert from_mapping(schema, yaml.safe_load(yaml.safe_dump(plain, sort_keys=False))) == config


@pytest.mark.parametrize("name", WITH_YAML)
def test_one_source_of_truth_for_the_sizes(name):
    """The YAML holds the sizes: the full size is the dataclass defaults, and no module keeps a
    quick_config() beside its YAML."""
    assert suite_config(name) == suite_schema(name)()
    assert not hasattr(_module(name), "quick_config")
    doc = yaml.safe_load(suite_file(name).read_text())
    assert set(doc) == {"full", "quick"}
    assert suite_file(name).read_text().startswith("# "), "each suite file opens with a comment header"


def _previous_quick_sizes() -> dict:
    """The quick sizes as the suites built them before the YAML files (quick_config() and the inline
    adjustments of run/tasks), spelled out so that moving them changed no number."""
    from kcrl.models.image_generator import ImageGeneratorArgs
    from kcrl.models.implicit_image_generator import ImplicitImageGeneratorArgs
    from kcrl.models.lstm_generator import MLEArgs as LSTMMLEArgs
    from kcrl.models.text_generator import MLEArgs as TextMLEArgs
    from kcrl.benchmarks import (
        agent_cost,
        onestep_base,
        oracle_mle,
        paper_image,
        paper_text,
        tabular_exact,
        tabular_joint,
        template_base,
        throughput,
    )

    joint = tabular_joint.TabularJointConfig()
    cost = agent_cost.AgentCostConfig()
    ring = onestep_base.RingBaseConfig()
    ring.generator.steps = min(ring.generator.steps, 1500)
    digits = onestep_base.DigitsBaseConfig()
    digits.generator.epochs = 1
    digits.generator.pairs_per_epoch = min(digits.generator.pairs_per_epoch, 2000)
    settings = throughput._default_sb3_settings()
    return {
        "tabular-exact": tabular_exact.TabularExactConfig(),
        "tabular-joint": replace(joint, seeds=2, trainer=replace(joint.trainer, iterations=200)),
        "agent-cost": replace(cost, sizes=cost.sizes[:1]),
        "throughput": throughput.ThroughputConfig(
            env_seconds=0.15, repeats=1, agent_tasks=((4, 4),), agent_iterations=4, sb3_tokens=2048,
            sb3=[settings[0], settings[2], settings[4]],
        ),
        "ring-base": ring,
        "digits-base": digits,
        "template-base": template_base.TemplateBaseConfig(
            mle=TextMLEArgs(steps=200, batch_size=64, lr=3e-3, time_budget_s=90.0), eval_templates=300,
            self_bleu_samples=200, measure_build=False,
        ),
        "oracle-mle": oracle_mle.OracleMLEConfig(
            vocab_size=500, length=10, train_samples=2_000, valid_samples=500, test_samples=2_000,
            eval_samples=2_000, mle=LSTMMLEArgs(epochs=15, keep_best=False), curve_every=5, curve_samples=500,
        ),
        "paper-text": paper_text.PaperTextConfig(  # equal iteration budgets since the wall-clock ones were dropped
            variants=("checkpoint", "base", "fixed", "learned"), eval_templates=200, heldout_sentences=256,
            trainer=replace(paper_text.PaperTextConfig().trainer, iterations=20),
        ),
        "paper-image": paper_image.PaperImageConfig(
            base=ImageGeneratorArgs(channels=16, epochs=6, pairs_per_epoch=4000), train_pairs=2000, test_pairs=300,
            implicit=ImplicitImageGeneratorArgs(channels=16),  # the implicit model's quick size (new, generator: implicit)
            trainer=replace(paper_image.PaperImageConfig().trainer, iterations=120, data_batch=32, contexts=8,
                            samples_per_context=8),
        ),
    }


def test_quick_sizes_equal_the_previous_ones():
    previous = _previous_quick_sizes()
    assert set(previous) <= set(WITH_YAML)
    for name, config in previous.items():
        assert suite_config(name, quick=True) == config, name


def test_user_overrides_apply_on_top_of_the_size(tmp_path):
    path = tmp_path / "over.yaml"
    path.write_text("seeds: 1\nvariants: [base, learned]\ntrainer:\n  samples: 128\n")
    config = suite_config("tabular-joint", quick=True, path=path)
    assert (config.seeds, config.variants) == (1, ("base", "learned"))
    assert (config.trainer.iterations, config.trainer.samples, config.trainer.mle_weight) == (200, 128, 0.1)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert suite_config("tabular-joint", path=empty) == suite_config("tabular-joint")


def test_write_results_saves_the_resolved_config(tmp_path):
    config = suite_config("tabular-joint", quick=True)
    write_results(tmp_path, "tabular-joint", 3, config, {"x": 1.0}, "table")
    record = json.loads((tmp_path / "results.json").read_text())
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved == record["config"] == to_mapping(config)
    assert (tmp_path / "config.yaml").read_text().startswith("# the resolved config of suite tabular-joint (run with --seed 3)")
    assert suite_config("tabular-joint", path=tmp_path / "config.yaml") == config  # it reads back
    assert "`kcrl bench tabular-joint --seed 3 --config config.yaml` reruns it" in (tmp_path / "results.md").read_text()


# ---------------------------------------------------------------------- the command line
def test_cli_print_config(capsys):
    assert main(["bench", "tabular-exact", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# kcrl bench tabular-exact: the resolved TabularExactConfig\n")
    assert yaml.safe_load(out) == to_mapping(suite_config("tabular-exact"))
    assert main(["bench", "tabular-joint", "--print-config", "--quick"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seeds"] == 2 and printed["trainer"]["iterations"] == 200


def test_cli_print_config_describes_every_field(capsys):
    assert main(["bench", "tabular-joint", "--print-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[lines.index("trainer:") - 2].startswith("# Algorithm 1 settings shared by the variants")  # wrapped
    at = lines.index("  iterations: 400")
    assert lines[at - 1] == "  # number of Algorithm 1 iterations"  # nested fields are described at their depth


def _undocumented(config, where: str = "") -> list[str]:
    import dataclasses

    from kcrl.config import field_docs

    docs, missing = field_docs(type(config)), []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name not in docs:
            missing.append(f"{where}{f.name} ({type(config).__name__})")
        if dataclasses.is_dataclass(value):
            missing += _undocumented(value, f"{where}{f.name}.")
    return missing


@pytest.mark.parametrize("name", WITH_YAML)
def test_every_config_field_is_documented_and_the_commented_yaml_reads_back(name):
    from kcrl.config import dump_yaml

    config = suite_config(name, quick=True)
    assert _undocumented(config) == []
    assert yaml.safe_load(dump_yaml(config, comments=True)) == to_mapping(config)


def test_cli_config_with_an_unknown_key_exits_2(tmp_path, capsys):
    path = tmp_path / "over.yaml"
    path.write_text("irl:\n  stepz: 3\n")
    assert main(["bench", "tabular-exact", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kcrl: error: config file {str(path)!r}: unknown config key 'irl.stepz'. Did you mean 'steps'?")
    assert not (tmp_path / "out").exists()  # rejected before anything ran


def test_cli_runs_a_suite_with_overrides(tmp_path, capsys):
    """A tiny tabular-joint through ``kcrl bench --config``: the overrides reach the runs, and the
    resolved config is saved with the result."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "vocab_size: 3\nlength: 3\ndata_samples: 300\nseeds: 1\nvariants: [base, learned]\n"
        "trainer: {iterations: 10, samples: 128, data_batch: 64, constraint_steps: 1}\n"
    )
    out = tmp_path / "out"
    code = main(["bench", "tabular-joint", "--config", str(path), "--out", str(out), "--no-progress"])
    assert code in (0, 1)  # 1: the target is out of reach at this size
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved == to_mapping(suite_config("tabular-joint", path=path))
    assert json.loads((out / "results.json").read_text())["metrics"]["seeds"] == [0]
    assert "10 iterations" in capsys.readouterr().out


def test_cli_runs_a_single_unit_suite_with_overrides(tmp_path, capsys):
    """tabular-exact (one ``run``, no tasks) gets the resolved config too."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "vocab_size: 3\nlength: 3\ndata_samples: 200\nnum_envs: 32\n"
        "irl: {steps: 3, proposal_samples: 128}\nagent: {iterations: 2}\n"
    )
    out = tmp_path / "out"
    assert main(["bench", "tabular-exact", "--config", str(path), "--out", str(out), "--no-progress"]) in (0, 1)
    saved = from_mapping(suite_schema("tabular-exact"), yaml.safe_load((out / "config.yaml").read_text()))
    assert (saved.num_envs, saved.irl.steps, saved.agent.iterations) == (32, 3, 2)
    assert saved == suite_config("tabular-exact", path=path)  # --seed 0: the seeds it sets inside are 0 too
    assert "KL(p_data" in capsys.readouterr().out
