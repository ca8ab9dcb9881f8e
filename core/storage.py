"""Atomic file writes: a temporary file in the same folder, then ``os.replace``.

A reader (the app, a second tab) therefore sees either the old or the new file, never half of one,
and a ``kill -9`` leaves no corrupt file behind: at most a temporary one, which ``partial_writes``
finds for the next writer to delete.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def partial_writes(folder: str | os.PathLike) -> list[Path]:
    """The temporary files under ``folder`` of writes whose process died before the rename."""
    return sorted(Path(folder).rglob(".*.tmp"))


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def atomic_save_npz(path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_torch_save(path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_json(path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


class LockHeld(RuntimeError):
    """Another process holds the lock; ``pid`` is the holder's process id (None if it wrote none yet)."""

    def __init__(self, path: Path, pid: int | None):
        super().__init__(f"{path} is held by process {pid if pid is not None else '(unknown)'}")
        self.path, self.pid = path, pid


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, blocking: bool = True):
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    The lock is the operating system's (``flock``): it is released when the holder exits, even by
    ``kill -9``, so a crashed process never leaves a stale lock behind. The holder's pid is written into
    the file for the message of whoever is refused. ``blocking=False`` raises ``LockHeld`` at once instead
    of waiting.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            raise LockHeld(path, int(holder) if holder.isdigit() else None) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock
