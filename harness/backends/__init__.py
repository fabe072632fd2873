"""Backend adapters behind one small interface (see `base.Backend`).

`get(name)` imports only the adapter asked for, inside the worker child, after CPU affinity and
thread settings are applied.
"""

from __future__ import annotations

import importlib

from harness.backends.base import Backend

_ADAPTERS = {
    "faster-whisper": "harness.backends.faster_whisper:FasterWhisperBackend",
    "openai-whisper": "harness.backends.openai_whisper:OpenAIWhisperBackend",
}

__all__ = ["Backend", "get"]


def get(name: str) -> Backend:
    module, _, cls = _ADAPTERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
