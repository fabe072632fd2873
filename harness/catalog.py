"""Names the harness knows without importing any backend: backends, models, quantizations, languages.

Kept import-light on purpose: scenario validation and the CLI's start-up read it, the worker child
does not need pandas or a second backend to use it.
"""

from __future__ import annotations

# Backend name -> quantizations it accepts (validated before anything runs; whether the CPU
# supports one is found out by the backend at load time and recorded as an `error` row).
BACKENDS: dict[str, tuple[str, ...]] = {
    "faster-whisper": (
        "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
        "float16", "bfloat16", "float32", "default",
    ),
    # int8 = PyTorch dynamic quantization of the Linear layers; float16 needs CUDA (skipped on CPU).
    "openai-whisper": ("float32", "int8", "float16"),
}

# Python modules a backend needs (absent ones turn its configurations into `skipped` rows), and how to get them.
BACKEND_MODULES: dict[str, tuple[str, ...]] = {
    "faster-whisper": ("faster_whisper",),
    "openai-whisper": ("whisper", "torch"),
}
BACKEND_INSTALL = {"faster-whisper": "pip install whisper-harness",
                   "openai-whisper": "pip install 'whisper-harness[openai-whisper]' (see the README for the CPU build of PyTorch)"}


def unsupported_reason(backend: str, quantization: str, chunking_mode: str = "whole") -> str | None:
    """Why this backend cannot run this configuration on this machine (CPU only), or None."""
    import importlib.util

    missing = [m for m in BACKEND_MODULES[backend] if importlib.util.find_spec(m) is None]
    if missing:
        return f"{backend} is not installed (no module {', '.join(missing)}); {BACKEND_INSTALL[backend]}"
    if backend == "openai-whisper" and quantization == "float16":
        return "openai-whisper float16 needs a CUDA GPU; the harness measures on the CPU (use float32 or int8)"
    if chunking_mode not in BACKEND_CHUNKING[backend]:
        return (f"{backend} has no '{chunking_mode}' mode ({CHUNKING_MODES[chunking_mode]}); "
                f"it runs {' and '.join(BACKEND_CHUNKING[backend])}")
    return None

# Whisper model names faster-whisper can download from the hub (faster_whisper.utils._MODELS).
WHISPER_MODELS: tuple[str, ...] = (
    "tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
    "large-v1", "large-v2", "large-v3", "large", "distil-large-v2", "distil-medium.en",
    "distil-small.en", "distil-large-v3", "distil-large-v3.5", "large-v3-turbo", "turbo",
)


def is_english_only(model: str) -> bool:
    """English-only checkpoints (`*.en`) cannot transcribe other languages."""
    return model.rstrip("/").endswith(".en")


# The languages Whisper transcribes (faster_whisper.tokenizer._LANGUAGE_CODES).
LANGUAGES: frozenset[str] = frozenset(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he "
    "hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl "
    "nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz "
    "vi yi yo zh yue".split()
)

# Chunking modes: what each is, its settings and the harness's defaults (None: none; vad's unset
# settings keep faster-whisper's own defaults).
CHUNKING_MODES: dict[str, str] = {
    "whole": "the backend's own long-form transcription, 30-second windows",
    "chunk_length": "faster-whisper's chunk_length: shorter feature windows",
    "vad": "faster-whisper's vad_filter: Silero VAD drops silence before decoding",
    "batched": "faster-whisper's BatchedInferencePipeline: VAD segments decoded in batches",
    "stream": "the harness feeds the audio in pieces as a live service receives it",
}
CHUNKING_SETTINGS: dict[str, dict[str, object]] = {
    "whole": {},
    "chunk_length": {"chunk_length": None},
    # faster_whisper.vad.VadOptions; unset ones keep faster-whisper's defaults.
    "vad": dict.fromkeys(("threshold", "neg_threshold", "min_speech_duration_ms", "max_speech_duration_s",
                          "min_silence_duration_ms", "speech_pad_ms")),
    "batched": {"batch_size": 8},
    "stream": {"chunk_s": 2.0, "overlap_s": 0.0, "buffer": "pieces"},
}


def chunking_label(chunking: dict[str, object]) -> str:
    """A chunking setting in a few words: whole, chunk 10s, vad, batched 8, stream 2s overlap 0.5s."""
    mode = chunking["mode"]
    if mode == "chunk_length":
        return f"chunk {chunking['chunk_length']}s"
    if mode == "batched":
        return f"batched {chunking['batch_size']}"
    if mode == "stream":
        return (f"stream {chunking['chunk_s']:g}s" + (f" overlap {chunking['overlap_s']:g}s" if chunking["overlap_s"] else "")
                + (" growing" if chunking["buffer"] == "growing" else ""))
    return str(mode)


BACKEND_CHUNKING: dict[str, tuple[str, ...]] = {
    "faster-whisper": tuple(CHUNKING_MODES),
    "openai-whisper": ("whole", "stream"),
}
