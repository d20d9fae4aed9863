"""The MDPs: generation environments, single and batched, and their registration.

``import kcrl`` registers every id below with Gymnasium.
"""

from __future__ import annotations

import importlib

import gymnasium as gym

# The classes load on first use (registration needs only the entry-point strings), so that
# ``import kcrl`` and ``kcrl --help`` do not pay for importing torch.
_LAZY = {
    "BatchedGenerationEnv": "kcrl.envs.generation",
    "GenerationEnv": "kcrl.envs.generation",
    "TensorStep": "kcrl.envs.generation",
    "BatchedOneStepEnv": "kcrl.envs.onestep",
    "OneStepEnv": "kcrl.envs.onestep",
    "OneStepTask": "kcrl.envs.onestep",
    "SequenceTask": "kcrl.envs.task",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kcrl.envs' has no attribute {name!r}")


ENV_IDS: list[str] = []


def _register(env_id: str, entry_point: str, vector_entry_point: str, max_episode_steps=None, **kwargs) -> None:
    if env_id not in gym.registry:
        gym.register(
            id=env_id,
            entry_point=entry_point,
            vector_entry_point=vector_entry_point,
            max_episode_steps=max_episode_steps,
            kwargs=kwargs,
        )
    if env_id not in ENV_IDS:
        ENV_IDS.append(env_id)


def register_envs() -> None:
    """Register kcrl's environments (idempotent)."""
    _register(
        "TabularSequence-v0",
        entry_point="kcrl.envs.tabular:make_tabular_env",
        vector_entry_point="kcrl.envs.tabular:make_tabular_vec_env",
    )
    _register(
        "GaussianRing-v0",
        entry_point="kcrl.envs.gaussian_ring:make_gaussian_ring_env",
        vector_entry_point="kcrl.envs.gaussian_ring:make_gaussian_ring_vec_env",
    )
    _register(
        "StructuredDigits-v0",
        entry_point="kcrl.envs.digits:make_digits_env",
        vector_entry_point="kcrl.envs.digits:make_digits_vec_env",
    )
    _register(
        "TemplateSentence-v0",
        entry_point="kcrl.envs.template:make_template_env",
        vector_entry_point="kcrl.envs.template:make_template_vec_env",
        max_episode_steps=20,
    )
    _register(
        "OracleSequence-v0",
        entry_point="kcrl.envs.oracle:make_oracle_env",
        vector_entry_point="kcrl.envs.oracle:make_oracle_vec_env",
    )


__all__ = [
    "BatchedGenerationEnv",
    "BatchedOneStepEnv",
    "ENV_IDS",
    "GenerationEnv",
    "OneStepEnv",
    "OneStepTask",
    "SequenceTask",
    "TensorStep",
    "register_envs",
]
