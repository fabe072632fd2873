"""`harness fit`: the smallest kernel-enforced memory limit at which a configuration still works.

Peak RSS is not the limit a pod needs: under a cgroup limit the kernel reclaims clean page cache (the
model file, the shared libraries) before it OOM-kills, and a limit that is too tight shows first as a
slowdown (pages read again and again), then as an OOM kill. So for each configuration that measured
`ok`, the limit is found by bisection, every step a real isolated run. The whole fit of one configuration
is one job (`Job.fit`) handed to the executor, so it runs on one node (this machine, or a Ray node of the
machine class that measured the configuration: the limit is that machine's), each step a fresh worker
there under a kernel-enforced cgroup limit (`fit_here`); fits of several configurations run at once when
the executor has several slots:

1. the reference, run twice: the configuration without a limit, with a cold page cache, on its longest
   sample per language (a cold transcription, then one timed repetition); its cgroup peak charge is the
   top of the bracket (a limit the run never reached cannot change it), its faster p95 the reference;
2. the bottom of the bracket is the anonymous peak of the reference (the cgroup gets no swap, so no limit
   below it can hold the worker); the first step is at its peak RSS, then the bracket is halved;
3. every step runs at a limit in the bracket: a step passes when the worker completes without an OOM kill
   and its p95 latency is within LATENCY_TOLERANCE of the reference. A limit slows down a worker it does
   not kill only by reclaiming page cache the worker needs again, so a slowdown fails a step only when
   the kernel reports such refaults (memory.stat `workingset_refault_file`) during the timed repetition;
   it is then confirmed by running the reference and the step once more, back to back, the faster run of
   each counting (on a loaded machine single runs vary by 2x; a limit that thrashes slows every run);
4. until the bracket is narrower than max(2 %, 8 MiB); `min_limit_mb` is its top, a limit a step
   passed at (verified by a run when no step with a limit had passed).

The fitted configuration's row is superseded by a new row with the same run id: the measured row plus
`metrics.fit` (harness.measure.record.with_fit). Readers take the later row of a run id in the earlier
one's place (harness.store.read_run), so every reader (report, compare, recommendation) finds the fit
on the configuration's own row, and results.jsonl stays append-only (the measured row is kept above it).
The steps' own rows go to `fit/<run id>.jsonl` in the run directory (the latest fit's), not to results.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import store
from harness.contract import Job, SampleRef, Status
from harness.errors import UserError
from harness.measure import executors, memcap, record
from harness.measure.executors.base import RowSink
from harness.measure.sweep import make_job
from harness.plan.scenario import RunSpec, Scenario

LATENCY_TOLERANCE = 0.10  # a step may be at most 10 % slower than the unconstrained reference
RESOLUTION_FRACTION = 0.02
RESOLUTION_MB = 8.0
STEP_TIMEOUT_FACTOR = 5  # a step that thrashes is stopped after 5x the reference's run time ...
MIN_STEP_TIMEOUT_S = 60.0  # ... but never before a minute
FIT_DIR = "fit"
THRASH_MIN_REFAULT_MB = 1.0  # page cache read back in while timed, below which a slowdown is not the limit's


def requirement_error() -> UserError | None:
    """Why fits cannot run here (no cgroup for a kernel-enforced memory limit), or None."""
    if memcap.find_controller("memory") is not None:
        return None
    return UserError(f"harness fit needs kernel-enforced memory limits, so {memcap.cgroup_requirement()}; "
                     "none is available to this process (the watchdog cannot stand in: it kills on RSS, "
                     "not where the kernel would)")


@dataclass
class Step:
    limit_mb: float | None  # None: the unconstrained reference
    status: str
    latency_p95_s: float | None
    run_seconds: float
    passed: bool
    cgroup_peak_mb: float | None = None
    peak_anon_mb: float | None = None
    peak_rss_mb: float | None = None
    refault_mb: float | None = None  # page cache the kernel reclaimed and had to read back in
    refault_timed_mb: float | None = None  # ... of it while the timed repetition ran
    foreign_cpu_fraction: float | None = None
    reason: str = ""
    runs: int = 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"limit_mb": self.limit_mb, "status": self.status, "latency_p95_s": self.latency_p95_s,
                               "passed": self.passed, "run_seconds": round(self.run_seconds, 2), "runs": self.runs,
                               "refault_mb": self.refault_mb, "refault_timed_mb": self.refault_timed_mb}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class FitProgress:
    """What a display needs when a fit is handed to the executor and when it comes back."""

    run_id: str
    done: int  # fits finished ...
    total: int  # ... of how many
    row: dict[str, Any] | None  # None: handed to the executor; else the fitted row, or the error row of a fit that could not run


@dataclass
class Bracket:
    low: float  # fails (0: nothing can run in 0 MiB)
    high: float  # passes

    def resolution(self) -> float:
        return max(RESOLUTION_FRACTION * self.high, RESOLUTION_MB)

    def narrow_enough(self) -> bool:
        return self.high - self.low <= self.resolution()


def longest_samples(samples: list[SampleRef]) -> list[SampleRef]:
    """The longest sample of each language (the peak of memory comes with the longest audio)."""
    longest: dict[str, SampleRef] = {}
    for s in samples:
        if s.lang not in longest or (s.duration_s or 0) > (longest[s.lang].duration_s or 0):
            longest[s.lang] = s
    return list(longest.values())


def step_spec(spec: RunSpec, index: int, limit_mb: float | None, timeout_s: float) -> RunSpec:
    return dataclasses.replace(spec, run_id=f"{spec.run_id}-fit{index}", repeats=1, warmup=1, page_cache="cold",
                               memory_cap_mb=limit_mb, timeout_s=timeout_s)


def fit_job(spec: RunSpec, samples: list[SampleRef], data: dict[str, Any], measured: dict[str, Any]) -> Job:
    """The job that fits `spec` on a node of the machine class that measured it (`measured`, its row)."""
    return make_job(spec, longest_samples(samples), data).model_copy(
        update={"fit": True, "machine_class": (measured.get("node") or {}).get("machine_class")})


def fit_here(job: Job, work_dir: Path, on_row: RowSink, provenance: record.Provenance,
             measure: Callable[[Job], dict[str, Any]]) -> None:
    """A fit job on this node (harness.measure.node.run_job): `measure` runs each step in a fresh worker
    here; the steps' rows go to `work_dir/fit/<run id>.jsonl`; the row handed to `on_row` carries
    `metrics.fit` (status ok when a limit was found)."""
    if (problem := requirement_error()) is not None:
        on_row(record.not_run_row(job, Status.ERROR, str(problem), provenance))
        return
    spec = RunSpec(**job.spec)
    step_log = work_dir / FIT_DIR / f"{spec.run_id}.jsonl"
    step_log.unlink(missing_ok=True)
    fit = fit_configuration(spec, job.samples, job.data, measure, step_log)
    found = fit["min_limit_mb"] is not None
    row = record.not_run_row(job, Status.OK if found else Status.ERROR, "" if found else fit["reason"], provenance)
    on_row({**row, "metrics": {**row["metrics"], "fit": fit}})


def fit_configuration(spec: RunSpec, samples: list[SampleRef], data: dict[str, Any],
                      measure: Callable[[Job], dict[str, Any]], step_log: Path) -> dict[str, Any]:
    """Bisect the memory limit of `spec`, each step's job run by `measure`; return `metrics.fit`."""
    # The max_audio_s probe, where there is one, is the longest: a fit times it like any sample.
    chosen = [s.model_copy(update={"probe": False}) for s in longest_samples(samples)]
    steps: list[Step] = []
    started = time.monotonic()
    run_seconds = 0.0
    count = 0

    def run(limit_mb: float | None, timeout_s: float) -> Step:
        nonlocal run_seconds, count
        count += 1
        row = measure(make_job(step_spec(spec, count, limit_mb, timeout_s), chosen, data))
        step_log.parent.mkdir(parents=True, exist_ok=True)
        store.append_row(step_log, row)
        m = row["metrics"]
        seconds = m.get("run_seconds") or 0.0
        run_seconds += seconds
        return Step(limit_mb, row["status"], m.get("latency_p95_s"), seconds, row["status"] == "ok",
                    m.get("cgroup_peak_mb"), m.get("peak_anon_mb"), m.get("peak_rss_mb"), m.get("page_cache_refault_mb"),
                    m.get("page_cache_refault_timed_mb"), m.get("foreign_cpu_fraction"), "" if row["status"] == "ok" else row["reason"][:300])

    def result(min_limit: float | None, **extra: Any) -> dict[str, Any]:
        foreign = [s.foreign_cpu_fraction for s in steps if s.foreign_cpu_fraction is not None]
        return {"min_limit_mb": min_limit, "steps": [s.to_json() for s in steps], "run_seconds": round(run_seconds, 1),
                "samples": [s.id for s in chosen], "page_cache": "cold", "latency_tolerance": LATENCY_TOLERANCE,
                "wall_seconds": round(time.monotonic() - started, 1),
                "foreign_cpu_fraction_max": round(max(foreign), 4) if foreign else None, **extra}

    reference = run(None, spec.timeout_s)
    steps.append(reference)
    if not reference.passed or reference.cgroup_peak_mb is None or reference.latency_p95_s is None:
        reason = reference.reason or "the unconstrained run gave no cgroup peak or latency"
        return result(None, reason=f"the unconstrained reference run did not complete: {reason}")
    timeout_s = min(spec.timeout_s, max(MIN_STEP_TIMEOUT_S, STEP_TIMEOUT_FACTOR * reference.run_seconds))
    reference_p95 = [reference.latency_p95_s]
    again = run(None, spec.timeout_s)  # the reference twice: the faster counts (one run can be slowed down)
    steps.append(again)
    if again.passed and again.latency_p95_s is not None:
        reference_p95.append(again.latency_p95_s)
    # Without swap (the cgroup gets none) anonymous memory cannot be reclaimed, so no limit below the
    # anonymous peak can hold the worker: the bracket starts there (less 2 %: runs differ a little).
    bracket = Bracket(float(math.floor((reference.peak_anon_mb or 0) * (1 - RESOLUTION_FRACTION))),
                      float(math.ceil(reference.cgroup_peak_mb)))
    # The first probe: the peak RSS (anonymous + the file pages it mapped); then halves.
    probe = float(math.ceil(reference.peak_rss_mb or 0))

    def evaluate(limit_mb: float) -> Step:
        step = run(limit_mb, timeout_s)
        if _slow(step, reference_p95):
            # Only slow: the reference and the step once more, back to back, and the faster run of each
            # counts (a noisy machine slows single runs down; a limit that thrashes slows every run).
            again_reference = run(None, spec.timeout_s)
            steps.append(again_reference)
            if again_reference.passed and again_reference.latency_p95_s is not None:
                reference_p95.append(again_reference.latency_p95_s)
            again = run(limit_mb, timeout_s)
            step.run_seconds += again.run_seconds
            step.runs += 1
            if not again.passed:
                step.passed, step.status, step.reason = False, again.status, again.reason
            elif again.latency_p95_s is not None:
                step.latency_p95_s = min(step.latency_p95_s or math.inf, again.latency_p95_s)
        if step.passed and _slow(step, reference_p95):
            step.passed, step.reason = False, (f"p95 {step.latency_p95_s:.3f} s is more than {LATENCY_TOLERANCE:.0%} "
                                               f"above the unconstrained {min(reference_p95):.3f} s")
        steps.append(step)
        return step

    passed: set[float] = set()
    top = bracket.high  # the unconstrained peak charge: passes by construction
    while True:
        while not bracket.narrow_enough():
            if not bracket.low < probe < bracket.high:
                probe = round((bracket.low + bracket.high) / 2, 1)
            if evaluate(probe).passed:
                bracket.high = probe
                passed.add(probe)
            else:
                bracket.low = probe
            probe = round((bracket.low + bracket.high) / 2, 1)
        # Near the bottom the outcome can depend on the run (the anonymous peak moves by a few MiB): the
        # chosen limit must pass a second time; if it does not, it joins the failures and the search goes on.
        confirmation = evaluate(bracket.high)
        if confirmation.passed:
            break
        bracket.low = bracket.high
        above = sorted(limit for limit in passed if limit > bracket.low)
        if not above and bracket.high >= top:
            return result(None, reason=f"no limit up to the unconstrained peak charge {top:g} MiB passed twice")
        bracket.high = above[0] if above else top
        probe = round((bracket.low + bracket.high) / 2, 1)
    return result(bracket.high, resolution_mb=round(bracket.resolution(), 1),
                  reference_latency_p95_s=min(reference_p95), reference_cgroup_peak_mb=reference.cgroup_peak_mb,
                  reference_peak_anon_mb=reference.peak_anon_mb)


def _slow(step: Step, reference_p95: list[float]) -> bool:
    """Slower than the reference by more than the tolerance, with the limit to blame: the kernel read
    page cache back in while the timed repetition ran (a limit slows a worker that it does not kill
    only by reclaiming pages the worker needs again). A slowdown without refaults came from elsewhere
    (the machine's load: rows record it) and does not fail a step."""
    return (step.passed and step.latency_p95_s is not None
            and step.latency_p95_s > min(reference_p95) * (1 + LATENCY_TOLERANCE)
            and (step.refault_timed_mb is None or step.refault_timed_mb >= THRASH_MIN_REFAULT_MB))


@dataclass
class FitPlan:
    """Which configurations of a run directory get a fit."""

    specs: list[RunSpec]
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> why not (not measured ok)


def plan(scenario: Scenario, rows: list[dict[str, Any]], run_ids: list[str] | None, refit: bool) -> FitPlan:
    specs = {s.run_id: s for s in scenario.expand()}
    by_id = {r["run_id"]: r for r in rows}
    out = FitPlan([])
    for run_id in run_ids or list(specs):
        row = by_id.get(run_id)
        if row is None or row["status"] != "ok":
            out.skipped[run_id] = "not measured" if row is None else f"measured {row['status']}, not ok"
        elif not refit and row["metrics"].get("fit"):
            out.skipped[run_id] = "already fitted"
        else:
            out.specs.append(specs[run_id])
    return out


def fit_run(scenario: Scenario, samples: list[SampleRef], data: dict[str, Any], run_dir: Path,
            run_ids: list[str] | None = None, *, refit: bool = True, executor: str = "local",
            executor_options: dict[str, Any] | None = None,
            on_progress: Callable[[FitProgress], None] = lambda p: None) -> list[dict[str, Any]]:
    """Fit every `ok` configuration of `run_dir` (or those in `run_ids`), as many at once as the executor
    has slots; append each fitted row; return the fitted rows (a fit that could not run, its node lost
    for one, is reported to `on_progress` and left for the next fit). `refit=False` leaves configurations
    that already have a fit alone (a resumed run). The local executor needs a cgroup here; a remote
    node without one gives an error row that says so."""
    from harness.measure.run_dir import prepare_run_dir

    if executor == "local" and (problem := requirement_error()) is not None:
        raise problem
    with prepare_run_dir(run_dir, scenario, True, "harness fit: bisecting memory limits") as rows, \
            executors.create(executor, run_dir, **(executor_options or {})) as runner:
        todo = plan(scenario, rows, run_ids, refit)
        queue, in_flight, done, fitted = deque(todo.specs), 0, 0, []
        while queue or in_flight:
            while queue and in_flight < runner.slots:
                spec = queue.popleft()
                runner.submit(fit_job(spec, samples, data, _row_of(rows, spec.run_id)))
                in_flight += 1
                on_progress(FitProgress(spec.run_id, done, len(todo.specs), None))
            reply = runner.next_row(lambda r: None)
            in_flight, done = in_flight - 1, done + 1
            if "fit" not in reply["metrics"]:  # the fit could not run (no cgroup on the node, node lost, ...)
                on_progress(FitProgress(reply["run_id"], done, len(todo.specs), reply))
                continue
            fit = {**reply["metrics"]["fit"], "node": reply["node"]}
            measured = _row_of(rows, reply["run_id"])
            row = record.with_fit(measured, fit)
            store.append_row(run_dir / store.RESULTS_FILE, row)
            rows[rows.index(measured)] = row
            fitted.append(row)
            on_progress(FitProgress(row["run_id"], done, len(todo.specs), row))
        store.write_summary(rows, run_dir / store.SUMMARY_FILE)
    return fitted


def _row_of(rows: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    return next(r for r in rows if r["run_id"] == run_id)


def skipped_configurations(scenario: Scenario, run_dir: Path, run_ids: list[str] | None, refit: bool) -> dict[str, str]:
    """Which of the requested configurations will not be fitted, and why (for messages before fitting)."""
    return plan(scenario, store.read_rows(run_dir), run_ids, refit).skipped


class FitDisplay:
    """Fits on this machine: the bracket narrowing as each step ends (read from the step log the node
    appends to, `RUN_DIR/fit/<run id>.jsonl`, so it needs no channel from the node), and a line as each
    fit ends (rich)."""

    def __init__(self, console: Any, run_dir: Path) -> None:
        from rich.live import Live

        self.console, self.run_dir = console, run_dir
        self.running: list[str] = []
        self.live = Live(console=console, get_renderable=self._render, refresh_per_second=2, transient=True)

    def __enter__(self) -> FitDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def __call__(self, p: FitProgress) -> None:
        if p.row is None:
            self.running.append(p.run_id)
        else:
            self.running.remove(p.run_id)
            self.console.print(f"[{p.done}/{p.total}] {fit_line(p.row)}", highlight=False)

    def _render(self) -> Any:
        from rich.text import Text

        return Text("\n".join(bracket_line(run_id, self.run_dir / FIT_DIR / f"{run_id}.jsonl")
                               for run_id in self.running) or "fitting")


def bracket_line(run_id: str, step_log: Path) -> str:
    """"RUN_ID: step 5 at 320 MiB ok, p95 1.21 s; limit between 300 and 320 MiB" from a fit's step log so far."""
    try:
        lines = step_log.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    steps = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:  # a line being written
            continue
        steps.append((row["config"].get("memory_cap_mb"), row["status"], row["metrics"].get("latency_p95_s")))
    if not steps:
        return f"{run_id}: the unconstrained reference (cold page cache, longest sample per language)"
    limit, status, p95 = steps[-1]
    last = f"step {len(steps)} " + (f"at {limit:g} MiB" if limit else "unconstrained") + f" {status}" + \
        (f", p95 {p95:.2f} s" if p95 is not None else "")
    failed = [mb for mb, st, _ in steps if mb and st != "ok"]
    passed = [mb for mb, st, _ in steps if mb and st == "ok"]
    low, high = max(failed, default=None), min(passed, default=None)
    bracket = "" if high is None else f"; limit between {low or 0:g} and {high:g} MiB"
    return f"{run_id}: {last}{bracket}"


def fit_line(row: dict[str, Any]) -> str:
    """One fit's outcome, or why it could not run."""
    fit = row["metrics"].get("fit")
    if fit is None:
        return f"fit {row['run_id']}: not fitted: {row['reason']}"
    found = "no limit found" if fit["min_limit_mb"] is None else f"min_limit_mb = {fit['min_limit_mb']:g} MiB"
    return f"fit {row['run_id']}: {found} ({len(fit['steps'])} runs on {(fit.get('node') or {}).get('host', '?')})"
