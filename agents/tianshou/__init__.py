"""Tianshou (2.x) adapter: run Tianshou algorithms on kcrl's batched generation envs.

* ``TianshouVectorEnv`` — a ``tianshou.env.BaseVectorEnv`` over one
  :class:`~kcrl.envs.generation.BatchedGenerationEnv`, with Tianshou's partial
  ``reset(env_id=...)`` / ``step(action, id=...)`` (only a subset of sub-envs), one tensor
  operation per call.
* ``TokenNet`` — a preprocessing net for the Dict token observations (embeddings, not one-hots),
  to put inside Tianshou's ``DiscreteActor`` / ``DiscreteCritic``.
* ``GeneratorActor`` — a ``DiscreteActor`` that starts at a trained kcrl generator's next-token
  distribution (PPO fine-tunes p_theta instead of starting uniform over the vocabulary).
* ``TianshouOneStepVectorEnv`` — the same over the one-step ``Box`` envs (``GaussianRing-v0``,
  ``StructuredDigits-v0``), for Tianshou's continuous actors.
* :func:`make_tianshou_vec_env` — ``gymnasium.make_vec`` + ``TianshouVectorEnv`` (or
  ``TianshouOneStepVectorEnv`` for a one-step env).
* :func:`tianshou_logits_fn` — a Tianshou actor as ``kcrl observation tensors -> (N, V) logits``.
* :func:`policy_generator` and :class:`TianshouStep` — a Tianshou policy as Algorithm 1's generator
  and generator step (:mod:`kcrl.agents.tianshou.steps`).
* :func:`train_tianshou_ppo` and ``TIANSHOU_PPO`` (its hyperparameter schema for
  :func:`kcrl.agents.hyperparams.load_hyperparams`, ``tianshou.yaml``) — PPO on a kcrl env
  (:mod:`kcrl.agents.tianshou.ppo`).

Tianshou is an optional dependency (``pip install 'kcrl[tianshou]'``). Importing this module
does not import it; the first use of ``TianshouVectorEnv``, ``TokenNet`` or
:func:`make_tianshou_vec_env` does, and raises :class:`kcrl.errors.MissingDependencyError`
naming the extra if it is missing.

Example: PPO on ``TabularSequence-v0`` (Tianshou 2.x API; one collect + update round here)

    >>> import torch
    >>> from tianshou.algorithm import PPO
    >>> from tianshou.algorithm.algorithm_base import policy_within_training_step
    >>> from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy
    >>> from tianshou.algorithm.optim import AdamOptimizerFactory
    >>> from tianshou.data import Collector, VectorReplayBuffer
    >>> from tianshou.utils.net.discrete import DiscreteActor, DiscreteCritic
    >>> from kcrl.agents.tianshou import TokenNet, make_tianshou_vec_env
    >>> venv = make_tianshou_vec_env("TabularSequence-v0", num_envs=16, seed=0)
    >>> space, n_actions = venv.dict_observation_space, venv.single_action_space.n
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> actor = DiscreteActor(preprocess_net=TokenNet(space, (64,)), action_shape=n_actions, softmax_output=False)
    >>> critic = DiscreteCritic(preprocess_net=TokenNet(space, (64,)))
    >>> policy = DiscreteActorPolicy(actor=actor, action_space=venv.single_action_space)
    >>> ppo = PPO(policy=policy, critic=critic, optim=AdamOptimizerFactory(lr=3e-3), gamma=1.0)
    >>> collector = Collector(policy, venv, VectorReplayBuffer(256, len(venv)))
    >>> _ = collector.reset()
    >>> stats = collector.collect(n_step=128)
    >>> stats.n_collected_episodes  # 16 sub-envs x 8 steps, 4 tokens per episode
    32
    >>> with policy_within_training_step(policy):
    ...     _ = ppo.update(buffer=collector.buffer, batch_size=64, repeat=2)

For a full training loop use ``ppo.run_training(OnPolicyTrainerParams(training_collector=collector, ...))``
(see ``docs/adapters.md``).
"""

from __future__ import annotations

import importlib
from typing import Any

from kcrl.agents.tianshou.ppo import TIANSHOU_PPO, build_tianshou_ppo, train_tianshou_ppo
from kcrl.agents.tianshou.steps import (
    TianshouStep, policy_generator, tianshou_kcrl_env, tianshou_logits_fn, tianshou_policy,
)
from kcrl.errors import require_optional, unknown_name

_LAZY = ("GeneratorActor", "TianshouOneStepVectorEnv", "TianshouVectorEnv", "TokenNet")


def _load_backend():
    require_optional("tianshou", "tianshou")
    return importlib.import_module("kcrl.agents.tianshou._backend")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(_load_backend(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


def make_tianshou_vec_env(
    env_id: str, num_envs: int, *, seed: int | None = None, flatten_obs: bool = False, **kwargs: Any
):
    """A ``TianshouVectorEnv`` of ``num_envs`` copies of a registered kcrl env, stepped as one batch.

    Args:
        env_id: a kcrl id, e.g. ``"TabularSequence-v0"``.
        num_envs: N.
        seed: seed of the first full ``reset()`` (sub-env i gets ``seed + i``); ``None`` for random.
        flatten_obs: see ``TianshouVectorEnv`` (token envs only).
        **kwargs: passed to the env (``device=``, ``kl_to_base=``, ``vocab_size=``, ...).
    """
    backend = _load_backend()
    import gymnasium as gym

    if env_id not in gym.registry:
        import kcrl.envs

        raise unknown_name("environment id", env_id, kcrl.envs.ENV_IDS or list(gym.registry))
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", autoreset_mode="Disabled", **kwargs)
    from kcrl.envs.generation import BatchedGenerationEnv

    if isinstance(env, BatchedGenerationEnv):
        venv = backend.TianshouVectorEnv(env, flatten_obs=flatten_obs)
    else:  # a one-step env: one Box action per episode
        venv = backend.TianshouOneStepVectorEnv(env)
    if seed is not None:
        venv.seed(seed)
    return venv


# The classes in _LAZY resolve lazily through __getattr__ (they need tianshou).
__all__ = [  # noqa: F822
    "GeneratorActor", "TIANSHOU_PPO", "TianshouOneStepVectorEnv", "TianshouStep", "TianshouVectorEnv", "TokenNet", "make_tianshou_vec_env", "policy_generator",
    "build_tianshou_ppo", "tianshou_kcrl_env", "tianshou_logits_fn", "tianshou_policy", "train_tianshou_ppo",
]
