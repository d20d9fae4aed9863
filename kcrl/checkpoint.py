"""Atomic, verified checkpoints and result files. Loading never unpickles arbitrary objects.

A checkpoint is a nested dict of tensors, numbers, strings, lists and dicts, written with
``torch.save`` and read back with ``torch.load(weights_only=True)``. Every write goes to a temp
file in the same folder, is flushed and fsynced, then renamed over the old file, so a reader sees
the old file or the new one, never half of one.

Each checkpoint carries a SHA-256 of its contents (every tensor's dtype, shape and bytes, every
number and string, in order) under the key ``"kcrl_sha256"``; :func:`load_checkpoint` recomputes
it and refuses a file whose contents changed (one flipped bit) or that holds NaN or inf. JSON
result files written by :func:`write_json` carry the same kind of hash (``"sha256"``, over the
canonical JSON of the rest) and never hold NaN or inf, which JSON cannot represent.

>>> import tempfile, torch
>>> folder = tempfile.mkdtemp()
>>> path = save_checkpoint(f"{folder}/checkpoint.pt", {"w": torch.ones(2), "iteration": 3})
>>> load_checkpoint(path)
{'w': tensor([1., 1.]), 'iteration': 3}
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import re
import struct
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kcrl.errors import DiskFullError, KcrlError, NonFiniteError

HASH_KEY = "kcrl_sha256"
"""The entry of a checkpoint that holds the SHA-256 of the rest (see :func:`content_hash`)."""
JSON_HASH_KEY = "sha256"
"""The entry of a JSON result file that holds the SHA-256 of the rest (see :func:`write_json`)."""
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")  # tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class CheckpointError(KcrlError, ValueError):
    """A checkpoint is missing, unreadable, corrupt, or does not match what loads it."""


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, flush + fsync, rename.

    A reader sees the old file or the new one, never half of one. A full disk (``ENOSPC``,
    ``EDQUOT``) raises :class:`~kcrl.errors.DiskFullError` and leaves the old file as it was; the
    temp file is removed whatever goes wrong (a SIGKILL can still leave one behind:
    :func:`remove_stale_temps` clears those).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        if exc.errno in _FULL:
            raise DiskFullError(
                f"could not write {str(path)!r}: the disk is full ({exc.strerror}; {len(data):,} bytes to write). "
                f"The previous {path.name}, if any, is intact. Free some space (or choose an --out on another "
                "disk) and run again (with --resume for a training run)."
            ) from exc
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temp files that killed atomic writes left in ``folder``; returns them.

    Only call this while holding the folder's run lock (:mod:`kcrl.runlock`): a temp file of a
    live writer looks the same.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if _TEMP.match(p.name) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


# ---------------------------------------------------------------------- content hashes
def _feed(h, value: Any, where: str) -> None:
    """Feed ``value`` into the hash ``h``, tagged by type, in a fixed order."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, Mapping):
        h.update(f"D{len(value)}".encode())
        for k, v in value.items():
            _feed(h, k, where)
            _feed(h, v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        h.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}".encode())
        for i, v in enumerate(value):
            _feed(h, v, f"{where}[{i}]")
    elif isinstance(value, bool) or value is None:
        h.update(f"B{value}".encode())
    elif isinstance(value, int):
        h.update(f"I{value}.".encode())
    elif isinstance(value, float):
        h.update(b"F" + struct.pack("<d", value))
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)}.".encode() + data)
    elif isinstance(value, bytes):
        h.update(f"Y{len(value)}.".encode() + value)
    elif isinstance(value, (torch.dtype, torch.device, torch.Size)):
        h.update(f"O{value!r}".encode())
    else:
        raise CheckpointError(
            f"a checkpoint can hold tensors, numbers, strings, lists and dicts; {where or 'the state'} is a "
            f"{type(value).__name__}. Convert it to one of those before saving."
        )


def content_hash(state: Any) -> str:
    """The SHA-256 (hex) of a checkpoint's contents: every tensor's dtype, shape and bytes, every
    key, number and string, in order. Equal contents give equal hashes, whatever the file layout."""
    h = hashlib.sha256()
    _feed(h, state, "")
    return h.hexdigest()


def first_non_finite(state: Any, where: str = "") -> str | None:
    """The key path of the first floating tensor holding NaN or inf in ``state``, or ``None``."""
    if isinstance(state, torch.Tensor):
        if (state.is_floating_point() or state.is_complex()) and not bool(torch.isfinite(state).all()):
            return where or "the tensor"
        return None
    if isinstance(state, Mapping):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return None
    for k, v in items:
        found = first_non_finite(v, f"{where}[{k!r}]")
        if found is not None:
            return found
    return None


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` and its content hash to ``path`` atomically (see :func:`atomic_write_bytes`).

    A state holding NaN or inf is refused (:class:`~kcrl.errors.NonFiniteError`) so that it never
    replaces the last good checkpoint.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"a checkpoint is a dict of named entries; got {type(state).__name__}.")
    bad = first_non_finite(state)
    if bad is not None:
        raise NonFiniteError(
            f"not writing {str(path)!r}: {bad} holds NaN or inf; the previous checkpoint is kept. Lower the "
            "learning rates or alpha, or check the constraint's outputs, then resume from the previous checkpoint."
        )
    buffer = io.BytesIO()
    torch.save({**state, HASH_KEY: content_hash(state)}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no arbitrary code).

    The content hash is checked and every floating tensor must be finite; either failure raises a
    :class:`CheckpointError` that names the file. A checkpoint written before kcrl stored hashes
    loads with a warning.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{str(path)!r} is a directory, not a checkpoint file. Move it away (a run writes its checkpoint there), "
            "or point to the right run folder."
        )
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}; check the path or start without --resume.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is reported the same way
        raise CheckpointError(
            f"could not read checkpoint {str(path)!r} ({type(exc).__name__}: {exc}). It may be corrupt or "
            "not a kcrl checkpoint; kcrl only loads plain tensors and containers."
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(path)!r} is not a kcrl checkpoint (it holds a {type(state).__name__}, not a dict).")
    stored = state.pop(HASH_KEY, None)
    if stored is None:
        warnings.warn(f"{str(path)!r} carries no content hash (written by an older kcrl); it cannot be verified.",
                      stacklevel=2)
    elif stored != content_hash(state):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt: its contents do not match the SHA-256 stored in it (stored "
            f"{str(stored)[:16]}..., contents {content_hash(state)[:16]}...). Restore it from a backup, or delete "
            "it and train again."
        )
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds NaN or inf in {bad}; a model with such weights gives meaningless "
            "results. Restore the file from a backup, or delete it and train again."
        )
    return state


# ---------------------------------------------------------------------- JSON result files
def _first_non_finite_number(value: Any, where: str = "") -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return where or "the value"
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _first_non_finite_number(v, f"{where}.{k}" if where and isinstance(k, str) else
                                         (str(k) if isinstance(k, str) else f"{where}[{k}]"))
        if found is not None:
            return found
    return None


def json_text(value: Any, what: str = "the result", indent: int | None = 2) -> str:
    """``value`` as JSON (sorted keys); NaN or inf, which JSON cannot hold, raise
    :class:`~kcrl.errors.NonFiniteError` naming the key."""
    try:
        return json.dumps(value, indent=indent, sort_keys=True, allow_nan=False)
    except ValueError:
        bad = _first_non_finite_number(value)
        if bad is None:
            raise
        raise NonFiniteError(
            f"{what} holds a non-finite number at {bad!r}, which JSON cannot represent; the run diverged or "
            "its files are corrupt. Lower the learning rates or alpha and train again."
        ) from None


def write_json(path: str | Path, value: Mapping[str, Any], what: str | None = None) -> Path:
    """Write the mapping ``value`` and its SHA-256 (key ``"sha256"``) atomically as JSON."""
    body = dict(value)
    body.pop(JSON_HASH_KEY, None)
    text = json_text(body, what or str(path), indent=None)
    body[JSON_HASH_KEY] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return atomic_write_text(path, json_text(body, what or str(path)) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a file written by :func:`write_json`; a changed file is a :class:`CheckpointError`."""
    path = Path(path)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"could not read {str(path)!r} ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(body, dict):
        raise CheckpointError(f"{str(path)!r} is not a kcrl result file (a JSON object).")
    stored = body.pop(JSON_HASH_KEY, None)
    if stored is not None and stored != hashlib.sha256(json_text(body, str(path), indent=None).encode("utf-8")).hexdigest():
        raise CheckpointError(
            f"{str(path)!r} was changed after it was written (its SHA-256 does not match). Rerun to regenerate it."
        )
    return body
