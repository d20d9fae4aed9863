"""A Tianshou policy as the generator p_theta and as the generator step of Algorithm 1.

* :func:`policy_generator` — a Tianshou ``DiscreteActorPolicy`` seen by
  :class:`~kcrl.trainer.PRTrainer` as a :class:`~kcrl.agents.generator_steps.PolicyGenerator`.
* :class:`TianshouStep` — Tianshou's PPO, ``env_steps`` of collect + update per Algorithm 1
  iteration in the env whose reward is the current constraint plus the per-step KL term to a
  frozen copy of the policy (see :mod:`kcrl.agents.generator_steps`).

Importing this module does not import Tianshou; using :class:`TianshouStep` or a
``TianshouVectorEnv`` does (``pip install 'kcrl[tianshou]'``).
"""

from __future__ import annotations

from typing import Any

from gymnasium.vector import AutoresetMode
from torch import nn

from kcrl.agents.adapter_common import as_batched_env
from kcrl.agents.generator_steps import PolicyGenerator, frozen_reference
from kcrl.envs.generation import BatchedGenerationEnv
from kcrl.errors import ConfigError, require_optional


def tianshou_logits_fn(actor: Any):
    """Logits of a Tianshou ``DiscreteActor`` (``softmax_output=False``, on ``TokenNet``) for kcrl
    observation tensors (``tokens (N, T)``, ``length (N,)``[, ``context``]): ``obs -> (N, V)``.

    The actor's ``forward`` returns ``(logits, hidden_state)``; the logits are kept.
    """

    def logits(obs):
        return actor(obs)[0]

    return logits


def tianshou_policy(policy_or_algorithm):
    """The Tianshou policy (with an ``actor``) of a policy or of an algorithm (``algorithm.policy``)."""
    policy = getattr(policy_or_algorithm, "policy", policy_or_algorithm)
    if not isinstance(getattr(policy, "actor", None), nn.Module):
        raise ConfigError(
            "expected a Tianshou DiscreteActorPolicy (or an algorithm such as PPO holding one as .policy) with an "
            f"actor module; got {type(policy_or_algorithm).__name__}."
        )
    return policy


def tianshou_kcrl_env(env):
    """The kcrl batched env of a ``TianshouVectorEnv`` (or ``env`` itself)."""
    if isinstance(env, BatchedGenerationEnv):
        return env
    from kcrl.agents.tianshou._backend import TianshouVectorEnv  # needs tianshou

    if not isinstance(env, TianshouVectorEnv):
        raise ConfigError(f"expected a kcrl TianshouVectorEnv or BatchedGenerationEnv; got {type(env).__name__}.")
    return env.env


def policy_generator(policy_or_algorithm, env) -> PolicyGenerator:
    """A Tianshou ``DiscreteActorPolicy`` (or an algorithm holding one as ``.policy``, e.g. ``PPO``)
    whose ``actor`` is a ``DiscreteActor`` with logits output, acting in ``env`` (a
    ``TianshouVectorEnv`` or the kcrl batched env under it), as a generator for
    :class:`~kcrl.trainer.PRTrainer`."""
    batched = as_batched_env(tianshou_kcrl_env(env), AutoresetMode.DISABLED, "PolicyGenerator")
    return PolicyGenerator(tianshou_logits_fn, batched, tianshou_policy(policy_or_algorithm).actor)


class TianshouStep:
    """Generator step of Algorithm 1 by Tianshou's PPO: ``env_steps`` env steps of collect + update
    in the env whose reward is the current constraint plus the KL term to the frozen policy.

    Each call resets a fresh ``Collector`` on ``venv`` (so the episodes the generator's sampling
    left in the shared batched env are not continued), then runs ``env_steps //
    collection_step_num_env_steps`` rounds of ``collect(n_step=collection_step_num_env_steps)``
    and ``algorithm.update(batch_size, repeat)``, and restores the env's reference afterwards.

    Not checkpointable: a Tianshou run draws actions from torch's global RNG and minibatches from
    NumPy's global stream, and the algorithm keeps state (optimiser, learning-rate schedulers,
    return-scaling statistics) that no checkpoint of kcrl's saves, so it has no ``state_dict``, and
    :meth:`kcrl.trainer.PRTrainer.train` refuses resumable checkpoints with it (a ``ConfigError``)
    rather than resume inexactly.

    Args:
        algorithm: a Tianshou on-policy algorithm (``PPO``) whose ``policy`` is a
            ``DiscreteActorPolicy`` on a ``DiscreteActor`` with logits output.
        venv: the :class:`~kcrl.agents.tianshou.TianshouVectorEnv` it trains in.
        env_steps: env steps (tokens, over all sub-envs) per Algorithm 1 iteration.
        collection_step_num_env_steps: env steps per collect + update round (``None``: ``env_steps``);
            a multiple of the number of sub-envs that divides ``env_steps``.
        batch_size: minibatch size of ``algorithm.update``.
        repeat: passes over each round's buffer.
    """

    def __init__(self, algorithm, venv, env_steps: int, collection_step_num_env_steps: int | None = None,
                 batch_size: int = 256, repeat: int = 4) -> None:
        require_optional("tianshou", "tianshou")
        per_round = env_steps if collection_step_num_env_steps is None else collection_step_num_env_steps
        n = tianshou_kcrl_env(venv).num_envs
        if not isinstance(env_steps, int) or env_steps < 1 or not isinstance(per_round, int) or per_round < 1:
            raise ConfigError(
                "env_steps and collection_step_num_env_steps must be positive integers; "
                f"got {env_steps!r}, {per_round!r}."
            )
        if per_round % n or env_steps % per_round:
            raise ConfigError(
                f"collection_step_num_env_steps ({per_round}) must be a multiple of the {n} sub-envs (every collection "
                f"step advances all of them) and divide env_steps ({env_steps})."
            )
        self.algorithm, self.venv, self.env_steps = algorithm, venv, env_steps
        self.per_round, self.batch_size, self.repeat = per_round, batch_size, repeat
        self.policy = tianshou_policy(algorithm)

    def __call__(self, trainer) -> dict[str, float]:
        from tianshou.data import Collector, VectorReplayBuffer
        from tianshou.utils.torch_utils import policy_within_training_step

        env = tianshou_kcrl_env(self.venv)
        self.venv.set_constraint(trainer.constraint)
        env.set_reference(frozen_reference(tianshou_logits_fn, self.policy.actor))
        try:
            collector = Collector(self.policy, self.venv, VectorReplayBuffer(self.per_round, len(self.venv)))
            collector.reset()
            for _ in range(self.env_steps // self.per_round):
                with policy_within_training_step(self.policy):
                    collector.collect(n_step=self.per_round)
                    self.algorithm.update(buffer=collector.buffer, batch_size=self.batch_size, repeat=self.repeat)
                    collector.reset_buffer(keep_statistics=True)
        finally:
            env.set_reference(None)
        return {}
