"""Manifest parsing and validation: every error names the manifest line and field."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest

from harness.data import datasets
from harness.errors import UserError


def _wav(path: Path, seconds: float = 0.5) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * int(16000 * seconds))


def _manifest(folder: Path, entries: list[dict | str]) -> Path:
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    _wav(folder / "audio" / "a.wav")
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(e if isinstance(e, str) else json.dumps(e) for e in entries) + "\n")
    return path


GOOD = {"id": "a", "lang": "en", "audio": "audio/a.wav", "text": "hello"}


def test_a_good_manifest(tmp_path: Path) -> None:
    samples = datasets.load_manifest(_manifest(tmp_path / "mine", [GOOD, {**GOOD, "id": "b", "lang": "pt"}]))
    assert [(s.id, s.lang, s.dataset) for s in samples] == [("a", "en", "mine"), ("b", "pt", "mine")]
    assert Path(samples[0].audio).is_absolute() and not samples[0].synthetic


def test_optional_fields_of_their_types_are_read(tmp_path: Path) -> None:
    path = _manifest(tmp_path, [
        {**GOOD, "synthetic": True, "duration_s": 1.5, "sha256": "ab" * 32, "generator": "espeak-ng", "source": "mine"},
        {**GOOD, "id": "b", "synthetic": False, "duration_s": 0},
        {**GOOD, "id": "c", "synthetic": None, "duration_s": None, "sha256": None},  # null: as if absent (imports write it)
    ])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a BOM, as some editors write
    samples = datasets.load_manifest(path)
    assert [(s.synthetic, s.duration_s) for s in samples] == [(True, 1.5), (False, 0.0), (False, 0.5)]


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([GOOD, {**GOOD}], [":2:", "duplicate id 'a'", "line 1"]),
        ([{**GOOD, "text": ""}], [":1:", "field 'text'"]),
        ([{**GOOD, "lang": "portuguese"}], [":1:", "field 'lang'", "'portuguese'"]),
        ([{**GOOD, "audio": "../outside.wav"}], [":1:", "field 'audio'", "escapes"]),
        ([{**GOOD, "audio": "audio/missing.wav"}], [":1:", "file not found"]),
        ([GOOD, "{not json"], [":2:", "not a JSON object"]),
        ([GOOD, "[1, 2]"], [":2:", "expected a JSON object"]),
        ([{k: v for k, v in GOOD.items() if k != "id"}], [":1:", "field 'id'"]),
        # optional fields: a string "false" is not false, and NaN/Infinity (which json accepts) are not numbers
        ([GOOD, {**GOOD, "id": "b", "synthetic": "false"}], [":2:", "field 'synthetic'", 'got "false"', "true or false"]),
        ([{**GOOD, "synthetic": 1}], [":1:", "field 'synthetic'", "got 1"]),
        ([{**GOOD, "duration_s": "abc"}], [":1:", "field 'duration_s'", 'got "abc"', "finite number"]),
        ([{**GOOD, "duration_s": -1}], [":1:", "field 'duration_s'", "got -1", ">= 0"]),
        ([{**GOOD, "duration_s": True}], [":1:", "field 'duration_s'", "got true"]),
        ([json.dumps(GOOD)[:-1] + ', "duration_s": NaN}'], [":1:", "field 'duration_s'", "got NaN"]),
        ([json.dumps(GOOD)[:-1] + ', "duration_s": Infinity}'], [":1:", "field 'duration_s'", "got Infinity"]),
        ([json.dumps(GOOD)[:-1] + ', "duration_s": 1e999}'], [":1:", "field 'duration_s'", "got Infinity"]),
        ([json.dumps(GOOD)[:-1] + ', "duration_s": ' + "9" * 400 + "}"], [":1:", "field 'duration_s'", "999"]),
        ([json.dumps(GOOD)[:-1] + ', "duration_s": ' + "9" * 5000 + "}"], [":1:", "not a JSON object"]),
        ([{**GOOD, "sha256": "xyz"}], [":1:", "field 'sha256'", 'got "xyz"', "64 hexadecimal"]),
        ([{**GOOD, "sha256": "g" * 64}], [":1:", "field 'sha256'"]),
        ([{**GOOD, "generator": 3}], [":1:", "field 'generator'", "got 3", "a string"]),
        ([{**GOOD, "source": ["a"]}], [":1:", "field 'source'", 'got ["a"]']),
        (['{"id": "a", "lang": "en", "audio": "audio/a.wav", "text": "lone \\ud800 surrogate"}'], [":1:", "field 'text'", "not valid Unicode"]),
        (["[" * 100000 + "]" * 100000], [":1:", "not a JSON object"]),
    ],
)
def test_bad_manifests(tmp_path: Path, entries: list, expected: list[str]) -> None:
    path = _manifest(tmp_path, entries)
    with pytest.raises(UserError) as info:
        datasets.load_manifest(path)
    assert str(path) in str(info.value)
    for fragment in expected:
        assert fragment in str(info.value)


def test_corrupt_audio_is_found_before_anything_runs(tmp_path: Path) -> None:
    path = _manifest(tmp_path, [GOOD])
    (tmp_path / "audio" / "a.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" * 20)
    with pytest.raises(UserError, match=r"manifest.jsonl:1: field 'audio': cannot decode .*a.wav"):
        datasets.load_manifest(path)


def test_empty_audio_and_non_utf8(tmp_path: Path) -> None:
    path = _manifest(tmp_path, [GOOD])
    (tmp_path / "audio" / "a.wav").write_bytes(b"")
    with pytest.raises(UserError, match="file is empty"):
        datasets.load_manifest(path)
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(UserError, match=":1: not UTF-8"):
        datasets.load_manifest(path)


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="manifest not found"):
        datasets.load_datasets([str(tmp_path / "nope.jsonl")])


def test_select_filters_languages_and_caps_per_language(tmp_path: Path) -> None:
    entries = [{**GOOD, "id": f"{lang}{i}", "lang": lang} for lang in ("en", "pt", "es") for i in range(3)]
    samples = datasets.load_manifest(_manifest(tmp_path, entries))
    kept = datasets.select(samples, ("en", "pt"), 2)
    assert [s.id for s in kept] == ["en0", "en1", "pt0", "pt1"]


def test_default_set_is_synthetic_english_and_portuguese() -> None:
    samples = datasets.load_datasets(["default"])
    assert {s.lang for s in samples} == {"en", "pt"}
    assert all(s.synthetic and s.dataset == "default" for s in samples)
    folder = datasets.build_default()
    generators = {json.loads(line)["generator"].split()[0] for line in (folder / "manifest.jsonl").read_text().splitlines()}
    assert generators == {"piper-tts", "eSpeak"}


def test_default_long_form_is_three_minutes_or_more_per_language_made_of_the_short_requests() -> None:
    long_form = datasets.load_datasets(["default-long"])
    short = datasets.load_datasets(["default"])
    assert [s.lang for s in long_form] == ["en", "pt"]
    for sample in long_form:
        assert sample.synthetic and sample.dataset == "default-long"
        assert datasets.probe_audio(Path(sample.audio)).duration_s >= 180
        requests = [s.text for s in short if s.lang == sample.lang]
        assert sample.text.startswith(" ".join(requests))
