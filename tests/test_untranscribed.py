"""Audio without transcripts: imported for memory and latency only; its WER is absent, not zero, in the
row, the console table, summary.csv, the report and the DataFrame."""

from __future__ import annotations

import csv
import io
import json
import math
import wave
from pathlib import Path

import pytest
from rich.console import Console

from harness import store
from harness.analyze import frame
from harness.console import results_table
from harness.contract import Job, SampleRef
from harness.data import datasets, importers
from harness.errors import UserError
from harness.measure import record
from harness.measure.runner import ChildOutcome
from harness.plan.scenario import RunSpec
from harness.report.build import build


def _wav(path: Path, seconds: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x10\x00" * int(16000 * seconds))
    return path


def test_a_csv_or_folder_without_transcripts_imports_with_text_null(tmp_path: Path) -> None:
    _wav(tmp_path / "calls" / "a.wav")
    _wav(tmp_path / "calls" / "b.wav")
    (tmp_path / "calls" / "list.csv").write_text("audio\na.wav\nb.wav\n")  # no transcript column at all
    with pytest.warns(UserWarning, match=r"2 of 2 clip\(s\) have no transcript"):
        manifest = importers.import_dataset("generic", tmp_path / "calls" / "list.csv", "en", tmp_path / "csv")
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [(e["id"], e["text"]) for e in lines] == [("a", None), ("b", None)]
    assert [s.text for s in datasets.load_manifest(manifest)] == ["", ""]  # what a run reads
    with pytest.warns(UserWarning, match=r"2 of 2 clip\(s\) have no transcript"):
        importers.import_dataset("generic", tmp_path / "calls", "en", tmp_path / "folder")


def test_a_manifest_line_must_still_say_so(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "a", "lang": "en", "audio": "a.wav"}) + "\n")  # text forgotten, not null
    with pytest.raises(UserError, match=r"field 'text': missing or empty .*text null: audio without a transcript"):
        datasets.load_manifest(path)


def _row() -> dict:
    """A row built by the real row builder from a worker's reply on untranscribed audio (plus a probe)."""
    spec = RunSpec(run_id="r1", scenario="s", backend="faster-whisper", model="tiny.en", quantization="int8", threads=1,
                   cpu_pinning="none", chunking={"mode": "whole"}, beam_size=5, decoding={}, memory_cap_mb=None,
                   timeout_s=60, repeats=2, warmup=1)
    refs = [SampleRef(id=i, lang="en", audio=f"{i}.wav", text="", dataset="d", probe=i.startswith("probe"))
            for i in ("a", "b", "probe_en_30s")]
    reply = {"ok": True, "load_s": 0.5, "rss_after_load_mb": 200.0, "rss_anon_after_load_mb": 150.0,
             "rss_file_after_load_mb": 50.0, "vmhwm_mb": 260.0, "first_latency_s": 0.4, "phases": {},
             "samples": [{"id": "a", "lang": "en", "audio_s": 2.0, "latency_s": [0.3, 0.3], "hypothesis": "hello there",
                          "windows": [[1.0, 2.0]]},
                         {"id": "b", "lang": "en", "audio_s": 1.0, "latency_s": [0.2, 0.2], "hypothesis": "yes",
                          "windows": [[2.0, 3.0]]},
                         {"id": "probe_en_30s", "lang": "en", "audio_s": 30.0, "latency_s": [2.0], "hypothesis": "long",
                          "windows": [[3.0, 5.0]], "probe": True}]}
    outcome = ChildOutcome(status="ok", reason="", result=reply, ru_maxrss_mb=260.0, wall_s=8.0,
                           timeline=[(1.5, 220.0), (2.5, 225.0), (4.0, 255.0)])
    job = Job(spec=spec.to_json(), samples=refs, data={"max_audio_s": 30})
    return record.build_row(job, outcome, record.Provenance({"cpu": "test CPU", "logical_cores": 2}, {"executor": "test"}))


def test_its_wer_is_absent_not_zero_everywhere(tmp_path: Path) -> None:
    row = _row()
    en = row["metrics"]["languages"]["en"]
    assert en["wer"] is None and en["cer"] is None and en["words"] == 0 and en["samples"] == 2
    assert [s["wer"] for s in row["samples"]] == [None, None]
    assert row["metrics"]["warm_timings"] == 4  # the probe is outside the latency statistics ...
    assert row["metrics"]["probe_peak_rss_mb"] == 255.0 and row["probes"][0]["wer"] is None  # ... and kept apart

    table = io.StringIO()
    Console(file=table, width=250).print(results_table([row], "t"))
    header, *lines = [line for line in table.getvalue().splitlines() if "│" in line or "┃" in line]
    wer_column = [c.strip() for c in header.split("┃")].index("WER en")
    assert [c.strip() for c in lines[0].split("│")][wer_column] == "-"

    store.write_summary([row], tmp_path / "summary.csv")
    with open(tmp_path / "summary.csv", newline="") as f:
        (summary,) = list(csv.DictReader(f))
    assert summary["wer_en"] == "" and summary["cer_en"] == "" and summary["probe_peak_rss_mb"] == "255.0"

    df = frame.from_rows([row])
    assert math.isnan(df.loc[0, "wer"]) and df.loc[0, "lang"] == "en"

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    store.append_row(run_dir / store.RESULTS_FILE, row)
    report = build(run_dir)
    assert report["table"][0]["cells"]["wer_en"] == "-"
