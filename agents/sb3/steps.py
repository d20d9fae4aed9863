"""An SB3 model as the generator p_theta and as the generator step of Algorithm 1.

* :func:`policy_generator` — an SB3 model trained on a :class:`~kcrl.agents.sb3.SB3VecEnv`, seen by
  :class:`~kcrl.trainer.PRTrainer` as a :class:`~kcrl.agents.generator_steps.PolicyGenerator`.
* :class:`SB3Step` — ``timesteps`` of ``learn`` per Algorithm 1 iteration in the env whose reward is
  the current constraint plus the per-step KL term to a frozen copy of the policy (see
  :mod:`kcrl.agents.generator_steps` for why its optimum is the E-step posterior of Eq. 3).
"""

from __future__ import annotations

import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.preprocessing import preprocess_obs
from torch import nn

from kcrl.agents.adapter_common import as_batched_env
from kcrl.agents.generator_steps import LogitsFn, PolicyGenerator, frozen_reference
from kcrl.agents.sb3.vec_env import SB3VecEnv
from kcrl.errors import ConfigError


def sb3_kcrl_env(model) -> SB3VecEnv:
    """The :class:`~kcrl.agents.sb3.SB3VecEnv` under an SB3 model's (possibly wrapped) env."""
    venv = model.get_env()
    while not isinstance(venv, SB3VecEnv) and hasattr(venv, "venv"):
        venv = venv.venv
    if not isinstance(venv, SB3VecEnv):
        raise ConfigError(f"the SB3 model must be trained on a kcrl SB3VecEnv; its env is {type(venv).__name__}.")
    return venv


def sb3_logits_fn(policy: nn.Module) -> LogitsFn:
    """Logits of an SB3 actor-critic policy for kcrl observation tensors (ids as SB3VecEnv shows them).

    Computed from the policy's parts (features, actor latent, action head) so that no distribution
    object holding graph tensors is left on the policy.
    """

    def logits(obs: dict[str, torch.Tensor]) -> torch.Tensor:
        sb3_obs = {k: v.to(policy.device) for k, v in obs.items()}
        sb3_obs["length"] = sb3_obs["length"].reshape(-1, 1)
        # the actor's own extractor, shared with the critic or not (SB3's share_features_extractor)
        features = policy.pi_features_extractor(preprocess_obs(sb3_obs, policy.observation_space, policy.normalize_images))
        return policy.action_net(policy.mlp_extractor.forward_actor(features))

    return logits


def policy_generator(model) -> PolicyGenerator:
    """An SB3 model trained on a :class:`~kcrl.agents.sb3.SB3VecEnv` (or a VecEnv wrapper of one) as a
    generator for :class:`~kcrl.trainer.PRTrainer` (``sample`` by roll-outs, ``log_prob`` by scoring
    every prefix)."""
    venv = sb3_kcrl_env(model)
    env = as_batched_env(venv.env, AutoresetMode.DISABLED, "PolicyGenerator")
    return PolicyGenerator(sb3_logits_fn, env, model.policy)


class SB3Step:
    """Generator step of Algorithm 1 by an SB3 on-policy model (PPO, A2C): ``timesteps`` of ``learn``
    in the env whose reward is the current constraint plus the KL term to the frozen policy.

    Not checkpointable: an SB3 model carries state across ``learn`` calls that no checkpoint of
    kcrl's restores exactly (its rollout's last observations and the episodes in flight in the env,
    the global NumPy stream its minibatches are drawn from, the progress its schedules read), so
    it has no ``state_dict``, and :meth:`kcrl.trainer.PRTrainer.train` refuses resumable
    checkpoints with it (a ``ConfigError``) rather than resume inexactly.
    """

    def __init__(self, model, timesteps: int) -> None:
        self.model, self.timesteps = model, timesteps

    def __call__(self, trainer) -> dict[str, float]:
        venv = sb3_kcrl_env(self.model)
        venv.set_constraint(trainer.constraint)
        venv.env.set_reference(frozen_reference(sb3_logits_fn, self.model.policy, clone=_clone_sb3_policy))
        try:
            self.model.learn(self.timesteps, reset_num_timesteps=False, progress_bar=False)
        finally:
            venv.env.set_reference(None)
            # SB3 leaves the last training batch's distribution (graph tensors) on the policy;
            # drop it so that the policy stays deep-copyable (PRTrainer copies its generator).
            self.model.policy.action_dist.distribution = None
        return {}


def _clone_sb3_policy(policy: nn.Module) -> nn.Module:
    """A copy of an SB3 policy rebuilt from its constructor arguments and state dict."""
    clone = type(policy)(**policy._get_constructor_parameters())
    clone.load_state_dict(policy.state_dict())
    return clone.to(policy.device)
