"""Typed errors. Everything a user can get wrong raises a subclass of :class:`KcrlError`.

Each message says what was expected, what arrived and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KcrlError(Exception):
    """Root of every error kcrl raises on bad input."""


class ConfigError(KcrlError, ValueError):
    """A configuration value is invalid (e.g. ``alpha <= 0``, an unknown key)."""


class ShapeError(KcrlError, ValueError):
    """A tensor or array has the wrong shape."""


class InvalidActionError(KcrlError, ValueError):
    """An action is outside the action space (range, shape, dtype or NaN)."""


class NonFiniteError(KcrlError, FloatingPointError):
    """A constraint, reward or loss produced NaN or inf."""


class UnknownNameError(KcrlError, KeyError):
    """An unknown environment id, suite or component name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(KcrlError, ImportError):
    """An optional dependency is not installed."""


class OutputFolderError(KcrlError, ValueError):
    """An output folder cannot be used: a file in its place, not writable, or holding another run."""


class RunLockedError(OutputFolderError):
    """Another process holds the run lock of an output folder (see :mod:`kcrl.runlock`)."""


class DiskFullError(KcrlError, OSError):
    """A file could not be written because the disk (or the quota) is full; the old file is intact."""


class RunInterrupted(KcrlError):
    """A run stopped on SIGINT, SIGTERM or SIGHUP after writing a checkpoint.

    ``exit_code`` is the shell's convention for the signal, ``128 + signum`` (130, 143, 129).
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class ClusterConnectionError(KcrlError, ConnectionError):
    """A cluster (Ray) could not be reached within the time allowed."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build the error for an unknown ``kind`` (e.g. "suite") with a suggestion."""
    choices = sorted(choices)
    return UnknownNameError(
        f"unknown {kind} {name!r}.{did_you_mean(name, choices)} Known: {', '.join(choices)}."
    )


def require_optional(module: str, extra: str):
    """Import an optional dependency, or raise an error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module!r} is not installed; it is an optional dependency of kcrl. "
            f"Install it with: pip install 'kcrl[{extra}]'"
        ) from exc


def check_alpha(alpha: float) -> float:
    """Alpha weights the constraint inside exp(alpha f); it must be a positive finite number."""
    import math

    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ConfigError(
            f"alpha must be a positive finite number (it scales the constraint in "
            f"q ∝ p exp(alpha f)); got {alpha!r}. Use e.g. alpha=1.0."
        )
    return float(alpha)
