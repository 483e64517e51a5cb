"""SIGINT and SIGTERM for the lifetime of one command.

Until ``hold()`` a signal stops the command at once by raising ``Interrupted`` wherever
it is (imports, env creation, allocation: nothing worth saving exists yet). After
``hold()`` the first signal is only recorded and handed to the callback given to
``forward_to`` (the trainer finishes its step and writes a checkpoint); a second signal
raises ``Interrupted`` at once.
"""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A signal that stops the command at once (a BaseException like KeyboardInterrupt,
    so that no ``except Exception`` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Context manager that owns SIGINT and SIGTERM; restores the previous handlers on exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.note = "; nothing was written"  # the end of the line printed for Interrupted
        self._holding = False
        self._callback = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def hold(self) -> None:
        """From now on record the first signal instead of stopping at once."""
        self._holding = True

    def forward_to(self, callback) -> None:
        """Pass the first signal (one already received, or a later one) to ``callback(signum)``."""
        self._callback = callback
        if self.received is not None:
            callback(self.received)

    def _handle(self, signum, frame) -> None:
        if not self._holding or self.received is not None:
            raise Interrupted(signum)
        self.received = signum
        if self._callback is not None:
            self._callback(signum)
