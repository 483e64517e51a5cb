"""``TensorFrames``: the frame store of a buffer whose frames live in one torch tensor on a device.

Only the frames move. Slot depths, validity, continuity, eviction, drawing and n-step
windows stay in the ring's Numba kernels on the host, which also plan the frame traffic
(``kernels/device.py``): ``add`` keeps each env's newest ``k + 1`` frames in a host ring
(all the continuity check reads, so it never reads device memory) and sends the add's frames
as one staged ``non_blocking`` copy and one ``index_copy_``; ``sample``/``gather`` run the
copy kernels on a table of row ids, send the small plan they write (rows, actions, rewards,
flags...) in one copy and gather the frames with one ``index_select`` per observation array.
So the same seed and stream give exactly the batches, and the files, of host frames. torch is
imported when a ``TensorFrames`` is built, not with this module.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from fastdqn.errors import DeviceMemoryError, ReplayError
from fastdqn.kernels import device as kd
from fastdqn.util.transfer import staged_transfer, torch_view
from fastdqn.replay.batch import allocate_batch
from fastdqn.replay.frames import check_window, kernel_views
from fastdqn.replay.ring import Ring
from fastdqn.replay.spec import ID_BYTES, available_memory

DEFAULT_HEADROOM = 2 << 30
"""Device bytes left free beside the frames: networks, Adam state, the CUDA graph's memory
pool and torch.compile's workspace take well under this for NatureCNN at batch 32."""
_CHUNK = 64 << 20  # bytes of frames moved per step when saving or loading
_PLAN_SLOTS = 4  # host plan blocks in turn: one is refilled only after its copy finished
_STAGE_SLOTS = 4  # the same for the blocks that stage an add's frames


def check_device_memory(needed: int, free: int, headroom: int, *, device: str = "cuda",
                        argument: str = "device") -> None:
    """Refuse (``DeviceMemoryError``, naming ``argument``) when ``needed`` bytes of frames plus
    ``headroom`` do not fit in the ``free`` bytes of ``device``; the numbers are passed in so
    this runs anywhere."""
    if needed + headroom > free:
        raise DeviceMemoryError(
            f"{argument}: the replay frames need {needed / 1e9:.2f} GB on {device} plus {headroom / 1e9:.2f} GB "
            f"of headroom for the networks and the CUDA graph, but only {free / 1e9:.2f} GB is free; keep "
            f"the frames on the host (device='cpu', or --replay-device cpu) or lower the "
            f"capacity (--buffer-size)")


class _SavedFrames:
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
        import torch

        host = np.empty(min(_CHUNK, self.frames.numel()), np.uint8)
        for part in self._steps():
            chunk = host[:part.stop - part.start]
            yield chunk  # the caller fills it
            self.frames[part].copy_(torch.from_numpy(chunk))


class _DeviceBatch:
    """Device memory behind one batch: its plan block (ids and scalar fields) and frames."""

    def __init__(self, batch, window: bool, plan_block: torch.Tensor, selects: list) -> None:
        self.batch, self.window, self.plan_block, self.selects = batch, window, plan_block, selects


class TensorFrames:
    """Frames in a ``(E * L, F)`` uint8 tensor on ``device``; batches are device tensors."""

    REFRESHES = True  # after_add copies the new frames to the device

    def __init__(self, ring: Ring, batch_type: type, device: torch.device, headroom: int) -> None:
        import torch

        spec = ring.spec
        E, L, F, R = spec.num_envs, spec.slots, spec.frame_bytes, spec.frame_stack + 1
        self.ring, self.batch_type, self.batch_device = ring, batch_type, device
        try:
            self._torch_dtype = torch.from_numpy(np.empty(0, spec.obs_dtype)).dtype
        except (TypeError, ValueError):
            raise ReplayError(f"obs_dtype: expected a dtype torch can hold, got {spec.obs_dtype}; "
                              f"keep the frames on the host (device='cpu') for it") from None
        needed = E * L * F
        cuda = device.type == "cuda"
        free = int(torch.cuda.mem_get_info(device)[0]) if cuda else available_memory()
        check_device_memory(needed, free, headroom if cuda else 0, device=str(device))
        try:
            self.frames = torch.zeros((E * L, F), dtype=torch.uint8, device=device)
        except torch.OutOfMemoryError:
            raise DeviceMemoryError(f"device: allocating {needed / 1e9:.2f} GB of replay frames on "
                                    f"{device} failed; lower the capacity or keep the frames on "
                                    f"the host (device='cpu')") from None
        # The copy kernels read row ids where host frames would be: (E, L, 8) bytes.
        self.source = np.arange(E * L, dtype=np.int64).reshape(E, L, 1).view(np.uint8)
        self._stage = staged_transfer(lambda empty: (empty((E * R,), np.int64), empty((E * R, F), np.uint8)),
                                    device, _STAGE_SLOTS)
        self._stage_slot = 0
        self._stage_rows, self._stage_frames = self._stage.device
        self._frames_at = self._stage.layout.pieces[1]  # byte offset of the staged frames
        self._plans: dict[tuple[int, bool], tuple] = {}  # (batch size, window) -> transfer, make, turn
        self._batches: dict[int, _DeviceBatch] = {}
        kd.stage_writes(ring.arrays["frames"], ring.count, ring.count, L, *self._stage.host[0])
        kd.newest_slots(ring.count, L, R, np.empty(0, np.int64), np.empty(0, np.int64))

    def after_add(self, before: np.ndarray, env_ids: np.ndarray) -> None:
        """Send the frames the add wrote into the host ring to their device rows."""
        slot = self._stage_slot
        self._stage_slot = (slot + 1) % _STAGE_SLOTS
        self._stage.ready(slot)
        n = kd.stage_writes(self.ring.arrays["frames"], before, self.ring.count, self.ring.spec.slots,
                            *self._stage.host[slot])
        if n:
            self._stage.copy_to(slot, nbytes=self._frames_at + n * self.ring.spec.frame_bytes)
            self.frames.index_copy_(0, self._stage_rows[:n], self._stage_frames[:n])

    def _plan(self, B: int, window: bool) -> tuple:
        """The host plan blocks for batches of ``B`` (made on first use), their maker and turn."""
        key = (B, window)
        if key not in self._plans:
            k = self.ring.spec.frame_stack

            def make(empty=np.empty):
                return allocate_batch(B, (k, ID_BYTES), np.uint8, window=window, empty=empty,
                                      batch_type=self.batch_type)

            self._plans[key] = (staged_transfer(make, self.batch_device, _PLAN_SLOTS), make, [0])
        return self._plans[key]

    def make_batch(self, B: int, window: bool):
        """A device batch to pass as ``out=`` (kept for reuse)."""
        entry = self._new_batch(B, window)
        self._batches[id(entry.batch)] = entry
        return entry.batch

    def _new_batch(self, B: int, window: bool) -> _DeviceBatch:
        import torch

        spec = self.ring.spec
        check_window(spec, window)
        transfer, make, _ = self._plan(B, window)
        k, F, dev = spec.frame_stack, spec.frame_bytes, self.batch_device
        plan_block = torch.empty(transfer.layout.nbytes, dtype=torch.uint8, device=dev)
        plan = make(transfer.layout.carve(plan_block, torch_view))
        pieces = transfer.layout.pieces
        id_view = lambda piece, n: torch_view(plan_block, pieces[piece], (n,), np.dtype(np.int64))  # noqa: E731
        if window:
            frames = torch.empty((B * (k + 1), F), dtype=torch.uint8, device=dev)
            stack = frames.view(B, k + 1, *spec.obs_shape[1:])
            obs, next_obs = stack[:, :k], stack[:, 1:]
            selects = [(id_view(0, B * (k + 1)), frames)]
        else:
            parts = [torch.empty((B * k, F), dtype=torch.uint8, device=dev) for _ in range(2)]
            obs, next_obs = (p.view(self._torch_dtype).view(B, *spec.obs_shape) for p in parts)
            selects = [(id_view(0, B * k), parts[0]), (id_view(1, B * k), parts[1])]
        # Every scalar field is a device view of the plan block; index stays on the host.
        scalars = {f.name: getattr(plan, f.name) for f in self.batch_type.FIELDS if not f.per_obs}
        batch = self.batch_type(obs=obs, next_obs=next_obs, **{**scalars, "index": np.empty(B, np.int64)})
        return _DeviceBatch(batch, window, plan_block, selects)

    def target(self, out, B: int) -> tuple:
        """A free host plan block for ``out`` (a batch of ``make_batch``; None: a new one)."""
        if out is None:
            entry = self._new_batch(B, False)
        else:
            entry = self._batches.get(id(out))
            if entry is None or entry.batch is not out:
                raise ReplayError(f"out: expected a batch from this buffer's make_batch, got "
                                  f"{type(out).__name__}; allocate it with make_batch(batch_size)")
            if out.index.shape[0] != B:
                raise ReplayError(f"out: expected a batch of {B} transitions, got one of "
                                  f"{out.index.shape[0]}; allocate it with make_batch({B})")
        transfer, _, turn = self._plan(B, entry.window)
        slot = turn[0]
        turn[0] = (slot + 1) % _PLAN_SLOTS
        transfer.ready(slot)
        host = transfer.host[slot]
        return host, kernel_views(host, self.ring.spec.frame_stack, ID_BYTES), (entry, slot, transfer)

    def finish(self, host, handle):
        """Copy the filled host plan to the device and gather the frames it names."""
        import torch

        entry, slot, transfer = handle
        transfer.copy_to(slot, entry.plan_block)
        for ids, frames in entry.selects:
            torch.index_select(self.frames, 0, ids, out=frames)
        np.copyto(entry.batch.index, host.index)
        return entry.batch

    def saved_frames(self) -> _SavedFrames:
        spec = self.ring.spec
        return _SavedFrames(self.frames, (spec.num_envs, spec.slots, spec.frame_bytes))

    def after_load(self) -> None:
        import torch

        # The host ring must hold each env's newest frames again, as after the adds that wrote them.
        spec = self.ring.spec
        E, R = spec.num_envs, spec.frame_stack + 1
        rows, ring = np.empty(E * R, np.int64), np.empty(E * R, np.int64)
        n = kd.newest_slots(self.ring.count, spec.slots, R, rows, ring)
        frames = self.frames[torch.from_numpy(rows[:n]).to(self.batch_device)].cpu().numpy()
        self.ring.arrays["frames"].reshape(E * R, spec.frame_bytes)[ring[:n]] = frames
