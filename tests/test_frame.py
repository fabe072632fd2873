"""The public DataFrame (`harness.load`): one line per configuration x language, read with the one reader;
the metric registry that names its columns; the README's pandas example, run as written."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import harness
from harness import metrics, store
from harness.analyze import frame
from harness.errors import UserError
from harness.report import plots

GOLDEN = Path(__file__).parent / "golden"
README = Path(__file__).resolve().parents[1] / "README.md"


def run_dir(path: Path, golden: Path, change=None) -> Path:
    """A run directory holding a golden result set (no scenario.yaml: every row of the file is the run's)."""
    path.mkdir(parents=True)
    for row in store.read_rows(golden):
        if change:
            change(row)
        store.append_row(path / store.RESULTS_FILE, row)
    return path


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    """reports/ with three run directories and a folder that is not one."""
    reports = tmp_path / "reports"
    run_dir(reports / "default-1", GOLDEN / "default-exhaustive.jsonl")
    run_dir(reports / "golden-2", GOLDEN / "recommend" / "feasible.jsonl")
    run_dir(reports / "nightly-3", GOLDEN / "compare" / "baseline.jsonl")
    (reports / "not-a-run").mkdir()
    (reports / "index.html").write_text("<html></html>")
    return reports


def test_import_harness_stays_free_of_imports() -> None:
    code = "import sys, harness; print(sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'numpy', 'pydantic')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_one_line_per_configuration_and_language() -> None:
    df = harness.load(GOLDEN / "default-exhaustive.jsonl")
    rows = store.read_rows(GOLDEN / "default-exhaustive.jsonl")
    assert list(df.columns) == frame.columns()
    assert len(df) == sum(len(r["metrics"]["languages"]) for r in rows) == 8 * 1 + 8 * 2  # tiny.en: en only
    assert df.index.name == "row" and df.index.nunique() == len(rows) == 16
    line = df[(df.run_id == "faster-whisper-base-int8-t2-pinauto-whole-b5-6ef848") & (df.lang == "pt")].iloc[0]
    row = next(r for r in rows if r["run_id"] == line.run_id)
    assert (line.backend, line.model, line.quantization, line.threads, line.cpu_pinning, line.chunking, line.beam_size) == (
        "faster-whisper", "base", "int8", 2, "auto", "whole", 5)
    assert line.peak_rss_mb == row["metrics"]["peak_rss_mb"] and line.rtf == row["metrics"]["rtf"]  # run-level, repeated
    assert line.wer == row["metrics"]["languages"]["pt"]["wer"] and line.cer == row["metrics"]["languages"]["pt"]["cer"]
    assert line["name"] == "base int8 t2 pin=auto" and line.scenario == "default" and line.status == "ok"
    assert line.machine_class == "Intel(R) Xeon(R) Processor x2" and math.isnan(line.memory_cap_mb)
    assert math.isnan(line.foreign_cpu_fraction)  # not recorded by that (older) row
    assert line.run_dir == str(GOLDEN / "default-exhaustive.jsonl")  # a results file with another name


def test_every_registry_metric_is_a_float_column() -> None:
    df = harness.load(GOLDEN / "recommend" / "feasible.jsonl")
    for m in metrics.METRICS:
        assert df[m.name].dtype == "float64", m.name
    assert df["chunk_latency_p95_s"].isna().all()  # no stream row: the column exists, empty


def test_a_row_without_languages_gives_one_line_with_lang_missing() -> None:
    df = harness.load(GOLDEN / "recommend" / "failed.jsonl")
    oom = df[df.run_id == "base-f32-oom"]
    assert len(oom) == 1 and oom.lang.isna().all() and oom.status.iloc[0] == "oom"
    assert oom.peak_rss_mb.iloc[0] == 512.3 and oom.wer.isna().all()
    assert oom.reason.iloc[0].startswith("process tree RSS 512.3 MiB passed the memory cap")
    assert df.lang.isna().sum() == 3 and (df.lang == "en").sum() == 1


def test_globs_and_several_run_directories(reports: Path) -> None:
    df = harness.load(str(reports / "*/"))
    assert sorted(df.run_dir.unique()) == [str(reports / name) for name in ("default-1", "golden-2", "nightly-3")]
    assert df.index.nunique() == 16 + 4 + 2  # the configurations of all three runs, numbered once
    assert set(df[df.run_dir == str(reports / "nightly-3")].run_id) == {"tiny-int8", "base-int8"}
    # A directory, a results file and a glob naming the same run: read once.
    again = harness.load(reports / "golden-2", reports / "golden-2" / "results.jsonl", str(reports / "golden-*"))
    assert again.index.nunique() == 4 and set(again.run_dir) == {str(reports / "golden-2")}
    files = harness.load(str(GOLDEN / "recommend" / "*.jsonl"))
    assert files.run_dir.nunique() == 5


def test_profiled_runs_are_left_out_unless_asked(tmp_path: Path) -> None:
    def add_profile(path: Path) -> str:
        row = copy.deepcopy(store.read_rows(path)[0])
        row.update(run_id=f"{row['run_id']}-memray", profiler="memray", profile_of=row["run_id"], profile={})
        store.append_row(path, row)
        return row["run_id"]

    run = run_dir(tmp_path / "run", GOLDEN / "compare" / "baseline.jsonl")
    profiled = add_profile(run / store.RESULTS_FILE)
    assert set(harness.load(run).run_id) == {"tiny-int8", "base-int8"}
    with_profiles = harness.load(run, include_profiles=True)
    assert with_profiles[with_profiles.profiler == "memray"].run_id.unique().tolist() == [profiled]


def test_rows_are_validated_by_the_one_reader(tmp_path: Path) -> None:
    run = run_dir(tmp_path / "run", GOLDEN / "compare" / "baseline.jsonl")
    with open(run / store.RESULTS_FILE, "a") as f:
        f.write(json.dumps({**store.read_rows(GOLDEN / "compare" / "baseline.jsonl")[0], "run_id": "x", "status": "fine"}) + "\n")
    with pytest.raises(UserError, match=r"results.jsonl:3: .*status"):
        harness.load(run)
    with pytest.raises(UserError, match="no such run directory"):
        harness.load(tmp_path / "nothing")
    with pytest.raises(UserError, match="no run directory or results file matches"):
        harness.load(str(tmp_path / "none-*"))
    with pytest.raises(UserError, match="not a run directory"):
        harness.load(tmp_path)
    with pytest.raises(UserError, match="give one or more"):
        harness.load()


def test_a_metric_that_is_not_a_number_is_named(tmp_path: Path) -> None:
    def text(row: dict) -> None:
        row["metrics"]["load_s"] = "fast"  # an extra field for the contract: the frame needs a number

    run = run_dir(tmp_path / "run", GOLDEN / "compare" / "baseline.jsonl", text)
    with pytest.raises(UserError, match=r"field 'metrics.load_s': invalid value 'fast'; expected a number"):
        harness.load(run)


def test_host_and_machine_class_come_from_each_row(tmp_path: Path) -> None:
    def measured_elsewhere(row: dict) -> None:
        row["node"] = {"executor": "local", "host": "node-7"}
        row["environment"].update(cpu="AMD EPYC 7763", logical_cores=8)

    df = harness.load(run_dir(tmp_path / "run", GOLDEN / "compare" / "baseline.jsonl", measured_elsewhere))
    assert set(df.host) == {"node-7"} and set(df.machine_class) == {"AMD EPYC 7763 x8"}


def test_summary_csv_is_a_pivot_of_the_frame(tmp_path: Path) -> None:
    rows = store.read_rows(GOLDEN / "recommend" / "failed.jsonl")
    df = frame.from_rows(rows)
    wide = frame.wide(df)
    assert len(wide) == len(rows) and list(wide.run_id) == [r["run_id"] for r in rows]
    assert wide.loc[wide.run_id == "base-int8", ["wer_en", "wer_pt", "cer_pt"]].iloc[0].tolist() == [0.05, 0.2, 0.1]
    store.write_summary(rows, tmp_path / "summary.csv")
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary.run_id) == list(wide.run_id)
    assert summary.wer_pt.tolist()[3] == 0.2 and summary.wer_pt.isna().sum() == 3


def test_the_registry_is_consistent() -> None:
    names = [m.name for m in metrics.METRICS]
    assert len(set(names)) == len(names)
    assert {m.name for m in metrics.budgetable()} == {"peak_rss_mb", "rss_after_load_mb", "peak_anon_mb",
                                                      "working_set_peak_mb", "min_limit_mb", "load_s", "first_latency_s",
                                                      "latency_p50_s", "latency_p95_s", "rtf", "wer", "cer"}
    assert [m.name for m in metrics.ranked()] == ["peak_rss_mb", "latency_p95_s", "wer"]
    assert [key for _, _, key in metrics.columns(metrics.SUMMARY, ["en", "pt"])][-14:] == [
        f"{name}_{lang}" for lang in ("en", "pt")
        for name in ("wer", "cer", "wer_ci_low", "wer_ci_high", "cer_ci_low", "cer_ci_high", "flagged")]
    ci = {"metrics": {"languages": {"en": {"wer": 0.142, "wer_ci": [0.0, 0.212]}}}}
    assert metrics.bounds(metrics.get("wer")) == (metrics.get("wer_ci_low"), metrics.get("wer_ci_high"))
    assert metrics.get("wer").cell(0.142, metrics.interval(metrics.get("wer"), ci, "en")) == "14.2 % [0.0, 21.2]"
    assert metrics.interval(metrics.get("cer"), ci, "en") == (None, None) and metrics.get("cer").cell(0.1, (None, None)) == "10.0 %"
    m = metrics.get("foreign_cpu_fraction")
    assert m.cell(0.0714) == "7.1 %" and m.cell(None) == "-" and metrics.get("rtf").cell(0.33) == "0.330"
    assert metrics.get("peak_rss_mb").text(720) == "720 MiB" and metrics.get("wer").title("en") == "WER en (fraction)"
    row = {"metrics": {"foreign_cpu_fraction": 0.07, "stream": {"lag_max_s": 2.5}, "languages": {"pt": {"wer": 0.2}}}}
    assert [mt.name for mt, _ in metrics.noisy(row)] == ["foreign_cpu_fraction"]
    assert metrics.get("lag_max_s").value(row) == 2.5 and metrics.get("wer").value(row, "pt") == 0.2
    assert metrics.get("min_limit_mb").value({"metrics": {"fit": {"min_limit_mb": 318.0}}}) == 318.0


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- example: pareto[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert found, "README.md lost its pandas example"
    return found.group(1)


def test_the_readme_pareto_example_runs_as_written(reports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(reports.parent)
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_example(), "README.md", "exec"), namespace)
    front = namespace["front"]
    # The same front as the report's plot computes, over the English lines of every run.
    df = harness.load(str(reports / "*/"))
    en = df[(df.status == "ok") & (df.lang == "en")]
    expected = plots.pareto_front(list(zip(en.peak_rss_mb, en.wer)))
    assert list(zip(front.peak_rss_mb, front.wer)) == expected and len(expected) >= 2
    assert "peak_rss_mb" in out.getvalue() and front.run_dir.nunique() >= 2  # a front across runs


def test_adding_a_metric_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A metric the row builder records shows in the frame, summary.csv, the report table, the console
    and the trend index once it has a registry entry: no other code names it."""
    from rich.console import Console

    from harness.console import results_table
    from harness.report import build
    from harness.report.trend import collect

    extra = metrics.Metric("swap_peak_mb", "swap MiB", "peak swap", "MiB", "largest swap use of the worker",
                           show=frozenset({metrics.CONSOLE, metrics.SUMMARY, metrics.REPORT, metrics.TREND}), digits=0)
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, extra))
    monkeypatch.setitem(metrics.BY_NAME, extra.name, extra)

    def swapped(row: dict) -> None:
        row["metrics"]["swap_peak_mb"] = 12.0

    run = run_dir(tmp_path / "reports" / "run", GOLDEN / "compare" / "baseline.jsonl", swapped)
    rows = store.read_rows(run)
    assert set(harness.load(run).swap_peak_mb) == {12.0}
    summary = store.summary_records(rows)[0]
    assert list(summary)[list(summary).index("swap_peak_mb") + 1] == "wer_en" and summary["swap_peak_mb"] == 12.0
    assert {"key": "swap_peak_mb", "label": "swap MiB"} in build._columns(metrics.REPORT, ["en"], rows)
    assert build._table(rows, run, ["en", "pt"], {r["run_id"]: "" for r in rows})[0]["cells"]["swap_peak_mb"] == "12"
    console = Console(width=250, record=True)
    console.print(results_table(rows, "t"))
    assert "swap MiB" in console.export_text()
    assert collect(tmp_path / "reports")[0]["configs"][0]["values"]["swap_peak_mb"] == 12.0
