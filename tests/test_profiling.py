"""Profiling: memray and scalene runs of a configuration, isolated from the measured run, linked from
the report, left out of recommendations and comparisons; no worker left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import read_rows, run_cli, worker_processes, write_scenario

from harness.measure.profiling import allocation_site

SCENARIO = """
name: prof
datasets: [default]
languages: [en]
max_samples_per_language: 1
repeats: 1
matrix: {model: [tiny.en], quantization: [int8], threads: [2], cpu_pinning: [auto]}
"""


@pytest.mark.slow
def test_run_with_both_profilers(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "prof.yaml", SCENARIO)
    run_dir = tmp_path / "run"
    done = run_cli("run", str(scenario), "--out", str(run_dir), "--profile", "memray", "--profile", "scalene")
    assert done.returncode == 0, done.stderr[-3000:]
    measured, memray, scalene = read_rows(run_dir)
    assert measured.get("profiler") is None and measured["status"] == "ok"
    for row, profiler in ((memray, "memray"), (scalene, "scalene")):
        assert row["status"] == "ok", row["reason"]
        assert (row["profiler"], row["profile_of"], row["run_id"]) == (profiler, measured["run_id"], f"{measured['run_id']}-{profiler}")
        assert all((run_dir / path).is_file() and (run_dir / path).stat().st_size > 0 for path in row["profile"].values())
    assert set(memray["profile"]) == {"memray-flamegraph.html", "memray-stats.json", "memray.bin", "summary.json"}
    assert set(scalene["profile"]) == {"scalene-profile.html", "scalene.json", "summary.json"}

    # memray: CTranslate2's allocations (the weights) hold most of the memory live at the peak
    summary = memray["profile_summary"]
    top = summary["top_sites_at_peak"][0]
    assert "ctranslate2" in top["site"] and top["share"] > 0.3
    assert summary["peak_phase"] != "unknown" and summary["peak_heap_mb"] > 50
    assert json.loads((run_dir / memray["profile"]["memray-stats.json"]).read_text())  # memray's own stats
    # scalene: shares of CPU time add up; CTranslate2 makes native code dominate
    share = scalene["profile_summary"]["cpu_share"]
    assert sum(share.values()) == pytest.approx(1.0, abs=0.01) and share["native"] > share["python"]
    assert scalene["profile_summary"]["top_lines"]

    # the measured configuration's line links both; the recommendation and compare ignore profile rows
    html = (run_dir / "index.html").read_text()
    assert f'href="{memray["profile"]["memray-flamegraph.html"]}"' in html
    assert f'href="{scalene["profile"]["scalene-profile.html"]}"' in html
    assert json.loads((run_dir / "recommendation.json").read_text())["recommended"]["run_id"] == measured["run_id"]
    compared = run_cli("compare", str(run_dir), str(run_dir), "--out", str(tmp_path / "cmp"))
    assert compared.returncode == 0, compared.stderr
    assert [c["run_id"] for c in json.loads((tmp_path / "cmp" / "compare.json").read_text())["configs"]] == [measured["run_id"]]
    assert not worker_processes()


@pytest.mark.slow
def test_profile_command_adds_to_a_run_directory_and_rejects_unknown_ids(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "prof.yaml", SCENARIO)
    run_id = run_cli("run", str(scenario), "--dry-run").stdout.split()[0]
    out = tmp_path / "run"
    for _ in range(2):  # profiling again replaces the earlier profile row
        done = run_cli("profile", str(scenario), "--run", run_id, "--with", "memray", "--out", str(out))
        assert done.returncode == 0, done.stderr[-3000:]
    rows = read_rows(out)
    assert len({r["run_id"] for r in rows}) == 1 and len(rows) == 2  # two lines, one row when read
    assert "(profiled with memray: not a measurement)" in (out / "index.html").read_text()
    bad = run_cli("profile", str(scenario), "--run", run_id[:-1], "--with", "memray", "--out", str(out))
    assert bad.returncode == 2 and f"did you mean '{run_id}'" in bad.stderr and "Traceback" not in bad.stderr
    assert not worker_processes()


def test_allocation_site_names_the_native_caller_and_the_python_line() -> None:
    stack = [("malloc", "<unknown>", 0), ("ctranslate2::cpu::MklAllocator::allocate", "<unknown>", 0),
             ("__init__", "/venv/lib/python3.11/site-packages/faster_whisper/transcribe.py", 689),
             ("load", "/repo/harness/backends/faster_whisper.py", 20)]
    assert allocation_site(stack) == "ctranslate2::cpu::MklAllocator::allocate <- __init__ (faster_whisper/transcribe.py:689)"
    assert allocation_site([("malloc", "<unknown>", 0)]) == "unknown"
