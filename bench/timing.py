"""Alternate two callables and report their median times and ratio."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def compare(a: Callable[[], object], b: Callable[[], object], rounds: int = 10, warmup: int = 1) -> tuple[float, float]:
    """Run a and b alternately ``rounds`` times (after ``warmup``); return their median seconds."""
    for _ in range(warmup):
        a()
        b()
    times_a, times_b = [], []
    for i in range(rounds):
        # Swap the order every round so neither always runs on a warmer cache.
        pair = ((a, times_a), (b, times_b)) if i % 2 == 0 else ((b, times_b), (a, times_a))
        for func, times in pair:
            started = time.perf_counter()
            func()
            times.append(time.perf_counter() - started)
    return statistics.median(times_a), statistics.median(times_b)


def line(name: str, label_a: str, ta: float, label_b: str, tb: float) -> str:
    return f"{name}: {label_a} {ta * 1000:.1f} ms vs {label_b} {tb * 1000:.1f} ms -> ratio {ta / tb:.2f}"
