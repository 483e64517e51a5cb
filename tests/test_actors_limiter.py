"""The rate limiter without Ray: a producer thread and a learner thread, one of them made
artificially slow; the counts seen at every step are checked against the bounds computed
here, and the ratio at the end against the tolerance."""

from __future__ import annotations

import threading
import time

import pytest

from fastdqn.run.actors.limiter import RateLimiter

F, TOL, START, CHUNK = 4, 0.1, 200, 40


def _run(insert_pause: float, update_pause: float, total: int, *, free_running: bool = False):
    limiter = RateLimiter(F, TOL, START, slack=2 * CHUNK, free_running=free_running)
    seen, stop = [], threading.Event()

    def producer():
        while limiter.steps < total:
            if limiter.wait_insert(CHUNK, 0.05):
                time.sleep(insert_pause)
                limiter.inserted(CHUNK)
                seen.append((limiter.steps, limiter.updates))
        stop.set()

    def learner():
        # Free-running, updates are always allowed: the learner stops with the actors.
        while not stop.is_set() or (not free_running and limiter.may_update()):
            if limiter.wait_update(0.05):
                time.sleep(update_pause)
                limiter.updated()
                seen.append((limiter.steps, limiter.updates))

    threads = [threading.Thread(target=producer), threading.Thread(target=learner)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return limiter, seen


@pytest.mark.parametrize("insert_pause,update_pause", [(0.0, 0.0005), (0.002, 0.0)],
                         ids=["fast actors, slow learner", "slow actors, fast learner"])
def test_the_ratio_stays_within_the_tolerance(insert_pause, update_pause):
    limiter, seen = _run(insert_pause, update_pause, total=4000)
    for steps, updates in seen:
        assert updates * F <= max(steps - START, 0) * (1 + TOL)  # updates never ahead
        assert steps - START <= updates * F * (1 + TOL) + 2 * CHUNK + CHUNK  # env steps never far ahead
    ratio = limiter.updates * F / (limiter.steps - START)
    assert 1 - TOL - 2 * CHUNK / (limiter.steps - START) <= ratio <= 1 + TOL


def test_free_running_lets_actors_run_ahead():
    limiter, _ = _run(0.0, 0.002, total=4000, free_running=True)
    assert limiter.updates * F < 0.5 * (limiter.steps - START)


def test_close_wakes_a_waiting_learner():
    limiter = RateLimiter(F, TOL, START, slack=CHUNK)
    threading.Timer(0.1, limiter.close).start()
    start = time.monotonic()
    assert limiter.wait_update(10) is False
    assert time.monotonic() - start < 5
