"""Checked keyword arguments of the environments' entry points.

``gymnasium.make(env_id, **kwargs)`` passes its keyword arguments to an entry point. Wrapped in
:func:`checked_kwargs`, an entry point refuses, with a :class:`~kcrl.errors.ConfigError` that
names the argument, what arrives with an unknown name, a wrong type or a value outside the
argument's :class:`~kcrl.config.Range` (declared once per env, in a table beside its world), so
that ``radius=inf`` fails at ``make`` and not steps later.

>>> import gymnasium as gym, kcrl
>>> gym.make("GaussianRing-v0", radius=float("inf"))
Traceback (most recent call last):
    ...
kcrl.config.RangeError: GaussianRing-v0 argument 'radius' must be a finite number > 0; got inf.
>>> gym.make("TabularSequence-v0", lenght=3)
Traceback (most recent call last):
    ...
kcrl.errors.ConfigError: TabularSequence-v0 got an unknown argument 'lenght'. Did you mean 'length'? Known: ...
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

from kcrl.config import Range, check_values
from kcrl.errors import ConfigError, did_you_mean

VEC_RANGES: dict[str, Range] = {"num_envs": Range(ge=1, integer=True), "max_episode_steps": Range(ge=1, integer=True)}
"""Ranges of the arguments every vector entry point takes."""


def _accepts(tp: Any, value: Any) -> bool:
    """Whether ``value`` fits the annotation ``tp`` (annotations this cannot judge accept anything)."""
    if tp is Any or tp is object:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, (bool, np.bool_))
    if tp is int:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if tp is float:
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if tp is str:
        return isinstance(value, str)
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return isinstance(value, (str, PurePath))
    if isinstance(tp, type) and origin is None:
        return isinstance(value, tp)
    return True


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _parameters(fn: Callable) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _hints(fn: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: no type checks for it
        return {}


def checked_kwargs(env_id: str, ranges: Mapping[str, Range] | None = None, forwards_to: Callable | None = None,
                   label: str | None = None, prefix: str = "") -> Callable[[Callable], Callable]:
    """Decorate an entry point of ``env_id``: names, types and ranges of its keyword arguments are
    checked before it runs. ``forwards_to`` is the callable that receives its ``**kwargs`` (their
    names and types are checked against it too). Messages call an argument ``label`` (default
    ``"ENV_ID argument"``) and prefix its name with ``prefix``."""
    ranges = dict(ranges or {})
    label = label or f"{env_id} argument"

    def wrap(fn: Callable) -> Callable:
        params = _parameters(fn)
        if forwards_to is not None:
            params = {**params, **_parameters(forwards_to)}
        known = list(params)

        @functools.cache
        def hints() -> dict[str, Any]:  # resolved at the first call: annotations may name later classes
            return {**(_hints(forwards_to) if forwards_to is not None else {}), **_hints(fn)}

        @functools.wraps(fn)
        def entry_point(*args: Any, **kwargs: Any) -> Any:
            named, hints_ = dict(zip(known, args)), hints()
            for key, value in {**named, **kwargs}.items():
                if key not in params:
                    raise ConfigError(
                        f"{env_id} got an unknown argument {key!r}.{did_you_mean(key, known)} Known: {', '.join(known)}."
                    )
                if key in hints_ and not _accepts(hints_[key], value):
                    raise ConfigError(
                        f"{label} {prefix + key!r} must be {_type_name(hints_[key])}; got {value!r} "
                        f"({type(value).__name__})."
                    )
            check_values({**named, **kwargs}, ranges, where=prefix.rstrip("."), label=label)
            return fn(*args, **kwargs)

        return entry_point

    return wrap
