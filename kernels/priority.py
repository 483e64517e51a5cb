"""Numba kernels of prioritized replay over the frame rings (``fastdqn.PrioritizedReplayBuffer``).

One leaf of the ``kernels.sumtree`` trees per global slot id ``e * L + s``. A leaf is
positive exactly while its slot holds a sampleable transition (``kernels.nstep``); every
other leaf is 0, so draws need no rejection. Ids handed to users are *transition ids*
``a * E + e`` (``a`` the absolute slot): they never repeat, so a priority update for a
transition that has since been overwritten is recognised and dropped.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fastdqn.kernels.nstep import _sampleable
from fastdqn.kernels.replay import _absolute
from fastdqn.kernels.sumtree import _draw, _propagate, _set_leaf

# Status codes of update (err[0]); err[1] is the offending position.
OK = 0
PRIORITY_VALUE = 1
PRIORITY_RANGE = 2
ID_RANGE = 3


@njit(nogil=True, cache=True, inline="always")
def _refresh_slot(info, term_s, count, keep, n, e, a, tree, new_priority):
    L = info.shape[1]
    g = e * L + a % L
    live = _sampleable(info, term_s, count, keep, n, e, a % L)
    current = tree[tree.shape[0] // 2 + g, 0]
    if live and current == 0.0:
        _set_leaf(tree, g, new_priority)
    elif not live and current != 0.0:
        _set_leaf(tree, g, 0.0)


@njit(nogil=True, cache=True)
def _refresh(info, term_s, count, before, env_ids, keep, n, k, tree, max_priority):
    L = info.shape[1]
    for i in range(env_ids.shape[0]):
        e = env_ids[i]
        c = count[e]
        c0 = before[e]
        for a in range(c0, c):  # slots written by this add: their old transitions are gone
            _set_leaf(tree, e * L + a % L, 0.0)
        lo = max(np.int64(0), c - L)
        # Slots that fell into the guard and the oldest kept ones whose stacks now reach
        # into it (as add_rows counts them), then the newest ones: new transitions and
        # windows that closed.
        for a in range(lo, min(max(np.int64(0), c - keep) + k - 1, c)):
            _refresh_slot(info, term_s, count, keep, n, e, a, tree, max_priority[0])
        for a in range(max(lo, c0 - n - 1), c):
            _refresh_slot(info, term_s, count, keep, n, e, a, tree, max_priority[0])


def refresh(info, term_s, count, before, env_ids, keep: int, n: int, k: int, tree,
            max_priority) -> None:
    """After an add of rows for ``env_ids`` (``before``: each env's count before it), make
    the trees' leaves of those envs positive exactly on sampleable transitions: new ones
    get ``max_priority[0]``, kept ones keep theirs."""
    _refresh(info, term_s, count, before, env_ids, keep, n, k, tree, max_priority)


@njit(nogil=True, cache=True)
def _sample(tree, count, L, uniform, beta, out_slots, out_weight, out_ids):
    E = count.shape[0]
    P = tree.shape[0] // 2
    _draw(tree, uniform, out_slots)
    smallest = tree[1, 1]
    for b in range(out_slots.shape[0]):
        g = out_slots[b]
        # (N P(i))^-beta / max_j (N P(j))^-beta; N and the total cancel.
        out_weight[b] = (tree[P + g, 0] / smallest) ** (-beta)
        out_ids[b] = _absolute(count, L, g // L, g % L) * E + g // L


def sample(tree, count, L: int, uniform, beta: float, out_slots, out_weight, out_ids) -> None:
    """Stratified draw of ``len(out_slots)`` slot ids, their importance weights normalised
    by the largest weight over the whole buffer, and their transition ids."""
    _sample(tree, count, L, uniform, beta, out_slots, out_weight, out_ids)


@njit(nogil=True, cache=True, inline="always")
def _live_slot(info, term_s, count, keep, n, t):
    """Slot id of transition id t while it is sampleable, else -1."""
    E, L = info.shape
    e = t % E
    a = t // E
    if a >= count[e] or a < count[e] - L or not _sampleable(info, term_s, count, keep, n, e, a % L):
        return -1
    return e * L + a % L


@njit(nogil=True, cache=True)
def _update(info, term_s, count, keep, n, ids, priorities, alpha, eps, limit, tree, max_priority,
            slots, err):
    E = info.shape[0]
    P = tree.shape[0] // 2
    err[0] = OK
    err[1] = -1
    # Check every row before writing anything, so bad input changes nothing.
    for b in range(ids.shape[0]):
        x = priorities[b]
        if not (x >= 0.0 and x < np.inf):
            err[0] = PRIORITY_VALUE
        elif not (0.0 < (x + eps) ** alpha <= limit):
            err[0] = PRIORITY_RANGE
        elif ids[b] < 0 or ids[b] // E >= count[ids[b] % E]:
            err[0] = ID_RANGE
        if err[0] != OK:
            err[1] = b
            return -1
    written = 0
    for b in range(ids.shape[0]):
        g = _live_slot(info, term_s, count, keep, n, ids[b])
        if g < 0:  # overwritten (or its stack lost) since it was sampled
            continue
        p = (priorities[b] + eps) ** alpha
        tree[P + g, 0] = p
        tree[P + g, 1] = p
        max_priority[0] = max(max_priority[0], p)
        slots[written] = g
        written += 1
    _propagate(tree, slots, written)
    return written


def update(info, term_s, count, keep: int, n: int, ids, priorities, alpha: float, eps: float,
           limit: float, tree, max_priority, slots, err) -> int:
    """Set ``(priorities[b] + eps) ** alpha`` for each transition id still sampleable; later
    rows win. A priority outside ``(0, limit]`` is refused (``limit`` keeps the sum of every
    leaf finite). ``slots`` is int64 scratch at least as long as ``ids``. Returns how many
    were written, or -1 with ``err`` = (status, row) and nothing changed."""
    return _update(info, term_s, count, keep, n, ids, priorities, alpha, eps, limit, tree,
                   max_priority, slots, err)


@njit(nogil=True, cache=True)
def _ids_to_slots(info, term_s, count, keep, n, ids, out_slots):
    for b in range(ids.shape[0]):
        if ids[b] < 0:
            return b
        g = _live_slot(info, term_s, count, keep, n, ids[b])
        if g < 0:
            return b
        out_slots[b] = g
    return -1


def ids_to_slots(info, term_s, count, keep: int, n: int, ids, out_slots) -> int:
    """Slot ids of sampleable transition ids; returns the first position that is not one, else -1."""
    return _ids_to_slots(info, term_s, count, keep, n, ids, out_slots)


@njit(nogil=True, cache=True)
def _check_leaves(info, term_s, count, keep, n, tree):
    E, L = info.shape
    P = tree.shape[0] // 2
    for g in range(P):
        p = tree[P + g, 0]
        live = g < E * L and _sampleable(info, term_s, count, keep, n, g // L, g % L)
        if not (p < np.inf) or (p > 0.0) != live or p < 0.0:
            return g
    return -1


def check_leaves(info, term_s, count, keep: int, n: int, tree) -> int:
    """The first slot id whose leaf is not positive and finite exactly where a transition
    can be sampled (0 elsewhere), else -1: what ``load`` checks before trusting a file."""
    return _check_leaves(info, term_s, count, keep, n, tree)
