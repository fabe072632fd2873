"""Scenario validation and matrix expansion (pure logic), and the CLI's handling of bad scenarios."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, write_scenario

from harness.analyze.scoring import Normalization
from harness.errors import UserError
from harness.plan.scenario import load_scenario, parse_cpu_list

MINIMAL = """
name: t
matrix:
  model: [tiny.en, base]
  quantization: [int8, float32]
  threads: [1, 2]
  cpu_pinning: [none, auto]
"""


def test_default_scenario_expands_to_eighteen_stable_ids() -> None:
    scenario = load_scenario(Path(__file__).parents[1] / "scenarios" / "default.yaml")
    specs = scenario.expand()
    assert len(specs) == 18
    # Golden ids: renaming them breaks comparisons with earlier runs.
    assert specs[0].run_id == "faster-whisper-tiny.en-int8-t1-pinnone-whole-b5-d23226"
    assert specs[15].run_id == "faster-whisper-base-float32-t2-pinauto-whole-b5-1dc593"
    assert specs[16].run_id.startswith("openai-whisper-base-float32-t2-pinauto-whole-b5-")
    assert specs[17].run_id.startswith("whisper.cpp-base-q5_0-t2-pinauto-whole-b5-")
    assert len({s.run_id for s in specs}) == 18
    assert [s.run_id for s in load_scenario(scenario.path).expand()] == [s.run_id for s in specs]


def test_exclude_include_and_defaults(tmp_path: Path) -> None:
    path = write_scenario(tmp_path / "s.yaml", MINIMAL + """
exclude: [{model: tiny.en, quantization: float32}]
include: [{model: base, quantization: int8, threads: 1, cpu_pinning: "0"}]
""")
    specs = load_scenario(path).expand()
    assert len(specs) == 16 - 4 + 1
    assert not any(s.model == "tiny.en" and s.quantization == "float32" for s in specs)
    extra = specs[-1]
    assert (extra.model, extra.cpu_pinning, extra.backend, extra.beam_size) == ("base", "0", "faster-whisper", 5)
    assert extra.decoding["best_of"] == 5 and extra.repeats == 3 and extra.warmup == 1


def test_normalization_per_language_with_defaults(tmp_path: Path) -> None:
    scenario = load_scenario(write_scenario(tmp_path / "s.yaml", MINIMAL + """
normalization:
  pt: {remove_diacritics: true, numbers: spell-out}
"""))
    assert scenario.normalization_for("pt") == Normalization("whisper-basic", remove_diacritics=True, numbers="spell-out")
    assert scenario.normalization_for("en") == Normalization("whisper-english")


def test_chunking_forms_and_defaults(tmp_path: Path) -> None:
    scenario = load_scenario(write_scenario(tmp_path / "s.yaml", """
name: t
matrix:
  model: [base]
  chunking: [whole, {chunk_length: 10}, {vad: {min_silence_duration_ms: 500}}, batched, {stream: {chunk_s: 5, overlap_s: 1}},
             {mode: stream, buffer: growing}]
"""))
    chunkings = [s.chunking for s in scenario.expand()]
    assert chunkings == [
        {"mode": "whole"}, {"mode": "chunk_length", "chunk_length": 10}, {"mode": "vad", "min_silence_duration_ms": 500},
        {"mode": "batched", "batch_size": 8}, {"mode": "stream", "chunk_s": 5.0, "overlap_s": 1.0, "buffer": "pieces"},
        {"mode": "stream", "chunk_s": 2.0, "overlap_s": 0.0, "buffer": "growing"}]
    ids = [s.run_id for s in scenario.expand()]
    assert [i.split("-pinnone-")[1].rsplit("-b5-", 1)[0] for i in ids] == [
        "whole", "chunk-10s", "vad", "batched-8", "stream-5s-overlap-1s", "stream-2s-growing"]


def test_quick_shortens_the_run(tmp_path: Path) -> None:
    quick = load_scenario(write_scenario(tmp_path / "s.yaml", MINIMAL)).quick()
    assert (quick.repeats, quick.warmup, quick.max_samples_per_language) == (1, 1, 2)


def test_cpu_lists() -> None:
    assert parse_cpu_list("0") == [0]
    assert parse_cpu_list("0,1") == [0, 1]
    assert parse_cpu_list("0-3,5") == [0, 1, 2, 3, 5]
    for bad in ("", "a", "3-1", "0,,1"):
        with pytest.raises(ValueError):
            parse_cpu_list(bad)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (MINIMAL + "repeat: 3\n", ["unknown key 'repeat'", "did you mean 'repeats'"]),
        (MINIMAL.replace("quantization: [int8, float32]", "quantisation: [int8]"),
         ["unknown key 'matrix.quantisation'", "did you mean 'quantization'"]),
        (MINIMAL + "repeats: three\n", ["field 'repeats'", "'three'", "integer >= 1"]),
        (MINIMAL.replace("threads: [1, 2]", "threads: [0]"), ["field 'matrix.threads[0]'", "0", "integer >= 1"]),
        (MINIMAL.replace("threads: [1, 2]", "threads: [-2]"), ["matrix.threads[0]", "-2"]),
        (MINIMAL.replace("cpu_pinning: [none, auto]", "cpu_pinning: ['0-63']"), ["matrix.cpu_pinning[0]", "0-63", "do not exist"]),
        (MINIMAL.replace("cpu_pinning: [none, auto]", "cpu_pinning: [sometimes]"), ["matrix.cpu_pinning[0]", "none, auto"]),
        (MINIMAL.replace("model: [tiny.en, base]", "model: [tiny.en, bsae]"), ["matrix.model[1]", "'bsae'", "did you mean 'base'"]),
        (MINIMAL.replace("quantization: [int8, float32]", "quantization: [int4]"), ["matrix.quantization[0]", "'int4'", "int8"]),
        (MINIMAL + "  backend: [whisper-cpp]\n", ["matrix.backend[0]", "whisper-cpp", "did you mean 'whisper.cpp'"]),
        (MINIMAL + "  chunking: [{mode: streaming}]\n", ["matrix.chunking[0].mode", "'streaming'", "did you mean 'stream'"]),
        (MINIMAL + "  chunking: [chunk_length]\n", ["matrix.chunking[0].chunk_length", "needs a length"]),
        (MINIMAL + "  chunking: [{chunk_length: 45}]\n", ["matrix.chunking[0].chunk_length.chunk_length", "45", "at most 30"]),
        (MINIMAL + "  chunking: [{vad: {min_silence_ms: 500}}]\n",
         ["unknown key 'matrix.chunking[0].vad.min_silence_ms'", "min_silence_duration_ms"]),
        (MINIMAL + "  chunking: [{stream: {chunk_s: 2, overlap_s: 3}}]\n", ["matrix.chunking[0].stream.overlap_s", "less than chunk_s"]),
        (MINIMAL + "  chunking: [{stream: {buffer: sliding}}]\n", ["matrix.chunking[0].stream.buffer", "pieces, growing"]),
        (MINIMAL + "  chunking: [{batched: {batch_size: 0}}]\n", ["matrix.chunking[0].batched.batch_size", "integer >= 1"]),
        (MINIMAL + "budgets: {peak_rss: 700}\n", ["unknown key 'budgets.peak_rss'", "did you mean 'peak_rss_mb'"]),
        (MINIMAL + "budgets: {wer: {en: 10}}\n", ["budgets.wer.en", "fraction"]),
        # Budgets are the registry's budgetable metrics (harness.metrics): foreign load is shown, not budgeted.
        (MINIMAL + "budgets: {foreign_cpu_fraction: 0.1}\n",
         ["unknown key 'budgets.foreign_cpu_fraction'", "peak_rss_mb, rss_after_load_mb, peak_anon_mb, working_set_peak_mb, "
          "min_limit_mb, load_s, first_latency_s, latency_p50_s, latency_p95_s, rtf, wer, cer, wer_increase_vs"]),
        (MINIMAL + "languages: [english]\n", ["field 'languages[0]'", "'english'"]),
        (MINIMAL + "exclude: [{model: tiny.en}, {model: base}]\n", ["every configuration", "excluded"]),
        (MINIMAL.replace("model: [tiny.en, base]", "model: []"), ["matrix.model", "non-empty"]),
        (MINIMAL + "normalization: {pt: {normaliser: none}}\n", ["unknown key 'normalization.pt.normaliser'", "did you mean 'normalizer'"]),
        (MINIMAL + "normalization: {pt: {normalizer: english}}\n", ["normalization.pt.normalizer", "'english'", "whisper-english"]),
        (MINIMAL + "normalization: {pt: {remove_diacritics: yes please}}\n", ["normalization.pt.remove_diacritics", "true or false"]),
        (MINIMAL + "normalization: {yo: {numbers: spell-out}}\n", ["normalization.yo.numbers", "num2words"]),
        (MINIMAL + "normalization: {portuguese: {}}\n", ["unknown key 'normalization.portuguese'"]),
        ("name: t\n", ["missing required key 'matrix'"]),
        ("", ["empty"]),
        ("name: [t\n", ["not valid YAML"]),
        ("- a\n- b\n", ["(top level)", "mapping"]),
        ("a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
         "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
         "g: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n", ["alias"]),
    ],
)
def test_invalid_scenarios_name_file_field_and_value(tmp_path: Path, yaml_text: str, expected: list[str]) -> None:
    path = write_scenario(tmp_path / "bad.yaml", yaml_text)
    with pytest.raises(UserError) as info:
        load_scenario(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_threads_above_available_cpus_is_measured_with_a_warning(tmp_path: Path) -> None:
    path = write_scenario(tmp_path / "s.yaml", MINIMAL.replace("threads: [1, 2]", "threads: [64]"))
    with pytest.warns(UserWarning, match="oversubscribed"):
        assert load_scenario(path).expand()[0].threads == 64


def test_cli_rejects_a_bad_scenario_with_status_2_and_no_traceback(tmp_path: Path) -> None:
    path = write_scenario(tmp_path / "bad.yaml", MINIMAL + "timeout_s: -5\n")
    result = run_cli("run", str(path), "--dry-run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr and "timeout_s" in result.stderr and "-5" in result.stderr


def test_cli_dry_run_lists_run_ids() -> None:
    result = run_cli("run", "scenarios/default.yaml", "--dry-run")
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 18 and ids[0].startswith("faster-whisper-tiny.en-int8-t1")
