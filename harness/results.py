"""The results contract (DESIGN.md): building one row per RunSpec, appending it atomically to
`results.jsonl`, reading rows back, and the flat summary table (`summary.csv`)."""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness import SCHEMA_VERSION, metrics, streaming
from harness.catalog import chunking_label
from harness.datasets import Sample
from harness.errors import UserError
from harness.runner import ChildOutcome
from harness.scenario import RunSpec

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.csv"
NOISY_CV = 0.10
TIMELINE_MAX_POINTS = 600


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, digits)


def short_name(row: dict[str, Any]) -> str:
    """A configuration in a few words, for tables and plot labels (faster-whisper is the default backend)."""
    c = row["config"]
    backend = "" if c["backend"] == "faster-whisper" else f"{c['backend']} "
    pin = "" if c["cpu_pinning"]["requested"] == "none" else f" pin={c['cpu_pinning']['requested']}"
    chunking = c.get("chunking") or {"mode": "whole"}
    mode = "" if chunking["mode"] == "whole" else f" {chunking_label(chunking)}"
    return f"{backend}{c['model']} {c['quantization']} t{c['threads']}{pin}{mode}"


def skipped_row(spec: RunSpec, reason: str, environment: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    return _row(spec, "skipped", reason, spec.config(), {}, [], environment, data)


def error_row(spec: RunSpec, reason: str, environment: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    return _row(spec, "error", reason, spec.config(), {}, [], environment, data)


def _row(spec: RunSpec, status: str, reason: str, config: dict[str, Any], measured: dict[str, Any],
         samples: list[dict[str, Any]], environment: dict[str, Any], data: dict[str, Any],
         **extra: Any) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "run_id": spec.run_id, "scenario": spec.scenario,
            "status": status, "reason": reason, "config": config, "metrics": measured,
            "samples": samples, "data": data, **extra, "environment": environment}


def build_row(spec: RunSpec, outcome: ChildOutcome, samples: list[Sample], requested_cpus: list[int] | None,
              environment: dict[str, Any], data: dict[str, Any],
              skipped_languages: dict[str, str] | None = None) -> dict[str, Any]:
    """Turn what the runner observed into the contract's row (metrics computed here, in the parent)."""
    result = outcome.result if outcome.result and outcome.result.get("ok") else None
    effective = (result or {}).get("effective", {})
    config = spec.config()
    config["cpu_pinning"]["effective"] = effective.get("cpus", requested_cpus)
    config["threads_effective"] = effective.get("threads")
    config["compute_type_effective"] = effective.get("compute_type")
    config["memory_cap_mode"] = outcome.cap_mode
    measured: dict[str, Any] = {"peak_rss_mb": _round(outcome.ru_maxrss_mb, 1),
                                "peak_rss_source": "ru_maxrss (os.wait4, kernel high-water mark)"}
    rows: list[dict[str, Any]] = []
    row_warnings: list[str] = []
    skipped_languages = dict(skipped_languages or {})
    if result is not None:
        by_id = {s.id: s for s in samples}
        scoring = {lang: metrics.Normalization(**how) for lang, how in data.get("normalization", {}).items()}
        measured.update(_measure(result, by_id, scoring, outcome.timeline, rows, skipped_languages))
        cv = metrics.median_cv([r["latency_s"] for r in rows if "latency_s" in r])
        measured["latency_cv"] = _round(cv)
        if cv is not None and cv > NOISY_CV:
            row_warnings.append(f"warm timings vary by {cv:.0%} between repetitions (more than "
                                f"{NOISY_CV:.0%}): the machine is noisy; latency figures are uncertain")
    status, reason = outcome.status, outcome.reason
    if status == "ok" and not rows:
        status = "skipped"
        reason = "; ".join(f"{lang}: {why}" for lang, why in skipped_languages.items())
    extra = {"budget_verdict": outcome.budget_verdict} if outcome.budget_verdict else {}
    measured["run_seconds"] = _round(outcome.wall_s, 2)
    measured["cpu_steal_fraction"] = _round(outcome.cpu_steal_fraction)
    return _row(spec, status, reason, config, measured, rows, environment, data, **extra,
                skipped_languages=skipped_languages, warnings=row_warnings,
                timeline=_timeline(outcome, (outcome.result or {}).get("phases", {})))


def _measure(result: dict[str, Any], by_id: dict[str, Sample], scoring: dict[str, metrics.Normalization],
             timeline: list[tuple[float, float]], rows: list[dict[str, Any]],
             skipped_languages: dict[str, str]) -> dict[str, Any]:
    warm: list[float] = []
    warm_audio_s = 0.0
    per_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in result["samples"]:
        if "skipped" in s:
            skipped_languages[s["lang"]] = s["skipped"]
            continue
        ref = by_id[s["id"]].text
        how = scoring.get(s["lang"])
        row = {k: v for k, v in s.items() if k not in ("windows", "pieces")}
        row.update(reference=ref, wer=_round(metrics.sample_wer(ref, s["hypothesis"], s["lang"], how)),
                   peak_rss_mb=_window_peak(timeline, s.get("windows", [])))
        if "pieces" in s:  # stream mode: how many errors sit at a seam between pieces
            row["boundary_errors"] = streaming.boundary_errors(ref, s["pieces"], s["lang"], how)
        rows.append(row)
        per_lang[s["lang"]].append(row)
        warm += s["latency_s"]
        warm_audio_s += s["audio_s"] * len(s["latency_s"])
    languages = {}
    for lang, lang_rows in per_lang.items():
        rates = metrics.error_rates([r["reference"] for r in lang_rows], [r["hypothesis"] for r in lang_rows], lang,
                                    scoring.get(lang))
        languages[lang] = {
            "wer": _round(rates["wer"]), "cer": _round(rates["cer"]), "words": rates["words"],
            "samples": len(lang_rows), "audio_s": _round(sum(r["audio_s"] for r in lang_rows), 2),
            "rtf": _round(sum(sum(r["latency_s"]) for r in lang_rows)
                          / sum(r["audio_s"] * len(r["latency_s"]) for r in lang_rows)),
            **({"errors_at_boundaries": sum(r["boundary_errors"]["at_boundaries"] for r in lang_rows),
                "errors": sum(r["boundary_errors"]["errors"] for r in lang_rows)}
               if all("boundary_errors" in r for r in lang_rows) else {}),
            "synthetic": all(by_id[r["id"]].synthetic for r in lang_rows),
        }
    out: dict[str, Any] = {
        "vmhwm_mb": _round(result["vmhwm_mb"], 1),
        "rss_after_load_mb": _round(result["rss_after_load_mb"], 1),
        "rss_anon_after_load_mb": _round(result["rss_anon_after_load_mb"], 1),
        "rss_file_after_load_mb": _round(result["rss_file_after_load_mb"], 1),
        "load_s": _round(result["load_s"]),
        "first_latency_s": _round(result["first_latency_s"]),
        "languages": languages,
    }
    if rows and all("chunks" in r for r in rows):
        out["stream"] = streaming.summarize(rows)
    if warm:
        out.update(latency_p50_s=_round(metrics.percentile(warm, 50)),
                   latency_p95_s=_round(metrics.percentile(warm, 95)),
                   rtf=_round(sum(warm) / warm_audio_s), warm_timings=len(warm))
    return out


def _window_peak(timeline: list[tuple[float, float]], windows: list[list[float]]) -> float | None:
    """The largest sampled tree RSS while a sample was being transcribed (every 20 ms: a shorter spike
    can be missed; the row's peak_rss_mb is the kernel's exact peak of the whole run)."""
    inside = [rss for t, rss in timeline if any(t0 <= t <= t1 for t0, t1 in windows)]
    return round(max(inside), 1) if inside else None


def _timeline(outcome: ChildOutcome, phases: dict[str, float]) -> dict[str, Any]:
    """Sampled tree RSS (downsampled) and the worker's phase marks, in seconds since spawn."""
    points = outcome.timeline
    step = max(1, math.ceil(len(points) / TIMELINE_MAX_POINTS))
    kept = points[::step]
    if points and kept[-1] is not points[-1]:
        kept.append(points[-1])
    t0 = outcome.started_at
    return {"t_s": [round(t - t0, 3) for t, _ in kept], "rss_mb": [round(r, 1) for _, r in kept],
            "sampled_peak_rss_mb": round(max((r for _, r in points), default=0.0), 1),
            "phases": {name: round(t - t0, 3) for name, t in phases.items()},
            "cap_crossed_s": None if outcome.cap_crossed_at is None else round(outcome.cap_crossed_at - t0, 3),
            "ended_s": round(outcome.ended_at - t0, 3)}


# ---------------------------------------------------------------------------------------------
# Storage


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row as one write() on an O_APPEND descriptor, then fsync: a killed harness leaves
    whole lines only (a reader also ignores a torn last line)."""
    data = (json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):  # a partial line: cut it off so the file stays whole lines
            os.ftruncate(fd, os.fstat(fd).st_size - written)
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a results file (or of DIR/results.jsonl); refuses unknown schema versions. A later row
    with the same run id (a configuration profiled again) replaces the earlier one, in its place."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read results: {exc}") from None
    rows: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                warnings.warn(f"{path}:{number}: ignoring a torn last line (interrupted write)", stacklevel=2)
                continue
            raise UserError(f"{path}:{number}: not a JSON object") from None
        version = row.get("schema_version") if isinstance(row, dict) else None
        if version != SCHEMA_VERSION:
            raise UserError(f"{path}:{number}: field 'schema_version': {version!r} is not supported "
                            f"(this harness reads schema_version {SCHEMA_VERSION})")
        rows[row["run_id"]] = row
    return list(rows.values())


def run_environment(path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The machine a run was measured on: DIR/environment.json, else what its rows recorded."""
    env_file = Path(path) / "environment.json"
    if env_file.is_file():
        return json.loads(env_file.read_text())
    return rows[0].get("environment", {}) if rows else {}


SUMMARY_COLUMNS = ("run_id", "status", "backend", "model", "quantization", "threads", "pinning",
                   "peak_rss_mb", "rss_after_load_mb", "load_s", "first_latency_s", "latency_p50_s",
                   "latency_p95_s", "rtf")
STREAM_COLUMNS = ("chunk_latency_p95_s", "lag_max_s", "final_latency_p95_s")  # empty unless chunking is stream


def summary_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per row: the configuration, the headline metrics, WER/CER per language."""
    langs = sorted({lang for r in rows for lang in r["metrics"].get("languages", {})})
    records = []
    for r in rows:
        c, m = r["config"], r["metrics"]
        rec: dict[str, Any] = {
            "run_id": r["run_id"], "status": r["status"], "backend": c["backend"], "model": c["model"],
            "quantization": c["quantization"], "threads": c["threads"],
            "pinning": c["cpu_pinning"]["requested"],
            "chunking": chunking_label(c.get("chunking") or {"mode": "whole"}),
            **{k: m.get(k) for k in SUMMARY_COLUMNS[7:]},
            **{k: (m.get("stream") or {}).get(k) for k in STREAM_COLUMNS},
        }
        for lang in langs:
            stats = m.get("languages", {}).get(lang, {})
            rec[f"wer_{lang}"] = stats.get("wer")
            rec[f"cer_{lang}"] = stats.get("cer")
        rec["reason"] = r["reason"].splitlines()[0] if r["reason"] else ""
        records.append(rec)
    return records


def write_summary(rows: list[dict[str, Any]], path: Path) -> None:
    records = summary_records(rows)
    if not records:
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
