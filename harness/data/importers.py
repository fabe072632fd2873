"""Real corpora -> a harness manifest: `harness datasets import KIND SRC --lang L --out DIR`.

Each reader turns a corpus's own layout into `Entry`s (audio file + reference text), in the corpus's
order; `import_dataset` copies the first `limit` usable ones into DIR/audio/ and writes
DIR/manifest.jsonl with relative paths, durations and sha256 sums. A clip whose audio is missing or
undecodable, or whose transcript is empty, is left out with a warning naming it; a layout that is not
the corpus's (no TSV, a missing column) is an error naming the file.

A user's own recordings (`generic`) may come without transcripts (no transcript column or an empty
cell, no .txt beside a file): they are imported with `"text": null`, for memory and latency only, and
their WER is absent (not zero) wherever it is shown.

Ids come from the corpus (or a user's CSV) and are kept as they are in the manifest, but audio files
are named by a slug of the id (`_file_name`), never by the id itself. DIR is checked before anything
is read or copied (`_check_out`); --force replaces only a folder an earlier import wrote.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import re
import shutil
import tarfile
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.catalog import LANGUAGES
from harness.data.datasets import TRANSCRIPT_COLUMNS, UndecodableAudio, json_object, probe_audio, text_lines
from harness.errors import UserError

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm", ".aac")
GENERIC_AUDIO_COLUMNS = ("audio", "path", "file", "file_name", "filename", "audio_path")
GENERIC_TEXT_COLUMNS = TRANSCRIPT_COLUMNS  # the same as a run reads from audiofolder metadata
MAX_SKIPS_NAMED = 5
MAX_NAME = 80  # characters of an id kept in its audio file's name


@dataclass(frozen=True)
class Entry:
    id: str
    audio: Path | None  # None: the row names no audio file (left out with a warning)
    text: str | None  # None: no transcript (generic only): measured for memory and latency, no WER
    lang: str | None = None  # None: the --lang of the import
    where: str = ""  # file:line the entry came from, for messages


def _read_tsv(path: Path, header: bool = True) -> Iterator[tuple[int, dict[str, str] | list[str]]]:
    """Rows of a corpus TSV (no quoting: Common Voice sentences contain bare quotes)."""
    reader = csv.reader((line for _, line in text_lines(path)), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        columns = next(reader, None) if header else None
        for row in reader:
            if row:
                yield reader.line_num, dict(zip(columns, row, strict=False)) if columns else row
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num}: not a readable TSV ({exc})") from None


def _audio_path(folder: Path, name: str) -> Path | None:
    """`folder / name`, or None for an empty cell."""
    return folder / name if name.strip() else None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the file system
        return False


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
        yield Entry(f"cv_{Path(row['path']).stem}", _audio_path(src / "clips", row["path"]), row["sentence"],
                    where=f"{tsv}:{number}")


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
        yield Entry(f"fleurs_{Path(row[1]).stem}", _audio_path(audio_dir, row[1]), row[2], where=f"{tsv}:{number}")


def mls(src: Path, split: str) -> Iterator[Entry]:
    """Multilingual LibriSpeech (e.g. `mls_portuguese/`): `{split}/transcripts.txt` lines `ID<TAB>text`,
    audio in `{split}/audio/SPEAKER/BOOK/ID.flac` (or `.opus`)."""
    transcripts = _split_file(src, split, "{split}/transcripts.txt")
    for number, row in _read_tsv(transcripts, header=False):
        assert isinstance(row, list)
        parts = row[0].split("_")
        if len(row) < 2 or (row[0] and len(parts) != 3):
            raise UserError(f"{transcripts}:{number}: expected SPEAKER_BOOK_UTTERANCE<TAB>text, got {row!r}")
        audio = None  # no id, no audio: left out
        if row[0]:
            folder = src / split / "audio" / parts[0] / parts[1]
            audio = next((folder / f"{row[0]}{ext}" for ext in (".flac", ".opus") if _is_file(folder / f"{row[0]}{ext}")),
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
        for number, line in text_lines(path):
            if line.strip():
                utt, _, text = line.rstrip("\r\n").partition(" ")
                yield Entry(f"ls_{utt}", _audio_path(path.parent, utt and f"{utt}.flac"), text, where=f"{path}:{number}")


def generic(src: Path, split: str) -> Iterator[Entry]:
    """A CSV (with a header) or JSONL file with an audio path and, optionally, a transcript per row
    (paths relative to the file; optional `id`, `lang`), or a folder of audio files, each with a
    same-named `.txt` where it has a transcript."""
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
        # the first audio column with a value; if all are empty, the row is left out with a warning
        audio_key = (next((k for k in GENERIC_AUDIO_COLUMNS if row.get(k)), None)
                     or next((k for k in GENERIC_AUDIO_COLUMNS if k in row), None))
        text_key = next((k for k in GENERIC_TEXT_COLUMNS if k in row), None)
        if audio_key is None:
            raise UserError(f"{where}: needs an audio column ({' | '.join(GENERIC_AUDIO_COLUMNS)}) and optionally a "
                            f"transcript column ({' | '.join(GENERIC_TEXT_COLUMNS)}); got {', '.join(row) or 'none'}")
        for key in (audio_key, text_key):  # JSONL may hold numbers, lists, ...
            if key is not None and row[key] is not None and not isinstance(row[key], str):
                raise UserError(f"{where}: field '{key}': expected a string, got {row[key]!r}")
        audio = _audio_path(src.parent, row[audio_key] or "")
        text = row[text_key] if text_key is not None else None
        yield Entry(str(row.get("id") or (audio.stem if audio else "")), audio, text if text and text.strip() else None,
                    lang=str(row["lang"]) if row.get("lang") else None, where=where)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str | None]]]:
    reader = csv.DictReader((line for _, line in text_lines(path)), delimiter="\t" if path.suffix == ".tsv" else ",")
    try:
        for row in reader:
            yield reader.line_num, {k.strip().lower(): v for k, v in row.items() if k}
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.reader.line_num}: not a readable CSV ({exc})") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    for number, line in text_lines(path):
        if line.strip():
            yield number, json_object(line, f"{path}:{number}")


def _audio_folder(src: Path) -> Iterator[Entry]:
    audio_files = sorted(p for p in src.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not audio_files:
        raise UserError(f"{src}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder")
    for audio in audio_files:
        transcript = audio.with_suffix(".txt")
        text = ("\n".join(line.rstrip("\r\n") for _, line in text_lines(transcript)).strip()
                if transcript.is_file() else None)
        yield Entry(_unicode(str(audio.relative_to(src).with_suffix("")).replace(os.sep, "_")), audio, text or None,
                    where=str(transcript if transcript.is_file() else audio))


def _unicode(text: str) -> str:
    """`text` with the bytes of a file name that are not UTF-8 (which Python decodes to lone surrogates)
    replaced by U+FFFD, so that it can be written to the manifest."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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
    target = _check_out(out, src, force)
    reader, default_split = READERS[kind]
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "audio").mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create {tmp.parent / tmp.name}: {exc.strerror or exc}") from None
    lines: list[str] = []
    untranscribed = 0
    skipped: list[str] = []
    seen: set[str] = set()
    names: set[str] = set()  # audio file names given so far, lowercased
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
            untranscribed += entry.text is None
            lines.append(json.dumps(_copy(entry, lang, tmp, kind, info.duration_s, names), ensure_ascii=False))
        if not lines:
            raise UserError(f"{src}: no usable clips to import" + (f" ({len(skipped)} left out: {skipped[0]})" if skipped else ""))
        (tmp / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if _check_out(out, src, force).exists():  # again: the folder may have changed while clips were copied
            old = tempfile.mkdtemp(prefix=f".{target.name}.old", dir=target.parent)
            os.replace(target, old)  # an empty folder or, with --force, a previous import
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if skipped:
        named = "; ".join(skipped[:MAX_SKIPS_NAMED]) + (f"; and {len(skipped) - MAX_SKIPS_NAMED} more" if len(skipped) > MAX_SKIPS_NAMED else "")
        warnings.warn(f"{len(skipped)} clip(s) left out: {named}", stacklevel=2)
    if untranscribed:
        warnings.warn(f"{untranscribed} of {len(lines)} clip(s) have no transcript (\"text\": null): they are measured for "
                      "memory and latency only, and their WER is absent", stacklevel=2)
    return out / "manifest.jsonl"


def _check_out(out: Path, src: Path, force: bool) -> Path:
    """--out, resolved, if an import may write it: a new or empty folder, or with --force one that a
    previous import wrote. Checked before anything is read or copied, so that a mistyped --out (`.`,
    `~`, the corpus itself) never has files added to it or, with --force, deleted."""
    target = out.resolve()
    corpus = src.resolve() if src.is_dir() else src.resolve().parent
    for place, what in ((Path.cwd().resolve(), "the current directory"), (Path(target.anchor), "the filesystem root"),
                        (Path(os.path.expanduser("~")).resolve(), "the home directory")):
        if target == place:
            raise UserError(f"--out {out}: is {what}; give a new folder for the import (e.g. datasets/NAME)")
    if target == corpus or target in corpus.parents:
        raise UserError(f"--out {out}: {'is' if target == corpus else 'contains'} the corpus folder {corpus}; "
                        "give a new folder for the import (e.g. datasets/NAME)")
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"--out {out}: {existing} is a file, not a folder")
    if not target.is_dir() or not any(target.iterdir()):
        return target
    if not _previous_import(target):
        held = sorted(p.name for p in target.iterdir())
        raise UserError(f"--out {out}: the folder is not empty ({', '.join(held[:5])}{', ...' if len(held) > 5 else ''}) "
                        "and not a previous import (audio/ and a manifest.jsonl written by `harness datasets import`)"
                        + (", which is all --force replaces" if force else "") + "; choose a new folder")
    if not force:
        raise UserError(f"--out {out}: {out / 'manifest.jsonl'} already exists; choose another --out or add --force to replace it")
    return target


def _previous_import(folder: Path) -> bool:
    """Whether `folder` holds only what an import writes: audio/ and a manifest whose first line has the
    `source` an import gives each line ("KIND: FILE:LINE")."""
    if not {p.name for p in folder.iterdir()} <= {"manifest.jsonl", "audio"}:
        return False
    try:
        first = next((line for _, line in text_lines(folder / "manifest.jsonl") if line.strip()), "")
        source = json_object(first, "").get("source")
    except UserError:
        return False
    return isinstance(source, str) and source.partition(": ")[0] in READERS


def _unusable(entry: Entry, seen: set[str]) -> str | None:
    if entry.text is not None and not entry.text.strip():
        return "empty transcript"
    if entry.lang is not None and entry.lang not in LANGUAGES:
        return f"unknown language code {entry.lang!r}"
    if entry.id in seen:
        return f"duplicate id {entry.id!r}"
    if entry.audio is None:
        return "empty audio path"
    if not _is_file(entry.audio):
        return f"audio not found: {entry.audio}"
    return None


def _copy(entry: Entry, lang: str, out: Path, kind: str, duration_s: float | None,
          names: set[str]) -> dict[str, object]:
    assert entry.audio is not None
    audio_dir = out / "audio"
    target = audio_dir / _file_name(entry.id, entry.audio.suffix.lower(), names)
    if target.resolve().parent != audio_dir.resolve():  # cannot happen with _file_name's names; never write elsewhere
        raise UserError(f"{entry.where}: id {entry.id!r} gives a file name outside {audio_dir}")
    shutil.copyfile(entry.audio, target)
    return {"id": entry.id, "lang": entry.lang or lang, "audio": f"audio/{target.name}",
            "text": None if entry.text is None else entry.text.strip(),
            "duration_s": None if duration_s is None else round(duration_s, 3),
            "sha256": hashlib.sha256(target.read_bytes()).hexdigest(), "source": _unicode(f"{kind}: {entry.where}")}


def _file_name(clip_id: str, suffix: str, taken: set[str]) -> str:
    """A safe audio file name for a clip, added to `taken`: the id itself if it is made of [A-Za-z0-9._-]
    and does not start with '.' or '-', else a slug of it (other characters as '_', at most MAX_NAME)
    plus a short hash of the id; with the hash also when the name is taken (compared lowercased, for
    case-insensitive file systems)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", clip_id).lstrip(".-")[:MAX_NAME] or "clip"
    suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,10}", suffix) else ""
    digest = hashlib.sha256(clip_id.encode()).hexdigest()[:10]
    hashed = (f"{slug}-{digest}" + (f"-{n}" if n else "") for n in itertools.count())
    name = next(n + suffix for n in itertools.chain([slug] if slug == clip_id else [], hashed)
                if (n + suffix).lower() not in taken)
    taken.add(name.lower())
    return name
