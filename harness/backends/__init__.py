"""The backends: one module each, declaring `BACKEND` (a `base.BackendInfo`) and its adapter class.

Adding a backend is one module in this package plus one entry in `_REGISTRY`. Nothing outside this
package names a backend: it asks `info(name)`. `info` imports only the module asked for, and that
module imports its heavy library only inside functions, so the worker child (`adapter(name)`, after
CPU affinity and thread settings are applied) loads only the backend it measures.
"""

from __future__ import annotations

import importlib

from harness.backends.base import Backend, BackendInfo

# Backend name -> the module that declares it.
_REGISTRY: dict[str, str] = {
    "faster-whisper": "harness.backends.faster_whisper",
    "openai-whisper": "harness.backends.openai_whisper",
    "whisper.cpp": "harness.backends.whisper_cpp",
    "transformers": "harness.backends.transformers_whisper",
}
DEFAULT = "faster-whisper"  # a scenario's backend when its matrix names none
CONVERT_DEFAULT = "openai-whisper"  # `harness models convert MODEL` without --to

__all__ = ["DEFAULT", "Backend", "BackendInfo", "adapter", "all_quantizations", "get", "info", "names"]


def names() -> tuple[str, ...]:
    """Every registered backend, in registry order."""
    return tuple(_REGISTRY)


def info(name: str) -> BackendInfo:
    """The backend's description; imports its module only (not its library)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown backend {name!r}; registered: {', '.join(_REGISTRY)}")
    declared = importlib.import_module(_REGISTRY[name]).BACKEND
    if not isinstance(declared, BackendInfo) or declared.name != name:
        raise TypeError(f"{_REGISTRY[name]}.BACKEND must be a BackendInfo named {name!r}")
    return declared


def adapter(name: str) -> Backend:
    """A new adapter of the backend: imports its library (the worker child calls this)."""
    return info(name).make_adapter()


get = adapter  # the worker child's name for it


def all_quantizations() -> tuple[str, ...]:
    """Every quantization some backend accepts, sorted."""
    return tuple(sorted({q for name in _REGISTRY for q in info(name).quantizations}))
