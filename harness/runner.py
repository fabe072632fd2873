"""One configuration in one fresh, isolated subprocess: spawn, watch, cap, time out, kill, reap.

The parent blocks in `os.wait4` (which also yields the child's kernel peak RSS); a watchdog thread
samples the RSS of the child's process tree every 20 ms for the memory timeline and kills the whole
process group when the tree passes the memory cap (verdict `oom`, like a Kubernetes OOMKill) or the
deadline passes (verdict `timeout`). Every path, Ctrl-C included, ends with the group killed and the
child reaped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

MIB = 1 << 20
SAMPLE_INTERVAL_S = 0.02
TREE_REFRESH_EVERY = 25  # samples between re-listing the child's descendants
STDERR_TAIL_LINES = 15
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass
class ChildOutcome:
    """What the parent observed. `result` is the worker's JSON when it finished normally."""

    status: str  # ok | oom | timeout | error
    reason: str
    result: dict[str, Any] | None
    ru_maxrss_mb: float
    wall_s: float
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (monotonic s, tree RSS MiB)
    started_at: float = 0.0  # monotonic, for aligning the timeline with the worker's phases
    ended_at: float = 0.0  # monotonic, when the child was reaped
    cap_crossed_at: float | None = None  # monotonic, the first sample above the memory cap


class Watchdog(threading.Thread):
    """Samples the child tree's RSS; enforces the memory cap and the deadline."""

    def __init__(self, pid: int, cap_mb: float | None, timeout_s: float) -> None:
        super().__init__(name=f"watchdog-{pid}", daemon=True)
        self.pid = pid
        self.cap_bytes = None if cap_mb is None else cap_mb * MIB
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.stop = threading.Event()
        self.verdict: str | None = None
        self.reason = ""
        self.timeline: list[tuple[float, float]] = []
        self.crossed_at: float | None = None

    def run(self) -> None:
        tree = ProcessTreeRss(self.pid)
        count = 0
        try:
            # time.sleep: the cheapest wake-up (Event.wait costs ~50 % more CPU per wake-up here).
            while True:
                time.sleep(SAMPLE_INTERVAL_S)
                if self.stop.is_set():
                    return
                if count % TREE_REFRESH_EVERY == 0:
                    tree.refresh()
                count += 1
                now = time.monotonic()
                rss = tree.rss_bytes()
                self.timeline.append((now, rss / MIB))
                if self.cap_bytes is not None and rss > self.cap_bytes:
                    self.crossed_at = now
                    self._kill("oom", f"process tree RSS {rss / MIB:.1f} MiB passed the memory cap "
                                      f"{self.cap_bytes / MIB:.0f} MiB; killed (watchdog)")
                    return
                if now > self.deadline:
                    self._kill("timeout", f"still running after timeout_s = {self.timeout_s:g} s; killed")
                    return
        finally:
            tree.close()

    def _kill(self, verdict: str, reason: str) -> None:
        self.verdict, self.reason = verdict, reason
        kill_group(self.pid)


class ProcessTreeRss:
    """RSS of a process and its descendants, cheap enough to read 50 times a second: each
    process's /proc/PID/statm stays open and is re-read with pread; descendants are re-listed on
    `refresh()` from /proc/PID/task/*/children (psutil's full /proc scan where that is missing)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.fds: dict[int, int] = {}
        self.page_size = os.sysconf("SC_PAGE_SIZE")

    def _descendants(self) -> list[int]:
        found, queue = [], [self.root]
        while queue:
            pid = queue.pop()
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
                children = [int(c) for t in tasks for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
            except FileNotFoundError:  # the process is gone, or no children files: ask psutil
                if pid == self.root and os.path.exists(f"/proc/{pid}"):
                    return [p.pid for p in psutil.Process(pid).children(recursive=True)]
                continue
            except (OSError, ValueError):
                continue
            found += children
            queue += children
        return found

    def refresh(self) -> None:
        alive = {self.root, *self._descendants()}
        for pid in set(self.fds) - alive:
            os.close(self.fds.pop(pid))
        for pid in alive - set(self.fds):
            try:
                self.fds[pid] = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
            except OSError:
                continue

    def rss_bytes(self) -> int:
        total = 0
        for fd in self.fds.values():
            try:
                total += int(os.pread(fd, 256, 0).split()[1]) * self.page_size
            except (OSError, IndexError, ValueError):  # exited since the last refresh
                continue
        return total

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def kill_group(pid: int) -> None:
    """SIGKILL the child's whole process group (it leads its own session)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def child_environment(threads: int) -> dict[str, str]:
    """Thread settings exported before the child's interpreter starts, so every numeric library
    (OpenMP, MKL, OpenBLAS) sees them at import."""
    env = dict(os.environ)
    for var in THREAD_ENV_VARS:
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    return env


def run_child(job: dict[str, Any], log_path: Path, cap_mb: float | None, timeout_s: float) -> ChildOutcome:
    """Run the worker on `job`; return what happened. Never leaves the child behind."""
    threads = job["spec"]["threads"]
    with tempfile.TemporaryDirectory(prefix="harness-job-") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            started = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "harness.worker", str(job_path), str(result_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=child_environment(threads), start_new_session=True, close_fds=True,
            )
        watchdog = Watchdog(proc.pid, cap_mb, timeout_s)
        watchdog.start()
        try:
            # Wait without reaping: while the child is a zombie its process group id cannot be
            # reused, so killing the group below can only hit the child's own descendants.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        finally:  # also on Ctrl-C / SIGTERM: stop sampling, kill the group, reap
            watchdog.stop.set()
            watchdog.join()
            kill_group(proc.pid)
            _, status_word, rusage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status_word)
        ended_at = time.monotonic()
        ru_maxrss_mb = rusage.ru_maxrss * 1024 / MIB  # Linux reports kB
        result = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else None

    outcome = ChildOutcome("ok", "", result, ru_maxrss_mb, ended_at - started, watchdog.timeline,
                           started, ended_at, watchdog.crossed_at)
    if watchdog.verdict is not None:
        outcome.status, outcome.reason = watchdog.verdict, watchdog.reason
    elif result is not None and not result["ok"]:
        outcome.status, outcome.reason = "error", result["error"]
    elif proc.returncode != 0 or result is None:
        outcome.status = "error"
        outcome.reason = f"worker {_describe_exit(proc.returncode)}; last output:\n{_tail(log_path)}"
    return outcome


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code} without a result"


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no output)"
    return "\n".join(lines[-STDERR_TAIL_LINES:]) or "(no output)"
