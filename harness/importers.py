"""Real corpora -> a harness manifest: `harness datasets import KIND SRC --lang L --out DIR`.

Each reader turns a corpus's own layout into `Entry`s (audio file + reference text), in the corpus's
order; `import_dataset` copies the first `limit` usable ones into DIR/audio/ and writes
DIR/manifest.jsonl with relative paths, durations and sha256 sums. A clip whose audio is missing or
undecodable, or whose transcript is empty, is left out with a warning naming it; a layout that is not
the corpus's (no TSV, a missing column) is an error naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tarfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.catalog import LANGUAGES
from harness.datasets import UndecodableAudio, probe_audio
from harness.errors import UserError

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm", ".aac")
GENERIC_AUDIO_COLUMNS = ("audio", "path", "file", "file_name", "filename", "audio_path")
GENERIC_TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence")
MAX_SKIPS_NAMED = 5


@dataclass(frozen=True)
class Entry:
    id: str
    audio: Path
    text: str
    lang: str | None = None  # None: the --lang of the import
    where: str = ""  # file:line the entry came from, for messages


def _read_tsv(path: Path, header: bool = True) -> Iterator[tuple[int, dict[str, str] | list[str]]]:
    """Rows of a corpus TSV (no quoting: Common Voice sentences contain bare quotes)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            columns = next(reader, None) if header else None
            for number, row in enumerate(reader, start=2 if header else 1):
                if row:
                    yield number, dict(zip(columns, row, strict=False)) if columns else row
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None


def _split_file(src: Path, split: str, pattern: str) -> Path:
    path = src / pattern.format(split=split)
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob(pattern.format(split="*"))) if path.parent.is_dir() else []
        raise UserError(f"{path}: not found; --split names the part to import"
                        + (f" (found: {', '.join(found)})" if found else f" (is {src} the corpus folder?)"))
    return path


def common_voice(src: Path, split: str) -> Iterator[Entry]:
    """A Common Voice language folder: `clips/*.mp3` and `train|dev|test|validated|other.tsv`."""
    tsv = _split_file(src, split, "{split}.tsv")
    for number, row in _read_tsv(tsv):
        assert isinstance(row, dict)
        missing = [c for c in ("path", "sentence") if c not in row]
        if missing:
            raise UserError(f"{tsv}:1: missing column(s) {', '.join(missing)} (columns: {', '.join(row)}); "
                            "is this a Common Voice TSV?")
        yield Entry(f"cv_{Path(row['path']).stem}", src / "clips" / row["path"], row["sentence"], where=f"{tsv}:{number}")


def fleurs(src: Path, split: str) -> Iterator[Entry]:
    """A FLEURS language folder (e.g. `pt_br/`): `{split}.tsv` without a header (id, file name, raw
    transcription, normalized transcription, ...) and `audio/{split}/*.wav` (or `audio/{split}.tar.gz`,
    which is unpacked on first use)."""
    tsv = _split_file(src, split, "{split}.tsv")
    audio_dir = src / "audio" / split
    archive = src / "audio" / f"{split}.tar.gz"
    if not audio_dir.is_dir() and archive.is_file():
        with tarfile.open(archive) as tar:
            tar.extractall(src / "audio", filter="data")
    for number, row in _read_tsv(tsv, header=False):
        assert isinstance(row, list)
        if len(row) < 3:
            raise UserError(f"{tsv}:{number}: expected tab-separated id, file name, transcription; got {len(row)} field(s)")
        yield Entry(f"fleurs_{Path(row[1]).stem}", audio_dir / row[1], row[2], where=f"{tsv}:{number}")


def mls(src: Path, split: str) -> Iterator[Entry]:
    """Multilingual LibriSpeech (e.g. `mls_portuguese/`): `{split}/transcripts.txt` lines `ID<TAB>text`,
    audio in `{split}/audio/SPEAKER/BOOK/ID.flac` (or `.opus`)."""
    transcripts = _split_file(src, split, "{split}/transcripts.txt")
    for number, row in _read_tsv(transcripts, header=False):
        assert isinstance(row, list)
        parts = row[0].split("_")
        if len(row) < 2 or len(parts) != 3:
            raise UserError(f"{transcripts}:{number}: expected SPEAKER_BOOK_UTTERANCE<TAB>text, got {row!r}")
        folder = src / split / "audio" / parts[0] / parts[1]
        audio = next((folder / f"{row[0]}{ext}" for ext in (".flac", ".opus") if (folder / f"{row[0]}{ext}").is_file()),
                     folder / f"{row[0]}.flac")
        yield Entry(f"mls_{row[0]}", audio, row[1], where=f"{transcripts}:{number}")


def librispeech(src: Path, split: str) -> Iterator[Entry]:
    """LibriSpeech: `SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt` lines `ID TEXT` beside `ID.flac`; SRC is
    a split folder (`test-clean/`) or the `LibriSpeech/` root with --split."""
    root = src / split if (src / split).is_dir() else src
    transcripts = sorted(root.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise UserError(f"{root}: no SPEAKER/CHAPTER/*.trans.txt files; give a LibriSpeech split folder "
                        "(e.g. LibriSpeech/test-clean) or the LibriSpeech folder with --split")
    for path in transcripts:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                utt, _, text = line.partition(" ")
                yield Entry(f"ls_{utt}", path.parent / f"{utt}.flac", text, where=f"{path}:{number}")


def generic(src: Path, split: str) -> Iterator[Entry]:
    """A CSV (with a header) or JSONL file with an audio path and a transcript per row (paths relative
    to the file; optional `id`, `lang`), or a folder of audio files each with a same-named `.txt`."""
    if src.is_dir():
        yield from _audio_folder(src)
        return
    if src.suffix == ".jsonl":
        rows = _jsonl_rows(src)
    elif src.suffix in (".csv", ".tsv"):
        rows = _csv_rows(src)
    else:
        raise UserError(f"{src}: expected a .csv, .tsv or .jsonl file, or a folder of audio files with .txt transcripts")
    for number, row in rows:
        where = f"{src}:{number}"
        audio_key = next((k for k in GENERIC_AUDIO_COLUMNS if row.get(k)), None)
        text_key = next((k for k in GENERIC_TEXT_COLUMNS if k in row), None)
        if audio_key is None or text_key is None:
            raise UserError(f"{where}: needs an audio column ({' | '.join(GENERIC_AUDIO_COLUMNS)}) and a transcript "
                            f"column ({' | '.join(GENERIC_TEXT_COLUMNS)}); got {', '.join(row) or 'none'}")
        audio = src.parent / str(row[audio_key])
        yield Entry(str(row.get("id") or audio.stem), audio, str(row[text_key] or ""),
                    lang=str(row["lang"]) if row.get("lang") else None, where=where)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for number, row in enumerate(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","), start=2):
                yield number, {k.strip().lower(): v for k, v in row.items() if k}
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: not a readable CSV ({exc})") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read as UTF-8 text: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def _audio_folder(src: Path) -> Iterator[Entry]:
    audio_files = sorted(p for p in src.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not audio_files:
        raise UserError(f"{src}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder")
    for audio in audio_files:
        transcript = audio.with_suffix(".txt")
        if not transcript.is_file():
            warnings.warn(f"{audio}: left out, no transcript {transcript.name} beside it", stacklevel=2)
            continue
        yield Entry(str(audio.relative_to(src).with_suffix("")).replace(os.sep, "_"), audio,
                    transcript.read_text(encoding="utf-8").strip(), where=str(transcript))


READERS: dict[str, tuple[Callable[[Path, str], Iterator[Entry]], str]] = {
    # kind: (reader, default --split)
    "common-voice": (common_voice, "test"),
    "fleurs": (fleurs, "test"),
    "mls": (mls, "test"),
    "librispeech": (librispeech, "test-clean"),
    "generic": (generic, ""),
}


def import_dataset(kind: str, src: Path, lang: str, out: Path, split: str | None = None,
                   limit: int | None = None, force: bool = False) -> Path:
    """Copy the first `limit` usable clips of a corpus into `out` and write its manifest; return its path."""
    if kind not in READERS:
        raise UserError(f"unknown corpus kind {kind!r}; expected one of {', '.join(READERS)}")
    if lang not in LANGUAGES:
        raise UserError(f"--lang: unknown language code {lang!r}; expected a Whisper language code such as en, pt")
    if not src.exists():
        raise UserError(f"{src}: not found")
    manifest = out / "manifest.jsonl"
    if manifest.exists() and not force:
        raise UserError(f"{manifest} already exists; choose another --out or add --force to replace it")
    reader, default_split = READERS[kind]
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "audio").mkdir(parents=True)
    lines: list[str] = []
    skipped: list[str] = []
    seen: set[str] = set()
    try:
        for entry in reader(src, split or default_split):
            if limit is not None and len(lines) >= limit:
                break
            why_not = _unusable(entry, seen)
            info = None
            if why_not is None:
                try:
                    info = probe_audio(entry.audio)
                except UndecodableAudio as exc:
                    why_not = f"cannot decode {entry.audio}: {exc}"
            if info is None:
                skipped.append(f"{entry.where}: {why_not}")
                continue
            seen.add(entry.id)
            lines.append(json.dumps(_copy(entry, lang, tmp, kind, info.duration_s), ensure_ascii=False))
        if not lines:
            raise UserError(f"{src}: no usable clips to import" + (f" ({len(skipped)} left out: {skipped[0]})" if skipped else ""))
        (tmp / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if force:
            shutil.rmtree(out, ignore_errors=True)
        elif out.exists() and not any(out.iterdir()):
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if skipped:
        named = "; ".join(skipped[:MAX_SKIPS_NAMED]) + (f"; and {len(skipped) - MAX_SKIPS_NAMED} more" if len(skipped) > MAX_SKIPS_NAMED else "")
        warnings.warn(f"{len(skipped)} clip(s) left out: {named}", stacklevel=2)
    return manifest


def _unusable(entry: Entry, seen: set[str]) -> str | None:
    if not entry.text.strip():
        return "empty transcript"
    if entry.lang is not None and entry.lang not in LANGUAGES:
        return f"unknown language code {entry.lang!r}"
    if entry.id in seen:
        return f"duplicate id {entry.id!r}"
    if not entry.audio.is_file():
        return f"audio not found: {entry.audio}"
    return None


def _copy(entry: Entry, lang: str, out: Path, kind: str, duration_s: float | None) -> dict[str, object]:
    target = out / "audio" / f"{entry.id}{entry.audio.suffix.lower()}"
    shutil.copyfile(entry.audio, target)
    return {"id": entry.id, "lang": entry.lang or lang, "audio": f"audio/{target.name}", "text": entry.text.strip(),
            "duration_s": None if duration_s is None else round(duration_s, 3),
            "sha256": hashlib.sha256(target.read_bytes()).hexdigest(), "source": f"{kind}: {entry.where}"}
