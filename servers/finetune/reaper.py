"""The reaper: a timer in the fine-tuning service that keeps the job store honest when no worker is idle.

Idle workers already recover expired leases each time they poll, but a job whose only worker was
killed would stay `running` for ever; the service's reaper re-queues it (to resume from its last checkpoint)
or fails it with the reason after `max_attempts`, and lets the dispatcher reconcile (Ray: map each
submission's status and exit to the job's state).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Reaper:
    """Call `tick` every `period` seconds in a daemon thread until stopped; errors are logged, never fatal."""

    def __init__(self, tick: Callable[[], object], period: float, *, name: str = "ragtune-reaper") -> None:
        self.tick = tick
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Reaper:
        """Start the timer thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the timer and wait for a tick in progress to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.tick()
            except Exception:  # a timer thread is a boundary: log, keep reaping
                log.exception("reaper tick failed; retrying in %ss", self.period)
