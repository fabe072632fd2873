"""Baselines from history: `harness compare history:DIR CURRENT [--window N]` judges a run against the
last N runs (default 7) of its machine class in a history store (harness.history) that measured every
configuration it measured, rather than against one committed run:

- memory (the metrics compare judges as MEMORY: peak RSS, the fitted limit when measured): worse when
  the increase over the window's median passes the policy's `peak_rss` margins (both, as against one
  run) and `history.spread_factor` times the window's spread (1.4826 x the median absolute deviation,
  a standard deviation robust to one odd night);
- warm latency and RTF (TIMING): compare's median ratio and Mann-Whitney U test, with the timings of
  every window run pooled (runs taken under CPU steal or foreign load past the policy stay out);
- WER per language (ACCURACY): compare's judge (the paired bootstrap on the shared utterances) against
  the window run with the median WER when its interval is conclusive (worse or better); otherwise the
  window decides, as for memory: every night transcribes the same utterances, so a change past
  `wer.max_increase_points` and `history.spread_factor` times the window's spread is a change in what
  the system outputs even when too little speech makes the paired interval inconclusive, and a
  smaller one is within noise. The detail gives both;
- the status (ok -> oom/error/timeout): compare's judge against that same run.
With fewer than `history.min_runs` runs of the machine class there is no verdict ("no history for
machine class X: N runs"); that is a regression only when `history.no_history_is_regression` says so.
"""

from __future__ import annotations

import math
import statistics
import warnings
from pathlib import Path
from typing import Any

from harness import history, store
from harness import metrics as registry
from harness.analyze import compare as judge
from harness.errors import UserError

PREFIX = "history:"
MAD_TO_SIGMA = 1.4826  # the median absolute deviation of normal data x this = its standard deviation


def compare(root: Path, current: Path, policy: dict[str, Any], window: int) -> dict[str, Any]:
    p = policy["history"]
    if window < p["min_runs"]:
        raise UserError(f"--window: invalid value {window}; expected an integer >= {p['min_runs']} (history.min_runs)")
    machine, found = history.candidates(root, current)
    cur_rows = [r for r in judge.load_side(current)[0] if not r.get("profiler")]
    runs: list[tuple[history.Entry, dict[str, dict[str, Any]]]] = []
    for entry in reversed(found):
        if len(runs) == window:
            break
        try:
            runs.insert(0, (entry, {r["run_id"]: r for r in store.read_rows(entry.path)}))
        except UserError as exc:
            warnings.warn(f"{entry.path}: left out of the window: {exc}", stacklevel=2)
    head = {"current": str(current), "machine": {"baseline": machine, "current": machine}, "machine_mismatch": False,
            "window": [{"id": e.id, "path": e.relative(root), "started_at": e.started_at} for e, _ in runs]}
    if len(runs) < p["min_runs"]:
        return {"policy": policy, "configs": [], "regression": p["no_history_is_regression"], "baseline": f"{PREFIX}{root}",
                "note": f"no history for machine class {machine}: {len(runs)} runs", **head}
    references = {row["run_id"]: _median_wer_run(runs, row["run_id"]) for row in cur_rows}
    report = judge.compare_rows([row for _, row in references.values()], cur_rows, policy)
    for config in report["configs"]:
        entry, _ = references[config["run_id"]]
        past = [row for _, rows in runs if (row := rows.get(config["run_id"])) and row["status"] == "ok"]
        current_row = next(r for r in cur_rows if r["run_id"] == config["run_id"])
        if past and current_row["status"] == "ok":
            _judge_on_window(config["metrics"], past, current_row, policy, entry.id)
        config["regression"] = judge.regressed(config["metrics"], policy)
    report.update(regression=any(c["regression"] for c in report["configs"]), **head,
                  baseline=f"{PREFIX}{root}: the last {len(runs)} runs of {machine}")
    return report


def _median_wer_run(runs: list[tuple[history.Entry, dict[str, dict[str, Any]]]], run_id: str) -> tuple[history.Entry, dict[str, Any]]:
    """The window run whose WER (mean over languages) is the median among its ok runs of `run_id`."""
    rows = [(e, rows[run_id]) for e, rows in runs if run_id in rows]
    ok = [(e, r) for e, r in rows if r["status"] == "ok"] or rows
    ranked = sorted(ok, key=lambda er: statistics.fmean(wers) if (wers := [
        lang["wer"] for lang in er[1]["metrics"].get("languages", {}).values() if lang.get("wer") is not None]) else math.inf)
    return ranked[(len(ranked) - 1) // 2]


def _judge_on_window(out: dict[str, dict[str, Any]], past: list[dict[str, Any]], cur: dict[str, Any],
                     policy: dict[str, Any], reference: str) -> None:
    for metric in registry.judged(registry.MEMORY):
        values = [v for r in past if (v := metric.value(r)) is not None]
        if values and metric.value(cur) is not None:
            out[metric.verdict_key] = _memory_verdict(values, metric.value(cur), policy)
    for metric in registry.judged(registry.ACCURACY):
        for lang in cur["metrics"].get("languages", {}):
            values = [v for r in past if (v := metric.value(r, lang)) is not None]
            if values and (key := f"{metric.verdict_key}.{lang}") in out and (value := metric.value(cur, lang)) is not None:
                out[key] = _accuracy_verdict(values, value, out[key], policy, reference)
    quiet = [r for r in past if not _busy(r, policy)]
    for metric in registry.judged(registry.TIMING):
        pooled = [t for r in quiet for t in judge._per_timing(r, metric)]
        verdict = judge._timing_verdict(pooled, judge._per_timing(cur, metric), policy)
        verdict["detail"] += f"; {len(quiet)} of {len(past)} window runs pooled (the others were taken on a busy machine)" \
            if len(quiet) < len(past) else f"; {len(past)} window runs pooled"
        for m, taken in _busy(cur, policy):
            verdict.update(verdict="insufficient evidence", detail=f"{judge._busy(m, taken)}; " + verdict["detail"])
        out[metric.verdict_key] = verdict


def _busy(row: dict[str, Any], policy: dict[str, Any]) -> list[tuple[registry.Metric, float]]:
    """The NOISE metrics of a row past the policy's limits: its timings are not evidence."""
    return [(m, v) for m in registry.judged(registry.NOISE)
            if (v := m.value(row) or 0) > policy["latency"].get(f"max_{m.name}", m.limit)]


def median_spread(values: list[float]) -> tuple[float, float]:
    """The median and the robust standard deviation (1.4826 x the median absolute deviation)."""
    median = statistics.median(values)
    return median, MAD_TO_SIGMA * statistics.median(abs(v - median) for v in values)


def _accuracy_verdict(values: list[float], cur: float, paired: dict[str, Any], policy: dict[str, Any],
                      reference: str) -> dict[str, Any]:
    median, spread = median_spread(values)
    points = 100 * (cur - median)
    margin = max(policy["wer"]["max_increase_points"], policy["history"]["spread_factor"] * 100 * spread)
    verdict = paired["verdict"]
    if verdict not in ("worse", "better"):  # the paired interval is not conclusive: the window decides
        verdict = ("worse" if points > 0 else "better") if abs(points) > margin else "within noise"
    return {**paired, "verdict": verdict, "baseline": median, "spread": round(spread, 4),
            "detail": f"{points:+.1f} points over the median of {len(values)} runs (spread {100 * spread:.1f} points; "
                      f"judged past {margin:.1f}); paired with {reference}: {paired['verdict']}, {paired['detail']}"}


def _memory_verdict(values: list[float], cur: float, policy: dict[str, Any]) -> dict[str, Any]:
    p = policy["peak_rss"]
    median, spread = median_spread(values)
    delta = cur - median
    margin = max(p["max_increase_fraction"] * median, p["max_increase_mb"], policy["history"]["spread_factor"] * spread)
    verdict = ("worse" if delta > 0 else "better") if abs(delta) > margin else "within noise"
    return {"verdict": verdict, "baseline": median, "current": cur, "delta": round(delta, 1), "spread": round(spread, 2),
            "detail": f"{delta:+.1f} MiB ({delta / median:+.1%}) over the median of {len(values)} runs "
                      f"(spread {spread:.1f} MiB; judged past {margin:.1f} MiB)"}
