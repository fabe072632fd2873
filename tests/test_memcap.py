"""The RSS sampler and the cgroup plumbing of the limits (a stand-in v2 directory, and the real kernel)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.measure import memcap

ALLOCATE_IN_GRANDCHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "x = bytearray(150 << 20); import time; time.sleep(30)"])
time.sleep(30)
"""


def test_tree_rss_counts_descendants() -> None:
    parent = subprocess.Popen([sys.executable, "-c", ALLOCATE_IN_GRANDCHILD], start_new_session=True)
    tree = memcap.ProcessTreeRss(parent.pid)
    try:
        deadline = time.monotonic() + 20
        while True:
            tree.refresh()
            rss_mb = tree.rss_bytes() / memcap.MIB
            if rss_mb > 150 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(tree.fds) == 2  # the child and the grandchild
        assert rss_mb > 150
        while tree.rss_and_anon_bytes()[1] / memcap.MIB <= 150 and time.monotonic() < deadline:
            time.sleep(0.1)  # RSS passed 150 MiB with the interpreters' pages: the bytearray follows
        assert tree.rss_and_anon_bytes()[1] / memcap.MIB > 150  # the bytearray is anonymous memory
    finally:
        memcap.kill_group(parent.pid)
        parent.wait()
        tree.close()


def test_cgroup_v2_protocol_limits_written_and_the_child_joins_before_exec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A plain directory stands in for a delegated cgroup v2 subtree: this checks the harness's side of
    # the protocol (files written, the child's own pid joined, the kernel's counters parsed); the real
    # kernel path is tests/test_limits.py.
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory\n")
    monkeypatch.setenv("HARNESS_CGROUP", str(tmp_path))
    memory, cpu = memcap.find_controller("memory"), memcap.find_controller("cpu")
    assert memory == memcap.Controller("memory", 2, tmp_path) and cpu is not None and cpu.mode == "cgroup-v2"
    group = memcap.RunCgroup.create("run-1", memory, 300, cpu, 250)
    assert (group.memory_dir / "memory.max").read_text() == f"{300 << 20}\n"
    assert group.cpu_dir == group.memory_dir and (group.cpu_dir / "cpu.max").read_text() == "25000 100000\n"
    assert group.quota.to_json() == {"quota_us": 25000, "period_us": 100000, "cores": 0.25, "mode": "cgroup-v2"}
    child = subprocess.run(group.wrap([sys.executable, "-c", "import os; print(os.getpid())"]),
                           capture_output=True, text=True, check=True)
    assert (group.memory_dir / "cgroup.procs").read_text().strip() == child.stdout.strip()
    assert group.oom_kills() == 0
    (group.memory_dir / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (group.memory_dir / "memory.peak").write_text(f"{300 << 20}\n")
    (group.cpu_dir / "cpu.stat").write_text("usage_usec 9\nnr_periods 40\nnr_throttled 31\nthrottled_usec 2500000\n")
    assert group.oom_kills() == 1 and group.at_limit() and group.peak_bytes() == 300 << 20
    assert group.cpu_throttling() == {"nr_periods": 40, "nr_throttled": 31, "throttled_s": 2.5}


def test_where_cgroups_can_be_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cgroup.subtree_control").write_text("cpu\n")
    assert not memcap.usable_cgroup(tmp_path)
    assert memcap.usable_cgroup(tmp_path, "cpu")
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory\n")
    assert memcap.usable_cgroup(tmp_path)
    monkeypatch.setenv("HARNESS_CGROUP", str(tmp_path))
    assert memcap.delegated_cgroup() == tmp_path
    monkeypatch.setenv("HARNESS_CGROUP", "off")  # the watchdog only
    assert memcap.find_controller("memory") is None and memcap.find_controller("cpu") is None


def real_memory_controller() -> memcap.Controller:
    found = memcap.find_controller("memory")
    if found is None:
        pytest.skip(f"no cgroup can be made here: needs {memcap.cgroup_requirement()}")
    return found


def test_kernel_oom_in_a_real_cgroup_and_nothing_left_behind() -> None:
    memory = real_memory_controller()
    before = sorted(p.name for p in memory.parent.iterdir() if p.is_dir())
    group = memcap.RunCgroup.create(f"harness-{os.getpid()}-unit", memory, 64)
    try:
        assert group.limit_bytes == 64 << 20
        sampler = group.memory_sampler()
        child = subprocess.run(group.wrap([sys.executable, "-c", "x = bytearray(200 << 20)"]), check=False)
        sampler.sample()
        sampler.close()
        assert child.returncode == -signal.SIGKILL
        assert group.oom_kills() == 1 and group.at_limit()
        assert 60 << 20 <= group.peak_bytes() <= 64 << 20
        # A process that left the worker's process group is still in the cgroup: removal kills it.
        escaped = subprocess.Popen(group.wrap([sys.executable, "-c", "import time; time.sleep(60)"]), start_new_session=True)
        deadline = time.monotonic() + 10
        while str(escaped.pid) not in (group.memory_dir / "cgroup.procs").read_text().split():
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        group.remove()
    assert escaped.wait(timeout=10) == -signal.SIGKILL
    assert {p.name for p in memory.parent.iterdir() if p.is_dir()} <= set(before)


def test_stale_cgroups_of_a_dead_harness_are_removed_and_busy_or_live_ones_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = real_memory_controller()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    stale = memory.parent / f"harness-{dead}-stale"
    live = memory.parent / f"harness-{os.getppid()}-live"  # a pid that is alive: another harness's cgroup
    stale.mkdir()
    live.mkdir()
    busy = memcap.RunCgroup.create(f"harness-{dead}-busy", memory, 64)
    sleeper = subprocess.Popen(busy.wrap([sys.executable, "-c", "import time; time.sleep(60)"]))
    try:
        deadline = time.monotonic() + 10
        while str(sleeper.pid) not in (busy.memory_dir / "cgroup.procs").read_text().split():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        monkeypatch.setattr(memcap, "STALE_AFTER_S", -1)
        memcap.remove_stale(memory.parent)
        assert not stale.exists(), "an empty cgroup of a dead harness is removed"
        assert live.exists() and busy.memory_dir.exists(), "a live harness's cgroup and a cgroup with a task stay"
    finally:
        sleeper.kill()
        sleeper.wait()
        busy.remove()
        for group in (stale, live):
            if group.exists():
                group.rmdir()
