"""The results file: atomic appends, torn lines, schema versions, the summary table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from harness import store
from harness.contract import SampleRef
from harness.data.datasets import Sample
from harness.errors import UserError
from harness.measure import record
from harness.measure.runner import ChildOutcome
from harness.measure.sweep import data_description, make_job
from harness.plan.scenario import validate_scenario


def _row(run_id: str, **metrics: object) -> dict:
    return {"schema_version": 1, "run_id": run_id, "scenario": "s", "status": "ok", "reason": "",
            "config": {"backend": "faster-whisper", "model": "base", "quantization": "int8", "threads": 2,
                       "cpu_pinning": {"requested": "auto", "effective": [0, 1]}},
            "metrics": {"peak_rss_mb": 300.0, "languages": {"en": {"wer": 0.1, "cer": 0.05}}, **metrics},
            "samples": [], "environment": {}}


def test_rows_round_trip_and_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    store.append_row(path, _row("a"))
    store.append_row(path, _row("b"))
    assert [r["run_id"] for r in store.read_rows(tmp_path)] == ["a", "b"]
    with open(path, "a") as f:
        f.write('{"schema_version": 1, "run_id": "c", "sta')  # a harness killed mid-write
    with pytest.warns(UserWarning, match="torn last line"):
        assert [r["run_id"] for r in store.read_rows(path)] == ["a", "b"]


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({**_row("a"), "schema_version": 99}) + "\n")
    with pytest.raises(UserError, match=r"results.jsonl:1: field 'schema_version': 99"):
        store.read_rows(path)


def test_nan_is_never_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        store.append_row(tmp_path / "r.jsonl", _row("a", rtf=float("nan")))


def test_summary_csv_has_one_line_per_row_with_per_language_columns(tmp_path: Path) -> None:
    store.write_summary([_row("a", rtf=0.2), {**_row("b"), "status": "oom", "reason": "cap\nmore"}], tmp_path / "s.csv")
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0].startswith("run_id,status,backend,model") and "wer_en" in lines[0]
    assert lines[2].startswith("b,oom,") and lines[2].endswith(",cap")


def test_summary_csv_columns_keep_their_order_and_show_foreign_load(tmp_path: Path) -> None:
    rows = [_row("a", rtf=0.2, foreign_cpu_fraction=0.07),
            {**_row("b"), "metrics": {"peak_rss_mb": 300.0, "languages": {"pt": {"wer": 0.3, "cer": 0.1}}}}]
    store.write_summary(rows, tmp_path / "s.csv")
    with open(tmp_path / "s.csv", newline="") as f:
        header, first, second = list(csv.reader(f))
    assert header == ["run_id", "status", "backend", "model", "quantization", "threads", "pinning", "chunking",
                      "cpu_limit", "peak_rss_mb", "probe_peak_rss_mb", "rss_after_load_mb", "peak_anon_mb", "cgroup_peak_mb",
                      "working_set_peak_mb", "min_limit_mb", "throttled_s", "load_s", "first_latency_s", "latency_p50_s", "latency_p95_s",
                      "rtf", "chunk_latency_p95_s", "lag_max_s", "final_latency_p95_s", "foreign_cpu_fraction",
                      *(f"{name}_{lang}" for lang in ("en", "pt") for name in
                        ("wer", "cer", "wer_ci_low", "wer_ci_high", "cer_ci_low", "cer_ci_high", "flagged")), "reason"]
    assert header[:-15] == list(store.SUMMARY_COLUMNS)
    row_a, row_b = dict(zip(header, first)), dict(zip(header, second))
    assert (row_a["foreign_cpu_fraction"], row_a["rtf"], row_a["wer_en"], row_a["wer_pt"]) == ("0.07", "0.2", "0.1", "")
    assert (row_b["foreign_cpu_fraction"], row_b["wer_en"], row_b["wer_pt"], row_b["threads"]) == ("", "", "0.3", "2")


def test_console_table_marks_timings_taken_under_foreign_load() -> None:
    from rich.console import Console

    from harness.console import results_table

    busy = _row("busy", latency_p50_s=1.0, latency_p95_s=1.5, rtf=0.3, load_s=0.5, foreign_cpu_fraction=0.12)
    quiet = _row("quiet", latency_p50_s=1.0, latency_p95_s=1.5, rtf=0.3, load_s=0.5, foreign_cpu_fraction=0.01)
    console = Console(width=200, record=True)
    console.print(results_table([busy, quiet], "t"))
    lines = console.export_text().splitlines()
    busy_line, quiet_line = lines[4], lines[5]
    assert "1.50!" in busy_line and "0.300!" in busy_line and "0.50 " in busy_line  # warm timings only, not the load time
    assert "!" not in quiet_line and "1.50" in quiet_line
    assert any(line.startswith("! warm timings taken while the machine was busy") for line in lines)
    console = Console(width=200, record=True)
    console.print(results_table([quiet], "t"))
    assert "!" not in console.export_text()


def test_wer_is_scored_with_the_scenarios_normalization() -> None:
    scenario = validate_scenario({"name": "s", "matrix": {"model": ["base"]},
                                  "normalization": {"pt": {"numbers": "spell-out", "remove_diacritics": True}}},
                                 Path("s.yaml"))
    sample = Sample(id="p1", lang="pt", audio="/a.wav", text="São sete horas", dataset="d")
    sample_ref = SampleRef(id="p1", lang="pt", audio="/a.wav", text="São sete horas", dataset="d")
    worker = {"ok": True, "vmhwm_mb": 1, "rss_after_load_mb": 1, "rss_anon_after_load_mb": 1, "rss_file_after_load_mb": 0,
              "load_s": 1, "first_latency_s": 1,
              "samples": [{"id": "p1", "lang": "pt", "audio_s": 2.0, "latency_s": [0.5], "hypothesis": "Sao 7 horas."}]}
    outcome = ChildOutcome(status="ok", reason="", result=worker, ru_maxrss_mb=100.0, wall_s=3.0)
    spec = scenario.expand()[0]
    data = data_description(scenario, [sample])
    provenance = record.Provenance({}, {"executor": "test"})
    row = record.build_row(make_job(spec, [sample_ref], data), outcome, provenance)
    assert row["data"]["normalization"]["pt"] == {"normalizer": "whisper-basic", "remove_diacritics": True, "numbers": "spell-out"}
    assert row["metrics"]["languages"]["pt"]["wer"] == 0.0
    default = record.build_row(make_job(spec, [sample_ref], {**data, "normalization": {}}), outcome, provenance)
    assert default["metrics"]["languages"]["pt"]["wer"] == pytest.approx(2 / 3, abs=1e-4)
