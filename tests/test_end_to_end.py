"""The CLI on real speech (../shared/datasets/real-dev), real models, real subprocesses."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import read_rows, run_cli, worker_processes, write_scenario

pytestmark = pytest.mark.slow


def test_real_speech_rows_follow_the_results_contract(tmp_path: Path, small_manifest: Path) -> None:
    scenario = write_scenario(tmp_path / "real.yaml", """
name: real
repeats: 2
matrix: {model: [tiny.en, base], quantization: [int8], threads: [2], cpu_pinning: [auto]}
""")
    run_dir = tmp_path / "run"
    result = run_cli("run", str(scenario), "--dataset", str(small_manifest), "--out", str(run_dir))
    assert result.returncode == 0, result.stderr
    tiny, base = read_rows(run_dir)

    for row in (tiny, base):
        assert row["schema_version"] == 1 and row["status"] == "ok", row["reason"]
        m = row["metrics"]
        assert 150 < m["peak_rss_mb"] < 1000
        assert m["rss_after_load_mb"] <= m["peak_rss_mb"]
        assert abs(m["peak_rss_mb"] - m["vmhwm_mb"]) / m["peak_rss_mb"] < 0.05
        assert 0 < m["load_s"] < 30 and m["first_latency_s"] > 0
        assert 0 < m["latency_p50_s"] <= m["latency_p95_s"]
        assert 0 < m["rtf"] < 2
        assert row["environment"]["cpu"] and row["environment"]["packages"]["faster-whisper"]
        assert row["config"]["cpu_pinning"] == {"requested": "auto", "effective": [0, 1]}
        assert all(len(s["latency_s"]) == 2 and s["hypothesis"] for s in row["samples"])
        # Real speech, short clear sentences: both models get English nearly right.
        assert m["languages"]["en"]["wer"] < 0.15
        assert m["languages"]["en"]["samples"] == 2 and not m["languages"]["en"]["synthetic"]

    assert "pt" not in tiny["metrics"]["languages"]
    assert "English-only" in tiny["skipped_languages"]["pt"]
    assert base["metrics"]["languages"]["pt"]["wer"] < 0.5

    with open(run_dir / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [r["model"] for r in summary] == ["tiny.en", "base"]
    assert summary[0]["wer_pt"] == "" and float(summary[1]["wer_pt"]) >= 0
    assert (run_dir / "scenario.yaml").is_file() and (run_dir / "environment.json").is_file()
    assert "WER en" in result.stdout and "base" in result.stdout
    assert (run_dir / "index.html").is_file() and (run_dir / "recommendation.json").is_file()
    assert "report:" in result.stderr
    assert not worker_processes()


def test_unavailable_model_is_an_error_row_that_says_what_to_install(tmp_path: Path, small_manifest: Path) -> None:
    scenario = write_scenario(tmp_path / "large.yaml", """
name: large
repeats: 1
matrix: {model: [large-v3, tiny.en]}
""")
    result = run_cli("run", str(scenario), "--dataset", str(small_manifest), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    large, tiny = read_rows(tmp_path / "run")
    assert large["status"] == "error"
    assert "not available on this machine" in large["reason"] and "directory" in large["reason"]
    assert tiny["status"] == "ok"


def test_models_list_shows_the_offline_packs() -> None:
    result = run_cli("models", "list")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert "tiny.en" in names and "base" in names


def test_search_finds_the_exhaustive_recommendation_with_fewer_runs(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "search.yaml", """
name: search
datasets: [default]
languages: [en]
max_samples_per_language: 2
repeats: 1
matrix: {model: [tiny.en, base], quantization: [int8, float32], threads: [1]}
budgets: {peak_rss_mb: 600, wer: {en: 0.25}}
""")
    outcomes = {}
    for mode in ("exhaustive", "search"):
        args = ["run", str(scenario), "--out", str(tmp_path / mode)] + (["--search"] if mode == "search" else [])
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        outcomes[mode] = json.loads((tmp_path / mode / "recommendation.json").read_text())
    assert outcomes["search"]["recommended"]["run_id"] == outcomes["exhaustive"]["recommended"]["run_id"]
    assert outcomes["search"]["recommended"]["config"]["model"] == "tiny.en"
    summary = json.loads((tmp_path / "search" / "search.json").read_text())
    assert (summary["measured"], summary["skipped"]) == (1, 3)
    exhaustive_seconds = sum(r["metrics"]["run_seconds"] for r in read_rows(tmp_path / "exhaustive"))
    assert summary["run_seconds"] < exhaustive_seconds
    skipped = [r for r in read_rows(tmp_path / "search") if r["status"] == "skipped"]
    assert all(r["reason"].startswith("cannot win:") for r in skipped)
