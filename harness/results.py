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
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import SCHEMA_VERSION, metrics, streaming
from harness.catalog import chunking_label
from harness.datasets import Sample
from harness.errors import UserError
from harness.runner import ChildOutcome
from harness.scenario import RunSpec, Scenario, load_scenario

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
    whole lines only, but for a line torn by a crash mid-write (repair_tail moves it aside before the
    next append; a reader ignores it)."""
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


def repair_tail(path: Path) -> Path | None:
    """Before appending to an existing results file: move a torn last line (what a reader ignores: a
    last line that is not JSON) into a side file `results.jsonl.torn-<time>` and truncate the file to
    its whole lines, so that the next row starts on a line of its own. A last row that is whole but
    lacks its newline gets one. Returns the side file, if one was written."""
    with open(path, "r+b") as f:
        data = f.read()
        start = data.rstrip().rfind(b"\n") + 1  # where the last non-blank line starts
        last = data[start:]
        if not last.strip():
            return None
        if _parses(last):
            if not data.endswith(b"\n"):
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
            return None
        side = _write_side_file(path, last)  # first: the fragment is never only in memory
        f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
    kept = data.count(b"\n", 0, start)
    warnings.warn(f"{path}:{kept + 1}: the last line was torn (an interrupted write): kept the {kept} whole "
                  f"line(s) before it, moved its {len(last)} byte(s) to {side}", stacklevel=2)
    return side


def _parses(line: bytes) -> bool:
    try:
        json.loads(line.decode("utf-8"))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False
    return True


def _write_side_file(path: Path, fragment: bytes) -> Path:
    """`<path>.torn-<time>`, or `-2`, `-3`... after it: an earlier fragment is never overwritten."""
    stem = f"{path.name}.torn-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    side, n = path.with_name(stem), 1
    while True:
        try:
            with open(side, "xb") as f:
                f.write(fragment)
                f.flush()
                os.fsync(f.fileno())
            return side
        except FileExistsError:
            n += 1
            side = path.with_name(f"{stem}-{n}")


def results_path(path: Path) -> Path:
    path = Path(path)
    return path / RESULTS_FILE if path.is_dir() else path


def read_run(path: Path) -> tuple[list[dict[str, Any]], Scenario | None]:
    """The rows of a results file (or of DIR/results.jsonl) that belong to its run, and the run's
    scenario (the copy beside it, `scenario.yaml`; None without one). The one reader of results:

    - every row is checked (check_row); a bad one is an error naming the file, the line and the field;
    - a torn last line (an interrupted write) is ignored with a warning;
    - a row of another scenario than the run's (the copy's name, else the first row's), or whose run id
      is not one of the copy's configurations, is left out with a warning naming its line;
    - a later row with the same run id (a configuration profiled again) replaces the earlier one, in
      its place.
    """
    path = results_path(path)
    copy_path = path.parent / "scenario.yaml"
    scenario = None
    if copy_path.is_file():
        with warnings.catch_warnings():  # warnings about running it here (threads > CPUs), not about reading
            warnings.simplefilter("ignore")
            scenario = load_scenario(copy_path)
    try:
        lines = path.read_bytes().split(b"\n")  # not splitlines(): a row may hold U+2028, U+0085
    except OSError as exc:
        raise UserError(f"{path}: cannot read results: {exc.strerror or exc}") from None
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    name = scenario.name if scenario else None
    run_ids = {spec.run_id for spec in scenario.expand()} if scenario else None
    rows: dict[str, dict[str, Any]] = {}
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        where = f"{path}:{index + 1}"
        try:
            row = json.loads(line.decode("utf-8"))
        except ValueError as exc:
            if index == last:
                warnings.warn(f"{where}: ignoring a torn last line (an interrupted write; --resume moves it aside)",
                              stacklevel=2)
                continue
            problem = ": not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f":{exc.colno}: not valid JSON: {exc.msg}"
            raise UserError(f"{where}{problem} (every line must be one result row, a JSON object)") from None
        check_row(row, where)
        if name is None:
            name = row["scenario"]
        if row["scenario"] != name:
            warnings.warn(f"{where}: left out {row['run_id']}: a row of scenario {row['scenario']!r}, not of "
                          f"this run's {name!r}", stacklevel=2)
        elif run_ids is not None and row.get("profile_of", row["run_id"]) not in run_ids:
            warnings.warn(f"{where}: left out {row['run_id']}: not a configuration of {copy_path}", stacklevel=2)
        else:
            rows[row["run_id"]] = row
    return list(rows.values()), scenario


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a run (read_run without the scenario)."""
    return read_run(path)[0]


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object the harness wrote (environment.json, recommendation.json, search.json)."""
    try:
        data = path.read_bytes()
        value = json.loads(data.decode("utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(value).__name__} {_shown(value)}")
    return value


def run_environment(path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The machine a run was measured on: DIR/environment.json, else what its rows recorded."""
    env_file = Path(path) / "environment.json"
    if env_file.is_file():
        env = read_json_object(env_file)
        _check_fields(env, ENVIRONMENT_FIELDS, str(env_file))
        return env
    return rows[0].get("environment", {}) if rows else {}


# ---------------------------------------------------------------------------------------------
# What a reader may rely on in a row


STATUSES = ("ok", "oom", "timeout", "error", "skipped", "over_budget")
NUMERIC_METRICS = ("peak_rss_mb", "vmhwm_mb", "rss_after_load_mb", "rss_anon_after_load_mb", "rss_file_after_load_mb",
                   "load_s", "first_latency_s", "latency_p50_s", "latency_p95_s", "rtf", "latency_cv",
                   "warm_timings", "run_seconds", "cpu_steal_fraction")
MISSING = object()  # a field that is absent (None may be a value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optional_number(value: Any) -> bool:
    return value is None or _number(value)


def _languages_ok(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(s, dict) and all(_optional_number(s.get(k)) for k in ("wer", "cer", "rtf")) for s in value.values())


def _samples_ok(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(s, dict) and _optional_number(s.get("audio_s")) and _optional_number(s.get("peak_rss_mb"))
        and isinstance(s.get("latency_s", []), list) and all(_number(t) for t in s.get("latency_s", []))
        for s in value)


# (field path, required, test, what is expected): what the readers (report, recommendation, compare,
# trend, search) index or compute with without checking. A field that is not required may be absent.
ENVIRONMENT_FIELDS: tuple[tuple[str, bool, Any, str], ...] = (
    ("packages", False, lambda v: isinstance(v, dict), "an object"),
    ("started_at", False, lambda v: isinstance(v, str), "a string"),
)
ROW_FIELDS: tuple[tuple[str, bool, Any, str], ...] = (
    ("run_id", True, lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"),
    ("scenario", True, lambda v: isinstance(v, str), "a string"),
    ("status", True, lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
    ("reason", True, lambda v: isinstance(v, str), "a string"),
    ("config", True, lambda v: isinstance(v, dict), "an object"),
    *((f"config.{k}", True, lambda v: isinstance(v, str), "a string") for k in ("backend", "model", "quantization")),
    ("config.threads", True, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    ("config.cpu_pinning", True, lambda v: isinstance(v, dict) and isinstance(v.get("requested"), str),
     "an object with 'requested' (a string)"),
    ("config.chunking", False, lambda v: isinstance(v, dict) and isinstance(v.get("mode"), str),
     "an object with 'mode' (a string)"),
    ("metrics", True, lambda v: isinstance(v, dict), "an object"),
    *((f"metrics.{k}", False, _optional_number, "a number or null") for k in NUMERIC_METRICS),
    ("metrics.languages", False, _languages_ok, "an object of per-language objects (wer, cer, rtf: numbers)"),
    ("metrics.stream", False, lambda v: isinstance(v, dict) and all(_number(x) for x in v.values()),
     "an object of numbers"),
    ("samples", False, _samples_ok, "a list of objects (audio_s: a number, latency_s: a list of numbers)"),
    ("environment", True, lambda v: isinstance(v, dict), "an object"),
    *((f"environment.{k}", *rest) for k, *rest in ENVIRONMENT_FIELDS),
    ("timeline", False, lambda v: isinstance(v, dict), "an object"),
    ("profiler", False, lambda v: isinstance(v, str), "a string"),
    ("profile_of", False, lambda v: isinstance(v, str), "a string"),
)


def invalid(where: str, field: str, value: Any, expected: str) -> UserError:
    """The error for a bad field of a file the harness reads: names the place, the field and the value."""
    if value is MISSING:
        return UserError(f"{where}: field '{field}' is missing; expected {expected}")
    return UserError(f"{where}: field '{field}': invalid value {_shown(value)}; expected {expected}")


def _shown(value: Any) -> str:
    shown = json.dumps(value, ensure_ascii=False, default=str)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _check_fields(obj: dict[str, Any], fields: tuple[tuple[str, bool, Any, str], ...], where: str) -> None:
    for path, required, test, expected in fields:
        value: Any = obj
        for key in path.split("."):
            value = value.get(key, MISSING) if isinstance(value, dict) else MISSING
        if value is MISSING and not required:
            continue
        if value is MISSING or not test(value):
            raise invalid(where, path, value, expected)


def check_row(row: Any, where: str) -> dict[str, Any]:
    """Check one row read back (`where`: file:line) against the results contract, as far as the readers
    rely on it; a UserError names the line, the field and the value."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object (one result row), got {type(row).__name__} {_shown(row)}")
    version = row.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{where}: field 'schema_version': {version!r} is not supported "
                        f"(this harness reads schema_version {SCHEMA_VERSION})")
    _check_fields(row, ROW_FIELDS, where)
    if "profiler" in row and "profile_of" not in row:
        raise invalid(where, "profile_of", MISSING, "the measured configuration's run id (a profile row)")
    peak = row["metrics"].get("peak_rss_mb")
    if row["status"] == "ok" and not (_number(peak) and peak > 0):
        raise invalid(where, "metrics.peak_rss_mb", row["metrics"].get("peak_rss_mb", MISSING),
                      "a number > 0 in a row with status ok")
    return row


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
