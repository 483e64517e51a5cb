"""IQM, bootstrap intervals and smoothing against plain NumPy / plain Python references."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fastdqn.errors import ConfigError
from fastdqn.tools.stats import bootstrap_mean, iqm, mean, smooth, stratified_bootstrap

from reference_stats import reference_iqm, reference_percentile


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 9, 10, 11, 40, 41])
def test_iqm_drops_a_quarter_at_each_end(n):
    values = np.random.default_rng(n).normal(size=n) * 10
    assert iqm(values) == pytest.approx(reference_iqm(values), rel=1e-12)
    assert mean(values) == pytest.approx(sum(values) / n, rel=1e-12)


def test_iqm_of_known_numbers():
    # 8 scores: drop 2 at each end -> mean of 3, 4, 5, 6.
    assert iqm(np.array([[100.0, 1.0, 3.0, 4.0], [5.0, 6.0, -50.0, 7.0]])) == pytest.approx(4.5)
    with pytest.raises(ConfigError, match="at least one score"):
        iqm(np.array([]))


def test_stratified_bootstrap_equals_a_plain_numpy_resampling():
    tasks = [np.array([0.1, 0.5, 0.9]), np.array([2.0, 1.0, 3.0, 4.0]), np.array([-0.2, 0.0])]
    reps = 300
    got = stratified_bootstrap(tasks, iqm, rng=np.random.default_rng(7), reps=reps)
    rng = np.random.default_rng(7)
    stats = []
    for _ in range(reps):
        pooled = []
        for t in tasks:  # each task resampled on its own, keeping its size
            pooled += [t[i] for i in rng.integers(0, len(t), len(t))]
        stats.append(reference_iqm(pooled))
    assert got.value == pytest.approx(reference_iqm(np.concatenate(tasks)))
    assert got.low == pytest.approx(reference_percentile(stats, 2.5))
    assert got.high == pytest.approx(reference_percentile(stats, 97.5))


def test_stratified_bootstrap_can_hand_the_statistic_each_task_apart():
    """pooled=False: the statistic sees the resampled tasks one by one, in order (here a
    weighted sum of task means that pooling would lose)."""
    tasks = [np.array([0.1, 0.5, 0.9]), np.array([2.0, 1.0, 3.0, 4.0]), np.array([-0.2, 0.0])]
    weights = (3.0, 0.5, -2.0)

    def weighted(per_task):
        return sum(w * sum(t) / len(t) for w, t in zip(weights, per_task))

    reps = 300
    got = stratified_bootstrap(tasks, weighted, rng=np.random.default_rng(7), reps=reps, pooled=False)
    rng = np.random.default_rng(7)
    stats = [weighted([[t[i] for i in rng.integers(0, len(t), len(t))] for t in tasks]) for _ in range(reps)]
    assert got.value == pytest.approx(3.0 * 0.5 + 0.5 * 2.5 - 2.0 * -0.1)
    assert got.low == pytest.approx(reference_percentile(stats, 2.5))
    assert got.high == pytest.approx(reference_percentile(stats, 97.5))


def test_stratified_bootstrap_agrees_with_an_independent_monte_carlo():
    """Python's own RNG, many resamples: the two intervals agree within resampling noise."""
    data = np.random.default_rng(3)
    tasks = [data.normal(loc, 1.0, size=5) for loc in (0.0, 1.0, 3.0, 10.0)]
    got = stratified_bootstrap(tasks, mean, rng=np.random.default_rng(0), reps=8000)
    r = random.Random(1)
    stats = []
    for _ in range(8000):
        pooled = [x for t in tasks for x in r.choices(list(t), k=len(t))]
        stats.append(sum(pooled) / len(pooled))
    width = reference_percentile(stats, 97.5) - reference_percentile(stats, 2.5)
    assert got.low == pytest.approx(reference_percentile(stats, 2.5), abs=0.05 * width)
    assert got.high == pytest.approx(reference_percentile(stats, 97.5), abs=0.05 * width)
    assert got.low < got.value < got.high


def test_stratified_bootstrap_keeps_every_task():
    """Tasks of one score each cannot be resampled away: the interval collapses to the point."""
    got = stratified_bootstrap([np.array([1.0]), np.array([5.0]), np.array([9.0])], mean,
                               rng=np.random.default_rng(0), reps=200)
    assert got.low == got.value == got.high == pytest.approx(5.0)


def test_bootstrap_mean_over_runs_with_gaps():
    samples = np.array([[1.0, 2.0, np.nan], [3.0, np.nan, 5.0], [5.0, 6.0, 7.0]])
    point, low, high = bootstrap_mean(samples, rng=np.random.default_rng(1), reps=500)
    np.testing.assert_allclose(point, [3.0, 4.0, 6.0])
    rng = np.random.default_rng(1)
    picks = rng.integers(0, 3, size=(500, 3))
    for j in range(3):
        means = []
        for p in picks:
            col = [samples[i, j] for i in p if not np.isnan(samples[i, j])]
            means.append(sum(col) / len(col) if col else float("nan"))
        finite = [m for m in means if m == m]
        assert low[j] == pytest.approx(reference_percentile(finite, 2.5))
        assert high[j] == pytest.approx(reference_percentile(finite, 97.5))


def test_smooth_is_a_trailing_window_mean():
    steps = np.array([10, 20, 20, 35, 80, 90], dtype=float)
    values = np.array([1.0, 3.0, 5.0, 7.0, 9.0, 11.0])
    grid = np.array([0, 10, 25, 40, 60, 85, 100], dtype=float)
    got = smooth(steps, values, grid, window=20)
    expected = []
    last = float("nan")
    for g in grid:
        inside = [v for s, v in zip(steps, values) if g - 20 < s <= g]
        if inside:
            last = sum(inside) / len(inside)
        expected.append(last)
    np.testing.assert_allclose(got, expected)  # NaN before the first game, carried over gaps
    assert np.isnan(got[0]) and got[4] == pytest.approx(got[3])


def test_bad_arguments_name_themselves():
    with pytest.raises(ConfigError, match="reps"):
        stratified_bootstrap([np.ones(2)], mean, rng=np.random.default_rng(0), reps=0)
    with pytest.raises(ConfigError, match="confidence"):
        bootstrap_mean(np.ones((2, 2)), rng=np.random.default_rng(0), confidence=1.5)
    with pytest.raises(ConfigError, match="empty task"):
        stratified_bootstrap([np.ones(2), np.array([])], mean, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="window"):
        smooth(np.ones(2), np.ones(2), np.ones(3), window=0)
