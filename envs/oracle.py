"""``OracleSequence-v0``: SeqGAN's synthetic oracle benchmark as a generation MDP.

A randomly initialised LSTM, the *oracle*, is the true data distribution (Yu et al., SeqGAN,
AAAI 2017): vocabulary 5,000, embedding 32, hidden 32, every parameter drawn from N(0, 1), one
bias per gate, start token 0, sequences of exactly 20 tokens without an end token. Training
data are 9,984 oracle samples; a generator's quality is measured exactly by the oracle:

* ``NLL_oracle`` — mean per-token NLL, under the oracle, of ~10,000 generator samples (lower is
  better; it rewards mode collapse, so also report)
* ``heldout NLL`` — mean per-token NLL of held-out oracle samples under the generator.

See :mod:`kcrl.oracle_metrics`. The oracle is fixed by a recorded seed (:data:`ORACLE_SEED`);
a user's parameter file (:meth:`OracleLSTM.load`, or SeqGAN's own parameter arrays through
:meth:`OracleLSTM.from_seqgan_params`) replaces it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kcrl.models.lstm_generator import LSTMGenerator, PrefixStateCache
from kcrl.config import SEED_RANGE, Range
from kcrl.constraints import Constraint
from kcrl.envs.generation import BatchedGenerationEnv, GenerationEnv
from kcrl.envs.kwargs import VEC_RANGES, checked_kwargs
from kcrl.envs.task import SequenceTask
from kcrl.errors import ConfigError, did_you_mean, unknown_name

SEQGAN_VOCAB, SEQGAN_EMBED, SEQGAN_HIDDEN, SEQGAN_LENGTH, SEQGAN_START = 5000, 32, 32, 20, 0
SEQGAN_TRAIN_SAMPLES = 9_984  # 156 batches of 64
ORACLE_SEED = 29
"""Seed of the default oracle (see ``benchmarks/results/oracle-mle`` for its reference points)."""
SPLITS = {"train": 0, "valid": 1, "test": 2}


class OracleLSTM(LSTMGenerator):
    """SeqGAN's oracle: an LSTM language model with every parameter drawn from N(0, 1).

    One bias per gate: PyTorch's ``bias_hh`` is kept at zero, so each gate's pre-activation is
    ``W x + U h + b`` as in SeqGAN (two N(0, 1) biases would double the bias variance). The
    parameters are frozen. Draw order: embedding, ``weight_ih``, ``weight_hh``, ``bias_ih``,
    output weight, output bias, all from one CPU generator seeded ``seed``.

    Args:
        vocab_size, embed_dim, hidden_dim, length, start_token: as :class:`LSTMGenerator`.
        seed: the oracle's seed.

    Example:
        >>> oracle = OracleLSTM(vocab_size=50, length=8, seed=3)
        >>> float(oracle.lstm.bias_hh_l0.abs().max()), oracle.origin
        (0.0, 'seed 3')
    """

    def __init__(
        self,
        vocab_size: int = SEQGAN_VOCAB,
        embed_dim: int = SEQGAN_EMBED,
        hidden_dim: int = SEQGAN_HIDDEN,
        length: int = SEQGAN_LENGTH,
        start_token: int = SEQGAN_START,
        seed: int = ORACLE_SEED,
    ) -> None:
        super().__init__(
            vocab_size, embed_dim, hidden_dim, length, start_token, init_std=1.0,
            one_bias_per_gate=True, generator=torch.Generator().manual_seed(seed),
        )
        self.seed = seed
        self.origin = f"seed {seed}"
        self.requires_grad_(False)
        self.eval()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "seed": self.seed}

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "OracleLSTM":
        """An oracle from a parameter file (written by :meth:`save`, or a bare ``state_dict``)."""
        oracle = super().load(path, map_location)
        oracle.origin = f"file {Path(path).name}"
        return oracle.requires_grad_(False)

    @classmethod
    def from_seqgan_params(
        cls, params: Sequence[Any], length: int = SEQGAN_LENGTH, start_token: int = SEQGAN_START
    ) -> "OracleLSTM":
        """An oracle from SeqGAN's 15 parameter arrays (the list in its ``target_params`` file).

        Order: embeddings ``(V, E)``; then for the input, forget, output gates and the cell
        candidate, in that order, ``W (E, H)``, ``U (H, H)``, ``b (H,)``; then the output
        ``W_o (H, V)``, ``b_o (V,)``. Unpickle the file yourself (it is a Python pickle) and
        pass the list.
        """
        if len(params) != 15:
            raise ConfigError(f"SeqGAN's oracle has 15 parameter arrays; got {len(params)}.")
        p = [torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in params]
        vocab, embed = p[0].shape
        hidden = p[2].shape[0]
        oracle = cls(int(vocab), int(embed), int(hidden), length, start_token, seed=0)
        i, f, o, c = (p[1:4], p[4:7], p[7:10], p[10:13])  # (W, U, b) per gate
        torch_order = (i, f, c, o)  # PyTorch stacks gates as input, forget, cell, output
        state = {
            "embedding.weight": p[0],
            "lstm.weight_ih_l0": torch.cat([w.T for w, _, _ in torch_order]),  # (4H, E)
            "lstm.weight_hh_l0": torch.cat([u.T for _, u, _ in torch_order]),  # (4H, H)
            "lstm.bias_ih_l0": torch.cat([b for _, _, b in torch_order]),  # (4H,)
            "lstm.bias_hh_l0": torch.zeros(4 * int(hidden)),
            "output.weight": p[13].T,  # (V, H)
            "output.bias": p[14],
        }
        oracle.load_weights(state)
        oracle.seed, oracle.origin = None, "SeqGAN parameter arrays"
        return oracle

    def to_seqgan_params(self) -> list[np.ndarray]:
        """The inverse of :meth:`from_seqgan_params` (the two biases are summed)."""
        h = self.hidden_dim
        w_ih, w_hh = self.lstm.weight_ih_l0.detach().cpu(), self.lstm.weight_hh_l0.detach().cpu()
        bias = (self.lstm.bias_ih_l0 + self.lstm.bias_hh_l0).detach().cpu()
        gates = {name: slice(k * h, (k + 1) * h) for k, name in enumerate("ifco")}  # PyTorch order
        out = [self.embedding.weight.detach().cpu()]
        for name in "ifoc":  # SeqGAN order
            s = gates[name]
            out += [w_ih[s].T, w_hh[s].T, bias[s]]
        out += [self.output.weight.detach().cpu().T, self.output.bias.detach().cpu()]
        return [t.contiguous().numpy().copy() for t in out]


class OracleLikelihoodConstraint(Constraint):
    """The fixed constraint ``f(x) = (1/T) log p_oracle(x)``: "be likely under the truth".

    Its expectation under a generator is minus that generator's NLL_oracle, so it is the
    benchmark's quality measure used as reward: an upper-bound arm, not knowledge an agent
    could have in practice (learn one from data instead, e.g. :func:`kcrl.models.sequence_scorer.cnn_constraint`).
    """

    def __init__(self, oracle: OracleLSTM) -> None:
        super().__init__()
        self.oracle = oracle

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.oracle.log_prob(x) / x.shape[1]  # (N,)


class OracleWorld(SequenceTask):
    """The world of ``OracleSequence-v0``: oracle, data, base model p_theta and constraint.

    Args:
        vocab_size, embed_dim, hidden_dim: the oracle's sizes (``None``: SeqGAN's 5000 / 32 / 32,
            or the parameter file's).
        length: T, tokens per sequence (SeqGAN: 20).
        oracle_seed: seed of the oracle (ignored when ``oracle_params`` is given).
        oracle_params: an :class:`OracleLSTM` or the path of its parameter file.
        base: the base model p_theta: an :class:`LSTMGenerator`, the path of one
            (:meth:`LSTMGenerator.save`), or ``None`` for an untrained SeqGAN generator
            (N(0, 0.1) parameters) seeded ``base_seed``.
        base_seed: seed of the untrained base model and of a fresh learnable constraint.
        constraint: ``"oracle"`` (:class:`OracleLikelihoodConstraint`), ``"cnn"`` (a fresh
            learnable :class:`~kcrl.models.sequence_scorer.CNNSequenceScorer`) or a
            :class:`~kcrl.constraints.Constraint`.
        alpha: weight of the constraint in the reward.
        data_seed: seed of the data sets (each split has its own stream).
        train_samples, valid_samples, test_samples: sizes of the oracle data sets, drawn on
            first use (:meth:`data`), always on CPU so that they do not depend on the device.
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        length: int = SEQGAN_LENGTH,
        embed_dim: int | None = None,
        hidden_dim: int | None = None,
        oracle_seed: int = ORACLE_SEED,
        oracle_params: OracleLSTM | str | Path | None = None,
        base: LSTMGenerator | str | Path | None = None,
        base_seed: int = 0,
        constraint: Constraint | str = "oracle",
        alpha: float = 1.0,
        data_seed: int = 0,
        train_samples: int = SEQGAN_TRAIN_SAMPLES,
        valid_samples: int = 2_000,
        test_samples: int = 10_000,
    ) -> None:
        if not isinstance(length, int) or length < 1:
            raise ConfigError(f"length must be a positive integer; got {length!r}.")
        sizes = {"vocab_size": vocab_size, "embed_dim": embed_dim, "hidden_dim": hidden_dim}
        if oracle_params is None:
            defaults = {"vocab_size": SEQGAN_VOCAB, "embed_dim": SEQGAN_EMBED, "hidden_dim": SEQGAN_HIDDEN}
            sizes = {k: defaults[k] if v is None else v for k, v in sizes.items()}
            oracle = OracleLSTM(length=length, seed=oracle_seed, **sizes)
        else:
            oracle = oracle_params if isinstance(oracle_params, OracleLSTM) else OracleLSTM.load(oracle_params)
            for key, value in sizes.items():
                if value is not None and value != getattr(oracle, key):
                    raise ConfigError(
                        f"{key}={value} does not match the oracle's parameters ({key}={getattr(oracle, key)}); "
                        f"leave {key} unset to take it from the oracle."
                    )
        self.oracle = oracle
        self.vocab_size, self.max_length = oracle.vocab_size, length
        self.eos_id = None  # fixed length: episodes terminate after T tokens
        self.pad_id, self.obs_vocab = oracle.vocab_size, oracle.vocab_size + 1
        self.base_seed, self.data_seed = base_seed, data_seed
        self.sizes = {"train": train_samples, "valid": valid_samples, "test": test_samples}
        for split, n in self.sizes.items():
            if not isinstance(n, int) or n < 0:
                raise ConfigError(f"{split}_samples must be a non-negative integer; got {n!r}.")
        self.base = self._build_base(base)
        self._data: dict[str, torch.Tensor] = {}
        self._base_cache = PrefixStateCache()
        super().__init__(self._build_constraint(constraint), alpha)

    def _build_base(self, base: LSTMGenerator | str | Path | None) -> LSTMGenerator:
        if base is None:
            base = LSTMGenerator(
                self.vocab_size, self.oracle.embed_dim, self.oracle.hidden_dim, self.max_length,
                self.oracle.start_token, init_std=0.1, generator=torch.Generator().manual_seed(self.base_seed),
            )
        elif isinstance(base, (str, Path)):
            base = LSTMGenerator.load(base)
        if not isinstance(base, LSTMGenerator):
            raise ConfigError(
                f"base must be an LSTMGenerator, the path of a saved one, or None; got {type(base).__name__}."
            )
        if base.vocab_size != self.vocab_size:
            raise ConfigError(
                f"the base model's vocabulary ({base.vocab_size}) differs from the oracle's ({self.vocab_size})."
            )
        return base

    def _build_constraint(self, constraint: Constraint | str) -> Constraint:
        if isinstance(constraint, Constraint):
            return constraint
        if constraint == "oracle":
            return OracleLikelihoodConstraint(self.oracle)
        if constraint == "cnn":
            from kcrl.models.sequence_scorer import cnn_constraint

            return cnn_constraint(self.vocab_size, self.max_length, seed=self.base_seed)
        raise unknown_name("OracleSequence constraint", str(constraint), ["oracle", "cnn"])

    @property
    def device(self) -> torch.device:
        return self.oracle.device

    def to(self, device: torch.device | str) -> "OracleWorld":
        super().to(device)
        self.oracle.to(device)
        self.base.to(device)
        self._data = {k: v.to(device) for k, v in self._data.items()}
        self._base_cache.clear()
        return self

    def base_log_probs(self, tokens: torch.Tensor, lengths: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """``log p_theta(. | prefix)`` ``(N, V)``; resumes each row's LSTM state from the last call."""
        return self.base.prefix_log_probs(tokens, lengths, self._base_cache)

    def set_base(self, base: LSTMGenerator | str | Path) -> None:
        """Swap the base model p_theta (e.g. for an MLE-trained generator)."""
        self.base = self._build_base(base).to(self.device)
        self._base_cache.clear()

    # ------------------------------------------------------------------ data and samplers
    def data(self, split: str = "train") -> torch.Tensor:
        """Oracle samples of ``split`` ("train", "valid", "test"), ``(n, T)`` on the world's device.

        Deterministic in ``(oracle, data_seed, split)``: drawn on CPU from the seed sequence
        ``[data_seed, index of split]``, the first time they are asked for.
        """
        if split not in SPLITS:
            raise unknown_name("data split", split, SPLITS)
        if split not in self._data:
            seed = int(np.random.SeedSequence([self.data_seed, SPLITS[split]]).generate_state(1)[0])
            oracle = self.oracle if self.device.type == "cpu" else copy.deepcopy(self.oracle).cpu()
            x, _ = oracle.sample(self.sizes[split], torch.Generator().manual_seed(seed), length=self.max_length)
            self._data[split] = x.to(self.device)
        return self._data[split]

    def sample_base(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, None]:
        """n samples of the base model p_theta and no context (a MaxEnt IRL proposal)."""
        return self.base.sample(n, generator, length=self.max_length)[0], None


def _world_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    known = [p for p in inspect.signature(OracleWorld.__init__).parameters if p != "self"]
    for key in kwargs:
        if key not in known:
            raise ConfigError(
                f"OracleSequence-v0 got an unknown argument {key!r}.{did_you_mean(key, known)} "
                f"Known: {', '.join(known)}, kl_to_base."
            )
    return kwargs


ORACLE_RANGES: dict[str, Range] = {
    "vocab_size": Range(ge=2, integer=True), "length": Range(ge=1, integer=True),
    "embed_dim": Range(ge=1, integer=True), "hidden_dim": Range(ge=1, integer=True),
    "oracle_seed": SEED_RANGE, "base_seed": SEED_RANGE, "data_seed": SEED_RANGE,
    "train_samples": Range(ge=0, integer=True), "valid_samples": Range(ge=0, integer=True),
    "test_samples": Range(ge=0, integer=True),
}
"""Value ranges of the entry points' arguments (those of :class:`OracleWorld` among them)."""


@checked_kwargs("OracleSequence-v0", ORACLE_RANGES, forwards_to=OracleWorld.__init__)
def make_oracle_env(kl_to_base: bool = True, render_mode: str | None = None, **world_kwargs: Any) -> "OracleSequenceEnv":
    """Entry point of ``OracleSequence-v0``; ``world_kwargs`` go to :class:`OracleWorld`."""
    return OracleSequenceEnv(OracleWorld(**_world_kwargs(world_kwargs)), kl_to_base=kl_to_base, render_mode=render_mode)


@checked_kwargs("OracleSequence-v0", {**ORACLE_RANGES, **VEC_RANGES}, forwards_to=OracleWorld.__init__)
def make_oracle_vec_env(
    num_envs: int = 1,
    kl_to_base: bool = True,
    device: str = "cpu",
    autoreset_mode: str = "NextStep",
    max_episode_steps: int | None = None,
    **world_kwargs: Any,
) -> BatchedGenerationEnv:
    """Vector entry point of ``OracleSequence-v0`` (``gymnasium.make_vec``); N episodes as tensors."""
    world = OracleWorld(**_world_kwargs(world_kwargs))
    return BatchedGenerationEnv(world, num_envs, device, kl_to_base, autoreset_mode)


class OracleSequenceEnv(GenerationEnv):
    """Write 20 tokens from a vocabulary of 5,000 whose true distribution is a random LSTM.

    ## Description
    SeqGAN's synthetic benchmark (Yu et al., AAAI 2017) as a token-by-token MDP. The data
    distribution is a fixed, randomly initialised LSTM (the oracle, :class:`OracleLSTM`), so
    the quality of any generator is measured exactly: NLL_oracle, the mean per-token NLL of
    its samples under the oracle (:mod:`kcrl.oracle_metrics`). The world
    (``env.unwrapped.task``, an :class:`OracleWorld`) holds the oracle, 9,984 training samples
    (``task.data("train")``), held-out samples, the base model p_theta (an
    :class:`~kcrl.models.lstm_generator.LSTMGenerator`) and the constraint.

    ## Action Space
    ``Discrete(V)``: the next token (V = 5000).

    ## Observation Space
    ``Dict(tokens=MultiDiscrete([V+1]*T), length=Discrete(T+1))``; unwritten slots hold ``V``.

    ## Rewards
    ``log p_theta(a_t | s_t)`` every step (if ``kl_to_base``), plus ``alpha * f(x)`` after the
    last token. The default f is the oracle's mean per-token log-likelihood (an upper-bound
    arm); ``constraint="cnn"`` gives a learnable SeqGAN-shaped scorer, and ``set_constraint``
    swaps in any learned one. ``info`` carries ``reward_base`` and, at the end, ``constraint``
    (raw f) and ``reward_constraint``. The max-entropy optimal policy is q ∝ p_theta exp(alpha f).

    ## Starting State
    The empty sequence (the models read SeqGAN's start token, id 0, before the first step).

    ## Episode End
    Termination after exactly T tokens (no end token). There is no truncation.

    ## Arguments
    Those of :class:`OracleWorld`: ``vocab_size=5000``, ``length=20``, ``embed_dim=32``,
    ``hidden_dim=32``, ``oracle_seed=29`` (:data:`ORACLE_SEED`), ``oracle_params=None`` (a parameter file),
    ``base=None`` (an untrained generator; or a generator / its file), ``base_seed=0``,
    ``constraint="oracle"``, ``alpha=1.0``, ``data_seed=0``, ``train_samples=9984``,
    ``valid_samples=2000``, ``test_samples=10000``; and ``kl_to_base=True``. The batched form
    (``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``) also takes
    ``device`` and ``autoreset_mode``. Construction is fast: nothing is trained and data are
    drawn on first use.

    ## Example
        >>> import gymnasium as gym, torch, kcrl
        >>> env = gym.make("OracleSequence-v0")
        >>> obs, info = env.reset(seed=0)
        >>> for t in range(20):
        ...     obs, reward, terminated, truncated, info = env.step(7)
        >>> obs["length"], terminated, truncated
        (20, True, False)
        >>> oracle = env.unwrapped.task.oracle
        >>> f = oracle.log_prob(torch.as_tensor(obs["tokens"])[None]).item() / 20
        >>> abs(info["constraint"] - f) < 1e-4
        True
        >>> env.unwrapped.task.sizes["train"]  # oracle samples, drawn by task.data("train")
        9984

    ## Version History
    * v0: initial version.
    """
