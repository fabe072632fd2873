"""`harness fit`: the bisection of the kernel-enforced memory limit, on the real kernel and a real model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import read_rows, run_cli, worker_processes, write_scenario
from test_limits import controllers, harness_cgroups, short_clip  # noqa: F401 - a fixture

from harness import store
from harness.measure import fit

TINY = "name: fit\nrepeats: 1\nmatrix: {model: [tiny.en], threads: [2]}\n"


def test_bracket_resolution_is_2_percent_or_8_mib() -> None:
    assert fit.Bracket(0, 300).resolution() == 8.0
    assert fit.Bracket(0, 1000).resolution() == 20.0
    assert fit.Bracket(292, 300).narrow_enough() and not fit.Bracket(291, 300).narrow_enough()


def test_without_a_usable_cgroup_fit_exits_2_and_says_what_is_needed(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "fit.yaml", TINY)
    for command in (["fit", str(scenario)], ["run", str(scenario), "--fit"]):
        result = run_cli(*command, "--out", str(tmp_path / "run"), env={"HARNESS_CGROUP": "off"})
        assert result.returncode == 2, result.stderr
        assert "root" in result.stderr and "Delegate=yes" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # refused before measuring anything


@pytest.mark.slow
def test_fit_converges_and_a_run_at_the_found_limit_completes(tmp_path: Path, short_clip: Path) -> None:  # noqa: F811
    controllers()
    before = harness_cgroups()
    scenario = write_scenario(tmp_path / "fit.yaml", TINY)
    run_dir = tmp_path / "run"
    result = run_cli("fit", str(scenario), "--dataset", str(short_clip), "--out", str(run_dir))
    assert result.returncode == 0, result.stderr
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2  # the measured row, then the row that supersedes it (same run id, with the fit)
    measured, fitted = (json.loads(line) for line in lines)
    assert fitted["run_id"] == measured["run_id"] and "fit" not in measured["metrics"]
    [row] = store.read_rows(run_dir)  # readers see one row per configuration: the later one
    assert row == fitted and row["metrics"]["peak_rss_mb"] == measured["metrics"]["peak_rss_mb"]
    f = row["metrics"]["fit"]
    limit = f["min_limit_mb"]
    assert limit is not None, f
    steps = f["steps"]
    assert steps[0]["limit_mb"] is None and steps[0]["status"] == "ok"  # the unconstrained reference
    assert all(set(s) >= {"limit_mb", "status", "latency_p95_s"} for s in steps)
    limited = [s for s in steps if s["limit_mb"] is not None]
    failed = [s["limit_mb"] for s in limited if not s["passed"]]
    assert [s["passed"] for s in limited if s["limit_mb"] == limit][-2:] == [True, True]  # passed, and confirmed
    assert all(x < limit for x in failed) and limit <= math.ceil(f["reference_cgroup_peak_mb"])
    bottom = max([*failed, math.floor(f["reference_peak_anon_mb"] * 0.98)])  # nothing fits below the anonymous peak
    assert limit - bottom <= max(0.02 * limit, 8.0)  # converged to within max(2 %, 8 MiB)
    assert f["run_seconds"] == pytest.approx(sum(s["run_seconds"] for s in steps), abs=0.5)
    assert "min_limit_mb" in result.stderr

    at_limit = write_scenario(tmp_path / "at.yaml", TINY.replace("repeats: 1", f"repeats: 1\nmemory_cap_mb: {limit}"))
    result = run_cli("run", str(at_limit), "--dataset", str(short_clip), "--out", str(tmp_path / "at"))
    assert result.returncode == 0, result.stderr
    [checked] = read_rows(tmp_path / "at")
    assert checked["status"] == "ok", checked["reason"]
    assert checked["config"]["memory_cap_mode"] == controllers()[0].mode
    assert set(harness_cgroups()) <= set(before)  # none of its own left (a dead harness's stale ones may go)
    assert not worker_processes()
