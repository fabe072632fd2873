"""A scenario's sweep: every configuration as a self-contained job handed to an executor, one row
appended to the run directory as each comes back.

The sweep decides what to measure and in which order (`--search` skips configurations that cannot
win), builds the jobs and stores the rows; where and how a job runs is the executor's business
(harness.measure.executors), and the row is built by the node that measured it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from harness import store
from harness.contract import Job, SampleRef, Status
from harness.data.datasets import Sample
from harness.errors import HarnessError
from harness.measure import executors, record
from harness.measure.executors.base import LOST_NODE
from harness.measure.run_dir import prepare_run_dir
from harness.plan import search
from harness.plan.scenario import RunSpec, Scenario

SEARCH_FILE = "search.json"
PROFILE_TIMEOUT_FACTOR = 4  # scalene slows PyTorch's Python decoding loop down several times


@dataclass
class Progress:
    """What a display needs after each configuration."""

    done: int
    total: int
    spec: RunSpec
    row: dict[str, Any] | None  # None: about to start `spec`
    elapsed_s: float
    profiler: str | None = None  # a profiled run of `spec`


def default_run_dir(scenario: Scenario, reports_dir: Path = Path("reports")) -> Path:
    return reports_dir / f"{scenario.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def data_description(scenario: Scenario, samples: list[Sample]) -> dict[str, Any]:
    """What was measured and how it is scored: rows carry it, WER is computed with its normalization.
    The max_audio_s probes (harness.data.probe) are not counted among the samples."""
    samples = [s for s in samples if not s.probe]
    langs = sorted({s.lang for s in samples})
    return {
        "datasets": sorted({s.dataset for s in samples}),
        "samples": {lang: sum(s.lang == lang for s in samples) for lang in langs},
        "synthetic": {lang: all(s.synthetic for s in samples if s.lang == lang) for lang in langs},
        "normalization": {lang: scenario.normalization_for(lang).to_json() for lang in langs},
        **({"max_audio_s": scenario.max_audio_s} if scenario.max_audio_s is not None else {}),
    }


@cache
def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sample_refs(samples: list[Sample]) -> list[SampleRef]:
    """The samples as jobs carry them, with the content hash under which the audio travels."""
    return [SampleRef(id=s.id, lang=s.lang, audio=s.audio, text=s.text, dataset=s.dataset, synthetic=s.synthetic,
                      sha256=_sha256(s.audio), duration_s=s.duration_s, probe=s.probe) for s in samples]


def make_job(spec: RunSpec, samples: list[SampleRef], data: dict[str, Any], *, stop_when: dict[str, float] | None = None,
             memory_budget_mb: float | None = None, profiler: str | None = None) -> Job:
    """A self-contained job; a profiled run is a separate configuration `<run id>-<profiler>` with one timed
    repetition, no memory cap and a longer timeout (a profiler's own memory and time would trip them)."""
    if profiler is not None:
        spec = dataclasses.replace(spec, run_id=f"{spec.run_id}-{profiler}", repeats=1, memory_cap_mb=None,
                                   timeout_s=spec.timeout_s * PROFILE_TIMEOUT_FACTOR)
    return Job(spec=spec.to_json(), samples=samples, data=data, stop_when=stop_when or {},
               memory_budget_mb=memory_budget_mb, profiler=profiler)


def run_scenario(scenario: Scenario, samples: list[Sample], run_dir: Path, *, resume: bool = False,
                 budgets: dict[str, Any] | None = None, search_mode: bool = False,
                 profilers: tuple[str, ...] = (), executor: str = "local", executor_options: dict[str, Any] | None = None,
                 on_progress: Callable[[Progress], None] = lambda p: None) -> list[dict[str, Any]]:
    """Measure every configuration not already in `run_dir`; return all of its rows.

    With `search_mode`, configurations run smallest first, runs stop as soon as they break the memory
    or latency budget, and configurations that cannot win are recorded as skipped (harness.plan.search).
    Each of `profilers` then runs every configuration that measured ok once more under it.
    """
    budgets = scenario.budgets if budgets is None else budgets
    with prepare_run_dir(run_dir, scenario, resume, "harness run: measuring") as rows, \
            executors.create(executor, run_dir, **(executor_options or {})) as runner:
        (run_dir / "environment.json").write_text(json.dumps(runner.environment(), indent=2))
        data, refs = data_description(scenario, samples), sample_refs(samples)
        specs = scenario.expand()
        lost = {r["run_id"] for r in rows if r["status"] == Status.ERROR.value and r["reason"].startswith(LOST_NODE)}
        rows[:] = [r for r in rows if r["run_id"] not in lost]  # measured again (the new row supersedes the old)
        done_ids = {r["run_id"] for r in rows}
        todo = [s for s in specs if s.run_id not in done_ids]
        if search_mode:
            todo = search.order(todo)
        languages = {s.lang for s in samples}
        start, done = time.monotonic(), len(specs) - len(todo)

        def progress(spec: RunSpec, row: dict[str, Any] | None, profiler: str | None = None) -> None:
            on_progress(Progress(done, len(specs), spec, row, time.monotonic() - start, profiler))

        def job_for(spec: RunSpec) -> Job | None:
            """None: the search proved it cannot win (its skipped row is saved here)."""
            why_not = search.cannot_win(spec, rows, budgets, languages) if search_mode else None
            if why_not is None:
                return (make_job(spec, refs, data, stop_when=search.stop_rules(budgets),
                                 memory_budget_mb=budgets.get("peak_rss_mb")) if search_mode else make_job(spec, refs, data))
            provenance = record.Provenance(runner.environment(), {"executor": "search (not run)"})
            _save(run_dir, record.not_run_row(make_job(spec, refs, data), Status.SKIPPED, why_not, provenance), rows)
            return None

        by_id = {s.run_id: s for s in specs}
        queue = deque(todo)
        in_flight = 0
        while queue or in_flight:
            while queue and in_flight < runner.slots:
                spec = queue.popleft()
                progress(spec, None)
                if (job := job_for(spec)) is None:
                    done += 1
                    progress(spec, rows[-1])
                    continue
                runner.submit(job)
                in_flight += 1
            if in_flight:
                row = runner.next_row(lambda r: _save(run_dir, r, rows))
                in_flight -= 1
                done += 1
                progress(by_id[row["run_id"]], row)
        for spec in specs:  # profiled runs come after every measured one, each in its own worker
            for profiler in profilers:
                if f"{spec.run_id}-{profiler}" not in done_ids and _measured_ok(spec, rows):
                    progress(spec, None, profiler)
                    runner.submit(make_job(spec, refs, data, profiler=profiler))
                    progress(spec, runner.next_row(lambda r: _save(run_dir, r, rows)), profiler)
        order = {s.run_id: i for i, s in enumerate(specs)}
        rows.sort(key=lambda r: (order.get(r.get("profile_of", r["run_id"]), len(order)), bool(r.get("profiler"))))
        store.write_summary(rows, run_dir / store.SUMMARY_FILE)
        if search_mode:
            (run_dir / SEARCH_FILE).write_text(json.dumps(search_summary(rows), indent=2))
    return rows


def profile_configuration(scenario: Scenario, spec: RunSpec, samples: list[Sample], run_dir: Path,
                          profiler: str, executor: str = "local") -> dict[str, Any]:
    """`harness profile`: one profiled run of `spec`, its row added to `run_dir` (new or existing;
    a configuration profiled again with the same profiler replaces its earlier profile row)."""
    existing = (run_dir / store.RESULTS_FILE).exists()
    with prepare_run_dir(run_dir, scenario, existing, f"harness profile: {spec.run_id} with {profiler}") as rows, \
            executors.create(executor, run_dir) as runner:
        if not existing:
            (run_dir / "environment.json").write_text(json.dumps(runner.environment(), indent=2))
        runner.submit(make_job(spec, sample_refs(samples), data_description(scenario, samples), profiler=profiler))
        return runner.next_row(lambda r: _save(run_dir, r, rows))


def _save(run_dir: Path, row: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    try:
        store.append_row(run_dir / store.RESULTS_FILE, row)
    except OSError as exc:
        raise HarnessError(
            f"cannot save the result of {row['run_id']} to {run_dir / store.RESULTS_FILE}: "
            f"{exc.strerror or exc}. The {len(rows)} configuration(s) saved before are intact; "
            f"make room and run again with --resume {run_dir}") from None
    rows.append(row)


def _measured_ok(spec: RunSpec, rows: list[dict[str, Any]]) -> bool:
    """Profile only configurations that ran (a skipped or failed one has nothing to profile)."""
    return any(r["run_id"] == spec.run_id and r["status"] == "ok" for r in rows)


def search_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the search did: measured, stopped early, skipped, and the run-seconds it spent."""
    return {
        "configurations": len(rows),
        "measured": sum(r["status"] != "skipped" for r in rows),
        "stopped_early": sum(r["status"] == "over_budget" for r in rows),
        "skipped": sum(r["status"] == "skipped" for r in rows),
        "run_seconds": round(sum(r["metrics"].get("run_seconds") or 0 for r in rows), 1),
    }
