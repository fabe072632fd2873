"""Pod-faithful limits on the real kernel: the memory cap and the CPU limit in a cgroup, no cgroup left
behind on any path, a cold page cache; and the scenario side of `cpu_limit` and `page_cache`."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import REAL_DEV, read_rows, run_cli, start_cli, worker_processes, write_scenario

from harness.errors import UserError
from harness.measure import memcap, page_cache
from harness.plan.scenario import load_scenario

SHORT_CLIP = "en_deepspeech_ldc93s1"  # 2.9 s of real speech


@pytest.fixture
def short_clip(tmp_path: Path) -> Path:
    """A manifest of one short real clip (the audio stays where it is: copied, it would be cold anyway)."""
    entries = [json.loads(line) for line in (REAL_DEV / "manifest.jsonl").read_text().splitlines()] \
        if (REAL_DEV / "manifest.jsonl").is_file() else []
    entry = next((e for e in entries if e["id"] == SHORT_CLIP), None)
    if entry is None:
        pytest.skip(f"real speech not available ({REAL_DEV})")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "clip.wav").write_bytes((REAL_DEV / entry["audio"]).read_bytes())
    (folder / "manifest.jsonl").write_text(json.dumps({"id": entry["id"], "lang": "en", "audio": "clip.wav",
                                                       "text": entry["text"]}) + "\n")
    return folder / "manifest.jsonl"


def controllers() -> tuple[memcap.Controller, memcap.Controller]:
    memory, cpu = memcap.find_controller("memory"), memcap.find_controller("cpu")
    if memory is None or cpu is None:
        pytest.skip(f"no cgroup can be made here: needs {memcap.cgroup_requirement()}")
    return memory, cpu


def harness_cgroups(pid: int | None = None) -> list[Path]:
    """Cgroup directories a harness made: those of the harness process `pid` in every hierarchy, or
    (no pid) all of them under this session's own memory cgroup (the cpu hierarchy's root is shared with
    whatever else runs on the machine)."""
    memory, cpu = controllers()
    if pid is None:
        return sorted(p for p in memory.parent.iterdir() if p.is_dir() and p.name.startswith(memcap.CGROUP_PREFIX))
    prefix = f"{memcap.CGROUP_PREFIX}{pid}-"
    return sorted(p for c in (memory, cpu) for p in c.parent.iterdir() if p.is_dir() and p.name.startswith(prefix))


# ---------------------------------------------------------------------------------------------
# Scenario: cpu_limit and page_cache


def scenario_with(tmp_path: Path, extra: str) -> Path:
    return write_scenario(tmp_path / "s.yaml", f"name: s\nmatrix: {{model: [tiny.en]{extra}}}\n")


def test_cpu_limit_axis_accepts_kubernetes_quantities_and_keeps_old_run_ids(tmp_path: Path) -> None:
    plain = load_scenario(scenario_with(tmp_path, "")).expand()
    unlimited = load_scenario(scenario_with(tmp_path, ", cpu_limit: [none]")).expand()
    assert [s.run_id for s in plain] == [s.run_id for s in unlimited]  # resume and baselines depend on it
    assert plain[0].run_id == "faster-whisper-tiny.en-int8-t1-pinnone-whole-b5-d23226"  # as computed before the axis existed
    specs = load_scenario(scenario_with(tmp_path, ', cpu_limit: ["250m", "1", "1.5", 0.5, 2, none]')).expand()
    assert [s.cpu_limit for s in specs] == ["250m", "1", "1500m", "500m", "2", None]
    assert specs[0].run_id.startswith("faster-whisper-tiny.en-int8-t1-pinnone-whole-b5-cpu250m-")
    assert len({s.run_id for s in specs}) == 6 and specs[-1].run_id == plain[0].run_id
    assert specs[0].config()["cpu_limit"] == "250m" and specs[-1].config()["cpu_limit"] is None
    excluded = load_scenario(write_scenario(tmp_path / "x.yaml", "name: x\nmatrix: {model: [tiny.en], threads: [1, 2], "
                                            "cpu_limit: [250m, 1]}\nexclude: [{threads: 2, cpu_limit: 0.25}]\n")).expand()
    assert [(s.threads, s.cpu_limit) for s in excluded] == [(1, "250m"), (1, "1"), (2, "1")]


@pytest.mark.parametrize("value", ["250", "abc", "-1", "0.0001", "5m", "true", "1.5 cores", "[]"])
def test_a_bad_cpu_limit_names_file_field_and_value(tmp_path: Path, value: str) -> None:
    path = scenario_with(tmp_path, f", cpu_limit: [none, {value}]")
    if value == "250":  # 250 cores: valid, if generous
        assert load_scenario(path).expand()[1].cpu_limit == "250"
        return
    with pytest.raises(UserError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert str(path) in message and "'matrix.cpu_limit[1]'" in message and "invalid value" in message
    assert ("at least 10m" if value == "5m" else '"250m"') in message


def test_page_cache_key(tmp_path: Path) -> None:
    cold = load_scenario(scenario_with(tmp_path, ""))
    assert cold.page_cache == "cold" and cold.expand()[0].config()["page_cache"] == "cold"
    path = write_scenario(tmp_path / "warm.yaml", "name: s\nmatrix: {model: [tiny.en]}\npage_cache: warm\n")
    warm = load_scenario(path)
    assert warm.page_cache == "warm" and warm.expand()[0].run_id == cold.expand()[0].run_id
    path.write_text(path.read_text().replace("warm", "lukewarm"))
    with pytest.raises(UserError, match=r"field 'page_cache': invalid value 'lukewarm'; expected cold"):
        load_scenario(path)


def test_fit_key_and_the_bundled_pod_scenarios(tmp_path: Path) -> None:
    path = write_scenario(tmp_path / "f.yaml", "name: s\nmatrix: {model: [tiny.en]}\nfit: yes please\n")
    with pytest.raises(UserError, match=r"f.yaml: field 'fit': invalid value 'yes please'; expected true"):
        load_scenario(path)
    repo = Path(__file__).parents[1] / "scenarios"
    for name in ("k8s-700mib-tiny", "free-tier-512mb"):
        pod = load_scenario(repo / f"{name}.yaml")
        assert pod.fit and pod.page_cache == "cold" and pod.memory_cap_mb
    quota = load_scenario(repo / "stt-250m-cpu.yaml")
    specs = quota.expand()
    assert {s.cpu_limit for s in specs} == {"250m", "500m", "1"} and {s.threads for s in specs} == {1, 2}
    assert quota.memory_cap_mb == 1024 and quota.budgets["rtf"] == 1.0 and set(quota.languages) == {"en", "pt"}


def test_every_bundled_scenario_loads() -> None:
    for path in sorted((Path(__file__).parents[1] / "scenarios").glob("*.yaml")):
        assert load_scenario(path).expand(), path


def test_eviction_empties_the_page_cache_of_the_files_it_is_given(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.bin").write_bytes(os.urandom(4 << 20))
    (model / "model.bin").read_bytes()
    os.sync()  # written pages are dirty until written back, and dirty pages stay
    assert page_cache.cached_fraction(model / "model.bin") == 1.0
    evicted = page_cache.evict([model, tmp_path / "missing.wav"])
    assert evicted.files == 1 and evicted.bytes == 4 << 20
    assert page_cache.cached_fraction(model / "model.bin") == 0.0


# ---------------------------------------------------------------------------------------------
# The real kernel


@pytest.mark.slow
def test_oom_under_the_cgroup_cap_is_the_kernels_verdict(tmp_path: Path, short_clip: Path) -> None:
    memory, _ = controllers()
    before = harness_cgroups()
    scenario = write_scenario(tmp_path / "oom.yaml", "name: oom\nrepeats: 1\nmemory_cap_mb: 150\n"
                                                     "matrix: {model: [tiny.en], threads: [2]}\n")
    result = run_cli("run", str(scenario), "--dataset", str(short_clip), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    [row] = read_rows(tmp_path / "run")
    assert row["status"] == "oom", row["reason"]
    assert row["config"]["memory_cap_mode"] == memory.mode  # cgroup-v1 on this project's VMs (root), v2 on GitHub's
    assert row["oom_verdict"]["source"] == "kernel" and row["oom_verdict"]["oom_kill"] >= 1
    assert "OOM killer" in row["reason"] and "memory cap 150 MiB" in row["reason"]
    assert row["metrics"]["cgroup_peak_mb"] == pytest.approx(150, abs=1)  # the kernel's limit, reached
    assert row["config"]["page_cache"] == "cold" and row["metrics"]["page_cache_evicted"]["files"] > 1000
    assert set(harness_cgroups()) <= set(before)  # none of its own left (stale ones of a dead harness may go)
    assert not worker_processes()



@pytest.mark.slow
def test_cpu_quota_recorded_equals_the_request_and_throttling_is_reported(tmp_path: Path, short_clip: Path) -> None:
    controllers()
    scenario = write_scenario(tmp_path / "cpu.yaml", "name: cpu\nrepeats: 1\npage_cache: warm\n"
                                                     "matrix: {model: [tiny.en], threads: [2], cpu_limit: [250m]}\n")
    result = run_cli("run", str(scenario), "--dataset", str(short_clip), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    [row] = read_rows(tmp_path / "run")
    assert row["status"] == "ok", row["reason"]
    assert row["config"]["cpu_limit"] == "250m"
    assert row["config"]["cpu_quota"] == {"quota_us": 25000, "period_us": 100000, "cores": 0.25, "mode": "cgroup-v1"}
    throttling = row["metrics"]["cpu_throttling"]
    assert throttling["nr_throttled"] > 0 and throttling["throttled_s"] > 0
    assert throttling["nr_periods"] >= throttling["nr_throttled"]
    assert any("2 thread(s) under cpu_limit 250m" in w for w in row["warnings"])
    m = row["metrics"]  # and the memory figures Kubernetes sees, from the worker's own cgroup
    assert 0 < m["peak_anon_mb"] <= m["peak_rss_mb"]
    assert 0 < m["working_set_peak_mb"] <= m["cgroup_peak_mb"]


def wait_for(condition, what: str, proc, timeout: float = 300) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)


FAULTS = """
name: faults
repeats: 20
page_cache: warm
timeout_s: 300
matrix: {model: [tiny.en], threads: [1], cpu_limit: ["1"]}
"""


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["timeout", "crash", "ctrl-c", "sigterm"])
def test_no_cgroup_is_left_behind(tmp_path: Path, short_clip: Path, fault: str) -> None:
    """The worker runs in a memory and a cpu cgroup; after each fault both are gone (OOM: above)."""
    controllers()
    before = harness_cgroups()
    text = FAULTS.replace("timeout_s: 300", "timeout_s: 3") if fault == "timeout" else FAULTS
    scenario = write_scenario(tmp_path / "f.yaml", text + "memory_cap_mb: 1024\n")
    proc = start_cli("run", str(scenario), "--dataset", str(short_clip), "--out", str(tmp_path / "run"))
    try:
        wait_for(lambda: worker_processes() and len(harness_cgroups(proc.pid)) == 2, "the worker in its cgroups", proc)
        if fault == "crash":
            [worker] = worker_processes()
            os.kill(worker.pid, signal.SIGSEGV)
        elif fault in ("ctrl-c", "sigterm"):
            proc.send_signal(signal.SIGINT if fault == "ctrl-c" else signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    expected = {"timeout": 0, "crash": 0, "ctrl-c": 130, "sigterm": 143}[fault]
    assert proc.returncode == expected, stderr
    if expected == 0:
        [row] = read_rows(tmp_path / "run")
        assert row["status"] == ("timeout" if fault == "timeout" else "error"), row["reason"]
    assert harness_cgroups(proc.pid) == [] and set(harness_cgroups()) <= set(before)
    assert not worker_processes()


def test_the_fit_display_shows_the_bracket_narrowing_from_the_step_log(tmp_path: Path) -> None:
    from harness.measure.fit import bracket_line

    log = tmp_path / "fit" / "r.jsonl"
    assert bracket_line("r", log).startswith("r: the unconstrained reference")
    log.parent.mkdir()
    steps = [(None, "ok", 1.1), (None, "ok", 1.0), (360, "ok", 1.05), (300, "oom", None), (330, "ok", 1.02)]
    log.write_text("".join(json.dumps({"config": {"memory_cap_mb": mb}, "status": st, "metrics": {"latency_p95_s": p}}) + "\n"
                           for mb, st, p in steps) + '{"config": {"memo')  # the next step being written
    assert bracket_line("r", log) == "r: step 5 at 330 MiB ok, p95 1.02 s; limit between 300 and 330 MiB"


def test_the_answer_and_the_report_use_a_measured_fit(tmp_path: Path) -> None:
    """Rows fitted on real speech (tests/golden/fit: the transcripts removed): the snippet's limit comes
    from the fitted limit, its request from the working set, and the report plots each fit."""
    from harness import store
    from harness.report import build

    golden = Path(__file__).parent / "golden" / "fit"
    run = tmp_path / "run"
    run.mkdir()
    (run / "scenario.yaml").write_text((golden / "scenario.yaml").read_text())
    rows = store.read_rows(golden / "fitted.jsonl")
    for row in rows:
        store.append_row(run / "results.jsonl", row)
    data = build.build(run)
    assert any(f["title"].startswith("Memory limit fits") for f in data["figures"])
    assert {"key": "min_limit_mb", "label": "fitted limit MiB"} in data["table_columns"]
    assert {"key": "throttled_s", "label": "throttled s"} not in data["table_columns"]  # no CPU limit: no column
    winner = next(r for r in rows if r["run_id"] == data["recommendation"]["recommended"]["run_id"])
    fitted, working_set = winner["metrics"]["fit"]["min_limit_mb"], winner["metrics"]["working_set_peak_mb"]
    deployment = data["deployment"]
    assert deployment["memory_limit_mib"] == math.ceil(fitted * 1.15) < winner["metrics"]["peak_rss_mb"] * 1.15
    # Pinned: Guaranteed QoS, so the request is the limit; the working set is given beside it.
    assert deployment["memory_request_mib"] == deployment["memory_limit_mib"]
    assert any(f"working set was {working_set}" in note for note in deployment["notes"])
    assert "fitted limit" in data["answer"]
