"""Timing shared by the benchmarks: best-of-N wall and CPU time of one call."""

import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any], repeats: int) -> tuple[tuple[float, float], Any]:
    """Best-of-N wall time and CPU time (CPU time is steadier on a shared machine), and the last result."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    return (wall, cpu), out
