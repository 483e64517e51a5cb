"""Numba kernels of a sum tree and a min tree over a fixed range of ids, in float64.

Both trees live in one ``tree (2P, 2) float64`` array, ``P`` a power of two:
``tree[i, 0]`` is node ``i`` of the sum tree and ``tree[i, 1]`` of the min tree, so an
update reads and writes one cache line per level for both. Node ``i`` has children
``2i`` and ``2i + 1``, id ``g`` is leaf ``P + g``, the root is node 1. A leaf of priority 0
(an id that holds nothing to draw) is ``inf`` in the min tree. Parents are recomputed
from their children, never adjusted by differences, so a subtree of zeros sums to exactly
0 and the descent below never ends on a zero leaf.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def leaves_for(ids: int) -> int:
    """The smallest power of two ``P >= ids``: the tree array is ``(2 * P, 2)`` float64."""
    return 1 << max(0, int(ids) - 1).bit_length()


def empty_tree(ids: int) -> np.ndarray:
    """A tree over ``ids`` ids, every priority 0."""
    tree = np.zeros((2 * leaves_for(ids), 2))
    tree[:, 1] = np.inf
    return tree


@njit(nogil=True, cache=True, inline="always")
def _set_leaf(tree, g, p):
    i = tree.shape[0] // 2 + g
    tree[i, 0] = p
    tree[i, 1] = p if p > 0.0 else np.inf
    i //= 2
    while i >= 1:
        tree[i, 0] = tree[2 * i, 0] + tree[2 * i + 1, 0]
        tree[i, 1] = min(tree[2 * i, 1], tree[2 * i + 1, 1])
        i //= 2


@njit(nogil=True, cache=True, inline="always")
def _draw(tree, uniform, out_ids):
    # All descents advance one level at a time: their loads are independent, so the CPU
    # overlaps the cache misses of the lower levels instead of waiting for each in turn.
    B = out_ids.shape[0]
    P = tree.shape[0] // 2
    step = tree[1, 0] / B
    for b in range(B):
        uniform[b] = (b + uniform[b]) * step
        out_ids[b] = 1
    width = 1
    while width < P:
        for b in range(B):
            i = out_ids[b]
            left = tree[2 * i, 0]
            # Rounding may put u past a subtree's sum: then go to the positive side.
            if left > 0.0 and (uniform[b] < left or tree[2 * i + 1, 0] <= 0.0):
                out_ids[b] = 2 * i
            else:
                uniform[b] -= left
                out_ids[b] = 2 * i + 1
        width *= 2
    for b in range(B):
        out_ids[b] -= P


@njit(nogil=True, cache=True)
def _draw_stratified(tree, uniform, out_ids):
    _draw(tree, uniform, out_ids)


def draw_stratified(tree, uniform, out_ids) -> None:
    """One id per equal segment of the total: ``out_ids[b]`` holds ``(b + uniform[b]) / B``
    of the way through (``uniform`` is overwritten). Only positive leaves are reachable;
    the root must be positive."""
    _draw_stratified(tree, uniform, out_ids)


@njit(nogil=True, cache=True, inline="always")
def _propagate(tree, ids, count):
    # Parents of the first ``count`` ids, one level at a time (independent loads, as in _draw).
    P = tree.shape[0] // 2
    shift = 1
    while (P >> shift) >= 1:
        for b in range(count):
            i = (P + ids[b]) >> shift
            tree[i, 0] = tree[2 * i, 0] + tree[2 * i + 1, 0]
            tree[i, 1] = min(tree[2 * i, 1], tree[2 * i + 1, 1])
        shift += 1


@njit(nogil=True, cache=True)
def _set_leaves(tree, ids, priorities):
    P = tree.shape[0] // 2
    for b in range(ids.shape[0]):
        p = priorities[b]
        tree[P + ids[b], 0] = p
        tree[P + ids[b], 1] = p if p > 0.0 else np.inf
    _propagate(tree, ids, ids.shape[0])


def set_leaves(tree, ids, priorities) -> None:
    """Set leaf ``ids[b]`` to ``priorities[b]`` (>= 0) in both trees; where an id repeats the
    later one wins."""
    _set_leaves(tree, ids, priorities)


@njit(nogil=True, cache=True)
def _rebuild(tree):
    P = tree.shape[0] // 2
    for i in range(P, 2 * P):
        tree[i, 1] = tree[i, 0] if tree[i, 0] > 0.0 else np.inf
    for i in range(P - 1, 0, -1):
        tree[i, 0] = tree[2 * i, 0] + tree[2 * i + 1, 0]
        tree[i, 1] = min(tree[2 * i, 1], tree[2 * i + 1, 1])


def rebuild(tree) -> None:
    """Recompute every parent of both trees, and the min tree's leaves, from the sum leaves."""
    _rebuild(tree)
