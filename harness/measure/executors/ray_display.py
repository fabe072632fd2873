"""The driver's live display of a sweep (or fits) on a Ray cluster: its nodes and tasks.

On a terminal, a table (rich Live) redrawn as tasks start and rows arrive: each measuring node's host,
machine class and slots, what it runs now, and the rows it returned (done, of which failed); under it,
the tasks waiting for a slot and the configurations not yet handed to the cluster. Elsewhere (a CI log)
plain lines instead: one per node when it first shows, one when a task starts on a node, one when a node
is lost. Either way a line per finished row, as on the local executor.

It takes the executor's snapshots (RayExecutor's `on_status`) and the sweep's or the fit's progress.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from harness.console import profile_line, row_line
from harness.measure.fit import FitProgress, fit_line
from harness.measure.sweep import Progress


class RayDisplay:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = Live(console=console, refresh_per_second=4, transient=True) if console.is_terminal else None
        self.status: dict[str, Any] = {"nodes": [], "waiting": []}
        self.done = self.total = 0
        self.started = time.monotonic()
        self.said: set[tuple[str, ...]] = set()  # the plain lines already printed

    def __enter__(self) -> RayDisplay:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def nodes(self, status: dict[str, Any]) -> None:
        """The executor's picture of the nodes and tasks."""
        self.status = status
        if self.live is not None:
            self.live.update(self._table())
            return
        for n in status["nodes"]:
            node_id, name = n["ray_node_id"], self._name(n)
            self._say(("node", node_id), f"[ray] node {name} ({n['machine_class'] or 'machine class unknown'}): "
                                         f"{n['slots']:g} slot(s)")
            for run_id in n["running"]:
                self._say(("run", node_id, run_id), f"[ray] {name}: running {run_id}")
            if not n["alive"]:
                self._say(("lost", node_id), f"[ray] node {name} is lost")

    def __call__(self, p: Progress | FitProgress) -> None:
        """The sweep's (or the fits') progress: a line per finished row."""
        self.done, self.total = p.done, p.total
        if p.row is not None:
            host = (p.row.get("node") or {}).get("host") or "?"
            if isinstance(p, FitProgress):
                line = fit_line(p.row)
            elif p.profiler:
                line = f"{escape(f'[profile {p.profiler}]')} {p.spec.run_id}: {profile_line(p.row)}"
            else:
                line = f"{p.spec.run_id}: {row_line(p.row)}"
            self.console.print(f"[{p.done}/{p.total}] {line} (node {host})", highlight=False)
        if self.live is not None:
            self.live.update(self._table())

    def _name(self, n: dict[str, Any]) -> str:
        """The node's host, with its Ray node id where several nodes share a host."""
        shared = sum(m["host"] == n["host"] for m in self.status["nodes"]) > 1
        return f"{n['host']} ({n['ray_node_id'][:8]})" if shared else n["host"]

    def _say(self, key: tuple[str, ...], line: str) -> None:
        if key not in self.said:
            self.said.add(key)
            self.console.print(line, highlight=False, markup=False)

    def _table(self) -> Group:
        table = Table(title="Ray cluster", title_justify="left")
        for column in ("node", "machine class", "slots", "running", "done", "failed"):
            table.add_column(column, justify="right" if column in ("slots", "done", "failed") else "left")
        for n in self.status["nodes"]:
            table.add_row(self._name(n) + ("" if n["alive"] else " [red](lost)[/]"), n["machine_class"] or "?", f"{n['slots']:g}",
                          ", ".join(n["running"]) or "-", str(n["done"]), f"[red]{n['failed']}[/]" if n["failed"] else "0")
        waiting = self.status["waiting"]
        running = sum(len(n["running"]) for n in self.status["nodes"])
        queued = max(0, self.total - self.done - running - len(waiting))
        elapsed = time.monotonic() - self.started
        summary = Text(f"{self.done}/{self.total} done, {running} running, {len(waiting)} waiting for a slot"
                       f"{' (' + ', '.join(waiting) + ')' if waiting else ''}, {queued} queued; "
                       f"{elapsed // 60:.0f} min {elapsed % 60:.0f} s")
        return Group(table, summary)
