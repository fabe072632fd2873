"""Executors: where the sweep's jobs run. One module per executor plus one entry here.

The sweep hands an executor self-contained jobs (harness.contract.Job) and gets rows back; it never
starts a worker itself. `local` runs them one at a time on this machine; others run them elsewhere.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from harness.measure.executors.base import Executor

EXECUTORS = {
    "local": "harness.measure.executors.local:LocalExecutor",
    "ray": "harness.measure.executors.ray_cluster:RayExecutor",  # a Ray cluster's nodes (whisper-harness[ray])
}

__all__ = ["EXECUTORS", "Executor", "create"]


def create(name: str, run_dir: Path, **options: Any) -> Executor:
    module, _, cls = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(run_dir, **options)
