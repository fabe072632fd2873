"""Manifest parsing and validation: every error names the manifest line and field."""

from __future__ import annotations

import csv
import json
import wave
from pathlib import Path

import numpy as np
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
        ([{**GOOD, "audio": "../outside.wav"}], [":1:", "field 'audio'", "escapes", "write an absolute path", "outside.wav\")"]),
        ([{**GOOD, "audio": "audio/../../outside.wav"}], [":1:", "field 'audio'", "escapes", "write an absolute path"]),
        ([{**GOOD, "lang": ""}], [":1:", "field 'lang'", "missing or empty", "pass --lang LANG", 'add a "lang" field']),
        ([{**GOOD, "lang": 5}], [":1:", "field 'lang'", "got 5"]),
        ([{**GOOD, "audio": "/no/such/file.wav"}], [":1:", "field 'audio'", "file not found: /no/such/file.wav"]),
        ([GOOD, {"audio_filepath": "audio/a.wav", "text": "hi", "duration": 0.5}],
         [":2:", "a NeMo manifest line (audio_filepath)", "line 1 is a harness manifest line (audio)", "one style per file"]),
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


# ---------------------------------------------------------------------------------------------
# Manifests as other tools write them: absolute paths, NeMo manifests, Hugging Face audiofolder
# metadata, language codes with a region, and --lang for lines without a language.


def _tone(path: Path, seconds: float = 0.4) -> Path:
    """A small real WAV (a 440 Hz tone, 16 kHz mono)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((0.2 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes())
    return path


def _jsonl(path: Path, lines: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    return path


def test_an_absolute_audio_path_is_accepted_and_checked(tmp_path: Path) -> None:
    elsewhere = _tone(tmp_path / "elsewhere" / "far.wav")
    path = _manifest(tmp_path / "m", [GOOD, {**GOOD, "id": "b", "audio": str(elsewhere)}])
    samples = datasets.load_manifest(path)
    assert samples[1].audio == str(elsewhere.resolve()) and samples[1].duration_s == pytest.approx(0.4)
    (tmp_path / "elsewhere" / "empty.wav").write_bytes(b"")
    for audio, message in ((tmp_path / "elsewhere" / "empty.wav", "file is empty"),
                           (tmp_path / "elsewhere" / "gone.wav", "file not found"),
                           (tmp_path / "m" / "manifest.jsonl", "cannot decode")):
        _jsonl(path, [{**GOOD, "audio": str(audio)}])
        with pytest.raises(UserError, match=f"manifest.jsonl:1: field 'audio': {message}"):
            datasets.load_manifest(path)


def test_a_nemo_manifest_as_nemo_writes_it(tmp_path: Path) -> None:
    folder = tmp_path / "nemo"
    _tone(folder / "wavs" / "spk1" / "0001.wav")
    _tone(folder / "wavs" / "spk2" / "0001.wav")
    _tone(folder / "wavs" / "intro.wav")
    absolute = _tone(tmp_path / "other" / "call.wav", 0.8)
    path = _jsonl(folder / "train_manifest.json", [
        {"audio_filepath": "wavs/spk1/0001.wav", "duration": 0.4, "text": "olá"},
        {"audio_filepath": "wavs/spk2/0001.wav", "duration": 0.4, "text": "tudo bem", "offset": 0},
        {"audio_filepath": "wavs/intro.wav", "duration": 0.4, "text": "hello", "lang": "en"},
        {"audio_filepath": str(absolute), "duration": 0.8, "text": "good morning", "language": "en-US"},
    ])
    notes: list[str] = []
    samples = datasets.load_datasets([str(path)], lang="pt", notes=notes)
    first, second, intro, call = samples
    # ids from the file names; two that share a name both get a short hash of the path as written
    assert first.id.startswith("0001-") and second.id.startswith("0001-") and first.id != second.id
    assert (intro.id, call.id) == ("intro", "call")
    assert [s.lang for s in samples] == ["pt", "pt", "en", "en"]
    assert [s.text for s in samples] == ["olá", "tudo bem", "hello", "good morning"]
    assert call.audio == str(absolute.resolve()) and call.duration_s == 0.8
    assert {s.dataset for s in samples} == {"train_manifest"} and not any(s.synthetic for s in samples)
    assert notes == [f"{path}: language code(s) 'en-US' read as 'en' (Whisper has one code per language, without a region)"]
    assert [s.id for s in datasets.load_manifest(path, lang="pt")] == [s.id for s in samples]  # stable


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([{"audio_filepath": "a.wav", "duration": 0.5, "text": "hi"}],
         ["x.json:1:", "field 'lang'", "pass --lang LANG", 'add a "lang" field']),
        ([{"audio_filepath": "a.wav", "text": "hi", "lang": "en"}, {"audio_filepath": "a.wav", "text": "hi again", "lang": "en"}],
         ["x.json:2:", "field 'audio_filepath'", "'a.wav'", "sample 'a-", "line 1", "its own file"]),
        ([{"audio_filepath": "a.wav", "text": "", "lang": "en"}], ["x.json:1:", "field 'text'", "NeMo"]),
        ([{"audio_filepath": "a.wav", "text": "hi", "lang": "en", "duration": "5"}], ["x.json:1:", "field 'duration'", 'got "5"']),
        ([{"audio_filepath": "a.wav", "text": "hi", "lang": "en", "offset": 2.5}], ["x.json:1:", "field 'offset'", "2.5", "segment"]),
        ([{"audio_filepath": "../a.wav", "text": "hi", "lang": "en"}], ["x.json:1:", "field 'audio_filepath'", "escapes", "absolute path"]),
        ([{"audio_filepath": "a.wav", "text": "hi", "lang": "klingon"}], ["x.json:1:", "field 'lang'", "unknown language code 'klingon'"]),
        ([{"audio_filepath": "a.wav", "text": "hi", "language": "xx-YY"}], ["x.json:1:", "field 'language'", "'xx-YY'"]),
        ([{"audio_filepath": "a.wav", "text": "hi", "lang": "en"}, {"file_name": "a.wav", "text": "hi"}],
         ["x.json:2:", "audiofolder metadata (file_name)", "line 1 is a NeMo manifest line"]),
    ],
)
def test_bad_nemo_manifests(tmp_path: Path, lines: list[dict], expected: list[str]) -> None:
    _tone(tmp_path / "a.wav")
    with pytest.raises(UserError) as info:
        datasets.load_manifest(_jsonl(tmp_path / "x.json", lines))
    for fragment in expected:
        assert fragment in str(info.value)


def _audiofolder(folder: Path, kind: str, rows: list[dict]) -> Path:
    for row in rows:
        _tone(folder / row["file_name"])
    if kind == "jsonl":
        return _jsonl(folder / "metadata.jsonl", rows)
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "metadata.csv"


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_audiofolder_metadata_by_folder_and_by_file(tmp_path: Path, kind: str) -> None:
    rows = [{"file_name": "clips/one.wav", "transcription": "Olá, tudo bem?"},
            {"file_name": "clips/two.wav", "transcription": "Bom dia"}]
    metadata = _audiofolder(tmp_path / "my-calls", kind, rows)
    for given in (metadata.parent, metadata):
        samples = datasets.load_datasets([str(given)], lang="pt")
        assert [(s.id, s.lang, s.text, s.dataset) for s in samples] == [
            ("one", "pt", "Olá, tudo bem?", "my-calls"), ("two", "pt", "Bom dia", "my-calls")]
        assert samples[0].audio == str((tmp_path / "my-calls" / "clips" / "one.wav").resolve())
    line = 2 if kind == "csv" else 1  # the CSV's first row is on line 2, after its header
    with pytest.raises(UserError, match=rf"metadata.{kind}:{line}: field 'lang': missing .*pass --lang LANG"):
        datasets.load_datasets([str(metadata.parent)])


def test_audiofolder_language_column_and_ids(tmp_path: Path) -> None:
    rows = [{"file_name": "a.wav", "sentence": "hello", "language": "en_us", "id": "clip-1"},
            {"file_name": "b.wav", "sentence": "olá", "language": "pt-BR", "id": ""},
            {"file_name": "c.wav", "sentence": "oi", "language": "", "id": ""}]
    metadata = _audiofolder(tmp_path / "af", "csv", rows)
    notes: list[str] = []
    samples = datasets.load_datasets([str(tmp_path / "af")], lang="pt_BR", notes=notes)
    assert [(s.id, s.lang, s.text) for s in samples] == [("clip-1", "en", "hello"), ("b", "pt", "olá"), ("c", "pt", "oi")]
    assert notes == ["--lang 'pt_BR' read as 'pt' (Whisper has one code per language, without a region)",
                     f"{metadata}: language code(s) 'en_us' read as 'en', 'pt-BR' read as 'pt' "
                     "(Whisper has one code per language, without a region)"]


def test_bad_audiofolders(tmp_path: Path) -> None:
    folder = tmp_path / "af"
    _tone(folder / "a.wav")
    (folder / "metadata.csv").write_text("file,text\na.wav,hi\n")
    with pytest.raises(UserError, match=r"metadata.csv:1: audiofolder metadata needs a file_name column .* got file, text"):
        datasets.load_datasets([str(folder)], lang="en")
    (folder / "metadata.csv").write_text("file_name,text\na.wav,hi\n,hello\n")
    with pytest.raises(UserError, match=r"metadata.csv:3: field 'file_name': missing or empty"):
        datasets.load_datasets([str(folder)], lang="en")
    (folder / "metadata.csv").write_text("file_name,text\n../a.wav,hi\n")
    with pytest.raises(UserError, match=r"metadata.csv:2: field 'file_name': '../a.wav' escapes .* write an absolute path"):
        datasets.load_datasets([str(folder)], lang="en")
    _jsonl(folder / "metadata.jsonl", [{"file_name": "a.wav", "words": "hi"}])
    with pytest.raises(UserError, match=r"holds both metadata.jsonl and metadata.csv; give the one to use"):
        datasets.load_datasets([str(folder)], lang="en")
    with pytest.raises(UserError, match=r"metadata.jsonl:1: no transcript: expected a column text \| transcript"):
        datasets.load_datasets([str(folder / "metadata.jsonl")], lang="en")
    (folder / "metadata.csv").unlink()
    (folder / "metadata.jsonl").unlink()
    with pytest.raises(UserError, match=r"manifest not found: .*metadata.csv.*audiofolder"):
        datasets.load_datasets([str(folder)], lang="en")


def test_a_folder_manifest_comes_before_its_metadata(tmp_path: Path) -> None:
    _manifest(tmp_path, [GOOD])
    (tmp_path / "metadata.csv").write_text("unrelated\n")
    assert [s.id for s in datasets.load_datasets([str(tmp_path)])] == ["a"]


@pytest.mark.parametrize(("code", "whisper"), [
    ("pt", "pt"), ("pt-BR", "pt"), ("pt_br", "pt"), ("en-US", "en"), ("EN", "en"), ("zh-Hant-TW", "zh"),
    ("yue", "yue"), ("haw", "haw"), ("portuguese", None), ("xx-YY", None), ("", None),
])
def test_language_codes_map_to_whispers(code: str, whisper: str | None) -> None:
    assert datasets.whisper_language(code) == whisper


def test_lang_option_is_checked_and_said_when_unused(tmp_path: Path) -> None:
    path = _manifest(tmp_path, [GOOD])
    with pytest.raises(UserError, match=r"--lang: unknown language code 'klingon'"):
        datasets.load_datasets([str(path)], lang="klingon")
    notes: list[str] = []
    assert [s.lang for s in datasets.load_datasets([str(path)], lang="pt", notes=notes)] == ["en"]  # the line's own
    assert notes == ["--lang pt: not used, every line of the datasets names its language (the scenario's "
                     "`languages` chooses which languages run)"]
    lines = [{k: v for k, v in GOOD.items() if k != "lang"}]  # a harness manifest may leave lang to --lang too
    assert [s.lang for s in datasets.load_manifest(_jsonl(path, lines), lang="pt")] == ["pt"]
