"""A dependency-free progress line for long work (training, sampling, sweeps), written to stderr.

Shown when stderr is a terminal; ``FMQ_NP_PROGRESS=1`` forces it on (e.g. in logs), ``=0`` off.
"""
import os
import sys
import threading
import time


def _enabled_by_default():
    forced = os.environ.get("FMQ_NP_PROGRESS")
    if forced is not None:
        return forced not in ("0", "", "false", "no")
    return sys.stderr.isatty()


class Progress:
    """``with Progress(total, "train") as bar: bar.update(1, loss=0.3)`` — count, rate, ETA and named values."""

    def __init__(self, total, desc="", enabled=None, min_interval=0.25):
        self.total = int(total)
        self.desc = desc
        self.enabled = _enabled_by_default() if enabled is None else bool(enabled)
        self.min_interval = min_interval
        self.count = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self._values = {}
        self._lock = threading.Lock()     # threads sharing a batch update one bar

    def update(self, n=1, **values):
        """Advance by ``n``; ``values`` (e.g. loss) are shown beside the count. Safe to call from several threads."""
        with self._lock:
            self.count += n
            self._values.update(values)
            now = time.perf_counter()
            if self.enabled and (now - self._last >= self.min_interval or self.count >= self.total):
                self._last = now
                self._draw(now)

    def _draw(self, now):
        elapsed = max(now - self.start, 1e-9)
        rate = self.count / elapsed
        eta = (self.total - self.count) / rate if rate > 0 else float("inf")
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self._values.items())
        sys.stderr.write(f"\r{self.desc} {self.count}/{self.total} [{elapsed:5.1f}s, {rate:7.1f}/s, eta {eta:5.1f}s] "
                         f"{shown}\033[K")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            self._draw(time.perf_counter())
            sys.stderr.write("\n")
            sys.stderr.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
