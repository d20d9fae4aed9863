"""Progress of long loops: what runs (suite, variant, seed), how far it is and when it ends.

Every bar reads ``LABEL · WHAT: i/total (p%), elapsed, ETA`` where ``LABEL`` names the run. Entry
points name their runs with :func:`progress_label`, and every bar opened inside (the trainer's,
an agent's, an MLE loop's) carries that name without being told::

    with progress_label("tabular-joint learned seed 1"):
        trainer.train(show_progress=True)   # "tabular-joint learned seed 1 · Algorithm 1 (learned): 40/400 ..."

Labels nest (``progress_label("paper-text")`` then ``progress_label("fixed seed 2")``). On a
terminal the bar is tqdm's, redrawn at most every second; in a log file (stderr not a terminal)
it is one plain line when the loop starts, then at most one every ``log_interval`` seconds (30 by
default), and one when it ends, so that logs stay readable and every line says which run it is.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

_LABELS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("kcrl_progress_labels", default=())
LOG_INTERVAL = 30.0
"""seconds between two log lines of one bar when stderr is not a terminal"""


@contextlib.contextmanager
def progress_label(label: str) -> Iterator[None]:
    """Name every progress bar opened inside the block (nested labels are joined by spaces)."""
    token = _LABELS.set((*_LABELS.get(), str(label)))
    try:
        yield
    finally:
        _LABELS.reset(token)


def current_label() -> str:
    """The joined labels of the enclosing :func:`progress_label` blocks (``""`` outside them)."""
    return " ".join(_LABELS.get())


def _full_desc(desc: str, label: str | None) -> str:
    parts = [p for p in (current_label(), label or "") if p]
    head = " ".join(parts)
    return f"{head} · {desc}" if head and desc else head or desc


def _clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LogProgress:
    """The log-file form of a progress bar: plain lines, each naming the run, with i/total and ETA.

    Implements the part of tqdm's interface kcrl's loops use: iteration, ``update``, ``n`` (set
    and ``refresh``), ``set_postfix``, ``set_description``, ``close`` and ``with``.
    """

    def __init__(self, iterable: Iterable | None, desc: str, total: int | None = None, file: Any = None,
                 log_interval: float = LOG_INTERVAL, enabled: bool = True) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.desc, self.total, self.enabled = iterable, desc, total, enabled
        self.file = file if file is not None else sys.stderr
        self.log_interval, self.n, self.postfix = float(log_interval), 0, ""
        self.start = self._last = time.monotonic()
        self._closed = False
        self._write()

    def line(self, final: bool = False) -> str:
        """The current status line."""
        elapsed = time.monotonic() - self.start
        if self.total:
            done = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)"
        else:
            done = f"{self.n}"
        text = f"{self.desc}: {done}, {_clock(elapsed)} elapsed"
        if final:
            text += ", done"
        elif self.total and self.n > 0:
            text += f", ETA {_clock(elapsed / self.n * (self.total - self.n))}"
        elif self.total:
            text += ", ETA unknown"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _write(self, final: bool = False) -> None:
        if self.enabled:
            self.file.write(self.line(final) + "\n")
            self.file.flush()
        self._last = time.monotonic()

    def refresh(self) -> None:
        if time.monotonic() - self._last >= self.log_interval:
            self._write()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._write(final=True)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable | None, desc: str, enabled: bool = True, total: int | None = None,
             label: str | None = None) -> tqdm | LogProgress:
    """A progress bar on stderr for ``iterable`` (or for manual ``update``/``n`` with ``total``).

    Args:
        iterable: what the loop runs over (``None``: advance the bar by hand).
        desc: what the loop does (``"Algorithm 1 (learned)"``).
        enabled: ``False`` draws nothing.
        total: the number of iterations (default ``len(iterable)``).
        label: the run's name, after the enclosing :func:`progress_label` names
            (``"learned seed 1"``).

    Returns:
        tqdm's bar on a terminal (``desc: i/total [elapsed<ETA]``), otherwise a :class:`LogProgress`.
    """
    full = _full_desc(desc, label)
    if not enabled:
        return tqdm(iterable, desc=full, total=total, disable=True)
    if not sys.stderr.isatty():
        return LogProgress(iterable, full, total=total)
    return tqdm(iterable, desc=full, total=total, leave=False, mininterval=1.0, dynamic_ncols=True)


__all__ = ["LOG_INTERVAL", "LogProgress", "current_label", "progress", "progress_label"]
