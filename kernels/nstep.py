"""Numba kernels for n-step returns over the frame rings of ``kernels.replay``.

A transition at absolute slot ``a`` of env ``e`` continues into the one at ``a + 1``
exactly when slot ``a + 1`` holds a transition: a step that continues the previous
``next_obs`` is stored in the slot of that next frame, any other step starts past it.
The window of ``a`` follows that chain for up to ``n`` steps and stops early at a
termination (discount 0) or at a slot flagged ``WINDOW_END`` (a truncation, or a row
of the env passed with ``valid=False``), bootstrapping there. A window that reaches the
env's newest slot before either is *open*: the env's next step may still extend it, so
it is not sampled yet. Later steps of a window are newer than its first, so they are
never overwritten before it, and a closed window reads only slots below ``count``: the
guard-slot re-check of ``kernels.replay`` (the stack's oldest frame) covers the window too.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fastdqn.kernels.replay import (DEPTH_MASK, HAS_TRANSITION, WINDOW_END, _absolute,
                                    _copy_frame, _is_valid)


@njit(nogil=True, cache=True, inline="always")
def _window(info, term_s, count, n, e, a):
    """(steps m in the window of absolute slot a, whether it is closed)."""
    L = info.shape[1]
    j = a
    m = 1
    while True:
        s = j % L
        if term_s[e, s] or (info[e, s] & WINDOW_END) or m == n:
            return m, True
        if j + 1 >= count[e] - 1:
            # j's next frame is the env's newest slot: its next step may continue it. Stop
            # before reading that slot's flags, which an add running beside a sampler sets.
            return m, False
        if not (info[e, (j + 1) % L] & HAS_TRANSITION):
            return m, True  # slot j + 1 holds only j's next frame: the next step started anew
        j += 1
        m += 1


@njit(nogil=True, cache=True, inline="always")
def _sampleable(info, term_s, count, keep, n, e, s):
    """A stored transition whose frames are all kept and whose window is closed."""
    if not _is_valid(info, count, keep, e, s):
        return False
    return _window(info, term_s, count, n, e, _absolute(count, info.shape[1], e, s))[1]


@njit(nogil=True, cache=True)
def _open_tail(info, term_s, count, keep, n, e):
    # Only the env's newest n-1 transitions can be open, and only while they chain to it.
    L = info.shape[1]
    c = count[e]
    lo = max(np.int64(0), c - keep)
    opened = 0
    a = c - 2
    for _ in range(n - 1):
        if a < lo:
            break
        f = info[e, a % L]
        if not (f & HAS_TRANSITION) or term_s[e, a % L] or (f & WINDOW_END):
            break
        if a - np.int64(f & DEPTH_MASK) >= lo:  # lost ones are already out of nvalid
            opened += 1
        a -= 1
    return opened


@njit(nogil=True, cache=True)
def _end_windows(info, term_s, count, open_, keep, n, env_ids, valid, truncated):
    L = info.shape[1]
    for i in range(env_ids.shape[0]):
        e = env_ids[i]
        c = count[e]
        # After any add the env's newest transition sits just before its newest slot.
        if c >= 2 and (truncated[i] or not valid[i]) and info[e, (c - 2) % L] & HAS_TRANSITION:
            info[e, (c - 2) % L] |= WINDOW_END
        open_[e] = _open_tail(info, term_s, count, keep, n, e)
    total = 0
    for e in range(open_.shape[0]):
        total += open_[e]
    return total


def end_windows(info, term_s, count, open_, keep: int, n: int, env_ids, valid, truncated) -> int:
    """After a successful ``add_rows``: flag where windows end, recount open ones.

    A truncated row ends its window (bootstrapping from its real final obs); a row passed
    with ``valid=False`` ends its env's latest window, since the step it skips is not
    stored. ``open_ (E,) int64`` receives each env's open (not yet sampleable)
    transitions (among the ``keep`` sampleable slots); returns their total.
    """
    return _end_windows(info, term_s, count, open_, keep, n, env_ids, valid, truncated)


@njit(nogil=True, cache=True)
def _count_open(info, term_s, count, open_, keep, n):
    total = 0
    for e in range(open_.shape[0]):
        open_[e] = _open_tail(info, term_s, count, keep, n, e)
        total += open_[e]
    return total


def count_open(info, term_s, count, open_, keep: int, n: int) -> int:
    """Recount every env's open transitions into ``open_`` (after loading); returns the total."""
    return _count_open(info, term_s, count, open_, keep, n)


@njit(nogil=True, cache=True)
def _keep_closed(info, term_s, count, n, index, ids, start, stop):
    L = info.shape[1]
    b = start
    for i in range(start, stop):
        g = index[i]
        if _window(info, term_s, count, n, g // L, _absolute(count, L, g // L, g % L))[1]:
            index[b] = g
            ids[b] = ids[i]
            b += 1
    return b


def keep_closed(info, term_s, count, n: int, index, ids, start: int, stop: int) -> int:
    """Compact ``index[start:stop]`` (valid transitions) and ``ids`` beside it to those with
    closed windows; returns the new stop."""
    return _keep_closed(info, term_s, count, n, index, ids, start, stop)


@njit(nogil=True, cache=True)
def _copy_rows_n(frames, action_s, reward_s, term_s, info, count, index, rows, n, gamma,
                 out_obs, out_next, out_action, out_reward, out_term, out_discount, oldest):
    L = frames.shape[1]
    k = out_obs.shape[1]
    for r in range(rows.shape[0]):
        b = rows[r]
        g = index[b]
        e = g // L
        s = g % L
        a = _absolute(count, L, e, s)
        m = _window(info, term_s, count, n, e, a)[0]
        d = np.int64(info[e, s] & DEPTH_MASK)
        oldest[b] = a - d
        for j in range(k):
            _copy_frame(out_obs[b, j], frames[e, (s - min(k - 1 - j, d)) % L])
        # next_obs is the stack m steps on: obs shifted by m, then the m new frames.
        for j in range(k):
            if j + m < k:
                _copy_frame(out_next[b, j], out_obs[b, j + m])
            else:
                _copy_frame(out_next[b, j], frames[e, (s + m - (k - 1 - j)) % L])
        ret = 0.0
        disc = 1.0
        for i in range(m):
            ret += disc * np.float64(reward_s[e, (s + i) % L])
            disc *= gamma
        last = (s + m - 1) % L
        out_action[b] = action_s[e, s]
        out_reward[b] = ret
        out_term[b] = term_s[e, last]
        out_discount[b] = 0.0 if term_s[e, last] else disc


def copy_rows_n(frames, action_s, reward_s, term_s, info, count, index, rows, n: int, gamma: float,
                out_obs, out_next, out_action, out_reward, out_term, out_discount, oldest) -> None:
    """Rebuild the n-step transitions at slot ids ``index[rows]`` into rows ``rows``.

    ``reward`` is the sum over the window of ``gamma**i * r_{t+i}`` (in float64, then
    float32), ``discount`` is ``gamma**m`` or 0 after a termination, ``next_obs`` the
    stack ``m`` steps on. ``count`` is the snapshot the ids were drawn against (each one a
    sampleable transition under it); ``oldest[b]`` receives the absolute slot of row b's
    oldest frame, for ``kernels.replay.stale_rows``.
    """
    _copy_rows_n(frames, action_s, reward_s, term_s, info, count, index, rows, n, gamma,
                 out_obs, out_next, out_action, out_reward, out_term, out_discount, oldest)


@njit(nogil=True, cache=True)
def _fill_discount(terminated, gamma, out_discount):
    for b in range(terminated.shape[0]):
        out_discount[b] = 0.0 if terminated[b] else gamma


def fill_discount(terminated, gamma: float, out_discount) -> None:
    """One-step discounts: ``gamma``, or 0 where the transition terminated."""
    _fill_discount(terminated, gamma, out_discount)
