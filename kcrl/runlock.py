"""Output folders that lose nothing: checked before any compute, locked for a run's life, and
stopped cleanly on SIGINT, SIGTERM and SIGHUP.

- :func:`check_output_folder` creates the folder and proves it writable (a file in its place, a
  path under a file, a read-only folder and a full disk fail here, before anything is computed).
- :class:`RunLock` holds an OS lock (``fcntl.flock``) on ``FOLDER/.kcrl.lock`` while a run writes
  there; a second writer gets a :class:`~kcrl.errors.RunLockedError` naming the holder's pid and
  command. The lock goes with the process, so a killed run never leaves a stale one; the lock
  file is removed when the run ends (a SIGKILLed run leaves it, unlocked and harmless).
- :class:`StopSignals` turns the first SIGINT/SIGTERM/SIGHUP into a request (``received``) that
  the run honours after its current step; a second one of the same stops at once.

>>> import tempfile
>>> folder = check_output_folder(tempfile.mkdtemp())
>>> with RunLock(folder, "kcrl train a.yaml"):
...     RunLock(folder, "kcrl train b.yaml").acquire()
Traceback (most recent call last):
    ...
kcrl.errors.RunLockedError: ... is in use by another kcrl process (pid ..., `kcrl train a.yaml`, ...
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kcrl.errors import DiskFullError, OutputFolderError, RunLockedError

LOCK_NAME = ".kcrl.lock"
"""The lock file inside a locked output folder (the lock is on the open file)."""


def command_line() -> str:
    """This process's command line as a shell would read it (``kcrl train a.yaml --out runs/a``)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("cli.py", "__main__.py"):
        argv[0] = "kcrl"
    elif argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv) if argv else "python"


def check_output_folder(folder: str | Path, what: str = "--out") -> Path:
    """Create ``folder`` (and its parents) and prove it writable; returns it as a ``Path``.

    Raises :class:`~kcrl.errors.OutputFolderError` for a file in its place or above it and for a
    folder that cannot be written, and :class:`~kcrl.errors.DiskFullError` for a full disk, all
    before any compute. Whether a folder may already hold files is the caller's rule.
    """
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == folder else f"is under {str(parent)!r}, which is a file"
            raise OutputFolderError(
                f"{what} {str(folder)!r} {where}; an output folder must be a directory. Choose another {what}, "
                "or move the file away."
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".kcrl-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise DiskFullError(f"{what} {str(folder)!r} is on a full disk ({exc.strerror}); free some space or "
                                f"choose another {what}.") from exc
        raise OutputFolderError(
            f"{what} {str(folder)!r} cannot be written ({exc.strerror or exc}). Choose a folder you can write to, "
            "or fix its permissions."
        ) from exc
    return folder


class RunLock:
    """An exclusive OS lock on ``folder`` for the life of a run (a context manager).

    ``command`` is recorded in the lock file so that a second writer's error names the holder.
    Locks are per open file: a second :class:`RunLock` on the same folder fails in this process too.
    """

    def __init__(self, folder: str | Path, command: str | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command if command is not None else command_line()
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputFolderError(
                    f"cannot create the lock file {str(self.path)!r} ({exc.strerror or exc}); the folder must be "
                    "writable."
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputFolderError(f"cannot lock {str(self.path)!r} ({exc.strerror or exc}).") from exc
                raise RunLockedError(
                    f"{str(self.folder)!r} is in use by another kcrl process "
                    f"({describe_holder(read_holder(self.folder))}); two runs writing one folder would mix their "
                    "files. Wait for it to finish (or stop it), or choose another output folder."
                ) from None
            try:  # the holder before us may have removed the file between our open and our lock
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        record = {"pid": os.getpid(), "command": self.command, "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.unlink(self.path)  # while still locked: a waiting opener sees the inode change and retries
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def read_holder(folder: str | Path) -> dict[str, Any] | None:
    """What the lock file of ``folder`` says about the process that locked it last (or ``None``)."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text(encoding="utf-8")
        record = json.loads(text)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def describe_holder(record: dict[str, Any] | None) -> str:
    if not record:
        return "pid unknown: it has not written its details yet"
    parts = [f"pid {record.get('pid', '?')}"]
    if record.get("command"):
        parts.append(f"`{record['command']}`")
    if record.get("host"):
        parts.append(f"on {record['host']}")
    if record.get("started"):
        parts.append(f"since {record['started']}")
    return ", ".join(parts)


STOP_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)


class StopSignals:
    """While active, the first SIGINT, SIGTERM or SIGHUP only sets :attr:`received` (the signal's
    number), so that a run can finish its step, write a checkpoint and exit with ``128 + signum``;
    a second signal of the same kind acts at once, as it would without this guard.

    Installs nothing outside the main thread (Python delivers signals there only).
    """

    def __init__(self, announce: bool = True) -> None:
        self.received: int | None = None
        self.announce = announce
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            if self.announce:
                print(f"kcrl: {signal.Signals(signum).name} received; stopping after the current step and writing a "
                      "checkpoint (send it again to stop at once).", file=sys.stderr, flush=True)
            return
        signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
        self._old.pop(signum, None)
        signal.raise_signal(signum)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._old[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
        self._old.clear()
