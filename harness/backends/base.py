"""The interface every backend adapter implements: load, transcribe, describe."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Backend(Protocol):
    def load(self, model_path: str, quantization: str, threads: int) -> None:
        """Load the model; everything slow that happens once per process belongs here."""

    def transcribe(self, audio: np.ndarray, language: str, beam_size: int, decoding: dict[str, Any],
                   chunking: dict[str, Any]) -> str:
        """Transcribe 16 kHz mono float32 audio completely (every segment consumed) in one of the
        backend's own chunking modes (catalog.BACKEND_CHUNKING); return the text."""

    def supports_language(self, language: str) -> bool:
        """False for an English-only checkpoint asked for another language."""

    def describe(self) -> dict[str, Any]:
        """Effective settings after load (e.g. the compute type actually used)."""
