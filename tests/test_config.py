"""The typed config loader: mappings -> (nested) dataclasses and back, with strict keys and types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest
import yaml

from kcrl.config import dump_yaml, from_mapping, load_yaml, to_mapping
from kcrl.data.templates import MaskingConfig
from kcrl.errors import ConfigError
from kcrl.trainer import PRConfig


@dataclass
class Leaf:
    name: str
    """required: no default"""
    size: int = 1
    rate: float = 0.5


@dataclass
class Inner:
    steps: int = 10
    lr: float = 0.1
    widths: tuple[int, ...] = (4, 8)
    bandwidths: Sequence[float] = (0.1, 1.0)
    budget: float | None = None


@dataclass
class Outer:
    seed: int = 0
    label: str = "x"
    flag: bool = False
    inner: Inner = field(default_factory=lambda: Inner(steps=20))
    maybe: Inner | None = None
    pairs: tuple[tuple[int, int], ...] = ((1, 2),)
    leaves: list[Leaf] = field(default_factory=lambda: [Leaf("a")])
    extra: dict = field(default_factory=dict)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    trainer: PRConfig = field(default_factory=lambda: PRConfig(iterations=7, samples=64))


def test_empty_mapping_gives_the_defaults():
    assert from_mapping(Outer, {}) == Outer()


def test_nested_values_merge_into_the_field_default():
    config = from_mapping(Outer, {"inner": {"lr": 0.3}, "trainer": {"alpha": 2}, "masking": {"max_spans": 2}})
    assert config.inner == Inner(steps=20, lr=0.3)  # steps=20 is Outer's default for inner, kept
    assert config.trainer == PRConfig(iterations=7, samples=64, alpha=2.0)
    assert config.masking == MaskingConfig(max_spans=2)  # a frozen dataclass
    assert isinstance(config.trainer.alpha, float)


def test_base_is_the_starting_point_and_is_not_modified():
    base = from_mapping(Outer, {"seed": 3, "inner": {"steps": 5}})
    config = from_mapping(Outer, {"inner": {"lr": 1.0}}, base=base)
    assert (config.seed, config.inner.steps, config.inner.lr) == (3, 5, 1.0)
    assert base.inner.lr == 0.1
    config.inner.steps = 99
    assert base.inner.steps == 5


def test_lists_become_tuples_and_lists_of_dataclasses_are_built():
    config = from_mapping(
        Outer,
        {
            "inner": {"widths": [1, 2, 3], "bandwidths": [0.5]},
            "pairs": [[3, 4], [5, 6]],
            "leaves": [{"name": "b", "size": 2}, {"name": "c", "rate": 1}],
        },
    )
    assert config.inner.widths == (1, 2, 3) and config.inner.bandwidths == (0.5,)
    assert config.pairs == ((3, 4), (5, 6))
    assert config.leaves == [Leaf("b", size=2), Leaf("c", rate=1.0)]


def test_optional_values_and_numbers():
    config = from_mapping(Outer, {"maybe": {"steps": 3}, "inner": {"budget": 90, "lr": "3e-3"}})
    assert config.maybe == Inner(steps=3)
    assert config.inner.budget == 90.0 and config.inner.lr == 0.003  # PyYAML reads 3e-3 as a string
    assert from_mapping(Outer, {"maybe": None}, base=config).maybe is None


def test_unknown_key_at_depth_names_its_dotted_path():
    with pytest.raises(ConfigError) as info:
        from_mapping(Outer, {"inner": {"setps": 3}})
    assert str(info.value) == (
        "unknown config key 'inner.setps'. Did you mean 'steps'? Known keys of inner (Inner): bandwidths, budget, lr, steps, widths."
    )
    with pytest.raises(ConfigError, match=r"unknown config key 'leaves\[1\]\.sise'\. Did you mean 'size'\? Known keys of leaves\[1\] \(Leaf\): name, rate, size\."):
        from_mapping(Outer, {"leaves": [{"name": "a"}, {"name": "b", "sise": 1}]})
    with pytest.raises(ConfigError, match=r"^unknown config key 'sed'\. Did you mean 'seed'\? Known keys of Outer: extra, flag, "):
        from_mapping(Outer, {"sed": 1})


def test_wrong_types_name_expected_and_got():
    cases = [
        ({"seed": "1"}, "config key 'seed' must be int; got '1' (str)."),
        ({"seed": True}, "config key 'seed' must be int; got True (bool)."),
        ({"flag": 1}, "config key 'flag' must be bool; got 1 (int)."),
        ({"label": 3}, "config key 'label' must be str; got 3 (int)."),
        ({"inner": {"lr": "fast"}}, "config key 'inner.lr' must be float; got 'fast' (str)."),
        ({"inner": 5}, "config key 'inner' must be a mapping (Inner); got 5 (int)."),
        ({"inner": {"widths": 4}}, "config key 'inner.widths' must be a list of int; got 4 (int)."),
        ({"inner": {"widths": [4, "8"]}}, "config key 'inner.widths[1]' must be int; got '8' (str)."),
        ({"inner": {"budget": "soon"}}, "config key 'inner.budget' must be float or null; got 'soon' (str)."),
        ({"maybe": 5}, "config key 'maybe' must be a mapping (Inner) or null; got 5 (int)."),
        ({"maybe": {"lr": "x"}}, "config key 'maybe.lr' must be float; got 'x' (str)."),
        ({"pairs": [[1, 2, 3]]}, "config key 'pairs[0]' must be a list of 2 items (int, int); got 3 item(s): [1, 2, 3]."),
        ({"extra": [1]}, "config key 'extra' must be a mapping; got [1] (list)."),
        ({"leaves": [{"size": 2}]}, "config key 'leaves[0].name' is required (Leaf has no default for it)."),
    ]
    for values, text in cases:
        with pytest.raises(ConfigError) as info:
            from_mapping(Outer, values)
        assert str(info.value) == text, values
    with pytest.raises(ConfigError) as info:
        from_mapping(Outer, [1, 2])
    assert str(info.value) == "a Outer is built from a mapping of keys to values; got list."


def test_a_config_s_own_checks_still_run():
    with pytest.raises(ConfigError, match="mask_fraction must be in"):
        from_mapping(Outer, {"masking": {"mask_fraction": 2.0}})


def test_round_trip_through_yaml():
    config = from_mapping(
        Outer,
        {"seed": 4, "maybe": {"lr": 1e-10}, "pairs": [[3, 4]], "leaves": [{"name": "z"}], "extra": {"k": [1, 2]},
         "inner": {"budget": float("inf")}},
    )
    plain = to_mapping(config)
    assert plain["pairs"] == [[3, 4]] and plain["leaves"] == [{"name": "z", "size": 1, "rate": 0.5}]
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain  # YAML-safe
    assert from_mapping(Outer, plain) == config
    assert from_mapping(Outer, yaml.safe_load(dump_yaml(config))) == config
    assert list(yaml.safe_load(dump_yaml(config))) == [f for f in Outer.__dataclass_fields__]  # declared order
    assert from_mapping(Outer, to_mapping(replace(config, maybe=None))).maybe is None
    commented = dump_yaml(config, comments=True)  # field docs as comments: the same YAML underneath
    assert yaml.safe_load(commented) == to_mapping(config)
    assert "leaves:\n- name: z\n  size: 1" in commented  # a list of dataclasses is written whole, uncommented
    assert "# required: no default" not in commented


def test_field_docs_are_the_attribute_docstrings():
    from kcrl.config import field_docs

    assert field_docs(Leaf) == {"name": "required: no default"}
    assert field_docs(PRConfig)["iterations"] == "number of Algorithm 1 iterations"


def test_to_mapping_rejects_what_yaml_cannot_hold():
    import torch

    with pytest.raises(ConfigError, match=r"config key 'extra.device' holds a device .* which a YAML config cannot hold"):
        to_mapping(Outer(extra={"device": torch.device("cpu")}))


def test_load_yaml_errors(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_yaml(missing)
    assert str(info.value) == f"config file {str(missing)!r} does not exist."
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML"):
        load_yaml(bad)
