"""Quality measures of SeqGAN's oracle benchmark (``OracleSequence-v0``), all in nats per token.

* :func:`nll_oracle` — mean per-token NLL, under the oracle, of a generator's samples
  (SeqGAN's NLL_oracle; ~10,000 samples). Lower is better, but it rewards mode collapse
  (a generator that repeats the oracle's most likely sequence scores below the oracle itself).
* :func:`heldout_nll` — mean per-token NLL of held-out oracle samples under the generator;
  it catches mode collapse (a collapsed generator assigns held-out data a huge NLL).
* :func:`self_nll` — mean per-token NLL of a generator's samples under the generator itself:
  its entropy rate, the diversity to match when comparing generators (e.g. across
  temperatures, where lower temperature lowers NLL_oracle at the cost of diversity).
* Reference points: :func:`oracle_floor` (the oracle scored on its own samples: the entropy
  rate of the data) and :func:`uniform_nll_oracle` (uniformly random tokens scored by the
  oracle, which is also roughly where an untrained generator starts).

Models are duck-typed: anything with ``sample(n, generator, temperature=, length=)`` returning
``(x, log p(x))`` and ``log_prob(x, temperature=)`` (e.g.
:class:`~kcrl.models.lstm_generator.LSTMGenerator`) works.
"""

from __future__ import annotations

from typing import Any

import torch

from kcrl.errors import ConfigError


@torch.no_grad()
def sequence_token_nll(model: Any, x: torch.Tensor, temperature: float = 1.0, batch_size: int = 1024) -> torch.Tensor:
    """``-log p(x_i) / T`` for each sequence of ``x`` ``(N, T)`` under ``model``: ``(N,)`` float64 on the CPU."""
    if x.dim() != 2 or x.numel() == 0:
        raise ConfigError(f"expected a non-empty batch of sequences (N, T); got shape {tuple(x.shape)}.")
    chunks = [-model.log_prob(c.to(model.device), temperature=temperature).double().cpu() for c in x.split(batch_size)]
    return torch.cat(chunks) / x.shape[1]


def mean_token_nll(model: Any, x: torch.Tensor, temperature: float = 1.0, batch_size: int = 1024) -> float:
    """``-(1 / (N T)) sum_i log p(x_i)`` of sequences ``x`` ``(N, T)`` under ``model``."""
    return sequence_token_nll(model, x, temperature, batch_size).mean().item()


def ci95_of_mean(values: torch.Tensor) -> float:
    """Half-width of the normal 95% interval of the mean of ``values`` ``(N,)``: 1.96 s / sqrt(N)."""
    return 1.96 * values.std().item() / len(values) ** 0.5 if len(values) > 1 else float("nan")


@torch.no_grad()
def nll_oracle(
    oracle: Any,
    model: Any,
    n: int = 10_000,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    length: int | None = None,
) -> float:
    """NLL_oracle: sample n sequences from ``model`` at ``temperature``, score them by ``oracle``."""
    x, _ = model.sample(n, generator, temperature=temperature, length=length)
    return mean_token_nll(oracle, x)


def heldout_nll(model: Any, data: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean per-token NLL of held-out oracle samples ``data`` ``(N, T)`` under ``model``."""
    return mean_token_nll(model, data, temperature)


@torch.no_grad()
def self_nll(
    model: Any, n: int = 10_000, generator: torch.Generator | None = None, temperature: float = 1.0,
    length: int | None = None,
) -> float:
    """The model's entropy rate at ``temperature`` (Monte Carlo): its own samples' mean NLL."""
    x, log_p = model.sample(n, generator, temperature=temperature, length=length)
    return -log_p.double().sum().item() / x.numel()


def oracle_floor(oracle: Any, n: int = 10_000, generator: torch.Generator | None = None, length: int | None = None) -> float:
    """NLL_oracle of the oracle's own samples: the best any generator can match without collapse."""
    return self_nll(oracle, n, generator, length=length)


@torch.no_grad()
def uniform_nll_oracle(
    oracle: Any, n: int = 10_000, length: int = 20, generator: torch.Generator | None = None
) -> float:
    """NLL_oracle of uniformly random token sequences (what an untrained generator scores)."""
    x = torch.randint(oracle.vocab_size, (n, length), generator=generator, device=oracle.device)
    return mean_token_nll(oracle, x)


def evaluate_generator(
    oracle: Any,
    model: Any,
    heldout: torch.Tensor,
    n: int = 10_000,
    seed: int = 0,
    temperatures: tuple[float, ...] = (1.0,),
    length: int | None = None,
) -> dict[str, dict[str, float]]:
    """NLL_oracle, held-out NLL and entropy rate of ``model`` at each temperature.

    Every temperature is scored on its own n fresh samples (generator seeded ``seed`` afresh, so
    the numbers do not depend on which other temperatures were asked for). Returns
    ``{"T=1.0": {"nll_oracle": ..., "nll_oracle_ci95": ..., "heldout_nll": ..., "self_nll": ...}, ...}``,
    where ``nll_oracle_ci95`` is the half-width of the 95% interval of NLL_oracle over the n samples.
    """
    results = {}
    for temperature in temperatures:
        gen = torch.Generator(model.device).manual_seed(seed)
        x, log_p = model.sample(n, gen, temperature=temperature, length=length)
        per_sequence = sequence_token_nll(oracle, x)  # (n,)
        results[f"T={temperature:g}"] = {
            "nll_oracle": per_sequence.mean().item(),
            "nll_oracle_ci95": ci95_of_mean(per_sequence),  # sampling error of NLL_oracle over the n samples
            "heldout_nll": heldout_nll(model, heldout, temperature),
            "self_nll": -log_p.double().sum().item() / x.numel(),
        }
    return results
