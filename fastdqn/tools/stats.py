"""Aggregate statistics over runs: IQM, bootstrap confidence intervals, smoothing. The aggregate
follows Agarwal et al. 2021: the interquartile mean of all (game, seed) scores pooled, with a
percentile interval from a *stratified* bootstrap, which resamples the seeds of each game
separately so that every resample keeps every game. Randomness comes from a ``Generator`` passed in.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fastdqn.errors import ConfigError
from fastdqn.util.checks import check_int, check_number


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval."""

    value: float
    low: float
    high: float


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle half of the pooled scores.

    Drops ``floor(n / 4)`` scores from each end of the sorted scores, as
    ``scipy.stats.trim_mean(scores, 0.25)`` does.
    """
    flat = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if flat.size == 0:
        raise ConfigError("iqm: expected at least one score, got none")
    cut = flat.size // 4
    return float(flat[cut: flat.size - cut].mean())


def mean(scores: np.ndarray) -> float:
    """The mean of the pooled scores."""
    flat = np.asarray(scores, dtype=np.float64).ravel()
    if flat.size == 0:
        raise ConfigError("mean: expected at least one score, got none")
    return float(flat.mean())


AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {"IQM": iqm, "Mean": mean}


def stratified_bootstrap(per_task: Sequence[np.ndarray], statistic: Callable, *, rng: np.random.Generator,
                         reps: int = 2000, confidence: float = 0.95, pooled: bool = True) -> Interval:
    """``statistic`` of all scores pooled, with a stratified percentile bootstrap interval.

    ``per_task[i]`` holds the scores of task (game) ``i``, one per run (seed); tasks may have
    different numbers of runs. Each resample draws, for every task separately, as many runs
    as it has, with replacement, and pools them. With ``pooled=False`` the statistic is given
    the list of per-task arrays instead, in the order of ``per_task`` (for summaries that
    weigh games differently).
    """
    tasks = [np.asarray(t, dtype=np.float64).ravel() for t in per_task]
    if not tasks or any(t.size == 0 for t in tasks):
        raise ConfigError("stratified_bootstrap: expected at least one score for every task, got an empty task")
    _check_interval_args(reps, confidence)
    combine = np.concatenate if pooled else list
    point = statistic(combine(tasks))
    stats = np.empty(reps)
    for r in range(reps):
        stats[r] = statistic(combine([t[rng.integers(0, t.size, t.size)] for t in tasks]))
    return Interval(point, *_percentiles(stats, confidence))


def bootstrap_mean(samples: np.ndarray, *, rng: np.random.Generator, reps: int = 2000,
                   confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 of ``samples`` (runs, points) and its percentile bootstrap band.

    Runs (rows) are resampled with replacement; NaN entries (a run with no data at a point
    yet) are left out of that point's mean. Returns (mean, low, high), each of shape (points,).
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[0] == 0:
        raise ConfigError(f"bootstrap_mean: expected a (runs, points) array with runs >= 1, got {samples.shape}")
    _check_interval_args(reps, confidence)
    point = _nanmean(samples, axis=0)
    picks = rng.integers(0, samples.shape[0], size=(reps, samples.shape[0]))
    means = _nanmean(samples[picks], axis=1)  # (reps, points)
    low, high = _percentiles(means, confidence)
    return point, low, high


def smooth(steps: np.ndarray, values: np.ndarray, grid: np.ndarray, window: float) -> np.ndarray:
    """The mean of ``values`` logged in the ``window`` env steps up to each grid point.

    ``steps`` must be sorted. A grid point with no value in its window carries the last
    smoothed value forward; points before the first value are NaN.
    """
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if steps.shape != values.shape:
        raise ConfigError(f"smooth: steps and values must have one shape, got {steps.shape} and {values.shape}")
    if window <= 0:
        raise ConfigError(f"smooth: expected a window > 0 env steps, got {window}")
    csum = np.concatenate([[0.0], np.cumsum(values)])
    hi = np.searchsorted(steps, grid, side="right")
    lo = np.searchsorted(steps, np.asarray(grid, dtype=np.float64) - window, side="right")
    counts = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        window_mean = (csum[hi] - csum[lo]) / counts
    # Index of the latest grid point whose window held a value (-1: none yet).
    latest = np.maximum.accumulate(np.where(counts > 0, np.arange(len(counts)), -1))
    return np.where(latest >= 0, window_mean[np.maximum(latest, 0)], np.nan)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    counts = np.sum(~np.isnan(x), axis=axis)
    sums = np.nansum(x, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _percentiles(stats: np.ndarray, confidence: float) -> tuple:
    tail = (1.0 - confidence) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN points stay NaN
        low, high = np.nanpercentile(stats, [tail, 100 - tail], axis=0)
    if np.ndim(low) == 0:
        return float(low), float(high)
    return low, high


def _check_interval_args(reps: int, confidence: float) -> None:
    check_int("reps", reps, why=" (bootstrap resamples)")
    check_number("confidence", confidence, 0, 1, low_open=True, high_open=True, fix="e.g. 0.95")
