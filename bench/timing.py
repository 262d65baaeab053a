"""The benchmarks' one timing loop."""
import time


def call_seconds(function, iterations, warmup=1):
    """Wall seconds of each of `iterations` calls of function(), after `warmup` untimed calls (which build
    kernels and fill caches)."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times
