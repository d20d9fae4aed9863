"""Hyperparameter files in the style of rl-baselines3-zoo: one YAML per library, keyed by env id.

``kcrl.yaml`` (kcrl's :class:`~kcrl.agents.soft_pg.SoftPGAgent`), ``sb3.yaml`` (Stable-Baselines3
PPO) and ``tianshou.yaml`` (Tianshou PPO through :func:`kcrl.agents.tianshou.train_tianshou_ppo`)
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
* ``tianshou``: the keyword-only parameters of :func:`kcrl.agents.tianshou.train_tianshou_ppo`.

``n_envs`` and ``n_timesteps`` are the zoo's keys shared by every library, and required.

Each library's schema is a :class:`Library`: kcrl's is here (:data:`KCRL`); the SB3 and Tianshou
ones live with their adapters (:data:`kcrl.agents.sb3.SB3_PPO`, :data:`kcrl.agents.tianshou.TIANSHOU_PPO`),
the only modules that import those libraries, and are looked up by name.

Example:
    >>> from kcrl.agents.hyperparams import load_hyperparams
    >>> hp = load_hyperparams("sb3", "TabularSequence-v0", overrides={"n_epochs": 2})
    >>> hp["n_epochs"], hp["policy"]
    (2, 'MultiInputPolicy')
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from kcrl.errors import ConfigError, did_you_mean, unknown_name

LIBRARIES = ("kcrl", "sb3", "tianshou")
HERE = Path(__file__).resolve().parent

ZOO_KEYS = ("n_envs", "n_timesteps")
"""keys every library's entry has: parallel sub-envs, and the budget in env steps (tokens)"""

ZOO_DOCS = {
    "n_envs": "the number of parallel sub-envs",
    "n_timesteps": "the training budget in env steps (one token each)",
}

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}
"""activation names the files may use (SB3's ``policy_kwargs.activation_fn``, Tianshou's ``activation``)"""


@dataclass(frozen=True)
class Library:
    """The schema of one library's hyperparameter file.

    Attributes:
        name: the file's stem (``name.yaml`` next to this module).
        schema: what the keys are, for error messages.
        parameters: ``() -> {key: default}`` (``dataclasses.MISSING`` when none) of the library's entry
            point; reserved keys are removed and the zoo's keys added by :func:`known_hyperparameters`.
        reserved: keys of the entry point a file may not set, and why.
        check: extra checks of one entry or override mapping (e.g. activation names), or ``None``.
        finish: ``(values, overrides, where) -> None``, completes and checks the merged entry in place
            (``where`` names the file's entry), or ``None``.
    """

    name: str
    schema: str
    parameters: Callable[[], dict[str, Any]]
    reserved: dict[str, str] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], None] | None = None
    finish: Callable[[dict[str, Any], dict[str, Any], str], None] | None = None


def signature_defaults(fn, kinds: tuple) -> dict[str, Any]:
    """``name -> default`` (``MISSING`` when none) of ``fn``'s parameters of the given kinds."""
    return {
        name: (MISSING if p.default is inspect.Parameter.empty else p.default)
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind in kinds and name != "self"
    }


def check_activation(name: Any, key: str) -> None:
    """``name`` must be a key of :data:`ACTIVATIONS`."""
    if name not in ACTIVATIONS:
        raise unknown_name(key, name, ACTIVATIONS)


def rounds_in_budget(name: str, budget: int, per_round: int, what: str) -> int:
    """Updates of ``per_round`` tokens in a budget of ``budget`` tokens (``n_timesteps``); the budget must
    be a multiple of ``per_round`` (``what`` names where ``per_round`` comes from, for the message)."""
    if per_round < 1 or budget % per_round:
        raise ConfigError(
            f"the {name} agent consumes {per_round} tokens per update ({what}); the budget of {budget} tokens "
            f"is not a multiple of it. Choose n_timesteps (or AgentsConfig.env_tokens) as a multiple of {per_round}."
        )
    return budget // per_round


def _soft_pg_parameters() -> dict[str, Any]:
    from kcrl.agents.soft_pg import SoftPGArgs

    return {f.name: f.default for f in fields(SoftPGArgs)}


KCRL = Library(
    name="kcrl",
    schema="the fields of kcrl.agents.soft_pg.SoftPGArgs plus n_envs, n_timesteps",
    parameters=_soft_pg_parameters,
    reserved={
        "iterations": "it is derived from the budget as n_timesteps / (n_envs * episode length)",
        "seed": "the seed comes from the caller (e.g. kcrl bench --seed)",
    },
)
"""kcrl's :class:`~kcrl.agents.soft_pg.SoftPGAgent` (``kcrl.yaml``)"""


def library(name: str) -> Library:
    """The schema of library ``name``; the SB3 and Tianshou ones come from their adapters."""
    if name == "kcrl":
        return KCRL
    if name == "sb3":
        from kcrl.agents.sb3.hyperparams import SB3_PPO

        return SB3_PPO
    if name == "tianshou":
        from kcrl.agents.tianshou.ppo import TIANSHOU_PPO

        return TIANSHOU_PPO
    raise unknown_name("hyperparameter library", name, LIBRARIES)


def hyperparams_path(name: str) -> Path:
    """The YAML file of library ``name`` shipped with kcrl."""
    if name not in LIBRARIES:
        raise unknown_name("hyperparameter library", name, LIBRARIES)
    return HERE / f"{name}.yaml"


def known_hyperparameters(name: str) -> dict[str, Any]:
    """``key -> default`` (``dataclasses.MISSING`` when there is none) of every key ``name``'s entries may hold."""
    lib = library(name)
    known = lib.parameters()
    for key in lib.reserved:
        known.pop(key, None)
    for key in ZOO_KEYS:
        known.setdefault(key, MISSING)
    return known


def _check_type(name: str, key: str, value: Any, default: Any, where: str) -> None:
    """Values must have the type of the parameter's default where that is a plain scalar."""
    if key in ZOO_KEYS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} hyperparameter {key!r} must be a positive integer; got {value!r} ({where}).")
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
        raise ConfigError(f"{name} hyperparameter {key!r} must be {expected}; got {value!r} ({where}).{hint}")


def _check_entry(lib: Library, values: Any, where: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{lib.name} hyperparameters must be a mapping of keys to values; got {values!r} ({where}).")
    known = known_hyperparameters(lib.name)
    for key, value in values.items():
        if key in lib.reserved:
            raise ConfigError(f"{key!r} cannot be set in {lib.name} hyperparameters ({where}): {lib.reserved[key]}.")
        if key not in known:
            raise ConfigError(
                f"unknown {lib.name} hyperparameter {key!r} ({where}).{did_you_mean(str(key), known)} "
                f"Known ({lib.schema}): {', '.join(sorted(known))}."
            )
        _check_type(lib.name, key, value, known[key], where)
    if lib.check is not None:
        lib.check(values)


def read_file(name: str, path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Every entry of a library's YAML file (default: the one shipped with kcrl), unvalidated."""
    path = Path(path) if path is not None else hyperparams_path(name)
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
    name: str, env_id: str, overrides: dict[str, Any] | None = None, path: str | Path | None = None
) -> dict[str, Any]:
    """The checked hyperparameters of ``name``'s agent on ``env_id``, with ``overrides`` applied.

    Args:
        name: the library, ``"kcrl"``, ``"sb3"`` or ``"tianshou"``.
        env_id: an entry of the library's file, e.g. ``"TabularSequence-v0"``.
        overrides: keys that replace the file's (checked the same way).
        path: another YAML file to read instead of the shipped one.

    Returns:
        A plain dict (YAML types: names stay strings; see :func:`kcrl.agents.sb3.sb3_policy_kwargs`).

    Raises:
        UnknownNameError: unknown library or env id (with a suggestion).
        ConfigError: an unknown, reserved, missing or mistyped key (naming it, with close
            names and the known ones).
    """
    lib = library(name)
    file = Path(path) if path is not None else hyperparams_path(name)
    entries = read_file(name, file)
    if env_id not in entries:
        raise unknown_name(f"environment id in {file.name}", env_id, entries)
    values = entries[env_id]
    _check_entry(lib, values, f"{file.name}, {env_id}")
    values = copy.deepcopy(values)
    if overrides:
        _check_entry(lib, overrides, "overrides")
        values.update(copy.deepcopy(overrides))
    for key in ZOO_KEYS:
        if key not in values:
            raise ConfigError(f"{name} hyperparameters for {env_id} need {key!r} ({file.name}): {ZOO_DOCS[key]}.")
    if lib.finish is not None:
        lib.finish(values, overrides or {}, f"{file.name}, {env_id}")
    return values


__all__ = [
    "ACTIVATIONS", "KCRL", "LIBRARIES", "Library", "ZOO_KEYS", "check_activation", "hyperparams_path",
    "known_hyperparameters", "library", "load_hyperparams", "read_file", "rounds_in_budget", "signature_defaults",
]
