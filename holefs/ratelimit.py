"""Log lines that cannot flood the journal, however often the cause recurs."""

import time


class RateLimitedLog:
    """Passes at most *burst* messages per *interval* seconds to *logger*.

    A program that keeps writing into a full filesystem would otherwise log
    a line per request.  What is held back is counted, and the count is
    logged when the next interval opens, so the journal still tells how
    often it happened.
    """

    def __init__(self, logger, interval=10.0, burst=5, clock=time.monotonic):
        self.logger = logger
        self.interval = interval
        self.burst = burst
        self.clock = clock
        self._opened = None
        self._passed = 0
        self._held = 0

    def warning(self, message, *args):
        now = self.clock()
        if self._opened is None or now - self._opened >= self.interval:
            if self._held:
                self.logger.warning("%d more like the last were not logged", self._held)
            self._opened, self._passed, self._held = now, 0, 0
        if self._passed < self.burst:
            self._passed += 1
            self.logger.warning(message, *args)
        else:
            self._held += 1
