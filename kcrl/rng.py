"""Counter-based random numbers: the same (seed, counter) gives the same draw on any device.

The batched environments draw each sub-environment's context from its own (seed, episode)
pair in one tensor operation, so ``N`` single environments seeded ``s, s+1, ...`` and one
batched environment seeded ``s`` see the same contexts, on CPU and GPU alike.
"""

from __future__ import annotations

import torch

_MASK = 0xFFFFFFFF


def _mix(x: torch.Tensor) -> torch.Tensor:
    # 32-bit integer finaliser in int64 arithmetic (products stay below 2^63).
    x = x & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _MASK
    return x ^ (x >> 16)


def counter_hash(seed: torch.Tensor, counter: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """A 32-bit hash of (seed, counter, stream), elementwise over int64 tensors."""
    h = _mix(seed.long() ^ 0x9E3779B)
    h = _mix(h ^ (counter.long() & _MASK))
    return _mix(h ^ (stream * 0x27D4EB2 & _MASK))


def counter_uniform(seed: torch.Tensor, counter: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """Uniform draws in [0, 1), float64, one per element."""
    return counter_hash(seed, counter, stream).double() / float(1 << 32)


def counter_randint(
    seed: torch.Tensor, counter: torch.Tensor, high: int, stream: int = 0
) -> torch.Tensor:
    """Integers in [0, high), one per element."""
    return (counter_uniform(seed, counter, stream) * high).long().clamp(max=high - 1)
