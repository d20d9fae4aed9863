"""Tianshou (2.x) PPO on a kcrl env, and the schema of its hyperparameter file (``tianshou.yaml``).

:func:`train_tianshou_ppo` is the loop of Tianshou's ``OnPolicyTrainer`` written out, so that a
caller can take snapshots between rounds; its keyword-only parameters are the hyperparameters
:data:`TIANSHOU_PPO` checks. Importing this module does not import Tianshou; calling the function
does (``pip install 'kcrl[tianshou]'``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kcrl.agents.hyperparams import ACTIVATIONS, Library, check_activation, rounds_in_budget, signature_defaults
from kcrl.agents.tianshou.steps import tianshou_logits_fn
from kcrl.errors import ConfigError, require_optional, unknown_name
from kcrl.progress import progress as progress_bar

ENV_ID = "TabularSequence-v0"


def train_tianshou_ppo(
    env_kwargs: dict[str, Any],
    seed: int,
    clock: Any = None,
    progress: bool = False,
    env_id: str = ENV_ID,
    *,
    n_envs: int = 64,
    n_timesteps: int = 65_536,
    lr: float = 1e-3,
    hidden_sizes: Sequence[int] = (128, 128),
    embed_dim: int = 16,
    activation: str = "tanh",
    collection_step_num_env_steps: int = 1024,
    batch_size: int = 256,
    update_step_num_repetitions: int = 4,
    eps_clip: float = 0.2,
    dual_clip: float | None = None,
    value_clip: bool = False,
    advantage_normalization: bool = True,
    recompute_advantage: bool = False,
    vf_coef: float = 0.5,
    ent_coef: float = 0.01,
    max_grad_norm: float | None = None,
    gae_lambda: float = 0.95,
    max_batchsize: int = 256,
    gamma: float = 0.99,
    return_scaling: bool = False,
    init_from_base: bool = False,
):
    """Tianshou (2.x) PPO on a kcrl env, the loop of Tianshou's ``OnPolicyTrainer`` written out.

    Each round collects ``collection_step_num_env_steps`` steps from ``n_envs`` sub-envs, runs
    ``ppo.update`` (``update_step_num_repetitions`` passes in minibatches of ``batch_size``) and
    clears the buffer, until ``n_timesteps`` tokens are spent. The actor and the critic are
    Tianshou's ``DiscreteActor`` / ``DiscreteCritic`` on their own :class:`~kcrl.agents.tianshou.TokenNet`
    (``embed_dim`` embeddings, ``hidden_sizes`` MLP with ``activation``). Keyword arguments after
    ``*`` are the hyperparameters (``tianshou.yaml``); the PPO ones keep Tianshou's names and
    defaults (``eps_clip`` ... ``return_scaling``), ``lr`` is Adam's. ``init_from_base`` starts the
    actor at the env's base generator p_theta (``GeneratorActor`` on ``env.task.base``) instead of
    near uniform over the vocabulary.

    On a one-step ``Box`` env (``GaussianRing-v0``, ``StructuredDigits-v0``) the actor is Tianshou's
    ``ContinuousActorProbabilistic`` (a diagonal Gaussian in the ``Box``'s units, its samples
    clipped to the ``Box`` by ``TianshouOneStepVectorEnv``) and the critic
    its ``ContinuousCritic``, both on a ``Net`` MLP of ``hidden_sizes`` over the context
    (``embed_dim`` and ``init_from_base`` do not apply; no ``clock``).

    Args:
        env_kwargs: keyword arguments of the env (``vocab_size``, ``world_seed``, ...).
        env_id: a registered kcrl env id.
        seed: seeds the env and the global torch and numpy RNGs (Tianshou draws from both).
        clock: takes snapshots between rounds (``None``: none): ``clock.start_logits(task, logits_fn)``
            before the first round (``logits_fn`` maps kcrl observation tensors to the actor's
            ``(N, V)`` logits), ``clock.tick(tokens)`` after each round, ``clock.stop(tokens)`` at the end.
        progress: show a progress bar.

    Returns:
        The trained ``DiscreteActorPolicy`` (its ``actor`` gives logits).
    """
    require_optional("tianshou", "tianshou")
    from kcrl.agents.tianshou import make_tianshou_vec_env

    if activation not in ACTIVATIONS:
        raise unknown_name("activation", activation, ACTIVATIONS)
    if collection_step_num_env_steps % n_envs:
        raise ConfigError(
            f"collection_step_num_env_steps ({collection_step_num_env_steps}) must be a multiple of n_envs ({n_envs}): "
            "every collection step advances all sub-envs."
        )
    rounds = rounds_in_budget("tianshou", n_timesteps, collection_step_num_env_steps, "collection_step_num_env_steps")
    # Tianshou samples actions from torch's global RNG and shuffles minibatches with numpy's: seed both
    torch.manual_seed(seed)
    np.random.seed(seed)
    venv = make_tianshou_vec_env(env_id, n_envs, seed=seed, **env_kwargs)
    if clock is not None and not hasattr(venv, "dict_observation_space"):
        raise ConfigError(f"{env_id} is a one-step env: exact snapshots (clock) are for token envs; pass clock=None.")
    ppo = build_tianshou_ppo(
        venv, lr=lr, hidden_sizes=hidden_sizes, embed_dim=embed_dim, activation=activation, eps_clip=eps_clip,
        dual_clip=dual_clip, value_clip=value_clip, advantage_normalization=advantage_normalization,
        recompute_advantage=recompute_advantage, vf_coef=vf_coef, ent_coef=ent_coef, max_grad_norm=max_grad_norm,
        gae_lambda=gae_lambda, max_batchsize=max_batchsize, gamma=gamma, return_scaling=return_scaling,
        init_from_base=init_from_base,
    )
    return _train_rounds(ppo, ppo.policy, venv, rounds, collection_step_num_env_steps, n_envs, batch_size,
                         update_step_num_repetitions, clock, venv.env.task, progress)


def build_tianshou_ppo(venv, *, lr: float = 1e-3, hidden_sizes: Sequence[int] = (128, 128), embed_dim: int = 16,
                       activation: str = "tanh", init_from_base: bool = False, **ppo_kwargs: Any):
    """Tianshou's ``PPO`` (actor, critic, policy) for a kcrl vector env, untrained.

    Token envs (:class:`~kcrl.agents.tianshou.TianshouVectorEnv`): ``DiscreteActor`` / ``DiscreteCritic``
    on their own ``TokenNet`` (or, with ``init_from_base``, a ``GeneratorActor`` on the env's base
    generator). One-step ``Box`` envs: a Gaussian ``ContinuousActorProbabilistic`` and a
    ``ContinuousCritic``. ``ppo_kwargs`` are Tianshou PPO's own (``eps_clip``, ``ent_coef``, ...).
    """
    require_optional("tianshou", "tianshou")
    from tianshou.algorithm import PPO
    from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.utils.net.discrete import DiscreteActor, DiscreteCritic

    from kcrl.agents.tianshou import GeneratorActor, TokenNet

    if activation not in ACTIVATIONS:
        raise unknown_name("activation", activation, ACTIVATIONS)
    if not hasattr(venv, "dict_observation_space"):  # a one-step Box env
        policy, critic = _continuous_actor_critic(venv, hidden_sizes, ACTIVATIONS[activation])
        return PPO(policy=policy, critic=critic, optim=AdamOptimizerFactory(lr=lr), **ppo_kwargs)
    space, n_actions = venv.dict_observation_space, venv.single_action_space.n

    def net() -> TokenNet:
        return TokenNet(space, tuple(hidden_sizes), embed_dim=embed_dim, activation=ACTIVATIONS[activation])

    if init_from_base:
        actor = GeneratorActor(venv.env.task.base, net(), action_shape=n_actions)
    else:
        actor = DiscreteActor(preprocess_net=net(), action_shape=n_actions, softmax_output=False)
    critic = DiscreteCritic(preprocess_net=net())
    policy = DiscreteActorPolicy(actor=actor, action_space=venv.single_action_space)
    return PPO(policy=policy, critic=critic, optim=AdamOptimizerFactory(lr=lr), **ppo_kwargs)


def _continuous_actor_critic(venv, hidden_sizes: Sequence[int], activation):
    """Tianshou's Gaussian actor and critic on MLPs over a one-step env's (flattened) context."""
    from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
    from tianshou.utils.net.common import Net
    from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic

    state_shape = venv.single_observation_space.shape
    action_space = venv.single_action_space
    actor = ContinuousActorProbabilistic(
        preprocess_net=Net(state_shape=state_shape, hidden_sizes=tuple(hidden_sizes), activation=activation),
        action_shape=action_space.shape, unbounded=True,
    )
    critic = ContinuousCritic(preprocess_net=Net(state_shape=state_shape, hidden_sizes=tuple(hidden_sizes), activation=activation))

    def normal(loc_scale):
        loc, scale = loc_scale
        return torch.distributions.Independent(torch.distributions.Normal(loc, scale), len(action_space.shape))

    # a Gaussian in the Box's own units (as SB3's): the vector env clips the actions to the Box
    policy = ProbabilisticActorPolicy(actor=actor, dist_fn=normal, action_space=action_space, action_scaling=False,
                                      action_bound_method=None)
    return policy, critic


def _train_rounds(ppo, policy, venv, rounds: int, per_round: int, n_envs: int, batch_size: int, repeat: int,
                  clock, world, progress: bool):
    """``rounds`` of collect + update + clear (the body of Tianshou's ``OnPolicyTrainer``)."""
    from tianshou.data import Collector, VectorReplayBuffer
    from tianshou.utils.torch_utils import policy_within_training_step

    collector = Collector(policy, venv, VectorReplayBuffer(per_round, n_envs))
    collector.reset()
    if clock is not None:
        clock.start_logits(world, tianshou_logits_fn(policy.actor))
    tokens = 0
    for _ in progress_bar(range(rounds), "Tianshou PPO rounds", enabled=progress):
        with policy_within_training_step(policy):
            stats = collector.collect(n_step=per_round)
            ppo.update(buffer=collector.buffer, batch_size=batch_size, repeat=repeat)
            collector.reset_buffer(keep_statistics=True)
        tokens += stats.n_collected_steps
        if clock is not None:
            clock.tick(tokens)
    if clock is not None:
        clock.stop(tokens)
    return policy


TIANSHOU_PPO = Library(
    name="tianshou",
    schema="the keyword parameters of kcrl.agents.tianshou.train_tianshou_ppo",
    parameters=lambda: signature_defaults(train_tianshou_ppo, (inspect.Parameter.KEYWORD_ONLY,)),
    check=lambda values: check_activation(values["activation"], "activation") if "activation" in values else None,
)
"""Tianshou PPO through :func:`train_tianshou_ppo` (``tianshou.yaml``)"""
