"""Terminal output: the live progress of a sweep and the results table printed at the end."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from harness import metrics as registry
from harness import store
from harness.measure import sweep

STATUS_STYLE = {"ok": "green", "oom": "red", "timeout": "yellow", "error": "red", "skipped": "dim",
                "over_budget": "yellow"}


def row_line(row: dict[str, Any]) -> str:
    """One line per finished configuration (also readable in a CI log)."""
    m = row["metrics"]
    status = row["status"]
    parts = [f"[{STATUS_STYLE[status]}]{status}[/]"]
    if m.get("peak_rss_mb") is not None:
        parts.append(f"peak {m['peak_rss_mb']:.0f} MiB")
    if m.get("latency_p95_s") is not None:
        parts.append(f"p95 {m['latency_p95_s']:.2f} s  RTF {m['rtf']:.3f}")
    if stream := m.get("stream"):
        parts.append(f"chunk p95 {stream['chunk_latency_p95_s']:.2f} s  final {stream['final_latency_p95_s']:.2f} s after the audio")
    for lang, stats in m.get("languages", {}).items():
        wer = registry.BY_NAME["wer"]
        parts.append(f"WER {lang} {wer.cell(stats.get('wer'), registry.interval(wer, row, lang))}"
                     + (f" ({stats['flagged']} flagged)" if stats.get("flagged") else ""))
    if status != "ok":
        parts.append(row["reason"].splitlines()[0][:160] if row["reason"] else "")
    for warning in row.get("warnings", []):
        parts.append(f"[yellow]warning: {warning}[/]")
    return "  ".join(parts)


def profile_line(row: dict[str, Any]) -> str:
    """A profiled run in one line: its headline finding and where its artifacts are."""
    summary = row.get("profile_summary") or {}
    if row["status"] != "ok" or "error" in summary:
        return f"[{STATUS_STYLE[row['status']]}]{row['status']}[/]  {summary.get('error') or row['reason'].splitlines()[0][:160]}"
    if row["profiler"] == "memray":
        top = summary["top_sites_at_peak"][0] if summary["top_sites_at_peak"] else None
        finding = (f"peak heap {summary['peak_heap_mb']:.0f} MiB at {summary.get('peak_at_s', 0):.1f} s "
                   f"({summary.get('peak_phase', 'unknown')})"
                   + (f"; largest at peak: {top['site']} {top['mb']:.0f} MiB" if top else ""))
    else:
        share = summary.get("cpu_share") or {}
        finding = "CPU time: " + (", ".join(f"{k} {v:.0%}" for k, v in share.items()) or "no samples")
    return f"{finding}  -> {', '.join(row['profile'].values())}"


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
            doing = f"profiling {p.spec.run_id} with {p.profiler}" if p.profiler else f"running {p.spec.run_id}"
            self.progress.update(self.task, description=doing, completed=p.done)
            return
        self.progress.update(self.task, completed=p.done)
        if p.profiler:
            self.console.print(f"[profile {p.profiler}] {p.spec.run_id}: {profile_line(p.row)}", highlight=False)
        else:
            self.console.print(f"[{p.done}/{p.total}] {p.spec.run_id}: {row_line(p.row)}", highlight=False)


def results_table(rows: list[dict[str, Any]], title: str) -> Table:
    """The configurations and the metrics harness.metrics shows on the CONSOLE. A warm timing taken while
    a NOISE metric (CPU steal, foreign load) was past its limit is marked `!` (the row has a warning)."""
    rows = [r for r in rows if not r.get("profiler")]  # not a measurement: its figures include the profiler's overhead
    langs = sorted({lang for r in rows for lang in r["metrics"].get("languages", {})})
    synthetic = {lang: all(r["metrics"]["languages"][lang].get("synthetic") for r in rows
                           if lang in r["metrics"].get("languages", {})) for lang in langs}
    columns = registry.columns(registry.CONSOLE, langs, rows)
    table = Table(title=title, title_justify="left")
    for header in ("configuration", "status"):
        table.add_column(header, justify="left")
    for metric, lang, _ in columns:
        table.add_column(metric.header(lang) + (" (synthetic)" if lang and synthetic[lang] else ""), justify="right")
    marked = False
    for r in rows:
        busy = bool(registry.noisy(r))
        cells = [store.short_name(r), f"[{STATUS_STYLE[r['status']]}]{r['status']}[/]"]
        for metric, lang, _ in columns:
            value = metric.value(r, lang)
            mark = busy and metric.warm_timing and value is not None
            marked |= mark
            cells.append(metric.cell(value, registry.interval(metric, r, lang)) + ("[yellow]![/]" if mark else ""))
        table.add_row(*cells)
    if marked:
        limits = ", ".join(f"{m.noun} > {m.cell(m.limit)}" for m in registry.judged(registry.NOISE))
        table.caption = f"! warm timings taken while the machine was busy ({limits}): uncertain"
        table.caption_justify = "left"
    return table
