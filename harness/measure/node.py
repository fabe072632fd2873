"""One job on this machine: the node side of every executor.

Everything that depends on the machine that measures happens here, on that machine: the model is
resolved in this node's cache (offline packs, conversions, a hub download where the node is online),
the CPUs to pin are this node's, the worker child runs under this node's limits, and the row records
this node's environment. The local executor calls `run_job` in the harness's own process; a remote
executor calls it in a task on the node it picked.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from harness import backends
from harness.contract import Job, Status, WorkerJob, machine_class
from harness.measure import environment, memcap, page_cache, profiling, record
from harness.measure.runner import CgroupUnavailable, run_child, signals_held
from harness.plan.scenario import RunSpec, available_cpus, cpu_millis, parse_cpu_list
from harness.weights import models

LOGS_DIR = "logs"


@cache
def node_environment() -> dict[str, Any]:
    """This machine and its software, captured once per process."""
    return environment.capture()


def requested_cpus(spec: RunSpec) -> list[int] | None:
    """none -> inherit; auto -> the first `threads` usable CPUs of this node (all if fewer); else the list."""
    if spec.cpu_pinning == "none":
        return None
    if spec.cpu_pinning == "auto":
        return available_cpus()[: spec.threads]
    return parse_cpu_list(spec.cpu_pinning)


def run_job(job: Job, work_dir: Path, on_row: Callable[[dict[str, Any]], None], node: dict[str, Any],
            call: Callable[[Callable[[], Any]], Any] = lambda run: run()) -> None:
    """Measure `job` in a fresh isolated worker and hand its row to `on_row` (signals held from the end
    of the worker to the hand-over, so an interrupt cannot lose a finished measurement); a fit job
    (`job.fit`) bisects its memory limit here instead, a worker per step (harness.measure.fit).

    `work_dir` receives `logs/<run id>.log` and, for a profiled run, `profiles/<run id>/` (a fit:
    `fit/<run id>.jsonl`); `node` says which executor and node run it (host and machine class are added
    here); `call` runs each worker's span (Ray: in a thread, so that a cancellation reaches the task)."""
    env = node_environment()
    provenance = record.Provenance(env, {**node, "host": env["hostname"], "machine_class": machine_class(env)})
    if job.machine_class is not None and job.machine_class != provenance.node["machine_class"]:
        on_row(record.not_run_row(job, Status.ERROR, f"this node is a {provenance.node['machine_class']}; the job needs a "
                                                     f"{job.machine_class} (the machine class that measured it)", provenance))
        return
    if job.fit:
        from harness.measure import fit

        def step(step_job: Job) -> dict[str, Any]:
            rows: list[dict[str, Any]] = []
            run_job(step_job, work_dir, rows.append, node, call)
            return rows[0]

        fit.fit_here(job, work_dir, on_row, provenance, step)
        return
    spec = RunSpec(**job.spec)
    samples, skipped = job.samples, {}
    backend = backends.info(spec.backend)
    if backend.english_only(spec.model):  # the worker also checks the loaded model (for directories)
        skipped = {s.lang: f"model {spec.model} is English-only" for s in samples if s.lang != "en"}
        samples = [s for s in samples if s.lang == "en"]
        if not samples:
            on_row(record.not_run_row(job, Status.SKIPPED, f"model {spec.model} is English-only; the data has only "
                                                           f"{', '.join(sorted(skipped))}", provenance))
            return
    if why_not := backend.unavailable(spec.quantization, spec.chunking["mode"]):
        on_row(record.not_run_row(job, Status.SKIPPED, why_not, provenance))
        return
    try:
        model = backend.resolve_model(spec.model, spec.quantization)
    except models.ModelUnavailable as exc:
        on_row(record.not_run_row(job, Status.ERROR, str(exc), provenance))
        return
    millis = cpu_millis(spec.cpu_limit)
    if millis is not None and memcap.find_controller("cpu") is None:
        on_row(record.not_run_row(job, Status.SKIPPED, f"cpu_limit {spec.cpu_limit} cannot be enforced here: it needs "
                                                       f"{memcap.cgroup_requirement()}", provenance))
        return
    cpus = requested_cpus(spec)
    worker_job = WorkerJob(spec=job.spec, model_path=str(model.path), cpus=cpus,
                           samples=[{"id": s.id, "lang": s.lang, "audio": s.audio, **({"probe": True} if s.probe else {})}
                                    for s in samples],
                           stop_when=job.stop_when, profiler=job.profiler, parent_pid=os.getpid()).model_dump()
    folder, command = work_dir / profiling.PROFILES_DIR / spec.run_id, None
    if job.profiler is not None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        command = profiling.worker_command(job.profiler, folder, spec.backend)
    eviction = None
    if spec.page_cache == "cold":  # as in a freshly started pod: the worker reads its files from disk
        eviction = page_cache.evict_for_worker(model.path, [s.audio for s in samples])
    try:
        outcome = call(lambda: run_child(worker_job, work_dir / LOGS_DIR / f"{spec.run_id}.log", spec.memory_cap_mb,
                                         spec.timeout_s, job.memory_budget_mb, command, millis))
    except CgroupUnavailable as exc:
        on_row(record.not_run_row(job, Status.ERROR, str(exc), provenance))
        return
    outcome.page_cache_eviction = None if eviction is None else eviction.to_json()
    profile = None
    if job.profiler is not None:  # not a measurement: an interrupt meanwhile may lose it
        files, summary = profiling.artifacts(job.profiler, folder, outcome.result)
        profile = {"profiler": job.profiler, "profile_of": spec.run_id.removesuffix(f"-{job.profiler}"),
                   "profile": files, "profile_summary": summary}
    with signals_held():
        provenance = dataclasses.replace(provenance, model_source=model.source, requested_cpus=cpus, profile=profile)
        on_row(record.build_row(job.model_copy(update={"samples": samples}), outcome, provenance, skipped))
