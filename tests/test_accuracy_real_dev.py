"""The real-speech accuracy check: tiny.en and base int8 on ../shared/datasets/real-dev, against the
committed baseline (baselines/accuracy/real-dev.json); fails when a language's WER rises by more
than 1 point. HARNESS_UPDATE_ACCURACY_BASELINE=1 rewrites the baseline from this run (review the diff)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REAL_DEV, REPO, read_rows, run_cli

SCENARIO = REPO / "scenarios" / "accuracy-real-dev.yaml"
BASELINE = REPO / "baselines" / "accuracy" / "real-dev.json"
MAX_WER_INCREASE = 0.01  # 1 point, absolute, per language


def _measured(rows: list[dict], keys: tuple[str, ...] = ("wer", "cer")) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {lang: {wer, cer}}} from a run's rows."""
    return {r["config"]["model"]: {lang: {k: m[k] for k in keys} for lang, m in r["metrics"]["languages"].items()}
            for r in rows}


@pytest.mark.slow
def test_wer_on_real_speech_has_not_risen(tmp_path: Path) -> None:
    manifest = REAL_DEV / "manifest.jsonl"
    if not manifest.is_file():
        pytest.skip(f"{manifest} is absent: the real-speech accuracy check did NOT run (it needs ../shared beside the repository)")
    done = run_cli("run", str(SCENARIO), "--out", str(tmp_path / "run"), timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_rows(tmp_path / "run")
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["reason"] for r in rows]
    measured = _measured(rows)
    print("\nreal-dev accuracy (this run):", json.dumps(_measured(rows, ("wer", "cer", "rtf"))))
    if os.environ.get("HARNESS_UPDATE_ACCURACY_BASELINE") == "1":
        BASELINE.write_text(json.dumps({"scenario": SCENARIO.name, "max_wer_increase": MAX_WER_INCREASE,
                                        "machine": rows[0]["environment"].get("cpu"), "figures": measured}, indent=2) + "\n")
    baseline = json.loads(BASELINE.read_text())["figures"]
    assert set(measured) == set(baseline) and all(set(measured[m]) == set(baseline[m]) for m in baseline)
    risen = [f"{model} {lang}: WER {baseline[model][lang]['wer']:.1%} -> {figures['wer']:.1%}"
             for model, langs in measured.items() for lang, figures in langs.items()
             if figures["wer"] > baseline[model][lang]["wer"] + MAX_WER_INCREASE + 1e-9]
    assert not risen, f"WER on real speech rose by more than {MAX_WER_INCREASE:.0%} point: {'; '.join(risen)}"
