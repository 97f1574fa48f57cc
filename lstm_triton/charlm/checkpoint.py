"""Atomic writes and validated reads of training checkpoints and result files.

A file is written to a temporary sibling, flushed to disk, then renamed over the target, so a run
killed mid-write leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FORMAT = "lstm-triton-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the model being trained."""


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save({"format": FORMAT, "version": VERSION, **payload}, f))


def load_checkpoint(path: str | Path, purpose: str = "resume") -> dict[str, Any]:
    """The payload of a checkpoint; CheckpointError whose one-line message starts with ``purpose``
    (what the file was read for) when it is missing, unreadable, or not an lstm-triton checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{purpose}: no checkpoint file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"{purpose}: {path} is not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{purpose}: {path} is not an lstm-triton checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{purpose}: {path} has checkpoint version {payload.get('version')}, expected {VERSION}")
    return payload


def check_compatible(expected: dict[str, torch.Tensor], saved: dict[str, torch.Tensor], where: str) -> None:
    """Raise CheckpointError naming the first parameter whose name or shape differs."""
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"resume: {where} holds a different model (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for name, tensor in expected.items():
        if tuple(saved[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"resume: {where} holds a different model shape: {name} is {tuple(saved[name].shape)} "
                f"there, {tuple(tensor.shape)} here (check --hidden-size and the corpus vocabulary)"
            )
