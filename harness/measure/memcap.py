"""The worker's limits as a pod gets them, and the sampler behind its memory figures.

Kernel-enforced limits live in a per-run child cgroup that the worker joins before it execs:

- memory: `memory_cap_mb` is the cgroup's limit (v2 `memory.max`, v1 `memory.limit_in_bytes`), so the
  kernel reclaims clean page cache first and OOM-kills only when nothing more can be reclaimed, as it
  does to a container at `resources.limits.memory`. The verdict `oom` comes from the kernel: the
  cgroup's `oom_kill` counter (v2 `memory.events`, v1 `memory.oom_control`), or the worker killed by
  SIGKILL while the cgroup stood at its limit. Rows record the mode in `config.memory_cap_mode`:
  `cgroup-v2`, `cgroup-v1`, or `watchdog` where no cgroup can be made (a thread samples the RSS of the
  worker's process tree every 20 ms and SIGKILLs its process group past the cap; a spike shorter than
  one interval can slip through, and file-backed pages count that the kernel would have reclaimed).
- cpu: `cpu_limit` is a CFS quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us` per 100 ms `cpu.cfs_period_us`),
  what Kubernetes writes for `resources.limits.cpu`; the row records the quota read back from the
  kernel and the throttling `cpu.stat` reports.

Even without a cap the worker runs in a per-run memory cgroup without a limit where one can be made,
for the figures the kernel keeps per cgroup: the peak charge and the working set.

Where cgroups can be made: `HARNESS_CGROUP` names a cgroup v2 directory (`off` disables cgroups);
else a cgroup v2 directory with the controller in its `cgroup.subtree_control` that this user may
write (the harness's own cgroup when a subtree is delegated, or the hierarchy's root as root); else,
on cgroup v1, the harness's own cgroup in the controller's hierarchy (`/proc/self/cgroup`) when this
user may write it (root). Every cgroup made here is removed on every path (its tasks killed first);
one left by a harness that was SIGKILLed is removed by the next run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MIB = 1 << 20
SAMPLE_INTERVAL_S = 0.02
TREE_REFRESH_EVERY = 25  # samples between re-listing the child's descendants
WATCHDOG_MODE = "watchdog"
CGROUP_V1, CGROUP_V2 = "cgroup-v1", "cgroup-v2"
CFS_PERIOD_US = 100_000  # Kubernetes' CFS period: `250m` = 25 ms of CPU time per 100 ms
CGROUP_PREFIX = "harness-"
STALE_AFTER_S = 60  # a leftover cgroup of a dead harness is removed once it is this old
REMOVE_WAIT_S = 5.0


# ---------------------------------------------------------------------------------------------
# Where per-run cgroups can be made


@dataclass(frozen=True)
class Controller:
    """A place to make per-run cgroups for one controller (`memory` or `cpu`)."""

    name: str
    version: int  # 1 or 2
    parent: Path

    @property
    def mode(self) -> str:
        return CGROUP_V2 if self.version == 2 else CGROUP_V1


def _mounts() -> list[tuple[str, str, list[str]]]:
    """(mount point, file system type, options) of every cgroup mount."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[2] in ("cgroup", "cgroup2"):
            found.append((fields[1].replace("\\040", " "), fields[2], fields[3].split(",")))
    return found


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per v1 controller, and under "" its cgroup v2 path (/proc/self/cgroup)."""
    own: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return own
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    return own


def usable_cgroup(base: Path, controller: str = "memory") -> bool:
    """A cgroup v2 directory where children with `controller` can be made by this user."""
    try:
        controllers = (base / "cgroup.subtree_control").read_text().split()
    except OSError:
        return False
    return controller in controllers and os.access(base, os.W_OK)


def find_controller(name: str) -> Controller | None:
    """Where per-run cgroups with controller `name` (memory, cpu) can be made here, or None."""
    explicit = os.environ.get("HARNESS_CGROUP", "").strip()
    if explicit.lower() in ("off", "none", "0"):
        return None
    own = _own_cgroups()
    mounts = _mounts()
    candidates = [Path(explicit)] if explicit else []
    if not explicit:
        for point, kind, _ in mounts:
            if kind == "cgroup2" and "" in own:
                candidates += [Path(point) / own[""].lstrip("/"), Path(point)]  # delegated subtree, then root
    for base in candidates:
        if usable_cgroup(base, name):
            return Controller(name, 2, base)
    if explicit:
        return None
    probe = {"memory": "memory.limit_in_bytes", "cpu": "cpu.cfs_quota_us"}[name]
    for point, kind, options in mounts:
        if kind == "cgroup" and name in options and name in own:
            base = Path(point) / own[name].lstrip("/")
            if (base / probe).exists() and os.access(base, os.W_OK):
                return Controller(name, 1, base)
    return None


def delegated_cgroup() -> Path | None:
    """The directory where per-run memory cgroups are made (cgroup v2 or v1), or None."""
    found = find_controller("memory")
    return found.parent if found else None


def cgroup_requirement() -> str:
    """What a user must provide for kernel-enforced limits (for messages)."""
    return ("a cgroup the harness may create children in: run as root (cgroup v1 or v2), or inside a delegated "
            "cgroup v2 subtree with the memory and cpu controllers enabled for children, e.g. "
            "`systemd-run --user --scope -p Delegate=yes ...` (then point HARNESS_CGROUP at a child directory "
            "of the scope whose cgroup.subtree_control lists memory and cpu)")


# ---------------------------------------------------------------------------------------------
# One worker's cgroups


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _keyed(text: str | None) -> dict[str, int]:
    """`key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control) -> {key: value}."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


@dataclass
class CpuQuota:
    """A CFS quota as the kernel holds it."""

    quota_us: int
    period_us: int
    mode: str

    @property
    def cores(self) -> float:
        return self.quota_us / self.period_us

    def to_json(self) -> dict[str, object]:
        return {"quota_us": self.quota_us, "period_us": self.period_us, "cores": round(self.cores, 4),
                "mode": self.mode}


@dataclass
class RunCgroup:
    """The cgroup(s) one worker runs in: memory (a limit when capped; none, just for the figures,
    otherwise) and cpu (a CFS quota when a CPU limit is set). Made by `create`; `remove` kills every
    task left in them and removes them (idempotent)."""

    name: str
    memory: Controller | None = None
    cpu: Controller | None = None
    memory_dir: Path | None = None
    cpu_dir: Path | None = None
    limit_bytes: int | None = None
    quota: CpuQuota | None = None
    created: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, name: str, memory: Controller | None, cap_mb: float | None,
               cpu: Controller | None = None, cpu_millis: int | None = None) -> RunCgroup:
        group = cls(name, memory, cpu if cpu_millis is not None else None)
        try:
            if memory is not None:
                remove_stale(memory.parent)
                group.memory_dir = group._make(memory.parent)
                if cap_mb is not None:
                    group._limit_memory(int(cap_mb * MIB))
            if group.cpu is not None and cpu_millis is not None:
                if group.memory_dir is not None and memory is not None and memory.version == 2 \
                        and cpu is not None and cpu.version == 2 and cpu.parent == memory.parent:
                    group.cpu_dir = group.memory_dir  # cgroup v2: one directory holds every controller
                else:
                    remove_stale(group.cpu.parent)
                    group.cpu_dir = group._make(group.cpu.parent)
                group._limit_cpu(cpu_millis)
        except BaseException:
            group.remove()
            raise
        return group

    def _make(self, parent: Path) -> Path:
        path = parent / self.name
        path.mkdir()
        self.created.append(path)
        return path

    @property
    def memory_mode(self) -> str | None:
        return self.memory.mode if self.memory is not None and self.memory_dir is not None else None

    def _limit_memory(self, limit: int) -> None:
        assert self.memory is not None and self.memory_dir is not None
        if self.memory.version == 2:
            (self.memory_dir / "memory.max").write_text(f"{limit}\n")
            swap = self.memory_dir / "memory.swap.max"
            if swap.exists():
                swap.write_text("0\n")  # a cap that swaps instead of failing measures nothing
            self.limit_bytes = int((_read(self.memory_dir / "memory.max") or str(limit)).split()[0])
        else:
            (self.memory_dir / "memory.limit_in_bytes").write_text(f"{limit}\n")
            swap = self.memory_dir / "memory.memsw.limit_in_bytes"  # present with swap accounting
            if swap.exists():
                with contextlib.suppress(OSError):
                    swap.write_text(f"{limit}\n")
            self.limit_bytes = int(_read(self.memory_dir / "memory.limit_in_bytes") or limit)

    def _limit_cpu(self, millis: int) -> None:
        assert self.cpu is not None and self.cpu_dir is not None
        quota = millis * CFS_PERIOD_US // 1000
        if self.cpu.version == 2:
            (self.cpu_dir / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}\n")
            written_quota, written_period = (_read(self.cpu_dir / "cpu.max") or "").split()
            self.quota = CpuQuota(int(written_quota), int(written_period), CGROUP_V2)
        else:
            (self.cpu_dir / "cpu.cfs_period_us").write_text(f"{CFS_PERIOD_US}\n")
            (self.cpu_dir / "cpu.cfs_quota_us").write_text(f"{quota}\n")
            self.quota = CpuQuota(int(_read(self.cpu_dir / "cpu.cfs_quota_us") or quota),
                                  int(_read(self.cpu_dir / "cpu.cfs_period_us") or CFS_PERIOD_US), CGROUP_V1)

    def wrap(self, argv: list[str]) -> list[str]:
        """Join every cgroup from a shell that then execs the child: no allocation and no CPU time of
        the worker escapes its limits."""
        joins = [d / "cgroup.procs" for d in dict.fromkeys(p for p in (self.memory_dir, self.cpu_dir) if p)]
        if not joins:
            return argv
        script = " && ".join([*(f"echo $$ > {shlex.quote(str(j))}" for j in joins), 'exec "$@"'])
        return ["/bin/sh", "-c", script, "harness-join", *argv]

    # --- what the kernel says about the run (read before `remove`)

    def _memory_file(self, v2: str, v1: str) -> Path | None:
        if self.memory_dir is None or self.memory is None:
            return None
        return self.memory_dir / (v2 if self.memory.version == 2 else v1)

    def oom_kills(self) -> int:
        """How many processes of the cgroup the kernel's OOM killer ended."""
        path = self._memory_file("memory.events", "memory.oom_control")
        return _keyed(_read(path)).get("oom_kill", 0) if path else 0

    def peak_bytes(self) -> int | None:
        """The cgroup's own high-water mark of charged memory (v2 `memory.peak`, kernel 5.19 and later;
        v1 `memory.max_usage_in_bytes`)."""
        path = self._memory_file("memory.peak", "memory.max_usage_in_bytes")
        text = _read(path) if path else None
        try:
            return int(text.split()[0]) if text else None
        except ValueError:
            return None

    def at_limit(self) -> bool:
        """Whether the cgroup's charge reached its limit during the run (the kernel had to reclaim)."""
        if self.limit_bytes is None:
            return False
        if self.memory is not None and self.memory.version == 2:
            events = _keyed(_read(self.memory_dir / "memory.events")) if self.memory_dir else {}
            return events.get("max", 0) > 0 or events.get("oom", 0) > 0
        peak = self.peak_bytes()
        return peak is not None and peak >= self.limit_bytes - 2 * MIB

    def refault_bytes(self) -> int | None:
        """File pages the kernel reclaimed from the cgroup and then had to read back in (memory.stat
        `workingset_refault_file`, kernel 5.9 and later): the mark of a limit that thrashes the page cache."""
        path = self._memory_file("memory.stat", "memory.stat")
        if path is None:
            return None
        stat = _keyed(_read(path))
        key = "workingset_refault_file" if self.memory is not None and self.memory.version == 2 else "total_workingset_refault_file"
        return stat[key] * os.sysconf("SC_PAGE_SIZE") if key in stat else None

    def cpu_throttling(self) -> dict[str, float] | None:
        """Throttling the kernel reported while the worker ran: periods, throttled periods, seconds."""
        if self.cpu_dir is None or self.cpu is None:
            return None
        stat = _keyed(_read(self.cpu_dir / "cpu.stat"))
        seconds = stat.get("throttled_usec", 0) / 1e6 if self.cpu.version == 2 else stat.get("throttled_time", 0) / 1e9
        return {"nr_periods": stat.get("nr_periods", 0), "nr_throttled": stat.get("nr_throttled", 0),
                "throttled_s": round(seconds, 4)}

    def memory_sampler(self) -> CgroupMemory | None:
        if self.memory_dir is None or self.memory is None:
            return None
        return CgroupMemory(self.memory_dir, self.memory.version)

    # --- removal

    def remove(self) -> None:
        """Kill every task left in the cgroups (a descendant that left the worker's process group
        included), then remove them. Safe to call again."""
        while self.created:
            path = self.created[-1]
            kill_cgroup_tasks(path)
            _rmdir(path)
            self.created.pop()


def kill_cgroup_tasks(path: Path, wait_s: float = REMOVE_WAIT_S) -> None:
    """SIGKILL every process in the cgroup `path` and wait (briefly) until it is empty."""
    kill = path / "cgroup.kill"  # cgroup v2, kernel 5.14 and later: the whole subtree at once
    deadline = time.monotonic() + wait_s
    while True:
        pids = [int(p) for p in (_read(path / "cgroup.procs") or "").split()]
        if not pids:
            return
        if kill.exists():
            with contextlib.suppress(OSError):
                kill.write_text("1\n")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _rmdir(path: Path, wait_s: float = REMOVE_WAIT_S) -> None:
    """rmdir a cgroup; a task that is still exiting keeps it busy for a moment."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            kill_cgroup_tasks(path, 0.1)
            time.sleep(0.01)


def remove_stale(parent: Path) -> None:
    """Remove the empty cgroups a SIGKILLed harness left under `parent`: named `harness-<pid>-...`,
    that pid gone, older than STALE_AFTER_S. A cgroup that still holds a task is left alone."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        m = re.match(rf"{CGROUP_PREFIX}(\d+)-", entry.name)
        if not m or not entry.is_dir(follow_symlinks=False) or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # that harness is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            old = time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
        except OSError:
            continue
        procs = _read(Path(entry.path) / "cgroup.procs")  # '' when empty, None when unreadable
        if old and procs is not None and not procs.split():
            with contextlib.suppress(OSError):
                os.rmdir(entry.path)


# ---------------------------------------------------------------------------------------------
# Sampling


def _stat_value(stat: bytes, key: bytes) -> int | None:
    """The value of `key` in memory.stat's text (given with a leading newline)."""
    at = stat.find(b"\n" + key + b" ")
    if at == -1:
        return None
    start = at + len(key) + 2
    end = stat.find(b"\n", start)
    try:
        return int(stat[start:] if end == -1 else stat[start:end])
    except ValueError:
        return None


class CgroupMemory:
    """The cgroup's charge and working set, cheap enough to read 50 times a second (files kept open,
    re-read with pread: ~12 us a sample). Working set as the kubelet (cAdvisor) computes it: usage minus
    inactive file pages, floored at 0."""

    def __init__(self, path: Path, version: int) -> None:
        usage, self.inactive_key = (("memory.current", b"inactive_file") if version == 2
                                    else ("memory.usage_in_bytes", b"total_inactive_file"))
        self.refault_key = b"workingset_refault_file" if version == 2 else b"total_workingset_refault_file"
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self.refaults: list[tuple[float, int]] = []  # (monotonic s, bytes refaulted so far), at each change
        self.usage_fd = os.open(path / usage, os.O_RDONLY)
        self.stat_fd = os.open(path / "memory.stat", os.O_RDONLY)
        self.max_usage = 0
        self.max_working_set = 0

    def sample(self, now: float | None = None) -> None:
        try:
            usage = int(os.pread(self.usage_fd, 64, 0))
            stat = b"\n" + os.pread(self.stat_fd, 16384, 0)
        except (OSError, ValueError):
            return
        inactive = _stat_value(stat, self.inactive_key) or 0
        self.max_usage = max(self.max_usage, usage)
        self.max_working_set = max(self.max_working_set, max(0, usage - inactive))
        refaulted = _stat_value(stat, self.refault_key)
        if refaulted is not None and (not self.refaults or self.refaults[-1][1] != refaulted * self.page_size):
            self.refaults.append((time.monotonic() if now is None else now, refaulted * self.page_size))

    def close(self) -> None:
        for fd in (self.usage_fd, self.stat_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Watchdog(threading.Thread):
    """Samples the child tree's RSS and anonymous RSS (and its cgroup's charge and working set, when it
    runs in one); enforces the watchdog memory cap and the deadline."""

    def __init__(self, pid: int, cap_mb: float | None, timeout_s: float,
                 cgroup_memory: CgroupMemory | None = None) -> None:
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
        self.peak_anon_bytes = 0
        self.cgroup_memory = cgroup_memory

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
                rss, anon = tree.rss_and_anon_bytes()
                self.timeline.append((now, rss / MIB))
                self.peak_anon_bytes = max(self.peak_anon_bytes, anon)
                if self.cgroup_memory is not None:
                    self.cgroup_memory.sample(now)
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
    `refresh()` from /proc/PID/task/*/children (psutil's full /proc scan where that is missing).

    statm's second field is resident pages, its third the resident file-backed and shared-memory pages
    (RssFile + RssShmem), so their difference is RssAnon: the anonymous memory nothing can reclaim
    without swap (proc(5); the kernel's task_statm)."""

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

    def rss_and_anon_bytes(self) -> tuple[int, int]:
        rss = anon = 0
        for fd in self.fds.values():
            try:
                fields = os.pread(fd, 256, 0).split()
                resident, shared = int(fields[1]), int(fields[2])
            except (OSError, IndexError, ValueError):  # exited since the last refresh
                continue
            rss += resident
            anon += resident - shared
        return rss * self.page_size, anon * self.page_size

    def rss_bytes(self) -> int:
        return self.rss_and_anon_bytes()[0]

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
