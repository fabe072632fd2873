"""openai-whisper (PyTorch) adapter.

Decoding settings are passed one for one with the faster-whisper adapter's (beam size, best_of, the
temperature fallback, condition_on_previous_text, without_timestamps; the compression-ratio, log-prob
and no-speech thresholds are the same defaults in both libraries), on the same pre-decoded audio.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import whisper


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """PyTorch dynamic int8 quantization of every Linear layer (weights int8, activations per batch).

    openai-whisper's layers are subclasses of nn.Linear, which `quantize_dynamic` matches by exact
    type only; they are turned back into plain nn.Linear first so that they are quantized at all.
    """
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.Linear) and type(child) is not torch.nn.Linear:
                plain = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                plain.load_state_dict(child.state_dict())
                setattr(parent, name, plain)
    with warnings.catch_warnings():
        # PyTorch 2.13 announces that torch.ao.quantization moves to torchao on every call; it still works.
        warnings.filterwarnings("ignore", "torch.ao.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class OpenAIWhisperBackend:
    def __init__(self) -> None:
        self.model: whisper.Whisper | None = None
        self.quantization = ""

    def load(self, model_path: str, quantization: str, threads: int) -> None:
        torch.set_num_threads(threads)
        # openai-whisper runs one op at a time; an inter-op pool would only add idle threads.
        torch.set_num_interop_threads(1)
        model = whisper.load_model(model_path, device="cpu")
        if quantization == "int8":
            model = quantize_int8(model)
        self.model, self.quantization = model.eval(), quantization

    def transcribe(self, audio: np.ndarray, language: str, beam_size: int, decoding: dict[str, Any],
                   chunking: dict[str, Any]) -> str:
        assert self.model is not None
        assert chunking["mode"] == "whole", chunking  # the only native mode (catalog.BACKEND_CHUNKING)
        result = self.model.transcribe(
            audio, language=language, beam_size=beam_size, best_of=decoding["best_of"],
            temperature=tuple(decoding["temperature"]),
            condition_on_previous_text=decoding["condition_on_previous_text"],
            without_timestamps=decoding["without_timestamps"], fp16=False, verbose=None,
        )
        return str(result["text"]).strip()

    def supports_language(self, language: str) -> bool:
        assert self.model is not None
        return self.model.is_multilingual or language == "en"

    def describe(self) -> dict[str, Any]:
        assert self.model is not None
        return {"compute_type": "int8 dynamic (Linear layers)" if self.quantization == "int8" else "float32",
                "multilingual": self.model.is_multilingual, "torch": torch.__version__,
                "torch_threads": torch.get_num_threads()}
