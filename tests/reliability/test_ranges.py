"""Values outside their declared ranges, duplicate YAML keys, keys a task does not use, non-UTF-8
files and bad command-line numbers: each a typed error that names the key and the value."""

import pytest

from reliability_common import TINY, kcrl
from kcrl.benchmarks.train import TrainConfig, sample, train
from kcrl.config import RangeError
from kcrl.errors import ConfigError, KcrlError
from kcrl.trainer import PRConfig

BAD = [  # (config values, the start of the message)
    ({"trainer": {"generator_lr": float("nan")}}, "config key 'trainer.generator_lr' must be a finite number >= 0; got nan."),
    ({"trainer": {"constraint_lr": -0.1}}, "config key 'trainer.constraint_lr' must be a finite number >= 0; got -0.1."),
    ({"trainer": {"lam": -1e6}}, "config key 'trainer.lam' must be a finite number >= 0; got -1000000.0."),
    ({"trainer": {"mle_weight": -100}}, "config key 'trainer.mle_weight' must be a finite number >= 0; got -100.0."),
    ({"trainer": {"checkpoint_every": -2}}, "config key 'trainer.checkpoint_every' must be an integer >= 0; got -2."),
    ({"trainer": {"ess_warn_fraction": 2.0}}, "config key 'trainer.ess_warn_fraction' must be a finite number >= 0 and <= 1"),
    ({"trainer": {"alpha": float("inf")}}, "alpha must be a positive finite number"),
    ({"trainer": {"variant": "base"}}, "config key 'trainer.variant' is not used by kcrl train (set the top-level variant)"),
    ({"trainer": {"seed": 3}}, "config key 'trainer.seed' is not used by kcrl train (set the top-level seed)"),
    ({"data_samples": 0}, "config key 'data_samples' must be an integer >= 1; got 0."),
    ({"seed": 2**64}, "config key 'seed' must be an integer >= 0 and < 2**63; got 18446744073709551616."),
    ({"seed": -1}, "config key 'seed' must be an integer >= 0 and < 2**63; got -1."),
    ({"world": {"constraint_scale": float("nan")}}, "config key 'world.constraint_scale' must be a finite number >= 0; got nan."),
    ({"world": {"vocab_size": 2.5}}, "config key 'world.vocab_size' must be int; got 2.5 (float)."),
    ({"world": {"radius": 1.0}}, "unknown world key 'radius'."),
    ({"generator_step": "agent", "agent": {"envs": 0}}, "config key 'agent.envs' must be an integer >= 1; got 0."),
    ({"generator_step": "agent", "agent": {"lr": float("nan")}}, "config key 'agent.lr' must be a finite number >= 0; got nan."),
    ({"task": "oracle", "oracle": {"pretrain": {"lr": float("nan")}}},
     "config key 'oracle.pretrain.lr' must be a finite number >= 0; got nan."),
    ({"task": "oracle", "oracle": {"scorer_dropout": 1.5}}, "config key 'oracle.scorer_dropout' must be a finite number >= 0 and < 1"),
    ({"task": "oracle", "oracle": {"scorer_num_filters": [8, -8, 8, 8]}},
     "config key 'oracle.scorer_num_filters' must be a list of items each an integer >= 1"),
]


@pytest.mark.parametrize("values, text", BAD, ids=[str(v) for v, _ in BAD])
def test_out_of_range_values_are_refused(values, text):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({**TINY, **values, "trainer": {**TINY["trainer"], **values.get("trainer", {})}})
    assert str(info.value).startswith(text), str(info.value)


def test_prconfig_ranges_hold_in_python_too():
    with pytest.raises(RangeError, match="config key 'lam' must be a finite number >= 0; got -1.0. The default is 1.0."):
        PRConfig(lam=-1.0)
    with pytest.raises(RangeError, match="config key 'seed' must be an integer >= 0 and < 2\\*\\*63"):
        PRConfig(seed=2**64)


def test_every_saved_config_reads_back_without_unused_keys(tmp_path):
    config = TrainConfig.from_dict(TINY)
    assert "variant" not in config.to_dict()["trainer"] and "seed" not in config.to_dict()["trainer"]
    assert TrainConfig.from_dict(config.to_dict()) == config
    train(config, tmp_path / "run", show_progress=False, stop_after=1)
    legacy = (tmp_path / "run" / "config.yaml").read_text().replace("trainer:\n", "trainer:\n  variant: learned\n  seed: 0\n")
    (tmp_path / "run" / "config.yaml").write_text(legacy)  # as older kcrl wrote it
    assert TrainConfig.saved(tmp_path / "run") == config


def test_duplicate_keys_and_non_utf8_files(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("seed: 1\ntrainer:\n  iterations: 5\n  iterations: 50\n")
    done = kcrl("train", str(path), "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and "key 'iterations' appears twice in one mapping (line 3 column 3 and line 4 column 3)" in done.stderr
    assert not (tmp_path / "run").exists()  # refused before the folder was made
    path.write_bytes(b"seed: 1\nvariant: \xe9t\xe9\n")
    done = kcrl("train", str(path), "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and "is not UTF-8 text (byte 0xe9 at offset 17)" in done.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranges") / "run"
    train(TrainConfig.from_dict(TINY), out, show_progress=False)
    return out


@pytest.mark.parametrize("n, seed, text", [
    (-5, 0, "the number of samples (-n) must be an integer from 1 to 1,000,000; got -5."),
    (0, 0, "got 0."),
    (3, 2**70, "the sampling seed (--seed) must be an integer in [0, 2**64); got 1180591620717411303424."),
    (3, -1, "got -1."),
])
def test_sample_arguments(run, n, seed, text):
    with pytest.raises(ConfigError) as info:
        sample(run, n, seed)
    assert text in str(info.value) and isinstance(info.value, KcrlError)


def test_kcrl_sample_on_the_command_line(run):
    done = kcrl("sample", str(run), "-n", "-5")
    assert done.returncode == 2 and "must be an integer from 1" in done.stderr and "Traceback" not in done.stderr
    done = kcrl("sample", str(run), "-n", "2", "--seed", str(2**64))
    assert done.returncode == 2 and "[0, 2**64)" in done.stderr
    assert kcrl("sample", str(run), "-n", "2", "--seed", str(2**64 - 1)).returncode == 0
