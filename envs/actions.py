"""Action checks shared by the batched environments: convert to a tensor, or raise a clear error.

Every check raises :class:`kcrl.errors.InvalidActionError` saying what was expected, what
arrived and how to fix it. Both accept numpy arrays, Python sequences and torch tensors on
any device, and return a tensor on ``device``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kcrl.errors import InvalidActionError


def integer_actions(
    actions: Any,
    shape: tuple[int, ...],
    high: int | torch.Tensor,
    device: torch.device,
    what: str = "token ids",
) -> torch.Tensor:
    """Integer actions of ``shape`` with ``0 <= a < high`` as a long tensor on ``device``.

    Args:
        actions: the actions as given; integral floats are accepted, other floats are not.
        shape: the expected shape, e.g. ``(N,)`` for one token per sub-env.
        high: exclusive upper bound, an int or a tensor broadcastable to ``shape`` (``nvec``).
        device: where the result lives.
        what: how the error messages name the actions.
    """
    if not isinstance(actions, torch.Tensor):
        array = np.asarray(actions)
        if array.dtype.kind == "f":
            if not np.isfinite(array).all():
                raise InvalidActionError(f"actions contain NaN or inf: {array!r}; expected {what}.")
            if not np.all(array == np.round(array)):
                raise InvalidActionError(f"actions must be integer {what}; got non-integral floats {array!r}.")
        elif array.dtype.kind not in "iub":
            raise InvalidActionError(f"actions must be integers; got dtype {array.dtype}.")
        if array.size and (array.max() > np.iinfo(np.int64).max or array.min() < np.iinfo(np.int64).min):
            big = array.ravel()[(array.ravel() > np.iinfo(np.int64).max) | (array.ravel() < np.iinfo(np.int64).min)]
            bound = f"[0, {high})" if isinstance(high, int) else "[0, nvec)"
            raise InvalidActionError(f"actions must be {what} in {bound}; got {big[:5].tolist()}.")
        actions = torch.as_tensor(array.astype(np.int64), device=device)
    elif actions.is_floating_point():
        if not torch.isfinite(actions).all():
            raise InvalidActionError(f"actions contain NaN or inf; expected {what}.")
        if not torch.equal(actions, actions.round()):
            raise InvalidActionError(f"actions must be integer {what}; got non-integral floats.")
    elif actions.is_complex():
        raise InvalidActionError(f"actions must be integers; got dtype {actions.dtype}.")
    if tuple(actions.shape) != tuple(shape):
        raise InvalidActionError(
            f"expected actions of shape {tuple(shape)} (leading dimension: one per sub-env); "
            f"got shape {tuple(actions.shape)}."
        )
    actions = actions.to(device, torch.long)
    high_t = torch.as_tensor(high, device=device)
    bad = (actions < 0) | (actions >= high_t)
    if bad.any():
        bound = f"[0, {int(high)})" if high_t.dim() == 0 else f"[0, nvec) with nvec={high_t.tolist()}"
        positions = bad.nonzero()[:5]
        positions = positions.squeeze(-1) if actions.dim() == 1 else positions
        raise InvalidActionError(
            f"actions must be {what} in {bound}; got {actions[bad][:5].tolist()} at positions "
            f"{positions.tolist()}."
        )
    return actions


def box_actions(
    actions: Any,
    shape: tuple[int, ...],
    low: torch.Tensor,
    high: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Continuous actions of ``shape`` with ``low <= a <= high`` as a float tensor on ``device``.

    Integers are accepted (they are real numbers); booleans, complex numbers, strings and
    objects are not, nor are NaN or inf.

    Args:
        actions: the actions as given.
        shape: expected shape, ``(N, *sample_shape)``.
        low, high: bounds broadcastable to ``shape`` (tensors on ``device``).
        device: where the result lives.
        dtype: the floating dtype of the result.
    """
    if isinstance(actions, torch.Tensor):
        if actions.dtype == torch.bool or actions.is_complex():
            raise InvalidActionError(
                f"actions must be real numbers (a float array); got dtype {actions.dtype}."
            )
    else:
        array = np.asarray(actions)
        if array.dtype.kind not in "iuf":
            raise InvalidActionError(
                f"actions must be real numbers (a float array); got dtype {array.dtype}. "
                "Pass e.g. np.asarray(action, dtype=np.float32)."
            )
        actions = torch.as_tensor(array)
    if tuple(actions.shape) != tuple(shape):
        raise InvalidActionError(
            f"expected actions of shape {tuple(shape)} (leading dimension: one per sub-env); "
            f"got shape {tuple(actions.shape)}."
        )
    actions = actions.to(device, dtype)
    finite = torch.isfinite(actions)
    if not finite.all():
        where = (~finite).nonzero()[:5].tolist()
        raise InvalidActionError(f"actions contain NaN or inf at positions {where}; expected finite numbers.")
    bad = (actions < low) | (actions > high)
    if bad.any():
        where = bad.nonzero()[:5]
        values = actions[bad][:5].tolist()
        raise InvalidActionError(
            f"actions must lie in the action space's bounds [low, high]; got {values} at positions "
            f"{where.tolist()} (bounds there: low {low.expand_as(actions)[bad][:5].tolist()}, high "
            f"{high.expand_as(actions)[bad][:5].tolist()}). Clip them, e.g. np.clip(a, space.low, space.high)."
        )
    return actions
