"""What machine and software a run was measured on (recorded in every result row)."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil

from harness import backends

# The harness's own packages; each backend adds its own (BackendInfo.packages).
CORE_PACKAGES = ("whisper-harness", "numpy", "av", "jiwer", "whisper-normalizer", "psutil")


def package_names() -> tuple[str, ...]:
    """The distributions whose versions a row records: the harness's, then every backend's."""
    return tuple(dict.fromkeys([*CORE_PACKAGES, *(p for name in backends.names() for p in backends.info(name).packages)]))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def capture() -> dict[str, Any]:
    packages = {}
    for name in package_names():
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            continue
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "ram_mb": round(psutil.virtual_memory().total / (1 << 20)),
        "os": f"{platform.system()} {platform.release()}",
        "hostname": platform.node(),
        "python": platform.python_version(),
        "packages": packages,
        "git_commit": git_commit(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
