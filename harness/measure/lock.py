"""The per-machine measuring lock: one harness measures on a machine at a time, or knows it does not."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from harness.weights.models import cache_dir


@contextlib.contextmanager
def machine_lock() -> Iterator[str | None]:
    """Hold a per-machine lock while measuring; yield who else holds it (None: nobody)."""
    path = cache_dir() / "measuring.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            yield f.read().strip() or "another process"
            return
        f.seek(0)
        f.truncate()
        f.write(f"harness run (pid {os.getpid()})")
        f.flush()
        try:
            yield None
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
