"""Results as a pandas DataFrame (`harness.load`): one line per configuration x language.

Rows are read with the one validating reader (harness.store.read_run); the columns are the identity
of the row, its configuration axes, the language, every metric of the registry (harness.metrics,
named as there), the machine class and the host. summary.csv, the report's configuration table and
the trend index are pivots of this frame (`wide`): one line per configuration, a column per
per-language metric and language (`wer_en`, `cer_en`, ...).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import metrics as registry
from harness import store
from harness.catalog import chunking_label
from harness.contract import machine_class
from harness.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

IDENTITY = ("run_dir", "run_id", "name", "scenario", "status", "reason")
AXES = ("backend", "model", "quantization", "threads", "cpu_pinning", "chunking", "beam_size", "memory_cap_mb",
        "cpu_limit")
TRAILER = ("machine_class", "host", "profiler")
INDEX = "row"  # one number per configuration (a row of a results file), shared by its language lines


def columns() -> list[str]:
    """The DataFrame's columns, in order."""
    return [*IDENTITY, *AXES, "lang", *(m.name for m in registry.METRICS), *TRAILER]


def row_lines(row: dict[str, Any], run_dir: str = "") -> list[dict[str, Any]]:
    """One row of results.jsonl -> its lines: one per language it measured (one, with lang None, without any)."""
    c, m = row["config"], row["metrics"]
    env = row.get("environment") or {}
    head: dict[str, Any] = {
        "run_dir": run_dir, "run_id": row["run_id"], "name": store.short_name(row), "scenario": row["scenario"],
        "status": row["status"], "reason": row.get("reason") or "",
        "backend": c["backend"], "model": c["model"], "quantization": c["quantization"], "threads": c["threads"],
        "cpu_pinning": c["cpu_pinning"]["requested"], "chunking": chunking_label(c.get("chunking") or {"mode": "whole"}),
        "beam_size": c.get("beam_size"), "memory_cap_mb": c.get("memory_cap_mb"), "cpu_limit": c.get("cpu_limit"),
    }
    run_level = {metric.name: _number(metric, row, None, run_dir) for metric in registry.METRICS if not metric.per_language}
    tail = {"machine_class": machine_class(env), "host": (row.get("node") or {}).get("host") or env.get("hostname"),
            "profiler": row.get("profiler")}
    per_language = [metric for metric in registry.METRICS if metric.per_language]
    langs = sorted(m.get("languages") or {}) or [None]
    return [{**head, "lang": lang, **run_level, **{metric.name: _number(metric, row, lang, run_dir) for metric in per_language},
             **tail} for lang in langs]


def _number(metric: registry.Metric, row: dict[str, Any], lang: str | None, run_dir: str) -> float | None:
    value = metric.value(row, lang)
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    where = f"{metric.section}." if metric.section else f"languages.{lang}." if lang else ""
    raise UserError(f"{run_dir or 'results'}: {row['run_id']}: field 'metrics.{where}{metric.name}': invalid value "
                    f"{value!r}; expected a number")


def from_runs(runs: Iterable[tuple[str, list[dict[str, Any]]]], include_profiles: bool = False) -> pd.DataFrame:
    """(run directory, its rows) pairs -> the DataFrame (index `row`: one number per configuration)."""
    import pandas as pd

    lines: list[dict[str, Any]] = []
    index: list[int] = []
    number = 0
    for run_dir, rows in runs:
        for row in rows:
            if row.get("profiler") and not include_profiles:
                continue
            for line in row_lines(row, run_dir):
                lines.append(line)
                index.append(number)
            number += 1
    df = pd.DataFrame.from_records(lines, columns=columns())
    df.index = pd.Index(index, name=INDEX, dtype="int64")
    numbers = ["memory_cap_mb", *(m.name for m in registry.METRICS)]
    df[numbers] = df[numbers].astype("float64")  # a metric no row has is NaN too, not an object column of None
    return df


def from_rows(rows: list[dict[str, Any]], run_dir: str = "", include_profiles: bool = False) -> pd.DataFrame:
    return from_runs([(run_dir, rows)], include_profiles)


def _targets(paths: tuple[str | os.PathLike[str], ...]) -> list[tuple[str, Path]]:
    """(run_dir label, results file) for every path or glob match, each results file once."""
    if not paths:
        raise UserError("harness.load: give one or more run directories, results.jsonl files or glob patterns")
    found: dict[Path, str] = {}

    def add(path: Path) -> None:
        results = store.results_path(path)
        label = results.parent if results.name == store.RESULTS_FILE else results
        found.setdefault(results.resolve(), str(label))

    for given in paths:
        text = os.path.expanduser(os.fspath(given))
        if glob.has_magic(text):
            matches = [Path(p) for p in sorted(glob.glob(text))]
            runs = [p for p in matches if (p / store.RESULTS_FILE).is_file() or (p.is_file() and p.suffix == ".jsonl")]
            if not runs:
                raise UserError(f"{given}: no run directory or results file matches")
            for path in runs:
                add(path)
        else:
            path = Path(text)
            if not path.exists():
                raise UserError(f"{given}: no such run directory or results file")
            if path.is_dir() and not (path / store.RESULTS_FILE).is_file():
                raise UserError(f"{given}: not a run directory (no {store.RESULTS_FILE})")
            add(path)
    return [(label, results) for results, label in found.items()]


def load(*paths: str | os.PathLike[str], include_profiles: bool = False) -> pd.DataFrame:
    """Run directories, results.jsonl files or glob patterns ("reports/*/") -> a DataFrame with one line
    per configuration x language (a row without languages, e.g. oom or error, gives one line with lang
    missing). Every row is validated by the one reader (harness.store.read_run); a bad one is a UserError
    naming the file, the line and the field. Profiled runs are left out unless `include_profiles`.

    Columns: run_dir, run_id, name (the configuration in a few words), scenario, status, reason; the
    axes backend, model, quantization, threads, cpu_pinning (as requested), chunking (its label),
    beam_size, memory_cap_mb, cpu_limit (a Kubernetes CPU quantity, or missing); lang; every metric of
    harness.metrics by its name (run-level ones repeated on each language line); machine_class, host,
    profiler. The index (`row`) numbers the configurations.
    """
    return from_runs(((label, store.read_rows(results)) for label, results in _targets(paths)), include_profiles)


def wide(df: pd.DataFrame, metrics: list[registry.Metric] | None = None) -> pd.DataFrame:
    """The frame pivoted to one line per configuration (its index): the identity, the axes, the run-level
    metrics, then per language (sorted) its per-language metrics as NAME_LANG (wer_en, cer_en, wer_pt, ...)."""
    metrics = list(registry.METRICS) if metrics is None else metrics
    run_level = [m.name for m in metrics if not m.per_language]
    per_language = [m.name for m in metrics if m.per_language]
    out = df.loc[~df.index.duplicated(), [*IDENTITY, *AXES, *run_level, *TRAILER]].copy()
    measured = df[df["lang"].notna()]
    langs = sorted(measured["lang"].unique())
    if per_language and langs:
        pivot = measured.set_index("lang", append=True)[per_language].unstack("lang")
        pivot.columns = [f"{name}_{lang}" for name, lang in pivot.columns]
        out = out.join(pivot[[f"{name}_{lang}" for lang in langs for name in per_language]])
    return out


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The lines of a frame as plain dicts, a missing value as None (for templates and CSV)."""
    import pandas as pd

    return [{k: None if _missing(v, pd) else v for k, v in line.items()} for line in df.to_dict("records")]


def _missing(value: Any, pd: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)
