"""The rl-zoo-style hyperparameter files: they load, they fit their libraries, and bad keys fail with the fix."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest
from torch import nn

import kcrl  # noqa: F401  (registers the envs)
from kcrl.agents.hyperparams import (
    LIBRARIES,
    hyperparams_path,
    known_hyperparameters,
    load_hyperparams,
    read_file,
)
from kcrl.agents.sb3 import sb3_policy_kwargs
from kcrl.agents.soft_pg import SoftPGArgs
from kcrl.errors import ConfigError, UnknownNameError

ENV = "TabularSequence-v0"


def message(exc_type, fn, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------- the shipped files
@pytest.mark.parametrize("library", LIBRARIES)
def test_shipped_files_load_and_are_installed_as_package_data(library):
    assert hyperparams_path(library).is_file()
    hp = load_hyperparams(library, ENV)
    assert hp["n_envs"] >= 1 and hp["n_timesteps"] >= 1
    assert set(hp) <= set(known_hyperparameters(library))


def test_every_library_gets_the_same_budget():
    assert len({load_hyperparams(lib, ENV)["n_timesteps"] for lib in LIBRARIES}) == 1


def test_kcrl_keys_are_soft_pg_args_fields():
    hp = load_hyperparams("kcrl", ENV)
    names = {f.name for f in fields(SoftPGArgs)}
    assert set(hp) - {"n_envs", "n_timesteps"} <= names
    args = SoftPGArgs(**{k: v for k, v in hp.items() if k not in ("n_envs", "n_timesteps")})
    assert args.entropy_coef == 1.0  # the soft-optimal policy q is the agent's optimum


def test_sb3_file_builds_a_ppo_model():
    from stable_baselines3 import PPO

    from kcrl.agents.sb3 import TokenFeatureExtractor, make_sb3_vec_env

    hp = load_hyperparams("sb3", ENV, overrides={"n_envs": 4, "n_steps": 8, "batch_size": 32})
    assert set(hp) - {"n_envs", "n_timesteps"} <= set(inspect.signature(PPO.__init__).parameters)
    policy_kwargs = sb3_policy_kwargs(hp["policy_kwargs"])
    assert policy_kwargs["features_extractor_class"] is TokenFeatureExtractor and policy_kwargs["activation_fn"] is nn.Tanh
    assert hp["policy_kwargs"]["activation_fn"] == "tanh"  # the loaded dict itself stays plain YAML
    kwargs = {k: v for k, v in hp.items() if k not in ("n_envs", "n_timesteps", "policy", "policy_kwargs")}
    model = PPO(hp["policy"], make_sb3_vec_env(ENV, hp["n_envs"], seed=0), policy_kwargs=policy_kwargs, seed=0, **kwargs)
    assert model.n_steps == 8 and model.ent_coef == hp["ent_coef"]


def test_tianshou_keys_are_the_runner_parameters_with_tianshou_defaults():
    pytest.importorskip("tianshou")
    from tianshou.algorithm import PPO

    from kcrl.agents.tianshou import train_tianshou_ppo

    runner = inspect.signature(train_tianshou_ppo).parameters
    keyword_only = {n for n, p in runner.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(load_hyperparams("tianshou", ENV)) <= keyword_only
    assert set(known_hyperparameters("tianshou")) == keyword_only
    shared = set(inspect.signature(PPO.__init__).parameters) & keyword_only
    assert {"eps_clip", "ent_coef", "gae_lambda", "gamma", "advantage_normalization"} <= shared
    for name in shared:  # the runner's defaults are Tianshou's own
        assert runner[name].default == inspect.signature(PPO.__init__).parameters[name].default, name


def test_overrides_replace_the_file_values():
    hp = load_hyperparams("kcrl", ENV, overrides={"lr": 0.5, "n_envs": 8})
    assert hp["lr"] == 0.5 and hp["n_envs"] == 8
    assert load_hyperparams("kcrl", ENV)["lr"] != 0.5  # the file's dict is not modified


# ------------------------------------------------------------------------- the errors
def test_unknown_library_and_env_id():
    assert message(UnknownNameError, load_hyperparams, "sb", ENV) == (
        "unknown hyperparameter library 'sb'. Did you mean 'sb3'? Known: kcrl, sb3, tianshou."
    )
    assert message(UnknownNameError, load_hyperparams, "sb3", "TabularSequence-v1") == (
        "unknown environment id in sb3.yaml 'TabularSequence-v1'. Did you mean 'TabularSequence-v0'? "
        "Known: TabularSequence-v0."
    )


def test_unknown_kcrl_key_names_it_suggests_and_lists_the_known():
    assert message(ConfigError, load_hyperparams, "kcrl", ENV, {"entropy_coeff": 0.5}) == (
        "unknown kcrl hyperparameter 'entropy_coeff' (overrides). Did you mean 'entropy_coef'? "
        "Known (the fields of kcrl.agents.soft_pg.SoftPGArgs plus n_envs, n_timesteps): amp, clip_coef, "
        "embed_dim, entropy_coef, hidden, lr, lr_decay, max_grad_norm, n_envs, n_timesteps, update_epochs."
    )


def test_unknown_sb3_key_lists_the_ppo_parameters():
    from stable_baselines3 import PPO

    known = sorted((set(inspect.signature(PPO.__init__).parameters) - {"self", "env", "seed", "_init_setup_model"})
                   | {"n_envs", "n_timesteps"})
    assert message(ConfigError, load_hyperparams, "sb3", ENV, {"learning_rat": 0.1}) == (
        "unknown sb3 hyperparameter 'learning_rat' (overrides). Did you mean 'learning_rate'? "
        f"Known (the parameters of stable_baselines3.PPO plus n_envs, n_timesteps): {', '.join(known)}."
    )


def test_unknown_tianshou_key_lists_the_runner_parameters():
    known = sorted(known_hyperparameters("tianshou"))
    assert message(ConfigError, load_hyperparams, "tianshou", ENV, {"clip_range": 0.1}) == (
        "unknown tianshou hyperparameter 'clip_range' (overrides). "
        f"Known (the keyword parameters of kcrl.agents.tianshou.train_tianshou_ppo): {', '.join(known)}."
    )


def test_reserved_keys_say_where_the_value_comes_from():
    assert message(ConfigError, load_hyperparams, "kcrl", ENV, {"seed": 3}) == (
        "'seed' cannot be set in kcrl hyperparameters (overrides): the seed comes from the caller (e.g. kcrl bench --seed)."
    )
    assert message(ConfigError, load_hyperparams, "kcrl", ENV, {"iterations": 10}) == (
        "'iterations' cannot be set in kcrl hyperparameters (overrides): it is derived from the budget as "
        "n_timesteps / (n_envs * episode length)."
    )
    assert message(ConfigError, load_hyperparams, "sb3", ENV, {"env": "CartPole-v1"}) == (
        "'env' cannot be set in sb3 hyperparameters (overrides): the environment is the entry's id."
    )


def test_value_types():
    assert message(ConfigError, load_hyperparams, "kcrl", ENV, {"lr": "1e-3"}) == (
        "kcrl hyperparameter 'lr' must be a number; got '1e-3' (overrides). YAML reads 1e-3 as a string: "
        "write 0.001 or 1.0e-3."
    )
    assert message(ConfigError, load_hyperparams, "sb3", ENV, {"n_epochs": True}) == (
        "sb3 hyperparameter 'n_epochs' must be an integer; got True (overrides)."
    )
    assert message(ConfigError, load_hyperparams, "kcrl", ENV, {"lr_decay": 1}) == (
        "kcrl hyperparameter 'lr_decay' must be true or false; got 1 (overrides)."
    )
    assert message(ConfigError, load_hyperparams, "tianshou", ENV, {"n_envs": 0}) == (
        "tianshou hyperparameter 'n_envs' must be a positive integer; got 0 (overrides)."
    )


def test_sb3_policy_kwargs_are_checked_against_the_policy_class():
    text = message(ConfigError, load_hyperparams, "sb3", ENV, {"policy_kwargs": {"net_arc": [64]}})
    assert text.startswith(
        "unknown sb3 policy_kwargs key 'net_arc' (overrides). Did you mean 'net_arch'? "
        "Known (the parameters of MultiInputActorCriticPolicy): activation_fn, "
    )
    assert message(UnknownNameError, load_hyperparams, "sb3", ENV, {"policy_kwargs": {"activation_fn": "tanhh"}}) == (
        "unknown activation_fn 'tanhh'. Did you mean 'tanh'? Known: elu, leaky_relu, relu, tanh."
    )
    assert message(UnknownNameError, load_hyperparams, "sb3", ENV, {"policy": "MultiInputPolicyy"}) == (
        "unknown SB3 PPO policy 'MultiInputPolicyy'. Did you mean 'MultiInputPolicy'? "
        "Known: CnnPolicy, MlpPolicy, MultiInputPolicy."
    )
    assert message(UnknownNameError, load_hyperparams, "tianshou", ENV, {"activation": "sigmoid"}) == (
        "unknown activation 'sigmoid'. Known: elu, leaky_relu, relu, tanh."
    )


def test_errors_in_a_file_name_the_file_and_entry(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("TabularSequence-v0:\n  n_envs: 4\n  n_timesteps: 64\n  hiden: 32\n")
    assert message(ConfigError, load_hyperparams, "kcrl", ENV, path=path).startswith(
        "unknown kcrl hyperparameter 'hiden' (mine.yaml, TabularSequence-v0). Did you mean 'hidden'? Known ("
    )
    path.write_text("TabularSequence-v0:\n  n_timesteps: 64\n")
    assert message(ConfigError, load_hyperparams, "kcrl", ENV, path=path) == (
        "kcrl hyperparameters for TabularSequence-v0 need 'n_envs' (mine.yaml): the number of parallel sub-envs."
    )
    path.write_text("TabularSequence-v0: [1, 2]\n")
    assert message(ConfigError, load_hyperparams, "kcrl", ENV, path=path) == (
        "kcrl hyperparameters must be a mapping of keys to values; got [1, 2] (mine.yaml, TabularSequence-v0)."
    )
    path.write_text("TabularSequence-v0: {n_envs: [\n")
    assert message(ConfigError, read_file, "kcrl", path).startswith(f"hyperparameter file {str(path)!r} is not valid YAML: ")
    assert message(ConfigError, read_file, "kcrl", tmp_path / "none.yaml") == (
        f"hyperparameter file {str(tmp_path / 'none.yaml')!r} does not exist."
    )
