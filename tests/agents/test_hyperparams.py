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
        "Known: GaussianRing-v0, OracleSequence-v0, StructuredDigits-v0, TabularSequence-v0, TemplateSentence-v0."
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
        "Known: CnnPolicy, GeneratorPolicy, MlpPolicy, MultiInputPolicy."
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


# ------------------------------------------------------------------------- every registered env id
TOKEN_ENVS = ("TabularSequence-v0", "TemplateSentence-v0", "OracleSequence-v0")
BOX_ENVS = ("GaussianRing-v0", "StructuredDigits-v0")


def test_every_registered_env_has_sb3_and_tianshou_entries_and_kcrl_has_every_token_env():
    import kcrl.envs

    assert set(kcrl.envs.ENV_IDS) == {*TOKEN_ENVS, *BOX_ENVS}
    for library in ("sb3", "tianshou"):
        assert set(read_file(library)) == set(kcrl.envs.ENV_IDS), library
    assert set(read_file("kcrl")) == set(TOKEN_ENVS)  # soft-PG writes tokens; the Box envs are PPO's
    for env_id in kcrl.envs.ENV_IDS:  # one budget per env, whichever library spends it
        budgets = {lib: load_hyperparams(lib, env_id)["n_timesteps"] for lib in LIBRARIES if env_id in read_file(lib)}
        assert len(set(budgets.values())) == 1, (env_id, budgets)


@pytest.mark.parametrize("env_id", TOKEN_ENVS[1:])
def test_text_entries_use_the_papers_objective(env_id):
    sb3, ts, own = (load_hyperparams(lib, env_id) for lib in ("sb3", "tianshou", "kcrl"))
    assert sb3["ent_coef"] == ts["ent_coef"] == own["entropy_coef"] == 1.0
    assert sb3["gamma"] == ts["gamma"] == 1.0 and not sb3["normalize_advantage"] and not ts["advantage_normalization"]
    assert sb3["policy"] == "GeneratorPolicy" and ts["init_from_base"]  # start at p_theta, not uniform


WORDS = ("good", "bad", "long", "fine", "great", "dull", "slow", "odd")
SMALL_CORPUS = [f"the {a} movie was {b} and {c} ." for a in WORDS for b in WORDS for c in WORDS]  # 512 sentences


def _small_env_kwargs(env_id):
    return {"vocab_size": 30, "max_length": 10, "corpus": SMALL_CORPUS} if env_id == "TemplateSentence-v0" else {}


@pytest.mark.parametrize("env_id", [*TOKEN_ENVS, *BOX_ENVS])
def test_sb3_entry_builds_an_agent_that_acts(env_id):
    from kcrl.agents.sb3 import build_ppo, make_sb3_vec_env

    hp = load_hyperparams("sb3", env_id, overrides={"n_envs": 2, "n_steps": 4, "batch_size": 8})
    venv = make_sb3_vec_env(env_id, hp["n_envs"], seed=0, **_small_env_kwargs(env_id))
    model = build_ppo(venv, hp, seed=0)
    actions, _ = model.predict(venv.reset())
    assert venv.step(actions)[1].shape == (2,)


@pytest.mark.parametrize("env_id", [*TOKEN_ENVS, *BOX_ENVS])
def test_tianshou_entry_builds_an_agent_that_acts(env_id):
    pytest.importorskip("tianshou")
    from tianshou.data import Collector

    from kcrl.agents.hyperparams import ZOO_KEYS
    from kcrl.agents.tianshou import build_tianshou_ppo, make_tianshou_vec_env

    hp = load_hyperparams("tianshou", env_id)
    venv = make_tianshou_vec_env(env_id, 2, seed=0, **_small_env_kwargs(env_id))
    trainer_keys = (*ZOO_KEYS, "collection_step_num_env_steps", "batch_size", "update_step_num_repetitions")
    ppo = build_tianshou_ppo(venv, **{k: v for k, v in hp.items() if k not in trainer_keys})
    stats = Collector(ppo.policy, venv).collect(n_step=4, reset_before_collect=True)
    assert stats.n_collected_steps >= 4


@pytest.mark.parametrize("env_id", TOKEN_ENVS)
def test_kcrl_entry_builds_an_agent_that_acts(env_id):
    import gymnasium as gym

    from kcrl.agents.soft_pg import SoftPGAgent

    hp = load_hyperparams("kcrl", env_id, overrides={"n_envs": 2})
    env = gym.make_vec(env_id, num_envs=hp["n_envs"], vectorization_mode="vector_entry_point", autoreset_mode="Disabled",
                       **_small_env_kwargs(env_id))
    agent = SoftPGAgent(env, SoftPGArgs(**{k: v for k, v in hp.items() if k not in ("n_envs", "n_timesteps")}, iterations=1))
    assert agent.rollout().mask.shape[0] >= 2
