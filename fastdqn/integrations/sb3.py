"""``SB3ReplayBuffer``: fastdqn's frame-ring replay buffer behind Stable-Baselines3's API.

SB3's off-policy algorithms take it as ``replay_buffer_class=SB3ReplayBuffer``, a CleanRL script
by its import line: the constructor, ``add``, ``sample``, ``size``, ``reset``, ``pos``/``full``,
pickling and SB3's storage arrays (rebuilt when read) behave as SB3's ``ReplayBuffer``. A
``(k, H, W)`` uint8 stack is stored one frame per step and rebuilt bit for bit at sample time.
As in SB3, ``done`` ends bootstrapping unless ``infos[i]["TimeLimit.truncated"]`` says
otherwise. A terminated row whose ``next_obs`` is the auto-reset observation (CleanRL) is
stored with ``obs`` shifted by one frame instead (its target never reads it); a row that is
not done and maps a final observation to a reset one (Gymnasium >= 1.0 vector envs) is not a
transition and is skipped (``skipped_rows``).
Needs stable-baselines3 (``pip install "fastdqn[sb3]"``); README, "Using the buffer in
Stable-Baselines3 or CleanRL".
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer as _SB3ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from fastdqn.errors import ReplayError
from fastdqn.integrations import sb3_views as views
from fastdqn.integrations.replay_pickle import Streamed
from fastdqn.replay.batch import allocate_batch
from fastdqn.replay.buffer import ReplayBuffer
from fastdqn.util.transfer import staged_transfer

__all__ = ["SB3ReplayBuffer", "detect_frame_stack"]


def detect_frame_stack(observation_space: spaces.Space) -> int:
    """The ``frame_stack`` that a ``(k, H, W)`` uint8 stack of single-channel frames (``k < min(H, W)``)
    would take, else 1: a hint only (``SB3ReplayBuffer`` stacks only when ``frame_stack`` is
    passed, since an image-like space need not hold frame stacks). ``k = 3`` is read as one RGB
    image (channel-first), not three stacked frames."""
    if not isinstance(observation_space, spaces.Box) or observation_space.dtype != np.uint8:
        return 1
    shape = observation_space.shape
    # Channel-first and fewer frames than pixels on a side: (84, 84, 4) is channel-last.
    if len(shape) == 3 and 2 <= shape[0] < min(shape[1:]) and shape[0] != 3:
        return shape[0]
    return 1


class SB3ReplayBuffer(_SB3ReplayBuffer):
    """Drop-in for SB3's ``ReplayBuffer`` with frames stored once and exact stacks.

    Extra keyword arguments (SB3: ``replay_buffer_kwargs=``): ``frame_stack`` (1: whole
    observations, as SB3 stores them; ``k``: a ``(k, H, W)`` stack stored one frame per step),
    ``n_steps`` and ``gamma`` (n-step returns, as SB3's ``NStepReplayBuffer``), ``seed`` (None:
    drawn from NumPy's global generator, which SB3 seeds), ``scratch_dir`` (for pickling, see
    ``fastdqn.integrations.replay_pickle``).
    ``optimize_memory_usage`` is accepted (CleanRL passes True, as may SB3's ``DQN``) and
    changes nothing: each frame is stored once already. A second ``learn()`` of an SB3
    algorithm built with it marks the last row done (``dones[pos] = True``); here the next
    ``add`` after the env's reset starts a new stack anyway, so that write lands in a copy.

    SB3's arrays (``observations``, ``next_observations``, ``actions``, ``rewards``,
    ``dones``, ``timeouts``) are read-only properties rebuilt from the ring on each read
    (``fastdqn.integrations.sb3_views``): equal to SB3's on every row the ring still holds;
    rows it no longer holds (a wrapped ring holds fewer: each episode start in its window
    takes extra slots) and rows skipped as resets read as zeros, except ``dones`` and ``timeouts``,
    which are kept for every row (one byte per row).
    """

    def __init__(self, buffer_size: int, observation_space: spaces.Space, action_space: spaces.Space,
                 device: torch.device | str = "auto", n_envs: int = 1, optimize_memory_usage: bool = False,
                 handle_timeout_termination: bool = True, *, frame_stack: int = 1,
                 n_steps: int = 1, gamma: float = 0.99, seed=None, scratch_dir: str | None = None):
        if not isinstance(observation_space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete,
                                              spaces.MultiBinary)):
            raise ReplayError(f"observation_space: expected a Box, Discrete, MultiDiscrete or MultiBinary "
                              f"space, got {type(observation_space).__name__}; use SB3's DictReplayBuffer "
                              f"for Dict observations")
        if frame_stack != 1 and not isinstance(observation_space, spaces.Box):
            raise ReplayError(f"frame_stack: expected 1 for a {type(observation_space).__name__} "
                              f"observation space, got {frame_stack}; frames are stacked on a Box's first axis")
        if not isinstance(action_space, spaces.Discrete):
            raise ReplayError(f"action_space: expected Discrete (DQN, QR-DQN), got "
                              f"{type(action_space).__name__}; the buffer stores one integer "
                              f"action per transition")
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.buffer_size = max(buffer_size // n_envs, 1)  # rows, as SB3 counts pos and size()
        self.optimize_memory_usage = optimize_memory_usage
        self.handle_timeout_termination = handle_timeout_termination
        self.frame_stack = frame_stack
        self.n_steps, self.gamma = n_steps, gamma
        self.scratch_dir = scratch_dir
        self.skipped_rows = 0
        self._row_flags = np.zeros((self.buffer_size, n_envs), np.uint8)  # sb3_views.row_flags
        if seed is None:
            seed = int(np.random.randint(2**31 - 1))
        self._seeds = np.random.SeedSequence(seed)
        self._buffer = None
        self._buffer = self._new_buffer()
        self._staging: dict = {}  # batch size -> StagedTransfer (on a GPU)

    def _new_buffer(self) -> ReplayBuffer:
        return ReplayBuffer(self.buffer_size * self.n_envs, self.obs_shape, self.n_envs,
                            obs_dtype=self.observation_space.dtype, frame_stack=self.frame_stack,
                            n_step=self.n_steps, gamma=self.gamma, seed=self._seeds.spawn(1)[0])

    @property
    def nbytes(self) -> int:
        """Bytes of storage held (frames and per-slot metadata)."""
        return self._buffer.nbytes + self._row_flags.nbytes

    def __len__(self) -> int:
        """Transitions stored, over all envs."""
        return len(self._buffer)

    def size(self) -> int:
        """Transitions stored per env (SB3's unit: rows of ``n_envs`` transitions)."""
        return len(self._buffer) // self.n_envs

    def reset(self) -> None:
        super().reset()
        self._buffer = None  # free the old storage before allocating the new one
        self._buffer = self._new_buffer()
        self._row_flags[:] = 0

    def add(self, obs, next_obs, action, reward, done, infos) -> None:
        n, dtype = self.n_envs, self.observation_space.dtype
        # As SB3 stores them: in the space's shape and dtype (Discrete observations are (1,)).
        obs = np.asarray(obs).reshape((n, *self.obs_shape)).astype(dtype, copy=False)
        next_obs = np.asarray(next_obs).reshape((n, *self.obs_shape)).astype(dtype, copy=False)
        action = np.asarray(action).reshape(n)
        reward = np.asarray(reward, dtype=np.float32).reshape(n)
        done = np.asarray(done).reshape(n).astype(bool)
        if self.handle_timeout_termination:  # what SB3 records as timeouts, done or not
            truncated = np.fromiter((bool(info.get("TimeLimit.truncated", False)) for info in infos), bool, n)
        else:
            truncated = np.zeros(n, bool)
        timeout = truncated & done
        terminated = done & ~timeout
        stored = np.ones(n, bool)
        try:
            self._buffer.add(obs, next_obs, action, reward, terminated, timeout)
        except ReplayError as exc:
            stored = self._add_mended(obs, next_obs, action, reward, terminated, timeout, exc)
        self._row_flags[self.pos] = views.row_flags(done, truncated, stored)
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0

    def _add_mended(self, obs, next_obs, action, reward, terminated, timeout, error) -> np.ndarray:
        """Rows whose ``next_obs`` does not continue ``obs``: mend terminal ones, skip resets;
        returns which rows were stored."""
        k, n = self.frame_stack, self.n_envs
        if k == 1:
            raise error
        continues = (next_obs[:, :-1] == obs[:, 1:]).reshape(n, -1).all(axis=1)
        if continues.all():
            raise error
        broken = ~continues
        bad = np.flatnonzero(broken & timeout)
        if bad.size:
            raise ReplayError(f"next_obs: row {bad[0]} is a time-limit truncation, so its target "
                              f"bootstraps from next_obs, but next_obs[{bad[0]}] does not continue "
                              f"obs[{bad[0]}]; pass the real final observation (SB3: "
                              f"infos[i]['terminal_observation'])") from error
        first = next_obs[:, 0].reshape(n, -1)
        starts = (first == next_obs[:, 1].reshape(n, -1)).all(axis=1) | ~first.any(axis=1)
        resets = broken & ~terminated
        bad = np.flatnonzero(resets & ~starts)
        if bad.size:
            raise ReplayError(f"next_obs: row {bad[0]} is not done, yet next_obs[{bad[0]}] neither "
                              f"continues obs[{bad[0]}] shifted by one frame nor starts a new stack; "
                              f"the observations do not look like stacks of {k} frames on the first "
                              f"axis: leave frame_stack out (SB3: replay_buffer_kwargs without frame_stack)"
                              ) from error
        ends = broken & terminated
        mended = next_obs.copy()
        mended[ends, :-1] = obs[ends, 1:]
        mended[ends, -1] = obs[ends, -1]
        self._buffer.add(obs, mended, action, reward, terminated, timeout, valid=~resets)
        self.skipped_rows += int(resets.sum())
        return ~resets

    def _host_batch(self, batch_size: int):
        """The ``ReplayBatch`` the kernels fill and the ``StagedTransfer`` that sends it: without a
        GPU new arrays every call (each sample a batch of its own, as in SB3) and None; for a GPU one
        pinned block per batch size, refilled once its asynchronous copy to the device has finished."""
        if self.device.type != "cuda":
            return self._buffer.make_batch(batch_size), None
        transfer = self._staging.get(batch_size)
        if transfer is None:
            shape, dtype = self._buffer.obs_shape, self._buffer.obs_dtype
            transfer = staged_transfer(lambda empty: allocate_batch(batch_size, shape, dtype, empty=empty),
                                       self.device, slots=1)
            self._staging[batch_size] = transfer
        transfer.ready(0)
        return transfer.host[0], transfer

    def _draw(self, batch_size: int, host) -> None:
        stored = len(self._buffer)
        if batch_size <= stored or stored == 0:
            self._buffer.sample(batch_size, out=host)
            return
        # SB3 draws with replacement even from fewer transitions than the batch: fill the
        # batch in parts of at most len(buffer) rows (contiguous views of the same arrays).
        for start in range(0, batch_size, stored):
            part = type(host)(*(arr[start:start + stored] for arr in host))
            self._buffer.sample(part.obs.shape[0], out=part)

    def sample(self, batch_size: int, env=None) -> ReplayBufferSamples:
        """``batch_size`` transitions drawn uniformly (with replacement), as SB3's tensors:
        observations, actions ``(B, 1)`` int64, next_observations, dones and rewards
        ``(B, 1)`` float32, on ``self.device``. The kernels write straight into the tensors'
        memory (no copy on the CPU). With ``n_steps > 1`` rewards are n-step returns and
        ``discounts`` ``(B, 1)`` is ``gamma**m`` for a window of ``m`` steps (0 where it
        terminated, which SB3's target multiplies by ``1 - dones`` = 0 anyway)."""
        host, transfer = self._host_batch(batch_size)
        self._draw(batch_size, host)
        if transfer is None:
            t = {name: torch.from_numpy(arr) for name, arr in host._asdict().items()}
        else:  # one copy of every field, into device memory of this sample's own
            t = transfer.send(0, fresh=True)._asdict()
        obs, next_obs, rewards = t["obs"], t["next_obs"], t["reward"].view(batch_size, 1)
        if env is not None:  # VecNormalize: SB3 normalises at sample time
            obs = torch.from_numpy(self._normalize_obs(host.obs, env))
            next_obs = torch.from_numpy(self._normalize_obs(host.next_obs, env))
            if self.n_steps == 1:
                rewards = self._normalize_reward(host.reward, env)
            else:  # SB3 normalises each step's reward, then sums the window
                rewards = views.window_returns(views.ring_arrays(self._buffer), host.index, self.n_steps,
                                               self.gamma, lambda r: self._normalize_reward(r, env))
            rewards = torch.from_numpy(rewards).view(batch_size, 1)
        fields = (obs, t["action"].view(batch_size, 1), next_obs,
                  t["terminated"].view(batch_size, 1), rewards)
        if self.n_steps > 1:
            fields += (t["discount"].view(batch_size, 1),)
        if self.device.type == "cpu":
            return ReplayBufferSamples(*fields[:3], fields[3].to(torch.float32), *fields[4:])
        out = ReplayBufferSamples(*(x.to(self.device, non_blocking=True) for x in fields))
        return out._replace(dones=out.dones.to(torch.float32))

    # -- pickling (SB3's save_replay_buffer / load_replay_buffer) -----------------------

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_buffer"] = Streamed(self._buffer, self.scratch_dir)
        state["_staging"] = {}
        if not self.full:  # the rows written so far, as for the ring
            state["_row_flags"] = self._row_flags[:self.pos]
        return state

    def __setstate__(self, state: dict) -> None:
        rows = state["buffer_size"] if state["full"] else state["pos"]
        # Pickles from before the row flags: every written row stored, dones unknown.
        flags = state.get("_row_flags", np.full((rows, state["n_envs"]), views.STORED, np.uint8))
        state["_row_flags"] = np.zeros((state["buffer_size"], state["n_envs"]), np.uint8)
        state["_row_flags"][:flags.shape[0]] = flags
        self.__dict__.update(state)

    def _sb3_array(self, field: str) -> np.ndarray:
        rows_shape = (self.buffer_size, self.n_envs)
        if field in ("dones", "timeouts"):
            bit = views.DONE if field == "dones" else views.TIMEOUT
            return ((self._row_flags & bit) != 0).astype(np.float32)
        ring = views.ring_arrays(self._buffer)
        rows, envs, slots, depths = views.held_transitions(ring, self._row_flags, self.pos, self.full)
        if field in ("observations", "next_observations"):
            dtype = self.observation_space.dtype
            out = np.zeros((*rows_shape, *self.obs_shape), dtype)
            out[rows, envs] = views.frames_at(ring, envs, slots, depths, int(field == "next_observations"),
                                              self.obs_shape, dtype)
        elif field == "actions":
            out = np.zeros((*rows_shape, self.action_dim), self._maybe_cast_dtype(self.action_space.dtype))
            out[rows, envs, 0] = views.per_slot(ring, "action", envs, slots)
        else:
            out = np.zeros(rows_shape, np.float32)
            out[rows, envs] = views.per_slot(ring, "reward", envs, slots)
        return out

    observations = property(lambda self: self._sb3_array("observations"), doc="SB3's ``observations``.")
    next_observations = property(lambda self: self._sb3_array("next_observations"),
                                 doc="SB3's ``next_observations``.")
    actions = property(lambda self: self._sb3_array("actions"), doc="SB3's ``actions``.")
    rewards = property(lambda self: self._sb3_array("rewards"), doc="SB3's ``rewards`` (one-step).")
    dones = property(lambda self: self._sb3_array("dones"), doc="SB3's ``dones``.")
    timeouts = property(lambda self: self._sb3_array("timeouts"), doc="SB3's ``timeouts``.")
