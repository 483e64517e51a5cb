"""``ReplaySpec``: a replay buffer's arguments, checked once, with the geometry and the byte
counts derived from them: every allocation and memory check in fastdqn asks ``replay_bytes``
how many bytes a configuration holds. Imports NumPy only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import numpy as np

from fastdqn.errors import ReplayError
from fastdqn.kernels.replay import MAX_FRAME_STACK
from fastdqn.kernels.sumtree import leaves_for
from fastdqn.util.checks import check_int, check_number, is_int

MAX_DIM = 1 << 31
"""The largest extent of one observation axis."""
MAX_N_STEP = 1 << 16
"""The longest n-step window (far beyond any useful one; it keeps ``gamma ** n`` and the
window walks in range)."""
ID_BYTES = 8
"""A row id (int64) stands in for a frame in the host copy kernels of device frames."""
PRIORITY_BYTES = 32
"""Bytes per leaf of the priority trees: a sum tree and a min tree of float64, each 2 P."""


def available_memory() -> int:
    """Bytes of memory the machine can still hand out (what buffers are checked against)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def is_saved_dtype(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is one the kernels copy and the replay file stores: a plain bool,
    int, uint or float of 1, 2, 4 or 8 bytes."""
    return (dtype.kind in "biuf" and dtype.itemsize in (1, 2, 4, 8) and dtype.fields is None
            and dtype.subdtype is None and np.dtype(dtype.str) == dtype)


def _layout_bytes(layout: dict) -> int:
    return sum(math.prod(shape) * np.dtype(dt).itemsize for shape, dt in layout.values())


@dataclasses.dataclass(frozen=True)
class ReplaySpec:
    """What a buffer stores, checked at construction (``ReplayError`` names the argument).

    Each env owns a ring of ``slots`` frame slots: ``keep = ceil(capacity / num_envs) + k``
    sampleable ones (room for one stack more) and ``k + 1`` guard slots behind them, as
    many as one add writes per env, so a sampler copying beside ``add`` never reads a slot
    being written.
    """

    capacity: int
    obs_shape: tuple
    num_envs: int
    obs_dtype: np.dtype = np.dtype(np.uint8)
    frame_stack: int = 1
    n_step: int = 1
    gamma: float = 0.99

    def __post_init__(self) -> None:
        def put(name, value):
            object.__setattr__(self, name, value)

        put("num_envs", check_int("num_envs", self.num_envs, error=ReplayError))
        put("n_step", check_int("n_step", self.n_step, error=ReplayError))
        if self.n_step > MAX_N_STEP:
            raise ReplayError(f"n_step: expected at most {MAX_N_STEP}, got {self.n_step}")
        put("gamma", check_number("gamma", self.gamma, 0.0, 1.0, fix="pass e.g. gamma=0.99", error=ReplayError))
        k = check_int("frame_stack", self.frame_stack, error=ReplayError)
        put("frame_stack", k)
        if k > MAX_FRAME_STACK:
            raise ReplayError(f"frame_stack: expected at most {MAX_FRAME_STACK}, got {k}")
        shape = self.obs_shape
        if not (isinstance(shape, (tuple, list)) and shape and all(is_int(x) and 1 <= x <= MAX_DIM for x in shape)):
            raise ReplayError(f"obs_shape: expected a non-empty tuple of ints in [1, {MAX_DIM}], got {shape!r}")
        shape = tuple(int(x) for x in shape)
        put("obs_shape", shape)
        try:
            dtype = np.dtype(self.obs_dtype)
        except TypeError:
            raise ReplayError(f"obs_dtype: expected a NumPy dtype, got {self.obs_dtype!r}") from None
        if not is_saved_dtype(dtype):
            raise ReplayError(f"obs_dtype: expected a bool, int, uint or float dtype of 1, 2, 4 or 8 "
                              f"bytes (what a replay file stores), got {dtype}")
        put("obs_dtype", dtype)
        if k > 1:
            if dtype != np.uint8:
                raise ReplayError(f"obs_dtype: frame_stack={k} stores uint8 frames, "
                                  f"got {dtype}; use frame_stack=1 for other dtypes")
            if len(shape) < 2 or shape[0] != k:
                raise ReplayError(f"obs_shape: frame_stack={k} expects the stacked shape "
                                  f"({k}, H, W), got {shape}")
        put("capacity", check_int("capacity", self.capacity, minimum=self.num_envs * k, error=ReplayError,
                                  why=f" (one stack of {k} frames for each of {self.num_envs} envs)"))

    @functools.cached_property  # read on every add and draw
    def frame_bytes(self) -> int:
        """Bytes of one stored frame."""
        return self.obs_dtype.itemsize * math.prod(self.obs_shape) // self.frame_stack

    @functools.cached_property
    def frame_shape(self) -> tuple:
        """Shape of one stored frame: a stack's last plane, or the whole obs without stacking."""
        return self.obs_shape[1:] if self.frame_stack > 1 else self.obs_shape

    @functools.cached_property
    def keep(self) -> int:
        """Sampleable slots per env."""
        return -(-self.capacity // self.num_envs) + self.frame_stack

    @functools.cached_property
    def slots(self) -> int:
        """Slots in each env's ring: ``keep`` plus one add's worth of guard slots."""
        return self.keep + self.frame_stack + 1

    @functools.cached_property
    def window_batches(self) -> bool:
        """Whether window batches are allowed: stacked frames and ``n_step=1``."""
        return self.frame_stack > 1 and self.n_step == 1

    def ring_layout(self, host_frames: int | None = None) -> dict:
        """Name -> (shape, dtype) of the ring's host arrays, in file order; ``host_frames``:
        frame slots per env kept on the host (default: all of them)."""
        E, L, F = self.num_envs, self.slots, self.frame_bytes
        return {
            "frames": ((E, L if host_frames is None else host_frames, F), np.uint8),
            "action": ((E, L), np.int32), "reward": ((E, L), np.float32), "terminated": ((E, L), np.bool_),
            "slot_flags": ((E, L), np.uint8), "count": ((E,), np.int64), "pending": ((E,), np.bool_),
            "flagged": ((E,), np.int64), "nvalid": ((E,), np.int64),
        }


def replay_bytes(spec: ReplaySpec, *, prioritized: bool = False, on_device: bool = False) -> tuple[int, int]:
    """(host bytes, device bytes) a buffer of ``spec`` allocates: the rings and their frames,
    the priority trees when ``prioritized``, and with frames ``on_device`` a host ring of the
    ``k + 1`` newest frames per env and a table of row ids instead of all frames."""
    E, L, F = spec.num_envs, spec.slots, spec.frame_bytes
    if on_device:
        host = _layout_bytes(spec.ring_layout(spec.frame_stack + 1)) + E * L * ID_BYTES
        device = E * L * F
    else:
        host, device = _layout_bytes(spec.ring_layout()), 0
    if prioritized:
        host += PRIORITY_BYTES * leaves_for(E * L)
    return host, device
