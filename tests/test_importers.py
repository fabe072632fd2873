"""Corpus importers on small layouts the tests build (real encoded audio), and fetch failing offline."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import run_cli

from harness.data import datasets, importers
from harness.errors import UserError

CODECS = {".wav": "pcm_s16le", ".flac": "flac", ".mp3": "libmp3lame", ".opus": "libopus"}


def _audio(path: Path, seconds: float = 0.6, rate: int = 16000, channels: int = 1) -> Path:
    """A real encoded tone in the format the suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = 48000 if path.suffix == ".opus" else rate
    layout = "mono" if channels == 1 else "stereo"
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.2 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODECS[path.suffix], rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.tile(tone, (channels, 1)).reshape(1, -1), format="s16", layout=layout)
        frame.rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _tree(root: Path) -> set[str]:
    """Every file and folder under `root`, relative: what an import must leave as it was outside --out."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _check_manifest(out: Path, ids: list[str], lang: str) -> list[dict]:
    entries = _manifest(out)
    assert [e["id"] for e in entries] == ids
    for e in entries:
        assert e["lang"] == lang and not Path(e["audio"]).is_absolute() and (out / e["audio"]).is_file()
        assert e["duration_s"] > 0.4 and len(e["sha256"]) == 64
    assert len(datasets.load_manifest(out / "manifest.jsonl")) == len(ids)  # what a run accepts
    return entries


def test_common_voice(tmp_path: Path) -> None:
    src = tmp_path / "cv-corpus-17.0" / "pt"
    for name in ("a.mp3", "b.mp3", "c.mp3"):
        _audio(src / "clips" / f"common_voice_pt_{name}")
    (src / "test.tsv").write_text(
        "client_id\tpath\tsentence_id\tsentence\tup_votes\n"
        'x\tcommon_voice_pt_a.mp3\t1\tEle disse "olá" à Maria.\t2\n'
        "x\tcommon_voice_pt_b.mp3\t2\tBom dia.\t2\n"
        "x\tcommon_voice_pt_c.mp3\t3\tBoa noite.\t2\n")
    (src / "train.tsv").write_text("client_id\tpath\tsentence\n")
    out = tmp_path / "datasets" / "cv-pt"
    assert importers.import_dataset("common-voice", src, "pt", out, limit=2) == out / "manifest.jsonl"
    entries = _check_manifest(out, ["cv_common_voice_pt_a", "cv_common_voice_pt_b"], "pt")
    assert entries[0]["text"] == 'Ele disse "olá" à Maria.'  # bare quotes are text, not CSV quoting
    assert entries[0]["source"].startswith("common-voice: ") and "test.tsv:2" in entries[0]["source"]
    with pytest.raises(UserError, match=r"dev\.tsv: not found.*found: test\.tsv, train\.tsv"):
        importers.import_dataset("common-voice", src, "pt", tmp_path / "x", split="dev")
    with pytest.raises(UserError, match="already exists.*--force"):
        importers.import_dataset("common-voice", src, "pt", out)
    importers.import_dataset("common-voice", src, "pt", out, force=True)
    assert len(_manifest(out)) == 3


def test_fleurs_unpacks_its_audio_archive(tmp_path: Path) -> None:
    src = tmp_path / "fleurs" / "pt_br"
    staging = tmp_path / "staging" / "test"
    for name in ("10.wav", "11.wav"):
        _audio(staging / name)
    (src / "audio").mkdir(parents=True)
    with tarfile.open(src / "audio" / "test.tar.gz", "w:gz") as tar:
        tar.add(staging, arcname="test")
    (src / "test.tsv").write_text(
        "1\t10.wav\tO gato, afinal, dormiu.\to gato afinal dormiu\to|g|a|t|o\t9600\tFEMALE\n"
        "2\t11.wav\tChoveu ontem.\tchoveu ontem\tc|h\t9600\tMALE\n")
    out = tmp_path / "fleurs-pt"
    importers.import_dataset("fleurs", src, "pt", out)
    entries = _check_manifest(out, ["fleurs_10", "fleurs_11"], "pt")
    assert entries[0]["text"] == "O gato, afinal, dormiu."  # the raw transcription, normalized when scored


def test_multilingual_librispeech(tmp_path: Path) -> None:
    src = tmp_path / "mls_portuguese"
    _audio(src / "test" / "audio" / "12" / "34" / "12_34_000001.flac")
    _audio(src / "test" / "audio" / "12" / "34" / "12_34_000002.opus")
    (src / "test" / "transcripts.txt").parent.mkdir(parents=True, exist_ok=True)
    (src / "test" / "transcripts.txt").write_text("12_34_000001\tera uma vez\n12_34_000002\tnum reino distante\n")
    out = tmp_path / "mls-pt"
    importers.import_dataset("mls", src, "pt", out)
    entries = _check_manifest(out, ["mls_12_34_000001", "mls_12_34_000002"], "pt")
    assert entries[1]["audio"].endswith(".opus")
    (src / "test" / "transcripts.txt").write_text("garbage line without tab\n")
    with pytest.raises(UserError, match=r"transcripts\.txt:1: expected SPEAKER_BOOK_UTTERANCE"):
        importers.import_dataset("mls", src, "pt", tmp_path / "y")


def test_librispeech_from_the_root_or_a_split_folder(tmp_path: Path) -> None:
    chapter = tmp_path / "LibriSpeech" / "test-clean" / "1272" / "128104"
    _audio(chapter / "1272-128104-0000.flac")
    _audio(chapter / "1272-128104-0001.flac")
    (chapter / "1272-128104.trans.txt").write_text(
        "1272-128104-0000 MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES\n1272-128104-0001 NOR IS MISTER QUILTER'S MANNER\n")
    importers.import_dataset("librispeech", tmp_path / "LibriSpeech", "en", tmp_path / "a")
    importers.import_dataset("librispeech", tmp_path / "LibriSpeech" / "test-clean", "en", tmp_path / "b", limit=1)
    entries = _check_manifest(tmp_path / "a", ["ls_1272-128104-0000", "ls_1272-128104-0001"], "en")
    assert entries[0]["text"] == "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES"
    assert len(_manifest(tmp_path / "b")) == 1
    with pytest.raises(UserError, match="no SPEAKER/CHAPTER"):
        importers.import_dataset("librispeech", tmp_path, "en", tmp_path / "c", split="dev-other")


def test_generic_csv_jsonl_and_folder(tmp_path: Path) -> None:
    src = tmp_path / "calls"
    _audio(src / "rec" / "one.wav")
    _audio(src / "rec" / "two.mp3", rate=44100, channels=2)
    (src / "list.csv").write_text("File_Name,Transcript,lang\nrec/one.wav,\"Hello, there\",en\nrec/two.mp3,Olá,pt\n")
    (src / "list.jsonl").write_text(json.dumps({"id": "x1", "audio": "rec/one.wav", "text": "hi"}) + "\n")
    (src / "rec" / "one.txt").write_text("hello there\n")
    importers.import_dataset("generic", src / "list.csv", "en", tmp_path / "csv")
    csv_entries = _manifest(tmp_path / "csv")
    assert [(e["id"], e["lang"], e["text"]) for e in csv_entries] == [("one", "en", "Hello, there"), ("two", "pt", "Olá")]
    importers.import_dataset("generic", src / "list.jsonl", "en", tmp_path / "jsonl")
    _check_manifest(tmp_path / "jsonl", ["x1"], "en")
    with pytest.warns(UserWarning, match=r"1 of 2 clip\(s\) have no transcript .*memory and latency only"):
        importers.import_dataset("generic", src / "rec", "en", tmp_path / "folder")
    folder = _check_manifest(tmp_path / "folder", ["one", "two"], "en")  # audio without a transcript is kept
    assert [e["text"] for e in folder] == ["hello there", None]
    # stereo 44.1 kHz is accepted and noted: the worker converts it
    samples = datasets.load_manifest(tmp_path / "csv" / "manifest.jsonl")
    note = datasets.conversion_note(samples)
    assert note is not None and "1 of 2" in note and "2 channel(s), 44100 Hz" in note


def test_unusable_clips_are_left_out_with_a_warning_and_bad_layouts_are_errors(tmp_path: Path) -> None:
    src = tmp_path / "cv" / "en"
    _audio(src / "clips" / "good.mp3")
    (src / "clips" / "corrupt.mp3").write_bytes(b"not audio at all" * 100)
    (src / "test.tsv").write_text("path\tsentence\ngood.mp3\tfine\ncorrupt.mp3\tbroken\nmissing.mp3\tgone\ngood.mp3\t\n")
    with pytest.warns(UserWarning) as caught:
        importers.import_dataset("common-voice", src, "en", tmp_path / "out")
    message = str(caught[0].message)
    assert "3 clip(s) left out" in message and "cannot decode" in message and "audio not found" in message
    assert "empty transcript" in message and "test.tsv:3" in message
    _check_manifest(tmp_path / "out", ["cv_good"], "en")
    (src / "test.tsv").write_text("client_id\tfile\ttext\nx\tgood.mp3\tfine\n")
    with pytest.raises(UserError, match=r"test\.tsv:1: missing column\(s\) path, sentence"):
        importers.import_dataset("common-voice", src, "en", tmp_path / "z")
    (tmp_path / "bad.csv").write_text("wav,words\na.wav,hi\n")
    with pytest.raises(UserError, match=r"bad\.csv:2: needs an audio column"):
        importers.import_dataset("generic", tmp_path / "bad.csv", "en", tmp_path / "w")
    with pytest.raises(UserError, match="unknown language code 'english'"):
        importers.import_dataset("generic", tmp_path / "bad.csv", "english", tmp_path / "w")
    assert not (tmp_path / "z").exists() and not (tmp_path / "w").exists()  # nothing half-written


def test_cli_import_and_fetch_offline(tmp_path: Path) -> None:
    src = tmp_path / "LibriSpeech" / "test-clean" / "1" / "2"
    _audio(src / "1-2-0000.flac")
    (src / "1-2.trans.txt").write_text("1-2-0000 A TONE\n")
    done = run_cli("datasets", "import", "librispeech", str(tmp_path / "LibriSpeech"), "--lang", "en",
                   "--out", str(tmp_path / "ls"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "ls" / "manifest.jsonl")
    assert "1 clips" in done.stderr
    for env in ({"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}):
        failed = run_cli("datasets", "fetch", "fleurs", "--lang", "pt", "--limit", "5", "--out", str(tmp_path / "f"),
                         env={**env, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}, timeout=120)
        assert failed.returncode == 2, failed.stderr
        assert "cannot download data/pt_br/test.tsv of the dataset google/fleurs" in failed.stderr
        assert "harness datasets import" in failed.stderr and "Traceback" not in failed.stderr
    assert not (tmp_path / "f").exists()


def test_encoded_helper_is_real_audio(tmp_path: Path) -> None:
    info = datasets.probe_audio(_audio(tmp_path / "s.mp3", seconds=1.0, rate=44100, channels=2))
    assert (info.channels, info.sample_rate) == (2, 44100) and info.duration_s == pytest.approx(1.0, abs=0.1)


def test_cli_ids_become_safe_file_names_inside_out(tmp_path: Path) -> None:
    """Ids are kept in the manifest but never used as file names: `../../x` once copied a clip two levels up."""
    corpus = tmp_path / "work" / "corpus"
    _audio(corpus / "one.wav")
    ids = ["../../x", "/abs/y", "d/e", "..", ".hidden", "-dash", "olá mundo", "A", "a", "x" * 300, "tab\tnul\x00"]
    with open(corpus / "list.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerows([["id", "audio", "text"], *([i, "one.wav", f"clip {n}"] for n, i in enumerate(ids)), ["noaudio", "", "hi"]])
    (tmp_path / "work" / "data").mkdir()
    before = _tree(tmp_path)
    done = run_cli("datasets", "import", "generic", "list.csv", "--lang", "en", "--out", "../data/out", cwd=corpus)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"list.csv:{len(ids) + 2}: empty audio path" in " ".join(done.stderr.split())  # left out, named
    added = _tree(tmp_path) - before
    assert before <= _tree(tmp_path) and all(p == "work/data/out" or p.startswith("work/data/out/") for p in added), added
    entries = _manifest(tmp_path / "work" / "data" / "out")
    assert [e["id"] for e in entries] == ids
    names = [e["audio"].removeprefix("audio/") for e in entries]
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,100}\.wav", n) for n in names), names
    assert len({n.lower() for n in names}) == len(names) and names[ids.index("A")] == "A.wav"  # a safe id keeps its name


def _corpus_with_a_bad_transcript(kind: str, root: Path) -> tuple[str, Path, str]:
    """A corpus whose second transcript is Latin-1, not UTF-8: (import kind, SRC, "FILE:LINE: " expected)."""
    bad = "olá".encode("latin-1")
    if kind == "generic-csv":
        _audio(root / "one.wav")
        (root / "list.csv").write_bytes(b"audio,text\none.wav,ok\none.wav," + bad + b"\n")
        return "generic", root / "list.csv", "list.csv:3: "
    if kind in ("generic-jsonl", "generic-jsonl-surrogate"):
        _audio(root / "one.wav")
        text = rb"lone \ud800" if kind == "generic-jsonl-surrogate" else bad
        (root / "list.jsonl").write_bytes(b'{"audio": "one.wav", "text": "ok"}\n{"id": "2", "audio": "one.wav", "text": "' + text + b'"}\n')
        return "generic", root / "list.jsonl", "list.jsonl:2: "
    if kind == "generic-folder":
        _audio(root / "a.wav")
        _audio(root / "b.wav")
        (root / "a.txt").write_text("ok\n")
        (root / "b.txt").write_bytes(bad + b"\n")
        return "generic", root, "b.txt:1: "
    if kind == "common-voice":
        _audio(root / "clips" / "a.mp3")
        (root / "test.tsv").write_bytes(b"path\tsentence\na.mp3\tok\na.mp3\t" + bad + b"\n")
        return kind, root, "test.tsv:3: "
    if kind == "fleurs":
        _audio(root / "audio" / "test" / "1.wav")
        (root / "test.tsv").write_bytes(b"1\t1.wav\tok\tok\n2\t1.wav\t" + bad + b"\tola\n")
        return kind, root, "test.tsv:2: "
    if kind == "mls":
        _audio(root / "test" / "audio" / "1" / "2" / "1_2_3.flac")
        (root / "test" / "transcripts.txt").write_bytes(b"1_2_3\tok\n1_2_4\t" + bad + b"\n")
        return kind, root, "transcripts.txt:2: "
    assert kind == "librispeech"
    _audio(root / "1" / "2" / "1-2-0.flac")
    (root / "1" / "2" / "1-2.trans.txt").write_bytes(b"1-2-0 OK\n1-2-1 " + bad + b"\n")
    return kind, root, "1-2.trans.txt:2: "


@pytest.mark.parametrize("kind", ["generic-csv", "generic-jsonl", "generic-jsonl-surrogate", "generic-folder",
                                  "common-voice", "fleurs", "mls", "librispeech"])
def test_cli_transcripts_that_are_not_utf8_are_errors_naming_the_line(tmp_path: Path, kind: str) -> None:
    corpus_kind, src, where = _corpus_with_a_bad_transcript(kind, tmp_path / "corpus")
    before = _tree(tmp_path)
    failed = run_cli("datasets", "import", corpus_kind, str(src), "--lang", "pt", "--out", str(tmp_path / "out"))
    message = " ".join(failed.stderr.split())
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
    expected = "field 'text': not valid Unicode" if kind.endswith("surrogate") else "not UTF-8 text (byte 0xe1"
    assert f"{where}{expected}" in message and "UTF-8" in message, message
    assert _tree(tmp_path) == before  # the clip copied before the bad line is gone too


def _refusal_layout(tmp_path: Path) -> Path:
    """work/ (the current directory) with a corpus, a previous import and folders that are not imports."""
    work = tmp_path / "work"
    _audio(work / "corpus" / "one.wav")
    (work / "corpus" / "list.csv").write_text("audio,text\none.wav,hello\n")
    importers.import_dataset("generic", work / "corpus" / "list.csv", "en", work / "previous")
    (work / "notes").mkdir()
    (work / "notes" / "notes.txt").write_text("mine\n")
    _audio(work / "handmade" / "audio" / "a.wav")  # a hand-written dataset: same layout, not an import
    (work / "handmade" / "manifest.jsonl").write_text(json.dumps({"id": "a", "lang": "en", "audio": "audio/a.wav", "text": "hi"}) + "\n")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "keep.txt").write_text("mine\n")
    return work


@pytest.mark.parametrize(
    ("out", "force", "expected"),
    [
        (".", True, "is the current directory"),
        ("/", False, "is the filesystem root"),  # not with --force: too much at stake if the check regressed
        ("HOME", True, "is the home directory"),
        ("corpus", False, "is the corpus folder"),
        ("..", True, "contains the corpus folder"),
        ("corpus/list.csv", False, "list.csv is a file, not a folder"),
        ("corpus/list.csv/sub", False, "list.csv is a file, not a folder"),
        ("notes", False, "not empty (notes.txt)"),
        ("notes", True, "which is all --force replaces"),
        ("handmade", True, "not a previous import"),
        ("previous", False, "manifest.jsonl already exists; choose another --out or add --force"),
    ],
)
def test_cli_out_that_is_not_a_new_folder_is_refused_before_anything_is_copied(
        tmp_path: Path, out: str, force: bool, expected: str) -> None:
    work = _refusal_layout(tmp_path)
    out = str(tmp_path / "home") if out == "HOME" else out
    before = _tree(tmp_path)
    failed = run_cli("datasets", "import", "generic", "corpus/list.csv", "--lang", "en", "--out", out,
                     *(["--force"] if force else []), cwd=work, env={"HOME": str(tmp_path / "home")})
    message = " ".join(failed.stderr.split())
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
    assert f"--out {out}: " in message and expected in message, message
    assert _tree(tmp_path) == before


def test_an_empty_folder_or_a_previous_import_with_force_is_replaced(tmp_path: Path) -> None:
    work = _refusal_layout(tmp_path)
    (work / "empty").mkdir()
    for out in ("empty", "previous"):
        importers.import_dataset("generic", work / "corpus" / "list.csv", "en", work / out, force=out == "previous")
        _check_manifest(work / out, ["one"], "en")
    assert sorted(p.name for p in work.iterdir()) == ["corpus", "empty", "handmade", "notes", "previous"]  # no leftovers


def test_rows_without_audio_are_left_out_with_a_warning(tmp_path: Path) -> None:
    _audio(tmp_path / "cv" / "clips" / "a.mp3")
    (tmp_path / "cv" / "test.tsv").write_text("path\tsentence\n\tno audio\na.mp3\tok\n")
    _audio(tmp_path / "fleurs" / "audio" / "test" / "1.wav")
    (tmp_path / "fleurs" / "test.tsv").write_text("1\t\tno audio\tx\n2\t1.wav\tok\tok\n")
    _audio(tmp_path / "mls" / "test" / "audio" / "1" / "2" / "1_2_3.flac")
    (tmp_path / "mls" / "test" / "transcripts.txt").write_text("\tno audio\n1_2_3\tok\n")
    _audio(tmp_path / "ls" / "1" / "2" / "1-2-0.flac")
    (tmp_path / "ls" / "1" / "2" / "1-2.trans.txt").write_text(" NO AUDIO\n1-2-0 OK\n")
    _audio(tmp_path / "generic" / "one.wav")
    (tmp_path / "generic" / "list.jsonl").write_text(
        '{"audio": "", "text": "x"}\n{"audio": null, "text": "y"}\n{"path": " ", "text": "z"}\n{"audio": "one.wav", "text": "ok"}\n')
    for kind, src, lines in (("common-voice", "cv", "test.tsv:2"), ("fleurs", "fleurs", "test.tsv:1"),
                             ("mls", "mls", "transcripts.txt:1"), ("librispeech", "ls", "1-2.trans.txt:1"),
                             ("generic", "generic/list.jsonl", "list.jsonl:1: empty audio path; .*list.jsonl:2: .*list.jsonl:3")):
        with pytest.warns(UserWarning, match=rf"1 clip\(s\) left out: .*{lines}: empty audio path" if kind != "generic" else lines):
            importers.import_dataset(kind, tmp_path / src, "pt", tmp_path / f"out-{kind}")
        assert len(_manifest(tmp_path / f"out-{kind}")) == 1


def test_file_names_that_are_not_utf8_give_ids_that_are(tmp_path: Path) -> None:
    folder = tmp_path / os.fsdecode(b"corpus\xff")
    try:
        folder.mkdir()
    except OSError:
        pytest.skip("this file system takes UTF-8 names only")
    shutil.copyfile(_audio(tmp_path / "tone.wav"), folder / os.fsdecode(b"caf\xe9.wav"))
    (folder / os.fsdecode(b"caf\xe9.txt")).write_text("olá\r\nmundo\r\n", encoding="utf-8")
    importers.import_dataset("generic", folder, "pt", tmp_path / "out")
    [entry] = _check_manifest(tmp_path / "out", ["caf\ufffd"], "pt")
    assert entry["text"] == "olá\nmundo" and "corpus\ufffd" in entry["source"]
