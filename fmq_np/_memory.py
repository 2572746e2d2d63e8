"""Memory estimates checked before allocating: a size argument that cannot fit fails at once with one line naming it,
instead of a MemoryError, the OOM killer or a machine that swaps for minutes.

The budget is half of this machine's physical memory (``FMQ_NP_MAX_MEMORY``, in bytes, overrides it). Estimates
are rough upper-end figures of what the job holds at once (the arrays its largest step allocates), not exact counts.
"""
import os

from .errors import InputError

_GIB = 1 << 30


def memory_budget():
    """Bytes a single fmq_np job may plan to hold (see the module doc)."""
    env = os.environ.get("FMQ_NP_MAX_MEMORY", "").strip()
    if env:
        try:
            value = int(float(env))
        except ValueError:
            value = 0
        if value <= 0:
            raise InputError(f"FMQ_NP_MAX_MEMORY must be a positive number of bytes, got {env!r}")
        return value
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * _GIB
    return max(total // 2, _GIB)


def human(nbytes):
    """``12.3 GB`` style text of a byte count."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{int(nbytes)} B"


def check_memory(nbytes, what, argument, value, largest=None):
    """InputError when ``nbytes`` (the estimate for ``what``) exceeds :func:`memory_budget`. ``argument`` and its
    ``value`` name the cause; ``largest`` (optional) is the largest value of it that would fit."""
    budget = memory_budget()
    if nbytes <= budget:
        return
    hint = f"; at most about {largest} fits" if largest is not None and largest >= 1 else ""
    why = "FMQ_NP_MAX_MEMORY" if os.environ.get("FMQ_NP_MAX_MEMORY", "").strip() else \
        "half this machine's memory; FMQ_NP_MAX_MEMORY overrides"
    raise InputError(f"{argument} {value}: {what} would need about {human(nbytes)}, more than the {human(budget)} "
                     f"allowed ({why}){hint}")
