"""The schema of ``sb3.yaml``: Stable-Baselines3 PPO's hyperparameters, checked before anything trains.

Keys are the parameters of ``stable_baselines3.PPO`` (``inspect.signature``; ``env`` and ``seed``
come from the caller), ``policy`` is one of PPO's aliases or ``GeneratorPolicy`` (which starts at the
env's base generator), ``policy_kwargs`` is checked against the policy class, and
``activation_fn`` / ``features_extractor_class`` are given by name (no ``eval``). Read an entry
with :func:`kcrl.agents.hyperparams.load_hyperparams` ``("sb3", env_id)``.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from stable_baselines3 import PPO
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.torch_layers import CombinedExtractor

from kcrl.agents.hyperparams import ACTIVATIONS, Library, check_activation, signature_defaults
from kcrl.agents.sb3.generator_policy import GeneratorPolicy
from kcrl.agents.sb3.vec_env import TokenFeatureExtractor
from kcrl.errors import ConfigError, did_you_mean, unknown_name

_ANY_KIND = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
FEATURE_EXTRACTORS: dict[str, type] = {"TokenFeatureExtractor": TokenFeatureExtractor, "CombinedExtractor": CombinedExtractor}
"""``features_extractor_class`` names a file may use"""


POLICIES: dict[str, type] = {"GeneratorPolicy": GeneratorPolicy}
"""kcrl's own policy classes a file may name besides SB3's aliases (``MultiInputPolicy``, ``MlpPolicy``, ...)"""


def policy_class(policy: Any):
    """The SB3 policy class a file's ``policy`` names: one of PPO's aliases or :data:`POLICIES`."""
    if isinstance(policy, str) and policy in PPO.policy_aliases:
        return PPO.policy_aliases[policy]
    if isinstance(policy, str) and policy in POLICIES:
        return POLICIES[policy]
    raise unknown_name("SB3 PPO policy", str(policy), [*PPO.policy_aliases, *POLICIES])



def _check_policy_kwargs(policy: Any, policy_kwargs: Any, where: str) -> None:
    if not isinstance(policy_kwargs, dict):
        raise ConfigError(f"sb3 hyperparameter 'policy_kwargs' must be a mapping; got {policy_kwargs!r} ({where}).")
    cls = policy_class(policy)
    known = set(signature_defaults(cls.__init__, _ANY_KIND)) - {"observation_space", "action_space", "lr_schedule"}
    if cls is GeneratorPolicy:  # its other keys are MultiInputPolicy's; the generator comes from the env
        known = (known | set(signature_defaults(MultiInputActorCriticPolicy.__init__, _ANY_KIND))) - {
            "observation_space", "action_space", "lr_schedule", "generator", "features_extractor_class",
            "features_extractor_kwargs"}
    for key in policy_kwargs:
        if key not in known:
            raise ConfigError(
                f"unknown sb3 policy_kwargs key {key!r} ({where}).{did_you_mean(key, known)} "
                f"Known (the parameters of {cls.__name__}): {', '.join(sorted(known))}."
            )
    if "activation_fn" in policy_kwargs:
        check_activation(policy_kwargs["activation_fn"], "activation_fn")
    if "features_extractor_class" in policy_kwargs:
        name = policy_kwargs["features_extractor_class"]
        if name not in FEATURE_EXTRACTORS:
            raise unknown_name("features_extractor_class", str(name), FEATURE_EXTRACTORS)


def _finish(values: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    values.setdefault("policy", "MultiInputPolicy")
    changed = "policy" in overrides or "policy_kwargs" in overrides
    _check_policy_kwargs(values["policy"], values.get("policy_kwargs", {}), "overrides" if changed else where)


def sb3_policy_kwargs(policy_kwargs: dict[str, Any], policy: str = "MultiInputPolicy") -> dict[str, Any]:
    """SB3 ``policy_kwargs`` with names resolved to classes. For ``MultiInputPolicy`` (the token
    envs) ``features_extractor_class`` defaults to kcrl's :class:`~kcrl.agents.sb3.TokenFeatureExtractor`;
    other policies (``MlpPolicy`` on the one-step ``Box`` envs, ``GeneratorPolicy``) keep their own."""
    out = copy.deepcopy(policy_kwargs)
    if "features_extractor_class" in out or policy == "MultiInputPolicy":
        out["features_extractor_class"] = FEATURE_EXTRACTORS[out.get("features_extractor_class", "TokenFeatureExtractor")]
    if "activation_fn" in out:
        out["activation_fn"] = ACTIVATIONS[out["activation_fn"]]
    return out


SB3_PPO = Library(
    name="sb3",
    schema="the parameters of stable_baselines3.PPO plus n_envs, n_timesteps",
    parameters=lambda: signature_defaults(PPO.__init__, _ANY_KIND),
    reserved={
        "env": "the environment is the entry's id",
        "seed": "the seed comes from the caller (e.g. kcrl bench --seed)",
        "_init_setup_model": "it is an internal flag of SB3",
    },
    finish=_finish,
)
"""Stable-Baselines3 PPO (``sb3.yaml``)"""
