from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DEV = REPO.parent / "shared" / "datasets" / "real-dev"


# Marks the processes this test session starts (workers inherit it), so that a benchmark running
# beside the tests is not mistaken for a leftover.
SESSION_MARK = uuid.uuid4().hex
CLI_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HARNESS_TEST_SESSION": SESSION_MARK}


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as a user runs it (offline: no model hub, even where reachable)."""
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=timeout, check=False, env={**CLI_ENV, **(env or {})})


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=REPO, env=CLI_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def worker_processes() -> list[psutil.Process]:
    """Worker children started by this test session that are still alive."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "harness.child.worker" not in cmdline and not any(arg.endswith("worker_main.py") for arg in cmdline):  # or under scalene
            continue
        try:
            if proc.environ().get("HARNESS_TEST_SESSION") == SESSION_MARK and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture
def real_dev() -> Path:
    if not (REAL_DEV / "manifest.jsonl").is_file():
        pytest.skip(f"real speech not available ({REAL_DEV} is absent: a user's clone without ../shared)")
    return REAL_DEV


@pytest.fixture
def small_manifest(tmp_path: Path, real_dev: Path) -> Path:
    """Two English clips and one Portuguese clip from real-dev, copied into a manifest of the test's own."""
    entries = {json.loads(line)["id"]: json.loads(line) for line in (real_dev / "manifest.jsonl").read_text().splitlines()}
    folder = tmp_path / "data"
    (folder / "audio").mkdir(parents=True)
    lines = []
    for sample_id in ("en_jfk", "en_picovoice_leopard_test", "pt_ttsportuguese_gt_01"):
        entry = entries[sample_id]
        target = folder / "audio" / Path(entry["audio"]).name
        shutil.copyfile(real_dev / entry["audio"], target)
        lines.append(json.dumps({"id": sample_id, "lang": entry["lang"], "audio": f"audio/{target.name}",
                                 "text": entry["text"]}))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def write_scenario(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def read_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
