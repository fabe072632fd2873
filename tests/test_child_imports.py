"""A worker child imports only the backend it measures: checked from inside real worker children.

With HARNESS_RECORD_IMPORTS=1 the worker adds to its reply the top-level package of every module in its
`sys.modules` (`imported_modules`: "faster_whisper" for faster_whisper.transcribe). One child per
registered backend (tiny.en, its smallest quantization, one 2-second clip, one cold and one timed
transcription) is run through the real runner, as a node runs it.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from harness import backends
from harness.measure.runner import run_child
from harness.plan.scenario import RunSpec

pytestmark = pytest.mark.slow

# Never in a worker child, whatever the backend: they belong to the parent (scoring, tables, the RSS
# sampler, the results contract).
PARENT_ONLY = ("jiwer", "pandas", "matplotlib", "psutil", "pydantic")
SAMPLE_RATE = 16000


# Modules of PARENT_ONLY that a backend's own library loads when it loads a model (checked by hand:
# transformers' modeling utilities import psutil): the backend's memory, not the harness's.
LOADED_BY_THE_LIBRARY = {"transformers": {"psutil"}}


def other_backends_libraries(name: str) -> set[str]:
    """The top-level modules other backends need and this one does not (torch is both openai-whisper's
    and transformers', say: it is forbidden in a faster-whisper child only)."""
    mine = {m.partition(".")[0] for m in backends.info(name).modules}
    others = {m.partition(".")[0] for other in backends.names() if other != name for m in backends.info(other).modules}
    return others - mine


def smallest_quantization(info: backends.BackendInfo) -> str:
    usable = [q for q in info.quantizations if q not in info.cpu_unsupported]
    return min(usable, key=lambda q: info.bytes_per_weight[q])


def write_clip(path: Path) -> Path:
    """2 s of a quiet 440 Hz tone then silence: enough for a transcription, quick to decode."""
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    signal = np.where(t < 1.0, 0.1 * np.sin(2 * np.pi * 440 * t), 0.0)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes((signal * 32767).astype("<i2").tobytes())
    return path


def test_the_forbidden_sets_are_the_ones_asked_for() -> None:
    assert {"whisper", "torch"} <= other_backends_libraries("faster-whisper")
    assert {"faster_whisper", "ctranslate2"} <= other_backends_libraries("openai-whisper")


@pytest.mark.parametrize("name", backends.names())
def test_a_worker_child_imports_only_its_own_backend(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = backends.info(name)
    quantization = smallest_quantization(info)
    if why_not := info.unavailable(quantization):
        pytest.skip(why_not)
    model = info.resolve_model("tiny.en", quantization)
    spec = RunSpec(run_id=f"imports-{name}", scenario="child-imports", backend=name, model="tiny.en",
                   quantization=quantization, threads=1, cpu_pinning="none", chunking={"mode": "whole"}, beam_size=1,
                   decoding={"best_of": 1, "temperature": [0.0], "condition_on_previous_text": False,
                             "without_timestamps": True},
                   memory_cap_mb=None, timeout_s=300, repeats=1, warmup=1)
    job = {"spec": spec.to_json(), "model_path": str(model.path), "cpus": None,
           "samples": [{"id": "tone", "lang": "en", "audio": str(write_clip(tmp_path / "tone.wav"))}],
           "stop_when": {}, "profiler": None}
    monkeypatch.setenv("HARNESS_RECORD_IMPORTS", "1")  # the child inherits the harness's environment

    outcome = run_child(job, tmp_path / "worker.log", None, spec.timeout_s)

    assert outcome.status == "ok", outcome.reason
    imported = set(outcome.result["imported_modules"])
    assert {m.partition(".")[0] for m in info.modules} <= imported  # it did measure this backend
    forbidden = other_backends_libraries(name) | (set(PARENT_ONLY) - LOADED_BY_THE_LIBRARY.get(name, set()))
    assert not imported & forbidden, f"a {name} child imported {sorted(imported & forbidden)}"
