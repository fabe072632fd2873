"""The executor interface between the sweep and the isolated worker."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from harness.contract import Job

RowSink = Callable[[dict[str, Any]], None]
LOST_NODE = "node lost"  # how the reason of an `error` row whose node went away mid-job starts: --resume measures it again


class Executor(Protocol):
    """Runs jobs and hands back their rows.

    Used as a context manager: entering acquires what measuring needs (the machine, a cluster);
    leaving releases it and, on every path (an error, Ctrl-C, SIGTERM), cancels whatever still runs,
    leaving no worker, cgroup or remote task behind.
    """

    slots: int  # how many jobs may run at once

    def __enter__(self) -> Executor: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None: ...

    def environment(self) -> dict[str, Any]:
        """The machine the run's `environment.json` describes (the rows carry their own node's)."""

    def submit(self, job: Job) -> None:
        """Start (or queue) a job; at most `slots` are outstanding."""

    def next_row(self, save: RowSink) -> dict[str, Any]:
        """Wait for one submitted job to finish; hand its row to `save` (with signals held, so a finished
        measurement is never lost to an interrupt) and return it."""
