"""The exceptions fastdqn raises.

Every error subclasses both ``FastDQNError`` (catch everything of ours) and the builtin
that describes it best (``ValueError``, ``RuntimeError``...), so callers that already
catch builtins keep working.
"""

from __future__ import annotations


class FastDQNError(Exception):
    """Base class of every error fastdqn raises on purpose."""


class ConfigError(FastDQNError, ValueError):
    """A setting is out of range or contradicts another one."""


class ReplayError(FastDQNError, ValueError):
    """Bad input to the replay buffer (shape, dtype, env ids, batch size...)."""


class ReplayStateError(FastDQNError, RuntimeError):
    """The replay buffer cannot do what was asked in its current state (e.g. empty)."""


class DeviceMemoryError(FastDQNError, MemoryError):
    """The accelerator has too little free memory for what was asked (checked before allocating)."""


class CheckpointError(FastDQNError, RuntimeError):
    """A checkpoint or saved buffer is missing, truncated, corrupt or incompatible."""


class BatchError(FastDQNError, ValueError, TypeError):
    """A batch handed to the learner has the wrong fields, shape, dtype, size or values."""


class TrainingError(FastDQNError, RuntimeError):
    """Training had to stop after it started (e.g. the loss diverged); the message says
    which checkpoint is kept and how to go on."""


class RunError(FastDQNError, RuntimeError):
    """A training run started by ``fastdqn sweep`` failed or was killed."""


class DependencyError(FastDQNError, ImportError):
    """An optional dependency that the requested feature needs is not installed."""
