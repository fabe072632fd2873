"""One configuration in one fresh, isolated subprocess: spawn, watch, cap, time out, kill, reap.

The child runs in its own cgroup where one can be made (harness.measure.memcap): the kernel enforces
the memory cap and the CPU limit there and keeps the figures a pod is judged by. The parent blocks in
`os.waitid` / `os.wait4` (the latter also yields the child's kernel peak RSS) while a watchdog thread
samples the child tree's RSS (and the cgroup's working set), enforces the deadline (verdict `timeout`)
and, where no cgroup can be made, the memory cap (verdict `oom`). Every path, Ctrl-C, SIGTERM and
SIGHUP included, ends with the child's process group killed, the child reaped, its cgroup emptied and
removed and its temp folder removed.
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
from harness.measure.memcap import (
    CGROUP_PREFIX,
    CGROUP_V2,
    MIB,
    WATCHDOG_MODE,
    RunCgroup,
    Watchdog,
    cgroup_requirement,
    find_controller,
    kill_group,
)

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
    notes: list[str] = field(default_factory=list)  # for the row's warnings
    # The memory figures Kubernetes sees (MiB): the largest anonymous RSS of the tree (sampled), and,
    # when the worker ran in its own cgroup, the cgroup's peak charge (kernel) and its largest working
    # set (usage - inactive file pages, sampled), with the cgroup version that gave them.
    peak_anon_mb: float | None = None
    cgroup_peak_mb: float | None = None
    working_set_peak_mb: float | None = None
    cgroup_mode: str | None = None
    memory_limit_mb: float | None = None  # the kernel's limit as it holds it (page-rounded)
    refault_mb: float | None = None  # file pages reclaimed and read back in while it ran (thrashing)
    refault_timeline: list[tuple[float, int]] = field(default_factory=list)  # (monotonic s, bytes so far)
    oom_verdict: dict[str, Any] | None = None  # status oom: who decided (kernel or watchdog) and on what
    cpu_quota: dict[str, Any] | None = None  # the CFS quota read back from the kernel
    cpu_throttling: dict[str, float] | None = None  # nr_periods, nr_throttled, throttled_s while it ran
    page_cache_eviction: dict[str, float] | None = None  # page_cache cold: files, MiB, seconds (set by the node)


class CgroupUnavailable(RuntimeError):
    """A limit that only a cgroup can enforce (cpu_limit), where none can be made."""


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
              memory_budget_mb: float | None = None, command: list[str] | None = None,
              cpu_millis: int | None = None) -> ChildOutcome:
    """Run the worker on `job`; return what happened. Never leaves the child, or a cgroup, behind.

    `memory_budget_mb` (budget-aware search) stops the run like a cap, with the verdict `over_budget`.
    `command` starts the worker another way (under a profiler: harness.profile); the job and result
    paths are appended to it. `cpu_millis` is a CPU limit (Kubernetes millicores), enforced with a CFS
    quota; it needs a cgroup with the cpu controller (CgroupUnavailable otherwise).
    """
    threads = job["spec"]["threads"]
    memory = find_controller("memory")
    cpu = find_controller("cpu") if cpu_millis is not None else None
    if cpu_millis is not None and cpu is None:
        raise CgroupUnavailable(f"cpu_limit needs {cgroup_requirement()}")
    stop_at_budget = memory_budget_mb is not None and (cap_mb is None or memory_budget_mb < cap_mb)
    tmp = proc = watchdog = cgroup = None
    notes: list[str] = []
    try:
        with signals_held():  # each resource is made inside the `try` whose `finally` removes it
            tmp = Path(tempfile.mkdtemp(prefix="harness-job-"))
        job_path, result_path = tmp / "job.json", tmp / "result.json"
        job_path.write_text(json.dumps({**job, "parent_pid": os.getpid()}), encoding="utf-8")
        argv = [*(command or [sys.executable, "-m", "harness.child.worker"]), str(job_path), str(result_path)]
        if memory is not None or cpu is not None:
            try:
                with signals_held():
                    cgroup = RunCgroup.create(f"{CGROUP_PREFIX}{os.getpid()}-{tmp.name}", memory, cap_mb, cpu, cpu_millis)
            except OSError as exc:
                if cpu_millis is not None:
                    raise CgroupUnavailable(f"cannot make the cgroup that enforces cpu_limit: {exc}") from None
                notes.append(f"could not make a cgroup for the worker ({exc}): "
                             + ("the memory cap was enforced by the watchdog" if cap_mb is not None
                                else "no cgroup figures (cgroup_peak_mb, working_set_peak_mb)"))
        kernel_caps = cgroup is not None and cgroup.limit_bytes is not None
        # The watchdog enforces the cap only where the kernel cannot (and a budget below the cap).
        watch_mb = memory_budget_mb if stop_at_budget else None if kernel_caps else cap_mb
        log_path.parent.mkdir(parents=True, exist_ok=True)
        sampler = cgroup.memory_sampler() if cgroup is not None else None
        try:
            with signals_held(), open(log_path, "wb") as log:
                cpu_before, own_before = machine_cpu_jiffies(), _own_cpu_s()
                started = time.monotonic()
                proc = subprocess.Popen(
                    cgroup.wrap(argv) if cgroup else argv,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=child_environment(threads), start_new_session=True, close_fds=True,
                )
            watchdog = Watchdog(proc.pid, watch_mb, timeout_s, sampler)
            watchdog.start()
            # Wait without reaping: while the child is a zombie its process group id cannot be
            # reused, so killing the group below can only hit the child's own descendants.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        finally:  # also on Ctrl-C / SIGTERM / SIGHUP: stop sampling, kill the group, reap
            with signals_held():
                if watchdog is not None:
                    watchdog.stop.set()
                    watchdog.join()
                if sampler is not None:
                    sampler.close()
                if proc is not None:
                    kill_group(proc.pid)
                    _, status_word, rusage = os.wait4(proc.pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status_word)
                if cgroup is not None:  # what the kernel kept about the run, read before removal
                    oom_kills, at_limit = cgroup.oom_kills(), cgroup.at_limit()
                    cgroup_peak, throttling = cgroup.peak_bytes(), cgroup.cpu_throttling()
                    refaults = cgroup.refault_bytes()
                    cgroup.remove()
        ended_at = time.monotonic()
        cpu_after, own_after = machine_cpu_jiffies(), _own_cpu_s()
        ru_maxrss_mb = rusage.ru_maxrss * 1024 / MIB  # Linux reports kB
        result = _reply(result_path)
    finally:
        with signals_held():
            if cgroup is not None:
                cgroup.remove()  # idempotent: here for the paths that never reached the worker
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    cap_mode = None if cap_mb is None else cgroup.memory_mode if kernel_caps else WATCHDOG_MODE
    outcome = ChildOutcome("ok", "", result, ru_maxrss_mb, ended_at - started, watchdog.timeline,
                           started, ended_at, watchdog.crossed_at, cap_mode=cap_mode, notes=notes)
    outcome.peak_anon_mb = watchdog.peak_anon_bytes / MIB if watchdog.timeline else None
    if cgroup is not None and cgroup.memory_mode is not None:
        outcome.cgroup_mode = cgroup.memory_mode
        sampled_peak = sampler.max_usage if sampler is not None else 0
        peak = cgroup_peak if cgroup_peak is not None else sampled_peak or None
        outcome.cgroup_peak_mb = None if peak is None else peak / MIB
        outcome.working_set_peak_mb = sampler.max_working_set / MIB if sampler is not None and sampler.max_usage else None
        outcome.memory_limit_mb = None if cgroup.limit_bytes is None else cgroup.limit_bytes / MIB
        outcome.refault_mb = None if refaults is None else refaults / MIB
        outcome.refault_timeline = sampler.refaults if sampler is not None else []
    if cgroup is not None and cgroup.quota is not None:
        outcome.cpu_quota = cgroup.quota.to_json()
        outcome.cpu_throttling = throttling
    if cpu_before is not None and cpu_after is not None and ended_at > started:
        capacity_s = (ended_at - started) * (os.cpu_count() or 1)
        busy_s, steal_s = ((after - before) / os.sysconf("SC_CLK_TCK") for before, after in zip(cpu_before, cpu_after))
        outcome.cpu_steal_fraction = steal_s / capacity_s
        worker_s = rusage.ru_utime + rusage.ru_stime  # the child and the descendants it reaped
        outcome.foreign_cpu_fraction = max(0.0, busy_s - worker_s - (own_after - own_before)) / capacity_s
    killed_at_limit = proc.returncode == -signal.SIGKILL and watchdog.verdict is None and at_limit if kernel_caps else False
    if kernel_caps and (oom_kills or killed_at_limit):
        limit_file = "memory.max" if cgroup.memory_mode == CGROUP_V2 else "memory.limit_in_bytes"
        evidence = (f"oom_kill = {oom_kills}" if oom_kills
                    else "the worker was killed by SIGKILL while the cgroup was at its limit")
        outcome.status = "oom"
        outcome.reason = (f"the kernel's OOM killer ended the worker at the memory cap {cap_mb:g} MiB "
                          f"({cgroup.memory_mode} {limit_file}; {evidence})")
        outcome.oom_verdict = {"source": "kernel", "mode": cgroup.memory_mode, "oom_kill": oom_kills,
                               "limit_mb": round(cgroup.limit_bytes / MIB, 1)}
    elif watchdog.verdict == "oom" and stop_at_budget:
        outcome.status = "over_budget"
        outcome.reason = f"stopped early: {watchdog.reason.replace('memory cap', 'peak_rss_mb budget')}"
        outcome.budget_verdict = {"budget": "peak_rss_mb", "limit": watch_mb,
                                  "value": max(r for _, r in watchdog.timeline)}
    elif watchdog.verdict is not None:
        outcome.status, outcome.reason = watchdog.verdict, watchdog.reason
        if watchdog.verdict == "oom":
            outcome.oom_verdict = {"source": "watchdog", "mode": WATCHDOG_MODE, "limit_mb": cap_mb}
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
