"""Memory caps on a child's RSS, and the sampler behind the memory timeline.

RLIMIT_AS is not a memory cap (CTranslate2, OpenMP and PyTorch reserve large virtual ranges that
are never touched), so the cap applies to resident memory, in one of two modes:

- `watchdog` (always): a thread samples the RSS of the child's process tree every 20 ms and kills the
  whole process group with SIGKILL when it passes the cap, like a Kubernetes OOMKill. A spike shorter
  than one sampling interval can slip through.
- `cgroup-v2` (where a cgroup v2 subtree with the memory controller is delegated to this user): the
  child starts inside its own cgroup with `memory.max` = the cap, so the kernel enforces it exactly;
  the watchdog still samples for the timeline. Used when `HARNESS_CGROUP` names such a directory, or
  the harness's own cgroup has `memory` in its `cgroup.subtree_control` and is writable.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil

MIB = 1 << 20
SAMPLE_INTERVAL_S = 0.02
TREE_REFRESH_EVERY = 25  # samples between re-listing the child's descendants
WATCHDOG_MODE = "watchdog (process-tree RSS sampled every 20 ms, group SIGKILL)"
CGROUP_MODE = "cgroup-v2 memory.max (kernel) + watchdog"


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




class CgroupCap:
    """A per-run cgroup v2 directory with `memory.max` set; the child joins it before it execs."""

    def __init__(self, parent: Path, name: str, cap_mb: float) -> None:
        self.path = parent / name
        self.path.mkdir()
        (self.path / "memory.max").write_text(f"{int(cap_mb * MIB)}\n")
        swap = self.path / "memory.swap.max"
        if swap.exists():
            swap.write_text("0\n")  # a cap that swaps instead of failing measures nothing

    def wrap(self, argv: list[str]) -> list[str]:
        """Join the cgroup from a shell that then execs the child: no allocation escapes the cap."""
        return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path), *argv]

    def oom_killed(self) -> bool:
        try:
            events = (self.path / "memory.events").read_text().split()
        except OSError:
            return False
        counts = dict(zip(events[::2], events[1::2]))
        return int(counts.get("oom_kill", 0)) > 0

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


def delegated_cgroup() -> Path | None:
    """A cgroup v2 directory where per-run children with memory.max can be made, or None."""
    explicit = os.environ.get("HARNESS_CGROUP")
    candidates = [Path(explicit)] if explicit else []
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        own = next(line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
    except (OSError, StopIteration):
        own = None
        mounts = []
    for line in mounts:
        fields = line.split()
        if own is not None and len(fields) > 2 and fields[2] == "cgroup2":
            candidates.append(Path(fields[1]) / own.lstrip("/"))
    for base in candidates:
        if usable_cgroup(base):
            return base
    return None


def usable_cgroup(base: Path) -> bool:
    try:
        controllers = (base / "cgroup.subtree_control").read_text().split()
    except OSError:
        return False
    return "memory" in controllers and os.access(base, os.W_OK)
