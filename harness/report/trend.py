"""The trend index: every run directory under a reports folder, over time, with a chart per metric
(the metrics harness.metrics shows in TREND)."""

from __future__ import annotations

import base64
import io
import warnings
from pathlib import Path
from typing import Any

from harness import metrics as registry
from harness import store
from harness.analyze.recommend import recommend
from harness.errors import UserError
from harness.report.render import environment


def collect(reports_dir: Path) -> list[dict[str, Any]]:
    """One entry per run directory (oldest first), skipping folders without results and, with a
    warning naming it and the problem, a run directory whose files cannot be read. Each entry's
    `configs` come from the DataFrame (harness.analyze.frame) of every run: the metrics harness.metrics
    shows in TREND, raw (`values`, per-language ones as NAME_LANG) and as table cells (run-level ones)."""
    return _collect(reports_dir)[0]


def _collect(reports_dir: Path) -> tuple[list[dict[str, Any]], list[tuple[registry.Metric, str | None, str]]]:
    from harness.analyze import frame

    runs: list[dict[str, Any]] = []
    rows_of: dict[str, list[dict[str, Any]]] = {}
    for results_path in sorted(reports_dir.glob(f"*/{store.RESULTS_FILE}")):
        try:
            entry = _run_entry(results_path.parent)
        except UserError as exc:
            warnings.warn(f"{results_path.parent}: left out of the index: {exc}", stacklevel=2)
            continue
        if entry is not None:
            run, rows_of[run["dir"]] = entry
            runs.append(run)
    runs.sort(key=lambda run: run["started_at"])
    df = frame.from_runs((run["dir"], rows_of[run["dir"]]) for run in runs)
    langs = sorted(df["lang"].dropna().unique())
    columns = registry.columns(registry.TREND, langs)
    by_dir: dict[str, list[dict[str, Any]]] = {run["dir"]: run["configs"] for run in runs}
    wide = frame.wide(df, registry.shown_in(registry.TREND))
    for line in frame.records(wide[["run_dir", "run_id", "name", "scenario", "status", *(key for _, _, key in columns)]]):
        by_dir[line["run_dir"]].append({
            "run_id": line["run_id"], "name": line["name"], "scenario": line["scenario"], "status": line["status"],
            "values": {key: line.get(key) for _, _, key in columns},
            "cells": [metric.cell(line.get(key)) for metric, lang, key in columns if lang is None]})
    return runs, columns


def _run_entry(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    rows = store.read_rows(run_dir)
    if not rows:
        return None
    rec_path = run_dir / "recommendation.json"
    rec = _recommendation(rec_path) if rec_path.is_file() else recommend(rows, {})
    started = rows[0]["environment"].get("started_at", "")
    return {
        "dir": run_dir.name, "started_at": started, "scenario": rows[0]["scenario"],
        "has_report": (run_dir / "index.html").is_file(),
        "recommended": rec["recommended"]["run_id"] if rec.get("recommended") else None,
        "answer": rec.get("answer", ""),
        "counts": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
        "configs": [],  # filled by collect, from the DataFrame of every run
    }, rows


def _recommendation(path: Path) -> dict[str, Any]:
    """recommendation.json as `harness report` wrote it (the index shows its answer and chosen run id)."""
    rec = store.read_json_object(path)
    chosen = rec.get("recommended")
    if chosen is not None and not (isinstance(chosen, dict) and isinstance(chosen.get("run_id"), str)):
        raise store.invalid(str(path), "recommended", chosen, "null or an object with a run_id")
    if not isinstance(rec.get("answer", ""), str):
        raise store.invalid(str(path), "answer", rec["answer"], "a string")
    return rec


MAX_DATE_LABELS = 12  # on a chart's time axis


def _chart(runs: list[dict[str, Any]], key: str, label: str) -> str | None:
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for i, run in enumerate(runs):
        for c in run["configs"]:
            if (value := c["values"].get(key)) is not None:
                series.setdefault(f"{c['scenario']}: {c['name']}", []).append((i, value))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3))
    for name, pts in sorted(series.items()):
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", linewidth=1, markersize=3, label=name)
    shown = range(0, len(runs), -(-len(runs) // MAX_DATE_LABELS))  # a date label on every n-th run: 100 take seconds to draw and overlap
    ax.set_xticks(shown, [runs[i]["started_at"][:10] for i in shown], rotation=45, fontsize=7, ha="right")
    ax.set_ylabel(label, fontsize=8)
    ax.set_title(label, fontsize=9)
    ax.grid(alpha=0.3)
    if len(series) <= 8:
        ax.legend(fontsize=6)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_index(reports_dir: Path) -> Path:
    if not reports_dir.is_dir():
        raise UserError(f"{reports_dir}: not a directory")
    runs, columns = _collect(reports_dir)
    charts = []
    for metric, lang, key in columns:  # a chart per metric shown in TREND (and per language)
        if png := _chart(runs, key, metric.title(lang)):
            charts.append({"title": metric.title(lang), "png": png})
    header = " / ".join(metric.header() for metric, lang, _ in columns if lang is None)
    path = reports_dir / "index.html"
    html = environment().get_template("index.html.j2").render(runs=list(reversed(runs)), charts=charts,
                                                              reports_dir=str(reports_dir), metrics_header=header)
    path.write_text(html, encoding="utf-8")
    return path
