"""Micro-benchmarks (pytest-benchmark) of the harness's own hot paths; run with `nox -s microbench`.

Not part of `nox -s tests`. Compare against an earlier saved run with
`nox -s microbench -- --benchmark-compare --benchmark-compare-fail=mean:10%`.
"""

from __future__ import annotations

import json
import random
import wave
from pathlib import Path

import numpy as np
import pytest

from harness import store
from harness.analyze import scoring as metrics
from harness.report import generate
from harness.report.trend import write_index

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "recommend" / "feasible.jsonl"
WORDS = ("the quick brown fox jumps over a lazy dog while seven bright stars shine above "
         "quiet northern hills and rivers run toward distant silver oceans").split()


def _row(i: int) -> dict:
    row = store.read_rows(GOLDEN)[i % 4]
    row["run_id"] = f"{row['run_id']}-{i}"
    row["config"]["threads"] = 1 + i % 2
    row["samples"] = [{"id": f"s{k}", "lang": "en", "audio_s": 4.0, "latency_s": [1.0 + k / 100, 1.1, 0.9],
                       "reference": "a reference", "hypothesis": "a hypothesis", "wer": 0.1} for k in range(12)]
    row["timeline"] = {"t_s": [0.02 * k for k in range(600)], "rss_mb": [100 + k / 3 for k in range(600)],
                       "phases": {"start": 0.0, "audio_decoded": 0.5, "loaded": 1.5, "done": 11.0}}
    return row


def test_wer_and_cer_on_10000_words(benchmark) -> None:
    rng = random.Random(1)
    refs = [" ".join(rng.choice(WORDS) for _ in range(100)) for _ in range(100)]
    hyps = [" ".join(w if rng.random() > 0.1 else rng.choice(WORDS) for w in ref.split()) for ref in refs]
    rates = benchmark(metrics.error_rates, refs, hyps, "en")
    assert rates["words"] > 9_900 and 0 < rates["wer"] < 0.2  # ~10,000 words after normalization


@pytest.fixture(scope="module")
def five_minute_wav(tmp_path_factory) -> Path:
    """5 minutes of 44.1 kHz stereo, the kind of file users upload."""
    path = tmp_path_factory.mktemp("audio") / "five_minutes.wav"
    t = np.arange(44_100 * 300) / 44_100
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44_100)
        w.writeframes(np.repeat(tone, 2).tobytes())
    return path


def test_decode_and_resample_a_5_minute_file(benchmark, five_minute_wav: Path) -> None:
    from faster_whisper.audio import decode_audio

    audio = benchmark.pedantic(decode_audio, args=(str(five_minute_wav),), kwargs={"sampling_rate": 16000}, rounds=3)
    assert abs(len(audio) - 16000 * 300) < 16000


def test_load_1000_result_rows(benchmark, tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(_row(i)) + "\n" for i in range(1000)))
    rows = benchmark(store.read_rows, path)
    assert len(rows) == 1000


def test_render_a_report_of_200_runs(benchmark, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.jsonl").write_text("".join(json.dumps(_row(i)) + "\n" for i in range(200)))
    paths = benchmark.pedantic(generate, args=(run_dir,), rounds=2)
    assert paths["html"].stat().st_size > 0


@pytest.fixture(scope="module")
def reports_of_100_runs(tmp_path_factory) -> Path:
    """100 run directories of the same 4 configurations, one a day (what a nightly job leaves)."""
    reports = tmp_path_factory.mktemp("reports")
    for day in range(100):
        run_dir = reports / f"nightly-{day:03d}"
        run_dir.mkdir()
        rows = []
        for k in range(4):
            row = _row(k)
            row["run_id"] = row["run_id"].rsplit("-", 1)[0]  # the same configurations in every run
            row["metrics"]["peak_rss_mb"] += day % 7
            row["environment"]["started_at"] = f"2026-{1 + day // 28:02d}-{1 + day % 28:02d}T02:00:00+00:00"
            rows.append(json.dumps(row) + "\n")
        (run_dir / "results.jsonl").write_text("".join(rows))
    return reports


def test_render_the_trend_index_of_100_runs(benchmark, reports_of_100_runs: Path) -> None:
    path = benchmark.pedantic(write_index, args=(reports_of_100_runs,), rounds=2)
    html = path.read_text()
    assert html.count("nightly-") >= 100 and '<svg class="trend"' in html
