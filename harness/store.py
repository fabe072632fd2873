"""The results contract (DESIGN.md): building one row per RunSpec, appending it atomically to
`results.jsonl`, reading rows back, and the flat summary table (`summary.csv`)."""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness import SCHEMA_VERSION, backends
from harness import metrics as metric_registry
from harness.catalog import chunking_label
from harness.contract import Row, validation_message
from harness.errors import UserError
from harness.plan.scenario import Scenario, load_scenario

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.csv"


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, digits)


def short_name(row: dict[str, Any]) -> str:
    """A configuration in a few words, for tables and plot labels (the default backend is not named)."""
    c = row["config"]
    backend = "" if c["backend"] == backends.DEFAULT else f"{c['backend']} "
    pin = "" if c["cpu_pinning"]["requested"] == "none" else f" pin={c['cpu_pinning']['requested']}"
    chunking = c.get("chunking") or {"mode": "whole"}
    mode = "" if chunking["mode"] == "whole" else f" {chunking_label(chunking)}"
    cpu_limit = f" cpu={c['cpu_limit']}" if c.get("cpu_limit") else ""  # a CFS quota (Kubernetes CPU limit)
    return f"{backend}{c['model']} {c['quantization']} t{c['threads']}{pin}{mode}{cpu_limit}"


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
        scenario = load_scenario(copy_path, on_this_machine=False)  # it may have run on another machine
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
        _check_environment(env, str(env_file))
        return env
    return rows[0].get("environment", {}) if rows else {}


# ---------------------------------------------------------------------------------------------
# What a reader may rely on in a row


MISSING = object()  # a field that is absent (None may be a value)
ENVIRONMENT_FIELDS: tuple[tuple[str, Any, str], ...] = (
    ("packages", lambda v: isinstance(v, dict), "an object"),
    ("started_at", lambda v: isinstance(v, str), "a string"),
)


def invalid(where: str, field: str, value: Any, expected: str) -> UserError:
    """The error for a bad field of a file the harness reads: names the place, the field and the value."""
    if value is MISSING:
        return UserError(f"{where}: field '{field}' is missing; expected {expected}")
    return UserError(f"{where}: field '{field}': invalid value {_shown(value)}; expected {expected}")


def _shown(value: Any) -> str:
    shown = json.dumps(value, ensure_ascii=False, default=str)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _check_environment(env: dict[str, Any], where: str) -> None:
    for field, test, expected in ENVIRONMENT_FIELDS:
        if field in env and not test(env[field]):
            raise invalid(where, field, env[field], expected)


def check_row(row: Any, where: str) -> dict[str, Any]:
    """Check one row read back (`where`: file:line) against the results contract (harness.contract.Row);
    a UserError names the line, the field and the value."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object (one result row), got {type(row).__name__} {_shown(row)}")
    version = row.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{where}: field 'schema_version': {version!r} is not supported "
                        f"(this harness reads schema_version {SCHEMA_VERSION})")
    try:
        Row.model_validate(row)
    except ValidationError as exc:
        raise UserError(f"{where}: {validation_message(exc)}") from None
    _check_environment(row["environment"], f"{where}: environment")
    if row.get("profiler") is not None and row.get("profile_of") is None:
        raise invalid(where, "profile_of", MISSING, "the measured configuration's run id (a profile row)")
    peak = row["metrics"].get("peak_rss_mb")
    if row["status"] == "ok" and not (isinstance(peak, (int, float)) and peak > 0):
        raise invalid(where, "metrics.peak_rss_mb", row["metrics"].get("peak_rss_mb", MISSING),
                      "a number > 0 in a row with status ok")
    return row


# summary.csv: these columns, the metrics harness.metrics shows in SUMMARY (run-level ones in registry
# order, then per language NAME_LANG: wer_en, cer_en, wer_pt, ...), then `reason` (its first line).
SUMMARY_CONFIG_COLUMNS = ("run_id", "status", "backend", "model", "quantization", "threads", "pinning", "chunking",
                          "cpu_limit")
SUMMARY_COLUMNS = SUMMARY_CONFIG_COLUMNS + tuple(m.name for m in metric_registry.shown_in(metric_registry.SUMMARY)
                                                 if not m.per_language)
STREAM_COLUMNS = tuple(m.name for m in metric_registry.shown_in(metric_registry.SUMMARY) if m.section == "stream")


def summary_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per row (profiled runs included): the configuration, the metrics shown in
    SUMMARY, per-language ones per language; a pivot of the DataFrame (harness.analyze.frame)."""
    from harness.analyze import frame

    if not rows:
        return []
    df = frame.from_rows(rows, include_profiles=True)
    langs = sorted(df["lang"].dropna().unique())
    names = [name for _, _, name in metric_registry.columns(metric_registry.SUMMARY, langs)]
    table = frame.wide(df, metric_registry.shown_in(metric_registry.SUMMARY)).rename(columns={"cpu_pinning": "pinning"})
    table["reason"] = [reason.splitlines()[0] if reason else "" for reason in table["reason"]]
    return frame.records(table[[*SUMMARY_CONFIG_COLUMNS, *names, "reason"]])


def write_summary(rows: list[dict[str, Any]], path: Path) -> None:
    records = summary_records(rows)
    if not records:
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
