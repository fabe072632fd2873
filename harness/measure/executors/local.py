"""The local executor: one job at a time, in a fresh isolated worker on this machine.

It holds the machine lock while it measures; another harness measuring on the same machine meanwhile
is reported (its timings and ours distort each other), and every row records the CPU time other
processes used while its worker ran (measure.runner).
"""

from __future__ import annotations

import contextlib
import warnings
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.contract import Job
from harness.measure import node
from harness.measure.executors.base import RowSink
from harness.measure.lock import machine_lock


class LocalExecutor:
    slots = 1

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.queue: deque[Job] = deque()
        self.concurrent_run: str | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> LocalExecutor:
        self.concurrent_run = self._stack.enter_context(machine_lock())
        if self.concurrent_run is not None:
            warnings.warn(f"{self.concurrent_run} is measuring on this machine too: concurrent runs compete for CPU "
                          "and memory bandwidth and distort each other's timings", stacklevel=2)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.queue.clear()  # the running worker, if any, was killed and reaped by the runner
        self._stack.close()

    def environment(self) -> dict[str, Any]:
        env = dict(node.node_environment())
        if self.concurrent_run is not None:
            env["concurrent_run"] = self.concurrent_run
        return env

    def submit(self, job: Job) -> None:
        self.queue.append(job)

    def next_row(self, save: RowSink) -> dict[str, Any]:
        job = self.queue.popleft()
        saved: list[dict[str, Any]] = []

        def keep(row: dict[str, Any]) -> None:
            save(row)
            saved.append(row)

        where = {"executor": "local", **({"concurrent_run": self.concurrent_run} if self.concurrent_run else {})}
        node.run_job(job, self.run_dir, keep, where)
        return saved[0]
