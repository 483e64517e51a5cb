"""SB3's storage arrays and per-step rewards, read from fastdqn's frame ring.

SB3's ``ReplayBuffer`` keeps ``observations``, ``next_observations``, ``actions``, ``rewards``,
``dones`` and ``timeouts`` as ``(buffer_size, n_envs, ...)`` arrays indexed by the row ``pos``
an ``add`` wrote; SB3's own tests and user code read them. ``SB3ReplayBuffer`` stores each
frame once instead, so it rebuilds them on each read from the ring (its public
``file_parts``) and one byte per row of ``row_flags``: what SB3 recorded as ``dones`` and
``timeouts``, and whether the row became a stored transition. Each read allocates SB3's full
array (for an Atari buffer of 1M transitions, 28 GB of observations): they are for tests and
inspection, not for a training loop. ``window_returns`` gives n-step returns of normalised
one-step rewards, which ``VecNormalize`` needs (it normalises each step, then SB3 sums).
"""

from __future__ import annotations

import numpy as np

from fastdqn.kernels.replay import DEPTH_MASK, HAS_TRANSITION, WINDOW_END

DONE, TIMEOUT, STORED = np.uint8(1), np.uint8(2), np.uint8(4)


def row_flags(done: np.ndarray, timeout: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """One uint8 per env: SB3's ``dones`` and ``timeouts`` for the row, and whether it was stored."""
    return (done * DONE) | (timeout * TIMEOUT) | (stored * STORED)


def ring_arrays(buffer) -> tuple[dict, dict]:
    """The buffer's header and its arrays by file name (live views, no copy)."""
    header, arrays = buffer.file_parts()
    return header, {name: arr for (name, _, _), arr in zip(header["arrays"], arrays)}


def held_transitions(ring: tuple, flags: np.ndarray, pos: int, full: bool) -> tuple:
    """``(rows, envs, slots, depths)`` of every transition the ring still holds, at the SB3 row
    its ``add`` wrote: per env, the newest held transitions pair with the newest stored rows.

    A ring slot holds a transition when its ``HAS_TRANSITION`` bit is set and its oldest frame
    (slot minus depth) is among the ``keep`` newest slots (``kernels/replay.py``)."""
    header, named = ring
    info, count = named["info"], named["count"]
    L, k = header["slots_per_env"], header["frame_stack"]
    keep = L - (k + 1)
    rows_per_env = flags.shape[0]
    newest_rows = (pos - 1 - np.arange(rows_per_env if full else pos)) % rows_per_env
    out = [], [], [], []
    for e in range(flags.shape[1]):
        c = int(count[e])
        slots = np.arange(max(c - L, 0), c)
        f = info[e, slots % L]
        depth = (f & DEPTH_MASK).astype(np.int64)
        held = ((f & HAS_TRANSITION) != 0) & (slots - depth >= c - keep)
        slots, depth = slots[held][::-1], depth[held][::-1]  # newest first
        rows = newest_rows[(flags[newest_rows, e] & STORED) != 0]
        m = min(len(rows), len(slots))
        for part, value in zip(out, (rows[:m], np.full(m, e), slots[:m], depth[:m])):
            part.append(value)
    return tuple(np.concatenate(p).astype(np.int64) for p in out)


def frames_at(ring: tuple, envs, slots, depths, shift: int, obs_shape, dtype) -> np.ndarray:
    """The observations of transitions at ``slots`` (``shift=0``) or their next observations
    (``shift=1``): a stack of ``k`` frames reads slots ``a - k + 1 + shift .. a + shift``,
    never further back than the stack's first frame ``a - depth``."""
    header, named = ring
    frames = named["frames"]  # (E, L, frame bytes)
    L, k = frames.shape[1], header["frame_stack"]
    at = np.maximum(slots[:, None] + np.arange(shift - k + 1, shift + 1), (slots - depths)[:, None]) % L
    raw = frames[envs[:, None], at]  # (m, k, frame bytes)
    return raw.view(dtype).reshape((len(slots), *obs_shape))


def per_slot(ring: tuple, name: str, envs, slots) -> np.ndarray:
    """A per-slot array of the ring (``action``, ``reward``) at the transitions' slots."""
    arr = ring[1][name]
    return arr[envs, slots % arr.shape[1]]


def window_returns(ring: tuple, index: np.ndarray, n: int, gamma: float, normalize) -> np.ndarray:
    """n-step returns ``(B,)`` float32 of the transition ids ``index`` (``a * E + e``, as
    batches hold them) with each one-step reward passed through ``normalize`` first, summed
    as SB3's ``NStepReplayBuffer`` sums them under ``VecNormalize`` (float32). A window follows
    ``kernels/nstep.py``: up to ``n`` steps, ending at a termination, a ``WINDOW_END`` flag or
    a slot that starts no transition."""
    header, named = ring
    info, term, reward = named["info"], named["terminated"], named["reward"]
    E, L = info.shape
    env, first = index % E, index // E
    slots = (first[:, None] + np.arange(n)) % L  # (B, n)
    ends = term[env[:, None], slots] | ((info[env[:, None], slots] & WINDOW_END) != 0)
    ends[:, :-1] |= (info[env[:, None], slots[:, 1:]] & HAS_TRANSITION) == 0  # the next step started anew
    ends[:, -1] = True
    last = ends.argmax(axis=1)  # the window's last step
    inside = np.arange(n)[None, :] <= last[:, None]
    steps = normalize(reward[env[:, None], slots])
    discounts = gamma ** np.arange(n, dtype=np.float32)[None, :]
    return (steps * discounts * inside).sum(axis=1).astype(np.float32)
