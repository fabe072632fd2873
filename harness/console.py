"""Terminal output: the live progress of a sweep and the results table printed at the end."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from harness import results, sweep

STATUS_STYLE = {"ok": "green", "oom": "red", "timeout": "yellow", "error": "red", "skipped": "dim",
                "over_budget": "yellow"}


def _fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def row_line(row: dict[str, Any]) -> str:
    """One line per finished configuration (also readable in a CI log)."""
    m = row["metrics"]
    status = row["status"]
    parts = [f"[{STATUS_STYLE[status]}]{status}[/]"]
    if m.get("peak_rss_mb") is not None:
        parts.append(f"peak {m['peak_rss_mb']:.0f} MiB")
    if m.get("latency_p95_s") is not None:
        parts.append(f"p95 {m['latency_p95_s']:.2f} s  RTF {m['rtf']:.3f}")
    for lang, stats in m.get("languages", {}).items():
        parts.append(f"WER {lang} {_fmt(stats['wer'] * 100 if stats['wer'] is not None else None, '.1f', '%')}")
    if status != "ok":
        parts.append(row["reason"].splitlines()[0][:160] if row["reason"] else "")
    for warning in row.get("warnings", []):
        parts.append(f"[yellow]warning: {warning}[/]")
    return "  ".join(parts)


class SweepDisplay:
    """A live progress bar (current config, done/total, elapsed, ETA) plus a line per result."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=True,
        )
        self.task: Any = None

    def __enter__(self) -> SweepDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, p: sweep.Progress) -> None:
        if self.task is None:
            self.task = self.progress.add_task("", total=p.total, completed=p.done)
        if p.row is None:
            self.progress.update(self.task, description=f"running {p.spec.run_id}", completed=p.done)
            return
        self.progress.update(self.task, completed=p.done)
        self.console.print(f"[{p.done}/{p.total}] {p.spec.run_id}: {row_line(p.row)}", highlight=False)


def results_table(rows: list[dict[str, Any]], title: str) -> Table:
    langs = sorted({lang for r in rows for lang in r["metrics"].get("languages", {})})
    synthetic = {lang: all(r["metrics"]["languages"][lang].get("synthetic") for r in rows
                           if lang in r["metrics"].get("languages", {})) for lang in langs}
    table = Table(title=title, title_justify="left")
    for header in ("configuration", "status", "peak RSS MiB", "load s", "cold s", "p50 s", "p95 s", "RTF"):
        table.add_column(header, justify="left" if header in ("configuration", "status") else "right")
    for lang in langs:
        table.add_column(f"WER {lang}" + (" (synthetic)" if synthetic[lang] else ""), justify="right")
    for r in rows:
        m = r["metrics"]
        cells = [results.short_name(r), f"[{STATUS_STYLE[r['status']]}]{r['status']}[/]", _fmt(m.get("peak_rss_mb"), ".0f"),
                 _fmt(m.get("load_s")), _fmt(m.get("first_latency_s")), _fmt(m.get("latency_p50_s")),
                 _fmt(m.get("latency_p95_s")), _fmt(m.get("rtf"), ".3f")]
        for lang in langs:
            wer = m.get("languages", {}).get(lang, {}).get("wer")
            cells.append(_fmt(None if wer is None else wer * 100, ".1f", " %"))
        table.add_row(*cells)
    return table
