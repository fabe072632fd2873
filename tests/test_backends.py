"""faster-whisper and openai-whisper side by side, on the same converted weights, audio and decoding."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import read_rows, run_cli, worker_processes, write_scenario

from harness import catalog

pytestmark = pytest.mark.slow
pytest.importorskip("whisper")


def test_both_backends_agree_on_real_english_with_the_same_weights(tmp_path: Path, small_manifest: Path) -> None:
    scenario = write_scenario(tmp_path / "backends.yaml", """
name: backends
languages: [en]
repeats: 1
matrix: {backend: [faster-whisper, openai-whisper], model: [base], quantization: [float32, float16],
         threads: [2], cpu_pinning: [auto]}
""")
    run_dir = tmp_path / "run"
    result = run_cli("run", str(scenario), "--dataset", str(small_manifest), "--out", str(run_dir))
    assert result.returncode == 0, result.stderr
    rows = {(r["config"]["backend"], r["config"]["quantization"]): r for r in read_rows(run_dir)}

    faster, openai = rows["faster-whisper", "float32"], rows["openai-whisper", "float32"]
    assert faster["status"] == openai["status"] == "ok", (faster["reason"], openai["reason"])
    assert openai["config"]["model_source"].startswith("converted from offline pack")
    assert openai["config"]["compute_type_effective"] == "float32"
    wer = {name: r["metrics"]["languages"]["en"]["wer"] for name, r in (("faster", faster), ("openai", openai))}
    assert abs(wer["faster"] - wer["openai"]) <= 0.01, wer
    # PyTorch and its float32 activations: openai-whisper needs more memory (the ordering in DESIGN.md).
    assert openai["metrics"]["peak_rss_mb"] > faster["metrics"]["peak_rss_mb"]
    assert openai["config"]["threads_effective"]

    # float16 on the CPU: faster-whisper tries and fails (an error row); openai-whisper is skipped up front.
    assert rows["openai-whisper", "float16"]["status"] == "skipped"
    assert "CUDA" in rows["openai-whisper", "float16"]["reason"]
    assert not worker_processes()


def test_without_openai_whisper_its_configurations_are_skipped_and_the_rest_runs(tmp_path: Path, small_manifest: Path) -> None:
    # `sys.modules[name] = None` is how Python marks a module as absent: find_spec -> None, import -> ImportError.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['whisper'] = None\n")
    scenario = write_scenario(tmp_path / "s.yaml", """
name: absent
languages: [en]
repeats: 1
matrix: {backend: [openai-whisper, faster-whisper], model: [tiny.en], quantization: [int8], threads: [1]}
""")
    run_dir = tmp_path / "run"
    result = run_cli("run", str(scenario), "--dataset", str(small_manifest), "--out", str(run_dir),
                     env={"PYTHONPATH": str(hide)})
    assert result.returncode == 0, result.stderr
    openai, faster = read_rows(run_dir)
    assert openai["status"] == "skipped" and "openai-whisper is not installed (no module whisper)" in openai["reason"]
    assert faster["status"] == "ok"


def test_unsupported_reason_is_none_for_what_runs_on_this_machine() -> None:
    assert catalog.unsupported_reason("openai-whisper", "int8") is None
    assert catalog.unsupported_reason("faster-whisper", "float16") is None  # CTranslate2 decides, at load
