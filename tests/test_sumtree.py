"""Sum-tree and min-tree kernels against plain NumPy prefix sums."""

from __future__ import annotations

import numpy as np
import pytest

from fastdqn.kernels import sumtree as ks


def tree(leaves: np.ndarray):
    """(the tree array, its sum column, its min column)."""
    t = ks.empty_tree(len(leaves))
    ks.set_leaves(t, np.arange(len(leaves), dtype=np.int64), leaves.astype(np.float64))
    return t, t[:, 0], t[:, 1]


@pytest.mark.parametrize("size", [1, 2, 5, 64, 1000])
def test_nodes_hold_sums_and_minimums_of_their_leaves(size):
    rng = np.random.default_rng(size)
    leaves = rng.integers(0, 5, size).astype(np.float64)
    t, sums, mins = tree(leaves)
    P = sums.shape[0] // 2
    padded = np.zeros(P)
    padded[:size] = leaves
    positive = np.where(padded > 0, padded, np.inf)
    for level in range(P.bit_length()):
        width = P >> level
        nodes = slice(2 ** level, 2 ** (level + 1))
        np.testing.assert_array_equal(sums[nodes], padded.reshape(-1, width).sum(axis=1))
        np.testing.assert_array_equal(mins[nodes], positive.reshape(-1, width).min(axis=1))
    rebuilt = np.full_like(t, np.nan)
    rebuilt[P:, 0] = sums[P:]
    ks.rebuild(rebuilt)
    np.testing.assert_array_equal(rebuilt[1:], t[1:])  # node 0 is unused


def test_stratified_draw_matches_numpy_searchsorted():
    rng = np.random.default_rng(0)
    # Small integers: every partial sum is exact, so the tree and cumsum agree to the bit.
    leaves = rng.integers(0, 4, 300).astype(np.float64)
    t, _, _ = tree(leaves)
    for B in (1, 7, 32, 300):
        uniform = rng.random(B)
        u = (np.arange(B) + uniform) * (leaves.sum() / B)
        out = np.empty(B, np.int64)
        ks.draw_stratified(t, uniform, out)
        np.testing.assert_array_equal(out, np.searchsorted(np.cumsum(leaves), u, side="right"))


def test_draw_never_returns_a_zero_leaf():
    rng = np.random.default_rng(1)
    for trial in range(20):
        leaves = np.where(rng.random(257) < 0.7, 0.0, 10.0 ** rng.uniform(-300, 300, 257))
        leaves[rng.integers(0, 257)] = 1e-300  # at least one positive leaf
        t, _, _ = tree(leaves)
        # Uniforms at both ends of [0, 1), where rounding pushes a descent off its subtree.
        uniform = np.concatenate([rng.random(30), [0.0, np.nextafter(1.0, 0.0)] * 5])
        out = np.empty(len(uniform), np.int64)
        ks.draw_stratified(t, uniform, out)
        assert (leaves[out] > 0).all(), trial


def test_updates_in_order_later_wins():
    t, sums, mins = tree(np.ones(8))
    ks.set_leaves(t, np.array([3, 3, 5], np.int64), np.array([7.0, 2.0, 0.0]))
    assert sums[1] == 8 - 2 + 2 and mins[1] == 1.0
    assert sums[sums.shape[0] // 2 + 5] == 0 and mins[mins.shape[0] // 2 + 5] == np.inf


def test_leaves_for_is_the_next_power_of_two():
    assert [ks.leaves_for(n) for n in (1, 2, 3, 4, 5, 1000, 1 << 20)] == [1, 2, 4, 4, 8, 1024, 1 << 20]
