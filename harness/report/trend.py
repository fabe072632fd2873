"""The trend index: every run of a reports folder or of a history store (harness.history), over time,
with a chart per metric (the metrics harness.metrics shows in TREND, per language for WER).

A chart has a line per machine class x configuration, its points link to their run's report, a point
`harness compare` flagged (its run's compare.json says the metric got worse) is ringed in red, and the
band the newest judged run was held against (its compare.json's history window: the window's median
+- 3 robust standard deviations of each line) is shaded. Charts are inline SVG rendered by the template from plain data.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import history, store
from harness import metrics as registry
from harness.analyze.compare import DEFAULT_POLICY
from harness.analyze.history_baseline import median_spread
from harness.analyze.recommend import recommend
from harness.contract import machine_class
from harness.errors import UserError
from harness.report.render import environment

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79")
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 560, 250, 52, 12, 10, 46  # px: the plot area is inside the margins
MAX_DATE_LABELS = 6
SPREADS = DEFAULT_POLICY["history"]["spread_factor"]  # the band: the window's median +- this many robust deviations


def collect(reports_dir: Path) -> list[dict[str, Any]]:
    """One entry per run (oldest first): the run directories in `reports_dir` and the entries of the
    history store it is (or holds), skipping folders without results and, with a warning naming it
    and the problem, a run whose files cannot be read. Each entry's `configs` come from the DataFrame
    (harness.analyze.frame) of every run: the metrics harness.metrics shows in TREND, raw (`values`,
    per-language ones as NAME_LANG) and as table cells (run-level ones)."""
    return _collect(reports_dir)[0]


def _run_dirs(reports_dir: Path) -> list[Path]:
    dirs = [p.parent for p in sorted(reports_dir.glob(f"*/{store.RESULTS_FILE}"))]
    if (reports_dir / history.RUNS).is_dir():
        dirs += [entry.path for entry in history.entries(reports_dir)]
    return dirs


def _collect(reports_dir: Path) -> tuple[list[dict[str, Any]], list[tuple[registry.Metric, str | None, str]]]:
    from harness.analyze import frame

    runs: list[dict[str, Any]] = []
    rows_of: dict[str, list[dict[str, Any]]] = {}
    for run_dir in _run_dirs(reports_dir):
        try:
            entry = _run_entry(run_dir, reports_dir)
        except UserError as exc:
            warnings.warn(f"{run_dir}: left out of the index: {exc}", stacklevel=2)
            continue
        if entry is not None:
            run, rows_of[run["dir"]] = entry
            runs.append(run)
    runs.sort(key=lambda run: run["started_at"])
    df = frame.from_runs((run["dir"], rows_of[run["dir"]]) for run in runs)
    langs = sorted(df["lang"].dropna().unique())
    columns = registry.columns(registry.TREND, langs, [r for rows in rows_of.values() for r in rows])
    by_dir: dict[str, list[dict[str, Any]]] = {run["dir"]: run["configs"] for run in runs}
    wide = frame.wide(df, registry.shown_in(registry.TREND))
    keys = [key for _, _, key in columns]
    for line in frame.records(wide[["run_dir", "run_id", "name", "scenario", "status", "machine_class", *keys]]):
        by_dir[line["run_dir"]].append({
            "run_id": line["run_id"], "name": line["name"], "scenario": line["scenario"], "status": line["status"],
            "machine_class": line["machine_class"], "values": {key: line.get(key) for key in keys},
            "cells": [metric.cell(line.get(key)) for metric, lang, key in columns if lang is None]})
    return runs, columns


def _run_entry(run_dir: Path, reports_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    rows = store.read_rows(run_dir)
    if not rows:
        return None
    rec_path = run_dir / "recommendation.json"
    rec = _recommendation(rec_path) if rec_path.is_file() else recommend(rows, {})
    env = store.run_environment(run_dir, rows)
    flagged, window = _verdicts(run_dir / "compare.json") if (run_dir / "compare.json").is_file() else ({}, [])
    return {
        "dir": run_dir.relative_to(reports_dir).as_posix(), "started_at": env.get("started_at") or "",
        "scenario": rows[0]["scenario"], "commit": (env.get("git_commit") or "")[:10], "machine_class": machine_class(env),
        "has_report": (run_dir / "index.html").is_file(),
        "recommended": rec["recommended"]["run_id"] if rec.get("recommended") else None,
        "answer": rec.get("answer", ""),
        "counts": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
        "flagged": flagged, "window": window,
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


def _verdicts(path: Path) -> tuple[dict[str, list[str]], list[str]]:
    """From `harness compare`'s compare.json: {run id: the verdict keys that got worse} of the configurations
    flagged as regressions, and the ids of the history window the run was judged against."""
    report = store.read_json_object(path)
    configs, window = report.get("configs", []), report.get("window", [])
    if not (isinstance(configs, list) and all(isinstance(c, dict) and isinstance(c.get("metrics"), dict) for c in configs)):
        raise store.invalid(str(path), "configs", configs, "a list of objects with metrics")
    if not (isinstance(window, list) and all(isinstance(w, dict) and isinstance(w.get("id"), str) for w in window)):
        raise store.invalid(str(path), "window", window, "a list of objects with an id")
    flagged = {c.get("run_id"): [k for k, m in c["metrics"].items() if isinstance(m, dict) and m.get("verdict") == "worse"]
               for c in configs if c.get("regression")}
    return flagged, [w["id"] for w in window]


def _time(started_at: str) -> float | None:
    try:
        return datetime.fromisoformat(started_at).timestamp()
    except ValueError:
        return None


def chart(runs: list[dict[str, Any]], metric: registry.Metric, lang: str | None, key: str) -> dict[str, Any] | None:
    """One chart's plain data (None without a value): pixel coordinates of every line and point, its
    ticks, the shaded window band, each point's link, tooltip and whether it was flagged."""
    verdict_key = f"{metric.verdict_key}.{lang}" if lang else metric.verdict_key
    points: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if (t := _time(run["started_at"])) is None:
            continue
        for c in run["configs"]:
            if (value := c["values"].get(key)) is not None:
                points.setdefault(f"{c['machine_class']} · {c['scenario']}: {c['name']}", []).append({
                    "t": t, "value": value, "run": run, "flagged": verdict_key in run["flagged"].get(c["run_id"], [])})
    if not points:
        return None
    times = [p["t"] for pts in points.values() for p in pts]
    values = [p["value"] for pts in points.values() for p in pts]
    t0, t1 = min(times), max(times)
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return round(LEFT + (t - t0) / (t1 - t0) * plot_w if t1 > t0 else LEFT + plot_w / 2, 1)

    def y(v: float) -> float:
        return round(TOP + (high - v) / (high - low) * plot_h, 1)

    window = _window(runs)
    series, bands = [], []
    for i, (label, pts) in enumerate(sorted(points.items())):
        color = COLORS[i % len(COLORS)]
        marks = [{"x": x(p["t"]), "y": y(p["value"]), "flagged": p["flagged"],
                  "href": f"{p['run']['dir']}/index.html" if p["run"]["has_report"] else None,
                  "tip": f"{label}\n{p['run']['started_at']} ({p['run']['dir']})\n{metric.title(lang)}: "
                         f"{metric.text(p['value'])}" + ("\nflagged: worse than its baseline" if p["flagged"] else "")}
                 for p in pts]
        series.append({"label": label, "color": color, "marks": marks,
                       "points": " ".join(f"{m['x']},{m['y']}" for m in marks)})
        if window and (held := [p for p in pts if p["run"]["dir"] in window["dirs"]]):
            median, spread = median_spread([p["value"] for p in held])
            top, bottom = y(min(median + SPREADS * spread, high)), y(max(median - SPREADS * spread, low))
            left = x(min(p["t"] for p in held))
            bands.append({"x": left, "y": top - 2, "width": max(x(window["t"]) - left, 4.0), "height": bottom - top + 4,
                          "color": color})
    span_days = (t1 - t0) / 86400
    ticks = [t0 + (t1 - t0) * k / (MAX_DATE_LABELS - 1) for k in range(MAX_DATE_LABELS)] if t1 > t0 else [t0]
    fmt = "%Y-%m-%d" if span_days >= 3 else "%m-%d %H:%M"
    return {"title": metric.title(lang), "width": WIDTH, "height": HEIGHT, "series": series, "bands": bands,
            "plot": {"left": LEFT, "top": TOP, "right": WIDTH - RIGHT, "bottom": HEIGHT - BOTTOM},
            "x_ticks": [{"x": x(t), "label": datetime.fromtimestamp(t, timezone.utc).strftime(fmt),
                         "anchor": "start" if k == 0 and len(ticks) > 1 else "end" if k == len(ticks) - 1 > 0 else "middle"}
                        for k, t in enumerate(ticks)],
            "y_ticks": [{"y": y(v), "label": metric.cell(v)} for v in (low + (high - low) * k / 4 for k in range(5))]}


def _window(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest run judged against a history window: {"dirs": the window's runs, "t": that run's time}."""
    for run in reversed(runs):
        if run["window"] and (t := _time(run["started_at"])) is not None:
            ids = set(run["window"])
            return {"dirs": {r["dir"] for r in runs if Path(r["dir"]).name in ids}, "t": t}
    return None


def write_index(reports_dir: Path) -> Path:
    if not reports_dir.is_dir():
        raise UserError(f"{reports_dir}: not a directory")
    runs, columns = _collect(reports_dir)
    charts = [c for metric, lang, key in columns if (c := chart(runs, metric, lang, key))]
    header = " / ".join(metric.header() for metric, lang, _ in columns if lang is None)
    path = reports_dir / "index.html"
    html = environment().get_template("index.html.j2").render(runs=list(reversed(runs)), charts=charts,
                                                              reports_dir=str(reports_dir), metrics_header=header)
    path.write_text(html, encoding="utf-8")
    return path
