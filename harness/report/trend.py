"""The trend index: every run directory under a reports folder, over time, with a chart per metric."""

from __future__ import annotations

import base64
import io
import warnings
from pathlib import Path
from typing import Any

from harness import store
from harness.analyze.recommend import recommend
from harness.errors import UserError
from harness.report.render import environment

TREND_METRICS = (("peak_rss_mb", "peak RSS (MiB)"), ("latency_p95_s", "p95 latency (s)"), ("rtf", "real-time factor"))


def collect(reports_dir: Path) -> list[dict[str, Any]]:
    """One entry per run directory (oldest first), skipping folders without results and, with a
    warning naming it and the problem, a run directory whose files cannot be read."""
    runs = []
    for results_path in sorted(reports_dir.glob(f"*/{store.RESULTS_FILE}")):
        try:
            run = _run_entry(results_path.parent)
        except UserError as exc:
            warnings.warn(f"{results_path.parent}: left out of the index: {exc}", stacklevel=2)
            continue
        if run is not None:
            runs.append(run)
    runs.sort(key=lambda run: run["started_at"])
    return runs


def _run_entry(run_dir: Path) -> dict[str, Any] | None:
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
        "configs": [{"run_id": r["run_id"], "name": store.short_name(r), "status": r["status"],
                     **{k: r["metrics"].get(k) for k, _ in TREND_METRICS},
                     "wer": {lang: s.get("wer") for lang, s in r["metrics"].get("languages", {}).items()}}
                    for r in rows if not r.get("profiler")],
    }


def _recommendation(path: Path) -> dict[str, Any]:
    """recommendation.json as `harness report` wrote it (the index shows its answer and chosen run id)."""
    rec = store.read_json_object(path)
    chosen = rec.get("recommended")
    if chosen is not None and not (isinstance(chosen, dict) and isinstance(chosen.get("run_id"), str)):
        raise store.invalid(str(path), "recommended", chosen, "null or an object with a run_id")
    if not isinstance(rec.get("answer", ""), str):
        raise store.invalid(str(path), "answer", rec["answer"], "a string")
    return rec


def _chart(runs: list[dict[str, Any]], metric: str, label: str) -> str | None:
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for i, run in enumerate(runs):
        for c in run["configs"]:
            value = c["wer"].get(metric[4:]) if metric.startswith("wer.") else c.get(metric)
            if value is not None:
                series.setdefault(f"{run['scenario']}: {c['name']}", []).append((i, value))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3))
    for name, pts in sorted(series.items()):
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", linewidth=1, markersize=3, label=name)
    ax.set_xticks(range(len(runs)), [run["started_at"][:10] for run in runs], rotation=45, fontsize=7, ha="right")
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
    runs = collect(reports_dir)
    langs = sorted({lang for run in runs for c in run["configs"] for lang in c["wer"]})
    metrics = [*TREND_METRICS, *((f"wer.{lang}", f"WER {lang} (fraction)") for lang in langs)]
    charts = [{"title": label, "png": png} for metric, label in metrics if (png := _chart(runs, metric, label))]
    path = reports_dir / "index.html"
    html = environment().get_template("index.html.j2").render(runs=list(reversed(runs)), charts=charts,
                                                              reports_dir=str(reports_dir))
    path.write_text(html, encoding="utf-8")
    return path
