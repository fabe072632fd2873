"""faster-whisper (CTranslate2): its description and its adapter.

faster-whisper and CTranslate2 are imported only inside the adapter's methods and `resolve_model`, so
that reading `BACKEND` costs nothing and only the worker child measuring this backend loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.backends.base import BackendInfo

if TYPE_CHECKING:
    import numpy as np

    from harness.weights.models import LocalModel

NAME = "faster-whisper"
QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16",
                 "float32", "default")
# Hugging Face repositories of the model names WhisperModel downloads (faster_whisper.utils._MODELS in
# faster-whisper 1.2.1; tests/test_backends.py checks it against the installed library).
HUB_REPOS = {
    "tiny.en": "Systran/faster-whisper-tiny.en", "tiny": "Systran/faster-whisper-tiny",
    "base.en": "Systran/faster-whisper-base.en", "base": "Systran/faster-whisper-base",
    "small.en": "Systran/faster-whisper-small.en", "small": "Systran/faster-whisper-small",
    "medium.en": "Systran/faster-whisper-medium.en", "medium": "Systran/faster-whisper-medium",
    "large-v1": "Systran/faster-whisper-large-v1", "large-v2": "Systran/faster-whisper-large-v2",
    "large-v3": "Systran/faster-whisper-large-v3", "large": "Systran/faster-whisper-large-v3",
    "distil-large-v2": "Systran/faster-distil-whisper-large-v2",
    "distil-medium.en": "Systran/faster-distil-whisper-medium.en",
    "distil-small.en": "Systran/faster-distil-whisper-small.en",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "distil-large-v3.5": "distil-whisper/distil-large-v3.5-ct2",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}


def resolve_model(model: str, quantization: str = "int8") -> LocalModel:
    """A CTranslate2 directory: the path given, an offline pack, faster-whisper's hub cache, or a hub
    download when online (harness.weights.models.resolve); the quantization is applied at load."""
    from harness.weights import models

    return models.resolve(model)


def deploy_python(model: str, quantization: str, threads: int, source: str | None = None) -> str:
    """Loads what was measured: an offline pack from a copy of its directory, a directory by its path, a
    hub model by its name."""
    hub = f"{model!r} is {HUB_REPOS[model]} on the Hugging Face hub" if model in HUB_REPOS else None
    if hub and source and source.startswith("offline pack"):
        load = f"whisper-{model}"
        where = (f"# measured from the {source}: `harness models convert {model} --to faster-whisper --out {load}` "
                 f"copies its CTranslate2 directory;\n# online, {hub}: WhisperModel({model!r}, ...) downloads it "
                 "on first use")
    elif hub:
        load = model
        where = (f"# {hub}, downloaded on first use when online (offline: give the path of a CTranslate2 "
                 "directory instead)")
    else:
        load, where = model, f"# {model!r}: the CTranslate2 directory that was measured"
    return (f"{where}\n"
            "from faster_whisper import WhisperModel\n"
            f"model = WhisperModel({load!r}, device=\"cpu\", compute_type={quantization!r}, "
            f"cpu_threads={threads}, num_workers=1)")


BACKEND = BackendInfo(
    name=NAME,
    quantizations=QUANTIZATIONS,
    # Every native mode: whole, chunk_length, vad (vad_filter), batched (BatchedInferencePipeline).
    chunking=("whole", "chunk_length", "vad", "batched"),
    modules=("faster_whisper", "ctranslate2"),
    install_hint="pip install whisper-harness (faster-whisper is one of its dependencies)",
    packages=("faster-whisper", "ctranslate2"),
    bytes_per_weight={"int8": 1, "int8_float32": 1, "int8_float16": 1, "int8_bfloat16": 1, "int16": 2,
                      "float16": 2, "bfloat16": 2, "float32": 4, "default": 4},
    # Nothing is refused up front: CTranslate2 decides at load (e.g. float16 on a CPU is an `error` row).
    cpu_unsupported={},
    resolve_model=resolve_model,
    deploy_python=deploy_python,
    adapter="harness.backends.faster_whisper:FasterWhisperBackend",
)


class FasterWhisperBackend:
    def __init__(self) -> None:
        self.model: Any = None  # faster_whisper.WhisperModel
        self.batched: Any = None  # faster_whisper.BatchedInferencePipeline

    def load(self, model_path: str, quantization: str, threads: int) -> None:
        from faster_whisper import WhisperModel

        # num_workers=1: one transcription at a time, as the harness measures single requests.
        self.model = WhisperModel(model_path, device="cpu", compute_type=quantization,
                                  cpu_threads=threads, num_workers=1)

    def transcribe(self, audio: np.ndarray, language: str, beam_size: int, decoding: dict[str, Any],
                   chunking: dict[str, Any]) -> str:
        assert self.model is not None
        mode = chunking["mode"]
        settings = {k: v for k, v in chunking.items() if k != "mode"}
        common = dict(language=language, beam_size=beam_size, best_of=decoding["best_of"],
                      temperature=decoding["temperature"],
                      condition_on_previous_text=decoding["condition_on_previous_text"],
                      without_timestamps=decoding["without_timestamps"])
        if mode == "batched":
            from faster_whisper import BatchedInferencePipeline

            # The pipeline segments the audio with Silero VAD and decodes the segments in batches.
            self.batched = self.batched or BatchedInferencePipeline(self.model)
            segments, _info = self.batched.transcribe(audio, batch_size=settings["batch_size"], **common)
        else:
            segments, _info = self.model.transcribe(
                audio, vad_filter=mode == "vad", vad_parameters=settings if mode == "vad" else None,
                chunk_length=settings.get("chunk_length"), **common)
        # `segments` is a lazy generator: the work happens while it is consumed.
        return "".join(segment.text for segment in segments).strip()

    def supports_language(self, language: str) -> bool:
        assert self.model is not None
        return self.model.model.is_multilingual or language == "en"

    def describe(self) -> dict[str, Any]:
        assert self.model is not None
        return {"compute_type": self.model.model.compute_type,
                "multilingual": self.model.model.is_multilingual}
