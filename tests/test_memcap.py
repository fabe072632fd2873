"""The RSS sampler and the cgroup v2 plumbing of the memory cap."""

from __future__ import annotations

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
    finally:
        memcap.kill_group(parent.pid)
        parent.wait()
        tree.close()


def test_cgroup_cap_writes_limits_and_the_child_joins_before_exec(tmp_path: Path) -> None:
    # A plain directory stands in for a delegated cgroup: this checks the harness's side of the
    # protocol (files written, the child's own pid joined); the kernel enforces memory.max.
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory\n")
    cap = memcap.CgroupCap(tmp_path, "run-1", 300)
    assert (cap.path / "memory.max").read_text() == f"{300 << 20}\n"
    child = subprocess.run(cap.wrap([sys.executable, "-c", "import os; print(os.getpid())"]),
                           capture_output=True, text=True, check=True)
    assert (cap.path / "cgroup.procs").read_text().strip() == child.stdout.strip()
    assert not cap.oom_killed()
    (cap.path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cap.oom_killed()


def test_delegated_cgroup_needs_the_memory_controller_and_write_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cgroup.subtree_control").write_text("cpu\n")
    assert not memcap.usable_cgroup(tmp_path)
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory\n")
    assert memcap.usable_cgroup(tmp_path)
    monkeypatch.setenv("HARNESS_CGROUP", str(tmp_path))
    assert memcap.delegated_cgroup() == tmp_path
