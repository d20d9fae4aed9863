"""``TabularSequence-v0``: a world small enough to solve exactly.

Every one of the V^T sequences can be enumerated, so the base model p_theta, the hidden
constraint f*, the data distribution ``p_data = p_theta exp(f*) / Z*``, any posterior q and
any policy's distribution are known exactly. Tests use it to check estimators and agents
against true answers.
"""

from __future__ import annotations

import torch

from kcrl.config import SEED_RANGE, Range, check_values
from kcrl.constraints import Constraint, TokenPotentialConstraint
from kcrl.envs.generation import BatchedGenerationEnv, GenerationEnv
from kcrl.envs.kwargs import VEC_RANGES, checked_kwargs
from kcrl.envs.task import SequenceTask
from kcrl.errors import ConfigError

WORLD_RANGES: dict[str, Range] = {
    "vocab_size": Range(ge=2, integer=True),
    "length": Range(ge=1, integer=True),
    "world_seed": SEED_RANGE,
    "constraint_scale": Range(ge=0),
}
"""Value ranges of the world's arguments (TabularWorld, the entry points, ``kcrl train``'s ``world``)."""
from kcrl.models.tabular import TabularAutoregressive
from kcrl.posterior import ExactPosterior
from kcrl.softrl import all_sequences


class TabularWorld(SequenceTask):
    """Base model, hidden constraint f* and the exact distributions of ``TabularSequence-v0``.

    Args:
        vocab_size: V (>= 2).
        length: T (>= 1); V^T must stay enumerable (at most 2^20 sequences).
        world_seed: seed of the random base model and hidden constraint.
        constraint_scale: std of f*'s potentials (how far p_data is from p_theta).
        alpha: weight of the constraint in the reward.
        constraint: reward constraint; defaults to the hidden f* itself.
    """

    def __init__(
        self,
        vocab_size: int = 4,
        length: int = 4,
        world_seed: int = 0,
        constraint_scale: float = 1.0,
        alpha: float = 1.0,
        constraint: Constraint | None = None,
    ) -> None:
        check_values({"vocab_size": vocab_size, "length": length, "world_seed": world_seed,
                      "constraint_scale": constraint_scale, "alpha": alpha}, WORLD_RANGES, label="TabularWorld argument")
        if vocab_size < 2 or length < 1 or vocab_size**length > 2**20:
            raise ConfigError(
                f"TabularSequence needs vocab_size >= 2, length >= 1 and vocab_size**length <= 2**20 "
                f"(it enumerates every sequence); got vocab_size={vocab_size}, length={length}."
            )
        self.vocab_size, self.max_length = vocab_size, length
        self.pad_id, self.obs_vocab = vocab_size, vocab_size + 1
        gen = torch.Generator().manual_seed(world_seed)
        self.base = TabularAutoregressive(vocab_size, length, init_std=1.0, generator=gen).requires_grad_(False)
        self.true_constraint = TokenPotentialConstraint(
            vocab_size, length, init_std=constraint_scale, generator=gen
        ).requires_grad_(False)
        super().__init__(constraint if constraint is not None else self.true_constraint, alpha)

    def base_log_probs(self, tokens, lengths, context):
        return self.base.step_log_probs(tokens, lengths)

    def to(self, device):
        super().to(device)
        self.base.to(device)
        self.true_constraint.to(device)
        return self

    # ------------------------------------------------------------------ exact answers
    @property
    def device(self) -> torch.device:
        return self.base.logits.device

    def sequences(self) -> torch.Tensor:
        """All V^T sequences, ``(V^T, T)``, lexicographic."""
        return all_sequences(self.vocab_size, self.max_length, self.device)

    @torch.no_grad()
    def base_log_probs_all(self) -> torch.Tensor:
        """``log p_theta(x)`` for every sequence, ``(V^T,)``."""
        return self.base.log_prob(self.sequences())

    @torch.no_grad()
    def data_log_probs(self) -> torch.Tensor:
        """``log p_data(x) = log p_theta(x) + f*(x) - log Z*`` for every sequence."""
        return ExactPosterior(self.base_log_probs_all(), self.true_constraint(self.sequences()), 1.0).log_q

    @torch.no_grad()
    def posterior(self, constraint: Constraint | None = None, alpha: float | None = None) -> ExactPosterior:
        """Exact q ∝ p_theta exp(alpha f) for ``constraint`` (default: the reward's)."""
        constraint = self.constraint if constraint is None else constraint
        alpha = self.alpha if alpha is None else alpha
        return ExactPosterior(self.base_log_probs_all(), constraint.predict(self.sequences()), alpha)

    @torch.no_grad()
    def sample_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n i.i.d. samples of p_data, ``(n, T)``."""
        idx = torch.multinomial(self.data_log_probs().exp(), n, replacement=True, generator=generator)
        return self.sequences()[idx]


def check_world_kwargs(values: dict, where: str = "world") -> None:
    """Names, types and ranges of keyword arguments for :class:`TabularWorld` (``kcrl train``'s
    ``world`` section); errors name ``where.key``."""
    checked_kwargs("TabularWorld", WORLD_RANGES, label="config key", prefix=f"{where}." if where else "")(_world)(**values)


def _world(vocab_size: int = 4, length: int = 4, world_seed: int = 0, constraint_scale: float = 1.0,
           alpha: float = 1.0) -> None:
    """The world's keyword arguments (checked by :func:`check_world_kwargs`)."""


@checked_kwargs("TabularSequence-v0", WORLD_RANGES)
def make_tabular_env(
    vocab_size: int = 4,
    length: int = 4,
    world_seed: int = 0,
    constraint_scale: float = 1.0,
    alpha: float = 1.0,
    kl_to_base: bool = True,
    render_mode: str | None = None,
) -> GenerationEnv:
    """Entry point of ``TabularSequence-v0``; see :class:`TabularSequenceEnv`."""
    return TabularSequenceEnv(
        TabularWorld(vocab_size, length, world_seed, constraint_scale, alpha),
        kl_to_base=kl_to_base,
        render_mode=render_mode,
    )


@checked_kwargs("TabularSequence-v0", {**WORLD_RANGES, **VEC_RANGES})
def make_tabular_vec_env(
    num_envs: int = 1,
    vocab_size: int = 4,
    length: int = 4,
    world_seed: int = 0,
    constraint_scale: float = 1.0,
    alpha: float = 1.0,
    kl_to_base: bool = True,
    device: str = "cpu",
    autoreset_mode: str = "NextStep",
    max_episode_steps: int | None = None,
) -> BatchedGenerationEnv:
    """Vector entry point of ``TabularSequence-v0`` (``gymnasium.make_vec``)."""
    world = TabularWorld(vocab_size, length, world_seed, constraint_scale, alpha)
    return BatchedGenerationEnv(world, num_envs, device, kl_to_base, autoreset_mode)


class TabularSequenceEnv(GenerationEnv):
    """Write a sequence of T tokens from a vocabulary of V; solvable exactly by enumeration.

    ## Description
    A hidden knowledge constraint f* scores sequences; the data distribution is
    ``p_data ∝ p_theta exp(f*)`` for a random autoregressive base model p_theta. The agent writes
    one token per step; the reward is the soft-RL decomposition of the PR E-step, so the
    max-entropy optimal policy is exactly ``q ∝ p_theta exp(alpha f)``.

    ## Action Space
    ``Discrete(V)``: the next token.

    ## Observation Space
    ``Dict(tokens=MultiDiscrete([V+1]*T), length=Discrete(T+1))``; unwritten slots hold ``V``.

    ## Rewards
    ``log p_theta(a_t | s_t)`` every step (if ``kl_to_base``), plus ``alpha * f(x)`` after the last
    token, where f is the hidden f* unless swapped with ``set_constraint``. ``info`` carries
    ``reward_base``, and at the end ``constraint`` (raw f) and ``reward_constraint``.

    ## Starting State
    The empty sequence.

    ## Episode End
    Termination after exactly T tokens. There is no truncation.

    ## Arguments
    ``vocab_size=4``, ``length=4``, ``world_seed=0`` (base model and f*), ``constraint_scale=1.0``,
    ``alpha=1.0``, ``kl_to_base=True``. The batched form (``gymnasium.make_vec(...,
    vectorization_mode="vector_entry_point")``) also takes ``device`` and ``autoreset_mode``.

    ## Example
        >>> import gymnasium as gym, kcrl
        >>> env = gym.make("TabularSequence-v0")
        >>> obs, info = env.reset(seed=0)
        >>> for a in [0, 1, 2, 3]:
        ...     obs, reward, terminated, truncated, info = env.step(a)
        >>> obs["tokens"].tolist(), terminated, sorted(info)
        ([0, 1, 2, 3], True, ['constraint', 'reward_base', 'reward_constraint'])

    ## Version History
    * v0: initial version.
    """


def prefix_observations(world: TabularWorld) -> dict[str, torch.Tensor]:
    """Observations of every prefix shorter than T, in :func:`kcrl.softrl.prefix_index` order."""
    tokens, lengths = [], []
    for t in range(world.max_length):
        seqs = all_sequences(world.vocab_size, t, world.device)
        padded = torch.full((seqs.shape[0], world.max_length), world.pad_id, dtype=torch.long, device=world.device)
        padded[:, :t] = seqs
        tokens.append(padded)
        lengths.append(torch.full((seqs.shape[0],), t, dtype=torch.long, device=world.device))
    return {"tokens": torch.cat(tokens), "length": torch.cat(lengths)}
