"""The Ray executor on a real Ray cluster on this machine (ray.cluster_utils.Cluster): a head that does not
measure and two nodes with one `harness_slot` and one CPU each, each node's processes on their own core
(two one-core machines, as far as one 2-core machine can pretend). Sweeps run through the real CLI.

One cluster serves the module; the test that removes a node runs last."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REAL_DEV, SESSION_MARK, read_rows, run_cli, start_cli, worker_processes, write_scenario

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

CLIP = "en_deepspeech_ldc93s1"  # 2.9 s of real speech
SCENARIO = """
name: ray
datasets: [{manifest}]
languages: [en]
repeats: 1
timeout_s: 300
matrix: {{model: [tiny.en], quantization: [int8], threads: [1], beam_size: {beams}}}
"""
ACTIVE = ("RUNNING", "PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "PENDING_OBJ_STORE_MEM_AVAIL",
          "PENDING_ARGS_FETCH", "SUBMITTED_TO_WORKER")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    if not (REAL_DEV / "manifest.jsonl").is_file():
        pytest.skip(f"real speech not available ({REAL_DEV} is absent)")
    cpus = sorted(os.sched_getaffinity(0))
    # The nodes' processes (and so the Ray workers and the harness workers they start) carry this test
    # session's mark, run offline, and each node runs on its own CPU.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HARNESS_TEST_SESSION", SESSION_MARK)
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        c = cluster_utils.Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "resources": {"harness_slot": 0}, "object_store_memory": 80 << 20,
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 5}})
        try:
            for i in range(2):
                os.sched_setaffinity(0, {cpus[i % len(cpus)]})
                try:
                    c.add_node(num_cpus=1, resources={"harness_slot": 1}, object_store_memory=80 << 20)
                finally:
                    os.sched_setaffinity(0, cpus)
            c.wait_for_nodes()
            yield c
        finally:
            c.shutdown()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short clip of real-dev, in a manifest of this module's own."""
    entries = {json.loads(line)["id"]: json.loads(line) for line in (REAL_DEV / "manifest.jsonl").read_text().splitlines()}
    folder = tmp_path_factory.mktemp("data")
    (folder / "audio").mkdir()
    entry = entries[CLIP]
    shutil.copyfile(REAL_DEV / entry["audio"], folder / "audio" / Path(entry["audio"]).name)
    path = folder / "manifest.jsonl"
    path.write_text(json.dumps({"id": CLIP, "lang": "en", "audio": f"audio/{Path(entry['audio']).name}",
                                "text": entry["text"]}) + "\n")
    return path


def scenario(tmp_path: Path, manifest: Path, beams: list[int]) -> Path:
    return write_scenario(tmp_path / "ray.yaml", SCENARIO.format(manifest=manifest, beams=beams))


def node_ids(cluster: Any) -> set[str]:
    return {n.node_id for n in cluster.worker_nodes}


def active_tasks(cluster: Any) -> list[Any]:
    """Harness tasks Ray still counts as running or waiting to run."""
    from ray.util.state import list_tasks

    return [t for t in list_tasks(address=cluster.address, limit=10_000, raise_on_missing_output=False)
            if t.name.startswith("harness") and t.state in ACTIVE]


def wait_until_no_active_tasks(cluster: Any, timeout: float = 60) -> None:
    """Task states reach the state API with a delay (a task of a driver that died is marked failed later)."""
    deadline = time.monotonic() + timeout
    while (left := active_tasks(cluster)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, [(t.name, t.state) for t in left]


def wait_for(condition: Any, proc: subprocess.Popen[str], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def saved(run_dir: Path) -> int:
    results = run_dir / "results.jsonl"
    return results.read_text().count("\n") if results.exists() else 0


def harness_cgroups() -> set[str]:
    from harness.measure.memcap import CGROUP_PREFIX, find_controller

    found = find_controller("memory")
    return {p.name for p in found.parent.glob(f"{CGROUP_PREFIX}*")} if found else set()


def test_rows_equal_the_local_executors_and_name_their_node(tmp_path: Path, cluster: Any, manifest: Path) -> None:
    path = scenario(tmp_path, manifest, [1, 5])
    local = run_cli("run", str(path), "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    remote = run_cli("run", str(path), "--executor", "ray", "--address", cluster.address, "--out", str(tmp_path / "ray"))
    assert remote.returncode == 0, remote.stderr
    by_local = {r["run_id"]: r for r in read_rows(tmp_path / "local")}
    rows = read_rows(tmp_path / "ray")
    assert sorted(r["run_id"] for r in rows) == sorted(by_local)

    def config(row: dict[str, Any]) -> dict[str, Any]:  # each node runs on its own CPU: pinning differs
        return {**row["config"], "cpu_pinning": row["config"]["cpu_pinning"]["requested"]}

    for row in rows:
        mine = by_local[row["run_id"]]
        assert row["status"] == mine["status"] == "ok", row["reason"]
        assert row["metrics"]["languages"]["en"]["wer"] == mine["metrics"]["languages"]["en"]["wer"]
        assert [s["hypothesis"] for s in row["samples"]] == [s["hypothesis"] for s in mine["samples"]]
        assert config(row) == config(mine)
        assert set(row["config"]["threads_effective"].values()) == {1}  # OpenMP and BLAS pools of one thread
        assert abs(row["metrics"]["peak_rss_mb"] / mine["metrics"]["peak_rss_mb"] - 1) < 0.15
        node = row["node"]
        assert node["executor"] == "ray" and node["host"] == socket.gethostname()
        assert node["machine_class"] == mine["node"]["machine_class"]
        timing = node["ray_timing"]
        assert timing["submitted_at"] <= timing["task_started_at"] <= timing["worker_started_at"] <= timing["row_built_at"]
        assert (tmp_path / "ray" / "logs" / f"{row['run_id']}.log").is_file()
    # One slot per node: the two configurations ran at once, one on each node.
    assert {r["node"]["ray_node_id"] for r in rows} == node_ids(cluster)
    env = json.loads((tmp_path / "ray" / "environment.json").read_text())
    assert {n["ray_node_id"] for n in env["ray"]["nodes"]} == node_ids(cluster) and env["ray"]["slots"] == 2
    # Ray sets OMP_NUM_THREADS in its task processes; the worker gets the configuration's own from the runner.
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        @ray.remote(num_cpus=0, resources={"harness_slot": 1})
        def thread_settings() -> tuple[str | None, dict[str, str]]:
            from harness.measure.runner import THREAD_ENV_VARS, child_environment

            env = child_environment(3)
            return os.environ.get("OMP_NUM_THREADS"), {var: env[var] for var in THREAD_ENV_VARS}

        ray_omp, worker_env = ray.get(thread_settings.remote())
    finally:
        ray.shutdown()
    assert ray_omp == "1"
    assert set(worker_env.values()) == {"3"}


def test_ctrl_c_cancels_every_task_and_leaves_nothing_running(tmp_path: Path, cluster: Any, manifest: Path) -> None:
    cgroups_before = harness_cgroups()
    run_dir = tmp_path / "run"
    proc = start_cli("run", str(scenario(tmp_path, manifest, [1, 5, 2])), "--executor", "ray",
                     "--address", cluster.address, "--out", str(run_dir))
    wait_for(lambda: len(worker_processes()) == 2, proc, "a worker on each node")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted by SIGINT" in stderr and "Traceback" not in stderr
    # The driver returns only once the tasks have stopped their workers and removed their cgroups.
    assert not worker_processes()
    assert harness_cgroups() <= cgroups_before
    wait_until_no_active_tasks(cluster)


def test_resume_after_the_driver_was_killed(tmp_path: Path, cluster: Any, manifest: Path) -> None:
    path = scenario(tmp_path, manifest, [1, 5, 2])
    run_dir = tmp_path / "run"
    proc = start_cli("run", str(path), "--executor", "ray", "--address", cluster.address, "--out", str(run_dir))
    wait_for(lambda: saved(run_dir) >= 1 and worker_processes(), proc, "a saved row and a running worker")
    proc.kill()  # no clean-up can run: Ray ends the dead driver's tasks, and their workers die with them
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 60
    while worker_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not worker_processes()
    wait_until_no_active_tasks(cluster)

    result = run_cli("run", str(path), "--resume", str(run_dir), "--executor", "ray", "--address", cluster.address)
    assert result.returncode == 0, result.stderr
    rows = read_rows(run_dir)
    assert len(rows) == 3 == len({r["run_id"] for r in rows})
    assert all(r["status"] == "ok" and r["node"]["executor"] == "ray" for r in rows), [r["reason"] for r in rows]


def test_the_display_shows_nodes_and_tasks_and_profiles_come_back(tmp_path: Path, cluster: Any, manifest: Path) -> None:
    """stderr is a pipe here: the live display degrades to plain lines. A profiled run's files come back
    from its node into the run directory."""
    from ray.util.state import list_actors

    run_dir = tmp_path / "run"
    result = run_cli("run", str(scenario(tmp_path, manifest, [1, 5])), "--executor", "ray", "--address", cluster.address,
                     "--profile", "memray", "--out", str(run_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    host = socket.gethostname()
    for node_id in node_ids(cluster):
        assert any(line.startswith(f"[ray] node {host} ({node_id[:8]}) (") and "1 slot(s)" in line for line in lines), lines
    assert sum(line.startswith(f"[ray] {host} (") and ": running " in line for line in lines) >= 2, lines
    assert " ".join(result.stderr.split()).count(f"(node {host})") == 4  # a line per row: 2 measured, 2 profiled
    profiled = [r for r in read_rows(run_dir) if r.get("profiler") == "memray"]
    assert len(profiled) == 2 and all(r["status"] == "ok" and r["node"]["executor"] == "ray" for r in profiled)
    for row in profiled:
        assert row["profile"] and all((run_dir / path).is_file() for path in row["profile"].values()), row["profile"]
    assert not [a for a in list_actors(address=cluster.address, raise_on_missing_output=False)
                if a.class_name == "_Board" and a.state == "ALIVE"]  # the display's actor is gone with the driver
    wait_until_no_active_tasks(cluster)


def test_fit_through_ray_agrees_with_the_local_fit(tmp_path: Path, cluster: Any, manifest: Path) -> None:
    from harness import store
    from harness.measure import memcap

    if memcap.find_controller("memory") is None:
        pytest.skip(f"no cgroup can be made here: needs {memcap.cgroup_requirement()}")
    cgroups_before = harness_cgroups()
    path = scenario(tmp_path, manifest, [1])
    limits = {}
    for executor in ("local", "ray"):
        where = ("--executor", "ray", "--address", cluster.address) if executor == "ray" else ()
        result = run_cli("fit", str(path), *where, "--out", str(tmp_path / executor))
        assert result.returncode == 0, result.stderr
        [row] = store.read_rows(tmp_path / executor)  # the fitted row, in the measured one's place
        fit = row["metrics"]["fit"]
        assert fit["node"]["executor"] == executor and row["node"]["executor"] == executor
        assert fit["node"]["machine_class"] == row["node"]["machine_class"]  # fitted on the class that measured it
        steps = (tmp_path / executor / "fit" / f"{row['run_id']}.jsonl").read_text().splitlines()
        assert len(steps) == sum(s["runs"] for s in fit["steps"])  # the steps' rows came back from the node
        limits[executor] = fit["min_limit_mb"], fit["resolution_mb"]
    (local, resolution), (remote, _) = limits["local"], limits["ray"]
    assert abs(remote - local) <= resolution, limits
    assert not worker_processes() and harness_cgroups() <= cgroups_before
    wait_until_no_active_tasks(cluster)


def test_a_node_lost_mid_task_gives_an_error_row_and_the_sweep_goes_on(tmp_path: Path, cluster: Any, manifest: Path) -> None:
    """Runs last: it takes a node away from the module's cluster."""
    from ray._private import ray_constants

    run_dir = tmp_path / "run"
    proc = start_cli("run", str(scenario(tmp_path, manifest, [1, 5, 2])), "--executor", "ray",
                     "--address", cluster.address, "--out", str(run_dir))
    wait_for(lambda: len(worker_processes()) == 2, proc, "a worker on each node")
    raylets = {n.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid: n for n in cluster.worker_nodes}
    victim = worker_processes()[0]
    [lost] = [raylets[p.pid] for p in victim.parents() if p.pid in raylets]
    cluster.remove_node(lost)  # its raylet and Ray workers are killed; the harness worker dies with its task process
    victim.wait(timeout=10)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    rows = read_rows(run_dir)
    assert len(rows) == 3
    [error] = [r for r in rows if r["status"] == "error"]
    assert error["reason"].startswith("node lost"), error["reason"]
    assert error["node"]["ray_node_id"] == lost.node_id
    assert [r["status"] for r in rows if r is not error] == ["ok", "ok"]
    assert all(r["node"]["ray_node_id"] != lost.node_id for r in rows if r is not error)
    assert not lost.any_processes_alive() and not worker_processes()
    wait_until_no_active_tasks(cluster)

    # --resume measures the configuration lost with its node again, on the node left
    result = run_cli("run", str(tmp_path / "ray.yaml"), "--resume", str(run_dir), "--executor", "ray", "--address", cluster.address)
    assert result.returncode == 0, result.stderr
    from harness import store

    rows = store.read_rows(run_dir)
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows), [r["reason"] for r in rows]
    assert len(read_rows(run_dir)) == 4  # the error row stays in results.jsonl, superseded
