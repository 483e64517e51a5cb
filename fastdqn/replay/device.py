"""``DeviceReplayBuffer``: a ``ReplayBuffer`` whose frames live in one torch tensor on a device.

Only the frames move. Slot depths, validity, continuity, eviction, index drawing and
n-step windows stay in ``ReplayBuffer``'s Numba kernels on the host, which also plan the
frame traffic (``kernels/device.py``):

- ``add``: the host kernel writes each env's new frames into a short host ring of
  ``k + 1`` slots per env (the newest frames, all the continuity check compares against,
  so it never reads device memory); the frames of the add are then staged in one (pinned,
  on CUDA) block, copied once with ``non_blocking`` and written by one ``index_copy_``.
- ``sample``/``gather``: the copy kernels run on a table of row ids instead of frames, so
  they write the device row of every frame a batch reads, plus its actions, rewards,
  flags and discounts, into a small host block (about 2 KB for a window batch of 32);
  one ``non_blocking`` copy sends it and one ``index_select`` per observation array
  gathers the frames into a preallocated device batch.

The same seed and stream therefore give exactly the batches of the NumPy buffer: the
draws, redraws and kernels are the same, only the frame bytes come from the device.

Batches are ``ReplayBatch``es of device tensors (``index`` stays a host NumPy array, as
in the ``Feeder``'s CUDA batches), which ``Learner.update`` takes as they are. A batch
from ``make_batch`` is refilled in place by ``sample(B, out=batch)``; without ``out`` each
call allocates a new one.

Calls must not overlap (no sampling in one thread beside ``add`` in another): ``add``
advances the host counts before the device writes land. A ``Feeder`` samples such a
buffer in the calling thread; on CUDA the work is queued on the current stream anyway.

``save`` writes the NumPy buffer's file (its ``kind`` is ``ReplayBuffer``), so either
class loads what either saved. Prioritized replay with the frames on a device is
``fastdqn.replay.device_prioritized.DevicePrioritizedReplayBuffer``: this class with
``PrioritizedReplayBuffer`` behind it in the MRO, so ``__init__`` and ``draw`` pass on the
keywords they do not know (``alpha``, ``eps``, ``beta``) and batches take the buffer's
``batch_type`` (its ``weight`` a device view of the plan block like the other scalar fields).

Importing this module imports torch; ``fastdqn.replay.buffer`` does not.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from fastdqn.replay.batch import ReplayBatch, allocate_batch
from fastdqn.errors import DeviceMemoryError, ReplayError
from fastdqn.util.transfer import staged_transfer, torch_view
from fastdqn.kernels import device as kd
from fastdqn.replay.buffer import ReplayBuffer, _geometry, _positive_int, available_memory

ID_BYTES = 8  # a row id (int64) stands in for a frame in the host copy kernels
DEFAULT_HEADROOM = 2 << 30
"""Device bytes left free beside the frames: networks, Adam state, the CUDA graph's memory
pool and torch.compile's workspace take well under this for NatureCNN at batch 32."""
_CHUNK = 64 << 20  # bytes of frames moved per step when saving or loading
_PLAN_SLOTS = 4  # host plan blocks in turn: one is refilled only after its copy finished
_STAGE_SLOTS = 4  # the same for the blocks that stage an add's frames


def device_bytes(capacity: int, obs_shape, num_envs: int, *, obs_dtype=np.uint8, frame_stack: int = 1) -> int:
    """Bytes of the device frame array a ``DeviceReplayBuffer`` with these arguments allocates."""
    frame_bytes, _, slots = _geometry(capacity, tuple(obs_shape), num_envs, np.dtype(obs_dtype), frame_stack)
    return num_envs * slots * frame_bytes


def host_bytes(capacity: int, obs_shape, num_envs: int, *, obs_dtype=np.uint8, frame_stack: int = 1) -> int:
    """Host bytes of such a buffer: the NumPy buffer's, less its frames, plus the short rings
    and the row-id table."""
    frame_bytes, _, slots = _geometry(capacity, tuple(obs_shape), num_envs, np.dtype(obs_dtype), frame_stack)
    full = ReplayBuffer.required_bytes(capacity, obs_shape, num_envs, obs_dtype=obs_dtype,
                                       frame_stack=frame_stack)
    return full - num_envs * slots * frame_bytes + num_envs * (frame_stack + 1) * frame_bytes \
        + num_envs * slots * ID_BYTES


def check_device_memory(needed: int, free: int, headroom: int, *, device: str = "cuda",
                        argument: str = "device") -> None:
    """Refuse (``DeviceMemoryError``, naming ``argument``) when ``needed`` bytes of frames plus
    ``headroom`` do not fit in the ``free`` bytes of ``device``; the numbers are passed in so
    this runs anywhere."""
    if needed + headroom > free:
        raise DeviceMemoryError(
            f"{argument}: the replay frames need {needed / 1e9:.2f} GB on {device} plus {headroom / 1e9:.2f} GB "
            f"of headroom for the networks and the CUDA graph, but only {free / 1e9:.2f} GB is free; keep "
            f"the frames on the host (device='cpu' / ReplayBuffer, or --replay-device cpu) or lower the "
            f"capacity (--buffer-size)")


def free_device_memory(device: torch.device) -> int:
    """Free bytes of ``device``: torch's count on CUDA, available RAM on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_memory()


def _torch_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ReplayError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ReplayError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ReplayError(f"device: {device!r} was asked for but no CUDA device is available; "
                              f"pass device='cpu' or use ReplayBuffer")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


class _DeviceFrames:
    """The device frames as ``save``/``load`` see them: host chunks of an ``(E, L, F)`` array."""

    def __init__(self, frames: torch.Tensor, shape: tuple) -> None:
        self.frames, self.shape, self.dtype = frames.view(-1), shape, np.dtype(np.uint8)

    def _steps(self) -> Iterator[slice]:
        n = self.frames.numel()
        return (slice(i, min(i + _CHUNK, n)) for i in range(0, n, _CHUNK))

    def parts(self) -> Iterator[np.ndarray]:
        for part in self._steps():
            yield self.frames[part].cpu().numpy()

    def receive(self) -> Iterator[np.ndarray]:
        host = np.empty(min(_CHUNK, self.frames.numel()), np.uint8)
        for part in self._steps():
            chunk = host[:part.stop - part.start]
            yield chunk  # the caller fills it
            self.frames[part].copy_(torch.from_numpy(chunk))


class _Out:
    """Device memory behind one batch: its plan block (ids and scalar fields) and frames."""

    def __init__(self, batch: ReplayBatch, window: bool, plan_block: torch.Tensor, selects: list) -> None:
        self.batch, self.window, self.plan_block, self.selects = batch, window, plan_block, selects


class DeviceReplayBuffer(ReplayBuffer):
    """A ``ReplayBuffer`` (same arguments, same batches) whose frames live on ``device``.

    ``device``: ``"cuda"``, ``"cuda:N"`` or ``"cpu"`` (frames in a torch CPU tensor: what
    the tests check bit for bit against ``ReplayBuffer``). Before allocating on CUDA the
    free device memory is checked against the frames plus ``headroom`` bytes
    (``DEFAULT_HEADROOM``); ``DeviceMemoryError`` says what to change. ``options``: keywords
    of a host buffer class behind this one in a subclass's MRO (``alpha``, ``eps``).
    """

    def __init__(self, capacity: int, obs_shape, num_envs: int, *, device, obs_dtype=np.uint8,
                 frame_stack: int = 1, n_step: int = 1, gamma: float = 0.99, seed=None,
                 headroom: int = DEFAULT_HEADROOM, **options):
        self._device = _torch_device(device)
        self._headroom = _positive_int("headroom", headroom, 0)
        try:
            self._torch_dtype = torch.from_numpy(np.empty(0, obs_dtype)).dtype
        except (TypeError, ValueError):
            raise ReplayError(f"obs_dtype: expected a dtype torch can hold, got {obs_dtype!r}; "
                              f"use ReplayBuffer for it") from None
        super().__init__(capacity, obs_shape, num_envs, obs_dtype=obs_dtype, frame_stack=frame_stack,
                         n_step=n_step, gamma=gamma, seed=seed, **options)
        E, F, R = self._num_envs, self._frame_bytes, self._k + 1
        self._before = np.zeros(E, np.int64)
        self._stage = staged_transfer(lambda empty: (empty((E * R,), np.int64), empty((E * R, F), np.uint8)),
                                      self._device, _STAGE_SLOTS)
        self._stage_slot = 0
        self._stage_rows, self._stage_frames = self._stage.device
        self._frames_at = self._stage.layout.pieces[1]  # byte offset of the staged frames
        self._plans: dict[tuple[int, bool], tuple] = {}  # (batch size, window) -> transfer, make
        self._outs: dict[int, _Out] = {}
        self._drawn: tuple | None = None
        kd.stage_writes(self._state["frames"], self._before, self._before, self._L, *self._stage.host[0])
        kd.newest_slots(self._before, self._L, R, np.empty(0, np.int64), np.empty(0, np.int64))

    def _host_layout(self) -> dict:
        layout = super()._host_layout()
        layout["frames"] = ((self._num_envs, self._k + 1, self._frame_bytes), np.uint8)
        return layout

    def _allocate(self) -> None:
        rows = self._num_envs * self._L
        needed = rows * self._frame_bytes
        check_device_memory(needed, free_device_memory(self._device),
                            self._headroom if self._device.type == "cuda" else 0, device=str(self._device))
        super()._allocate()
        try:
            self._frames = torch.zeros((rows, self._frame_bytes), dtype=torch.uint8, device=self._device)
        except torch.OutOfMemoryError:
            raise DeviceMemoryError(f"device: allocating {needed / 1e9:.2f} GB of replay frames on "
                                    f"{self._device} failed; lower the capacity or keep the frames on "
                                    f"the host (device='cpu')") from None
        self._ids = np.arange(rows, dtype=np.int64).reshape(self._num_envs, self._L, 1).view(np.uint8)
        self._nbytes += needed + self._ids.nbytes

    # -- properties ---------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where the frames (and the batches) are."""
        return self._device

    @property
    def device_nbytes(self) -> int:
        """Bytes of the device frame array (included in ``nbytes``)."""
        return self._frames.numel()

    def __repr__(self) -> str:
        host = super().__repr__()
        return f"{type(self).__name__}{host[host.index('('):-1]}, device={str(self._device)!r})"

    # -- adding -------------------------------------------------------------------------

    def add(self, obs, next_obs, action, reward, terminated, truncated, env_ids=None, valid=None):
        np.copyto(self._before, self._state["count"])
        super().add(obs, next_obs, action, reward, terminated, truncated, env_ids, valid)
        slot = self._stage_slot
        self._stage_slot = (slot + 1) % _STAGE_SLOTS
        self._stage.ready(slot)
        n = kd.stage_writes(self._state["frames"], self._before, self._state["count"], self._L,
                            *self._stage.host[slot])
        if n:
            self._stage.copy_to(slot, nbytes=self._frames_at + n * self._frame_bytes)
            self._frames.index_copy_(0, self._stage_rows[:n], self._stage_frames[:n])

    # -- sampling -----------------------------------------------------------------------

    def _batch_spec(self) -> tuple[tuple, np.dtype, int]:
        return (self._k, ID_BYTES), np.dtype(np.uint8), ID_BYTES

    def _frame_source(self) -> np.ndarray:
        return self._ids

    def _plan(self, B: int, window: bool) -> tuple:
        """The host plan blocks for batches of ``B`` (made on first use) and their maker."""
        key = (B, window)
        if key not in self._plans:
            def make(empty=np.empty) -> ReplayBatch:
                return allocate_batch(B, (self._k, ID_BYTES), np.uint8, window=window, empty=empty,
                                      batch_type=self._batch_type)

            self._plans[key] = (staged_transfer(make, self._device, _PLAN_SLOTS), make, [0])
        return self._plans[key]

    def make_batch(self, batch_size: int, *, window: bool = False) -> ReplayBatch:
        """A device batch to pass as ``out=`` to ``sample``/``gather`` (kept for reuse)."""
        out = self._new_out(_positive_int("batch_size", batch_size), window)
        self._outs[id(out.batch)] = out
        return out.batch

    def _new_out(self, B: int, window: bool) -> _Out:
        self._check_window(window)
        transfer, make, _ = self._plan(B, window)
        k, F, dev = self._k, self._frame_bytes, self._device
        plan_block = torch.empty(transfer.layout.nbytes, dtype=torch.uint8, device=dev)
        plan = make(transfer.layout.carve(plan_block, torch_view))
        pieces = transfer.layout.pieces
        id_view = lambda piece, n: torch_view(plan_block, pieces[piece], (n,), np.dtype(np.int64))  # noqa: E731
        if window:
            frames = torch.empty((B * (k + 1), F), dtype=torch.uint8, device=dev)
            stack = frames.view(B, k + 1, *self._obs_shape[1:])
            obs, next_obs = stack[:, :k], stack[:, 1:]
            selects = [(id_view(0, B * (k + 1)), frames)]
        else:
            parts = [torch.empty((B * k, F), dtype=torch.uint8, device=dev) for _ in range(2)]
            obs, next_obs = (p.view(self._torch_dtype).view(B, *self._obs_shape) for p in parts)
            selects = [(id_view(0, B * k), parts[0]), (id_view(1, B * k), parts[1])]
        # Every scalar field is a device view of the plan block; index stays on the host.
        scalars = {f.name: getattr(plan, f.name) for f in self._batch_type.FIELDS if not f.per_obs}
        batch = self._batch_type(obs=obs, next_obs=next_obs, **{**scalars, "index": np.empty(B, np.int64)})
        return _Out(batch, window, plan_block, selects)

    def _out_for(self, out, B: int) -> _Out:
        if out is None:
            return self._new_out(B, window=False)
        entry = self._outs.get(id(out))
        if entry is None or entry.batch is not out:
            raise ReplayError(f"out: expected a batch from this buffer's make_batch, got "
                              f"{type(out).__name__}; allocate it with make_batch(batch_size)")
        if out.index.shape[0] != B:
            raise ReplayError(f"out: expected a batch of {B} transitions, got one of "
                              f"{out.index.shape[0]}; allocate it with make_batch({B})")
        return entry

    def _host_plan(self, entry: _Out) -> tuple[int, ReplayBatch, object]:
        """A free host plan block for ``entry``'s batch: (slot, host batch, transfer)."""
        transfer, _, turn = self._plan(entry.batch.index.shape[0], entry.window)
        slot = turn[0]
        turn[0] = (slot + 1) % _PLAN_SLOTS
        transfer.ready(slot)
        return slot, transfer.host[slot], transfer

    def _send(self, entry: _Out, slot: int, host: ReplayBatch, transfer) -> ReplayBatch:
        """Copy the filled host plan to the device and gather the frames it names."""
        transfer.copy_to(slot, entry.plan_block)
        for ids, frames in entry.selects:
            torch.index_select(self._frames, 0, ids, out=frames)
        np.copyto(entry.batch.index, host.index)
        return entry.batch

    def draw(self, batch_size: int, out: ReplayBatch | None = None, **options) -> ReplayBatch:
        entry = self._out_for(out, _positive_int("batch_size", batch_size))
        slot, host, transfer = self._host_plan(entry)
        super().draw(batch_size, host, **options)
        np.copyto(entry.batch.index, host.index)
        self._drawn = (entry, slot, host, transfer)
        return entry.batch

    def fill(self, out: ReplayBatch) -> ReplayBatch:
        if self._drawn is None or self._drawn[0].batch is not out:
            raise ReplayError("out: expected the batch returned by the latest draw; call draw first")
        entry, slot, host, transfer = self._drawn
        self._drawn = None
        super().fill(host)
        return self._send(entry, slot, host, transfer)

    def gather(self, index, out: ReplayBatch | None = None) -> ReplayBatch:
        entry = self._out_for(out, np.asarray(index).shape[0] if np.ndim(index) == 1 else 1)
        slot, host, transfer = self._host_plan(entry)
        super().gather(index, host)
        return self._send(entry, slot, host, transfer)

    # -- persistence --------------------------------------------------------------------

    @classmethod
    def _file_kind(cls) -> str:
        return ReplayBuffer.__name__

    def _saved_arrays(self) -> list:
        shape = (self._num_envs, self._L, self._frame_bytes)
        return [(name, _DeviceFrames(self._frames, shape) if name == "frames" else arr)
                for name, arr in super()._saved_arrays()]

    @classmethod
    def load(cls, path, *, device, headroom: int = DEFAULT_HEADROOM) -> "DeviceReplayBuffer":
        """Read a file written by ``save`` of either class, with the frames on ``device``."""
        return super().load(path, device=device, headroom=headroom)

    def _loaded_len(self, path: str) -> int:
        # The host ring must hold each env's newest frames again, as after the adds that wrote them.
        E, R = self._num_envs, self._k + 1
        rows, ring = np.empty(E * R, np.int64), np.empty(E * R, np.int64)
        n = kd.newest_slots(self._state["count"], self._L, R, rows, ring)
        frames = self._frames[torch.from_numpy(rows[:n]).to(self._device)].cpu().numpy()
        self._state["frames"].reshape(E * R, self._frame_bytes)[ring[:n]] = frames
        return super()._loaded_len(path)
