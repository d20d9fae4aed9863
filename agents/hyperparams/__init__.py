"""Hyperparameter files in the style of rl-baselines3-zoo: one YAML per library, keyed by env id.

``kcrl.yaml`` (kcrl's :class:`~kcrl.agents.soft_pg.SoftPGAgent`), ``sb3.yaml`` (Stable-Baselines3
PPO) and ``tianshou.yaml`` (Tianshou PPO through :func:`kcrl.benchmarks.agents.train_tianshou_ppo`)
each map an environment id to the hyperparameters of that library's agent on it::

    TabularSequence-v0:
      n_envs: 64            # parallel sub-envs (every library)
      n_timesteps: 524288   # training budget in env steps = tokens (every library)
      learning_rate: 0.001  # ... the library's own names

:func:`load_hyperparams` reads one entry, merges overrides and checks every key against the
library's own parameters, so that a typo fails before anything trains:

* ``kcrl``: the fields of :class:`~kcrl.agents.soft_pg.SoftPGArgs` (``iterations`` is derived
  from the budget, ``seed`` comes from the caller);
* ``sb3``: the parameters of ``stable_baselines3.PPO`` (``inspect.signature``; ``env`` and
  ``seed`` come from the caller), ``policy_kwargs`` checked against the policy class, and
  ``activation_fn`` / ``features_extractor_class`` given by name (no ``eval``);
* ``tianshou``: the keyword-only parameters of :func:`kcrl.benchmarks.agents.train_tianshou_ppo`.

``n_envs`` and ``n_timesteps`` are the zoo's keys shared by every library, and required.

Example:
    >>> from kcrl.agents.hyperparams import load_hyperparams
    >>> hp = load_hyperparams("sb3", "TabularSequence-v0", overrides={"n_epochs": 2})
    >>> hp["n_epochs"], hp["policy"]
    (2, 'MultiInputPolicy')
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from kcrl.errors import ConfigError, did_you_mean, unknown_name

LIBRARIES = ("kcrl", "sb3", "tianshou")
HERE = Path(__file__).resolve().parent

ZOO_KEYS = ("n_envs", "n_timesteps")
"""keys every library's entry has: parallel sub-envs, and the budget in env steps (tokens)"""

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}
"""activation names the files may use (SB3's ``policy_kwargs.activation_fn``, Tianshou's ``activation``)"""

# Parameters of the libraries' entry points that a file may not set, and why.
_RESERVED = {
    "kcrl": {
        "iterations": "it is derived from the budget as n_timesteps / (n_envs * episode length)",
        "seed": "the seed comes from the caller (e.g. kcrl bench --seed)",
    },
    "sb3": {
        "env": "the environment is the entry's id",
        "seed": "the seed comes from the caller (e.g. kcrl bench --seed)",
        "_init_setup_model": "it is an internal flag of SB3",
    },
    "tianshou": {},
}


def hyperparams_path(library: str) -> Path:
    """The YAML file of ``library`` shipped with kcrl."""
    if library not in LIBRARIES:
        raise unknown_name("hyperparameter library", library, LIBRARIES)
    return HERE / f"{library}.yaml"


def _signature_defaults(fn, kinds: tuple) -> dict[str, Any]:
    """``name -> default`` (``MISSING`` when none) of ``fn``'s parameters of the given kinds."""
    return {
        name: (MISSING if p.default is inspect.Parameter.empty else p.default)
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind in kinds and name != "self"
    }


def known_hyperparameters(library: str) -> dict[str, Any]:
    """``key -> default`` (``dataclasses.MISSING`` when there is none) of every key ``library``'s entries may hold."""
    if library not in LIBRARIES:
        raise unknown_name("hyperparameter library", library, LIBRARIES)
    if library == "kcrl":
        from kcrl.agents.soft_pg import SoftPGArgs

        known = {f.name: f.default for f in fields(SoftPGArgs)}
    elif library == "sb3":
        from stable_baselines3 import PPO

        any_kind = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        known = _signature_defaults(PPO.__init__, any_kind)
    else:
        from kcrl.benchmarks.agents import train_tianshou_ppo

        known = _signature_defaults(train_tianshou_ppo, (inspect.Parameter.KEYWORD_ONLY,))
    for key in _RESERVED[library]:
        known.pop(key, None)
    for key in ZOO_KEYS:
        known.setdefault(key, MISSING)
    return known


_SCHEMA = {
    "kcrl": "the fields of kcrl.agents.soft_pg.SoftPGArgs plus n_envs, n_timesteps",
    "sb3": "the parameters of stable_baselines3.PPO plus n_envs, n_timesteps",
    "tianshou": "the keyword parameters of kcrl.benchmarks.agents.train_tianshou_ppo",
}


def _check_type(library: str, key: str, value: Any, default: Any, where: str) -> None:
    """Values must have the type of the parameter's default where that is a plain scalar."""
    if key in ZOO_KEYS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{library} hyperparameter {key!r} must be a positive integer; got {value!r} ({where}).")
        return
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        return
    if not ok:
        hint = " YAML reads 1e-3 as a string: write 0.001 or 1.0e-3." if isinstance(value, str) and expected == "a number" else ""
        raise ConfigError(f"{library} hyperparameter {key!r} must be {expected}; got {value!r} ({where}).{hint}")


def _check_activation(name: Any, key: str) -> None:
    if name not in ACTIVATIONS:
        raise unknown_name(key, name, ACTIVATIONS)


def _sb3_policy_class(policy: Any):
    from stable_baselines3 import PPO

    if isinstance(policy, str) and policy in PPO.policy_aliases:
        return PPO.policy_aliases[policy]
    raise unknown_name("SB3 PPO policy", str(policy), PPO.policy_aliases)


def _check_policy_kwargs(policy: Any, policy_kwargs: Any, where: str) -> None:
    if not isinstance(policy_kwargs, dict):
        raise ConfigError(f"sb3 hyperparameter 'policy_kwargs' must be a mapping; got {policy_kwargs!r} ({where}).")
    cls = _sb3_policy_class(policy)
    known = set(_signature_defaults(cls.__init__, (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)))
    known -= {"observation_space", "action_space", "lr_schedule"}
    for key in policy_kwargs:
        if key not in known:
            raise ConfigError(
                f"unknown sb3 policy_kwargs key {key!r} ({where}).{did_you_mean(key, known)} "
                f"Known (the parameters of {cls.__name__}): {', '.join(sorted(known))}."
            )
    if "activation_fn" in policy_kwargs:
        _check_activation(policy_kwargs["activation_fn"], "activation_fn")
    if "features_extractor_class" in policy_kwargs:
        name = policy_kwargs["features_extractor_class"]
        if name not in _feature_extractors():
            raise unknown_name("features_extractor_class", str(name), _feature_extractors())


def _feature_extractors() -> dict[str, type]:
    from stable_baselines3.common.torch_layers import CombinedExtractor

    from kcrl.agents.sb3 import TokenFeatureExtractor

    return {"TokenFeatureExtractor": TokenFeatureExtractor, "CombinedExtractor": CombinedExtractor}


def sb3_policy_kwargs(policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` with names resolved to classes (``features_extractor_class`` defaults
    to kcrl's :class:`~kcrl.agents.sb3.TokenFeatureExtractor`)."""
    out = copy.deepcopy(policy_kwargs)
    out["features_extractor_class"] = _feature_extractors()[out.get("features_extractor_class", "TokenFeatureExtractor")]
    if "activation_fn" in out:
        out["activation_fn"] = ACTIVATIONS[out["activation_fn"]]
    return out


def _check_entry(library: str, values: Any, where: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{library} hyperparameters must be a mapping of keys to values; got {values!r} ({where}).")
    known = known_hyperparameters(library)
    for key, value in values.items():
        if key in _RESERVED[library]:
            raise ConfigError(f"{key!r} cannot be set in {library} hyperparameters ({where}): {_RESERVED[library][key]}.")
        if key not in known:
            raise ConfigError(
                f"unknown {library} hyperparameter {key!r} ({where}).{did_you_mean(str(key), known)} "
                f"Known ({_SCHEMA[library]}): {', '.join(sorted(known))}."
            )
        _check_type(library, key, value, known[key], where)
    if library == "tianshou" and "activation" in values:
        _check_activation(values["activation"], "activation")


def read_file(library: str, path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Every entry of a library's YAML file (default: the one shipped with kcrl), unvalidated."""
    path = Path(path) if path is not None else hyperparams_path(library)
    if not path.is_file():
        raise ConfigError(f"hyperparameter file {str(path)!r} does not exist.")
    try:
        entries = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"hyperparameter file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(entries, dict):
        raise ConfigError(f"hyperparameter file {str(path)!r} must map env ids to hyperparameters; got {type(entries).__name__}.")
    return entries


def load_hyperparams(
    library: str, env_id: str, overrides: dict[str, Any] | None = None, path: str | Path | None = None
) -> dict[str, Any]:
    """The checked hyperparameters of ``library``'s agent on ``env_id``, with ``overrides`` applied.

    Args:
        library: ``"kcrl"``, ``"sb3"`` or ``"tianshou"``.
        env_id: an entry of the library's file, e.g. ``"TabularSequence-v0"``.
        overrides: keys that replace the file's (checked the same way).
        path: another YAML file to read instead of the shipped one.

    Returns:
        A plain dict (YAML types: names stay strings; see :func:`sb3_policy_kwargs`).

    Raises:
        UnknownNameError: unknown library or env id (with a suggestion).
        ConfigError: an unknown, reserved, missing or mistyped key (naming it, with close
            names and the known ones).
    """
    if library not in LIBRARIES:
        raise unknown_name("hyperparameter library", library, LIBRARIES)
    file = Path(path) if path is not None else hyperparams_path(library)
    entries = read_file(library, file)
    if env_id not in entries:
        raise unknown_name(f"environment id in {file.name}", env_id, entries)
    values = entries[env_id]
    _check_entry(library, values, f"{file.name}, {env_id}")
    values = copy.deepcopy(values)
    if overrides:
        _check_entry(library, overrides, "overrides")
        values.update(copy.deepcopy(overrides))
    for key in ZOO_KEYS:
        if key not in values:
            raise ConfigError(f"{library} hyperparameters for {env_id} need {key!r} ({file.name}): {ZOO_DOCS[key]}.")
    if library == "sb3":
        values.setdefault("policy", "MultiInputPolicy")
        changed = overrides and ("policy" in overrides or "policy_kwargs" in overrides)
        _check_policy_kwargs(values["policy"], values.get("policy_kwargs", {}), "overrides" if changed else f"{file.name}, {env_id}")
    return values


ZOO_DOCS = {
    "n_envs": "the number of parallel sub-envs",
    "n_timesteps": "the training budget in env steps (one token each)",
}

__all__ = [
    "ACTIVATIONS", "LIBRARIES", "ZOO_KEYS", "hyperparams_path", "known_hyperparameters", "load_hyperparams",
    "read_file", "sb3_policy_kwargs",
]
