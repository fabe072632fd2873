"""Injected faults: signals to the harness and to its worker, a full disk. Finished rows are never lost
and no process of the run is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import read_rows, run_cli, start_cli, worker_processes, write_scenario

pytestmark = pytest.mark.slow

TWO_CONFIGS = """
name: faults
datasets: [default]
languages: [en]
max_samples_per_language: 1
repeats: 20
matrix: {model: [tiny.en], quantization: [int8], threads: [1, 2]}
"""


def start_sweep(tmp_path: Path, rows_before: int = 1) -> tuple[subprocess.Popen[str], Path, Path]:
    """Start `harness run` and return once `rows_before` rows are saved and the next worker runs."""
    scenario = write_scenario(tmp_path / "faults.yaml", TWO_CONFIGS)
    run_dir = tmp_path / "run"
    proc = start_cli("run", str(scenario), "--out", str(run_dir))
    deadline = time.monotonic() + 300
    results = run_dir / "results.jsonl"
    def saved() -> int:
        return results.read_text().count("\n") if results.exists() else 0

    while not (saved() >= rows_before and worker_processes()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the sweep never reached the point to inject the fault"
        time.sleep(0.05)
    return proc, scenario, run_dir


def test_sigterm_kills_the_child_keeps_rows_and_exits_143(tmp_path: Path) -> None:
    proc, _, run_dir = start_sweep(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert [r["status"] for r in read_rows(run_dir)] == ["ok"]
    assert not worker_processes()


def test_sigkill_of_the_harness_takes_the_worker_along_and_resume_finishes(tmp_path: Path) -> None:
    proc, scenario, run_dir = start_sweep(tmp_path)
    [worker] = worker_processes()
    proc.kill()  # no handler can run: the kernel's parent-death signal must end the worker
    proc.communicate(timeout=30)
    worker.wait(timeout=10)
    assert not worker_processes()
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["ok"]  # whole lines only
    resumed = run_cli("run", str(scenario), "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert [r["config"]["threads"] for r in read_rows(run_dir)] == [1, 2]


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT])
def test_a_crashing_worker_is_an_error_row_and_the_sweep_goes_on(tmp_path: Path, sig: signal.Signals) -> None:
    proc, _, run_dir = start_sweep(tmp_path, rows_before=0)
    [worker] = worker_processes()
    os.kill(worker.pid, sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    crashed, after = read_rows(run_dir)
    assert crashed["status"] == "error" and f"killed by {sig.name}" in crashed["reason"]
    assert after["status"] == "ok"
    assert not worker_processes()


def test_a_full_disk_is_a_clear_error_and_saved_rows_stay(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        scenario = write_scenario(tmp_path / "full.yaml", TWO_CONFIGS.replace("repeats: 20", "repeats: 1"))
        result = run_cli("run", str(scenario), "--out", str(disk / "run"))
        assert result.returncode == 1, result.stderr
        assert "No space left on device" in result.stderr and "--resume" in result.stderr
        assert "Traceback" not in result.stderr
        for line in (disk / "run" / "results.jsonl").read_text().splitlines():
            json.loads(line)  # whatever was saved is whole
        assert not worker_processes()
    finally:
        subprocess.run(["umount", str(disk)], check=False)
