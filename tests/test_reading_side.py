"""The reading side (`harness report`, `report --index`, `compare`, `baseline save`) runs anywhere: it
reads a run directory measured on another machine without checking it against this one, and it does not
import the measuring side (no process sampling, no memory caps, no backend library)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import CLI_ENV, REPO, run_cli

from harness import store
from harness.errors import UserError
from harness.plan.scenario import load_scenario

GOLDEN = Path(__file__).parent / "golden" / "recommend" / "feasible.jsonl"
# A scenario that only the 16-core machine it ran on can run: pinned to CPUs 0-15, 16 threads, and a
# model directory of that machine.
SCENARIO = """\
name: epyc
question: Which configuration fits a 700 MiB pod on the 16-core nodes?
matrix: {model: [tiny, base, small, /srv/models/whisper-ct2-finetuned], quantization: [int8, float32],
         threads: [16], cpu_pinning: ["0-15"]}
budgets: {peak_rss_mb: 700, rtf: 0.5, latency_p95_s: 3.0, wer: {en: 0.10, pt: 0.25}}
"""
EPYC = {"cpu": "AMD EPYC 9654 96-Core Processor", "logical_cores": 16, "ram_mb": 128_000, "os": "Linux 6.8",
        "python": "3.11.7", "packages": {"faster-whisper": "1.2.1"}}
# Imported only when measuring: a reading command that pulls one in is not portable (or not cheap).
MEASURING = ("psutil", "harness.measure.runner", "harness.measure.memcap", "harness.measure.node",
             "harness.measure.sweep", "harness.measure.environment", "torch", "faster_whisper", "ctranslate2",
             "whisper", "pywhispercpp", "transformers")


def epyc_run(run_dir: Path, day: int = 1) -> Path:
    """A run directory measured on a 16-core EPYC: the golden feasible rows, relabelled as the
    configurations SCENARIO expands to (pinned to CPUs 0-15, 16 threads)."""
    run_dir.mkdir(parents=True)
    (run_dir / "scenario.yaml").write_text(SCENARIO)
    specs = {(s.model, s.quantization): s.run_id
             for s in load_scenario(run_dir / "scenario.yaml", on_this_machine=False).expand()}
    started = f"2026-03-{day:02d}T02:00:00+00:00"
    for row in store.read_rows(GOLDEN):
        c = row["config"]
        c.update(threads=16, cpu_pinning={"requested": "0-15", "effective": list(range(16))})
        row.update(scenario="epyc", run_id=specs[(c["model"], c["quantization"])])
        row["environment"] = {**EPYC, "started_at": started}
        if row["status"] == "ok":
            row["samples"] = [{"id": f"clip{k}", "lang": "en", "audio_s": 4.0, "latency_s": [0.9 + k / 50, 1.0, 1.1],
                               "reference": "a b c", "hypothesis": "a b c", "wer": 0.0} for k in range(4)]
            row["timeline"] = {"t_s": [0.05 * k for k in range(60)], "rss_mb": [60 + 5 * k for k in range(60)],
                               "phases": {"start": 0.0, "loaded": 1.0, "done": 2.9}}
        store.append_row(run_dir / store.RESULTS_FILE, row)
    (run_dir / "environment.json").write_text(json.dumps({**EPYC, "started_at": started}))
    return run_dir


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    if len(os.sched_getaffinity(0)) >= 16:
        pytest.skip("this machine has 16 CPUs: the run directories would be valid here anyway")
    return epyc_run(tmp_path / "reports" / "epyc-1", 1), epyc_run(tmp_path / "reports" / "epyc-2", 2)


def test_a_run_measured_on_a_16_core_machine_renders_and_compares_here(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = two_runs
    with warnings.catch_warnings(), pytest.raises(UserError, match="must be an existing directory"):
        warnings.simplefilter("ignore")  # threads = 16: more than this machine's CPUs
        load_scenario(first / "scenario.yaml")  # the scenario itself cannot run on this machine
    (tmp_path / "scenario.yaml").write_text(SCENARIO.replace(", /srv/models/whisper-ct2-finetuned", ""))
    with warnings.catch_warnings(), pytest.raises(UserError, match=r"cpu_pinning.*'0-15'.*do not exist"):
        warnings.simplefilter("ignore")
        load_scenario(tmp_path / "scenario.yaml")
    report = run_cli("report", str(first))
    assert report.returncode == 0, report.stderr
    assert "Traceback" not in report.stderr and "warning" not in report.stderr, report.stderr
    html = (first / "index.html").read_text()
    assert "AMD EPYC 9654 96-Core Processor; 16 logical cores" in html
    assert "Which configuration fits a 700 MiB pod on the 16-core nodes?" in html
    assert json.loads((first / "recommendation.json").read_text())["recommended"]["config"]["threads"] == 16

    compare = run_cli("compare", str(first), str(second))
    assert compare.returncode in (0, 1), compare.stderr  # 2 would be bad input
    assert "Traceback" not in compare.stderr and (second / "compare.json").is_file()
    assert json.loads((second / "compare.json").read_text())["machine"] == {
        "baseline": "AMD EPYC 9654 96-Core Processor x16", "current": "AMD EPYC 9654 96-Core Processor x16"}

    index = run_cli("report", "--index", str(first.parent))
    assert index.returncode == 0, index.stderr
    assert 'href="epyc-1/index.html"' in (first.parent / "index.html").read_text()
    saved = run_cli("baseline", "save", str(first), "--name", "nightly", "--root", str(tmp_path / "baselines"))
    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "baselines" / "amd-epyc-9654-96-core-processor-x16" / "nightly" / store.RESULTS_FILE).is_file()


def test_the_reading_side_does_not_import_the_measuring_side(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = two_runs
    program = f"""
import json, sys
import harness.report, harness.report.trend, harness.analyze.compare, harness.analyze.baselines, harness.store
from harness.cli import main
codes = [main(["report", {str(first)!r}]), main(["compare", {str(first)!r}, {str(second)!r}]),
         main(["report", "--index", {str(first.parent)!r}]),
         main(["baseline", "save", {str(first)!r}, "--name", "n", "--root", {str(tmp_path / "baselines")!r}])]
print(json.dumps({{"codes": codes, "modules": sorted(sys.modules)}}))
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, env=CLI_ENV,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["codes"][0] == 0 and result["codes"][1] in (0, 1) and result["codes"][2:] == [0, 0], done.stderr
    modules = set(result["modules"])
    assert "harness.report.plots" in modules and "harness.analyze.compare" in modules  # the code paths ran
    assert sorted(m for m in modules if m.split(".")[0] in MEASURING or m in MEASURING) == []
    assert sorted(m for m in modules if m.startswith("harness.measure")) == []
