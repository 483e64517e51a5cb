"""Numba kernels of a sum tree and a min tree over a fixed range of ids, in float64.

Both trees are ``(2P,) float64`` arrays, ``P`` a power of two: node ``i`` has children
``2i`` and ``2i + 1``, id ``g`` is leaf ``P + g``, the root is node 1. A leaf of priority 0
(an id that holds nothing to draw) is ``inf`` in the min tree. Parents are recomputed
from their children, never adjusted by differences, so a subtree of zeros sums to exactly
0 and the descent below never ends on a zero leaf.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def leaves_for(ids: int) -> int:
    """The smallest power of two ``P >= ids``: each tree is ``2 * P`` float64."""
    return 1 << max(0, int(ids) - 1).bit_length()


@njit(nogil=True, cache=True, inline="always")
def _set_leaf(sums, mins, g, p):
    i = sums.shape[0] // 2 + g
    sums[i] = p
    mins[i] = p if p > 0.0 else np.inf
    i //= 2
    while i >= 1:
        sums[i] = sums[2 * i] + sums[2 * i + 1]
        mins[i] = min(mins[2 * i], mins[2 * i + 1])
        i //= 2


@njit(nogil=True, cache=True, inline="always")
def _find(sums, u):
    """The id whose prefix-sum interval holds ``u``; only positive leaves are reachable."""
    P = sums.shape[0] // 2
    i = 1
    while i < P:
        left = sums[2 * i]
        # Rounding may put u past a subtree's sum: then go to the positive side.
        if left > 0.0 and (u < left or sums[2 * i + 1] <= 0.0):
            i = 2 * i
        else:
            u -= left
            i = 2 * i + 1
    return i - P


@njit(nogil=True, cache=True, inline="always")
def _draw(sums, uniform, out_ids):
    B = out_ids.shape[0]
    step = sums[1] / B
    for b in range(B):
        out_ids[b] = _find(sums, (b + uniform[b]) * step)


@njit(nogil=True, cache=True)
def _draw_stratified(sums, uniform, out_ids):
    _draw(sums, uniform, out_ids)


def draw_stratified(sums, uniform, out_ids) -> None:
    """One id per equal segment of the total: ``out_ids[b]`` holds ``(b + uniform[b]) / B``
    of the way through. The root must be positive."""
    _draw_stratified(sums, uniform, out_ids)


@njit(nogil=True, cache=True)
def _set_leaves(sums, mins, ids, priorities):
    for b in range(ids.shape[0]):
        _set_leaf(sums, mins, ids[b], priorities[b])


def set_leaves(sums, mins, ids, priorities) -> None:
    """Set leaf ``ids[b]`` to ``priorities[b]`` (>= 0) in both trees, in order."""
    _set_leaves(sums, mins, ids, priorities)


@njit(nogil=True, cache=True)
def _rebuild(sums, mins):
    P = sums.shape[0] // 2
    for i in range(P, 2 * P):
        mins[i] = sums[i] if sums[i] > 0.0 else np.inf
    for i in range(P - 1, 0, -1):
        sums[i] = sums[2 * i] + sums[2 * i + 1]
        mins[i] = min(mins[2 * i], mins[2 * i + 1])


def rebuild(sums, mins) -> None:
    """Recompute every parent of both trees, and the min tree's leaves, from ``sums``'s leaves."""
    _rebuild(sums, mins)
