"""What the SB3 and Tianshou adapters share: the batched env they wrap, and token-id features.

:func:`as_batched_env` finds the kcrl batched env inside what a user passes and puts it in the
autoreset mode an adapter needs.

The generation envs observe ``Dict(tokens=MultiDiscrete([V+1]*T), length=Discrete(T+1)
[, context=MultiDiscrete(nvec)])``. One-hot encoding that (what generic RL libraries do with
``MultiDiscrete``) gives T*(V+1) inputs: 100,000 at V=5000, T=20, and a first layer with millions
of weights. :class:`TokenEncoder` embeds the ids instead: a learned vector per token id plus one
per position, flattened (order-aware, ``T*E`` features) or mean-pooled over the written prefix
(``E`` features, any T), next to an embedding of the length and one per context entry. Its size
does not grow with T*V.

Starting from a trained generator: :class:`NextTokenLogProbs` turns a kcrl generator p_theta (the
tabular model, the oracle's LSTM, the template generator, or a task's own base model) into a module
of the observation ids, ``log p_theta(. | prefix, context)``, and :class:`ResidualLogits` adds a
zero-initialised correction to it. Policies built on the two (SB3's
:class:`~kcrl.agents.sb3.GeneratorPolicy`, Tianshou's ``GeneratorActor``) start *exactly* at the
generator's next-token distribution instead of near uniform over V tokens, and PPO fine-tunes it.

:func:`as_onestep_env` is the counterpart of :func:`as_batched_env` for the one-step envs
(``GaussianRing-v0``, ``StructuredDigits-v0``: one ``Box`` action is the whole sample).
"""

from __future__ import annotations

import copy
import inspect
from typing import Literal

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from torch import nn

from kcrl.envs.generation import BatchedGenerationEnv
from kcrl.envs.onestep import BatchedOneStepEnv
from kcrl.errors import ConfigError, ShapeError

Pooling = Literal["flatten", "mean"]


def as_batched_env(env: object, autoreset_mode: AutoresetMode, who: str) -> BatchedGenerationEnv:
    """The kcrl batched env inside ``env``, rebuilt over the same task if its autoreset mode differs.

    The rebuilt env shares the task object (base model, constraint; ``set_constraint`` on either
    reaches both) and starts with fresh episode state.
    """
    env = getattr(env, "unwrapped", env)
    if not isinstance(env, BatchedGenerationEnv):
        raise ConfigError(
            f"{who} needs a kcrl BatchedGenerationEnv (gymnasium.make_vec(ID, num_envs=N, "
            f"vectorization_mode='vector_entry_point')); got {type(env).__name__}."
        )
    if env.autoreset_mode != autoreset_mode:
        env = BatchedGenerationEnv(env.task, env.num_envs, env.device, env.kl_to_base, autoreset_mode)
    return env


def as_onestep_env(env: object, autoreset_mode: AutoresetMode, who: str) -> BatchedOneStepEnv:
    """The kcrl batched one-step env inside ``env``, rebuilt over the same task if its autoreset mode differs."""
    env = getattr(env, "unwrapped", env)
    if not isinstance(env, BatchedOneStepEnv):
        raise ConfigError(
            f"{who} needs a kcrl BatchedOneStepEnv (gymnasium.make_vec('GaussianRing-v0', num_envs=N, "
            f"vectorization_mode='vector_entry_point')); got {type(env).__name__}."
        )
    if env.autoreset_mode != autoreset_mode:
        env = BatchedOneStepEnv(env.task, env.num_envs, env.device, autoreset_mode)
    return env


def id_cardinalities(space: spaces.Space, key: str) -> np.ndarray:
    """Number of distinct ids in each slot of a token/length/context space, ``(slots,)``.

    Accepts the env's own spaces (``MultiDiscrete``, ``Discrete``) and the integer ``Box``
    versions that :class:`kcrl.agents.sb3.SB3VecEnv` exposes (``high + 1`` ids per slot).
    """
    if isinstance(space, spaces.MultiDiscrete):
        return np.asarray(space.nvec, dtype=np.int64).reshape(-1)
    if isinstance(space, spaces.Discrete):
        return np.asarray([space.n], dtype=np.int64)
    if isinstance(space, spaces.Box) and np.all(np.isfinite(space.high)):
        return (np.asarray(space.high, dtype=np.int64) + 1).reshape(-1)
    raise ConfigError(
        f"observation key {key!r} must be MultiDiscrete, Discrete or a bounded integer Box of ids; "
        f"got {space}. Use the observation space of a kcrl generation env."
    )


class TokenEncoder(nn.Module):
    """Embeds ``(tokens, length, context)`` id tensors into one feature vector per row.

    Shapes: tokens ``(B, T)``, length ``(B,)``, context ``(B, C)`` (all integer) ->
    ``(B, features_dim)``.

    Args:
        max_length: T.
        obs_vocab: number of distinct ids in a token slot (V+1 with the padding id).
        context_nvec: ids per context entry, or ``None``.
        embed_dim: E, the size of every embedding.
        pooling: ``"flatten"`` concatenates the T position-aware token embeddings (``T*E``
            features, like kcrl's own ``TokenPolicy``); ``"mean"`` averages them over the written
            prefix (``E`` features).

    Example:
        >>> enc = TokenEncoder(max_length=3, obs_vocab=5, context_nvec=[2, 7], embed_dim=4)
        >>> enc.features_dim  # 3*4 tokens + 4 length + 2*4 context
        24
        >>> enc(torch.tensor([[1, 2, 4]]), torch.tensor([2]), torch.tensor([[1, 6]])).shape
        torch.Size([1, 24])
    """

    def __init__(
        self,
        max_length: int,
        obs_vocab: int,
        context_nvec: np.ndarray | list[int] | None = None,
        embed_dim: int = 16,
        pooling: Pooling = "flatten",
    ) -> None:
        super().__init__()
        if pooling not in ("flatten", "mean"):
            raise ConfigError(f"pooling must be 'flatten' or 'mean'; got {pooling!r}.")
        if embed_dim < 1 or max_length < 1 or obs_vocab < 1:
            raise ConfigError(
                f"embed_dim, max_length and obs_vocab must be positive; got {embed_dim}, {max_length}, {obs_vocab}."
            )
        self.max_length, self.obs_vocab, self.pooling = int(max_length), int(obs_vocab), pooling
        self.token_embed = nn.Embedding(self.obs_vocab, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(self.max_length, embed_dim))
        self.len_embed = nn.Embedding(self.max_length + 1, embed_dim)
        token_features = self.max_length * embed_dim if pooling == "flatten" else embed_dim
        self.features_dim = token_features + embed_dim
        self.context_embed = None
        if context_nvec is not None and len(context_nvec) > 0:
            nvec = torch.as_tensor(np.asarray(context_nvec, dtype=np.int64))
            # one table, each entry with its own rows: id c of entry j is row offsets[j] + c
            self.register_buffer("context_offsets", torch.cumsum(nvec, 0) - nvec, persistent=False)
            self.context_embed = nn.Embedding(int(nvec.sum()), embed_dim)
            self.features_dim += len(nvec) * embed_dim

    @classmethod
    def from_space(cls, observation_space: spaces.Dict, embed_dim: int = 16, pooling: Pooling = "flatten") -> "TokenEncoder":
        """Build the encoder that fits a generation env's (single-env) observation space."""
        if not isinstance(observation_space, spaces.Dict) or not {"tokens", "length"} <= set(observation_space.spaces):
            raise ConfigError(
                "expected the Dict observation space of a kcrl generation env, with keys 'tokens', "
                f"'length' and optionally 'context'; got {observation_space}."
            )
        tokens = id_cardinalities(observation_space["tokens"], "tokens")
        context = None
        if "context" in observation_space.spaces:
            context = id_cardinalities(observation_space["context"], "context")
        return cls(len(tokens), int(tokens.max()), context, embed_dim, pooling)

    def forward(self, tokens: torch.Tensor, length: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape[1] != self.max_length:
            raise ShapeError(f"tokens must have shape (B, {self.max_length}); got {tuple(tokens.shape)}.")
        length = length.reshape(-1)
        x = self.token_embed(tokens) + self.pos_embed  # (B, T, E)
        if self.pooling == "flatten":
            token_features = x.flatten(1)  # (B, T*E)
        else:
            written = torch.arange(self.max_length, device=tokens.device) < length[:, None]  # (B, T)
            summed = (x * written[..., None]).sum(1)  # (B, E)
            token_features = summed / length.clamp(min=1)[:, None].to(summed.dtype)
        parts = [token_features, self.len_embed(length)]
        if self.context_embed is not None:
            if context is None:
                raise ShapeError("this encoder was built with a context; pass the 'context' observation.")
            parts.append(self.context_embed(context + self.context_offsets).flatten(1))  # (B, C*E)
        return torch.cat(parts, dim=-1)  # (B, features_dim)


class NextTokenLogProbs(nn.Module):
    """A kcrl generator's next-token log-probabilities as a module of observation ids.

    ``forward(tokens (B, T), length (B,), context (B, C) | None) -> log p_theta(. | prefix, context)
    (B, V)``, the same quantity the envs use as the per-step base reward. Accepted generators, by
    their public method:

    * ``step_log_probs(tokens, lengths)`` — :class:`~kcrl.models.tabular.TabularAutoregressive`;
    * ``step_log_probs(tokens, lengths, context)`` — :class:`~kcrl.models.text_generator.TemplateGenerator`
      (the context is the template);
    * ``prefix_log_probs(tokens, lengths)`` — :class:`~kcrl.models.lstm_generator.LSTMGenerator`.

    The generator is deep-copied (the policy trains its own copy; the caller's stays as it was)
    and always runs in eval mode (no dropout), so rollouts and PPO's updates score the same
    distribution.

    Args:
        generator: the trained network.
        trainable: let the policy's optimiser update the copy (``False``: frozen, only the
            residual on top of it learns).
    """

    def __init__(self, generator: nn.Module, trainable: bool = True) -> None:
        super().__init__()
        if hasattr(generator, "step_log_probs"):
            method = "step_log_probs"
        elif hasattr(generator, "prefix_log_probs"):
            method = "prefix_log_probs"
        else:
            raise ConfigError(
                f"{type(generator).__name__} has no step_log_probs(tokens, lengths[, context]) or "
                "prefix_log_probs(tokens, lengths); pass a kcrl generator (TabularAutoregressive, LSTMGenerator, "
                "TemplateGenerator) or a task's base model (env.unwrapped.task.base)."
            )
        params = [p for p in inspect.signature(getattr(generator, method)).parameters.values()
                  if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.method, self.uses_context = method, len(params) >= 3
        self.generator = copy.deepcopy(generator).eval().requires_grad_(trainable)
        self.vocab_size = getattr(generator, "vocab_size", None)

    def train(self, mode: bool = True) -> "NextTokenLogProbs":
        super().train(mode)
        self.generator.eval()  # dropout would make the rollout's and the update's distributions differ
        return self

    def forward(self, tokens: torch.Tensor, length: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        length = length.reshape(-1).long()
        if self.uses_context:
            if context is None:
                raise ShapeError(f"{type(self.generator).__name__} is conditional; the observations need a 'context'.")
            out = getattr(self.generator, self.method)(tokens.long(), length, context.long())
        else:
            out = getattr(self.generator, self.method)(tokens.long(), length)
        return torch.log_softmax(out.float(), dim=-1)  # (B, V)


class ResidualLogits(nn.Module):
    """``logits = log p_theta + W h + b`` with W and b zero at the start (so the policy starts at p_theta).

    Input: ``(B, V + H)`` laid out as ``[log p_theta(. | s) (V), h (H)]``; output ``(B, V)``.
    """

    def __init__(self, vocab_size: int, hidden: int) -> None:
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.correction = nn.Linear(hidden, self.vocab_size)
        nn.init.zeros_(self.correction.weight)
        nn.init.zeros_(self.correction.bias)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        v = self.vocab_size
        return latent[:, :v] + self.correction(latent[:, v:])  # (B, V)
