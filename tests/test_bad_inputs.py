"""A systematic suite of bad inputs given to the real CLI: each ends with exit status 2, a message
naming the file, the field (or line) and the value, and no traceback."""

from __future__ import annotations

import json
import math
import shutil
import wave
from pathlib import Path

import pytest
from conftest import run_cli

SCENARIO = """name: bad
datasets: [DATASET]
repeats: 1
matrix:
  model: [tiny.en]
  quantization: [int8]
  threads: [1]
  cpu_pinning: [none]
"""
GOOD_LINE = {"id": "a", "lang": "en", "audio": "a.wav", "text": "hello"}


def _wav(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 8000)


def scenario_case(text: str, *fragments: str) -> tuple[str, dict, list[str]]:
    return ("scenario", {"text": text}, list(fragments))


def manifest_case(lines: list, *fragments: str, audio: bytes | None = None) -> tuple[str, dict, list[str]]:
    return ("manifest", {"lines": lines, "audio": audio}, list(fragments))


BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdef", "bcdefg"))
CASES = {
    "malformed YAML": scenario_case("name: [bad\n", "not valid YAML"),
    "YAML alias bomb": scenario_case(BOMB, "alias"),
    "unknown top-level key": scenario_case(SCENARIO + "repeat: 2\n", "unknown key 'repeat'", "did you mean 'repeats'"),
    "unknown matrix key": scenario_case(SCENARIO.replace("threads:", "thread:"), "'matrix.thread'", "did you mean 'threads'"),
    "wrong type": scenario_case(SCENARIO.replace("repeats: 1", "repeats: [1]"), "field 'repeats'", "[1]", "integer >= 1"),
    "empty matrix axis": scenario_case(SCENARIO.replace("model: [tiny.en]", "model: []"), "'matrix.model'", "non-empty"),
    "matrix not a mapping": scenario_case("name: bad\nmatrix: [tiny.en]\n", "field 'matrix'", "mapping"),
    "missing matrix": scenario_case("name: bad\n", "missing required key 'matrix'"),
    "zero threads": scenario_case(SCENARIO.replace("threads: [1]", "threads: [0]"), "'matrix.threads[0]'", "0", ">= 1"),
    "negative threads": scenario_case(SCENARIO.replace("threads: [1]", "threads: [-4]"), "'matrix.threads[0]'", "-4"),
    "pinning to CPUs that do not exist": scenario_case(SCENARIO.replace("cpu_pinning: [none]", "cpu_pinning: ['0,512']"),
                                                       "'matrix.cpu_pinning[0]'", "0,512", "do not exist"),
    "unknown backend": scenario_case(SCENARIO + "  backend: [whisperx]\n", "'matrix.backend[0]'", "whisperx", "faster-whisper"),
    "unknown model": scenario_case(SCENARIO.replace("[tiny.en]", "[huge]"), "'matrix.model[0]'", "huge", "tiny.en"),
    "model directory missing": scenario_case(SCENARIO.replace("[tiny.en]", "[./no/such/model]"), "'matrix.model[0]'", "existing directory"),
    "unknown quantization": scenario_case(SCENARIO.replace("[int8]", "[int3]"), "'matrix.quantization[0]'", "int3", "float32"),
    "unknown chunking mode": scenario_case(SCENARIO + "  chunking: [{mode: sliding}]\n", "'matrix.chunking[0].mode'", "sliding", "whole"),
    "budget with an unknown metric": scenario_case(SCENARIO + "budgets: {p99_s: 2}\n", "unknown key 'budgets.p99_s'"),
    "budget WER as a percentage": scenario_case(SCENARIO + "budgets: {wer: {en: 12}}\n", "'budgets.wer.en'", "12", "fraction"),
    "negative timeout": scenario_case(SCENARIO + "timeout_s: -1\n", "field 'timeout_s'", "-1", "> 0"),
    # Non-finite numbers: a NaN timeout never fires, an infinite one cannot be saved in results.jsonl.
    "NaN timeout": scenario_case(SCENARIO + "timeout_s: .nan\n", "field 'timeout_s'", ".nan", "finite"),
    "infinite timeout": scenario_case(SCENARIO + "timeout_s: .inf\n", "field 'timeout_s'", ".inf", "finite"),
    "timeout that overflows a float": scenario_case(SCENARIO + "timeout_s: 1.0e+400\n", "field 'timeout_s'", ".inf", "finite"),
    "integer timeout too large for a float": scenario_case(SCENARIO + f"timeout_s: 1{'0' * 400}\n", "field 'timeout_s'", "finite"),
    "infinite memory cap": scenario_case(SCENARIO + "memory_cap_mb: .inf\n", "field 'memory_cap_mb'", ".inf", "finite"),
    "NaN temperature": scenario_case(SCENARIO + "decoding: {temperature: [0.0, .nan]}\n",
                                     "field 'decoding.temperature[1]'", ".nan", "finite"),
    "negative infinite temperature": scenario_case(SCENARIO + "decoding: {temperature: -.inf}\n",
                                                   "field 'decoding.temperature'", "-.inf", "finite"),
    "infinite stream chunk": scenario_case(SCENARIO + "  chunking: [{stream: {chunk_s: .inf}}]\n",
                                           "'matrix.chunking[0].stream.chunk_s'", ".inf", "finite"),
    "NaN stream overlap": scenario_case(SCENARIO + "  chunking: [{stream: {chunk_s: 2, overlap_s: .nan}}]\n",
                                        "'matrix.chunking[0].stream.overlap_s'", ".nan", "finite"),
    "NaN vad threshold": scenario_case(SCENARIO + "  chunking: [{vad: {threshold: .nan}}]\n",
                                       "'matrix.chunking[0].vad.threshold'", ".nan", "finite"),
    "infinite vad speech length": scenario_case(SCENARIO + "  chunking: [{vad: {max_speech_duration_s: .inf}}]\n",
                                                "'matrix.chunking[0].vad.max_speech_duration_s'", ".inf", "finite"),
    "infinite budget": scenario_case(SCENARIO + "budgets: {peak_rss_mb: .inf}\n", "'budgets.peak_rss_mb'", ".inf", "finite"),
    "NaN budget": scenario_case(SCENARIO + "budgets: {rtf: .nan}\n", "'budgets.rtf'", ".nan", "finite"),
    "NaN per-language budget": scenario_case(SCENARIO + "budgets: {wer: {en: .nan}}\n", "'budgets.wer.en'", ".nan", "finite"),
    "negative infinite per-language budget": scenario_case(SCENARIO + "budgets: {cer: {en: -.inf}}\n",
                                                           "'budgets.cer.en'", "-.inf", "finite"),
    "NaN WER increase": scenario_case(SCENARIO + "budgets: {wer_increase_vs: {quantization: float32, max: .nan}}\n",
                                      "'budgets.wer_increase_vs.max'", ".nan", "finite"),
    "unknown language": scenario_case(SCENARIO + "languages: [klingon]\n", "field 'languages[0]'", "klingon"),
    "bad run name": scenario_case(SCENARIO.replace("name: bad", "name: ../escape"), "field 'name'", "../escape"),
    "exclude removes everything": scenario_case(SCENARIO + "exclude: [{model: tiny.en}]\n", "every configuration", "excluded"),
    "missing dataset": scenario_case(SCENARIO.replace("DATASET", "no/such/manifest.jsonl"), "no/such/manifest.jsonl", "manifest not found"),
    "manifest: missing audio": manifest_case([{**GOOD_LINE, "audio": "gone.wav"}], ":1:", "field 'audio'", "file not found"),
    "manifest: corrupt audio": manifest_case([GOOD_LINE], ":1:", "field 'audio'", "cannot decode", audio=b"RIFF\x00\x01garbage" * 10),
    "manifest: zero-length audio": manifest_case([GOOD_LINE], ":1:", "field 'audio'", "empty", audio=b""),
    "manifest: empty text": manifest_case([{**GOOD_LINE, "text": " "}], ":1:", "field 'text'"),
    "manifest: non-UTF-8 bytes": manifest_case([b'{"id": "a\xff", "lang": "en"}'], ":1:", "not UTF-8"),
    "manifest: duplicate ids": manifest_case([GOOD_LINE, GOOD_LINE], ":2:", "duplicate id 'a'"),
    "manifest: path escaping its folder": manifest_case([{**GOOD_LINE, "audio": "../../etc/passwd"}], ":1:", "escapes"),
    "manifest: unknown language": manifest_case([{**GOOD_LINE, "lang": "xx"}], ":1:", "field 'lang'", "'xx'"),
    "manifest: not JSON": manifest_case(["id: a"], ":1:", "not a JSON object"),
    "manifest: relative path climbing out": manifest_case([{**GOOD_LINE, "audio": "../data/a.wav"}], ":1:", "field 'audio'",
                                                          "escapes", "write an absolute path", "data/a.wav\")"),
    "manifest: NeMo line without a language": manifest_case([{"audio_filepath": "a.wav", "duration": 0.5, "text": "hello"}],
                                                            ":1:", "field 'lang'", "pass --lang LANG", 'add a "lang" field'),
    "manifest: styles mixed": manifest_case([GOOD_LINE, {"audio_filepath": "a.wav", "text": "hi", "lang": "en"}], ":2:",
                                            "a NeMo manifest line", "line 1 is a harness manifest line", "one style per file"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input(tmp_path: Path, case: str) -> None:
    kind, spec, fragments = CASES[case]
    scenario = tmp_path / "scenario.yaml"
    if kind == "scenario":
        scenario.write_text(spec["text"].replace("DATASET", "default"))
        named = scenario
    else:
        data = tmp_path / "data"
        data.mkdir()
        audio = data / "a.wav"
        _wav(audio) if spec["audio"] is None else audio.write_bytes(spec["audio"])
        manifest = data / "manifest.jsonl"
        manifest.write_bytes(b"\n".join(line if isinstance(line, bytes) else
                                        (line if isinstance(line, str) else json.dumps(line)).encode() for line in spec["lines"]) + b"\n")
        scenario.write_text(SCENARIO.replace("DATASET", str(manifest)))
        named = manifest
    result = run_cli("run", str(scenario), "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())  # rich may wrap long lines
    assert str(named) in message or named.name in message
    for fragment in fragments:
        assert fragment in message, message
    assert not (tmp_path / "run" / "results.jsonl").exists()  # rejected before anything ran


def test_audiofolder_and_lang_on_the_command_line(tmp_path: Path) -> None:
    folder = tmp_path / "calls"
    folder.mkdir()
    _wav(folder / "one.wav")
    (folder / "metadata.csv").write_text("file_name,transcription\none.wav,olá\n", encoding="utf-8")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.replace("DATASET", "default") + "languages: [en]\n")
    # loaded (as Portuguese, --lang read as Whisper's code), then left out by the scenario's languages: nothing runs
    result = run_cli("run", str(scenario), "--dataset", str(folder), "--lang", "pt-BR", "--out", str(tmp_path / "run"))
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "note: --lang 'pt-BR' read as 'pt'" in message and "no samples left after the languages filter ['en']" in message
    result = run_cli("run", str(scenario), "--dataset", str(folder / "metadata.csv"), "--out", str(tmp_path / "run"))
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{folder / 'metadata.csv'}:2: field 'lang'" in message and "pass --lang LANG" in message
    run_id = run_cli("run", str(scenario), "--dry-run").stdout.split()[0]
    result = run_cli("profile", str(scenario), "--run", run_id, "--with", "memray", "--dataset", str(folder),
                     "--lang", "klingon", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "--lang: unknown language code 'klingon'" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_unwritable_output_directory(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.replace("DATASET", "default"))
    result = run_cli("run", str(scenario), "--out", "/proc/harness-run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "/proc/harness-run" in result.stderr and "not writable" in result.stderr


def test_bad_budget_on_the_command_line(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.replace("DATASET", "default"))
    result = run_cli("run", str(scenario), "--budget", "wer.en=12")
    assert result.returncode == 2 and "--budget 'wer.en=12'" in result.stderr and "fraction" in result.stderr


def _golden_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "golden-run"
    run_dir.mkdir()
    shutil.copyfile(Path(__file__).parent / "golden" / "recommend" / "feasible.jsonl", run_dir / "results.jsonl")
    return run_dir


@pytest.mark.parametrize("command", ["run", "report"])
@pytest.mark.parametrize("budget", ["rtf=nan", "peak_rss_mb=inf", "wer.en=-inf", "latency_p95_s=1e999", "rtf=NaN"])
def test_non_finite_budget_on_the_command_line(tmp_path: Path, command: str, budget: str) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.replace("DATASET", "default"))
    target = str(scenario) if command == "run" else str(_golden_run(tmp_path))
    result = run_cli(command, target, "--budget", budget)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    message = " ".join(result.stderr.split())
    assert f"--budget {budget!r}" in message and "finite" in message
    assert f"invalid value {budget.partition('=')[2]!r}" in message


@pytest.mark.parametrize("command", ["run", "report"])
@pytest.mark.parametrize("headroom", ["nan", "inf", "-inf", "-0.1", "11", "1e400", "lots"])
def test_bad_headroom(tmp_path: Path, command: str, headroom: str) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.replace("DATASET", "default"))
    target = str(scenario) if command == "run" else str(_golden_run(tmp_path))
    result = run_cli(command, target, f"--headroom={headroom}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    message = " ".join(result.stderr.split())
    assert f"--headroom: invalid value {headroom!r}" in message and "finite number from 0 to 10" in message
    if command == "report":
        assert not (tmp_path / "golden-run" / "index.html").exists()


def test_a_headroom_within_range_is_used(tmp_path: Path) -> None:
    run_dir = _golden_run(tmp_path)
    result = run_cli("report", str(run_dir), "--headroom", "0", "--out", str(tmp_path / "rendered"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "rendered" / "recommendation.json").read_text())["deployment"]["headroom"] == 0


def test_rows_json_cannot_hold_are_refused_before_measuring(tmp_path: Path) -> None:
    """The last guard: whatever slipped past validation (here NaN put in after it) fails before any run,
    naming the file, the configuration, the field and the value, instead of every row failing to save."""
    import dataclasses

    from harness.cli import _check_saveable
    from harness.errors import UserError
    from harness.plan.scenario import load_scenario

    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace("DATASET", "default"))
    scenario = dataclasses.replace(load_scenario(path), timeout_s=math.nan)
    with pytest.raises(UserError, match=r"s\.yaml: configuration faster-whisper-tiny\.en-.*: field 'timeout_s': invalid value nan"):
        _check_saveable(path, scenario.expand(), {})
    with pytest.raises(UserError, match=r"budgets .*: field 'wer': invalid value \{'en': inf\}"):
        _check_saveable(path, load_scenario(path).expand(), {"wer": {"en": math.inf}})
    _check_saveable(path, load_scenario(path).expand(), {"rtf": 0.5})


def test_results_of_an_unknown_schema_version_given_to_report(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.jsonl").write_text(json.dumps({"schema_version": 7, "run_id": "x"}) + "\n")
    result = run_cli("report", str(run_dir))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "results.jsonl:1: field 'schema_version': 7 is not supported" in " ".join(result.stderr.split())


def test_report_of_a_directory_without_results(tmp_path: Path) -> None:
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 2 and "cannot read results" in result.stderr


def test_missing_scenario_file(tmp_path: Path) -> None:
    result = run_cli("run", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "scenario file not found" in result.stderr and "nope.yaml" in result.stderr




def test_help_shows_the_whole_description() -> None:
    from harness import cli

    result = run_cli("--help")
    assert result.returncode == 0
    for line in filter(None, (line.strip() for line in cli.__doc__.splitlines())):
        assert line in result.stdout  # every line, in its own line breaks (not cut after the first)
    assert "Exit status: 0 success" in result.stdout


@pytest.mark.parametrize("budget", ["peak_rss_mb=0", "wer.pt=1.5", "latency_p95_s=-2"])
def test_out_of_range_budget_names_flag_and_value(tmp_path: Path, budget: str) -> None:
    result = run_cli("report", str(_golden_run(tmp_path)), "--budget", budget)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"--budget {budget!r}" in " ".join(result.stderr.split())
    assert not list((tmp_path / "golden-run").glob("rerender-*"))
