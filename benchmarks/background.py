"""A reproducible busy machine for the benchmarks' `--busy N`: N processes spinning a core each."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def busy(n: int) -> Iterator[None]:
    """`n` processes that each keep one core busy, as another job's would, while the body runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()
