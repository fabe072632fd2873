"""openai-whisper (PyTorch): its description and its adapter.

Decoding settings are passed one for one with the faster-whisper adapter's (beam size, best_of, the
temperature fallback, condition_on_previous_text, without_timestamps; the compression-ratio, log-prob
and no-speech thresholds are the same defaults in both libraries), on the same pre-decoded audio.
PyTorch and openai-whisper are imported only inside the adapter's methods and the functions below, so
that reading `BACKEND` costs nothing and only the worker child measuring this backend loads them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backends.base import BackendInfo

if TYPE_CHECKING:
    import numpy as np
    import torch

    from harness.weights.models import LocalModel

NAME = "openai-whisper"
# The checkpoints whisper.load_model downloads by name (whisper._MODELS in openai-whisper 20250625;
# tests/test_backends.py checks it against the installed library).
OFFICIAL_MODELS = ("tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
                   "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo")


def resolve_model(model: str, quantization: str = "float32") -> LocalModel:
    """A `.pt` checkpoint: the path given, openai-whisper's own cache, a conversion of the CTranslate2
    weights (cached; the same weights as the other backends), or openai-whisper's download when online
    (harness.weights.models.openai_checkpoint); the quantization is applied at load."""
    from harness.weights import models

    return models.openai_checkpoint(model)


def deploy_python(model: str, quantization: str, threads: int, source: str | None = None) -> str:
    if model in OFFICIAL_MODELS and source and source.startswith("converted"):
        load = f"{model}.pt"
        lines = [f"# measured on a conversion of the CTranslate2 weights ({source}): `harness models convert {model} "
                 f"--out {load}` writes it;", f"# online, whisper.load_model({model!r}) downloads OpenAI's {model}.pt "
                 "instead"]
    elif model in OFFICIAL_MODELS:
        load = model
        lines = [f"# {model!r} is OpenAI's {model}.pt, downloaded by whisper.load_model on first use when online "
                 f"(offline: `harness models convert {model}` writes it from the CTranslate2 weights; give its path)"]
    elif model.endswith(".pt"):
        load, lines = model, ["# the checkpoint that was measured"]
    else:
        load = f"{Path(model.rstrip('/')).name}.pt"
        lines = [f"# measured on a conversion of {model!r}: `harness models convert {model} --out {load}` writes it"]
    lines += ["import torch, whisper", f"torch.set_num_threads({threads})", "torch.set_num_interop_threads(1)",
              f"model = whisper.load_model({load!r}, device=\"cpu\")"]
    if quantization == "int8":
        lines += ["# as measured: openai-whisper's Linear layers as plain nn.Linear, then dynamic int8",
                  "from harness.backends.openai_whisper import quantize_int8",
                  "model = quantize_int8(model)"]
    return "\n".join(lines)


BACKEND = BackendInfo(
    name=NAME,
    # int8 = PyTorch dynamic quantization of the Linear layers; float16 needs CUDA (skipped on a CPU).
    quantizations=("float32", "int8", "float16"),
    chunking=("whole",),
    modules=("whisper", "torch"),
    install_hint="pip install 'whisper-harness[openai-whisper]' (see the README for the CPU build of PyTorch)",
    packages=("openai-whisper", "torch"),
    bytes_per_weight={"float32": 4, "int8": 1, "float16": 2},
    cpu_unsupported={"float16": "needs a CUDA GPU; the harness measures on the CPU (use float32 or int8)"},
    resolve_model=resolve_model,
    deploy_python=deploy_python,
    # Scalene's memory profiling (its malloc interposer) crashed the PyTorch worker with SIGSEGV after
    # 29 minutes and 14 GB (base, 3-minute file); CPU profiling alone is stable (memray covers memory).
    scalene_cpu_only=True,
    model_files=(".pt",),
    adapter="harness.backends.openai_whisper:OpenAIWhisperBackend",
)


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """PyTorch dynamic int8 quantization of every Linear layer (weights int8, activations per batch).

    openai-whisper's layers are subclasses of nn.Linear, which `quantize_dynamic` matches by exact
    type only; they are turned back into plain nn.Linear first so that they are quantized at all.
    """
    import torch

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
        self.model: Any = None  # whisper.Whisper
        self.quantization = ""

    def load(self, model_path: str, quantization: str, threads: int) -> None:
        import torch
        import whisper

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
        assert chunking["mode"] == "whole", chunking  # the only native mode (BACKEND.chunking)
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
        import torch

        assert self.model is not None
        return {"compute_type": "int8 dynamic (Linear layers)" if self.quantization == "int8" else "float32",
                "multilingual": self.model.is_multilingual, "torch": torch.__version__,
                "torch_threads": torch.get_num_threads()}
