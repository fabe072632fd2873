"""Real subprocesses, real models: memory cap, timeout, worker errors, affinity, threads, Ctrl-C.

Each test runs the CLI as a user would and checks the result rows and that no worker is left.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import read_rows, run_cli, start_cli, worker_processes, write_scenario

pytestmark = pytest.mark.slow

ONE_SAMPLE = """
datasets: [default]
languages: [en]
max_samples_per_language: 1
repeats: 1
"""


def test_memory_cap_ends_oom_fast_and_the_sweep_goes_on(tmp_path: Path) -> None:
    """The watchdog, where no cgroup can be made (HARNESS_CGROUP=off; the kernel's cap: test_limits.py)."""
    scenario = write_scenario(tmp_path / "cap.yaml", ONE_SAMPLE + """
name: cap
memory_cap_mb: 300
matrix: {model: [base], quantization: [float32], threads: [2]}
include: [{model: tiny.en, quantization: int8}]
""")
    result = run_cli("run", str(scenario), "--out", str(tmp_path / "run"), env={"HARNESS_CGROUP": "off"})
    assert result.returncode == 0, result.stderr
    oom, ok = read_rows(tmp_path / "run")
    assert oom["status"] == "oom", oom["reason"]
    assert "memory cap 300 MiB" in oom["reason"]
    assert oom["config"]["memory_cap_mode"] == "watchdog" and oom["oom_verdict"]["source"] == "watchdog"
    assert "cgroup_peak_mb" not in oom["metrics"]  # no cgroup, no cgroup figures
    timeline = oom["timeline"]
    assert timeline["ended_s"] - timeline["cap_crossed_s"] < 2.0  # killed and reaped within 2 s
    # The kernel's high-water mark confirms the verdict: it is at least the sample that crossed the
    # cap (both are rounded to 0.1 MiB, so a crossing by a few kB reads as 300.0). The kernel keeps RSS
    # in batched per-CPU counters, so statm and the high-water mark can disagree by a few hundred kB
    # (seen on a clean-clone CI run: 302.2 vs a sampled 302.4 MiB).
    assert oom["metrics"]["peak_rss_mb"] >= 300
    assert oom["metrics"]["peak_rss_mb"] >= timeline["sampled_peak_rss_mb"] - 1.0
    assert ok["status"] == "ok" and ok["config"]["model"] == "tiny.en"
    assert ok["metrics"]["peak_rss_mb"] < 300
    assert not worker_processes()


def test_timeout_and_worker_error_are_rows(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "fail.yaml", ONE_SAMPLE + """
name: fail
timeout_s: 1.0
matrix: {model: [base], quantization: [int8]}
""")
    result = run_cli("run", str(scenario), "--out", str(tmp_path / "timeout"))
    assert result.returncode == 0, result.stderr
    [row] = read_rows(tmp_path / "timeout")
    assert row["status"] == "timeout" and "timeout_s = 1 s" in row["reason"]
    assert not worker_processes()

    # float16 is not supported by CTranslate2 on this CPU: the worker raises, the row says why.
    scenario.write_text(scenario.read_text().replace("timeout_s: 1.0", "timeout_s: 300")
                        .replace("quantization: [int8]", "quantization: [float16]"))
    result = run_cli("run", str(scenario), "--out", str(tmp_path / "error"))
    assert result.returncode == 0, result.stderr
    [row] = read_rows(tmp_path / "error")
    assert row["status"] == "error"
    assert "float16" in row["reason"] and "ValueError" in row["reason"]
    assert not worker_processes()


def test_affinity_and_threads_recorded_equal_the_request(tmp_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    scenario = write_scenario(tmp_path / "pin.yaml", ONE_SAMPLE + """
name: pin
matrix: {model: [tiny.en], quantization: [int8], threads: [1, 2], cpu_pinning: ["1", auto]}
""")
    result = run_cli("run", str(scenario), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    rows = {(r["config"]["threads"], r["config"]["cpu_pinning"]["requested"]): r for r in read_rows(tmp_path / "run")}
    assert {k: r["status"] for k, r in rows.items()} == dict.fromkeys(rows, "ok")
    assert rows[(1, "1")]["config"]["cpu_pinning"]["effective"] == [1]
    assert rows[(1, "auto")]["config"]["cpu_pinning"]["effective"] == [0]
    assert rows[(2, "auto")]["config"]["cpu_pinning"]["effective"] == [0, 1]
    assert rows[(2, "1")]["config"]["cpu_pinning"]["effective"] == [1]  # oversubscribed: measured, not refused
    for (threads, _), row in rows.items():
        assert row["config"]["threads_effective"]["openmp"] == threads


def test_ctrl_c_kills_the_child_keeps_finished_rows_and_says_how_to_resume(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "int.yaml", ONE_SAMPLE.replace("repeats: 1", "repeats: 20") + """
name: int
matrix: {model: [tiny.en], quantization: [int8], threads: [1, 2]}
""")
    run_dir = tmp_path / "run"
    proc = start_cli("run", str(scenario), "--out", str(run_dir))
    try:
        deadline = time.monotonic() + 300
        results = run_dir / "results.jsonl"
        while not (results.exists() and results.read_text().count("\n") >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, "first row never arrived"
            time.sleep(0.2)
        while not worker_processes():  # the second configuration's child is running
            assert proc.poll() is None, "sweep ended before it could be interrupted"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert [r["status"] for r in read_rows(run_dir)] == ["ok"]
    assert not worker_processes()

    resumed = run_cli("run", str(scenario), "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert [r["config"]["threads"] for r in read_rows(run_dir)] == [1, 2]


def test_english_only_model_without_english_data_is_skipped_without_running(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "pt.yaml", """
name: pt
datasets: [default]
languages: [pt]
matrix: {model: [tiny.en]}
""")
    result = run_cli("run", str(scenario), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    [row] = read_rows(tmp_path / "run")
    assert row["status"] == "skipped" and "English-only" in row["reason"]
    assert not (tmp_path / "run" / "logs" / f"{row['run_id']}.log").exists()  # no worker was started


def test_a_concurrent_run_is_warned_about_and_recorded(tmp_path: Path) -> None:
    from harness.measure.lock import machine_lock

    scenario = write_scenario(tmp_path / "c.yaml", ONE_SAMPLE + "name: c\nmatrix: {model: [tiny.en]}\n")
    with machine_lock() as other:
        assert other is None
        result = run_cli("run", str(scenario), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "is measuring on this machine too" in result.stderr
    [row] = read_rows(tmp_path / "run")
    assert row["status"] == "ok" and row["node"]["concurrent_run"].startswith("harness run (pid ")
