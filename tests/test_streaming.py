"""The streaming simulation's pure logic, and every chunking mode run for real on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import read_rows, run_cli, write_scenario

from harness.analyze import streaming
from harness.child import stream

SR = stream.SAMPLE_RATE


def test_pieces_arrive_every_chunk_and_reach_back_by_the_overlap() -> None:
    seconds = [(a / SR, b / SR) for a, b in stream.pieces(11 * SR, 5, 1, "pieces")]
    assert seconds == [(0, 5), (4, 10), (9, 11)]
    assert [(a / SR, b / SR) for a, b in stream.pieces(5 * SR, 2, 0, "growing")] == [(0, 2), (0, 4), (0, 5)]
    assert stream.pieces(4 * SR, 2, 0, "pieces") == [(0, 2 * SR), (2 * SR, 4 * SR)]  # no empty last piece


def test_merge_drops_words_repeated_across_a_seam_once() -> None:
    assert stream.merge(["And so my fellow", "fellow Americans, ask", "Ask not"], "pieces") == "And so my fellow Americans, ask not"
    assert stream.merge(["the the", "the end"], "pieces") == "the the end"  # only the overlap, not every repeat
    assert stream.merge(["hello", "hello world"], "growing") == "hello world"


def test_session_timeline_queues_pieces_behind_slow_ones() -> None:
    # 2 s pieces; the second takes 3 s, so the third waits for it.
    timeline = streaming.session_timeline([2, 4, 6], [0.5, 3.0, 0.5], 6)
    assert timeline["lag_max_s"] == pytest.approx(3.0)           # piece 2: arrives 4, done 7
    assert timeline["final_latency_s"] == pytest.approx(1.5)     # piece 3: starts 7, done 7.5; audio ended at 6
    fast = streaming.session_timeline([2, 4], [0.1, 0.1], 4)
    assert fast == {"lag_max_s": pytest.approx(0.1), "final_latency_s": pytest.approx(0.1)}


def test_boundary_errors_count_only_errors_touching_a_seam() -> None:
    ref = "ask not what your country can do for you"
    cut = streaming.boundary_errors(ref, ["ask not what your coun", "try can do for you"], "en")
    assert cut == {"errors": 2, "at_boundaries": 2}  # "country" became "coun" + "try"
    inside = streaming.boundary_errors(ref, ["ask nothing what your", "country can do for you"], "en")
    assert inside == {"errors": 1, "at_boundaries": 0}


@pytest.mark.slow
def test_every_chunking_mode_on_both_backends(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "chunking.yaml", """
name: chunking
datasets: [default]
languages: [en]
max_samples_per_language: 2
repeats: 2
matrix:
  backend: [faster-whisper, openai-whisper]
  model: [tiny.en]
  quantization: [int8]
  threads: [2]
  cpu_pinning: [auto]
  chunking: [whole, {chunk_length: 10}, {vad: {min_silence_duration_ms: 500}}, {batched: {batch_size: 4}}, {stream: {chunk_s: 1, overlap_s: 0.5}}]
""")
    done = run_cli("run", str(scenario), "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(r["config"]["backend"], r["config"]["chunking"]["mode"]): r for r in read_rows(tmp_path / "run")}
    for mode in ("whole", "chunk_length", "vad", "batched", "stream"):
        row = rows[("faster-whisper", mode)]
        assert row["status"] == "ok", row["reason"]
        assert row["metrics"]["languages"]["en"]["wer"] <= 0.5  # clear synthetic speech: every mode transcribes it
    for mode in ("chunk_length", "vad", "batched"):
        row = rows[("openai-whisper", mode)]
        assert row["status"] == "skipped" and f"no '{mode}' mode" in row["reason"]
    assert rows[("faster-whisper", "vad")]["config"]["chunking"] == {"mode": "vad", "min_silence_duration_ms": 500}
    for backend in ("faster-whisper", "openai-whisper"):
        stream = rows[(backend, "stream")]
        assert stream["status"] == "ok", stream["reason"]
        summary = stream["metrics"]["stream"]
        # 2 samples x 2 timed runs, about 3 s each: 3 one-second pieces per run
        assert summary["chunks"] >= 4 * 3
        assert 0 < summary["chunk_latency_p50_s"] <= summary["chunk_latency_p95_s"]
        assert summary["final_latency_p95_s"] > 0 and summary["lag_max_s"] >= summary["chunk_latency_p50_s"]
        en = stream["metrics"]["languages"]["en"]
        assert 0 <= en["errors_at_boundaries"] <= en["errors"]
        sample = stream["samples"][0]
        assert len(sample["chunks"]) == 2 and sum(sample["chunks"][0]) == pytest.approx(sample["latency_s"][0], rel=0.05)
        assert sample["peak_rss_mb"] > 100
    report = json.loads((tmp_path / "run" / "recommendation.json").read_text())
    assert report["recommended"] is not None
