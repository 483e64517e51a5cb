"""The replay batch's fields, declared once.

``FIELDS`` names every field of a sampled batch with its dtype and whether it is shaped
like an observation; ``PRIORITIZED_FIELDS`` adds prioritized replay's importance weights.
``ReplayBatch`` and ``PrioritizedBatch``, ``allocate_batch``, ``check_batch`` (the ``out=``
check) and the learner's batch checks all derive from them. A *window* batch (``k > 1``
stacked frames) holds each transition's ``k + 1`` frames once, in ``frames (B, k + 1, H, W)``,
and its ``obs`` and ``next_obs`` are the views ``frames[:, :k]`` and ``frames[:, 1:]``.
Imports NumPy only.
"""

from __future__ import annotations

import math
from collections import namedtuple
from typing import Callable, NamedTuple

import numpy as np

from fastdqn.errors import ReplayError


class Field(NamedTuple):
    name: str
    dtype: np.dtype | None  # None: the buffer's observation dtype
    per_obs: bool           # shape (B, *obs_shape); else (B,)
    learner: bool           # read by the learner's update


FIELDS = (
    Field("obs", None, True, True),
    Field("next_obs", None, True, True),
    Field("action", np.dtype(np.int64), False, True),
    Field("reward", np.dtype(np.float32), False, True),
    Field("terminated", np.dtype(np.bool_), False, True),
    # gamma ** m for a window of m steps (gamma for one step), 0 after a termination
    Field("discount", np.dtype(np.float32), False, True),
    Field("index", np.dtype(np.int64), False, False),  # ids that the buffer's gather accepts
)
# (N P(i))^-beta / max_j (N P(j))^-beta, over the whole buffer
PRIORITIZED_FIELDS = FIELDS + (Field("weight", np.dtype(np.float32), False, True),)
LEARNER_FIELDS = tuple(f.name for f in PRIORITIZED_FIELDS if f.learner)


class _Batch(tuple):
    """What every batch type shares: its fields and the window its observations view."""

    __slots__ = ()
    FIELDS: tuple[Field, ...] = ()

    @property
    def frames(self) -> np.ndarray | None:
        """The ``(B, k + 1, H, W)`` window that ``obs`` and ``next_obs`` view, or None."""
        return window_of(self.obs, self.next_obs)


class ReplayBatch(_Batch, namedtuple("ReplayBatch", [f.name for f in FIELDS])):
    """A batch of transitions, one array per field of ``FIELDS``, each ``(B, ...)``."""

    __slots__ = ()
    FIELDS = FIELDS


class PrioritizedBatch(_Batch, namedtuple("PrioritizedBatch", [f.name for f in PRIORITIZED_FIELDS])):
    """A ``ReplayBatch`` with importance weights (``PRIORITIZED_FIELDS``); its ``index``
    holds transition ids, for ``update_priorities`` and ``gather``."""

    __slots__ = ()
    FIELDS = PRIORITIZED_FIELDS


def window_of(obs, next_obs) -> np.ndarray | None:
    """The ``(B, k + 1, ...)`` array whose ``[:, :k]`` is ``obs`` and ``[:, 1:]`` is
    ``next_obs`` when both are such views of one C-contiguous window, else None."""
    if not (isinstance(obs, np.ndarray) and isinstance(next_obs, np.ndarray)) or obs.ndim < 3:
        return None
    B, k, *rest = obs.shape
    item = obs.itemsize
    frame = math.prod(rest) * item
    contiguous = tuple(math.prod(rest[i + 1:]) * item for i in range(len(rest)))
    if (next_obs.shape != obs.shape or next_obs.dtype != obs.dtype or next_obs.strides != obs.strides
            or obs.strides != ((k + 1) * frame, frame, *contiguous)
            or next_obs.__array_interface__["data"][0] != obs.__array_interface__["data"][0] + frame):
        return None
    return np.lib.stride_tricks.as_strided(obs, (B, k + 1, *rest), obs.strides,
                                           writeable=obs.flags.writeable)


Empty = Callable[[tuple, np.dtype], np.ndarray]


def field_shapes(batch_size: int, obs_shape: tuple, obs_dtype,
                 fields: tuple[Field, ...] = FIELDS) -> dict[str, tuple[tuple, np.dtype]]:
    """Field name -> (shape, dtype) of a batch of ``batch_size`` transitions."""
    obs_dtype = np.dtype(obs_dtype)
    return {f.name: ((batch_size, *obs_shape) if f.per_obs else (batch_size,),
                     obs_dtype if f.dtype is None else f.dtype) for f in fields}


def window_shape(batch_size: int, obs_shape: tuple) -> tuple:
    """Shape of the frame window of a batch of stacked observations ``(k, H, W)``."""
    return (batch_size, obs_shape[0] + 1, *obs_shape[1:])


def allocate_batch(batch_size: int, obs_shape: tuple, obs_dtype, *, window: bool = False,
                   empty: Empty = np.empty, batch_type: type[_Batch] = ReplayBatch) -> _Batch:
    """A ``batch_type``'s arrays, each from ``empty(shape, dtype)`` (NumPy's, or pinned memory)."""
    shapes = field_shapes(batch_size, obs_shape, obs_dtype, batch_type.FIELDS)
    if not window:
        return batch_type(*(empty(shape, dtype) for shape, dtype in shapes.values()))
    k = obs_shape[0]
    frames = empty(window_shape(batch_size, obs_shape), np.dtype(obs_dtype))
    arrays = {f.name: empty(*shapes[f.name]) for f in batch_type.FIELDS if not f.per_obs}
    return batch_type(obs=frames[:, :k], next_obs=frames[:, 1:], **arrays)


def _check_array(name: str, arr, shape: tuple, dtype: np.dtype, contiguous: bool = True) -> None:
    if not isinstance(arr, np.ndarray):
        raise ReplayError(f"out.{name}: expected a NumPy array, got {type(arr).__name__}")
    if arr.dtype != dtype or arr.shape != shape:
        raise ReplayError(f"out.{name}: expected {dtype} array of shape {shape}, "
                          f"got {arr.dtype} {arr.shape}")
    if (contiguous and not arr.flags.c_contiguous) or not arr.flags.writeable:
        raise ReplayError(f"out.{name}: expected a writeable C-contiguous array, got a "
                          f"non-contiguous or read-only one; allocate it with make_batch")


def check_batch(out, batch_size: int, obs_shape: tuple, obs_dtype,
                batch_type: type[_Batch] = ReplayBatch) -> _Batch:
    """``out`` as a ``batch_type`` whose arrays fit a batch of ``batch_size``, else ReplayError."""
    if not isinstance(out, tuple) or len(out) != len(batch_type._fields):
        raise ReplayError(f"out: expected a {batch_type.__name__} (see make_batch), got "
                          f"{type(out).__name__}")
    out = batch_type(*out)
    frames = out.frames
    if frames is not None:
        _check_array("frames", frames, window_shape(batch_size, obs_shape), np.dtype(obs_dtype))
    shapes = field_shapes(batch_size, obs_shape, obs_dtype, batch_type.FIELDS)
    for f in batch_type.FIELDS:
        _check_array(f.name, getattr(out, f.name), *shapes[f.name],
                     contiguous=frames is None or not f.per_obs)
    return out
