"""Names the harness knows without importing any backend: models, languages, chunking modes.

What each backend accepts (quantizations, chunking modes, ...) is in its own module under
harness/backends/ (ask `harness.backends.info(name)`).

Kept import-light on purpose: scenario validation and the CLI's start-up read it, the worker child
does not need pandas or a second backend to use it.
"""

from __future__ import annotations

# Whisper model names (the names faster_whisper.utils._MODELS maps to the hub; how a backend gets the
# weights of one is its own `resolve_model`).
WHISPER_MODELS: tuple[str, ...] = (
    "tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
    "large-v1", "large-v2", "large-v3", "large", "distil-large-v2", "distil-medium.en",
    "distil-small.en", "distil-large-v3", "distil-large-v3.5", "large-v3-turbo", "turbo",
)

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
    "chunk_length": "shorter feature windows (chunk_length under 30 seconds)",
    "vad": "Silero VAD drops silence before decoding",
    "batched": "VAD segments decoded in batches",
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

# The profilers `harness profile` and `run --profile` can run a configuration under (harness.measure.profiling).
PROFILERS: tuple[str, ...] = ("memray", "scalene")
