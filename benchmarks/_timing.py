"""Timing helpers shared by the benchmarks: medians of interleaved repeats, tables (printed,
and recorded as JSON lines in the file ``$CAPTUM_CD_TABLES`` names, which the tests read)."""

import json
import os
import statistics
import sys
import time
from typing import Callable, Dict


def median_times(cases: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> Dict[str, float]:
    """Median wall time of each case, the cases interleaved so drift hits them alike."""
    progress(f"timing {', '.join(cases)}: {repeats} interleaved repeats")
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: Dict[str, list] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def print_table(title: str, rows, headers) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    record = os.environ.get("CAPTUM_CD_TABLES")
    if record:
        with open(record, "a") as f:
            f.write(json.dumps({"title": title, "headers": [str(h) for h in headers], "rows": [[str(c) for c in r] for r in rows]}) + "\n")


_START = time.perf_counter()


def progress(message: str) -> None:
    """A progress line on stderr (the results stay alone on stdout), with the time so far."""
    print(f"[{time.perf_counter() - _START:6.0f} s] {message}", file=sys.stderr, flush=True)
