"""Numba kernels of the frame-ring replay buffer (``fastdqn.ReplayBuffer``).

Storage, one ring per env (``E`` envs, ``L`` slots each, ``F`` bytes per frame):

- ``frames (E, L, F) uint8``: one frame per slot, written once.
- ``action (E, L) int32``, ``reward (E, L) float32``, ``terminated (E, L) bool``: the
  transition whose obs has its newest frame in that slot.
- ``info (E, L) uint8``: bit 7 (``HAS_TRANSITION``) says a transition starts in the slot;
  bit 6 (``WINDOW_END``) says an n-step window ends at it (``kernels.nstep``); bits 0-5
  are its *depth*, the number of real earlier frames of the same stack (0..k-1, so
  ``k <= 64``). Frames further back than the depth are the oldest real one repeated,
  which is exactly how EnvPool pads a reset stack.
- ``count (E,) int64``: slots written so far per env (absolute slot ``a`` lives at
  ``a % L``), ``pending (E,) bool``: the newest slot is the next frame of the latest
  transition, so the env's next obs may continue it, and ``nvalid (E,) int64``.

A transition at absolute slot ``a`` with depth ``d`` reads slots ``a - d .. a + 1``; it
can be sampled while ``a - d >= count - keep``, where ``keep = L - (k + 1)``. The ``k + 1``
guard slots behind the sampleable ones (the most one add writes per env) are what lets
one thread sample while another adds: ``copy_rows`` notes each row's oldest absolute slot,
and ``stale_rows``, run after the copy, lists the rows that are no longer sampleable. A
row that still is was never touched: adds that finished wrote below ``count``, and one
still running writes below ``count + k + 1``, which reaches only the guard slots. An
n-step window (``kernels.nstep``) reads only slots newer than its stack's oldest frame
and older than ``count``, so the same check covers all of it.

The wrappers take arrays already checked by ``fastdqn.replay.buffer`` (dtypes, shapes,
contiguity) and return a status; they never allocate.
"""

from __future__ import annotations

import numpy as np
from numba import njit

HAS_TRANSITION = np.uint8(0x80)
WINDOW_END = np.uint8(0x40)
DEPTH_MASK = np.uint8(0x3F)
MAX_FRAME_STACK = 64

# Status codes of add_rows (err[0]); err[1] is the offending row.
OK = 0
ENV_ID_RANGE = 1
ENV_ID_REPEATED = 2
ACTION_RANGE = 3
NEXT_OBS_NOT_SHIFTED = 4
REWARD_NOT_FINITE = 5
NO_OPEN_STACK = 6

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


@njit(nogil=True, cache=True, inline="always")
def _frames_equal(a, b):
    # OR of XORs without early exit vectorises; 8-byte words halve the work again.
    n8 = a.shape[0] // 8 * 8
    wa = a[:n8].view(np.uint64)
    wb = b[:n8].view(np.uint64)
    acc = np.uint64(0)
    for i in range(wa.shape[0]):
        acc |= wa[i] ^ wb[i]
    for i in range(n8, a.shape[0]):
        acc |= np.uint64(a[i] ^ b[i])
    return acc == 0


@njit(nogil=True, cache=True, inline="always")
def _copy_frame(dst, src):
    # An explicit loop: Numba's slice assignment runs about 5x slower than this.
    for i in range(src.shape[0]):
        dst[i] = src[i]


@njit(nogil=True, cache=True, inline="always")
def _write_slot(frames, info, flagged, e, a, L, frame, depth):
    s = a % L
    if info[e, s] & HAS_TRANSITION:
        flagged[e] -= 1
    _copy_frame(frames[e, a % frames.shape[1]], frame)
    info[e, s] = np.uint8(depth)


@njit(nogil=True, cache=True, inline="always")
def _store(frames, action_s, reward_s, term_s, info, count, pending, flagged, nvalid,
           e, c, t, d, k, action, reward, terminated, next_frame, keep):
    """The transition whose obs ends at absolute slot ``t`` (depth ``d``), and its next
    frame written at slot ``c`` (= ``t + 1``); then env ``e``'s tallies."""
    L = info.shape[1]
    s = t % L
    action_s[e, s] = action
    reward_s[e, s] = reward
    term_s[e, s] = terminated
    info[e, s] = HAS_TRANSITION | np.uint8(d)
    flagged[e] += 1
    _write_slot(frames, info, flagged, e, c, L, next_frame, min(d + 1, k - 1))
    c += 1
    count[e] = c
    pending[e] = True
    # Transitions still stored in the guard slots, and those among the oldest k-1 kept
    # slots whose stack reaches into the guard, are no longer sampleable.
    lost = 0
    lo = max(np.int64(0), c - keep)
    for a in range(max(np.int64(0), c - L), min(lo + k - 1, c)):
        f = info[e, a % L]
        if (f & HAS_TRANSITION) and a - np.int64(f & DEPTH_MASK) < lo:
            lost += 1
    nvalid[e] = flagged[e] - lost


@njit(nogil=True, cache=True, inline="always")
def _total(nvalid):
    total = 0
    for e in range(nvalid.shape[0]):
        total += nvalid[e]
    return total


@njit(nogil=True, cache=True, inline="always")
def _check_row(e, E, seen, reward, action, err, i):
    """Status of row ``i``'s env id, reward and action (``seen`` marks the ids met so far)."""
    if e < 0 or e >= E:
        err[0] = ENV_ID_RANGE
    elif seen[e]:
        err[0] = ENV_ID_REPEATED
    elif not np.isfinite(reward):
        err[0] = REWARD_NOT_FINITE
    elif action < _INT32_MIN or action > _INT32_MAX:
        err[0] = ACTION_RANGE
    else:
        seen[e] = True
        return True
    err[1] = i
    return False


@njit(nogil=True, cache=True, inline="always")
def _unsee(env_ids, seen):
    for i in range(env_ids.shape[0]):
        if env_ids[i] >= 0 and env_ids[i] < seen.shape[0]:
            seen[env_ids[i]] = False


@njit(nogil=True, cache=True)
def _add_rows(frames, action_s, reward_s, term_s, info, count, pending, flagged, nvalid,
              obs, next_obs, action, reward, terminated, env_ids, valid, seen, err, keep):
    E, L = info.shape
    R = frames.shape[1]
    n, k, _ = obs.shape
    err[0] = OK
    err[1] = -1
    # Validate every row before writing anything, so a failed add changes nothing.
    for i in range(n):
        e = env_ids[i]
        if e < 0 or e >= E:
            err[0] = ENV_ID_RANGE
            err[1] = i
            break
        if seen[e]:
            err[0] = ENV_ID_REPEATED
            err[1] = i
            break
        seen[e] = True
        if not np.isfinite(reward[i]):  # on every row: an invalid row's reward is still refused
            err[0] = REWARD_NOT_FINITE
            err[1] = i
            break
        if not valid[i]:
            continue
        if action[i] < _INT32_MIN or action[i] > _INT32_MAX:
            err[0] = ACTION_RANGE
            err[1] = i
            break
        for j in range(k - 1):
            if not _frames_equal(next_obs[i, j], obs[i, j + 1]):
                err[0] = NEXT_OBS_NOT_SHIFTED
                err[1] = i
                break
        if err[0] != OK:
            break
    _unsee(env_ids, seen)
    if err[0] != OK:
        return -1

    for i in range(n):
        if not valid[i]:
            continue
        e = env_ids[i]
        c = count[e]
        cont = False
        dp = np.int64(0)
        if pending[e]:
            dp = np.int64(info[e, (c - 1) % L] & DEPTH_MASK)
            cont = True
            for j in range(k):
                back = min(k - 1 - j, dp)
                if not _frames_equal(frames[e, (c - 1 - back) % R], obs[i, j]):
                    cont = False
                    break
        if cont:
            # The pending slot already holds obs's newest frame and its depth.
            t = c - 1
            d = dp
        else:
            # New segment: obs[0..m] are equal, so obs[m..k-1] rebuild the stack exactly.
            m = 0
            while m < k - 1 and _frames_equal(obs[i, m + 1], obs[i, 0]):
                m += 1
            d = k - 1 - m
            for j in range(m, k):
                _write_slot(frames, info, flagged, e, c, L, obs[i, j], j - m)
                c += 1
            t = c - 1
        _store(frames, action_s, reward_s, term_s, info, count, pending, flagged, nvalid,
               e, c, t, d, k, action[i], reward[i], terminated[i], next_obs[i, k - 1], keep)
    return _total(nvalid)


def add_rows(frames, action_s, reward_s, term_s, info, count, pending, flagged, nvalid,
             obs, next_obs, action, reward, terminated, env_ids, valid, seen, err, keep: int) -> int:
    """Append one row per env; returns the number of valid transitions, or -1 with ``err`` set.

    ``obs``/``next_obs`` are ``(n, k, F) uint8`` byte views, ``action`` int64,
    ``reward`` float32, ``terminated``/``valid`` bool, ``env_ids`` int64 (all ``(n,)``);
    ``seen`` is an all-False ``(E,) bool`` scratch array (left all-False), ``err`` an
    ``(2,) int64`` array receiving (status, row); ``keep`` the sampleable slots per env.

    ``frames`` may hold fewer slots per env (``R``) than the rings (``L = info.shape[1]``):
    absolute slot ``a`` then keeps its frame at ``frames[e, a % R]``. With ``R >= k + 1`` it
    still holds every frame the continuity check reads (the newest ``k``) and every frame
    one add writes (at most ``k + 1``), which is all a device-resident buffer keeps on the host.
    """
    return _add_rows(frames, action_s, reward_s, term_s, info, count, pending, flagged, nvalid,
                     obs, next_obs, action, reward, terminated, env_ids, valid, seen, err, keep)


@njit(nogil=True, cache=True)
def _append_rows(frames, action_s, reward_s, term_s, info, count, pending, flagged, nvalid,
                 next_frame, action, reward, terminated, env_ids, seen, err, keep, k):
    E = info.shape[0]
    n = next_frame.shape[0]
    err[0] = OK
    err[1] = -1
    for i in range(n):  # validate every row before writing anything
        if not _check_row(env_ids[i], E, seen, reward[i], action[i], err, i):
            break
        if not pending[env_ids[i]]:
            err[0] = NO_OPEN_STACK
            err[1] = i
            break
    _unsee(env_ids, seen)
    if err[0] != OK:
        return -1
    L = info.shape[1]
    for i in range(n):
        e = env_ids[i]
        c = count[e]
        # The pending slot holds the newest frame of the env's stack (the obs) and its depth.
        d = np.int64(info[e, (c - 1) % L] & DEPTH_MASK)
        _store(frames, action_s, reward_s, term_s, info, count, pending, flagged, nvalid,
               e, c, c - 1, d, k, action[i], reward[i], terminated[i], next_frame[i], keep)
    return _total(nvalid)


def append_rows(frames, action_s, reward_s, term_s, info, count, pending, flagged, nvalid,
                next_frame, action, reward, terminated, env_ids, seen, err, keep: int, k: int) -> int:
    """``add_rows`` for rows whose obs is their env's newest stored stack (the caller knows it
    is: ``pending`` only says the env has one), given only ``next_frame (n, F) uint8``, the
    newest frame of each next_obs: nothing else of the stacks is read or compared. Returns
    the number of valid transitions, or -1 with ``err`` set (``NO_OPEN_STACK`` for an env
    with no stack stored); arguments as ``add_rows``."""
    return _append_rows(frames, action_s, reward_s, term_s, info, count, pending, flagged, nvalid,
                        next_frame, action, reward, terminated, env_ids, seen, err, keep, k)


@njit(nogil=True, cache=True, inline="always")
def _absolute(count, L, e, s):
    c = count[e]
    return c - 1 - ((c - 1 - s) % L)  # newest absolute slot stored at s


@njit(nogil=True, cache=True, inline="always")
def _is_valid(info, count, keep, e, s):
    f = info[e, s]
    if not (f & HAS_TRANSITION):
        return False
    L = info.shape[1]
    a = _absolute(count, L, e, s)
    # a < count - 1: the next frame is written (an add running beside a sampler flags the
    # transition before it writes that frame and advances count).
    return a < count[e] - 1 and a - np.int64(f & DEPTH_MASK) >= max(np.int64(0), count[e] - keep)


@njit(nogil=True, cache=True)
def _draw_indices(info, count, keep, uniform, out_index, out_ids, start):
    E, L = info.shape
    total = 0
    for e in range(E):
        total += min(count[e], keep)
    b = start
    B = out_index.shape[0]
    for u in uniform:
        if b == B:
            break
        x = min(np.int64(u * total), total - 1)
        # Uniform over every kept slot, then keep only slots holding a valid transition.
        e = 0
        while x >= min(count[e], keep):
            x -= min(count[e], keep)
            e += 1
        a = count[e] - min(count[e], keep) + x  # the absolute slot
        s = a % L
        if _is_valid(info, count, keep, e, s):
            out_index[b] = e * L + s
            out_ids[b] = a * E + e
            b += 1
    return b


def draw_indices(info, count, keep: int, uniform, out_index, out_ids, start: int) -> int:
    """Fill ``out_index[start:]`` (slot ids) and ``out_ids[start:]`` (their transition ids,
    as ``transition_ids`` computes them) by rejection from ``uniform`` floats in [0, 1).

    Each float picks one of the newest ``keep`` slots of an env uniformly; slots without a valid transition are
    rejected, so accepted indices are uniform over valid transitions. Returns how many
    entries are filled.
    """
    return _draw_indices(info, count, keep, uniform, out_index, out_ids, start)


@njit(nogil=True, cache=True)
def _copy_rows(frames, action_s, reward_s, term_s, info, count, index, rows, k,
               out_stack, out_next, out_action, out_reward, out_term, oldest):
    L = frames.shape[1]
    window = out_stack.shape[1] == k + 1
    for r in range(rows.shape[0]):
        b = rows[r]
        g = index[b]
        e = g // L
        s = g % L
        d = np.int64(info[e, s] & DEPTH_MASK)
        oldest[b] = _absolute(count, L, e, s) - d
        for j in range(k):
            _copy_frame(out_stack[b, j], frames[e, (s - min(k - 1 - j, d)) % L])
        if window:
            _copy_frame(out_stack[b, k], frames[e, (s + 1) % L])
        else:
            # next_obs is obs shifted by one frame: reuse the frames just copied.
            for j in range(k - 1):
                _copy_frame(out_next[b, j], out_stack[b, j + 1])
            _copy_frame(out_next[b, k - 1], frames[e, (s + 1) % L])
        out_action[b] = action_s[e, s]
        out_reward[b] = reward_s[e, s]
        out_term[b] = term_s[e, s]


def copy_rows(frames, action_s, reward_s, term_s, info, count, index, rows, k: int,
              out_stack, out_next, out_action, out_reward, out_term, oldest) -> None:
    """Copy the transitions at ids ``index[rows]`` (``env * L + slot``) into rows ``rows``.

    ``out_stack`` is ``(B, k, F)`` (then ``out_next`` ``(B, k, F)`` receives next_obs) or a
    window ``(B, k + 1, F)`` holding obs and next_obs as ``[:k]`` and ``[1:]`` (then
    ``out_next`` is not touched). ``count`` is the snapshot the ids were drawn against;
    ``oldest[b]`` receives the absolute slot of row b's oldest frame, for ``stale_rows``.
    """
    _copy_rows(frames, action_s, reward_s, term_s, info, count, index, rows, k,
               out_stack, out_next, out_action, out_reward, out_term, oldest)


@njit(nogil=True, cache=True)
def _transition_ids(count, L, slots, rows, out_ids):
    E = count.shape[0]
    for r in range(rows.shape[0]):
        b = rows[r]
        e = slots[b] // L
        out_ids[b] = _absolute(count, L, e, slots[b] % L) * E + e


def transition_ids(count, L: int, slots, rows, out_ids) -> None:
    """Transition ids ``a * E + e`` (``a``: the absolute slot under ``count``) of the slot ids
    ``slots[rows]`` into ``out_ids[rows]``: ids that never repeat, unlike slot ids."""
    _transition_ids(count, L, slots, rows, out_ids)


@njit(nogil=True, cache=True)
def _stale_rows(count, keep, L, index, oldest, rows, out_rows):
    n = 0
    for r in range(rows.shape[0]):
        b = rows[r]
        if oldest[b] < count[index[b] // L] - keep:
            out_rows[n] = b
            n += 1
    return n


def stale_rows(count, keep: int, L: int, index, oldest, rows, out_rows) -> int:
    """Those of ``rows`` no longer sampleable under ``count`` (read after their copy).

    Writes their positions to ``out_rows`` and returns how many there are.
    """
    return _stale_rows(count, keep, L, index, oldest, rows, out_rows)
