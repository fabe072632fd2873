"""`harness run --dry-run`: the checks of a real run without measuring, and the run-time estimate."""

from __future__ import annotations

import json
import os
import wave
from pathlib import Path

from conftest import run_cli, write_scenario

from harness.measure.environment import cpu_model

SCENARIO = ("name: dry\nrepeats: 2\nwarmup: 1\ndatasets: [data/manifest.jsonl]\n"
            "matrix: {model: [tiny.en], quantization: [int8], threads: [1, 2]}\n")


def _data(root: Path) -> None:
    (root / "data").mkdir(parents=True)
    for name, seconds in (("a", 2.0), ("b", 1.0)):
        with wave.open(str(root / "data" / f"{name}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(b"\x00\x01" * int(16000 * seconds))
    (root / "data" / "manifest.jsonl").write_text("".join(
        json.dumps({"id": n, "lang": "en", "audio": f"{n}.wav", "text": "hello"}) + "\n" for n in ("a", "b")))


def _earlier_run(folder: Path, run_id: str, cpu: str, run_seconds: float) -> None:
    """A run directory measured earlier: one configuration that took `run_seconds` for 6 + 2 (cold)
    seconds of audio."""
    folder.mkdir(parents=True)
    row = {"schema_version": 1, "run_id": run_id, "scenario": "dry", "status": "ok",
           "config": {"backend": "faster-whisper", "model": "tiny.en", "quantization": "int8", "threads": 1,
                      "cpu_pinning": {"requested": "none"}},
           "metrics": {"peak_rss_mb": 250.0, "run_seconds": run_seconds},
           "samples": [{"id": "x", "lang": "en", "audio_s": 2.0, "latency_s": [0.1, 0.1, 0.1]}],
           "environment": {"cpu": cpu, "logical_cores": os.cpu_count()}}
    (folder / "results.jsonl").write_text(json.dumps(row) + "\n")


def test_a_missing_manifest_is_bad_input_as_in_a_real_run(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "s.yaml", SCENARIO)
    done = run_cli("run", str(scenario), "--dry-run", timeout=60)
    assert done.returncode == 2 and "manifest not found: 'data/manifest.jsonl'" in done.stderr, done.stderr
    assert done.stdout == ""


def test_it_lists_the_configurations_and_estimates_the_run_time(tmp_path: Path) -> None:
    _data(tmp_path)
    scenario = write_scenario(tmp_path / "s.yaml", SCENARIO)
    out = tmp_path / "reports" / "new"
    done = run_cli("run", str(scenario), "--dry-run", "--max-audio-s", "10", "--out", str(out), timeout=60)
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 2 and all(i.startswith("faster-whisper-tiny.en-int8-t") for i in ids)
    text = " ".join(done.stderr.split())
    assert "datasets: en 2 samples, 3 s; max_audio_s 10: a probe per language" in text
    # per configuration: 2 repeats x 3 s + the cold run on the first sample (2 s) + the 10 s probe = 18 s
    assert "estimate: about 36 s for 36 audio-seconds transcribed, no earlier run of this machine class" in text
    assert "at real-time speed" in text and not out.exists()  # nothing measured, no run directory

    _earlier_run(tmp_path / "reports" / "old", ids[0], cpu_model(), run_seconds=4.0)  # 0.5 s per audio second
    _earlier_run(tmp_path / "reports" / "elsewhere", ids[0], "another CPU", run_seconds=80.0)
    done = run_cli("run", str(scenario), "--dry-run", "--max-audio-s", "10", "--out", str(out), timeout=60)
    text = " ".join(done.stderr.split())
    assert done.returncode == 0 and "estimate: about 18 s for 36 audio-seconds transcribed, at the pace of 1 earlier row(s)" in text
    assert "(1 configuration(s) by its own earlier runs, 1 configuration(s) by the same model)" in text
