"""Signals outside the sweep and an unusable environment, given to the real CLI.

A hangup (SIGHUP) is handled like SIGTERM; a signal in any phase ends with the finished rows kept, no
temp file or worker left, 128 + the signal as exit status and no traceback. A cache folder that cannot
be written is one clear error for the commands that need it; the others still work."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest
from conftest import CLI_ENV, REPO, read_rows, run_cli, worker_processes, write_scenario

GOLDEN = REPO / "tests" / "golden"


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=REPO, env={**CLI_ENV, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_handlers(proc: subprocess.Popen[str]) -> None:
    """Until the CLI's main() has installed its signal handlers (SIGHUP caught: /proc/PID/status SigCgt);
    a signal before that hits the interpreter starting up, not the harness."""
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the CLI never installed its signal handlers"
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        if caught >> (signal.SIGHUP - 1) & 1:
            return
        time.sleep(0.005)


def golden_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "golden-run"
    run_dir.mkdir()
    shutil.copyfile(GOLDEN / "recommend" / "feasible.jsonl", run_dir / "results.jsonl")
    return run_dir


# ---------------------------------------------------------------------------------------------
# Signals

TWO_CONFIGS = """
name: hangup
datasets: [default]
languages: [en]
max_samples_per_language: 1
repeats: 1
matrix: {model: [tiny.en], quantization: [int8], threads: [1, 2]}
"""


@pytest.mark.slow
def test_sighup_during_a_sweep_keeps_rows_writes_the_summary_and_leaves_nothing_behind(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    scenario = write_scenario(tmp_path / "hangup.yaml", TWO_CONFIGS)
    run_dir = tmp_path / "run"
    results = run_dir / "results.jsonl"
    proc = start("run", str(scenario), "--out", str(run_dir), env={"TMPDIR": str(tmp)})
    try:
        deadline = time.monotonic() + 300
        # The first row is saved and the second configuration's worker runs, its job folder in TMPDIR.
        while not (results.exists() and results.read_text().count("\n") >= 1 and worker_processes()
                   and list(tmp.glob("harness-job-*"))):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the sweep never reached its second configuration"
            time.sleep(0.02)
        proc.send_signal(signal.SIGHUP)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 129, stderr
    assert "Traceback" not in stderr and "interrupted by SIGHUP" in stderr
    assert f"--resume {run_dir}" in stderr
    rows = read_rows(run_dir)
    assert rows and {r["status"] for r in rows} == {"ok"}  # (both, if the worker finished just before)
    assert len((run_dir / "summary.csv").read_text().splitlines()) == 1 + len(rows)
    assert not list(tmp.glob("harness-job-*"))
    assert not worker_processes()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_harness_report_renders(tmp_path: Path, sig: signal.Signals) -> None:
    run_dir = golden_run(tmp_path)
    for _ in range(5):  # rendering takes over a second; retry if it ever finishes before the signal
        proc = start("report", str(run_dir))
        wait_for_handlers(proc)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        if proc.returncode != 0:
            break
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    assert f"interrupted by {sig.name}: `harness report {run_dir}` did not finish; run it again" in " ".join(stderr.split())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_harness_run_renders_the_report(tmp_path: Path, sig: signal.Signals) -> None:
    # An English-only model with Portuguese data only: a `skipped` row, no worker, so that a resumed run
    # goes straight from its (empty) sweep to the report.
    data = tmp_path / "data"
    data.mkdir()
    with wave.open(str(data / "a.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 8000)
    (data / "manifest.jsonl").write_text('{"id": "a", "lang": "pt", "audio": "a.wav", "text": "olá"}\n')
    scenario = write_scenario(tmp_path / "render.yaml", f"name: render\ndatasets: [{data / 'manifest.jsonl'}]\n"
                                                        "matrix: {model: [tiny.en]}\n")
    run_dir = tmp_path / "run"
    assert run_cli("run", str(scenario), "--out", str(run_dir)).returncode == 0
    summary = run_dir / "summary.csv"
    for _ in range(5):
        summary.unlink()
        proc = start("run", str(scenario), "--resume", str(run_dir))
        while not summary.exists():  # the sweep writes it as it ends: the report comes next
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.002)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        if proc.returncode != 0:
            break
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr and f"interrupted by {sig.name}" in stderr
    assert f"--resume {run_dir}" in stderr
    assert [r["status"] for r in read_rows(run_dir)] == ["skipped"] and summary.exists()


# ---------------------------------------------------------------------------------------------
# The cache folder

ONE_CONFIG = "name: cache\ndatasets: [default]\nmatrix: {model: [tiny.en]}\n"
FIX = "set HARNESS_CACHE_DIR to a writable folder"


def cache_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert FIX in message
    return message


def needs_the_cache(tmp_path: Path) -> dict[str, list[str]]:
    scenario = write_scenario(tmp_path / "cache.yaml", ONE_CONFIG)
    return {
        "run": ["run", str(scenario), "--out", str(tmp_path / "run")],
        "profile": ["profile", str(scenario), "--run", "x", "--with", "memray"],
        "models list": ["models", "list"],
        "datasets build-default": ["datasets", "build-default"],
        "datasets fetch": ["datasets", "fetch", "fleurs", "--lang", "en", "--out", str(tmp_path / "fleurs")],
    }


@pytest.mark.parametrize("command", ["run", "profile", "models list", "datasets build-default", "datasets fetch"])
def test_cache_dir_that_is_a_file(tmp_path: Path, command: str) -> None:
    cache = tmp_path / "cache"
    cache.write_text("")
    args = needs_the_cache(tmp_path)[command]
    if command == "profile":  # the run id must exist for the command to get as far as the cache
        args[3] = run_cli("run", args[1], "--dry-run").stdout.split()[0]
    message = cache_error(run_cli(*args, env={"HARNESS_CACHE_DIR": str(cache)}))
    assert f"HARNESS_CACHE_DIR={cache} is a file, not a folder" in message
    assert not (tmp_path / "run").exists()  # refused before a run directory was made


def test_cache_dir_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = needs_the_cache(tmp_path)["run"]
    message = cache_error(run_cli(*args, env={"HARNESS_CACHE_DIR": str(blocker / "sub")}))
    assert f"HARNESS_CACHE_DIR={blocker / 'sub'} cannot be created: {blocker} is a file" in message


def test_default_cache_dir_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = needs_the_cache(tmp_path)["run"]
    message = cache_error(run_cli(*args, env={"HARNESS_CACHE_DIR": "", "XDG_CACHE_HOME": str(blocker)}))
    assert f"the harness's cache folder {blocker / 'whisper-harness'} cannot be created" in message


def test_read_only_cache_dir(tmp_path: Path) -> None:
    """A read-only file system (root may write anywhere else: chmod cannot make a folder read-only to it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    cache = tmp_path / "ro"
    cache.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(cache)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        for command in ("run", "models list"):
            message = cache_error(run_cli(*needs_the_cache(tmp_path)[command], env={"HARNESS_CACHE_DIR": str(cache)}))
            assert f"HARNESS_CACHE_DIR={cache} is not writable (Read-only file system)" in message
    finally:
        subprocess.run(["umount", str(cache)], check=False)


def test_commands_that_do_not_need_the_cache_still_work(tmp_path: Path) -> None:
    env = {"HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    (tmp_path / "cache").write_text("")
    run_dir = golden_run(tmp_path)
    report = run_cli("report", str(run_dir), env=env)
    assert report.returncode == 0, report.stderr
    assert (run_dir / "index.html").is_file()
    current = tmp_path / "current.jsonl"
    shutil.copyfile(GOLDEN / "compare" / "baseline.jsonl", current)
    compare = run_cli("compare", str(GOLDEN / "compare" / "baseline.jsonl"), str(current), "--out", str(tmp_path / "cmp"), env=env)
    assert compare.returncode == 0, compare.stderr
    assert (tmp_path / "cmp" / "compare.txt").is_file()
    scenario = write_scenario(tmp_path / "cache.yaml", ONE_CONFIG)
    dry = run_cli("run", str(scenario), "--dry-run", env=env)  # it checks the data a run reads, here the cache's bundled set
    assert dry.returncode == 2 and f"HARNESS_CACHE_DIR={tmp_path / 'cache'} is a file" in dry.stderr, dry.stderr
    assert run_cli("--help", env=env).returncode == 0
