"""A scenario's sweep: every RunSpec in its own child, one result row appended as each finishes."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shlex
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import environment, models, profiling, results, search
from harness.catalog import is_english_only, unsupported_reason
from harness.datasets import Sample
from harness.errors import HarnessError, UserError
from harness.runner import run_child
from harness.scenario import RunSpec, Scenario, available_cpus, parse_cpu_list


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


def requested_cpus(spec: RunSpec) -> list[int] | None:
    """none -> inherit; auto -> the first `threads` usable CPUs (all of them if fewer); else the list."""
    if spec.cpu_pinning == "none":
        return None
    if spec.cpu_pinning == "auto":
        return available_cpus()[: spec.threads]
    return parse_cpu_list(spec.cpu_pinning)


def data_description(scenario: Scenario, samples: list[Sample]) -> dict[str, Any]:
    """What was measured and how it is scored: rows carry it, WER is computed with its normalization."""
    langs = sorted({s.lang for s in samples})
    return {
        "datasets": sorted({s.dataset for s in samples}),
        "samples": {lang: sum(s.lang == lang for s in samples) for lang in langs},
        "synthetic": {lang: all(s.synthetic for s in samples if s.lang == lang) for lang in langs},
        "normalization": {lang: scenario.normalization_for(lang).to_json() for lang in langs},
    }


LOCK_FILE = ".lock"
SCENARIO_COPY = "scenario.yaml"
RESUME_SETTINGS = ("datasets", "languages", "memory_cap_mb", "normalization")  # besides the run ids


@contextlib.contextmanager
def prepare_run_dir(run_dir: Path, scenario: Scenario, resume: bool,
                    doing: str = "measuring") -> Iterator[list[dict[str, Any]]]:
    """Create (or reopen, with `resume`) the run directory and hold its lock while the caller measures
    into it; yield the rows already measured. On resume the scenario must be the one the directory
    was started with, and a torn last line is moved aside before anything is appended."""
    results_path = run_dir / results.RESULTS_FILE
    if resume and not results_path.exists():
        raise UserError(f"{run_dir}: nothing to resume (no {results.RESULTS_FILE})")
    with run_dir_lock(run_dir, doing):
        if results_path.exists() and not resume:
            raise UserError(f"{run_dir}: already holds results; use --resume {run_dir} to finish it, or another --out")
        try:
            (run_dir / "logs").mkdir(exist_ok=True)
            if not resume:
                shutil.copyfile(scenario.path, run_dir / SCENARIO_COPY)
        except OSError as exc:
            raise UserError(f"{run_dir}: output directory is not writable: {exc.strerror or exc}") from None
        if not resume:
            yield []
            return
        results.repair_tail(results_path)
        rows, started_with = results.read_run(run_dir)
        _check_same_scenario(run_dir, scenario, started_with, rows)
        yield rows


def _check_same_scenario(run_dir: Path, scenario: Scenario, started_with: Scenario | None,
                         rows: list[dict[str, Any]]) -> None:
    """Refuse to resume a run directory with another scenario (its rows would mix with the old ones):
    compares what the scenarios mean (name, run ids, settings that change the measurements), so a
    comment or a reformatted file is no difference."""
    copy = run_dir / SCENARIO_COPY
    if started_with is None:  # no copy: what the rows recorded
        named = {r["scenario"] for r in rows} - {scenario.name}
        if named:
            raise UserError(f"{run_dir}: cannot resume with {scenario.path}: the run directory holds results of "
                            f"scenario {sorted(named)[0]!r}, not {scenario.name!r}")
        return
    differences = []
    if started_with.name != scenario.name:
        differences.append(f"name {started_with.name!r} in {copy}, {scenario.name!r} in {scenario.path}")
    old, new = [s.run_id for s in started_with.expand()], [s.run_id for s in scenario.expand()]
    for where, ids in ((copy, [i for i in old if i not in new]), (scenario.path, [i for i in new if i not in old])):
        if ids:
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            differences.append(f"run ids only in {where}: {shown}")
    for setting in RESUME_SETTINGS:
        if getattr(started_with, setting) != getattr(scenario, setting):
            differences.append(f"{setting} {getattr(started_with, setting)!r} in {copy}, "
                               f"{getattr(scenario, setting)!r} in {scenario.path}")
    if differences:
        raise UserError(f"{run_dir}: cannot resume with {scenario.path}: it is not the scenario the run directory "
                        f"was started with ({'; '.join(differences)}). Resume with that scenario, or start a new "
                        "run directory (--out)")


@contextlib.contextmanager
def run_dir_lock(run_dir: Path, doing: str) -> Iterator[None]:
    """Hold RUN_DIR/.lock (an exclusive flock, released by the kernel if the process dies) while measuring
    into or appending to the run directory: a second process is refused, naming the holder, instead of
    measuring the same configurations again. Creating the lock file is also the check that the
    directory is writable."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / LOCK_FILE, "a+", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{run_dir}: output directory is not writable: {exc.strerror or exc}") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process (just starting)"
            raise UserError(f"{run_dir}: in use by {holder}; wait until it has finished (or stop it), "
                            "then run again") from None
        except OSError as exc:  # a file system without flock (some network mounts): measure, unguarded
            warnings.warn(f"{run_dir}: cannot lock it ({exc.strerror or exc}); nothing stops a second harness "
                          "from measuring into it at the same time", stacklevel=2)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now().isoformat(timespec='seconds')}, "
                f"{doing}: {shlex.join(sys.argv)}")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def machine_lock() -> Iterator[str | None]:
    """Hold a per-machine lock while measuring; yield who else holds it (None: nobody)."""
    path = models.cache_dir() / "measuring.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            yield f.read().strip() or "another process"
            return
        f.seek(0)
        f.truncate()
        f.write(f"harness run (pid {os.getpid()})")
        f.flush()
        try:
            yield None
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def run_scenario(scenario: Scenario, samples: list[Sample], run_dir: Path, *, resume: bool = False,
                 budgets: dict[str, Any] | None = None, search_mode: bool = False,
                 profilers: tuple[str, ...] = (), on_progress: Callable[[Progress], None] = lambda p: None) -> list[dict[str, Any]]:
    """Measure every configuration not already in `run_dir`; return all of its rows.

    With `search_mode`, configurations run smallest first, runs stop as soon as they break the memory
    or latency budget, and configurations that cannot win are recorded as skipped (harness.search).
    Each of `profilers` then runs every configuration that measured ok once more under it.
    """
    budgets = scenario.budgets if budgets is None else budgets
    with prepare_run_dir(run_dir, scenario, resume, "harness run: measuring") as rows:
        env = environment.capture()
        (run_dir / "environment.json").write_text(json.dumps(env, indent=2))
        data = data_description(scenario, samples)
        specs = scenario.expand()
        done_ids = {r["run_id"] for r in rows}
        todo = [s for s in specs if s.run_id not in done_ids]
        if search_mode:
            todo = search.order(todo)
        languages = {s.lang for s in samples}
        with machine_lock() as other:
            if other is not None:
                warnings.warn(f"{other} is measuring on this machine too: concurrent runs compete for CPU and "
                              "memory bandwidth and distort each other's timings", stacklevel=2)
                env["concurrent_run"] = other
            start, done = time.monotonic(), len(specs) - len(todo)
            for spec in todo:
                on_progress(Progress(done, len(specs), spec, None, time.monotonic() - start))
                why_not = search.cannot_win(spec, rows, budgets, languages) if search_mode else None
                if why_not is not None:
                    row = results.skipped_row(spec, why_not, env, data)
                elif search_mode:
                    row = measure_spec(spec, samples, run_dir, env, data, stop_when=search.stop_rules(budgets),
                                       memory_budget_mb=budgets.get("peak_rss_mb"))
                else:
                    row = measure_spec(spec, samples, run_dir, env, data)
                _save(run_dir, row, rows)
                done += 1
                on_progress(Progress(done, len(specs), spec, row, time.monotonic() - start))
            for spec in specs:  # profiled runs come after every measured one, each in its own worker
                for profiler in profilers:
                    if f"{spec.run_id}-{profiler}" not in done_ids and _measured_ok(spec, rows):
                        on_progress(Progress(done, len(specs), spec, None, time.monotonic() - start, profiler))
                        row = measure_spec(spec, samples, run_dir, env, data, profiler=profiler)
                        _save(run_dir, row, rows)
                        on_progress(Progress(done, len(specs), spec, row, time.monotonic() - start, profiler))
        order = {s.run_id: i for i, s in enumerate(specs)}
        rows.sort(key=lambda r: (order.get(r.get("profile_of", r["run_id"]), len(order)), bool(r.get("profiler"))))
        results.write_summary(rows, run_dir / results.SUMMARY_FILE)
        if search_mode:
            (run_dir / SEARCH_FILE).write_text(json.dumps(search_summary(rows), indent=2))
    return rows


SEARCH_FILE = "search.json"
PROFILE_TIMEOUT_FACTOR = 4  # scalene slows PyTorch's Python decoding loop down several times


def profile_configuration(scenario: Scenario, spec: RunSpec, samples: list[Sample], run_dir: Path,
                          profiler: str) -> dict[str, Any]:
    """`harness profile`: one profiled run of `spec`, its row added to `run_dir` (new or existing;
    a configuration profiled again with the same profiler replaces its earlier profile row)."""
    existing = (run_dir / results.RESULTS_FILE).exists()
    with prepare_run_dir(run_dir, scenario, existing, f"harness profile: {spec.run_id} with {profiler}") as rows:
        env = environment.capture()
        if not existing:
            (run_dir / "environment.json").write_text(json.dumps(env, indent=2))
        with machine_lock() as other:
            if other is not None:
                warnings.warn(f"{other} is measuring on this machine too; the profile's timings are distorted", stacklevel=2)
            row = measure_spec(spec, samples, run_dir, env, data_description(scenario, samples), profiler=profiler)
            _save(run_dir, row, rows)
    return row


def _save(run_dir: Path, row: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    try:
        results.append_row(run_dir / results.RESULTS_FILE, row)
    except OSError as exc:
        raise HarnessError(
            f"cannot save the result of {row['run_id']} to {run_dir / results.RESULTS_FILE}: "
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


def measure_spec(spec: RunSpec, samples: list[Sample], run_dir: Path, env: dict[str, Any],
                 data: dict[str, Any], stop_when: dict[str, float] | None = None,
                 memory_budget_mb: float | None = None, profiler: str | None = None) -> dict[str, Any]:
    """One configuration in its own worker; with `profiler`, a separate profiled run of it (one timed
    repetition) whose row is `<run id>-<profiler>` and links the profiler's artifacts."""
    if profiler is not None:  # profilers' own memory and time would trip the configuration's cap and timeout
        spec = dataclasses.replace(spec, run_id=f"{spec.run_id}-{profiler}", repeats=1, memory_cap_mb=None,
                                   timeout_s=spec.timeout_s * PROFILE_TIMEOUT_FACTOR)
    skipped: dict[str, str] = {}
    if is_english_only(spec.model):  # the worker also checks the loaded model (for directories)
        skipped = {s.lang: f"model {spec.model} is English-only" for s in samples if s.lang != "en"}
        samples = [s for s in samples if s.lang == "en"]
        if not samples:
            return results.skipped_row(spec, f"model {spec.model} is English-only; the data has only "
                                             f"{', '.join(sorted(skipped))}", env, data)
    if why_not := unsupported_reason(spec.backend, spec.quantization, spec.chunking["mode"]):
        return results.skipped_row(spec, why_not, env, data)
    try:
        model = models.for_backend(spec.backend, spec.model)
    except models.ModelUnavailable as exc:
        return results.error_row(spec, str(exc), env, data)
    cpus = requested_cpus(spec)
    job = {"spec": spec.to_json(), "model_path": str(model.path), "cpus": cpus,
           "samples": [s.to_json() for s in samples], "stop_when": stop_when or {}, "profiler": profiler}
    folder, command = run_dir / profiling.PROFILES_DIR / spec.run_id, None
    if profiler is not None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        command = profiling.worker_command(profiler, folder, spec.backend)
    outcome = run_child(job, run_dir / "logs" / f"{spec.run_id}.log", spec.memory_cap_mb, spec.timeout_s,
                        memory_budget_mb, command)
    row = results.build_row(spec, outcome, samples, cpus, env, data, skipped)
    row["config"]["model_source"] = model.source
    if profiler is not None:
        row["profiler"] = profiler
        row["profile_of"] = spec.run_id.removesuffix(f"-{profiler}")
        row["profile"], row["profile_summary"] = profiling.artifacts(profiler, folder, outcome.result)
    return row
