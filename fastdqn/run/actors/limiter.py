"""``RateLimiter``: keeps learner updates per env step at ``1 / train_frequency`` when actors
and the learner run apart (in the spirit of Reverb's sample-to-insert ratio limiter).

Counting from ``learn_after`` env steps, with ``s`` env steps stored and ``u`` updates done:

- the learner may make update ``u + 1`` only while ``(u + 1) * f <= (s - learn_after) * (1 + tol)``:
  updates never run more than ``tol`` ahead of the env steps that pay for them;
- actors may send ``n`` more env steps only while
  ``s + n - learn_after <= u * f * (1 + tol) + slack``: env steps never run more than ``tol``
  (plus ``slack``, the steps one round of requests holds) ahead of the updates.

Whichever side runs ahead waits for the other. ``slack`` is at least ``f`` plus one request,
so some side can always go on (no deadlock). ``free_running``: neither side waits (Ape-X's
original: actors never pause, the learner updates as fast as it can once learning starts).
"""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """Thread-safe counters of env steps stored and updates done, and the waits they imply."""

    def __init__(self, train_frequency: int, tolerance: float, learn_after: int, slack: int, *,
                 free_running: bool = False, steps: int = 0, updates: int = 0) -> None:
        self.train_frequency, self.tolerance = train_frequency, tolerance
        self.learn_after, self.free_running = learn_after, free_running
        self.slack = max(int(slack), train_frequency)
        self.steps, self.updates = steps, updates
        self._cond = threading.Condition()
        self._closed = False

    def inserted(self, steps: int) -> None:
        with self._cond:
            self.steps += steps
            self._cond.notify_all()

    def updated(self, updates: int = 1) -> None:
        with self._cond:
            self.updates += updates
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiter (they return False)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def may_update(self) -> bool:
        learned = self.steps - self.learn_after
        if learned <= 0:
            return False
        return self.free_running or (self.updates + 1) * self.train_frequency <= learned * (1 + self.tolerance)

    def may_insert(self, steps: int) -> bool:
        """Whether ``steps`` more env steps (those in flight and the next request) may be sent."""
        if self.free_running:
            return True
        ahead = self.steps + steps - self.learn_after
        return ahead <= self.updates * self.train_frequency * (1 + self.tolerance) + self.slack

    def wait_update(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the next update to be allowed."""
        return self._wait(self.may_update, timeout)

    def wait_insert(self, steps: int, timeout: float) -> bool:
        return self._wait(lambda: self.may_insert(steps), timeout)

    def _wait(self, allowed, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not allowed():
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    return False
                self._cond.wait(left)
            return not self._closed

    def ratio(self) -> float | None:
        """Achieved updates per env step, times ``train_frequency`` (1.0: on target), or None
        before learning starts."""
        learned = self.steps - self.learn_after
        return self.updates * self.train_frequency / learned if learned > 0 else None
