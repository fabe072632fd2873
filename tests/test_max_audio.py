"""max_audio_s: the scenario key and its override, the probe recording, what the answer and the snippet
say the measurement is valid for, and the probe in every configuration's measurement (and its fit)."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import read_rows, run_cli, write_scenario

from harness.analyze import deploy
from harness.analyze.envelope import envelope
from harness.analyze.recommend import recommend
from harness.contract import SampleRef
from harness.data import datasets, probe
from harness.errors import UserError
from harness.measure import fit
from harness.plan.scenario import load_scenario
from harness.report.build import answer

SCENARIO = "name: s\nmatrix: {model: [tiny.en]}\n"


def _wav(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm, channels).tobytes())
    return path


def _clips(folder: Path, texts: tuple[str, ...] = ("one two", "three", "four five six")) -> list[datasets.Sample]:
    lengths = (2.0, 1.0, 3.0)
    return [datasets.Sample(id=f"c{i}", lang="en", audio=str(_wav(folder / f"c{i}.wav", s, *((8000, 2) if i == 1 else ()))),
                            text=text, dataset="d", duration_s=s) for i, (s, text) in enumerate(zip(lengths, texts))]


@pytest.mark.parametrize(("value", "expected"), [
    (0, "expected a finite number > 0"), (-5, "expected a finite number > 0"), ('"300"', "expected a finite number > 0"),
    (".inf", "invalid value .inf"), (20000, "at most 14400 (4 hours)")])
def test_max_audio_s_is_validated_naming_file_field_and_value(tmp_path: Path, value: object, expected: str) -> None:
    path = write_scenario(tmp_path / "s.yaml", f"{SCENARIO}max_audio_s: {value}\n")
    with pytest.raises(UserError, match="max_audio_s") as caught:
        load_scenario(path)
    assert str(path) in str(caught.value) and expected in str(caught.value)
    assert load_scenario(write_scenario(tmp_path / "ok.yaml", f"{SCENARIO}max_audio_s: 300\n")).max_audio_s == 300


def test_the_override_is_checked_on_the_command_line(tmp_path: Path) -> None:
    path = write_scenario(tmp_path / "s.yaml", SCENARIO)
    done = run_cli("run", str(path), "--max-audio-s", "nan", "--dry-run", timeout=60)
    assert done.returncode == 2 and "--max-audio-s: invalid value 'nan'" in done.stderr, done.stderr


def test_a_probe_is_the_clips_joined_until_the_length_cached_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    clips = _clips(tmp_path / "audio")
    made = probe.probes(clips, 10.0)
    assert len(made) == 1
    p = made[0]
    assert (p.id, p.lang, p.dataset, p.probe) == ("probe_en_10s", "en", "probe", True)
    # 2 + 1 + 3 + 2 + 1 s of clips and four 0.6 s pauses: it ends after the first whole clip at or past 10 s
    assert p.duration_s == pytest.approx(11.4, abs=0.001)
    with wave.open(p.audio) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (1, 16000, round(11.4 * 16000))
    assert p.text == "one two three four five six one two three"
    assert Path(p.audio).parent == tmp_path / "cache" / "probes"
    before = Path(p.audio).stat().st_mtime_ns
    assert probe.probes(clips, 10.0)[0] == p and Path(p.audio).stat().st_mtime_ns == before  # built once
    _wav(Path(clips[0].audio), 2.5)  # other content, another probe
    assert probe.probes(clips, 10.0)[0].audio != p.audio


def test_a_probe_of_clips_without_transcripts_has_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    assert probe.probes(_clips(tmp_path / "audio", ("one", "", "three")), 4.0)[0].text == ""


def _sample(audio_s: float, peak: float, **extra: object) -> dict:
    return {"id": f"s{audio_s}", "lang": "en", "audio_s": audio_s, "latency_s": [1.0], "peak_rss_mb": peak, **extra}


def test_the_envelope_says_what_the_measurement_is_valid_for() -> None:
    short = [_sample(5.0, 300.0), _sample(11.0, 310.0)]
    without = envelope({"samples": short})
    assert without["valid_for"] == "valid for requests up to 11 s" and without["mib_per_minute"] is None
    assert "the longest clip measured (set max_audio_s" in without["text"]
    probed = envelope({"samples": short, "probes": [_sample(302.0, 480.0)], "data": {"max_audio_s": 300}})
    assert probed["valid_for"] == "valid for requests up to 300 s"
    assert "a 302 s probe per language was measured, 480 MiB while transcribing it against 310 MiB on the clips" in probed["text"]
    assert probed["lengths"] == 2 and probed["mib_per_minute"] is None  # short clips are one length
    # the long-form study: 33 s, 2, 5 and 10 minutes (README: whole mode, about 45 MiB per minute)
    lengths = envelope({"samples": [_sample(33, 488), _sample(120, 521), _sample(300, 677), _sample(600, 927)]})
    assert lengths["lengths"] == 4 and lengths["mib_per_minute"] == pytest.approx(47.8, abs=0.1)
    assert "memory grows by about 48 MiB per minute of audio (4 lengths measured): longer requests need more" in lengths["text"]
    flat = envelope({"samples": [_sample(33, 486), _sample(300, 487), _sample(600, 486)]})  # e.g. stream mode
    assert "; memory did not grow with the length of the request (3 lengths measured)" in flat["text"]


def _row(run_id: str, peak: float, **extra: object) -> dict:
    return {"schema_version": 1, "run_id": run_id, "scenario": "s", "status": "ok",
            "config": {"backend": "faster-whisper", "model": "tiny.en", "quantization": "int8", "threads": 1,
                       "cpu_pinning": {"requested": "none"}},
            "metrics": {"peak_rss_mb": peak, "latency_p95_s": 1.0, "rtf": 0.2, "languages": {"en": {"wer": 0.05}}},
            "samples": [_sample(9.0, peak - 50)], **extra}


def test_the_answer_and_the_snippet_say_it() -> None:
    rows = [_row("a", 480.0, probes=[_sample(301.0, 470.0)], data={"max_audio_s": 300})]
    rec = recommend(rows, {"peak_rss_mb": 600})
    snippet = deploy.snippet(rec["recommended"])
    assert snippet["kubernetes"].startswith("# valid for requests up to 300 s of audio\nresources:")
    assert any(n.startswith("valid for requests up to 300 s (max_audio_s") for n in snippet["notes"])
    assert "Valid for requests up to 300 s (max_audio_s: a 301 s probe" in answer(rec, snippet)
    short = recommend([_row("b", 300.0)], {})
    assert "Valid for requests up to 9 s, the longest clip measured" in answer(short, deploy.snippet(short["recommended"]))


def test_a_fit_times_the_probe_as_its_longest_sample(tmp_path: Path) -> None:
    from harness.plan.scenario import RunSpec

    spec = RunSpec(run_id="r", scenario="s", backend="faster-whisper", model="tiny.en", quantization="int8", threads=1,
                   cpu_pinning="none", chunking={"mode": "whole"}, beam_size=5, decoding={}, memory_cap_mb=None,
                   timeout_s=60, repeats=3, warmup=1)
    refs = [SampleRef(id="a", lang="en", audio="a.wav", text="a", dataset="d", duration_s=9.0),
            SampleRef(id="probe_en_300s", lang="en", audio="p.wav", text="a", dataset="probe", duration_s=301.0, probe=True)]
    jobs = []

    def measure(job):  # the reference fails: the fit stops there, having shown what it ran
        jobs.append(job)
        return {"status": "error", "reason": "stop", "metrics": {}}

    fit.fit_configuration(spec, refs, {}, measure, tmp_path / "steps.jsonl")
    assert [(s.id, s.probe) for s in jobs[0].samples] == [("probe_en_300s", False)]


@pytest.mark.slow
def test_every_configuration_transcribes_the_probe_outside_the_statistics(tmp_path: Path, small_manifest: Path) -> None:
    scenario = write_scenario(tmp_path / "s.yaml", "name: probe\nlanguages: [en]\nrepeats: 2\nwarmup: 1\n"
                                                   "matrix: {model: [tiny.en], quantization: [int8], threads: [2]}\n")
    done = run_cli("run", str(scenario), "--dataset", str(small_manifest), "--max-audio-s", "30", "--out",
                   str(tmp_path / "run"), env={"HARNESS_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    (row,) = read_rows(tmp_path / "run")
    (p,) = row["probes"]
    assert p["id"] == "probe_en_30s" and 30 <= p["audio_s"] < 42 and len(p["latency_s"]) == 1 and p["wer"] is not None
    assert [s["id"] for s in row["samples"]] == ["en_jfk", "en_picovoice_leopard_test"]  # not among the samples
    m = row["metrics"]
    assert m["warm_timings"] == 4 and m["languages"]["en"]["samples"] == 2  # nor in latency, RTF, WER
    assert m["languages"]["en"]["audio_s"] == pytest.approx(16.9, abs=0.2)
    # the run's kernel peak covers it (the probe's is sampled tree RSS, which can differ by a few tenths of a MiB)
    assert m["probe_peak_rss_mb"] == p["peak_rss_mb"] <= m["peak_rss_mb"] + 2
    assert row["data"]["max_audio_s"] == 30 and row["timeline"]["phases"]["probe_start"] < row["timeline"]["phases"]["done"]
    rec = json.loads((tmp_path / "run" / "recommendation.json").read_text())
    assert "Valid for requests up to 30 s (max_audio_s" in rec["answer"] and "Valid for requests up to 30 s" in done.stderr
    assert rec["deployment"]["kubernetes"].startswith("# valid for requests up to 30 s of audio")
