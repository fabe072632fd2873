"""What a backend is: its self-description (`BackendInfo`) and its adapter interface (`Backend`).

Every backend is one module of this package that declares, at module level, `BACKEND = BackendInfo(...)`:
everything the rest of the harness needs to know about it (quantizations, chunking modes, what to
install, where its weights come from, how to deploy it, how to profile it) without importing the
backend's own library. That library is imported only inside the adapter's methods and the functions
`BACKEND` points to, so reading `BACKEND` is cheap and the worker child imports only the backend it
measures. The registry (`harness.backends`) maps each name to its module.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from harness.catalog import CHUNKING_MODES

if TYPE_CHECKING:
    import numpy as np

    from harness.weights.models import LocalModel

# The mode the harness runs for every backend: it feeds the audio in pieces and transcribes each with
# the backend's own "whole" mode (harness.child.worker), so a backend needs "whole" to stream.
STREAM = "stream"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class Backend(Protocol):
    """The adapter a backend's worker child drives (one instance per process)."""

    def load(self, model_path: str, quantization: str, threads: int) -> None:
        """Load the model; everything slow that happens once per process belongs here."""

    def transcribe(self, audio: np.ndarray, language: str, beam_size: int, decoding: dict[str, Any],
                   chunking: dict[str, Any]) -> str:
        """Transcribe 16 kHz mono float32 audio completely (every segment consumed) in one of the
        backend's own chunking modes (`BackendInfo.chunking`); return the text."""

    def supports_language(self, language: str) -> bool:
        """False for an English-only checkpoint asked for another language."""

    def describe(self) -> dict[str, Any]:
        """Effective settings after load (e.g. the compute type actually used)."""


def english_only_by_name(model: str) -> bool:
    """English-only checkpoints are named `*.en` (`tiny.en`, a directory `models/base.en/`)."""
    return model.rstrip("/").endswith(".en")


def thread_env(threads: int) -> dict[str, str]:
    """The OpenMP / MKL / OpenBLAS thread counts, exported before the process starts."""
    return {var: str(threads) for var in THREAD_ENV_VARS}


@dataclass(frozen=True, kw_only=True, eq=False)  # one per backend: identity is equality
class BackendInfo:
    """Everything about one backend that the harness outside `harness/backends/` may know."""

    name: str  # the `backend:` value in scenarios and rows
    quantizations: tuple[str, ...]  # what a scenario may ask for (validated before anything runs)
    # The chunking modes it runs natively (harness.catalog.CHUNKING_MODES); "stream" is not listed:
    # the harness streams every backend that runs "whole".
    chunking: tuple[str, ...]
    modules: tuple[str, ...]  # Python modules it needs; absent ones turn its configurations into `skipped` rows
    install_hint: str  # how to get them
    packages: tuple[str, ...]  # distributions whose versions every row's environment records
    bytes_per_weight: Mapping[str, float]  # per quantization: the --search ordering (smallest memory first)
    # Runs on the node that measures: (model name or path, quantization) -> local weights in the form the
    # adapter's `load` takes (offline packs, conversions, caches, a download when online; a backend whose
    # quantization is a file format converts to it here). Raises
    # harness.weights.models.ModelUnavailable saying what to install or where to put the files.
    resolve_model: Callable[[str, str], LocalModel]
    # (model, quantization, threads, the row's config.model_source) -> the Python lines that load the model
    # the way it was measured.
    deploy_python: Callable[[str, str, int, str | None], str]
    # The adapter: "package.module:Class" (imported in the worker child only) or a callable returning one.
    adapter: str | Callable[[], Backend]
    cpu_unsupported: Mapping[str, str] = field(default_factory=dict)  # quantization -> why not on a CPU
    english_only: Callable[[str], bool] = english_only_by_name  # model name or path -> English-only?
    deploy_env: Callable[[int], dict[str, str]] = thread_env  # threads -> the deployment's environment
    scalene_cpu_only: bool = False  # scalene's memory profiling is not usable with this backend
    # File suffixes it loads when a model is given as a file path (a directory is a CTranslate2 model).
    model_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("bytes_per_weight", "cpu_unsupported"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        problems = []
        if missing := [q for q in self.quantizations if q not in self.bytes_per_weight]:
            problems.append(f"bytes_per_weight lacks {', '.join(missing)}")
        if extra := [q for q in self.cpu_unsupported if q not in self.quantizations]:
            problems.append(f"cpu_unsupported names unknown quantizations {', '.join(extra)}")
        if unknown := [m for m in self.chunking if m not in CHUNKING_MODES or m == STREAM]:
            problems.append(f"chunking lists {', '.join(unknown)} (expected native modes among "
                            f"{', '.join(m for m in CHUNKING_MODES if m != STREAM)})")
        if problems:
            raise ValueError(f"backend {self.name}: {'; '.join(problems)}")

    def runs(self) -> tuple[str, ...]:
        """Every chunking mode it can be measured in: its native ones, and stream when it runs whole."""
        return (*self.chunking, STREAM) if "whole" in self.chunking else self.chunking

    def missing_modules(self) -> list[str]:
        return [m for m in self.modules if importlib.util.find_spec(m) is None]

    def unavailable(self, quantization: str, chunking_mode: str = "whole") -> str | None:
        """Why this configuration cannot run on this machine (CPU only), or None."""
        if missing := self.missing_modules():
            return f"{self.name} is not installed (no module {', '.join(missing)}); {self.install_hint}"
        if quantization not in self.quantizations:
            return f"{self.name} has no quantization {quantization!r}; it accepts {', '.join(self.quantizations)}"
        if quantization in self.cpu_unsupported:
            return f"{self.name} {quantization} {self.cpu_unsupported[quantization]}"
        if chunking_mode not in self.runs():
            return (f"{self.name} has no '{chunking_mode}' mode ({CHUNKING_MODES.get(chunking_mode, 'unknown')}); "
                    f"it runs {' and '.join(self.runs())}")
        return None

    def make_adapter(self) -> Backend:
        """A new adapter instance; imports the backend's library (call it in the worker child)."""
        if callable(self.adapter):
            return self.adapter()
        module, _, attribute = self.adapter.partition(":")
        return getattr(importlib.import_module(module), attribute)()
