"""Progress bars for long loops: tqdm, throttled so logs stay readable."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm


def progress(iterable: Iterable, desc: str, enabled: bool = True, total: int | None = None) -> tqdm:
    """A tqdm bar on stderr; refreshes at most every second (every 30 s when not a terminal)."""
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable, desc=desc, total=total, disable=not enabled, leave=False,
        mininterval=1.0 if interactive else 30.0, dynamic_ncols=True,
    )
