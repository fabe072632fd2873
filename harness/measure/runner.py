"""One configuration in one fresh, isolated subprocess: spawn, watch, cap, time out, kill, reap.

The parent blocks in `os.waitid` / `os.wait4` (the latter also yields the child's kernel peak RSS)
while a watchdog thread (harness.measure.memcap) samples the child tree's RSS, enforces the memory cap
(verdict `oom`) and the deadline (verdict `timeout`). Every path, Ctrl-C, SIGTERM and SIGHUP included,
ends with the child's process group killed, the child reaped and its temp folder removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.contract import WorkerReply
from harness.measure.memcap import CGROUP_MODE, MIB, WATCHDOG_MODE, CgroupCap, Watchdog, delegated_cgroup, kill_group

STDERR_TAIL_LINES = 15
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class ChildOutcome:
    """What the parent observed. `result` is the worker's JSON when it finished normally."""

    status: str  # ok | oom | timeout | error | over_budget
    reason: str
    result: dict[str, Any] | None
    ru_maxrss_mb: float
    wall_s: float
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (monotonic s, tree RSS MiB)
    started_at: float = 0.0  # monotonic, for aligning the timeline with the worker's phases
    ended_at: float = 0.0  # monotonic, when the child was reaped
    cap_crossed_at: float | None = None  # monotonic, the first sample above the memory cap
    cap_mode: str | None = None  # how the memory cap was enforced (None: no cap)
    cpu_steal_fraction: float | None = None  # share of CPU time the hypervisor took while the child ran
    # Share of the machine's CPU time that other processes used while the child ran (neither the worker
    # tree nor this process): another benchmark, a build, a browser. Timings taken under it are suspect.
    foreign_cpu_fraction: float | None = None
    budget_verdict: dict[str, Any] | None = None  # status over_budget: which budget, limit, value


def child_environment(threads: int) -> dict[str, str]:
    """Thread settings exported before the child's interpreter starts, so every numeric library
    (OpenMP, MKL, OpenBLAS) sees them at import."""
    env = dict(os.environ)
    for var in THREAD_ENV_VARS:
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    return env


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP while a resource (temp folder, child, cgroup) is made or cleaned
    up, so that no signal falls between the two; one that arrives meanwhile is delivered at the end
    (unless an exception is already on its way out)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in HELD_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pending:
        signal.raise_signal(pending[0])


def run_child(job: dict[str, Any], log_path: Path, cap_mb: float | None, timeout_s: float,
              memory_budget_mb: float | None = None, command: list[str] | None = None) -> ChildOutcome:
    """Run the worker on `job`; return what happened. Never leaves the child behind.

    `memory_budget_mb` (budget-aware search) stops the run like a cap, with the verdict `over_budget`.
    `command` starts the worker another way (under a profiler: harness.profile); the job and result
    paths are appended to it.
    """
    threads = job["spec"]["threads"]
    stop_at_budget = memory_budget_mb is not None and (cap_mb is None or memory_budget_mb < cap_mb)
    watch_mb = memory_budget_mb if stop_at_budget else cap_mb  # the cgroup, if any, keeps the real cap
    cgroup_parent = delegated_cgroup() if cap_mb is not None else None
    tmp = proc = watchdog = cgroup = None
    try:
        with signals_held():  # each resource is made inside the `try` whose `finally` removes it
            tmp = Path(tempfile.mkdtemp(prefix="harness-job-"))
        job_path, result_path = tmp / "job.json", tmp / "result.json"
        job_path.write_text(json.dumps({**job, "parent_pid": os.getpid()}), encoding="utf-8")
        argv = [*(command or [sys.executable, "-m", "harness.child.worker"]), str(job_path), str(result_path)]
        if cgroup_parent:
            with signals_held():
                cgroup = CgroupCap(cgroup_parent, f"harness-{os.getpid()}-{tmp.name}", cap_mb)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with signals_held(), open(log_path, "wb") as log:
                cpu_before, own_before = machine_cpu_jiffies(), _own_cpu_s()
                started = time.monotonic()
                proc = subprocess.Popen(
                    cgroup.wrap(argv) if cgroup else argv,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=child_environment(threads), start_new_session=True, close_fds=True,
                )
            watchdog = Watchdog(proc.pid, watch_mb, timeout_s)
            watchdog.start()
            # Wait without reaping: while the child is a zombie its process group id cannot be
            # reused, so killing the group below can only hit the child's own descendants.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        finally:  # also on Ctrl-C / SIGTERM / SIGHUP: stop sampling, kill the group, reap
            with signals_held():
                if watchdog is not None:
                    watchdog.stop.set()
                    watchdog.join()
                if proc is not None:
                    kill_group(proc.pid)
                    _, status_word, rusage = os.wait4(proc.pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status_word)
                kernel_oom = cgroup is not None and cgroup.oom_killed()
                if cgroup is not None:
                    cgroup.remove()
        ended_at = time.monotonic()
        cpu_after, own_after = machine_cpu_jiffies(), _own_cpu_s()
        ru_maxrss_mb = rusage.ru_maxrss * 1024 / MIB  # Linux reports kB
        result = _reply(result_path)
    finally:
        if tmp is not None:
            with signals_held():
                shutil.rmtree(tmp, ignore_errors=True)

    outcome = ChildOutcome("ok", "", result, ru_maxrss_mb, ended_at - started, watchdog.timeline,
                           started, ended_at, watchdog.crossed_at,
                           cap_mode=None if cap_mb is None else CGROUP_MODE if cgroup else WATCHDOG_MODE)
    if cpu_before is not None and cpu_after is not None and ended_at > started:
        capacity_s = (ended_at - started) * (os.cpu_count() or 1)
        busy_s, steal_s = ((after - before) / os.sysconf("SC_CLK_TCK") for before, after in zip(cpu_before, cpu_after))
        outcome.cpu_steal_fraction = steal_s / capacity_s
        worker_s = rusage.ru_utime + rusage.ru_stime  # the child and the descendants it reaped
        outcome.foreign_cpu_fraction = max(0.0, busy_s - worker_s - (own_after - own_before)) / capacity_s
    if kernel_oom:
        outcome.status = "oom"
        outcome.reason = f"the kernel's OOM killer ended the worker at memory.max = {cap_mb:g} MiB (cgroup v2)"
    elif watchdog.verdict == "oom" and stop_at_budget:
        outcome.status = "over_budget"
        outcome.reason = f"stopped early: {watchdog.reason.replace('memory cap', 'peak_rss_mb budget')}"
        outcome.budget_verdict = {"budget": "peak_rss_mb", "limit": watch_mb,
                                  "value": max(r for _, r in watchdog.timeline)}
    elif watchdog.verdict is not None:
        outcome.status, outcome.reason = watchdog.verdict, watchdog.reason
    elif result is not None and result.get("over_budget"):
        outcome.status, outcome.reason, outcome.budget_verdict = "over_budget", result["error"], result["over_budget"]
    elif result is not None and not result["ok"]:
        outcome.status, outcome.reason = "error", result["error"]
    elif proc.returncode != 0 or result is None:
        outcome.status = "error"
        outcome.reason = f"worker {_describe_exit(proc.returncode)}; last output:\n{_tail(log_path)}"
    return outcome


def machine_cpu_jiffies() -> tuple[int, int] | None:
    """(busy, stolen) CPU time of the whole machine so far (/proc/stat), in clock ticks. Busy is user,
    nice, system, irq and softirq (guest time is inside user); idle, iowait and steal are not busy."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq, steal


def _own_cpu_s() -> float:
    """CPU seconds this process (the harness, with its sampler thread) has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _reply(path: Path) -> dict[str, Any] | None:
    """The worker's reply (harness.contract.WorkerReply), or None when it wrote none or a malformed one
    (the row is then an `error` with the worker's last output)."""
    if not path.is_file():
        return None
    try:
        return WorkerReply.model_validate_json(path.read_bytes()).model_dump()
    except ValidationError:
        return None


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
