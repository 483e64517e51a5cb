"""Atomic checkpoint files.

A checkpoint is written to a temporary file in the same folder, flushed and fsynced,
then renamed over the old one with ``os.replace`` and the folder fsynced: a crash or a
``kill -9`` at any moment leaves either the previous or the new checkpoint, never a torn
one. The optional replay buffer goes to a sibling file named after the step, written
before the checkpoint that points to it; older buffer files are removed afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fastdqn.atomic import atomic_write, fsync_dir
from fastdqn.errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "fastdqn-checkpoint"
VERSION = 1


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the ``checkpoint.pt`` inside a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint: no file at {str(path)!r}; pass a checkpoint file or a run folder holding "
            f"{CHECKPOINT_NAME}"
        )
    return path


def save_checkpoint(run_dir: str | os.PathLike, state: dict, buffer=None) -> Path:
    """Write ``state`` (and ``buffer`` via its ``save``) into ``run_dir`` atomically."""
    run_dir = Path(run_dir)
    state = dict(state, format=FORMAT, version=VERSION, buffer_file=None)
    if buffer is not None:
        name = f"replay-{int(state['trainer']['global_step'])}.bin"
        buffer.save(run_dir / name)  # atomic and fsynced by ReplayBuffer.save itself
        state["buffer_file"] = name
    path = run_dir / CHECKPOINT_NAME
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for old in run_dir.glob("replay-*.bin"):
        if old.name != state["buffer_file"]:
            old.unlink()
    # Temporary files of writes that a kill -9 interrupted earlier.
    for stale in [*run_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"), *run_dir.glob(".replay-*.tmp")]:
        stale.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by ``save_checkpoint``; ``CheckpointError`` if unusable."""
    path = resolve_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint: {str(path)!r} is truncated or corrupt ({type(exc).__name__}); "
            "use an older copy or start a new run"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint: {str(path)!r} is not a fastdqn checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint: {str(path)!r} has format version {state.get('version')!r}, expected {VERSION}"
        )
    state["path"] = str(path)
    return state


def buffer_path(state: dict) -> Path | None:
    """The replay file saved with a checkpoint, or None."""
    name = state.get("buffer_file")
    if not name:
        return None
    path = Path(state["path"]).parent / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint: its replay buffer file {str(path)!r} is missing")
    return path
