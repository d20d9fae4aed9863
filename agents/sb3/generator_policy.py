"""An SB3 actor-critic policy that starts at a trained kcrl generator's next-token distribution.

PPO from a default policy on ``TemplateSentence-v0`` starts near uniform over 5,000 tokens and
has to rediscover language from the constraint's reward. :class:`GeneratorPolicy` starts where
the paper's generator step starts, at p_theta (the MLE generator): its logits are

    logits(s) = log p_theta(. | s) + W h(s) + b,      W = 0, b = 0 at the start

where ``log p_theta`` is the generator's own network (a copy, fine-tuned by PPO unless frozen) and
``h`` the usual actor MLP over :class:`~kcrl.agents.sb3.TokenFeatureExtractor` features. The critic
reads the token features only.

    >>> import kcrl, torch
    >>> from stable_baselines3 import PPO
    >>> from kcrl.agents.sb3 import GeneratorPolicy, make_sb3_vec_env
    >>> from kcrl.models.tabular import TabularAutoregressive
    >>> venv = make_sb3_vec_env("TabularSequence-v0", num_envs=4, seed=0)
    >>> generator = TabularAutoregressive(4, 4, generator=torch.Generator().manual_seed(1))
    >>> model = PPO(GeneratorPolicy, venv, n_steps=8, batch_size=32, policy_kwargs=dict(generator=generator))
    >>> obs = model.policy.obs_to_tensor(venv.reset())[0]
    >>> p_policy = model.policy.get_distribution(obs).distribution.probs
    >>> p_theta = generator.step_log_probs(obs["tokens"].long(), obs["length"].long().reshape(-1)).exp()
    >>> torch.allclose(p_policy, p_theta, atol=1e-6)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from torch import nn

from kcrl.agents.adapter_common import NextTokenLogProbs, Pooling, ResidualLogits
from kcrl.agents.sb3.vec_env import TokenFeatureExtractor
from kcrl.errors import ConfigError


class GeneratorFeatureExtractor(TokenFeatureExtractor):
    """Features ``[log p_theta(. | s) (V), token features (F)]`` for :class:`GeneratorPolicy`.

    Args:
        observation_space: the VecEnv's Dict observation space.
        generator: a kcrl generator (see :class:`~kcrl.agents.adapter_common.NextTokenLogProbs`).
        vocab_size: V, the number of actions.
        embed_dim, pooling: of the token features (see :class:`TokenFeatureExtractor`).
        train_generator: fine-tune the generator's copy (``False``: only the residual learns).
    """

    def __init__(self, observation_space: spaces.Dict, generator: nn.Module, vocab_size: int, embed_dim: int = 16,
                 pooling: Pooling = "flatten", train_generator: bool = True) -> None:
        super().__init__(observation_space, embed_dim, pooling)
        self.next_token = NextTokenLogProbs(generator, trainable=train_generator)
        self.vocab_size, self.token_features = int(vocab_size), self.encoder.features_dim
        self._features_dim = self.vocab_size + self.token_features

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = self._ids("tokens", observations["tokens"])  # (B, T)
        length = self._ids("length", observations["length"])[:, 0]  # (B,)
        context = self._ids("context", observations["context"]) if "context" in observations else None
        log_p = self.next_token(tokens, length, context)  # (B, V)
        if log_p.shape[-1] != self.vocab_size:
            raise ConfigError(
                f"the generator scores {log_p.shape[-1]} tokens but the env has {self.vocab_size} actions; "
                "use the generator trained on this env's vocabulary."
            )
        return torch.cat([log_p, self.encoder(tokens, length, context)], dim=-1)  # (B, V + F)


class _GeneratorMlpExtractor(nn.Module):
    """Actor latent ``[log p_theta (V), MLP(token features)]``; critic latent ``MLP(token features)``."""

    def __init__(self, vocab_size: int, token_features: int, net_arch, activation_fn, device) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.mlp = MlpExtractor(token_features, net_arch=net_arch, activation_fn=activation_fn, device=device)
        self.latent_dim_pi = vocab_size + self.mlp.latent_dim_pi
        self.latent_dim_vf = self.mlp.latent_dim_vf

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        v = self.vocab_size
        return torch.cat([features[:, :v], self.mlp.forward_actor(features[:, v:])], dim=-1)  # (B, V + H_pi)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp.forward_critic(features[:, self.vocab_size :])  # (B, H_vf)


class GeneratorPolicy(MultiInputActorCriticPolicy):
    """SB3 ``MultiInputPolicy`` for kcrl token envs whose initial action distribution is p_theta's.

    Use as ``PPO(GeneratorPolicy, venv, policy_kwargs=dict(generator=G))``; every other
    ``policy_kwargs`` key of SB3's ``MultiInputPolicy`` works as usual (``net_arch``,
    ``activation_fn``, ``share_features_extractor``, ...). SB3's orthogonal initialisation of
    the features extractor is undone for the generator's copy, and the action head is a
    :class:`~kcrl.agents.adapter_common.ResidualLogits` (zero at the start), so the policy equals the
    generator exactly until the first update.

    Args (beyond SB3's):
        generator: the kcrl generator to start from (a network with ``step_log_probs`` or
            ``prefix_log_probs``, e.g. ``TemplateGenerator.load(path)`` or ``env.unwrapped.task.base``).
        train_generator: let PPO fine-tune the generator's copy (default) or keep it frozen.
        embed_dim, pooling: of the token features beside it.
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, lr_schedule, *,
                 generator: nn.Module | None = None, train_generator: bool = True, embed_dim: int = 16,
                 pooling: Pooling = "flatten", **kwargs: Any) -> None:
        if generator is None:
            raise ConfigError(
                "GeneratorPolicy needs the generator to start from: PPO(GeneratorPolicy, venv, "
                "policy_kwargs=dict(generator=G)), e.g. G = venv.get_attr('task')[0].base."
            )
        if not isinstance(action_space, spaces.Discrete):
            raise ConfigError(f"GeneratorPolicy is for token envs (a Discrete action per token); got {action_space}.")
        # held in a tuple: as a registered submodule the caller's generator would join the optimiser
        self._generator, self._train_generator = (generator,), train_generator
        self._embed_dim, self._pooling = embed_dim, pooling
        kwargs["features_extractor_class"] = GeneratorFeatureExtractor
        kwargs["features_extractor_kwargs"] = dict(generator=generator, vocab_size=int(action_space.n),
                                                   embed_dim=embed_dim, pooling=pooling, train_generator=train_generator)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        extractor = self.pi_features_extractor
        self.mlp_extractor = _GeneratorMlpExtractor(extractor.vocab_size, extractor.token_features, self.net_arch,
                                                    self.activation_fn, self.device)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        state = self._generator[0].state_dict()
        for extractor in {self.pi_features_extractor, self.vf_features_extractor}:
            extractor.next_token.generator.load_state_dict(state)  # undo SB3's orthogonal re-initialisation
        self.action_net = ResidualLogits(self.action_space.n, self.mlp_extractor.latent_dim_pi - self.action_space.n)
        self.action_net.to(self.device)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.pop("features_extractor_class", None)
        data.pop("features_extractor_kwargs", None)
        data.update(generator=self._generator[0], train_generator=self._train_generator, embed_dim=self._embed_dim,
                    pooling=self._pooling)
        return data


__all__ = ["GeneratorFeatureExtractor", "GeneratorPolicy"]
