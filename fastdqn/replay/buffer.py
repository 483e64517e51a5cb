"""``ReplayBuffer``: a preallocated replay memory for vector environments, composed of a
``Ring`` (frames and bookkeeping), a sampler (``UniformSampler``, or ``PrioritizedSampler``
with ``prioritized=True``) and a frame store (``HostFrames``, or ``TensorFrames`` with a torch
``device``), chosen by keywords rather than subclasses.

Capacity: each env keeps its newest ``keep = ceil(capacity / num_envs) + k`` frames
sampleable. A step that continues the env's previous ``next_obs`` costs one slot; one that
starts a new stack costs ``2 + (k - 1 - m)``, where ``m + 1`` is the number of equal leading
frames of its ``obs``; so each episode boundary in the window costs about one slot more.

Threads, the same for every variant: ``add`` and ``update_priorities`` may run in one
thread while another samples (``draw``, ``fill``, ``sample``, ``gather``); calls on the
same side must not overlap. Every row a sample returns is exactly a transition that was
added and is still stored when it returns. Calls that read or write the bookkeeping take
the buffer's lock in turn; ``fill`` copies frames without it, beside ``add``, which writes
only into the ``k + 1`` guard slots behind each ring's sampleable ones, then under the lock
draws again (and copies again) each row that an add pushed out meanwhile. This relies on
the adding thread writing frames before it advances the env's count, as the kernel does.
"""

from __future__ import annotations

import itertools
import os
import threading

import numpy as np

from fastdqn.errors import CheckpointError, ReplayError, ReplayStateError
from fastdqn.kernels import nstep as kn
from fastdqn.kernels import replay as kr
from fastdqn.replay import file as rf
from fastdqn.replay.frames import HostFrames
from fastdqn.replay.prioritized import PrioritizedSampler, check_options
from fastdqn.replay.ring import Ring
from fastdqn.replay.spec import ReplaySpec, available_memory, replay_bytes
from fastdqn.replay.uniform import UniformSampler
from fastdqn.util.checks import check_flag, check_int, check_seed, parse_device

_WARM: set = set()  # kernel signatures compiled (or loaded from cache) in this process


class _TurnLock:
    """A lock taken in the order it was asked for: a sampler waiting for it gets its turn
    after the add in progress, not after every add a tight loop makes (a plain Lock lets
    the releasing thread take it again first).

    A ticket lock. Taking a ticket (``next`` on an ``itertools.count``) is one atomic C call
    under the GIL, and only the holder advances ``_serving``, so the uncontended path takes
    no lock at all; the Condition is used only by a thread that has to wait. A waiter
    registers before it reads ``_serving`` and the holder advances ``_serving`` before it
    reads ``_waiting``, so either the waiter sees its turn or the holder sees the waiter.
    """

    def __init__(self) -> None:
        self._tickets = itertools.count()
        self._serving = 0
        self._waiting = 0
        self._cond = threading.Condition(threading.Lock())

    def __enter__(self) -> None:
        turn = next(self._tickets)
        if turn == self._serving:
            return
        with self._cond:
            self._waiting += 1
            while turn != self._serving:
                self._cond.wait()
            self._waiting -= 1

    def __exit__(self, *exc) -> None:
        self._serving += 1
        if self._waiting:
            with self._cond:
                self._cond.notify_all()


class ReplayBuffer:
    """Replay memory for ``num_envs`` envs, allocated once at construction.

    ``n_step=n``: ``reward`` is the discounted sum of the window's ``m <= n`` rewards,
    ``next_obs`` the stack ``m`` steps on and ``discount`` ``gamma**m``, or 0 after a
    termination (with ``n_step=1``: ``gamma`` or 0, so one target serves every n). A window
    ends early at a termination, a truncation or a step that does not continue it (another
    ``obs``, or a ``valid=False`` row between), and is not sampled (nor counted in ``len``)
    while still open. Window batches need ``n_step=1``. README, "n-step returns".

    ``prioritized=True``: draws follow priorities (``fastdqn.replay.prioritized``).
    ``device`` other than ``"cpu"``: frames in a torch tensor there, batches of device tensors
    whose ``index`` is a host array (``fastdqn.replay.device``). ``index`` holds transition
    ids, which never repeat: ``gather`` refuses an overwritten one, ``update_priorities`` skips it.
    """

    _TENSOR_FRAMES = False  # DeviceReplayBuffer: frames in a torch tensor even on the CPU
    _PRIORITIZED = None  # the thin constructors fix the sampler; None: the keyword decides

    def __init__(self, capacity: int, obs_shape, num_envs: int, *, obs_dtype=np.uint8, frame_stack: int = 1,
                 n_step: int = 1, gamma: float = 0.99, prioritized: bool = False, alpha: float = 0.6,
                 eps: float = 1e-6, device="cpu", headroom: int | None = None, seed=None):
        self._spec = spec = ReplaySpec(capacity, obs_shape, num_envs, obs_dtype, frame_stack, n_step, gamma)
        check_flag("prioritized", prioritized, error=ReplayError)
        tensor = self._TENSOR_FRAMES or not (isinstance(device, str) and device == "cpu")
        torch_device = parse_device(device, error=ReplayError, fix="pass device='cpu'") if tensor else None
        host, on_device = replay_bytes(spec, prioritized=prioritized, on_device=tensor)
        available = available_memory()
        if host > available:
            raise MemoryError(f"{self._figures(host)} but only {available / 1e9:.2f} GB of memory is "
                              f"available; lower capacity")
        self._rng = np.random.default_rng(check_seed("seed", seed, error=ReplayError))
        self._lock = _TurnLock()
        try:
            self._ring = ring = Ring(spec, spec.frame_stack + 1 if tensor else None)
        except MemoryError:
            raise MemoryError(f"{self._figures(host)} and allocating it failed; lower capacity") from None
        self._sampler = (PrioritizedSampler(ring, self._rng, alpha=alpha, eps=eps) if prioritized
                         else UniformSampler(ring, self._rng))
        if tensor:
            from fastdqn.replay.device import DEFAULT_HEADROOM, TensorFrames

            headroom = DEFAULT_HEADROOM if headroom is None else check_int("headroom", headroom, minimum=0,
                                                                           error=ReplayError)
            self._frames = TensorFrames(ring, self._sampler.batch_type, torch_device, headroom)
        else:
            self._frames = HostFrames(ring, self._sampler.batch_type)
        self._nbytes = host + on_device
        self._before = np.zeros(spec.num_envs, np.int64)
        # The parts that read what an add changed (a priority tree, frames on a device); the
        # host frames and the uniform sampler read the ring itself, so a plain add skips them.
        self._refresh = tuple(part.after_add for part in (self._sampler, self._frames) if part.REFRESHES)
        self._size_scratch(0)
        self._drawn = None  # (batch handed out, host batch, frame store handle) of the latest draw
        self._warm_up()

    def _figures(self, host: int) -> str:
        s = self._spec
        return (f"ReplayBuffer(capacity={s.capacity}, obs_shape={s.obs_shape}, num_envs={s.num_envs}) "
                f"needs {host / 1e9:.2f} GB ({host} bytes)")

    def _size_scratch(self, B: int) -> None:
        """Per-batch-size scratch, allocated when the batch size changes."""
        self._slots = np.empty(B, np.int64)  # slot ids of the latest draw
        self._oldest = np.empty(B, np.int64)
        self._all_rows = np.arange(B, dtype=np.int64)
        self._spare = (np.empty(B, np.int64), np.empty(B, np.int64))
        self._redraw = np.empty(B, np.int64)

    def _warm_up(self) -> None:
        """Compile (or load from cache) every kernel this variant calls, on a tiny scratch
        buffer, so the first training step has no stall."""
        s = self._spec
        key = (s.obs_dtype.str, s.frame_stack > 1, s.n_step > 1, self.prioritized, s.window_batches)
        if key in _WARM:
            return
        _WARM.add(key)
        scratch = ReplayBuffer(s.num_envs * s.frame_stack, s.obs_shape, s.num_envs, obs_dtype=s.obs_dtype,
                               frame_stack=s.frame_stack, n_step=s.n_step, gamma=s.gamma,
                               prioritized=self.prioritized, seed=0)
        obs = np.zeros((s.num_envs,) + s.obs_shape, s.obs_dtype)
        zeros = np.zeros(s.num_envs)
        # Terminated rows close their windows at once, so every n can sample them.
        scratch.add(obs, obs, zeros.astype(np.int64), zeros.astype(np.float32),
                    np.ones(s.num_envs, bool), zeros.astype(bool))
        scratch.add_next_frames(np.zeros((s.num_envs,) + s.frame_shape, s.obs_dtype), zeros.astype(np.int64),
                                zeros.astype(np.float32), np.ones(s.num_envs, bool), zeros.astype(bool),
                                scratch._ring.env_range)
        batch = scratch.sample(1)
        scratch.gather(batch.index)
        if self.prioritized:
            scratch.update_priorities(batch.index, np.ones(1))
        if s.window_batches:
            scratch.sample(1, out=scratch.make_batch(1, window=True))

    capacity = property(lambda self: self._spec.capacity)
    num_envs = property(lambda self: self._spec.num_envs)
    obs_shape = property(lambda self: self._spec.obs_shape)
    obs_dtype = property(lambda self: self._spec.obs_dtype)
    frame_stack = property(lambda self: self._spec.frame_stack)
    n_step = property(lambda self: self._spec.n_step)
    gamma = property(lambda self: self._spec.gamma)
    window_batches = property(lambda self: self._spec.window_batches,
                              doc="Whether ``make_batch(window=True)`` is allowed: stacked frames and ``n_step=1``.")
    slots_per_env = property(lambda self: self._spec.slots, doc="Frame slots in each env's ring.")
    nbytes = property(lambda self: self._nbytes, doc="Bytes of storage held, host and device.")

    prioritized = property(lambda self: self._sampler.prioritized, doc="Whether draws follow priorities.")
    batch_type = property(lambda self: self._sampler.batch_type, doc="The batches' type; its ``FIELDS`` declare them.")
    batch_device = property(lambda self: self._frames.batch_device,
                            doc="The batches' ``torch.device`` when the frames live in a torch tensor, else None.")
    device = property(lambda self: self._frames.batch_device or "cpu",
                      doc="Where the frames are: ``\"cpu\"`` (host NumPy arrays) or a ``torch.device``.")

    @property
    def device_nbytes(self) -> int:
        """Bytes of frames held on the device (included in ``nbytes``)."""
        return replay_bytes(self._spec, on_device=True)[1] if self._frames.batch_device is not None else 0

    @property
    def alpha(self) -> float:
        return self._prioritized_only("alpha").alpha

    @property
    def eps(self) -> float:
        return self._prioritized_only("eps").eps

    @property
    def max_priority(self) -> float:
        """The priority new transitions get: the largest set so far (1 before any update)."""
        return float(self._prioritized_only("max_priority").max_priority[0])

    def total_priority(self) -> float:
        """Sum of p_i over the transitions that can be sampled."""
        return float(self._prioritized_only("total_priority").tree[1, 0])

    def priorities(self, index) -> np.ndarray:
        """p_i of the transition ids ``index`` (as ``sample`` draws them), float64."""
        sampler = self._prioritized_only("priorities")
        idx = _index_array(index)
        slots = np.empty(idx.shape[0], np.int64)
        self._ring.slots_of(idx, slots)
        return sampler.priorities(slots)

    def _prioritized_only(self, name: str) -> PrioritizedSampler:
        if not self.prioritized:
            raise ReplayError(f"{name}: this buffer draws uniformly and keeps no priorities; "
                              f"build it with prioritized=True")
        return self._sampler

    @staticmethod
    def required_bytes(capacity: int, obs_shape, num_envs: int, *, obs_dtype=np.uint8, frame_stack: int = 1,
                       prioritized: bool = False, device="cpu") -> int:
        """Bytes a buffer built with these arguments allocates (its ``nbytes``), host and
        device together, without allocating."""
        spec = ReplaySpec(capacity, obs_shape, num_envs, obs_dtype, frame_stack)
        return sum(replay_bytes(spec, prioritized=prioritized, on_device=device != "cpu"))

    def __len__(self) -> int:
        return self._ring.len

    def __repr__(self) -> str:
        s = self._spec
        extra = f", prioritized=True, alpha={self.alpha}, eps={self.eps}" if self.prioritized else ""
        where = "" if self.batch_device is None else f", device={str(self.batch_device)!r}"
        return (f"{type(self).__name__}(capacity={s.capacity}, obs_shape={s.obs_shape}, "
                f"num_envs={s.num_envs}, obs_dtype={s.obs_dtype}, frame_stack={s.frame_stack}, "
                f"n_step={s.n_step}, gamma={s.gamma}{extra}, len={len(self)}{where})")

    def add(self, obs, next_obs, action, reward, terminated, truncated, env_ids=None, valid=None):
        """Store one transition per row (rows with ``valid=False`` are skipped).

        ``next_obs`` must be ``obs`` shifted by one frame (checked on valid rows);
        ``env_ids`` must be distinct and in range on every row. A truncated step is stored
        with its ``terminated`` flag (False), so targets bootstrap from its real final
        ``next_obs``; with ``n_step > 1`` it also ends the n-step window.
        """
        self._store(self._ring.add, obs, next_obs, action, reward, terminated, truncated, env_ids, valid)

    def add_next_frames(self, next_frame, action, reward, terminated, truncated, env_ids):
        """``add`` for rows whose ``obs`` is their env's newest stored stack (the ``next_obs``
        of its latest transition, with no reset row since), given only the newest frame of each
        ``next_obs``: ``next_frame (n, *frame)``, a stack's last plane (the whole obs without
        stacking). Nothing else of the stacks is copied or compared, so a stream that already
        has each new frame apart (actors, recorded streams) stores it at the cost of one frame
        copy. The caller vouches that each row continues: after a reset row (``valid=False``)
        the env's next transition must go through ``add``, which sees the new stack. An env
        with no stack stored at all is refused and nothing is stored.
        """
        self._store(self._ring.add_next_frames, next_frame, action, reward, terminated, truncated, env_ids)

    def _store(self, ring_add, *args) -> None:
        """Run one of the ring's adds under the lock, then refresh the parts that keep state
        about the rings (priorities, device frames) for the envs it wrote."""
        with self._lock:
            if self._refresh:
                np.copyto(self._before, self._ring.count)
            env_ids = ring_add(*args)
            for refresh in self._refresh:
                refresh(self._before, env_ids)

    def make_batch(self, batch_size: int, *, window: bool = False):
        """Arrays (or device tensors) to pass as ``out=`` to ``sample``/``gather``, reused in turn.

        ``window=True`` (stacked frames only) stores each transition's ``k + 1`` frames once
        in ``frames``; ``obs`` and ``next_obs`` are views of it (see ``fastdqn.replay.batch``).
        """
        return self._frames.make_batch(check_int("batch_size", batch_size, error=ReplayError),
                                       check_flag("window", window, error=ReplayError))

    def draw(self, batch_size: int, out=None, *, beta: float = 1.0):
        """Draw ``batch_size`` transitions into ``out.index`` (and ``out.weight``); ``fill``
        copies them. Split from ``sample``, the draw (microseconds) can happen where the buffer
        is still, and the copy in another thread beside ``add``. Uniform draws are with
        replacement; prioritized ones are stratified, weighted ``(p_i / min_j p_j) ** -beta``."""
        # A plain positive int skips the general check (this runs once per update).
        B = batch_size if type(batch_size) is int and batch_size > 0 else check_int(
            "batch_size", batch_size, error=ReplayError)
        with self._lock:
            stored = self._ring.len
            if B > stored:
                if stored == 0:
                    raise ReplayStateError("sample: the buffer is empty; add transitions before sampling")
                raise ReplayError(f"batch_size: expected at most len(buffer) = {stored}, got {B}; "
                                  f"add more transitions first")
            host, views, handle = self._frames.target(out, B)
            if self._slots.shape[0] != B:
                self._size_scratch(B)
            self._sampler.draw(self._slots, host, self._all_rows, beta)
            shown = host if handle is None else handle[0].batch
            if shown is not host:
                np.copyto(shown.index, host.index)
            self._drawn = (shown, host, views, handle)
        return shown

    def fill(self, out):
        """Copy the transitions drawn into ``out`` by the latest ``draw``; rows that an
        ``add`` running meanwhile pushed out of the buffer are drawn again and copied."""
        if self._drawn is None or self._drawn[0] is not out:
            raise ReplayError("out: expected the batch returned by the latest draw; call draw first")
        _, host, views, handle = self._drawn
        self._drawn = None
        spec, ring = self._spec, self._ring
        rows = self._all_rows
        self._copy(host, views, rows, self._sampler.snapshot)
        with self._lock:
            turn = 0
            while True:
                spare = self._spare[turn % 2]
                n = kr.stale_rows(ring.count, spec.keep, spec.slots, self._slots, self._oldest, rows, spare)
                if n == 0:
                    break
                rows = spare[:n]
                self._sampler.redraw(rows, self._slots, host, self._redraw)
                self._copy(host, views, rows, self._sampler.snapshot)
                turn += 1
            self._one_step_discount(host)
            return self._frames.finish(host, handle)

    def sample(self, batch_size: int, out=None, *, beta: float = 1.0):
        """Draw ``batch_size`` transitions and copy them (``draw`` then ``fill``)."""
        return self.fill(self.draw(batch_size, out, beta=beta))

    def gather(self, index, out=None):
        """The transitions with transition ids ``index`` (from a batch's ``index``); with
        prioritized replay each with its current weight at ``beta=1``."""
        idx = _index_array(index)
        B = idx.shape[0]
        with self._lock:
            if self._slots.shape[0] != B:
                self._size_scratch(B)
            self._ring.slots_of(idx, self._slots)
            host, views, handle = self._frames.target(out, B)
            self._copy(host, views, self._all_rows, self._ring.count)
            self._one_step_discount(host)
            self._sampler.gathered(self._slots, host)
            if host.index is not idx:
                host.index[:] = idx
            return self._frames.finish(host, handle)

    def _copy(self, out, views: tuple, rows: np.ndarray, count: np.ndarray) -> None:
        """Copy the transitions at ``self._slots[rows]`` into those rows of ``out`` (``count``:
        the counts they were drawn against)."""
        stack, next_ = views
        a, spec = self._ring.arrays, self._spec
        source = self._frames.source
        if spec.n_step > 1:
            kn.copy_rows_n(source, a["action"], a["reward"], a["terminated"], a["slot_flags"], count,
                           self._slots, rows, spec.n_step, spec.gamma, stack, next_, out.action,
                           out.reward, out.terminated, out.discount, self._oldest)
            return
        kr.copy_rows(source, a["action"], a["reward"], a["terminated"], a["slot_flags"], count,
                     self._slots, rows, spec.frame_stack, stack, next_, out.action, out.reward,
                     out.terminated, self._oldest)

    def _one_step_discount(self, out) -> None:
        # n-step copies write the discount themselves.
        if self._spec.n_step == 1:
            kn.fill_discount(out.terminated, self._spec.gamma, out.discount)

    def update_priorities(self, index, priorities) -> int:
        """Set p_i = (priorities + eps) ** alpha for the transition ids ``index``.

        ``priorities`` are non-negative finite numbers (e.g. ``|td_error|``), one per id;
        where an id repeats, the later one wins. Ids overwritten since they were sampled are
        skipped. Bad input raises and changes nothing. Returns how many were written.
        A uniform buffer refuses the call.
        """
        idx = _index_array(index)
        sampler = self._prioritized_only("update_priorities")
        with self._lock:
            return sampler.update_priorities(idx, priorities)

    def latest_ids(self, env_ids) -> np.ndarray:
        """Transition ids of the transition each env of ``env_ids`` stored last (e.g. to set its
        priority right after the ``add``); meaningful for envs whose last row was valid."""
        ids = _index_array(env_ids)
        E = self._spec.num_envs
        if ids.size and (ids.min() < 0 or ids.max() >= E):
            raise ReplayError(f"env_ids: expected ids in [0, {E}), got {ids.min()}..{ids.max()}")
        with self._lock:
            return (self._ring.count[ids] - 2) * E + ids

    def transition_ids(self, slot_ids) -> np.ndarray:
        """Transition ids of slot ids ``env * slots_per_env + slot`` (what uniform batches'
        ``index`` held in files and checkpoints before transition ids)."""
        slots = _index_array(slot_ids)
        if slots.size and (slots.min() < 0 or slots.max() >= self._spec.num_envs * self._spec.slots):
            raise ReplayError(f"slot_ids: expected ids in [0, {self._spec.num_envs * self._spec.slots}), "
                              f"got {slots.min()}..{slots.max()}")
        out = np.empty_like(slots)
        kr.transition_ids(self._ring.count, self._spec.slots, slots, np.arange(slots.shape[0]), out)
        return out

    def save(self, path, *, tag: dict | None = None) -> None:
        """Write the buffer to ``path`` atomically (temp file in the same folder, then rename).

        ``tag``: a JSON-able dict stored in the header (``fastdqn.replay.file.read_tag`` reads
        it back), e.g. what ties the file to the checkpoint saved with it."""
        if tag is not None and not isinstance(tag, dict):
            raise ReplayError(f"tag: expected None or a dict, got {type(tag).__name__}")
        with self._lock:
            header, arrays = self.file_parts()
            if tag is not None:
                header["tag"] = tag
            rf.write(path, header, arrays)

    def file_parts(self) -> tuple[dict, list]:
        """The file's header and its arrays in file order (NumPy arrays, or objects whose
        ``parts()`` yield host chunks): what ``save`` writes. Call it where nothing adds."""
        s = self._spec
        arrays = [self._frames.saved_frames()] + [a for n, a in self._ring.arrays.items() if n != "frames"]
        arrays += list(self._sampler.saved_arrays().values())
        options = {"n_step": s.n_step, "gamma": s.gamma}
        if self.prioritized:
            options.update(alpha=self.alpha, eps=self.eps)
        header = {
            "version": rf.VERSION, "capacity": s.capacity, "obs_shape": list(s.obs_shape),
            "num_envs": s.num_envs, "obs_dtype": s.obs_dtype.str, "frame_stack": s.frame_stack,
            "slots_per_env": s.slots, "len": len(self), "rng": self._rng.bit_generator.state,
            "arrays": rf.file_layout(s, self._sampler.saved_layout(s.num_envs, s.slots)),
            "kind": rf.KINDS[self.prioritized], "options": options,
        }
        return header, arrays

    @classmethod
    def load(cls, path, **build) -> "ReplayBuffer":
        """Read a buffer written by ``save`` (any variant); sampling continues as it would have.

        ``build``: keywords that are not part of the file (``device``, ``headroom``): the
        same file loads with the frames on the host or on a device.
        """
        path = os.fspath(path)
        try:
            f = open(path, "rb", buffering=0)
        except OSError as exc:
            raise CheckpointError(f"path: cannot open replay buffer file {path!r}: {exc}") from exc
        with f:
            size = os.fstat(f.fileno()).st_size
            header, start = rf.read_header(f, path, size)
            args = rf.header_args(header, path)
            prioritized = args.pop("prioritized")
            if cls._PRIORITIZED is not None and prioritized != cls._PRIORITIZED:
                raise CheckpointError(f"path: {path!r} holds a {rf.KINDS[prioritized]!r}, not a "
                                      f"{rf.KINDS[cls._PRIORITIZED]}; load it with ReplayBuffer.load")
            try:
                spec = ReplaySpec(*(args[k] for k in ("capacity", "obs_shape", "num_envs", "obs_dtype",
                                                      "frame_stack", "n_step", "gamma") if k in args))
                if prioritized:
                    check_options(args.get("alpha", 0.6), args.get("eps", 1e-6))
                sampler_type = PrioritizedSampler if prioritized else UniformSampler
                rf.check_size(header, spec, sampler_type.saved_layout(spec.num_envs, spec.slots), start, size,
                              path)
            except ReplayError as exc:
                raise CheckpointError(f"path: {path!r} has a corrupt header: {exc}") from None
            if cls._PRIORITIZED is None:
                build["prioritized"] = prioritized
            # The file's own arguments are checked: a refusal now is about ``build`` (e.g. a
            # device this machine lacks) and says so itself.
            buf = cls(**args, **build)
            arrays = [buf._frames.saved_frames()] + [a for n, a in buf._ring.arrays.items() if n != "frames"]
            rf.read_arrays(f, arrays + list(buf._sampler.saved_arrays().values()), path)
        buf._rng.bit_generator.state = header["rng"]
        buf._ring.check_loaded(path)
        buf._frames.after_load()
        length = buf._ring.recount()
        buf._sampler.check_loaded(path)
        if length != header["len"]:
            raise CheckpointError(f"path: {path!r} is corrupt: header says {header['len']} "
                                  f"transitions, the data holds {length}")
        return buf


def _index_array(index) -> np.ndarray:
    idx = np.asarray(index)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise ReplayError(f"index: expected a 1-D integer array, got {idx.dtype} {idx.shape}")
    return np.ascontiguousarray(idx, dtype=np.int64)
