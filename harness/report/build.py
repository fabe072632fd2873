"""Run directory -> the report's plain data (what the templates render and the tests check)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import metrics as registry
from harness import store
from harness.analyze import compare, deploy
from harness.analyze.recommend import flatten_budgets, parse_budget_overrides, recommend, wer_increase
from harness.errors import UserError
from harness.plan.scenario import BUDGET_WER_INCREASE, Scenario
from harness.report import drilldown, plots


def _scenario_info(scenario: Scenario | None, rows: list[dict[str, Any]]) -> dict[str, Any]:
    if scenario is not None:  # the run directory's copy
        return {"name": scenario.name, "description": scenario.description, "budgets": scenario.budgets,
                "question": scenario.question}
    return {"name": rows[0]["scenario"], "description": "", "budgets": {}, "question": ""}


def machine_line(env: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items())
    parts = [env.get("cpu"), f"{env['logical_cores']} logical cores" if env.get("logical_cores") else None,
             f"{env['ram_mb']} MiB RAM" if env.get("ram_mb") else None, env.get("os"),
             f"Python {env['python']}" if env.get("python") else None, packages or None,
             f"commit {env['git_commit']}" if env.get("git_commit") else None,
             f"started {env['started_at']}" if env.get("started_at") else None]
    return "; ".join(p for p in parts if p) or "unknown machine"


def _verdicts(rows: list[dict[str, Any]], rec: dict[str, Any]) -> dict[str, str]:
    verdict = {v["run_id"]: v["why"] for v in rec["not_chosen"]}
    if rec["recommended"]:
        verdict[rec["recommended"]["run_id"]] = "recommended: meets every budget with the least memory" + (
            f"; tie: {rec['tie']['text']}" if rec.get("tie") else
            " (peaks within 3 % tie: lower p95 when compare's test tells the latencies apart, else memory, then WER)")
    return {r["run_id"]: verdict.get(r["run_id"], "") for r in rows}


def build(run_dir: Path, budget_overrides: list[str] | None = None,
          headroom: float = deploy.DEFAULT_HEADROOM, out_dir: Path | None = None) -> dict[str, Any]:
    """`out_dir`: where the report goes when not in the run directory (its links to profiles follow)."""
    rows, started_with = store.read_run(run_dir)
    if not rows:
        raise UserError(f"{run_dir}: no results to report")
    scenario = _scenario_info(started_with, rows)
    machine = machine_line(store.run_environment(run_dir, rows))  # a bad environment.json fails before the plots
    budgets = parse_budget_overrides(budget_overrides or [], scenario["budgets"])
    rec = recommend(rows, budgets)
    deployment = deploy.snippet(rec["recommended"], headroom) if rec["recommended"] else None
    verdicts = _verdicts(rows, rec)
    measured = [r for r in rows if not r.get("profiler")]
    languages = sorted({lang for r in rows for lang in r["metrics"].get("languages", {})})
    synthetic = sorted({lang for r in rows for lang, s in r["metrics"].get("languages", {}).items() if s.get("synthetic")})

    figures = plots.figures(measured, languages, budgets, rec["recommended"]["run_id"] if rec["recommended"] else None)

    table = _table(rows, run_dir, languages, verdicts)
    runs = [_run_detail(r, verdicts[r["run_id"]]) for r in rows]
    if out_dir is not None and out_dir.resolve() != run_dir.resolve():
        _relink(table, runs, os.path.relpath(run_dir.resolve(), out_dir.resolve()))
    return {
        "title": f"{scenario['name']}: Whisper deployment benchmark",
        "run_dir": str(run_dir),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scenario": scenario,
        "budgets": flatten_budgets(budgets),
        "machine": machine,
        "languages": languages,
        "synthetic_languages": synthetic,
        "recommendation": rec,
        "answer": answer(rec, deployment),
        "deployment": deployment,
        "table": table,
        "table_columns": _columns(registry.REPORT, languages, measured),
        "markdown_columns": _columns(registry.MARKDOWN, languages, measured),
        "figures": figures,
        "runs": runs,
        "overrides": _overrides(budget_overrides or [], headroom, scenario["budgets"]),
        "thin": THIN_TIMINGS if any(_thin(r) for r in measured) else None,
        "busy": [f"{store.short_name(r)}: " + ", ".join(f"{m.noun} {m.cell(v)}" for m, v in registry.noisy(r))
                 for r in measured if registry.noisy(r)],
        "search": _search_summary(run_dir),
        "run_seconds": round(sum(r["metrics"].get("run_seconds") or 0 for r in rows), 1),
        "quantization_comparison": _quantization_comparison(measured, budgets),
        "drilldown": drilldown.drilldown(next((r for r in measured if rec["recommended"]
                                               and r["run_id"] == rec["recommended"]["run_id"]), None),
                                         measured, languages),
        "flagged": _flagged(measured),
        "status_counts": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
    }


def _columns(place: str, languages: list[str], rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The metric columns of a configuration table (harness.metrics: the metrics shown at `place`)."""
    return [{"key": key, "label": metric.header(lang)} for metric, lang, key in registry.columns(place, languages, rows)]


def _table(rows: list[dict[str, Any]], run_dir: Path, languages: list[str], verdicts: dict[str, str]) -> list[dict[str, Any]]:
    """The configuration table: one line per row (a pivot of the DataFrame), its raw values, `cells`
    formatted for every metric column of the HTML and Markdown tables, the verdict and profile links."""
    from harness.analyze import frame

    profiles = _profiles_by_configuration(rows)
    measured_ids = {r["run_id"] for r in rows if not r.get("profiler")}
    shown = [m for m in registry.METRICS if registry.REPORT in m.show or registry.MARKDOWN in m.show]
    shown += [b for m in shown for b in registry.bounds(m) or ()]  # the intervals shown beside their metric
    wide = frame.records(frame.wide(frame.from_rows(rows, str(run_dir), include_profiles=True), shown))
    table = []
    for line, row in zip(wide, rows):
        if row.get("profile_of") in measured_ids:  # shown as links on the configuration's own line
            continue
        cells = {key: metric.cell(line.get(key), _interval(metric, line, lang))
                 + (" (thin)" if metric.warm_timing and _thin(row) and line.get(key) is not None else "")
                 for place in (registry.REPORT, registry.MARKDOWN) for metric, lang, key in registry.columns(place, languages, rows)}
        table.append({**line, "cells": cells, "verdict": verdicts[row["run_id"]],
                      "profiles": profiles.get(row["run_id"], [])})
    return table


# Fewer warm timings than compare's test needs: a latency or RTF from them is thin (marked in the table).
THIN_TIMINGS = compare.DEFAULT_POLICY["latency"]["min_samples"]


def _thin(row: dict[str, Any]) -> bool:
    timings = row["metrics"].get("warm_timings")
    if timings is None and row.get("samples"):
        timings = sum(len(s.get("latency_s", [])) for s in row["samples"])
    return row["status"] == "ok" and timings is not None and timings < THIN_TIMINGS


def _overrides(budget: list[str], headroom: float, scenario_budgets: dict[str, Any]) -> dict[str, Any] | None:
    """The command-line values this rendering used instead of the scenario's (None: none)."""
    if not budget and headroom == deploy.DEFAULT_HEADROOM:
        return None
    flags = [f"--budget {item}" for item in budget] + (
        [f"--headroom {headroom:g}"] if headroom != deploy.DEFAULT_HEADROOM else [])
    scenario = ", ".join(f"{k} <= {v:g}" for k, v in flatten_budgets(scenario_budgets).items()) or "none"
    return {"budget": budget, "headroom": headroom, "scenario_budgets": scenario_budgets,
            "text": f"Rendered with {' '.join(flags)} (the scenario's budgets: {scenario}; default headroom "
                    f"{deploy.DEFAULT_HEADROOM:g})"}


def _relink(table: list[dict[str, Any]], runs: list[dict[str, Any]], prefix: str) -> None:
    """Profile links of a report written outside its run directory: relative to where it is written."""
    for line in table:
        for p in line["profiles"]:
            p["href"] = f"{prefix}/{p['href']}"
    for run in runs:
        run["profile"] = {name: f"{prefix}/{path}" for name, path in run["profile"].items()}


def _interval(metric: registry.Metric, line: dict[str, Any], lang: str | None) -> tuple[Any, Any] | None:
    bounds = registry.bounds(metric)
    return (line.get(f"{bounds[0].name}_{lang}"), line.get(f"{bounds[1].name}_{lang}")) if bounds and lang else None


def _flagged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every transcript with a hallucination flag (harness.analyze.hallucination), by configuration."""
    return [{"name": store.short_name(r), "id": s["id"], "lang": s["lang"], "flags": s["flags"],
             "reference": s.get("reference"), "hypothesis": s.get("hypothesis")}
            for r in rows for s in r.get("samples", []) if s.get("flags")]


SEARCH_KEYS = ("configurations", "measured", "stopped_early", "skipped", "run_seconds")


def _search_summary(run_dir: Path) -> dict[str, Any] | None:
    """search.json (a run with --search), checked: the report shows every one of its numbers."""
    path = run_dir / "search.json"
    if not path.is_file():
        return None
    summary = store.read_json_object(path)
    for key in SEARCH_KEYS:
        if isinstance(summary.get(key), bool) or not isinstance(summary.get(key), (int, float)):
            raise store.invalid(str(path), key, summary.get(key, store.MISSING), "a number")
    return summary


MAIN_ARTIFACT = {"memray": "memray-flamegraph.html", "scalene": "scalene-profile.html"}


def _profiles_by_configuration(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """{measured run id: [{profiler, href (its main HTML), anchor (the profile row's details)}]}"""
    out: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if row.get("profiler"):
            files = row.get("profile") or {}
            out.setdefault(row["profile_of"], []).append({
                "profiler": row["profiler"], "anchor": row["run_id"],
                "href": files.get(MAIN_ARTIFACT[row["profiler"]]) or next(iter(files.values()), "")})
    return out


def _quantization_comparison(rows: list[dict[str, Any]], budgets: dict[str, Any]) -> dict[str, Any] | None:
    """For a `wer_increase_vs` budget: every configuration's WER beside its reference quantization's, the
    increase with its 95 % interval and the verdict (met / failed / insufficient data)."""
    spec = budgets.get(BUDGET_WER_INCREASE)
    if spec is None:
        return None
    lines = []
    for row in rows:
        if row["status"] != "ok" or row["config"]["quantization"] == spec["quantization"]:
            continue
        for c in wer_increase(row, rows, spec["quantization"], spec["max"]):
            lines.append({"name": store.short_name(row), **c, "within": c["verdict"] == "met"})
    return {"reference": spec["quantization"], "max": spec["max"], "lines": lines,
            "insufficient_data": spec.get("insufficient_data", "not-met")}


def answer(rec: dict[str, Any], deployment: dict[str, Any] | None) -> str:
    """One sentence for the top of the report."""
    chosen = rec["recommended"]
    if chosen is None:
        closest = rec["closest"]
        tail = f" {closest['text']}." if closest else " No configuration finished successfully."
        return "No measured configuration meets every budget." + tail
    c, m = chosen["config"], chosen["metrics"]
    pin = "" if c["cpu_pinning"]["requested"] == "none" else f", pinned ({c['cpu_pinning']['requested']})"
    valid = (chosen.get("envelope") or {}).get("text")  # absent from a recommendation.json of an older harness
    return (f"Deploy {c['backend']} {c['model']} {c['quantization']} with {c['threads']} thread(s){pin}: "
            f"peak RSS {m['peak_rss_mb']:.0f} MiB, p95 latency {m['latency_p95_s']:.2f} s, RTF {m['rtf']:.3f}"
            + (f"; memory request {deployment['memory_request_mib']} MiB, limit {deployment['memory_limit_mib']} MiB "
               f"(from the {'fitted limit' if m.get('min_limit_mb') is not None else 'peak RSS'}), "
               f"{deployment['cpu']} CPU." if deployment else ".")
            + (f" {valid[0].upper()}{valid[1:]}." if valid else ""))


def _run_detail(row: dict[str, Any], verdict: str) -> dict[str, Any]:
    c = row["config"]
    settings = (f"threads {c['threads']} (effective {c.get('threads_effective') or '-'}), "
                f"CPUs {c['cpu_pinning'].get('effective') or 'not pinned'}, beam {c.get('beam_size')}, "
                f"compute type {c.get('compute_type_effective') or c['quantization']}, "
                f"memory cap {c.get('memory_cap_mb') or 'none'}"
                + (f" ({c['memory_cap_mode']})" if c.get("memory_cap_mode") else ""))
    stream = row["metrics"].get("stream")
    if stream:
        settings += (f"; stream: {stream['chunks']} pieces, per-piece latency p50 {stream['chunk_latency_p50_s']:.2f} s / "
                     f"p95 {stream['chunk_latency_p95_s']:.2f} s, largest lag behind the audio {stream['lag_max_s']:.2f} s, "
                     f"final transcript {stream['final_latency_p50_s']:.2f} s (p95 {stream['final_latency_p95_s']:.2f} s) "
                     "after the audio ends")
        for lang, stats in row["metrics"].get("languages", {}).items():
            if "errors_at_boundaries" in stats:
                settings += f"; {lang}: {stats['errors_at_boundaries']} of {stats['errors']} word errors at a seam between pieces"
    return {"run_id": row["run_id"], "name": store.short_name(row), "status": row["status"],
            "reason": row.get("reason", ""), "verdict": verdict, "warnings": row.get("warnings", []),
            "skipped_languages": row.get("skipped_languages", {}), "settings": settings,
            "samples": row.get("samples", []), "profile": row.get("profile", {}),
            "profiler": row.get("profiler"), "profile_summary": row.get("profile_summary", {}),
            "memory": plots.memory_sparkline(row)}  # {svg (numbers only, rendered unescaped), note} or None
