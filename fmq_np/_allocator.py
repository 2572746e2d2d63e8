"""Allocator settings for fmq_np's own processes: the ``fmq-np`` command and the worker processes it (or a library
call with ``workers=N``) spawns; never applied to a process that merely imports fmq_np.

A forward pass allocates its activations afresh (``train=False`` shares no buffers, so that two threads can run one
model). glibc's malloc serves arrays above its mmap threshold (at most 32 MB, growing from 128 kB) with fresh
``mmap`` pages and unmaps them when they are freed, so each pass faults its activations in again: about 3,500 page
faults per forward of the width-16 MNIST U-Net at batch 334, and 15 % of its time (889 → 751 ms per call on one
thread with these settings; benchmarks/bench_allocator.py). Raising the threshold to :data:`MMAP_THRESHOLD` and
the trim threshold to :data:`TRIM_THRESHOLD` lets freed blocks be reused instead; the cost is that memory freed
below the trim threshold stays with the process (its peak resident size does not shrink back).
"""
import ctypes

#: arrays up to this many bytes are taken from (and returned to) malloc's heap instead of fresh mmap pages
MMAP_THRESHOLD = 64 << 20
#: free memory at the top of the heap is returned to the system only beyond this many bytes
TRIM_THRESHOLD = 1 << 30
#: the same settings as glibc reads them from the environment when a process starts (for spawned workers)
ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3          # glibc's mallopt parameter numbers (malloc.h)


def keep_freed_memory():
    """Apply the settings above to this process; True when its C library took them (glibc), False elsewhere."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
