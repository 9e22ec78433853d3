"""Peak memory of one call, for the benchmarks: on a GPU the allocator's peak; on the CPU
the process's resident memory. Both are what a call holds above what was held before it.

On the CPU, glibc must give large blocks back to the OS when they are freed, or the
resident memory after one call hides the next call's peak: :func:`give_back_large_blocks`
re-executes the script with ``MALLOC_MMAP_THRESHOLD_`` set, before torch is imported.
The peak is then read from the kernel's high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``), which misses nothing however loaded the machine is; where
that reset is not allowed, resident memory is sampled every millisecond instead.
"""

import os
import sys
import threading
import time
from typing import Callable


def give_back_large_blocks() -> None:
    """Re-executes the running script with allocations above 64 KiB served by mmap (call
    it before importing torch, from ``if __name__ == "__main__"``)."""
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
        os.execv(sys.executable, [sys.executable, *sys.argv])


def peak_bytes(fn: Callable[[], object], device, sampled: bool = False) -> int:
    """The most memory ``fn()`` holds above what was held before it, in bytes; on the CPU
    from the high-water mark, or with ``sampled`` from resident memory read every ms."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if not sampled and _reset_high_water_mark():
        before = _resident()
        fn()
        return _high_water_mark() - before
    return _sampled_peak(fn)


def method(device) -> str:
    """How :func:`peak_bytes` measures on ``device``, in words (for the tables)."""
    if device.type == "cuda":
        return "allocator peak"
    return "resident high-water mark" if _reset_high_water_mark() else "resident memory sampled every ms"


def _sampled_peak(fn: Callable[[], object]) -> int:
    before = _resident()
    peak, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _resident())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], _resident()) - before


def _resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: resets VmHWM to the current resident memory
        return _high_water_mark() is not None
    except OSError:
        return False


def _high_water_mark():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None
