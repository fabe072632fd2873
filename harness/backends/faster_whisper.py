"""faster-whisper (CTranslate2) adapter."""

from __future__ import annotations

from typing import Any

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel


class FasterWhisperBackend:
    def __init__(self) -> None:
        self.model: WhisperModel | None = None
        self.batched: BatchedInferencePipeline | None = None

    def load(self, model_path: str, quantization: str, threads: int) -> None:
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
